"""Files written so that a crash, a full disk or a kill never leaves a half-written one, and
paths shown without this machine's folders.

**Atomic files.** :func:`write_text_atomic` and :func:`write_bytes_atomic` write into a
temporary file beside the target, flush it to disk, then rename it over the target: a reader
sees the old file or the new one, never a mixture.

**Atomic folders.** :func:`staging_folder` gives a temporary folder to write into and, when
the block ends without an error, swaps it in for the target (:func:`replace_folder`): the old
folder is renamed out of the way to ``.NAME.previous``, the new one renamed in, the old one
deleted. A crash between the two renames leaves the old folder under ``.NAME.previous``, which
:func:`recover_folder` (called by every reader of such folders, and by the next write) puts
back.

**A full disk** shows up as ``OSError(ENOSPC)`` from Python, as ``RuntimeError: [enforce fail
at inline_container.cc:672] . unexpected pos …`` from ``torch.save`` and as ``SafetensorError:
… No space left on device (os error 28)`` from ``safetensors``. :func:`is_no_space` recognises
all three; the writers here report them as one :class:`NoSpaceError` that names the file and
says that what was there before is intact.

**Display paths.** :func:`shown` turns a path into one fit for a committed notebook output or an
error message: relative to the repository when inside it, else its name alone.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = write_text_atomic(folder / "a.txt", "hello")
    >>> (folder / "a.txt").read_text()
    'hello'
    >>> with staging_folder(folder / "ckpt") as tmp:
    ...     _ = (tmp / "b.txt").write_text("1")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'ckpt']
    >>> shown(REPO_ROOT / "data" / "README.md")
    'data/README.md'
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["REPO_ROOT", "shown", "scrub", "write_text_atomic", "write_bytes_atomic",
           "atomic_file", "staging_folder", "replace_folder", "recover_folder",
           "backup_of", "NoSpaceError", "is_no_space", "report_full_disk"]

REPO_ROOT = Path(__file__).resolve().parents[3]  # lib/llmcourse/core/files.py -> the repository


# What a full disk looks like when the errno is lost on the way: torch's zip writer notices a
# short write as a wrong position ("unexpected pos 576 vs 534"), safetensors (Rust) prints the
# OS error. Both seen on a full tmpfs with torch 2.13 and safetensors 0.7.
_NO_SPACE_TEXTS = ("No space left on device", "os error 28", "unexpected pos")


class NoSpaceError(OSError):
    """The disk filled up while writing ``target``; what was there before is intact.

    An ``OSError`` with ``errno.ENOSPC``, whatever library first reported the full disk.

    Example:
        >>> err = NoSpaceError("/runs/ckpt/training_state.pt", "the previous checkpoint is intact")
        >>> print(err)
        [Errno 28] no space left writing ckpt/training_state.pt; the previous checkpoint is intact
        >>> isinstance(err, OSError) and err.errno == errno.ENOSPC
        True
    """

    def __init__(self, target: str | os.PathLike,
                 intact: str = "what was there before is intact") -> None:
        self.target = Path(target)
        self.intact = intact
        # Outside the repository, shown() keeps the file name alone; the folder it is in
        # (which checkpoint?) matters here, and still says nothing about this machine.
        where = shown(target) if _inside_repo(target) else "/".join(Path(target).parts[-2:])
        super().__init__(errno.ENOSPC, f"no space left writing {where}; {intact}")


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


def _inside_repo(path: str | os.PathLike) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(REPO_ROOT)


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



def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the disk is full.

    Example:
        >>> is_no_space(OSError(errno.ENOSPC, "No space left on device"))
        True
        >>> is_no_space(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos"
        ...                          " 576 vs 534"))
        True
        >>> is_no_space(PermissionError(errno.EACCES, "Permission denied"))
        False
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(current) for text in _NO_SPACE_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def report_full_disk(target: str | os.PathLike,
                     intact: str = "what was there before is intact") -> Iterator[None]:
    """Inside the block, a full disk (in any library's words, see :func:`is_no_space`) is
    raised as :class:`NoSpaceError` naming ``target``; other errors pass unchanged.

    Example:
        >>> with report_full_disk("model.safetensors"):
        ...     raise OSError(errno.ENOSPC, "No space left on device")
        Traceback (most recent call last):
        ...
        llmcourse.core.files.NoSpaceError: [Errno 28] no space left writing model.safetensors; ...
    """
    try:
        yield
    except NoSpaceError:
        raise
    except Exception as err:
        if is_no_space(err):
            raise NoSpaceError(target, intact) from err
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.
    On any error the temporary file is deleted and ``path`` is left as it was (a full disk
    is raised as :class:`NoSpaceError`).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_file(target) as f:
        ...     _ = f.write("done")
        >>> target.read_text(), oct(target.stat().st_mode & 0o777)
        ('done', '0o644')
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with report_full_disk(path), os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # a full disk can first show here (delayed allocation)
        os.chmod(tmp, 0o644)  # mkstemp makes a private file; what replaces path is for sharing
        os.replace(tmp, path)
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


def backup_of(folder: str | os.PathLike) -> Path:
    """Where :func:`replace_folder` parks the old ``folder`` during the swap.

    Example:
        >>> backup_of("runs/ckpt").as_posix()
        'runs/.ckpt.previous'
    """
    folder = Path(folder)
    return folder.with_name(f".{folder.name}.previous")


def recover_folder(folder: str | os.PathLike) -> Path:
    """Undo a swap that a crash interrupted: if ``folder`` is missing but its backup exists,
    put the backup back. Return ``folder`` (as a Path).

    Every reader of atomically replaced folders calls this first, and so does the next
    :func:`staging_folder`. (A reader that runs in the instant between another process's two
    renames undoes that swap too; the writer's second rename then fails with an error and the
    old folder stays, whole.)

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "ckpt"
        >>> backup_of(folder).mkdir()                # what a kill between the renames leaves
        >>> recover_folder(folder).is_dir(), backup_of(folder).exists()
        (True, False)
    """
    folder = Path(folder)
    backup = backup_of(folder)
    if not folder.exists() and backup.is_dir():
        os.replace(backup, folder)
    return folder


def _temp_folders(folder: Path) -> list[Path]:
    """Temporary folders that :func:`staging_folder` left beside ``folder`` when killed."""
    return sorted(folder.parent.glob(f".{glob.escape(folder.name)}.tmp-*"))


@contextlib.contextmanager
def staging_folder(folder: str | os.PathLike, intact: str | None = None) -> Iterator[Path]:
    """A fresh temporary folder beside ``folder`` to write into; when the block ends without
    an error, it replaces ``folder`` (:func:`replace_folder`); on an error it is deleted and
    ``folder`` is left as it was.

    A full disk is raised as :class:`NoSpaceError` saying ``intact`` (default: that the
    previous folder is intact, or that nothing was written when there was none); one raised
    inside the block (by :func:`report_full_disk`, naming the file) passes unchanged.
    Temporary folders left by a killed earlier write are deleted first (two processes writing
    the same folder at once is not supported).

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
    for stale in _temp_folders(folder):
        shutil.rmtree(stale, ignore_errors=True)
    if intact is None:
        intact = (f"the previous {folder.name} is intact" if folder.exists()
                  else "nothing was written")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with report_full_disk(folder, intact):
            yield tmp
            replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(tmp: Path, folder: Path,
                   fsync: Callable[[Path], None] = _fsync_dir) -> None:
    """Swap the fully written ``tmp`` in for ``folder``: flush every file to disk, then old →
    backup, ``tmp`` → ``folder`` (the commit point), delete the backup. A crash between the
    renames is undone by :func:`recover_folder`; an error in the second rename undoes the
    first at once."""
    tmp, folder = Path(tmp), Path(folder)
    for path in tmp.rglob("*"):
        # mkdtemp/mkstemp make private files and folders; what is swapped in is for sharing,
        # like anything written with a plain open().
        path.chmod(0o644 if path.is_file() else 0o755)
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    tmp.chmod(0o755)
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
