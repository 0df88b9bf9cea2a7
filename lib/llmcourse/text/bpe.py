"""Byte-level BPE, the tokenizer of GPT-2: train, encode, decode, save and load.

A language model reads integers, not text. Byte-level BPE turns text into integers in three
steps:

1. **Pre-tokenize.** A regex cuts the text into chunks (words with their leading space,
   numbers, runs of punctuation, runs of whitespace). Merges never cross a chunk boundary, so
   ``" dog."`` can become ``" dog"`` + ``"."`` but never ``"g."``.
2. **Bytes.** Each chunk becomes its UTF-8 bytes. With 256 byte tokens any string can be encoded:
   there is no "unknown" token, an emoji is just four bytes.
3. **Merge.** Training counts adjacent token pairs and repeatedly fuses the most frequent pair
   into a new token; encoding replays those merges in the order they were learned.

``ByteLevelBPE`` is the fast version the library uses (incremental pair counts for training, a
cache of chunk -> ids for encoding). The slow, obviously-correct version for reading is in
:mod:`llmcourse.text.bpe_teaching`; the tests check that both learn the same merges, and that
``ByteLevelBPE`` loaded from GPT-2's own ``vocab.json``/``merges.txt`` gives exactly the ids of
Hugging Face's GPT-2 tokenizer.

Example:
    >>> tok = ByteLevelBPE.train("the cat sat on the mat. " * 20, vocab_size=270)
    >>> ids = tok.encode("the cat<|endoftext|>")
    >>> ids[-1] == tok.eot_id, tok.decode(ids)
    (True, 'the cat<|endoftext|>')
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path

import regex

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "EOT",
    "bytes_to_unicode",
    "ByteLevelBPE",
]

# GPT-2's pre-tokenization regex, exactly as OpenAI and Hugging Face use it. In order: common
# English contractions; an optional space then letters; an optional space then digits; an
# optional space then other symbols; whitespace not followed by non-space (so the last space
# of a run is left to glue onto the next word: "a   b" -> "a", "  ", " b"); any other
# whitespace. \p{L} and \p{N} are Unicode letters and numbers, hence the `regex` module.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
EOT = "<|endoftext|>"
_VOCAB_FILE, _MERGES_FILE = "vocab.json", "merges.txt"
_CONFIG_FILE, _SPECIAL_MAP_FILE = "tokenizer_config.json", "special_tokens_map.json"
# Encoding caches chunk -> ids; cleared when it reaches this size so memory stays bounded.
_CACHE_LIMIT = 1 << 18


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte value 0..255 to one printable Unicode character.

    Why it exists: ``vocab.json`` and ``merges.txt`` are text files, and ``merges.txt`` separates
    the two halves of a merge with a space. A token is a byte string, and raw bytes such as
    ``0x20`` (space), ``0x0A`` (newline) or ``0x00`` cannot be written there readably or
    unambiguously. So every byte gets a visible stand-in character: the 188 bytes that are
    already printable Latin-1 characters stand for themselves, and the other 68 (control
    characters, space, DEL, no-break space, soft hyphen) are shifted to U+0100 onwards. That is
    why GPT-2's vocabulary is full of ``Ġ`` (a space) and ``Ċ`` (a newline).

    The dict's order is also the order of GPT-2's token ids 0..255.

    Example:
        >>> b2u = bytes_to_unicode()
        >>> b2u[ord("a")], b2u[ord(" ")], b2u[ord("\\n")]
        ('a', 'Ġ', 'Ċ')
        >>> list(b2u)[:3]   # token 0 is "!", the first printable byte
        [33, 34, 35]
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


_BYTE_TO_CHAR = bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _token_str(token: bytes) -> str:
    """A token's bytes as GPT-2 writes them in vocab.json (``b" the"`` -> ``"Ġthe"``)."""
    return "".join(_BYTE_TO_CHAR[b] for b in token)


def _check_text(text: object, name: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    return text


def _utf8(chunk: str) -> bytes:
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"text holds a lone surrogate {chunk[err.start]!r}, which has no UTF-8 bytes; "
            "expected valid Unicode text"
        ) from None


