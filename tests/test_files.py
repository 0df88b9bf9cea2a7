"""llmcourse.core.files: atomic files and folders (a failure or a full disk leaves what was
there), recovery of a swap interrupted between its renames, full-disk errors in the words of
Python, torch and safetensors, and display paths."""

from __future__ import annotations

import errno
import os
import stat
import tempfile

import pytest
import torch
from safetensors import SafetensorError

from llmcourse.core import files
from llmcourse.core.files import (
    REPO_ROOT,
    NoSpaceError,
    atomic_file,
    backup_of,
    is_no_space,
    recover_folder,
    replace_folder,
    report_full_disk,
    scrub,
    shown,
    staging_folder,
    write_bytes_atomic,
    write_text_atomic,
)

# What a full disk raises, as seen on a full tmpfs (torch 2.13, safetensors 0.7, Python).
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
SAFETENSORS_FULL = SafetensorError("Error while serializing: I/O error: No space left on device "
                                   "(os error 28)")
PYTHON_FULL = OSError(errno.ENOSPC, "No space left on device")
QUOTA = OSError(errno.EDQUOT, "Disk quota exceeded")


def names(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- recognising a full disk


@pytest.mark.parametrize("err", [TORCH_FULL, SAFETENSORS_FULL, PYTHON_FULL, QUOTA],
                         ids=["torch", "safetensors", "python", "quota"])
def test_full_disk_is_recognised_in_every_librarys_words(err):
    assert is_no_space(err)


def test_full_disk_is_recognised_through_a_chain():
    try:
        try:
            raise PYTHON_FULL
        except OSError as inner:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from inner
    except RuntimeError as outer:
        assert is_no_space(outer)


@pytest.mark.parametrize("err", [PermissionError(errno.EACCES, "Permission denied"),
                                 RuntimeError("[enforce fail at inline_container.cc:300] other"),
                                 OSError("disk full"), ValueError("no")])
def test_other_errors_are_not_a_full_disk(err):
    assert not is_no_space(err)


def test_no_space_error_is_an_oserror_naming_the_file(tmp_path):
    err = NoSpaceError(tmp_path / "ck" / "training_state.pt", "the previous checkpoint is intact")
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(err) == ("[Errno 28] no space left writing ck/training_state.pt; the previous "
                        "checkpoint is intact")
    assert err.target == tmp_path / "ck" / "training_state.pt"
    assert str(tmp_path) not in str(err)  # no path of this machine
    inside = NoSpaceError(REPO_ROOT / "data" / "cache" / "x.pt")
    assert "writing data/cache/x.pt; what was there before is intact" in str(inside)


@pytest.mark.parametrize("err", [TORCH_FULL, SAFETENSORS_FULL, PYTHON_FULL])
def test_report_full_disk_converts_and_chains(err):
    with pytest.raises(NoSpaceError, match="writing model.safetensors; kept") as caught:
        with report_full_disk("model.safetensors", "kept"):
            raise err
    assert caught.value.__cause__ is err


def test_report_full_disk_lets_other_errors_through():
    with pytest.raises(PermissionError), report_full_disk("a.txt"):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(KeyboardInterrupt), report_full_disk("a.txt"):
        raise KeyboardInterrupt


# ---------------------------------------------------------------- atomic files


def test_atomic_writes_replace_the_file(tmp_path):
    target = tmp_path / "a.txt"
    assert write_text_atomic(target, "one\ntwo") == target
    assert target.read_bytes() == b"one\ntwo"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert names(tmp_path) == ["a.txt"]


def test_text_is_utf8_with_unix_line_ends(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "é\n")
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyError), atomic_file(target) as f:
        f.write("new, half")
        raise KeyError("the writer failed half-way")
    assert target.read_text() == "old" and names(tmp_path) == ["a.txt"]


