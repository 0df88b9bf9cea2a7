"""Environment check: is this machine ready to run the course and reproduce its numbers?

The notebooks are committed with their outputs, and those outputs only reproduce with the
pinned versions of Python, torch, transformers and tokenizers. This module compares what is
installed with the pins in ``pyproject.toml`` and reports the rest of the set-up (threads,
cached assets, offline mode, free disk) as advice.

Example:
    >>> from llmcourse.course.envcheck import environment_report
    >>> report = environment_report()
    >>> [r.name for r in report][:2]
    ['python', 'torch']

Run it from a shell with ``python -m llmcourse.course.envcheck`` (exit status 1 when a required
check fails).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hub_constants
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from llmcourse.core.files import REPO_ROOT, scrub, shown

__all__ = ["CheckResult", "environment_report", "pinned_versions", "print_report", "main"]

_PYPROJECT = REPO_ROOT / "pyproject.toml"
# Packages whose version changes the numbers printed in the notebooks.
_CORE = ("torch", "transformers", "tokenizers")
MIN_FREE_GB = 2.0


@dataclass(frozen=True)
class CheckResult:
    """One line of the environment report.

    Attributes:
        name: short name of what was checked (``"torch"``, ``"assets"``, ...).
        ok: whether the check passed.
        detail: what was found, and what to do when it is not ok.
        required: whether the course's committed outputs depend on it (``False``: advice).
    """

    name: str
    ok: bool
    detail: str
    required: bool = True


def _read_project(pyproject: Path | None) -> tuple[list[str], str | None]:
    """Dependencies and ``requires-python`` from pyproject.toml, else the installed metadata."""
    path = _PYPROJECT if pyproject is None else Path(pyproject)
    if path.is_file():
        with path.open("rb") as fh:
            project = tomllib.load(fh).get("project", {})
        return list(project.get("dependencies", [])), project.get("requires-python")
    if pyproject is not None:
        raise ValueError(f"pyproject file {path.name!r} not found; expected a pyproject.toml")
    try:  # installed without the source tree: the pins travel in the package metadata
        meta = importlib.metadata.metadata("llmcourse")
    except importlib.metadata.PackageNotFoundError:
        return [], None
    return list(meta.get_all("Requires-Dist") or []), meta.get("Requires-Python")


def pinned_versions(pyproject: Path | str | None = None) -> dict[str, str]:
    """The exact pins (``name==version``) of the course, by normalized package name.

    Read from the repository's ``pyproject.toml`` when present, otherwise from the installed
    ``llmcourse`` metadata. Ranges and unpinned names are left out.

    Example:
        >>> pinned_versions()["torch"]
        '2.13.0'
    """
    deps, _ = _read_project(None if pyproject is None else Path(pyproject))
    pins: dict[str, str] = {}
    for line in deps:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            raise ValueError(f"unreadable dependency {line!r} in pyproject: {err}") from None
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _matches(installed: str, pin: str) -> bool:
    # torch reports "2.13.0+cpu": the local label names the build, not a different release.
    try:  # compared as versions, so "2.13" == "2.13.0"
        return Version(Version(installed).public) == Version(Version(pin).public)
    except InvalidVersion:
        return installed == pin


def _version_check(name: str, pins: dict[str, str]) -> CheckResult:
    found, pin = _installed(name), pins.get(name)
    if found is None:
        return CheckResult(name, False, f"not installed; run `make setup` (pinned {pin})")
    if pin is None:
        return CheckResult(name, True, f"{found} (no pin found)")
    if _matches(found, pin):
        return CheckResult(name, True, f"{found} (pinned {pin})")
    return CheckResult(name, False, f"{found} installed but the course pins {pin}; "
                                    "outputs may differ: run `make setup` in a fresh checkout")


def _python_check(requires: str | None) -> CheckResult:
    found = platform.python_version()
    if not requires:
        return CheckResult("python", True, f"{found} (no requirement found)")
    ok = SpecifierSet(requires).contains(found)
    detail = f"{found} (course requires {requires})"
    return CheckResult("python", ok, detail if ok else detail + ": use another Python")


def _torch_check(pins: dict[str, str]) -> CheckResult:
    base = _version_check("torch", pins)
    try:  # imported here: the report must still run, and say so, when torch is missing or broken
        import torch
    except ImportError as err:
        return CheckResult("torch", False, f"cannot import torch: {err}")
    if torch.version.cuda is None:
        build, build_ok = "CPU build", True
    elif torch.cuda.is_available():
        build, build_ok = f"CUDA {torch.version.cuda}, GPU: {torch.cuda.get_device_name(0)}", True
    else:
        # PyPI's Linux wheel is this build; it runs on the CPU all the same, only bigger.
        build, build_ok = (f"CUDA {torch.version.cuda} build, no GPU visible: runs on the CPU "
                           "(the CPU build, from download.pytorch.org/whl/cpu, is smaller)"), True
    return CheckResult("torch", base.ok and build_ok, f"{base.detail}; {build}")


def _threads_check() -> CheckResult:
    try:  # imported here, as in _torch_check: a broken torch is reported, not raised
        import torch
    except ImportError as err:
        return CheckResult("cpu threads", False, f"cannot import torch: {err}", required=False)
    threads, cores = torch.get_num_threads(), os.cpu_count() or 0
    detail = f"torch uses {threads} thread(s) on {cores} logical CPU(s)"
    if threads < 2 and cores >= 2:
        detail += "; more threads would be faster (unset OMP_NUM_THREADS)"
    return CheckResult("cpu threads", threads >= 1, detail, required=False)


def _other_pins_check(pins: dict[str, str]) -> CheckResult:
    off = []
    for name, pin in sorted(pins.items()):
        if name in _CORE:
            continue
        found = _installed(name)
        if found is None or not _matches(found, pin):
            off.append(f"{name} {found or 'missing'} (pinned {pin})")
    if off:
        return CheckResult("other pins", False, "; ".join(off), required=False)
    return CheckResult("other pins", True, f"{len(pins) - len(_CORE)} other pinned packages match",
                       required=False)


def _assets_check() -> CheckResult:
    # Imported here, not at the top: the report must still work when assets is broken or absent.
    try:
        assets = importlib.import_module("llmcourse.core.assets")
    except ImportError as err:
        return CheckResult("assets", False,
                           f"llmcourse.core.assets unavailable ({scrub(str(err))})",
                           required=False)
    names = sorted(getattr(assets, "ASSETS", {}))
    bad = []
    for name in names:
        try:
            if not assets.verify(name):
                bad.append(name)
        except Exception as err:  # a missing or corrupt cache reads as "not cached"
            bad.append(f"{name} ({type(err).__name__}: {scrub(str(err))})")
    try:
        where = f" in {shown(assets.cache_dir())}"
    except Exception:
        where = ""
    if not names:
        return CheckResult("assets", False, "llmcourse.core.assets lists no assets", required=False)
    if bad:
        return CheckResult("assets", False,
                           f"{len(names) - len(bad)}/{len(names)} cached{where}; missing or "
                           f"unverified: {', '.join(bad)}: run `make assets`", required=False)
    return CheckResult("assets", True, f"{len(names)}/{len(names)} cached and verified{where}",
                       required=False)


def _offline_check() -> CheckResult:
    # huggingface_hub's own switch, read once when it is imported (HF_HUB_OFFLINE, or
    # TRANSFORMERS_OFFLINE, set to 1/true/yes/on): what the hub client will actually do here.
    if hub_constants.is_offline_mode():
        detail = "HF_HUB_OFFLINE is set: the hub is never contacted (GPT-2 chapter uses the "
        detail += "course checkpoint)"
    else:
        detail = "HF_HUB_OFFLINE is not set: the GPT-2 chapter will try the Hugging Face hub"
    return CheckResult("offline mode", True, detail, required=False)


def _disk_check(min_free_gb: float) -> CheckResult:
    where = REPO_ROOT / "data"
    while not where.exists() and where != where.parent:
        where = where.parent
    free_gb = shutil.disk_usage(where).free / 1e9
    ok = free_gb >= min_free_gb
    detail = f"{free_gb:.1f} GB free (want at least {min_free_gb:g} GB)"
    return CheckResult("disk", ok, detail if ok else detail + ": free some space",
                       required=False)


def environment_report(pyproject: Path | str | None = None, *,
                       min_free_gb: float = MIN_FREE_GB) -> list[CheckResult]:
    """Check the machine against the course's requirements.

    Args:
        pyproject: the pyproject.toml holding the pins; default: the repository's, or the
            installed package metadata when there is no source tree.
        min_free_gb: free disk space below which the disk check fails.

    Returns:
        One :class:`CheckResult` per check, required ones first: python, torch (version and
        build), transformers, tokenizers; then advice: other pins, cpu threads, assets,
        offline mode, disk.
    """
    if min_free_gb < 0:
        raise ValueError(f"min_free_gb must be >= 0, got {min_free_gb}")
    deps_path = None if pyproject is None else Path(pyproject)
    _, requires_python = _read_project(deps_path)
    pins = pinned_versions(deps_path)
    return [
        _python_check(requires_python),
        _torch_check(pins),
        _version_check("transformers", pins),
        _version_check("tokenizers", pins),
        _other_pins_check(pins),
        _threads_check(),
        _assets_check(),
        _offline_check(),
        _disk_check(min_free_gb),
    ]


def print_report(report: list[CheckResult] | None = None) -> bool:
    """Print the report as a table; return whether every required check passed.

    A failed required check is marked ``✗``; failed advice is marked ``!``.
    """
    report = environment_report() if report is None else report
    width = max((len(r.name) for r in report), default=0)
    for r in report:
        mark = "✓" if r.ok else ("✗" if r.required else "!")
        print(f"{mark} {r.name:<{width}}  {r.detail}")
    failed = [r.name for r in report if r.required and not r.ok]
    if failed:
        print(f"{len(failed)} required check(s) failed: {', '.join(failed)}")
    else:
        print("All required checks passed: the notebooks' numbers should reproduce here.")
    return not failed


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: print the report, exit 1 when a required check fails."""
    if argv:
        print("usage: python -m llmcourse.course.envcheck", file=sys.stderr)
        return 2
    return 0 if print_report() else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
