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

``ByteLevelBPE`` is the fast version the library uses: incremental pair counts for training
(:mod:`llmcourse.text.bpe_train`); for encoding, a cache of chunk -> ids and, for long chunks, a
linked list of symbols with a heap of candidate merges, so that a chunk of n bytes takes
O(n log n) rather than O(n²). The slow, obviously-correct version for reading is in
:mod:`llmcourse.text.bpe_teaching`; the tests check that both learn the same merges, that the
trainer learns the same merges as Hugging Face ``tokenizers``' under its tie-break rule, and
that ``ByteLevelBPE`` loaded from GPT-2's own ``vocab.json``/``merges.txt`` gives exactly the
ids of Hugging Face's GPT-2 tokenizer.

Example:
    >>> tok = ByteLevelBPE.train("the cat sat on the mat. " * 20, vocab_size=270)
    >>> ids = tok.encode("the cat<|endoftext|>")
    >>> ids[-1] == tok.eot_id, tok.decode(ids)
    (True, 'the cat<|endoftext|>')
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from llmcourse.text.bpe_encode import MergeTable, bpe
from llmcourse.text.bpe_files import read_gpt2_files, write_gpt2_files
from llmcourse.text.bpe_train import TIE_BREAKS, learn_merges
from llmcourse.text.bytelevel import (
    EOT,
    GPT2_SPLIT_PATTERN,
    SPLIT,
    bytes_to_unicode,
    check_text,
    pretokenize,
    special_split_pattern,
    surrogate_error,
)
from llmcourse.text.ids import token_id_list

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "EOT",
    "bytes_to_unicode",
    "ByteLevelBPE",
]

