"""Chapter 04 exercises: the four pieces of byte-level BPE.

- :func:`count_pairs`: how often each pair of neighbouring ids occurs, inside chunks only;
- :func:`merge`: replace every occurrence of a pair by a new id, left to right, no overlaps;
- :func:`encode_word`: encode one pre-token with learned merges, lowest rank first;
- :func:`decode`: ids back to text, invalid UTF-8 replaced by U+FFFD.

Each checker runs the learner's function on fixed cases: small hand-made ones first (so a
failure shows a case one can work through by hand), then larger ones drawn from a seeded
``random.Random`` (the notebook's own random state is untouched). The functions below are the
course's solutions; ``tests/test_checks_ch04.py`` checks them against code no one here wrote
(``str.replace``, Hugging Face's GPT-2 tokenizer) and checks that each checker fails the usual
mistakes.

Example:
    >>> from llmcourse.checks.ch04 import check_merge, merge
    >>> check_merge(merge)
    ✓ merge: 10 case(s) match the reference
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise

import regex

from llmcourse.checks import compare, require_function
from llmcourse.text.bpe import GPT2_SPLIT_PATTERN, ByteLevelBPE
from llmcourse.text.bpe_teaching import get_stats, merge  # merge is the exercise's reference

__all__ = [
    "count_pairs", "merge", "encode_word", "decode",
    "check_count_pairs", "check_merge", "check_encode_word", "check_decode",
]

# A few lines of Sonnet 18 (public domain): the text the encode_word cases learn merges from.
_SONNET = (
    "Shall I compare thee to a summer's day?\n"
    "Thou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\n"
    "And summer's lease hath all too short a date;\n"
    "Sometime too hot the eye of heaven shines,\n"
    "And often is his gold complexion dimm'd;\n"
    "And every fair from fair sometime declines,\n"
    "By chance or nature's changing course untrimm'd;\n"
)


def count_pairs(chunks: Sequence[Sequence[int]]) -> dict[tuple[int, int], int]:
    """Count every pair of neighbouring ids inside each chunk, summed over the chunks.

    Pairs never span two chunks: the last id of one chunk and the first of the next are not
    neighbours (the pre-tokenizer put a boundary between them). Every position counts, so
    ``[7, 7, 7]`` holds the pair ``(7, 7)`` twice.

    Example:
        >>> count_pairs([[1, 2, 3], [1, 2]])
        {(1, 2): 2, (2, 3): 1}
    """
    counts: dict[tuple[int, int], int] = {}
    for chunk in chunks:
        get_stats(chunk, counts)  # the teaching module's counter, one chunk at a time
    return counts


def encode_word(word: bytes, merges: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """Encode one pre-token: start from its single bytes, then apply merges by rank.

    ``merges`` are (left, right) token bytes in the order training learned them; a merge's
    index is its rank. At each step the neighbouring pair with the lowest rank is merged
    (everywhere it occurs in the word), until no neighbouring pair is a merge. This is
    training's order replayed, not "the most frequent pair" and not "the longest token".

    Example:
        >>> encode_word(b"abc", [(b"b", b"c"), (b"a", b"b")])   # (b, c) was learned first
        [b'a', b'bc']
    """
    rank = {pair: r for r, pair in reversed(list(enumerate(merges)))}  # first rank wins
    parts = [bytes([b]) for b in word]
    while len(parts) > 1:
        best = min(pairwise(parts), key=lambda p: rank.get(p, len(merges)))
        if best not in rank:
            break  # no neighbouring pair was ever merged in training
        out, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                out.append(parts[i] + parts[i + 1])
                i += 2
            else:
                out.append(parts[i])
                i += 1
        parts = out
    return parts


def decode(ids: Sequence[int], vocab: Mapping[int, bytes]) -> str:
    """Join the tokens' bytes, then decode them once as UTF-8, invalid bytes becoming U+FFFD.

    Joining first matters: one character's bytes may be split over two tokens.

    Example:
        >>> decode([0, 1], {0: b"caf\\xc3", 1: b"\\xa9"})     # é is b"\\xc3\\xa9"
        'café'
        >>> decode([0], {0: b"caf\\xc3"})                     # half a character
        'caf�'
    """
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------- checkers


class _Vocab(dict):
    """A dict of id -> bytes whose repr skips the 256 single bytes (failure messages stay short)."""

    def __repr__(self) -> str:
        extra = ", ".join(f"{i}: {b!r}" for i, b in self.items() if i >= 256)
        return f"{{0..255: the single bytes, {extra}}}"


def _chunks(text: str) -> list[list[int]]:
    """GPT-2's pre-tokens of ``text`` as lists of byte values."""
    return [list(w.encode("utf-8")) for w in regex.findall(GPT2_SPLIT_PATTERN, text)]


