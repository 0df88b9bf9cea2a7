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
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from llmcourse.core.files import write_text_atomic
from llmcourse.text.ids import token_id_list

__all__ = ["Tokenizer", "CharTokenizer"]


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
        if isinstance(chars, (bytes, bytearray)) or not isinstance(chars, Iterable):
            raise TypeError(f"chars must be a str or an iterable of single characters, got "
                            f"{type(chars).__name__}")
        chars = list(chars)
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        bad = next((c for c in chars if not isinstance(c, str) or len(c) != 1), None)
        if bad is not None:
            raise ValueError(f"chars must be single characters, got {bad!r}")
        if len(set(chars)) != len(chars):
            dup = next(c for c in chars if chars.count(c) > 1)
            raise ValueError(f"chars must be distinct; {dup!r} appears {chars.count(dup)} times")
        if unknown is not None and not isinstance(unknown, str):
            raise TypeError(f"unknown must be a character or None, got {type(unknown).__name__}")
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
        """The text of ``ids``: a list or tuple of ints, or a 1-D numpy array or torch tensor
        of an integer dtype. Anything else (a 2-D batch, floats, an id outside the vocabulary)
        is a ``TypeError``/``ValueError`` saying what was wrong.

        Example:
            >>> import torch
            >>> CharTokenizer.from_text("ab").decode(torch.tensor([1, 0]))
            'ba'
        """
        chars = self.chars
        return "".join([chars[i] for i in token_id_list(ids, len(chars))])

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``char_vocab.json`` into ``folder`` (created if needed), atomically."""
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path (str or os.PathLike), got "
                            f"{type(folder).__name__}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / self.FILE, json.dumps(
            {"chars": "".join(self.chars), "unknown": self.unknown}, ensure_ascii=False))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> CharTokenizer:
        """Read what :meth:`save` wrote."""
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path (str or os.PathLike), got "
                            f"{type(folder).__name__}")
        path = Path(folder) / cls.FILE
        if not path.is_file():
            raise ValueError(f"{path}: file not found; expected a CharTokenizer's {cls.FILE}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); expected a CharTokenizer "
                             "file") from None
        if not isinstance(data, dict) or not isinstance(data.get("chars"), str) or \
                not isinstance(data.get("unknown", None), (str, type(None))):
            raise ValueError(f"{path}: expected a JSON object with \"chars\" (a string) and "
                             f"\"unknown\" (a character or null), got {str(data)[:80]}")
        try:
            return cls(data["chars"], data.get("unknown"))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a valid CharTokenizer file ({err})") from None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"
