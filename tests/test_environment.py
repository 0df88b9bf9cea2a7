"""The environment files agree: ``environment.yml`` (conda / Binder) and ``pyproject.toml`` pin
the same packages at the same versions, ``requirements.lock`` agrees with both, and what is
installed is exactly what is pinned."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*$")




def _public(version: str) -> str:
    """Drop a PEP 440 local label: ``2.13.0+cpu`` is the CPU build of ``2.13.0``."""
    return version.split("+", 1)[0]


def _parse_pins(lines: list[str], source: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        m = PIN.match(line)
        if m is None:
            raise AssertionError(f"{source}: {line!r} is not an exact pin 'name==version'")
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"{source}: {name} is pinned twice"
        pins[name] = m.group(2)
    return pins


def pyproject_pins() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return _parse_pins(deps, "pyproject.toml")


def _pip_block(text: str) -> list[str]:
    """The entries of ``dependencies: - pip: [...]`` in environment.yml."""
    data = yaml.safe_load(text)
    blocks = [d["pip"] for d in data["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(blocks) == 1, "environment.yml must have exactly one '- pip:' block"
    return [str(e) for e in blocks[0]]


def environment_pins(text: str | None = None) -> dict[str, str]:
    if text is None:
        text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    entries = [e for e in _pip_block(text) if not e.startswith(("-", "."))]  # options, -e .
    return _parse_pins(entries, "environment.yml")


def lock_pins() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    return _parse_pins([ln for ln in lines if ln.strip() and not ln.startswith("#")],
                       "requirements.lock")


def test_environment_yml_and_pyproject_pin_the_same_packages_and_versions():
    ours, conda = pyproject_pins(), environment_pins()
    assert "torch" in ours and len(ours) >= 10  # the parser found the real list
    only_py = sorted(set(ours) - set(conda))
    only_env = sorted(set(conda) - set(ours))
    assert not only_py and not only_env, (
        f"pinned only in pyproject.toml: {only_py}; only in environment.yml: {only_env}"
    )
    differ = {n: (ours[n], conda[n]) for n in ours if ours[n] != conda[n]}
    assert not differ, f"versions differ (pyproject, environment.yml): {differ}"


def test_environment_yml_names_a_supported_python():
    data = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    python = [d for d in data["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(python) == 1, f"environment.yml should name one python, found {python}"
    with open(ROOT / "pyproject.toml", "rb") as f:
        requires = SpecifierSet(tomllib.load(f)["project"]["requires-python"])
    version = python[0].split("=", 1)[1]
    assert requires.contains(version + ".0"), f"environment.yml's {python[0]} is outside {requires}"


def test_no_local_version_label_is_pinned():
    """PyPI has no ``+cpu`` (or any local-label) builds: such a pin installs only on machines with
    a private wheel folder, and fails for every reader."""
    for source, pins in [("requirements.lock", lock_pins()), ("pyproject.toml", pyproject_pins()),
                         ("environment.yml", environment_pins())]:
        local = {n: v for n, v in pins.items() if "+" in v}
        assert not local, f"{source} pins local versions that PyPI lacks: {local}"


def test_requirements_lock_agrees_with_pyproject():
    lock, ours = lock_pins(), pyproject_pins()
    missing = sorted(set(ours) - set(lock))
    assert not missing, f"pinned in pyproject.toml but not in requirements.lock: {missing}"
    differ = {n: (ours[n], lock[n]) for n in ours if lock[n] != ours[n]}
    assert not differ, f"versions differ (pyproject, requirements.lock): {differ}"


@pytest.mark.parametrize("name", sorted(pyproject_pins()))
def test_installed_version_is_the_pinned_version(name):
    pinned = pyproject_pins()[name]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{name}=={pinned} is pinned but not installed")
    assert _public(installed) == pinned, f"{name}: installed {installed}, pinned {pinned}"


def test_pin_parser_rejects_ranges():
    with pytest.raises(AssertionError, match="not an exact pin"):
        _parse_pins(["torch>=2.0"], "x")
    assert _parse_pins(["Foo_Bar==1.0"], "x") == {"foo-bar": "1.0"}


def test_a_changed_version_in_environment_yml_would_be_caught():
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    pinned = pyproject_pins()["torch"]
    changed = text.replace(f"torch=={pinned}", "torch==0.0.1")
    assert changed != text
    assert environment_pins(changed)["torch"] == "0.0.1" != pinned
    dropped = text.replace(f"- torch=={pinned}\n", "")
    assert "torch" not in environment_pins(dropped)


def test_jupyterlab_news_popup_is_off_for_the_course():
    """`make setup` writes JupyterLab's overrides so that `make lab` opens without the
    "get notified about official Jupyter news?" pop-up. The folder is JupyterLab's own answer."""
    import json

    from jupyterlab.commands import get_app_dir

    overrides = Path(get_app_dir()) / "settings" / "overrides.json"
    assert overrides.is_file(), f"{overrides.name} missing: run `make setup`"
    notification = json.loads(overrides.read_text())["@jupyterlab/apputils-extension:notification"]
    assert notification["fetchNews"] == "false" and notification["checkForUpdates"] is False
