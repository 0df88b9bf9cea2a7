"""Hugging Face's GPT-2 tokenizer files, written and read: ``vocab.json``, ``merges.txt``,
``tokenizer_config.json`` and ``special_tokens_map.json``.

:meth:`llmcourse.text.bpe.ByteLevelBPE.save` and :meth:`~llmcourse.text.bpe.ByteLevelBPE.load`
use these two functions; the files are GPT-2's own format, so ``transformers``'
``AutoTokenizer.from_pretrained(folder)`` reads what :func:`write_gpt2_files` writes.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> byte_tokens = [bytes([b]) for b in BYTE_TO_CHAR]          # GPT-2's ids 0..255
    >>> _ = write_gpt2_files(folder, byte_tokens + [b"ab"], [(64, 65)], {})
    >>> (folder / "merges.txt").read_text()
    '#version: 0.2\\na b\\n'
    >>> vocab, merges, specials = read_gpt2_files(folder)
    >>> vocab[256], merges, specials
    (b'ab', [(64, 65)], {})
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmcourse.core.files import write_text_atomic
from llmcourse.text.bytelevel import BYTE_TO_CHAR, CHAR_TO_BYTE, EOT, token_str

__all__ = ["VOCAB_FILE", "MERGES_FILE", "write_gpt2_files", "read_gpt2_files"]

VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
CONFIG_FILE, SPECIAL_MAP_FILE = "tokenizer_config.json", "special_tokens_map.json"


def write_gpt2_files(
    folder: str | os.PathLike,
    id_to_bytes: Sequence[bytes],
    merges: Sequence[tuple[int, int]],
    special_tokens: Mapping[str, int],
    model_max_length: int | None = None,
) -> Path:
    """Write the four files into ``folder`` (created if needed), each atomically.

    ``id_to_bytes`` holds every id's bytes (special tokens' entries are replaced by their text),
    ``merges`` are (left id, right id) in priority order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    id_to_str = [token_str(t) for t in id_to_bytes]
    for s, i in special_tokens.items():
        id_to_str[i] = s
    vocab = {s: i for i, s in enumerate(id_to_str)}
    if len(vocab) != len(id_to_str):
        raise ValueError("a special token spells the same string as a byte token; "
                         "vocab.json cannot hold both")
    lines = "".join(f"{id_to_str[a]} {id_to_str[b]}\n" for a, b in merges)
    specials = sorted(special_tokens, key=special_tokens.__getitem__)
    # GPT2Tokenizer defaults bos/eos/unk to <|endoftext|> and would *add* that token if it
    # were missing, so always name them: the eot token if present, else the first special.
    main = EOT if EOT in special_tokens else (specials[0] if specials else None)
    extra = [s for s in specials if s != main]
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "errors": "replace",
        "bos_token": main,
        "eos_token": main,
        "unk_token": main,
        "pad_token": None,
        "extra_special_tokens": extra,
        "added_tokens_decoder": {
            str(special_tokens[s]): {
                "content": s, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True,
            }
            for s in specials
        },
    }
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    special_map = {"bos_token": main, "eos_token": main, "unk_token": main,
                   "additional_special_tokens": extra}
    write_text_atomic(folder / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False))
    write_text_atomic(folder / MERGES_FILE, "#version: 0.2\n" + lines)
    write_text_atomic(folder / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False))
    write_text_atomic(folder / SPECIAL_MAP_FILE,
                      json.dumps(special_map, indent=2, ensure_ascii=False))
    return folder