def _merge_word(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace each non-overlapping (a, b), scanning left to right, by ``new_id``."""
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _learn_merges(
    words: list[list[int]], freqs: list[int], n_tokens: int, verbose: bool = False
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Learn merges until there are ``n_tokens`` tokens, with incremental pair counts.

    ``words`` are the distinct chunks as raw byte values (0..255), ``freqs`` how often each
    occurs. Instead of recounting every pair after every merge (the teaching version), keep
    ``counts`` (pair -> occurrences), ``where`` (pair -> words holding it) and a max-heap of
    counts; a merge then rewrites only the words that hold the pair and adjusts only their
    pairs. Heap entries go stale when a count changes; a fresh entry is pushed for the new
    count and a stale one is skipped when popped. Ties go to the smallest pair of ids, the
    same rule as :func:`llmcourse.text.bpe_teaching.train_bpe_naive`.

    Returns the merges as (left id, right id) in order, and each token's bytes (index = id).
    A merge whose bytes already exist as a token reuses that id (two merge paths can spell the
    same string), as Hugging Face's trainer does: ``vocab.json`` cannot hold a string twice.
    """
    vocab = [bytes([b]) for b in range(256)]
    index = {tok: i for i, tok in enumerate(vocab)}
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (ids, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in pairwise(ids):
            counts[pair] += f
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(vocab) < n_tokens and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale: this pair's count changed after the entry was pushed
        a, b = pair
        new_bytes = vocab[a] + vocab[b]
        new_id = index.get(new_bytes)
        if new_id is None:
            new_id = index[new_bytes] = len(vocab)
            vocab.append(new_bytes)
        merges.append(pair)
        if verbose:
            print(f"merge {len(merges)}: {vocab[a]!r} + {vocab[b]!r} -> {new_id} ({-neg} times)")
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for w in where.pop(pair):
            old = words[w]
            new = _merge_word(old, a, b, new_id)
            if len(new) == len(old):
                continue  # stale index entry: an earlier merge already consumed the pair here
            f = freqs[w]
            for p in pairwise(old):
                delta[p] -= f
            for p in pairwise(new):
                delta[p] += f
                where[p].add(w)
            words[w] = new
        for p, d in delta.items():
            if d:
                c = counts[p] + d
                if c:
                    counts[p] = c
                    heapq.heappush(heap, (-c, p))
                else:
                    del counts[p]
    return merges, vocab


class ByteLevelBPE:
    """A byte-level BPE tokenizer compatible with GPT-2's files and Hugging Face.

    Ids follow GPT-2's layout: 0..255 are the single bytes in :func:`bytes_to_unicode` order,
    then one id per merge-made token in the order learned, then the special tokens. Build one
    with :meth:`train` or :meth:`load`; :meth:`save` writes Hugging Face's GPT-2 format.

    Args:
        vocab: token bytes by id, for every id that is not a special token.
        merges: (left id, right id) pairs in priority order; each fuses into the token whose
            bytes are the concatenation.
        special_tokens: special token string -> id. Found verbatim in text by :meth:`encode`.

    Example:
        >>> tok = ByteLevelBPE.train("low lower lowest " * 50, vocab_size=264)
        >>> [tok.token_bytes(i) for i in tok.encode(" lowest")]
        [b' lowest']
    """

    def __init__(
        self,
        vocab: Mapping[int, bytes],
        merges: Sequence[tuple[int, int]],
        special_tokens: Mapping[str, int] | None = None,
    ) -> None:
        special_tokens = dict(special_tokens or {})
        n = len(vocab) + len(special_tokens)
        ids = sorted([*vocab, *special_tokens.values()])
        if ids != list(range(n)):
            raise ValueError(f"token ids must be exactly 0..{n - 1}, each used once")
        self._id_to_bytes: list[bytes] = [b""] * n
        for i, tok in vocab.items():
            self._id_to_bytes[i] = bytes(tok)
        by_bytes = {tok: i for i, tok in vocab.items()}
        if len(by_bytes) != len(vocab):
            raise ValueError("two ids have the same bytes; each token must be unique")
        missing = [b for b in range(256) if bytes([b]) not in by_bytes]
        if missing:
            raise ValueError(f"vocab lacks the single-byte tokens for bytes {missing[:8]}...")
        self._byte_ids = [by_bytes[bytes([b])] for b in range(256)]
        self._ranks: dict[tuple[int, int], int] = {}
        self._merge_to: list[int] = []
        for rank, (a, b) in enumerate(merges):
            merged = None
            if a in vocab and b in vocab:
                merged = by_bytes.get(self._id_to_bytes[a] + self._id_to_bytes[b])
            if merged is None:
                raise ValueError(f"merge {rank} ({a}, {b}) does not make a token of the vocab")
            self._ranks.setdefault((a, b), rank)
            self._merge_to.append(merged)
        for s, i in special_tokens.items():
            _check_text(s, "special token")
            if not s:
                raise ValueError("special tokens must be non-empty strings")
            self._id_to_bytes[i] = s.encode("utf-8")
        self._special = special_tokens
        self._merges = list(merges)
        self._pat = regex.compile(GPT2_SPLIT_PATTERN)
        # Longest first so that, of two specials starting at the same place, the longer wins.
        alts = sorted(special_tokens, key=len, reverse=True)
        self._special_pat = (
            regex.compile("(" + "|".join(regex.escape(s) for s in alts) + ")") if alts else None
        )
        self._cache: dict[str, list[int]] = {}

    # ----------------------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (GPT-2: 50257)."""
        return len(self._id_to_bytes)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token string -> id (a copy), e.g. ``{"<|endoftext|>": 50256}``."""
        return dict(self._special)

    @property
    def eot_id(self) -> int:
        """Id of ``<|endoftext|>``, the separator between documents (GPT-2: 50256)."""
        if EOT not in self._special:
            raise ValueError(f"this tokenizer has no {EOT} token; its specials are "
                             f"{sorted(self._special)}")
        return self._special[EOT]

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        """The merges in priority order, as (left bytes, right bytes)."""
        return [(self._id_to_bytes[a], self._id_to_bytes[b]) for a, b in self._merges]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token gives its UTF-8 text)."""
        self._check_ids([token_id])
        return self._id_to_bytes[token_id]

    def __repr__(self) -> str:
        return (f"ByteLevelBPE(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
                f"special_tokens={self.special_tokens})")

    # ----------------------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Sequence[str] = (EOT,),
        verbose: bool = False,
    ) -> ByteLevelBPE:
        """Learn a tokenizer of ``vocab_size`` ids (256 bytes + merges + specials) from text.

        Special tokens found in ``text`` are cut out before counting, so no merge ever spans
        one (documents joined by ``<|endoftext|>`` train as separate documents). If the text
        runs out of pairs first, the vocabulary is smaller than asked.

        Example:
            >>> tok = ByteLevelBPE.train("aaab " * 10, vocab_size=260)
            >>> tok.merges, tok.vocab_size   # 256 bytes + 3 merges + <|endoftext|>
            ([(b'a', b'a'), (b'a', b'b'), (b'aa', b'ab')], 260)
        """
        _check_text(text)
        if isinstance(special_tokens, str):
            raise TypeError("special_tokens must be a sequence of str, e.g. ('<|endoftext|>',)")
        special_tokens = list(special_tokens)
        for s in special_tokens:
            _check_text(s, "special token")
        if len(set(special_tokens)) != len(special_tokens) or "" in special_tokens:
            raise ValueError(f"special tokens must be distinct and non-empty: {special_tokens}")
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must be at least 256 (bytes) + "
                f"{len(special_tokens)} (special tokens) = {256 + len(special_tokens)}"
            )
        pat = regex.compile(GPT2_SPLIT_PATTERN)
        chunks: Counter[str] = Counter()
        if special_tokens:
            alts = sorted(special_tokens, key=len, reverse=True)
            parts = regex.split("|".join(regex.escape(s) for s in alts), text)
        else:
            parts = [text]
        for part in parts:
            chunks.update(pat.findall(part))
        words = [list(_utf8(w)) for w in chunks]
        merges, raw_vocab = _learn_merges(
            words, list(chunks.values()), vocab_size - len(special_tokens), verbose
        )
        # The trainer counted in raw byte values; renumber bytes into GPT-2's order so a saved
        # vocab.json starts like GPT-2's ("!" = 0). Merge-made tokens keep ids 256, 257, ...
        gpt2_id = {b: i for i, b in enumerate(_BYTE_TO_CHAR)}
        remap = [gpt2_id[i] if i < 256 else i for i in range(len(raw_vocab))]
        vocab = {remap[i]: tok for i, tok in enumerate(raw_vocab)}
        specials = {s: len(raw_vocab) + k for k, s in enumerate(special_tokens)}
        return cls(vocab, [(remap[a], remap[b]) for a, b in merges], specials)

    # ----------------------------------------------------------------------------- encoding

    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE on one pre-token: apply the lowest-ranked merge present, until none applies."""
        ids = [self._byte_ids[b] for b in _utf8(chunk)]
        ranks, none = self._ranks, len(self._merge_to)
        while len(ids) > 1:
            pair = min(pairwise(ids), key=lambda p: ranks.get(p, none))
            rank = ranks.get(pair)
            if rank is None:
                break
            ids = _merge_word(ids, pair[0], pair[1], self._merge_to[rank])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text."""
        _check_text(text)
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out: list[int] = []
        for chunk in self._pat.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = cache[chunk] = self._encode_chunk(chunk)
            out += ids
        return out

    def encode(self, text: str) -> list[int]:
        """Encode text to ids; special tokens in the text become their own ids.

        This is what Hugging Face's GPT-2 tokenizer does with ``<|endoftext|>`` in the text.

        Example:
            >>> gpt2 = ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))  # doctest: +SKIP
            >>> gpt2.encode("Hello world<|endoftext|>")                 # doctest: +SKIP
            [15496, 995, 50256]
        """
        _check_text(text)
        if self._special_pat is None or not any(s in text for s in self._special):
            return self.encode_ordinary(text)
        out: list[int] = []
        # split() with a capturing group alternates text, special, text, special, ..., text.
        for k, part in enumerate(self._special_pat.split(text)):
            if k % 2:
                out.append(self._special[part])
            elif part:
                out += self.encode_ordinary(part)
        return out

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Encode each text; the chunk cache is shared across them."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of str; use encode() for one str")
        return [self.encode(t) for t in texts]

    # ----------------------------------------------------------------------------- decoding

    def _check_ids(self, ids: Sequence[int]) -> None:
        n = self.vocab_size
        for i in ids:
            if not isinstance(i, int):
                raise TypeError(f"token ids must be ints, got {type(i).__name__} ({i!r})")
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is out of range: vocab_size is {n}, so ids "
                                 f"must be in 0..{n - 1}")

    def decode(self, ids: Sequence[int]) -> str:
        """Turn ids back into text. Byte sequences that are not valid UTF-8 (a token sequence
        cut inside a character) become U+FFFD, like Hugging Face's ``errors="replace"``.

        Example:
            >>> tok = ByteLevelBPE.train("héllo", vocab_size=257, special_tokens=())
            >>> tok.decode(tok.encode("é")[:1])   # the first of é's two bytes alone
            '�'
        """
        if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
            ids = ids.tolist()
        if isinstance(ids, int):
            raise TypeError("decode takes a sequence of ids; wrap a single id in a list")
        ids = list(ids)
        table = self._id_to_bytes
        try:
            if ids and (min(ids) < 0 or max(ids) >= len(table)):
                raise IndexError
            raw = b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            self._check_ids(ids)  # raises the precise error
            raise
        return raw.decode("utf-8", errors="replace")

    # ----------------------------------------------------------------------------- save/load

    def save(self, folder: str | os.PathLike, model_max_length: int | None = None) -> Path:
        """Write Hugging Face GPT-2 files into ``folder`` (created if needed), each atomically.

        ``vocab.json`` (token string -> id) and ``merges.txt`` are GPT-2's own format;
        ``tokenizer_config.json`` and ``special_tokens_map.json`` tell ``transformers`` to
        build a ``GPT2Tokenizer`` with our special tokens, so
        ``AutoTokenizer.from_pretrained(folder)`` loads it.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        id_to_str = {i: _token_str(t) for i, t in enumerate(self._id_to_bytes)}
        for s, i in self._special.items():
            id_to_str[i] = s
        vocab = {id_to_str[i]: i for i in range(self.vocab_size)}
        if len(vocab) != self.vocab_size:
            raise ValueError("a special token spells the same string as a byte token; "
                             "vocab.json cannot hold both")
        merges = "".join(f"{_token_str(a)} {_token_str(b)}\n" for a, b in self.merges)
        specials = sorted(self._special, key=self._special.get)
        # GPT2Tokenizer defaults bos/eos/unk to <|endoftext|> and would *add* that token if it
        # were missing, so always name them: the eot token if present, else the first special.
        main = EOT if EOT in self._special else (specials[0] if specials else None)
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
                str(self._special[s]): {
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
        _write_atomic(folder / _VOCAB_FILE, json.dumps(vocab, ensure_ascii=False))
        _write_atomic(folder / _MERGES_FILE, "#version: 0.2\n" + merges)
        _write_atomic(folder / _CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False))
        _write_atomic(folder / _SPECIAL_MAP_FILE,
                      json.dumps(special_map, indent=2, ensure_ascii=False))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ByteLevelBPE:
        """Read ``vocab.json`` + ``merges.txt`` (GPT-2's real files, or what :meth:`save` wrote).

        Special tokens are those ``transformers``' ``GPT2Tokenizer`` would treat as special:
        the ``added_tokens_decoder`` and the bos/eos/unk/pad/extra tokens of
        ``tokenizer_config.json``, and ``<|endoftext|>`` (its default bos/eos/unk) when the
        config does not name others. Any other vocab entry is byte-level text.

        Example:
            >>> gpt2 = ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))  # doctest: +SKIP
            >>> gpt2.vocab_size, gpt2.special_tokens                    # doctest: +SKIP
            (50257, {'<|endoftext|>': 50256})
        """
        folder = Path(folder)
        vocab_path, merges_path = folder / _VOCAB_FILE, folder / _MERGES_FILE
        for p in (vocab_path, merges_path):
            if not p.is_file():
                raise ValueError(f"{p}: file not found; a GPT-2 tokenizer folder needs "
                                 f"{_VOCAB_FILE} and {_MERGES_FILE}")
        try:
            str_vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{vocab_path}: not valid JSON ({err})") from None
        if not isinstance(str_vocab, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in str_vocab.items()
        ):
            raise ValueError(f"{vocab_path}: expected a JSON object of token string -> int id")
        declared, named = _config_specials(folder / _CONFIG_FILE)
        for s, i in declared.items():
            if str_vocab.setdefault(s, i) != i:
                raise ValueError(f"{folder / _CONFIG_FILE}: special token {s!r} has id {i} "
                                 f"but {vocab_path.name} gives it {str_vocab[s]}")
        for ch in _BYTE_TO_CHAR.values():
            if ch not in str_vocab:
                raise ValueError(f"{vocab_path}: lacks the byte token {ch!r}")
        merges: list[tuple[int, int]] = []
        made: set[str] = set()
        lines = merges_path.read_text(encoding="utf-8").split("\n")
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
                                     f"{_VOCAB_FILE}")
            merges.append((str_vocab[parts[0]], str_vocab[parts[1]]))
            made.add(parts[0] + parts[1])
        specials = dict(declared)
        specials.update({s: str_vocab[s] for s in named if s in str_vocab and s not in made})
        vocab: dict[int, bytes] = {}
        for s, i in str_vocab.items():
            if s in specials:
                continue
            if not all(c in _CHAR_TO_BYTE for c in s):
                raise ValueError(f"{vocab_path}: token {s!r} (id {i}) is neither byte-level "
                                 f"text nor a special token named in {_CONFIG_FILE}")
            vocab[i] = bytes(_CHAR_TO_BYTE[c] for c in s)
        try:
            return cls(vocab, merges, specials)
        except ValueError as err:
            raise ValueError(f"{folder}: {err}") from None


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


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, then rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
