"""The experiments' result files: the recorded command, and writes that lose nothing."""

from __future__ import annotations

import json

import pytest

from llmcourse.training import distill, precision_compare, scaling, side_by_side
from llmcourse.training.results import command_line, write_result


def test_command_line_quotes_arguments_so_it_can_be_rerun():
    cmd = command_line("llmcourse.training.distill", ["--out", "my results.json"])
    assert cmd == "python -m llmcourse.training.distill --out 'my results.json'"


def test_write_result_replaces_the_file_whole(tmp_path):
    out = tmp_path / "deep" / "r.json"
    write_result(out, {"loss": 1.5})
    write_result(out, {"loss": 1.25, "runs": [1, 2]})
    assert json.loads(out.read_text()) == {"loss": 1.25, "runs": [1, 2]}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_result(tmp_path):
    out = tmp_path / "r.json"
    write_result(out, {"loss": 1.5})
    with pytest.raises(TypeError):
        write_result(out, {"loss": object()})  # not JSON: fails before anything is replaced
    assert json.loads(out.read_text()) == {"loss": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("module", [distill, precision_compare, scaling, side_by_side])
def test_every_experiment_writes_through_the_one_helper(module):
    # The experiments import it rather than writing JSON themselves (issue 7: one helper each).
    assert module.write_result is write_result
    assert module.command_line is command_line


def test_the_command_names_the_module_also_when_run_with_python_m(monkeypatch):
    # Run as `python -m llmcourse.training.distill`, the module's __name__ is "__main__":
    # the recorded command must still be the one to type.
    import importlib.machinery
    import sys
    import types

    main = types.ModuleType("__main__")
    main.__spec__ = importlib.machinery.ModuleSpec("llmcourse.training.distill", None)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert command_line("__main__", ["--out", "r.json"]) == \
        "python -m llmcourse.training.distill --out r.json"


def test_help_shows_the_command_to_type():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "llmcourse.training.scaling", "--help"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.startswith("usage: python -m llmcourse.training.scaling "), out[:200]