def check_count_pairs(fn: Callable[[Sequence[Sequence[int]]], dict[tuple[int, int], int]]
                      ) -> None:
    """Check ``fn(chunks)`` counts neighbouring pairs inside each chunk, summed over chunks.

    Cases catch counting across chunk boundaries, counting a pair once per chunk, dropping the
    last pair of a chunk, and counting repeated ids (``[7, 7, 7, 7]``) without overlaps.
    """
    require_function(fn, "count_pairs")
    rng = random.Random(401)
    cases = [
        ([[1, 2, 3, 1, 2]],),
        ([[1, 2], [3, 1, 2]],),
        ([[5, 6, 5], [5, 6]],),
        ([[7, 7, 7, 7]],),
        ([[4], [], [9, 9]],),
        ([],),
        (_chunks("the cat sat on the mat; then the rat sat."),),
        ([[rng.randrange(6) for _ in range(rng.randrange(9))] for _ in range(25)],),
        (_chunks(_SONNET),),
    ]
    compare(fn, count_pairs, cases, name="count_pairs",
            hint="for each chunk on its own, count (chunk[i], chunk[i+1]) at every i, and add "
                 "the counts of all chunks; the last id of a chunk has no right neighbour")


def check_merge(fn: Callable[[Sequence[int], tuple[int, int], int], list[int]]) -> None:
    """Check ``fn(ids, pair, new_id)`` replaces the pair left to right without overlaps.

    Cases catch the overlap mistake (``[97, 97, 97]`` with ``(97, 97)`` must give
    ``[new, 97]``), replacing only the first occurrence, and losing the last id.
    """
    require_function(fn, "merge")
    rng = random.Random(402)
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 256),
        ([97, 97, 97], (97, 97), 256),
        ([97, 97, 97, 97], (97, 97), 256),
        ([1, 2], (2, 1), 9),
        ([2, 1, 2, 1, 2], (1, 2), 7),
        ([5, 6, 7], (6, 7), 300),
        ([], (1, 2), 3),
        ([4], (4, 4), 5),
        ([rng.randrange(3) for _ in range(40)], (1, 2), 3),
        ([rng.randrange(2) for _ in range(60)], (0, 0), 2),
    ]
    compare(fn, merge, cases, name="merge",
            hint="walk i from left to right: if ids[i], ids[i+1] is the pair, emit new_id and "
                 "skip both (i += 2), else emit ids[i] (i += 1); keep the last id")


def check_encode_word(fn: Callable[[bytes, Sequence[tuple[bytes, bytes]]], list[bytes]]
                      ) -> None:
    """Check ``fn(word, merges)`` encodes one pre-token by merge rank.

    Hand-made cases first, each built so that a common wrong rule gives another answer: the
    longest token of the vocabulary first, the most frequent pair of the word first, or the
    merges applied from the last learned. Then words of a sonnet and new words (with
    multi-byte characters) against merges learned from that sonnet.
    """
    require_function(fn, "encode_word")
    learned = ByteLevelBPE.train(_SONNET, 256 + 60, special_tokens=()).merges
    words = [w.encode("utf-8") for w in regex.findall(GPT2_SPLIT_PATTERN, _SONNET)]
    rng = random.Random(403)
    picked = rng.sample(sorted(set(words)), 12)
    novel = [b" summers", b" shaken", b" thereafter", b" caf\xc3\xa9", b" \xf0\x9f\x99\x82"]
    cases = [
        (b"abc", [(b"b", b"c"), (b"a", b"b")]),
        (b"abab", [(b"b", b"a"), (b"a", b"b")]),
        (b"aaa", [(b"a", b"a")]),
        (b"aaaa", [(b"a", b"a"), (b"aa", b"aa")]),
        (b"hello", []),
        (b"", learned),
        *[(w, learned) for w in picked + novel],
    ]
    compare(fn, encode_word, cases, name="encode_word",
            hint="start from single bytes; repeatedly find the neighbouring pair with the "
                 "smallest index in merges and merge it everywhere; stop when no pair is a merge")


def check_decode(fn: Callable[[Sequence[int], Mapping[int, bytes]], str]) -> None:
    """Check ``fn(ids, vocab)`` joins the bytes and decodes once with ``errors="replace"``.

    Cases split ``é`` and an emoji over two tokens (decoding each token on its own gives
    U+FFFD where the whole gives the character), and hold invalid bytes (``errors="strict"``
    raises, ``errors="ignore"`` silently drops them).
    """
    require_function(fn, "decode")
    vocab = _Vocab({i: bytes([i]) for i in range(256)})
    vocab.update({256: b" the", 257: b"caf\xc3", 258: b"\xa9 ", 259: b"\xf0\x9f",
                  260: b"\x99\x82", 261: b"\xe7\x8c\xab"})
    rng = random.Random(404)
    cases = [
        ([104, 105], vocab),
        ([256, 32, 99], vocab),
        ([257, 258], vocab),
        ([259, 260], vocab),
        ([261], vocab),
        ([259], vocab),
        ([0xFF, 104], vocab),
        ([], vocab),
        ([rng.choice([*range(97, 123), *range(256, 262)]) for _ in range(30)], vocab),
        ([rng.randrange(262) for _ in range(30)], vocab),
    ]
    compare(fn, decode, cases, name="decode",
            hint="join first: one character's bytes can be split over two tokens; then decode "
                 "the joined bytes once as UTF-8 with errors='replace'")
