"""The environment files agree: ``environment.yml`` (conda / Binder) and ``pyproject.toml`` pin
the same packages at the same versions, ``requirements.lock`` agrees with both, and what is
installed is exactly what is pinned."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*$")


def _normalize(name: str) -> str:
    """PEP 503 name normalisation: ``Foo_Bar.baz`` and ``foo-bar-baz`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _public(version: str) -> str:
    """Drop a PEP 440 local label: ``2.13.0+cpu`` is the CPU build of ``2.13.0``."""
    return version.split("+", 1)[0]


def _parse_pins(lines: list[str], source: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lines:
        m = PIN.match(line)
        if m is None:
            raise AssertionError(f"{source}: {line!r} is not an exact pin 'name==version'")
        name = _normalize(m.group(1))
        assert name not in pins, f"{source}: {name} is pinned twice"
        pins[name] = m.group(2)
    return pins


def pyproject_pins() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return _parse_pins(deps, "pyproject.toml")


def _yaml_pip_lines(text: str) -> list[str]:
    """The entries of ``dependencies: - pip: [...]`` in environment.yml, by line parsing (pyyaml
    is not one of the course's pins, so the test must not need it)."""
    out: list[str] = []
    pip_indent = None
    for line in text.splitlines():
        # A YAML comment starts a line or follows whitespace ("url#frag" is not one).
        stripped = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if not stripped:
            continue
        indent = len(stripped) - len(stripped.lstrip())
        if pip_indent is None:
            if re.fullmatch(r"\s*-\s*pip:\s*", stripped):
                pip_indent = indent
            continue
        if indent <= pip_indent:
            break  # left the pip: block
        item = re.fullmatch(r"\s*-\s*(.+?)\s*", stripped)
        assert item, f"environment.yml: unexpected line in the pip block: {line!r}"
        out.append(item.group(1))
    assert pip_indent is not None, "environment.yml has no '- pip:' block"
    return out


def environment_pins(text: str | None = None) -> dict[str, str]:
    if text is None:
        text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    entries = [e for e in _yaml_pip_lines(text) if not e.startswith(("-", "."))]  # options, -e .
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


def test_environment_yml_line_parser_agrees_with_a_yaml_parser():
    yaml = pytest.importorskip("yaml")  # present in the course env (a Jupyter dependency)
    data = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_block = next(d["pip"] for d in data["dependencies"] if isinstance(d, dict) and "pip" in d)
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert _yaml_pip_lines(text) == [str(e) for e in pip_block]
    python = [d for d in data["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]  # pyproject.toml requires >=3.11,<3.12


def test_requirements_lock_agrees_with_pyproject():
    lock, ours = lock_pins(), pyproject_pins()
    missing = sorted(set(ours) - set(lock))
    assert not missing, f"pinned in pyproject.toml but not in requirements.lock: {missing}"
    differ = {n: (ours[n], lock[n]) for n in ours if _public(lock[n]) != ours[n]}
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
