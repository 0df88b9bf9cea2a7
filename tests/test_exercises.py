"""Workshop mode: stripping solutions from notebooks (llmcourse.course.exercises)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmcourse.course.exercises as ex
from llmcourse.checks import CheckFailed
from llmcourse.checks.ch00 import check_softmax
from llmcourse.course.exercises import strip_notebook, strip_solutions, write_exercises

RAISE = 'raise NotImplementedError("exercise")'
REPO = Path(__file__).resolve().parents[1]

SOFTMAX_CELL = textwrap.dedent('''\
    import torch

    def softmax(x: torch.Tensor) -> torch.Tensor:
        """Stable softmax over the last axis."""
        # BEGIN SOLUTION
        z = x - x.amax(dim=-1, keepdim=True)
        return z.exp() / z.exp().sum(dim=-1, keepdim=True)
        # END SOLUTION
''')


def _synthetic_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    md = nbformat.v4.new_markdown_cell("# Title\n\n```python\n# BEGIN SOLUTION\n```")
    code = nbformat.v4.new_code_cell(SOFTMAX_CELL, execution_count=3)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    code.metadata["tags"] = ["keep-me"]
    check = nbformat.v4.new_code_cell("check_softmax(softmax)", execution_count=4)
    check.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "1"},
                                            execution_count=4)]
    plain = nbformat.v4.new_code_cell("x = 1\nprint(x)", execution_count=5)
    nb.cells = [md, code, check, plain]
    return nb


# ---------------------------------------------------------------- strip_solutions


def test_strip_replaces_block_at_begin_indentation():
    out = strip_solutions(SOFTMAX_CELL)
    lines = out.splitlines()
    assert "    " + RAISE in lines
    assert not any("amax" in line or "SOLUTION" in line for line in lines)
    # Everything outside the block is kept as it was.
    assert out.startswith(SOFTMAX_CELL.split("    # BEGIN")[0])
    assert out.endswith(RAISE + "\n")


def test_strip_nested_indentation_and_runs():
    src = textwrap.dedent('''\
        def f(rows):
            total = 0
            for r in rows:
                if r:
                    # BEGIN SOLUTION
                    total += r
                    # END SOLUTION
            return total
    ''')
    out = strip_solutions(src)
    assert "            " + RAISE + "\n" in out
    assert "            " + RAISE not in out.replace("            " + RAISE, "", 1)
    assert "    return total" in out
    ns: dict = {}
    exec(compile(out, "<cell>", "exec"), ns)
    assert ns["f"]([]) == 0  # the loop body is never reached: the rest still runs
    with pytest.raises(NotImplementedError, match="exercise"):
        ns["f"]([1])


def test_strip_several_blocks_and_top_level():
    src = ("# BEGIN SOLUTION\na = 1\n# END SOLUTION\nb = 2\n"
           "  # BEGIN SOLUTION\n  c\n  # END SOLUTION")
    out = strip_solutions(src)
    assert out == f"{RAISE}\nb = 2\n  {RAISE}"


def test_strip_keeps_crlf_line_endings():
    src = "def f():\r\n    # BEGIN SOLUTION\r\n    return 1\r\n    # END SOLUTION\r\n"
    assert strip_solutions(src) == f"def f():\r\n    {RAISE}\r\n"


def test_strip_without_markers_is_identity():
    src = "x = 1  # BEGIN SOLUTION is only a marker on a line of its own\nprint(x)\n"
    assert strip_solutions(src) == src


@pytest.mark.parametrize(("src", "pattern"), [
    ("a\n# END SOLUTION\n", r"line 2: '# END SOLUTION' without"),
    ("a\n  # BEGIN SOLUTION\nb\n", r"line 2: '# BEGIN SOLUTION' is never closed"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", r"line 2: .* inside the block"),
])
def test_strip_unmatched_markers(src, pattern):
    with pytest.raises(ValueError, match=pattern):
        strip_solutions(src)


def test_strip_rejects_non_string():
    with pytest.raises(TypeError, match="source must be a str"):
        strip_solutions(["# BEGIN SOLUTION"])  # type: ignore[arg-type]


_line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c"
                              "\x1c\x1d\x1e\x85\u2028\u2029"), max_size=20)


@settings(max_examples=50, deadline=None)
@given(before=st.lists(_line, max_size=4), inside=st.lists(_line, max_size=4),
       after=st.lists(_line, max_size=4), indent=st.sampled_from(["", "    ", "\t", "        "]))
def test_strip_property(before, inside, after, indent):
    def keep(lines):
        return [s for s in lines if s.strip() not in (ex.BEGIN, ex.END)]

    before, inside, after = keep(before), keep(inside), keep(after)
    src = "".join(s + "\n" for s in
                  [*before, indent + ex.BEGIN, *inside, indent + "  " + ex.END, *after])
    expected = "".join(s + "\n" for s in [*before, indent + RAISE, *after])
    assert strip_solutions(src) == expected
    assert strip_solutions(expected) == expected  # stripping is idempotent


# ---------------------------------------------------------------- notebooks


def test_strip_notebook_clears_outputs_and_keeps_other_cells():
    nb = _synthetic_notebook()
    learner = strip_notebook(nb, "toy.ipynb")
    nbformat.validate(learner)
    assert learner.cells[0] == nb.cells[0]  # markdown untouched, markers in it included
    for cell in learner.cells[1:]:
        assert cell.outputs == [] and cell.execution_count is None
    assert learner.cells[1].source == strip_solutions(SOFTMAX_CELL)
    assert learner.cells[1].metadata["tags"] == ["keep-me"]
    assert learner.cells[3].source == nb.cells[3].source
    # The original is not modified.
    assert nb.cells[1].outputs and nb.cells[1].execution_count == 3 and "amax" in nb.cells[1].source


def test_strip_notebook_names_notebook_and_cell():
    nb = _synthetic_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("def g():\n    # BEGIN SOLUTION\n    pass\n"))
    with pytest.raises(ValueError, match=r"toy\.ipynb: cell 4: unmatched .* never closed"):
        strip_notebook(nb, "toy.ipynb")


def test_stripped_exercise_raises_and_checker_says_not_implemented():
    learner = strip_notebook(_synthetic_notebook())
    ns: dict = {}
    exec(compile(learner.cells[1].source, "<cell>", "exec"), ns)
    import torch

    with pytest.raises(NotImplementedError, match="exercise"):
        ns["softmax"](torch.zeros(3))
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_softmax(ns["softmax"])
    # The committed (solution) version of the same cell passes the same checker.
    full: dict = {}
    exec(compile(SOFTMAX_CELL, "<cell>", "exec"), full)
    check_softmax(full["softmax"])


def test_write_exercises_round_trip(tmp_path, capsys):
    src, dst = tmp_path / "notebooks", tmp_path / "exercises"
    src.mkdir()
    nb = _synthetic_notebook()
    nbformat.write(nb, src / "00_toy.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), src / "01_empty.ipynb")
    before = (src / "00_toy.ipynb").read_bytes()

    assert ex.main([str(src), str(dst)]) == 0
    assert "wrote 2 learner notebook(s)" in capsys.readouterr().out
    assert sorted(p.name for p in dst.iterdir()) == ["00_toy.ipynb", "01_empty.ipynb"]
    assert (src / "00_toy.ipynb").read_bytes() == before
    learner = nbformat.read(dst / "00_toy.ipynb", as_version=4)
    nbformat.validate(learner)
    assert [c.cell_type for c in learner.cells] == [c.cell_type for c in nb.cells]
    assert learner.cells[0].source == nb.cells[0].source
    assert RAISE in learner.cells[1].source and "amax" not in learner.cells[1].source
    assert all(c.outputs == [] and c.execution_count is None
               for c in learner.cells if c.cell_type == "code")
    assert ast.parse(learner.cells[1].source)
    # A second run overwrites the copies with the same result.
    first = (dst / "00_toy.ipynb").read_bytes()
    assert ex.main([str(src), str(dst)]) == 0
    assert (dst / "00_toy.ipynb").read_bytes() == first
    assert not [p for p in dst.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_exercises_bad_notebook_writes_nothing(tmp_path, capsys):
    src, dst = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    nbformat.write(_synthetic_notebook(), src / "00_good.ipynb")
    bad = _synthetic_notebook()
    bad.cells[3].source = "# END SOLUTION\n"
    nbformat.write(bad, src / "01_bad.ipynb")
    with pytest.raises(ValueError, match=r"01_bad\.ipynb: cell 3"):
        write_exercises(src, dst)
    assert not dst.exists()
    assert ex.main([str(src), str(dst)]) == 2
    assert "01_bad.ipynb: cell 3" in capsys.readouterr().err


def test_write_exercises_refuses_bad_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        write_exercises(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .ipynb notebooks"):
        write_exercises(tmp_path / "empty", tmp_path / "out")
    nbformat.write(_synthetic_notebook(), tmp_path / "empty" / "a.ipynb")
    with pytest.raises(ValueError, match="would overwrite the solutions"):
        write_exercises(tmp_path / "empty", tmp_path / "empty")


def test_course_notebooks_strip_cleanly(tmp_path):
    """Every committed notebook has balanced markers, and its learner copy is valid Python."""
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if not notebooks:
        pytest.skip("no notebooks yet")
    written = write_exercises(REPO / "notebooks", tmp_path)
    assert len(written) == len(notebooks)
    for path in written:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert cell.outputs == []
                # IPython magics are not Python; leave those cells to nbval.
                if not any(line.lstrip().startswith(("%", "!")) for line in
                           cell.source.splitlines()):
                    ast.parse(cell.source)


def test_interrupted_write_keeps_the_previous_copy(tmp_path, monkeypatch):
    """Each learner copy is written atomically: a failure half-way through writing leaves
    the copy from the previous run, byte for byte, and no temporary file."""
    src, dst = tmp_path / "notebooks", tmp_path / "exercises"
    src.mkdir()
    nbformat.write(_synthetic_notebook(), src / "00_toy.ipynb")
    write_exercises(src, dst)
    before = (dst / "00_toy.ipynb").read_bytes()
    (src / "00_toy.ipynb").write_text((src / "00_toy.ipynb").read_text().replace("Title", "New"))

    def half_then_fail(nb, fh, *args, **kwargs):
        fh.write(nbformat.writes(nb)[:40])
        raise OSError("disk full")

    monkeypatch.setattr(ex.nbformat, "write", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_exercises(src, dst)
    assert (dst / "00_toy.ipynb").read_bytes() == before
    assert sorted(p.name for p in dst.iterdir()) == ["00_toy.ipynb"]


def test_folder_errors_show_no_absolute_path(tmp_path, capsys):
    with pytest.raises(ValueError) as err:
        write_exercises(tmp_path / "missing", tmp_path / "out")
    assert "'missing' does not exist" in str(err.value) and str(tmp_path) not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as err:
        write_exercises(tmp_path / "empty", tmp_path / "out")
    assert str(err.value) == "no .ipynb notebooks found in 'empty'"
    assert ex.main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert str(tmp_path) not in capsys.readouterr().err
