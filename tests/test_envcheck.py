"""The environment check (llmcourse.course.envcheck)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hub_constants

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
    # The installed distribution's version: "2.13.0+cpu" from the CPU index, "2.13.0" from PyPI
    # (whose torch.__version__ still says "+cu130").
    assert importlib.metadata.version("torch") in report["torch"].detail
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
    # Names as PEP 503 normalises them: case, runs of "-", "_" and "." all fold to one "-".
    path = _pyproject(tmp_path, ["Zope.Interface==5", "typing__extensions==4", "PyYAML==6"])
    assert pinned_versions(path) == {"zope-interface": "5", "typing-extensions": "4",
                                     "pyyaml": "6"}
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


def test_torch_local_build_label_matches_pin(tmp_path, monkeypatch):
    """torch says "2.13.0+cpu" (or "+cu128"): the label names the build, so it matches the pin
    2.13.0; another release does not. The build is fixed to CPU here so that the version alone
    decides, whichever torch this machine has."""
    monkeypatch.setattr(torch.version, "cuda", None)
    public = torch.__version__.split("+")[0]
    report = _by_name(environment_report(_pyproject(tmp_path, [f"torch=={public}"])))
    assert report["torch"].ok, report["torch"].detail
    installed = importlib.metadata.version("torch")
    assert f"{installed} (pinned {public}); CPU build" in report["torch"].detail
    other = _by_name(environment_report(_pyproject(tmp_path, ["torch==1.0.0"])))
    assert not other["torch"].ok
    assert "installed but the course pins 1.0.0" in other["torch"].detail


@pytest.mark.parametrize(("installed", "pin", "same"), [
    ("2.13.0+cpu", "2.13.0", True),
    ("2.13.0+cu128", "2.13.0", True),
    ("2.13.0", "2.13.0", True),
    ("2.13.1+cpu", "2.13.0", False),
    ("2.13.0rc1", "2.13.0", False),
    ("2.13", "2.13.0", True),  # the same version, written shorter
    ("not-a-version", "not-a-version", True),
    ("not-a-version", "2.13.0", False),
])
def test_version_match_ignores_only_the_local_build_label(installed, pin, same):
    assert envcheck._matches(installed, pin) is same


def test_python_requirement(tmp_path):
    report = _by_name(environment_report(_pyproject(tmp_path, [], requires="<3.0")))
    assert not report["python"].ok and "<3.0" in report["python"].detail
    report = _by_name(environment_report(_pyproject(tmp_path, [], requires=">=3.0")))
    assert report["python"].ok


def test_cuda_build_without_gpu_is_accepted_and_said(monkeypatch):
    """PyPI's Linux torch is the CUDA build (a reader without PyTorch's CPU index gets it): it
    runs on the CPU, so the check passes and says so."""
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch_check = _by_name(environment_report())["torch"]
    assert "no GPU visible: runs on the CPU" in torch_check.detail
    assert torch_check.ok
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
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: the report follows its switch.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert "is set" in _by_name(environment_report())["offline mode"].detail
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    assert "not set" in _by_name(environment_report())["offline mode"].detail


@pytest.mark.parametrize(("variables", "offline"), [
    ({"HF_HUB_OFFLINE": "1"}, True),
    ({"HF_HUB_OFFLINE": "true"}, True),
    ({"TRANSFORMERS_OFFLINE": "1"}, True),  # the hub honours transformers' name too
    ({"HF_HUB_OFFLINE": "0"}, False),
    ({}, False),
])
def test_offline_flag_from_the_environment(variables, offline):
    """In a fresh process, as a learner starts it: the variable as huggingface_hub reads it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    code = "from llmcourse.course import envcheck; print(envcheck._offline_check().detail)"
    run = subprocess.run([sys.executable, "-c", code], env={**env, **variables},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("HF_HUB_OFFLINE is set" if offline
                                 else "HF_HUB_OFFLINE is not set"), run.stdout


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
