"""Learning byte-level BPE merges fast: incremental pair counts and a heap.

:meth:`llmcourse.text.bpe.ByteLevelBPE.train` calls :func:`learn_merges` on the counts of the
pre-tokens of a text. The slow, obviously-correct version of the same loop is
:func:`llmcourse.text.bpe_teaching.train_bpe_naive`.

**Ties.** Training merges the most frequent pair; when several pairs are equally frequent, a
rule must pick one, and two trainers agree merge for merge only if they use the same rule.
Both rules here pick the *smallest pair of ids* (compare left ids, then right ids); they differ
in how the 256 single bytes are numbered (merge-made tokens are numbered 256, 257, ... in the
order learned under both):

- ``tie_break="byte-value"`` (the default, and the teaching trainer's rule): a byte's number is
  its value, so ``b" "`` (32) < ``b"a"`` (97) < ``b"\\xc3"`` (195).
- ``tie_break="token-id"``: a byte's number is its GPT-2 token id (:func:`bytes_to_unicode`
  order: printable bytes first, so ``b"a"`` (64) < ``b"\\xc3"`` (161) < ``b" "`` (220)). This
  is the rule of Hugging Face ``tokenizers``' ``BpeTrainer``: its heap orders candidate merges
  by count, then by ascending pair of ids (``Ord for Merge`` in
  ``tokenizers/src/models/bpe/trainer.rs``), and it numbers the initial characters by code
  point, which for byte-level characters is GPT-2's order. ``tests/test_text_bpe_oracle.py``
  checks that both trainers then learn the same merges.

Example:
    >>> merges, vocab = learn_merges({b"ab": 1, b" a": 1}, n_tokens=257)
    >>> [vocab[a] + vocab[b] for a, b in merges]     # 32 < 97: b" a" wins the tie
    [b' a']
    >>> merges, vocab = learn_merges({b"ab": 1, b" a": 1}, 257, tie_break="token-id")
    >>> [vocab[a] + vocab[b] for a, b in merges]     # id 64 < id 220: b"ab" wins
    [b'ab']
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping
from itertools import pairwise

from llmcourse.text.bpe_teaching import merge
from llmcourse.text.bytelevel import BYTE_TO_CHAR, GPT2_BYTE_ID

__all__ = ["TIE_BREAKS", "learn_merges"]

TIE_BREAKS = ("byte-value", "token-id")


def _learn(
    words: list[list[int]], freqs: list[int], alphabet: list[bytes], n_tokens: int,
    verbose: bool,
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Merges until there are ``n_tokens`` tokens; ties go to the smallest pair of ids.

    ``words`` hold ids 0..255 whose bytes are ``alphabet``. Instead of recounting every pair
    after every merge (the teaching version), keep ``counts`` (pair -> occurrences), ``where``
    (pair -> words holding it) and a max-heap of counts; a merge then rewrites only the words
    that hold the pair and adjusts only their pairs. Heap entries go stale when a count
    changes; a fresh entry is pushed for the new count and a stale one is skipped when popped.
    """
    vocab = list(alphabet)
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
            new = merge(old, (a, b), new_id)
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


def learn_merges(
    word_counts: Mapping[bytes, int],
    n_tokens: int,
    tie_break: str = "byte-value",
    verbose: bool = False,
) -> tuple[list[tuple[int, int]], list[bytes]]:
    """Learn merges from pre-token counts until there are ``n_tokens`` tokens (or no pairs).

    ``word_counts`` maps each distinct pre-token (its UTF-8 bytes) to how often it occurs.
    ``tie_break`` chooses among equally frequent pairs (see the module's docstring).

    Returns the merges as (left id, right id) in the order learned, and each token's bytes
    (index = id) in GPT-2's layout: ids 0..255 are the single bytes in
    :func:`bytes_to_unicode` order, then one id per merge-made token in the order learned. A
    merge whose bytes already exist as a token reuses that id (two merge paths can spell the
    same string), as Hugging Face's trainer does: ``vocab.json`` cannot hold a string twice.

    Example:
        >>> merges, vocab = learn_merges({b"aaab": 10}, n_tokens=259)
        >>> [(vocab[a], vocab[b]) for a, b in merges]   # then (aa, a) and (a, b) tie at 10
        [(b'a', b'a'), (b'a', b'b'), (b'aa', b'ab')]
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break={tie_break!r} is not a known rule; expected one of "
                         f"{TIE_BREAKS}")
    gpt2_order = [bytes([b]) for b in BYTE_TO_CHAR]
    words, freqs = [], []
    for word, f in word_counts.items():
        if not isinstance(word, bytes) or isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ValueError(f"word_counts must map bytes to positive int counts, got "
                             f"{word!r}: {f!r}")
        words.append([GPT2_BYTE_ID[b] for b in word] if tie_break == "token-id" else list(word))
        freqs.append(f)
    if tie_break == "token-id":
        return _learn(words, freqs, gpt2_order, n_tokens, verbose)
    merges, raw_vocab = _learn(words, freqs, [bytes([b]) for b in range(256)], n_tokens, verbose)
    # Learned with bytes numbered by value; renumber them into GPT-2's order so a saved
    # vocab.json starts like GPT-2's ("!" = 0). Merge-made tokens keep ids 256, 257, ...
    remap = [GPT2_BYTE_ID[i] if i < 256 else i for i in range(len(raw_vocab))]
    return [(remap[a], remap[b]) for a, b in merges], gpt2_order + raw_vocab[256:]