def read_gpt2_files(
    folder: str | os.PathLike,
) -> tuple[dict[int, bytes], list[tuple[int, int]], dict[str, int]]:
    """Read ``vocab.json`` + ``merges.txt`` (+ ``tokenizer_config.json`` if present).

    Returns (id -> bytes for every non-special token, merges as id pairs, special token -> id).
    Special tokens are those ``transformers``' ``GPT2Tokenizer`` would treat as special: the
    ``added_tokens_decoder`` and the bos/eos/unk/pad/extra tokens of ``tokenizer_config.json``,
    and ``<|endoftext|>`` (its default bos/eos/unk) when the config does not name others. Any
    other vocab entry is byte-level text. Malformed files raise ``ValueError`` naming the file
    (and line) and what was expected.
    """
    folder = Path(folder)
    vocab_path, merges_path = folder / VOCAB_FILE, folder / MERGES_FILE
    for p in (vocab_path, merges_path):
        if not p.is_file():
            raise ValueError(f"{p}: file not found; a GPT-2 tokenizer folder needs "
                             f"{VOCAB_FILE} and {MERGES_FILE}")
    try:
        str_vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{vocab_path}: not valid JSON ({err})") from None
    if not isinstance(str_vocab, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in str_vocab.items()
    ):
        raise ValueError(f"{vocab_path}: expected a JSON object of token string -> int id")
    declared, named = _config_specials(folder / CONFIG_FILE)
    for s, i in declared.items():
        if str_vocab.setdefault(s, i) != i:
            raise ValueError(f"{folder / CONFIG_FILE}: special token {s!r} has id {i} "
                             f"but {vocab_path.name} gives it {str_vocab[s]}")
    for ch in BYTE_TO_CHAR.values():
        if ch not in str_vocab:
            raise ValueError(f"{vocab_path}: lacks the byte token {ch!r}")
    merges: list[tuple[int, int]] = []
    made: set[str] = set()
    try:
        lines = merges_path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"{merges_path}: not UTF-8 text ({err})") from None
    for lineno, line in enumerate(lines, start=1):
        if (lineno == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{merges_path}, line {lineno}: expected two tokens separated "
                             f"by one space, got {line!r}")
        for t in (*parts, parts[0] + parts[1]):
            if t not in str_vocab:
                raise ValueError(f"{merges_path}, line {lineno}: token {t!r} is not in "
                                 f"{VOCAB_FILE}")
        merges.append((str_vocab[parts[0]], str_vocab[parts[1]]))
        made.add(parts[0] + parts[1])
    specials = dict(declared)
    specials.update({s: str_vocab[s] for s in named if s in str_vocab and s not in made})
    vocab: dict[int, bytes] = {}
    for s, i in str_vocab.items():
        if s in specials:
            continue
        if not all(c in CHAR_TO_BYTE for c in s):
            raise ValueError(f"{vocab_path}: token {s!r} (id {i}) is neither byte-level "
                             f"text nor a special token named in {CONFIG_FILE}")
        vocab[i] = bytes(CHAR_TO_BYTE[c] for c in s)
    return vocab, merges, specials


def _config_specials(config_path: Path) -> tuple[dict[str, int], set[str]]:
    """From tokenizer_config.json: (added_tokens_decoder as content -> id, other named
    special tokens). Without the file, GPT2Tokenizer's defaults: just ``<|endoftext|>``."""
    if not config_path.is_file():
        return {}, {EOT}
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        added = config.get("added_tokens_decoder") or {}
        declared = {entry["content"]: int(i) for i, entry in added.items()}
        # GPT2Tokenizer's own defaults apply to the keys a config leaves out.
        named = [config.get(k, EOT) for k in ("bos_token", "eos_token", "unk_token")]
        named.append(config.get("pad_token"))
        for key in ("extra_special_tokens", "additional_special_tokens"):
            extra = config.get(key) or []
            named += list(extra.values()) if isinstance(extra, dict) else list(extra)
        names = {t["content"] if isinstance(t, dict) else t for t in named if t}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError,
            ValueError) as err:
        raise ValueError(f"{config_path}: unreadable special tokens ({err!r})") from None
    if not all(isinstance(t, str) for t in names):
        raise ValueError(f"{config_path}: special tokens must be strings, got {names}")
    return declared, names