# Encoding caches chunk -> ids; cleared when it reaches this many entries so memory stays
# bounded. Chunks longer than _CACHE_MAX_CHARS are not cached (they are rare and would hold
# much memory each).
_CACHE_LIMIT = 1 << 18
_CACHE_MAX_CHARS = 256


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
        if not isinstance(vocab, Mapping):
            raise TypeError(f"vocab must be a mapping of id -> bytes, got {type(vocab).__name__}")
        special_tokens = dict(special_tokens or {})
        for s in special_tokens:
            check_text(s, "special token")
            if not s:
                raise ValueError("special tokens must be non-empty strings")
        n = len(vocab) + len(special_tokens)
        ids = sorted([*vocab, *special_tokens.values()])
        if ids != list(range(n)):
            raise ValueError(f"token ids must be exactly 0..{n - 1}, each used once")
        self._id_to_bytes: list[bytes] = [b""] * n
        for i, tok in vocab.items():
            if not isinstance(tok, (bytes, bytearray)) or not tok:
                raise TypeError(f"vocab[{i}] must be non-empty bytes, got {tok!r}")
            self._id_to_bytes[i] = bytes(tok)
        by_bytes = {bytes(tok): i for i, tok in vocab.items()}
        if len(by_bytes) != len(vocab):
            raise ValueError("two ids have the same bytes; each token must be unique")
        missing = [b for b in range(256) if bytes([b]) not in by_bytes]
        if missing:
            raise ValueError(f"vocab lacks the single-byte tokens for bytes {missing[:8]}...")
        self._byte_ids = [by_bytes[bytes([b])] for b in range(256)]
        self._table = MergeTable(vocab, merges)  # raises if a merge makes no vocab token
        for s, i in special_tokens.items():
            self._id_to_bytes[i] = s.encode("utf-8")
        self._special = special_tokens
        self._merges = [tuple(p) for p in merges]
        self._special_pat = special_split_pattern(list(special_tokens))
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
        (token_id,) = token_id_list([token_id], len(self._id_to_bytes))
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
        tie_break: str = "byte-value",
    ) -> ByteLevelBPE:
        """Learn a tokenizer of ``vocab_size`` ids (256 bytes + merges + specials) from text.

        Special tokens found in ``text`` are cut out before counting, so no merge ever spans
        one (documents joined by ``<|endoftext|>`` train as separate documents). If the text
        runs out of pairs first, the vocabulary is smaller than asked. Of equally frequent
        pairs, the smallest pair of ids is merged, the 256 bytes numbered by their value
        (``tie_break="byte-value"``, the teaching trainer's rule) or by their GPT-2 id
        (``tie_break="token-id"``, Hugging Face ``tokenizers``' rule); see
        :mod:`llmcourse.text.bpe_train`.

        Example:
            >>> tok = ByteLevelBPE.train("aaab " * 10, vocab_size=260)
            >>> tok.merges, tok.vocab_size   # 256 bytes + 3 merges + <|endoftext|>
            ([(b'a', b'a'), (b'a', b'b'), (b'aa', b'ab')], 260)
        """
        check_text(text)
        if isinstance(special_tokens, str):
            raise TypeError("special_tokens must be a sequence of str, e.g. ('<|endoftext|>',)")
        special_tokens = list(special_tokens)
        for s in special_tokens:
            check_text(s, "special token")
        if len(set(special_tokens)) != len(special_tokens) or "" in special_tokens:
            raise ValueError(f"special tokens must be distinct and non-empty: {special_tokens}")
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must be at least 256 (bytes) + "
                f"{len(special_tokens)} (special tokens) = {256 + len(special_tokens)}"
            )
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break={tie_break!r} is not a known rule; expected one of "
                             f"{TIE_BREAKS}")
        counts = Counter(pretokenize(text, special_tokens))
        try:
            word_counts = {w.encode("utf-8"): c for w, c in counts.items()}
        except UnicodeEncodeError:
            raise surrogate_error(text) from None
        merges, tokens = learn_merges(word_counts, vocab_size - len(special_tokens), tie_break,
                                      verbose)
        specials = {s: len(tokens) + k for k, s in enumerate(special_tokens)}
        return cls(dict(enumerate(tokens)), merges, specials)

    # ----------------------------------------------------------------------------- encoding

    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE on one pre-token: merge the lowest-ranked pair present (the leftmost of equals),
        until no pair is a merge, as Hugging Face's encoder does (see
        :mod:`llmcourse.text.bpe_encode`)."""
        return bpe(list(map(self._byte_ids.__getitem__, chunk.encode("utf-8"))), self._table)

    def _encode_ordinary(self, text: str) -> list[int]:
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        out: list[int] = []
        for chunk in SPLIT.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(chunk) <= _CACHE_MAX_CHARS:
                    cache[chunk] = ids
            out += ids
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text."""
        check_text(text)
        try:
            return self._encode_ordinary(text)
        except UnicodeEncodeError:
            raise surrogate_error(text) from None

    def encode(self, text: str) -> list[int]:
        """Encode text to ids; special tokens in the text become their own ids.

        This is what Hugging Face's GPT-2 tokenizer does with ``<|endoftext|>`` in the text.
        A lone surrogate (a ``str`` can hold one, UTF-8 cannot) is a ``ValueError`` naming
        its position.

        Example:
            >>> gpt2 = ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))  # doctest: +SKIP
            >>> gpt2.encode("Hello world<|endoftext|>")                 # doctest: +SKIP
            [15496, 995, 50256]
        """
        check_text(text)
        try:
            if self._special_pat is None or not any(s in text for s in self._special):
                return self._encode_ordinary(text)
            out: list[int] = []
            # split() with a capturing group alternates text, special, text, ..., text.
            for k, part in enumerate(self._special_pat.split(text)):
                if k % 2:
                    out.append(self._special[part])
                elif part:
                    out += self._encode_ordinary(part)
            return out
        except UnicodeEncodeError:
            raise surrogate_error(text) from None

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Encode each text; the chunk cache is shared across them."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of str; use encode() for one str")
        return [self.encode(t) for t in texts]

    # ----------------------------------------------------------------------------- decoding

    def decode(self, ids: Sequence[int]) -> str:
        """Turn ids back into text. Byte sequences that are not valid UTF-8 (a token sequence
        cut inside a character) become U+FFFD, like Hugging Face's ``errors="replace"``.

        ``ids`` is any 1-D sequence of integers: a list, a tuple, a 1-D numpy array or torch
        tensor of an integer dtype.

        Example:
            >>> tok = ByteLevelBPE.train("héllo", vocab_size=257, special_tokens=())
            >>> tok.decode(tok.encode("é")[:1])   # the first of é's two bytes alone
            '�'
        """
        table = self._id_to_bytes
        ids = token_id_list(ids, len(table))
        return b"".join([table[i] for i in ids]).decode("utf-8", errors="replace")

    # ----------------------------------------------------------------------------- save/load

    def save(self, folder: str | os.PathLike, model_max_length: int | None = None) -> Path:
        """Write Hugging Face GPT-2 files into ``folder`` (created if needed), each atomically.

        ``vocab.json`` (token string -> id) and ``merges.txt`` are GPT-2's own format;
        ``tokenizer_config.json`` and ``special_tokens_map.json`` tell ``transformers`` to
        build a ``GPT2Tokenizer`` with our special tokens, so
        ``AutoTokenizer.from_pretrained(folder)`` loads it.
        """
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path (str or os.PathLike), got "
                            f"{type(folder).__name__}")
        if model_max_length is not None and (
                isinstance(model_max_length, bool) or not isinstance(model_max_length, int)
                or model_max_length <= 0):
            raise ValueError(f"model_max_length must be a positive int or None, got "
                             f"{model_max_length!r}")
        return write_gpt2_files(folder, self._id_to_bytes, self._merges, self._special,
                                model_max_length)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ByteLevelBPE:
        """Read ``vocab.json`` + ``merges.txt`` (GPT-2's real files, or what :meth:`save` wrote).

        Special tokens are those ``transformers``' ``GPT2Tokenizer`` would treat as special
        (see :func:`llmcourse.text.bpe_files.read_gpt2_files`).

        Example:
            >>> gpt2 = ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))  # doctest: +SKIP
            >>> gpt2.vocab_size, gpt2.special_tokens                    # doctest: +SKIP
            (50257, {'<|endoftext|>': 50256})
        """
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path (str or os.PathLike), got "
                            f"{type(folder).__name__}")
        vocab, merges, specials = read_gpt2_files(folder)
        try:
            return cls(vocab, merges, specials)
        except ValueError as err:
            raise ValueError(f"{folder}: {err}") from None
