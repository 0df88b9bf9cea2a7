"""Byte-pair encoding, the slow and obviously correct way (for reading, notebook 04).

Three small functions are the whole algorithm:

- :func:`get_stats` counts adjacent pairs of token ids;
- :func:`merge` replaces every occurrence of one pair by a new id;
- :func:`train_bpe_naive` repeats "count all pairs, merge the most frequent" until the
  vocabulary is big enough.

It recounts every pair of the whole text after every merge, so it is far too slow for a real
corpus; :class:`llmcourse.text.bpe.ByteLevelBPE` learns the same merges with incremental counts
(the tests check that both agree). Here ids 0..255 are simply the byte values.

Example:
    >>> merges, vocab = train_bpe_naive("aaabdaaabac", vocab_size=259, special_tokens=())
    >>> [(vocab[a], vocab[b]) for a, b in merges]
    [(b'a', b'a'), (b'a', b'b'), (b'aa', b'ab')]
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import regex

from llmcourse.text.bytelevel import GPT2_SPLIT_PATTERN

__all__ = ["get_stats", "merge", "train_bpe_naive"]


def get_stats(
    ids: Sequence[int], counts: dict[tuple[int, int], int] | None = None
) -> dict[tuple[int, int], int]:
    """Count each pair of neighbouring ids; add to ``counts`` if given.

    Example:
        >>> get_stats([1, 2, 3, 1, 2])
        {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids`` by ``idx``, scanning left to right.

    Occurrences do not overlap: ``merge([7, 7, 7], (7, 7), 9)`` gives ``[9, 7]``. The fast
    trainer (:mod:`llmcourse.text.bpe_train`) calls this same function on each word it rewrites.

    Example:
        >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
        [4, 3, 4]
    """
    a, b = pair
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_naive(
    text: str, vocab_size: int, special_tokens: Sequence[str] = ("<|endoftext|>",)
) -> tuple[list[tuple[int, int]], dict[int, bytes]]:
    """Learn BPE merges by brute force: recount all pairs, merge the most frequent, repeat.

    The text is first cut into chunks by GPT-2's regex (special tokens are cut out and never
    learned), and pairs are counted inside chunks only. ``vocab_size`` counts the 256 bytes,
    the merge-made tokens and the special tokens, as :meth:`ByteLevelBPE.train` does. Among
    pairs with the same count the smallest pair of ids wins, so the result is deterministic.
    If a merge spells a string that is already a token (``"a"+"bc"`` after ``"ab"+"c"``), it
    reuses that token's id, since a vocabulary file cannot hold one string twice.

    Returns ``merges`` (pairs of ids, in the order learned) and ``vocab`` (id -> bytes).

    Example:
        >>> merges, vocab = train_bpe_naive("hug hug pug", vocab_size=258, special_tokens=())
        >>> vocab[256], vocab[257]
        (b'ug', b'hug')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size={vocab_size} is too small: need at least "
                         f"256 + {len(special_tokens)} (special tokens)")
    parts = [text]
    if special_tokens:
        parts = regex.split("|".join(regex.escape(s) for s in special_tokens), text)
    chunks = [list(w.encode("utf-8")) for p in parts for w in regex.findall(GPT2_SPLIT_PATTERN, p)]
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(vocab) < vocab_size - len(special_tokens):
        stats: dict[tuple[int, int], int] = {}
        for chunk in chunks:
            get_stats(chunk, stats)
        if not stats:
            break  # every chunk is a single token: nothing left to merge
        pair = min(stats, key=lambda p: (-stats[p], p))
        new_bytes = vocab[pair[0]] + vocab[pair[1]]
        idx = next((i for i, b in vocab.items() if b == new_bytes), len(vocab))
        vocab[idx] = new_bytes
        merges.append(pair)
        chunks = [merge(chunk, pair, idx) for chunk in chunks]
    return merges, vocab
