"""Applying learned merges to one pre-token, fast even for a very long one.

The rule (GPT-2's, and Hugging Face ``tokenizers``'): start from the pre-token's bytes; while
some neighbouring pair is a merge, merge the pair of lowest rank, the leftmost of equal ones.
Three implementations of that one rule:

- :func:`bpe_short` rescans every pair after each merge: O(n²), and the fastest for the short
  words text is made of;
- :func:`bpe_heap`: the symbols form a linked list and a heap holds the candidate merges keyed by
  (rank, position); a merge pushes at most two new candidates and a popped candidate whose pair
  has changed since is skipped (lazy invalidation). O(n log n) for any merge table;
- :func:`bpe_buckets`: the same linked list, candidates kept in one list per rank. When every
  merge's two parts are made by merges of lower rank and no token is made twice (GPT-2's merges,
  and any trainer's without reuse), a merge can only create candidates of *higher* rank, so the
  ranks can be processed in increasing order, each list sorted by position once. O(n log n) as
  well, about three times faster than the heap in Python.

:class:`MergeTable` holds the merges in the form these need.

Example:
    >>> table = MergeTable({0: b"a", 1: b"b", 2: b"ab", 3: b"abab"}, [(0, 1), (2, 2)])
    >>> bpe_short([0, 1, 0, 1, 0], table), bpe_heap([0, 1, 0, 1, 0], table)
    ([3, 0], [3, 0])
    >>> table.monotone, bpe_buckets([0, 1, 0, 1, 0], table)
    (True, [3, 0])
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from itertools import pairwise

__all__ = ["MergeTable", "bpe_short", "bpe_heap", "bpe_buckets", "bpe"]

# Pre-tokens of at most this many bytes go to bpe_short; longer ones to bpe_buckets/bpe_heap.
SHORT = 24


class MergeTable:
    """Merges as flat lists: merge ``rank`` fuses ``left[rank]`` and ``right[rank]`` into
    ``into[rank]``; ``pair_rank`` maps a pair, as the one int ``left * n + right`` (cheaper to
    hash than a tuple; ``n`` = number of ids), to its rank (the first, if a pair repeats).

    ``monotone`` says whether each merge's parts are single bytes or tokens made by a merge of
    lower rank, and no token is made by two merges: then :func:`bpe_buckets` applies.
    """

    def __init__(self, id_to_bytes: Mapping[int, bytes] | Sequence[bytes],
                 merges: Sequence[tuple[int, int]]) -> None:
        items = id_to_bytes.items() if isinstance(id_to_bytes, Mapping) else \
            enumerate(id_to_bytes)
        by_bytes = {tok: i for i, tok in items}
        tokens = {i: tok for tok, i in by_bytes.items()}
        self.n = n = max(by_bytes.values(), default=-1) + 1
        self.pair_rank: dict[int, int] = {}
        self.left: list[int] = []
        self.right: list[int] = []
        self.into: list[int] = []
        made_at: dict[int, int] = {}
        monotone = True
        for rank, pair in enumerate(merges):
            merged = None
            if len(pair) == 2 and all(type(t) is int and t in tokens for t in pair):
                a, b = pair
                merged = by_bytes.get(tokens[a] + tokens[b])
            if merged is None:
                raise ValueError(f"merge {rank} {tuple(pair)!r} does not make a token of the "
                                 "vocab; expected a pair of vocab ids whose bytes, joined, are "
                                 "a token")
            self.pair_rank.setdefault(a * n + b, rank)
            self.left.append(a)
            self.right.append(b)
            self.into.append(merged)
            if merged in made_at or any(t not in made_at and len(tokens[t]) > 1 for t in pair):
                monotone = False
            made_at.setdefault(merged, rank)
        self.monotone = monotone


def bpe_short(ids: list[int], table: MergeTable) -> list[int]:
    """Merge the leftmost lowest-ranked pair until none is a merge, rescanning each time.

    ``ids`` (single-byte token ids) is changed in place and returned.
    """
    get, n, into = table.pair_rank.get, table.n, table.into
    none = len(into)
    while len(ids) > 1:
        ranks = [get(a * n + b, none) for a, b in pairwise(ids)]
        rank = min(ranks)
        if rank == none:
            break
        i = ranks.index(rank)
        ids[i:i + 2] = [into[rank]]
    return ids


def _links(m: int) -> tuple[list[int], list[int]]:
    """The linked list of m symbols by position: next (m = none) and previous (-1 = none)."""
    return list(range(1, m + 1)), list(range(-1, m - 1))


def bpe_heap(ids: list[int], table: MergeTable) -> list[int]:
    """The same merges in the same order as :func:`bpe_short`, in O(n log n).

    A heap entry is the one int ``rank * m + position`` (m = the pre-token's length), so the
    lowest rank, then the leftmost position, pops first. A merged symbol keeps the left
    position; the right one is marked -1.
    """
    get, n = table.pair_rank.get, table.n
    left, right, into = table.left, table.right, table.into
    m = len(ids)
    nxt, prv = _links(m)
    pair_ranks = map(get, [a * n + b for a, b in pairwise(ids)])
    heap = [r * m + i for i, r in enumerate(pair_ranks) if r is not None]
    heapq.heapify(heap)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        rank, i = divmod(pop(heap), m)
        if ids[i] != left[rank]:
            continue  # stale: the symbol at i was merged away or grew
        j = nxt[i]
        if j == m or ids[j] != right[rank]:
            continue  # stale: the symbol after i changed
        x = ids[i] = into[rank]
        ids[j] = -1
        k = nxt[i] = nxt[j]
        if k != m:
            prv[k] = i
            r = get(x * n + ids[k])
            if r is not None:
                push(heap, r * m + i)
        p = prv[i]
        if p >= 0:
            r = get(ids[p] * n + x)
            if r is not None:
                push(heap, r * m + p)
    return [t for t in ids if t >= 0]


def bpe_buckets(ids: list[int], table: MergeTable) -> list[int]:
    """:func:`bpe_heap` for a monotone table: candidates in one list per rank.

    Merging at rank r only creates candidates of rank > r, so once rank r's list is taken
    (and sorted by position) nothing joins it: the ranks are processed in increasing order
    (a small heap of the ranks that have a list), each list left to right.
    """
    if not table.monotone:
        raise ValueError("bpe_buckets needs a monotone merge table; use bpe_heap")
    get, n = table.pair_rank.get, table.n
    left, right, into = table.left, table.right, table.into
    m = len(ids)
    nxt, prv = _links(m)
    buckets: dict[int, list[int]] = {}
    for i, r in enumerate(map(get, [a * n + b for a, b in pairwise(ids)])):
        if r is not None:
            q = buckets.get(r)
            if q is None:
                buckets[r] = [i]
            else:
                q.append(i)
    ranks = list(buckets)
    heapq.heapify(ranks)
    pop, push = heapq.heappop, heapq.heappush
    while ranks:
        rank = pop(ranks)
        positions = buckets.pop(rank)
        positions.sort()
        a, b, x = left[rank], right[rank], into[rank]
        for i in positions:
            if ids[i] != a:
                continue  # stale: merged away or grew since it was listed
            j = nxt[i]
            if j == m or ids[j] != b:
                continue
            ids[i] = x
            ids[j] = -1
            k = nxt[i] = nxt[j]
            if k != m:
                prv[k] = i
                r = get(x * n + ids[k])
                if r is not None:
                    q = buckets.get(r)
                    if q is None:
                        buckets[r] = [i]
                        push(ranks, r)
                    else:
                        q.append(i)
            p = prv[i]
            if p >= 0:
                r = get(ids[p] * n + x)
                if r is not None:
                    q = buckets.get(r)
                    if q is None:
                        buckets[r] = [p]
                        push(ranks, r)
                    else:
                        q.append(p)
    return [t for t in ids if t >= 0]


def bpe(ids: list[int], table: MergeTable) -> list[int]:
    """Encode one pre-token's single-byte ids with whichever of the three fits its length."""
    if len(ids) <= SHORT:
        return bpe_short(ids, table)
    return bpe_buckets(ids, table) if table.monotone else bpe_heap(ids, table)
