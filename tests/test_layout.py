"""The library's shape: imports go one way (the import-linter contracts in pyproject.toml, run by
``make lint``, checked here too so that ``make test`` alone catches a violation), no module
imports itself through others (no cycles), and ``python -m llmcourse.training`` runs its module
once."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("llmcourse", cache_dir=None)


def test_no_module_takes_part_in_an_import_cycle(graph):
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None:
                cycles.append(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_cycle_finder_can_fail(graph):
    graph.add_import(importer="llmcourse.nn.attention", imported="llmcourse.models.gpt")
    assert graph.find_shortest_chain(importer="llmcourse.models.gpt",
                                     imported="llmcourse.nn.attention") is not None


def test_import_linter_contracts_hold():
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-logo",
                           "--no-cache", "pyproject.toml"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_import_linter_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: nn importing models is reported as broken."""
    layers = ["llmcourse.checks", "llmcourse.course", "llmcourse.training",
              "llmcourse.text | llmcourse.decoding", "llmcourse.models", "llmcourse.nn",
              "llmcourse.core"]
    graph = grimp.build_graph("llmcourse", cache_dir=None)
    graph.add_import(importer="llmcourse.nn.attention", imported="llmcourse.models.gpt")
    found = graph.find_illegal_dependencies_for_layers(
        layers=[set(layer.split(" | ")) for layer in layers],
        containers=set())
    assert any(d.importer == "llmcourse.nn" and d.imported == "llmcourse.models" for d in found)


def test_every_subpackage_is_small_modules():
    """Each module is one idea: a few hundred lines at most."""
    lib = ROOT / "lib" / "llmcourse"
    long = {p.relative_to(lib).as_posix(): n for p in lib.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 650}
    assert not long, f"modules over 650 lines: {long}"


def test_training_command_runs_its_module_once():
    """``python -m llmcourse.training --help`` imports the loop once (no module run twice)."""
    code = ("import runpy, sys; sys.argv = ['x', '--help']\n"
            "import llmcourse.training.loop as a\n"
            "try:\n    runpy.run_module('llmcourse.training', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "import llmcourse.training.loop as b\nprint(a is b)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip().endswith("True"), out.stderr[-2000:]


def test_layers_named_in_the_contract_exist():
    lib = ROOT / "lib" / "llmcourse"
    for name in ("core", "nn", "models", "text", "decoding", "training", "course", "checks"):
        assert (lib / name / "__init__.py").is_file(), name
    assert not list(itertools.islice(lib.glob("[!_]*.py"), 1)), "modules left at the top level"
