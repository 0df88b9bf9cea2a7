"""The character tokenizer: one id per distinct character of a text, the simplest tokenizer
there is (chapter 05 trains on it before chapter 04's BPE is used).

Example:
    >>> tok = CharTokenizer.from_text("to be or not to be")
    >>> tok.decode(tok.encode("not to be"))
    'not to be'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import torch

__all__ = ["Tokenizer", "CharTokenizer"]

# Held out for validation, by file stem (`hamlet_gut.txt` → "hamlet"): two tragedies' worth of
# drama in different registers (Hamlet, Henry V), a comedy (Twelfth Night), and verse (Sonnets).
VALIDATION_WORKS: tuple[str, ...] = ("hamlet", "twelfth_night", "henry_v", "sonnets")
# Between works in a character stream: a blank line, which the texts already use between scenes.


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
