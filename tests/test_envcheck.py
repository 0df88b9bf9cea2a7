"""The environment check (llmcourse.course.envcheck)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import types
from pathlib import Path

import pytest
import torch

from llmcourse.course import envcheck
from llmcourse.course.envcheck import (
    CheckResult,
    environment_report,
    pinned_versions,
    print_report,
)

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["python", "torch", "transformers", "tokenizers"]


def _by_name(report: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in report}


def _pyproject(tmp_path: Path, deps: list[str], requires: str = ">=3.8") -> Path:
    path = tmp_path / "pyproject.toml"
    lines = ", ".join(f'"{d}"' for d in deps)
    path.write_text(f'[project]\nname = "x"\nrequires-python = "{requires}"\n'
                    f"dependencies = [{lines}]\n")
    return path


def test_report_shape_and_required_checks():
    report = environment_report()
    assert all(isinstance(r, CheckResult) and r.detail for r in report)
    names = [r.name for r in report]
    assert len(names) == len(set(names))
    assert [r.name for r in report if r.required] == REQUIRED
    assert {"cpu threads", "assets", "offline mode", "disk", "other pins"} <= set(names)


def test_report_shows_installed_versions():
    report = _by_name(environment_report())
    assert platform.python_version() in report["python"].detail
    assert torch.__version__ in report["torch"].detail
    for name in ("transformers", "tokenizers"):
        assert importlib.metadata.version(name) in report[name].detail
    assert f"{torch.get_num_threads()} thread(s)" in report["cpu threads"].detail


def test_pins_read_from_pyproject_match_installed_metadata():
    # Two independent sources: the repository's pyproject and what pip recorded at install.
    pins = pinned_versions(REPO / "pyproject.toml")
    recorded = importlib.metadata.requires("llmcourse") or []
    for name in ("torch", "transformers", "tokenizers"):
        assert f"{name}=={pins[name]}" in recorded


def test_pinned_versions_parsing(tmp_path):
    path = _pyproject(tmp_path, ["Foo_Bar==1.2", "baz>=2", "qux", "torch==9.9.9"])
    assert pinned_versions(path) == {"foo-bar": "1.2", "torch": "9.9.9"}
    with pytest.raises(ValueError, match="not found"):
        pinned_versions(tmp_path / "missing.toml")
    bad = _pyproject(tmp_path, ["not a requirement ==="])
    with pytest.raises(ValueError, match="unreadable dependency"):
        pinned_versions(bad)


def test_version_mismatch_fails_a_required_check(tmp_path, capsys):
    path = _pyproject(tmp_path, ["transformers==0.0.1", "tokenizers==" +
                                 importlib.metadata.version("tokenizers")])
    report = _by_name(environment_report(path))
    bad = report["transformers"]
    assert not bad.ok and bad.required
    assert "0.0.1" in bad.detail and importlib.metadata.version("transformers") in bad.detail
    assert report["tokenizers"].ok
    assert print_report(list(report.values())) is False
    out = capsys.readouterr().out
    assert "✗ transformers" in out and "required check(s) failed: transformers" in out


def test_torch_local_build_label_matches_pin(tmp_path):
    public = torch.__version__.split("+")[0]
    report = _by_name(environment_report(_pyproject(tmp_path, [f"torch=={public}"])))
    assert report["torch"].ok or torch.version.cuda is not None
    other = _by_name(environment_report(_pyproject(tmp_path, ["torch==1.0.0"])))
    assert not other["torch"].ok


def test_python_requirement(tmp_path):
    report = _by_name(environment_report(_pyproject(tmp_path, [], requires="<3.0")))
    assert not report["python"].ok and "<3.0" in report["python"].detail
    report = _by_name(environment_report(_pyproject(tmp_path, [], requires=">=3.0")))
    assert report["python"].ok


def test_cuda_build_without_gpu_fails(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no GPU" in _by_name(environment_report())["torch"].detail
    assert not _by_name(environment_report())["torch"].ok
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    assert "GPU: Fake GPU" in _by_name(environment_report())["torch"].detail


def test_assets_module_missing_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "llmcourse.core.assets", None)  # import now raises ImportError
    check = _by_name(environment_report())["assets"]
    assert not check.ok and not check.required
    assert "unavailable" in check.detail


def _fake_assets(monkeypatch, status: dict[str, object], where: Path) -> None:
    mod = types.ModuleType("llmcourse.core.assets")
    mod.ASSETS = dict.fromkeys(status, None)

    def verify(name: str) -> bool:
        result = status[name]
        if isinstance(result, Exception):
            raise result
        return bool(result)

    mod.verify = verify
    mod.cache_dir = lambda: where
    monkeypatch.setitem(sys.modules, "llmcourse.core.assets", mod)


def test_assets_all_verified(monkeypatch):
    _fake_assets(monkeypatch, {"corpus": True, "gpt2": True}, REPO / "data" / "cache")
    check = _by_name(environment_report())["assets"]
    assert check.ok and "2/2" in check.detail
    assert "data/cache" in check.detail and str(REPO) not in check.detail


def test_assets_missing_or_broken(monkeypatch):
    broken = FileNotFoundError(f"{REPO}/data/cache/gpt2/vocab.json")
    _fake_assets(monkeypatch, {"corpus": False, "gpt2": broken, "ok": True}, Path("/elsewhere/c"))
    check = _by_name(environment_report())["assets"]
    assert not check.ok and "1/3" in check.detail
    assert "corpus" in check.detail and "gpt2 (FileNotFoundError" in check.detail
    assert "make assets" in check.detail
    # No absolute path of this machine leaks into the report (it ends up in a notebook).
    assert str(REPO) not in check.detail and "/elsewhere" not in check.detail


def test_offline_flag(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "is set" in _by_name(environment_report())["offline mode"].detail
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert "not set" in _by_name(environment_report())["offline mode"].detail


def test_disk_threshold():
    assert _by_name(environment_report(min_free_gb=0))["disk"].ok
    assert not _by_name(environment_report(min_free_gb=1e12))["disk"].ok
    with pytest.raises(ValueError, match="min_free_gb"):
        environment_report(min_free_gb=-1)


def test_no_absolute_paths_in_report():
    for r in environment_report():
        assert str(REPO) not in r.detail and str(Path.home()) not in r.detail


def test_print_report_and_main(monkeypatch, capsys):
    good = [CheckResult("a", True, "fine"), CheckResult("b", False, "advice", required=False)]
    assert print_report(good) is True
    out = capsys.readouterr().out
    assert "✓ a" in out and "! b" in out and "All required checks passed" in out
    monkeypatch.setattr(envcheck, "environment_report", lambda: good)
    assert envcheck.main([]) == 0
    monkeypatch.setattr(envcheck, "environment_report",
                        lambda: [CheckResult("c", False, "broken")])
    assert envcheck.main([]) == 1
    assert envcheck.main(["--bogus"]) == 2
