"""Workshop mode: learner copies of the notebooks, with the exercise solutions taken out.

In the committed notebooks each exercise's reference solution sits between two marker lines::

    def softmax(x):
        # BEGIN SOLUTION
        z = x - x.amax(dim=-1, keepdim=True)
        return z.exp() / z.exp().sum(dim=-1, keepdim=True)
        # END SOLUTION

The learner copy keeps the function and replaces the whole block, markers included, by one line
``raise NotImplementedError("exercise")`` at the indentation of ``# BEGIN SOLUTION``; the
checker cell after it then reports "not implemented yet" until the learner fills it in. All
outputs and execution counts are cleared, so the copies open clean.

Command line (what ``make exercises`` runs)::

    python -m llmcourse.course.exercises notebooks exercises
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

from llmcourse.core.files import atomic_file, shown

__all__ = ["BEGIN", "END", "REPLACEMENT", "strip_solutions", "strip_notebook", "write_exercises",
           "main"]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
REPLACEMENT = 'raise NotImplementedError("exercise")'


def strip_solutions(source: str) -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block by a ``raise`` line.

    The ``raise NotImplementedError("exercise")`` line takes the indentation of the BEGIN
    marker; lines outside the blocks are kept byte for byte. A marker line is one whose
    stripped text is exactly the marker.

    Example:
        >>> src = "def f(x):\\n    # BEGIN SOLUTION\\n    return x + 1\\n    # END SOLUTION\\n"
        >>> print(strip_solutions(src), end="")
        def f(x):
            raise NotImplementedError("exercise")

    Raises:
        ValueError: on an END without BEGIN, a BEGIN inside a block, or a BEGIN never closed,
            naming the line number (1-based).
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    out: list[str] = []
    open_line = 0  # line number of the open BEGIN marker, 0 when outside a block
    indent = ""
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        text = line.strip()
        if text == BEGIN:
            if open_line:
                raise ValueError(f"line {number}: '{BEGIN}' inside the block opened at line "
                                 f"{open_line}; expected '{END}' first")
            open_line, indent = number, line[: len(line) - len(line.lstrip())]
        elif text == END:
            if not open_line:
                raise ValueError(f"line {number}: '{END}' without a '{BEGIN}' before it")
            # Keep the END line's own line ending so a block at the very end stays so.
            ending = line[len(line.rstrip("\r\n")):]
            out.append(indent + REPLACEMENT + ending)
            open_line = 0
        elif not open_line:
            out.append(line)
    if open_line:
        raise ValueError(f"line {open_line}: '{BEGIN}' is never closed by '{END}'")
    return "".join(out)


def strip_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A learner copy of ``nb``: solutions stripped, outputs and execution counts cleared.

    Markdown and raw cells are unchanged; the input notebook is not modified.

    Raises:
        ValueError: naming ``name`` and the cell index when a code cell's markers do not match.
    """
    learner = copy.deepcopy(nb)
    for index, cell in enumerate(learner.cells):
        if cell.cell_type != "code":
            continue
        try:
            cell.source = strip_solutions(cell.source)
        except ValueError as err:
            raise ValueError(f"{name}: cell {index}: unmatched solution markers: {err}") from None
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)  # timings recorded by some front-ends
    return learner


def write_exercises(src_dir: str | Path, dst_dir: str | Path) -> list[Path]:
    """Write a learner copy of every ``*.ipynb`` in ``src_dir`` into ``dst_dir``.

    Every notebook is converted before anything is written, so one bad notebook leaves the
    destination untouched. Each file is written atomically.

    Returns:
        The paths written, in name order.

    Raises:
        ValueError: ``src_dir`` is not a folder, holds no notebooks, is the same folder as
            ``dst_dir``, or a notebook's markers do not match.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    if not src.is_dir():
        raise ValueError(f"source folder {shown(src)!r} does not exist; expected the notebooks/ "
                         "folder")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"destination {shown(dst)!r} is the source folder: it would overwrite "
                         "the solutions; choose another folder, e.g. exercises/")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"no .ipynb notebooks found in {shown(src)!r}")
    copies = [(p.name, strip_notebook(nbformat.read(p, as_version=4), p.name)) for p in paths]
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for name, nb in copies:
        with atomic_file(dst / name, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
        written.append(dst / name)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.course.exercises SRC DST``: write the learner copies, report what was
    done."""
    parser = argparse.ArgumentParser(prog="python -m llmcourse.course.exercises",
                                     description="Write learner copies of the course notebooks.")
    parser.add_argument("src", help="folder of notebooks with solutions (notebooks)")
    parser.add_argument("dst", help="folder for the learner copies (exercises)")
    args = parser.parse_args(argv)
    try:
        written = write_exercises(args.src, args.dst)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} learner notebook(s) to {shown(args.dst)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