def test_a_full_disk_in_an_atomic_write_is_reported(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("old")

    def fsync(fd):  # the writes fit in the cache; the flush to disk finds no room
        raise PYTHON_FULL

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(NoSpaceError, match="no space left writing .*a.txt; what was there "
                                           "before is intact"):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and names(tmp_path) == ["a.txt"]


# ---------------------------------------------------------------- atomic folders


def test_staging_folder_swaps_in_a_complete_folder(tmp_path):
    target = tmp_path / "sub" / "ck"  # parents are created
    with staging_folder(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".ck.tmp-")
        (tmp / "a").write_text("1")
        (tmp / "d").mkdir()
        (tmp / "d" / "b").write_text("2")
    assert names(target) == ["a", "d"] and (target / "d" / "b").read_text() == "2"
    with staging_folder(target) as tmp:
        (tmp / "c").write_text("3")
    assert names(target) == ["c"]  # replaced, not merged
    assert names(target.parent) == ["ck"]  # no backup, no temporary folder


def test_swapped_in_folder_is_readable_by_others(tmp_path):
    target = tmp_path / "ck"
    with staging_folder(target) as tmp:
        fd, _ = tempfile.mkstemp(dir=tmp)  # private (0600), as mkstemp makes them
        os.close(fd)
    for path in [target, *target.iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path.name, oct(mode))


@pytest.mark.parametrize("existed", [True, False])
def test_an_error_leaves_the_folder_as_it_was(tmp_path, existed):
    target = tmp_path / "ck"
    if existed:
        with staging_folder(target) as tmp:
            (tmp / "old").write_text("old")
    with pytest.raises(ValueError, match="bad"), staging_folder(target) as tmp:
        (tmp / "new").write_text("new")
        raise ValueError("bad")
    assert names(tmp_path) == (["ck"] if existed else [])
    if existed:
        assert names(target) == ["old"]


@pytest.mark.parametrize("err", [TORCH_FULL, SAFETENSORS_FULL, PYTHON_FULL],
                         ids=["torch", "safetensors", "python"])
def test_a_full_disk_while_staging_is_reported_and_the_old_folder_kept(tmp_path, err):
    target = tmp_path / "ck"
    with staging_folder(target) as tmp:
        (tmp / "old").write_text("old")
    with pytest.raises(NoSpaceError, match="no space left writing .*ck; the previous ck is "
                                           "intact") as caught, staging_folder(target) as tmp:
        (tmp / "new").write_text("half")
        raise err
    assert caught.value.__cause__ is err
    assert names(tmp_path) == ["ck"] and names(target) == ["old"]


def test_a_full_disk_on_a_first_write_says_nothing_was_written(tmp_path):
    with pytest.raises(NoSpaceError, match="nothing was written"), \
            staging_folder(tmp_path / "ck"):
        raise PYTHON_FULL
    assert names(tmp_path) == []


def test_a_named_full_disk_inside_passes_unchanged(tmp_path):
    target = tmp_path / "ck"
    with pytest.raises(NoSpaceError, match="writing ck/model.safetensors; kept"), \
            staging_folder(target) as tmp, report_full_disk(target / "model.safetensors", "kept"):
        torch.save(torch.zeros(3), tmp / "x.pt")
        raise SAFETENSORS_FULL
    assert names(tmp_path) == []


def test_a_kill_between_the_renames_is_recovered(tmp_path):
    target = tmp_path / "ck"
    with staging_folder(target) as tmp:
        (tmp / "old").write_text("old")
    # The state a kill leaves after "ck → .ck.previous" and before ".ck.tmp-… → ck".
    os.replace(target, backup_of(target))
    (tmp_path / ".ck.tmp-killed").mkdir()
    (tmp_path / ".ck.tmp-killed" / "new").write_text("half")
    assert recover_folder(target) == target
    assert names(target) == ["old"] and names(tmp_path) == [".ck.tmp-killed", "ck"]
    with staging_folder(target) as tmp:  # the next write removes the killed one's leftovers
        (tmp / "new").write_text("new")
    assert names(tmp_path) == ["ck"] and names(target) == ["new"]


def test_the_next_write_recovers_too(tmp_path):
    target = tmp_path / "ck"
    backup_of(target).mkdir()
    (backup_of(target) / "old").write_text("old")
    with pytest.raises(ValueError), staging_folder(target):
        raise ValueError("fails after recovering")
    assert names(tmp_path) == ["ck"] and names(target) == ["old"]


def test_recover_folder_leaves_a_complete_folder_alone(tmp_path):
    (tmp_path / "ck").mkdir()
    backup_of(tmp_path / "ck").mkdir()  # a stale backup beside a complete folder
    recover_folder(tmp_path / "ck")
    assert names(tmp_path) == [".ck.previous", "ck"]
    assert recover_folder(tmp_path / "missing") == tmp_path / "missing"
    assert not (tmp_path / "missing").exists()


def test_a_failed_second_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "ck"
    target.mkdir()
    (target / "old").write_text("old")
    tmp = tmp_path / ".ck.tmp-1"
    tmp.mkdir()
    real = os.replace

    def replace(src, dst):
        if os.fspath(src) == os.fspath(tmp):
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OSError, match="I/O error"):
        replace_folder(tmp, target)
    monkeypatch.undo()
    assert names(target) == ["old"] and not backup_of(target).exists()


# ---------------------------------------------------------------- display paths


def test_shown_and_scrub_never_show_this_machines_folders(tmp_path):
    assert shown(REPO_ROOT / "lib" / "llmcourse") == "lib/llmcourse"
    assert shown(REPO_ROOT) == "."
    assert shown(tmp_path / "x" / "y.txt") == "y.txt"
    assert scrub(f"see {REPO_ROOT}/data/a and {REPO_ROOT}") == "see data/a and ."
    home = os.path.expanduser("~")
    if not REPO_ROOT.is_relative_to(home):
        assert scrub(f"{home}/x") == "~/x"
