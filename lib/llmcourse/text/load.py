"""Reading back whichever tokenizer a folder holds (a checkpoint folder, for instance).

A folder with ``vocab.json`` + ``merges.txt`` holds a byte-level BPE tokenizer (GPT-2's format,
which ``transformers``' ``AutoTokenizer`` reads too); one with ``char_vocab.json`` holds a
character tokenizer (ours only).

Example:
    >>> import tempfile
    >>> from llmcourse.text.chars import CharTokenizer
    >>> folder = tempfile.mkdtemp()
    >>> _ = CharTokenizer.from_text("abc").save(folder)
    >>> load_tokenizer(folder).decode([0, 1, 2])
    'abc'
"""

from __future__ import annotations

import os
from pathlib import Path

from llmcourse.core.files import recover_folder
from llmcourse.text.bpe import ByteLevelBPE
from llmcourse.text.chars import CharTokenizer

__all__ = ["load_tokenizer"]


def load_tokenizer(folder: str | os.PathLike) -> ByteLevelBPE | CharTokenizer | None:
    """The tokenizer saved in ``folder``, or None when it holds none."""
    folder = recover_folder(folder)
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return ByteLevelBPE.load(folder)
    if (folder / CharTokenizer.FILE).is_file():
        return CharTokenizer.load(folder)
    if not Path(folder).is_dir():
        raise ValueError(f"{folder}: no such folder; expected one holding a tokenizer")
    return None
