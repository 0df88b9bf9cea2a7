"""Writing a measurement's result file: the command that made it, and the JSON, atomically.

Every ``python -m llmcourse.training.<experiment> --out FILE`` (scaling, precision_compare,
distill, side_by_side) records the command that reproduces it and writes its JSON through
:func:`write_result`, so that a run killed mid-write never leaves half a file where a notebook
reads the result.

Example:
    >>> command_line("llmcourse.training.distill", ["--out", "data/results/distillation.json"])
    'python -m llmcourse.training.distill --out data/results/distillation.json'
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from llmcourse.core.files import shown, write_text_atomic

__all__ = ["command_line", "module_name", "write_result"]


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as recorded in a result: ``python -m MODULE`` and its arguments (``argv``,
    or the process's own when None). Pass the module's ``__name__``: :func:`module_name` turns
    ``"__main__"`` back into the name it was run by.

    Example:
        >>> command_line("llmcourse.training.scaling", ["--out", "data/results/scaling.json"])
        'python -m llmcourse.training.scaling --out data/results/scaling.json'
    """
    return f"python -m {module_name(module)} " + shlex.join(sys.argv[1:] if argv is None else argv)


def module_name(name: str) -> str:
    """A module's importable name, also when it runs as ``python -m`` (where its ``__name__``
    is ``"__main__"``: the name it was started by is then the main module's spec name).

    Example:
        >>> module_name("llmcourse.training.scaling")
        'llmcourse.training.scaling'
    """
    if name == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is not None and spec.name:
            return spec.name.removesuffix(".__main__")
    return name


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` as indented JSON to ``path`` atomically (a reader never sees half a
    file), creating its folder; say so; return the path.

    Example:
        >>> import tempfile
        >>> out = write_result(Path(tempfile.mkdtemp()) / "new" / "r.json", {"loss": 1.5})
        wrote r.json
        >>> json.loads(out.read_text())
        {'loss': 1.5}
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {shown(out)}")
    return out
