"""Files written so that a crash, a full disk or a kill never leaves a half-written one, and
paths shown without this machine's folders.

**Atomic files.** :func:`write_text_atomic` and :func:`write_bytes_atomic` write into a
temporary file beside the target, flush it to disk, then rename it over the target: a reader
sees the old file or the new one, never a mixture.

**Atomic folders.** :func:`replace_folder` swaps a completely written temporary folder in for
the target with a *single* rename of the old folder out of the way first; a crash between the
two renames leaves the old folder under ``.NAME.previous``, which :func:`recover_folder`
(called by every reader of such folders) puts back.

**Display paths.** :func:`shown` turns a path into one fit for a committed notebook output or an
error message: relative to the repository when inside it, else its name alone.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = write_text_atomic(folder / "a.txt", "hello")
    >>> (folder / "a.txt").read_text()
    'hello'
    >>> shown(REPO_ROOT / "data" / "README.md")
    'data/README.md'
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["REPO_ROOT", "shown", "scrub", "write_text_atomic", "write_bytes_atomic",
           "atomic_file", "staging_folder", "replace_folder", "recover_folder",
           "backup_of", "NoSpaceError"]

REPO_ROOT = Path(__file__).resolve().parents[3]  # lib/llmcourse/core/files.py -> the repository


class NoSpaceError(OSError):
    """The disk filled up while writing; what was there before is intact."""


def shown(path: str | os.PathLike) -> str:
    """``path`` for printing: relative to the repository when inside it, else its name alone
    (never an absolute path of this machine).

    Example:
        >>> shown(REPO_ROOT / "notebooks" / "00_welcome.ipynb")
        'notebooks/00_welcome.ipynb'
        >>> shown("/somewhere/else/model.safetensors")
        'model.safetensors'
    """
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return path.name


def scrub(text: str) -> str:
    """``text`` with this machine's repository and home folders replaced by ``.`` and ``~``.

    Example:
        >>> scrub(f"error in {REPO_ROOT}/lib/x.py")
        'error in lib/x.py'
    """
    text = text.replace(str(REPO_ROOT) + os.sep, "").replace(str(REPO_ROOT), ".")
    return text.replace(str(Path.home()), "~")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _no_space(err: OSError, target: Path) -> OSError:
    """``err`` as a :class:`NoSpaceError` naming ``target`` when the disk is full."""
    if err.errno == errno.ENOSPC or "unexpected pos" in str(err) or "No space" in str(err):
        return NoSpaceError(errno.ENOSPC, f"no space left on the device writing {shown(target)}; "
                            "what was there before is intact")
    return err


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_file(target) as f:
        ...     _ = f.write("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _no_space(err, path) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically; return the path."""
    with atomic_file(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def backup_of(folder: Path) -> Path:
    """Where :func:`replace_folder` parks the old ``folder`` during the swap."""
    return folder.with_name(f".{folder.name}.previous")


def recover_folder(folder: str | os.PathLike) -> Path:
    """Undo a swap that a crash interrupted: if ``folder`` is missing but its backup exists,
    put the backup back. Every reader of atomically replaced folders calls this first."""
    folder = Path(folder)
    backup = backup_of(folder)
    if not folder.exists() and backup.is_dir():
        os.replace(backup, folder)
    return folder


@contextlib.contextmanager
def staging_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``folder`` to write into; when the block ends without
    an error, it replaces ``folder`` (:func:`replace_folder`); on an error it is deleted and
    ``folder`` is left as it was. A full disk is reported as :class:`NoSpaceError`.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "ckpt"
        >>> with staging_folder(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("1")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        replace_folder(tmp, folder)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        full = _no_space(err if isinstance(err, OSError) else OSError(str(err)), folder)
        if isinstance(full, NoSpaceError):
            raise full from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp: Path, folder: Path,
                   fsync: Callable[[Path], None] = _fsync_dir) -> None:
    """Swap the fully written ``tmp`` in for ``folder``: old → backup, ``tmp`` → ``folder``,
    delete the backup. A crash between the renames is undone by :func:`recover_folder`."""
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    backup = backup_of(folder)
    if folder.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(folder, backup)
    try:
        os.replace(tmp, folder)  # the commit point
    except BaseException:
        recover_folder(folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    fsync(folder.parent)
