"""Chapter 04 exercises: the pieces of byte-level BPE, then a whole training loop.

- :func:`count_pairs`: how often each pair of neighbouring ids occurs, inside chunks only;
- :func:`merge`: replace every occurrence of a pair by a new id, left to right, no overlaps;
- :func:`encode_word`: encode one pre-token with learned merges, lowest rank first;
- :func:`decode`: ids back to text, invalid UTF-8 replaced by U+FFFD;
- :func:`train_bpe`: learn merges from pre-token counts (the teaching trainer's rule).

Each checker runs the learner's function on fixed cases: small hand-made ones first (so a
failure shows a case one can work through by hand, and each is built to catch one usual
mistake), then larger ones drawn from a seeded ``random.Random`` (the notebook's own random
state is untouched). Every case gets its own fresh arguments, and a function that changes its
arguments in place (consumes ``merges``, pops from ``ids``) is told so. Ids and counts must be
Python ``int``s. The functions below are the course's solutions;
``tests/test_checks_ch04.py`` checks them against code no one here wrote (``str.replace``,
Hugging Face's GPT-2 tokenizer) or written another way (the fast trainer), and checks that each
checker fails the usual mistakes.

Example:
    >>> from llmcourse.checks.ch04 import check_merge, merge
    >>> check_merge(merge)
    ✓ merge: 16 case(s) match the reference
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import regex

from llmcourse.checks import CheckFailed, compare, require_function
from llmcourse.text.bpe import EOT, GPT2_SPLIT_PATTERN, ByteLevelBPE
from llmcourse.text.bpe_teaching import get_stats, merge, train_bpe_naive  # merge: the reference

__all__ = [
    "count_pairs", "merge", "encode_word", "decode", "train_bpe",
    "check_count_pairs", "check_merge", "check_encode_word", "check_decode", "check_train_bpe",
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


def train_bpe(word_counts: Mapping[bytes, int], num_merges: int) -> list[tuple[int, int]]:
    """Learn up to ``num_merges`` BPE merges from pre-token counts, as the teaching trainer does.

    ``word_counts`` maps each distinct pre-token (its UTF-8 bytes, one piece of GPT-2's regex)
    to how often it occurs. Ids 0..255 are the byte values, the merges get 256, 257, ... in the
    order learned. Each step merges the pair with the largest count, a pair inside a word
    counting once per position times the word's count; ties go to the smallest pair of ids
    (left id first, then right id). Training stops early when no word has a pair left.

    This is :func:`llmcourse.text.bpe_teaching.train_bpe_naive` run on a text that holds each
    pre-token ``count`` times, cut apart by ``<|endoftext|>`` (which the trainer never merges
    across). When a merge spells bytes that already are a token, that trainer reuses the old id
    (a vocabulary cannot hold a string twice); :func:`check_train_bpe` draws no such case.

    Example:
        >>> train_bpe({b" low": 5, b" lower": 2}, 3)  # ( ,l), (l,o), (o,w) tie at 7: smallest
        [(32, 108), (111, 119), (256, 257)]
    """
    parts = []
    for word, count in word_counts.items():
        text = word.decode("utf-8")
        if text and regex.findall(GPT2_SPLIT_PATTERN, text) != [text]:
            raise ValueError(f"{word!r} is not one pre-token of GPT-2's regex")
        parts += [text] * count
    merges, _ = train_bpe_naive(EOT.join(parts), 256 + num_merges + 1, special_tokens=(EOT,))
    return merges


# ----------------------------------------------------------------------------- checkers


class _Vocab(dict):
    """A dict of id -> bytes whose repr skips the 256 single bytes (failure messages stay short)."""

    def __repr__(self) -> str:
        extra = ", ".join(f"{i}: {b!r}" for i, b in self.items() if i >= 256)
        return f"{{0..255: the single bytes, {extra}}}"


class _Stop(BaseException):
    """Raised from inside a watched learner call; a BaseException, so that ``compare`` (which
    reports a learner's ``Exception`` as "raised ...") lets it through to the checker."""


def _describe_args(args: Sequence[Any]) -> str:
    text = ", ".join(repr(a) for a in args)
    return text if len(text) <= 300 else text[:300] + " …"


def _run_watched(fn: Callable[..., Any], reference: Callable[..., Any], cases: list[tuple],
                 *, name: str, hint: str, output_problem: Callable[[Any], str] | None = None
                 ) -> None:
    """``compare`` plus two checks it cannot make: the learner leaves its arguments as they were
    (a trainer calls ``merge`` and ``encode_word`` again on the same lists), and
    ``output_problem`` (say, a float count where an int is due) finds nothing to report."""

    def watched(*args: Any) -> Any:
        before = copy.deepcopy(args)
        out = fn(*args)
        for k, (was, now) in enumerate(zip(before, args, strict=True)):
            if was != now:
                raise _Stop(f"✗ {name}: your function changed its argument {k + 1} in place: "
                            f"{_describe_args([was])} became {_describe_args([now])}. Read "
                            "the arguments, build new lists: the caller uses them again "
                            f"(e.g. the same merges for every word)\n  case: "
                            f"{_describe_args(before)}")
        problem = output_problem(out) if output_problem else ""
        if problem:
            raise _Stop(f"✗ {name}: {problem}\n  case: {_describe_args(before)}")
        return out

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # the ✓ line only once every check passed
            compare(watched, reference, cases, name=name, hint=hint)
    except _Stop as stop:
        print(printed.getvalue(), end="")
        raise CheckFailed(str(stop)) from None
    except BaseException:
        print(printed.getvalue(), end="")
        raise
    print(printed.getvalue(), end="")


def _non_int_count(out: Any) -> str:
    """Why a dict of pair counts is not {(int, int): int}; "" when it is (or not a dict)."""
    if not isinstance(out, dict):
        return ""  # compare() says what came back instead
    for pair, n in out.items():
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(i, int) and not isinstance(i, bool) for i in pair)):
            return (f"a key is {pair!r} ({type(pair).__name__}); expected a pair of ids as a "
                    "tuple of two ints, e.g. (1, 2)")
        if isinstance(n, bool) or not isinstance(n, int):
            return (f"the count of {pair!r} is {n!r} ({type(n).__name__}); a count is an int "
                    "(count with += 1, not += 1.0 or a tensor)")
    return ""


def _chunks(text: str) -> list[list[int]]:
    """GPT-2's pre-tokens of ``text`` as lists of byte values."""
    return [list(w.encode("utf-8")) for w in regex.findall(GPT2_SPLIT_PATTERN, text)]


def check_count_pairs(fn: Callable[[Sequence[Sequence[int]]], dict[tuple[int, int], int]]
                      ) -> None:
    """Check ``fn(chunks)`` counts neighbouring pairs inside each chunk, summed over chunks.

    Cases catch counting across chunk boundaries, counting a pair once per chunk, dropping the
    last pair of a chunk, counting repeated ids (``[7, 7, 7, 7]``) without overlaps, counts
    that are not ints, and changing ``chunks`` in place.
    """
    require_function(fn, "count_pairs", function="my_count_pairs")
    rng = random.Random(401)
    cases = [
        ([[1, 2, 3, 1, 2]],),
        ([[1, 2], [3, 1, 2]],),
        ([[5, 6, 5], [5, 6]],),
        ([[7, 7, 7, 7]],),
        ([[4], [], [9, 9]],),
        ([],),
        ([[11, 2], [1, 12], [256, 1, 256, 1]],),
        (_chunks("the cat sat on the mat; then the rat sat."),),
        ([[rng.randrange(6) for _ in range(rng.randrange(9))] for _ in range(25)],),
        (_chunks(_SONNET),),
    ]
    _run_watched(fn, count_pairs, cases, name="count_pairs", output_problem=_non_int_count,
                 hint="for each chunk on its own, count (chunk[i], chunk[i+1]) at every i, and "
                      "add the counts of all chunks; the last id of a chunk has no right "
                      "neighbour")


def check_merge(fn: Callable[[Sequence[int], tuple[int, int], int], list[int]]) -> None:
    """Check ``fn(ids, pair, new_id)`` replaces the pair left to right without overlaps.

    Cases catch the overlap mistake (``[1, 1, 1]`` with ``(1, 1)`` must give ``[new, 1]``),
    replacing only the first occurrence, losing the last id, ids that are not ints, changing
    ``ids`` in place, and working on the digits of a string instead of the ids: with ids of
    several digits, ``"11 2".replace("1 2", "300")`` merges a pair that is not there.
    """
    require_function(fn, "merge", function="my_merge")
    rng = random.Random(402)
    multi = [1, 2, 3, 11, 12, 21, 23, 112, 256, 257, 1000]  # ids whose digits overlap
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 256),
        ([1, 1, 1], (1, 1), 256),
        ([97, 97, 97, 97], (97, 97), 256),
        ([1, 2], (2, 1), 9),
        ([2, 1, 2, 1, 2], (1, 2), 7),
        ([5, 6, 7], (6, 7), 300),
        ([], (1, 2), 3),
        ([4], (4, 4), 5),
        ([11, 2], (1, 2), 300),
        ([1, 21, 2], (1, 2), 300),
        ([12, 3, 1, 23], (12, 3), 1000),
        ([256, 1, 256, 1, 1], (256, 1), 1000),
        ([rng.randrange(3) for _ in range(40)], (1, 2), 3),
        ([rng.randrange(2) for _ in range(60)], (0, 0), 2),
        ([rng.choice(multi) for _ in range(60)], (1, 2), 4096),
        ([rng.choice(multi[:5]) for _ in range(60)], (11, 1), 300),
    ]
    _run_watched(fn, merge, cases, name="merge",
                 hint="walk i from left to right over the list of ids (ints, not their digits "
                      "in a string): if ids[i], ids[i+1] is the pair, emit new_id and skip both "
                      "(i += 2), else emit ids[i] (i += 1); keep the last id")


def check_encode_word(fn: Callable[[bytes, Sequence[tuple[bytes, bytes]]], list[bytes]]
                      ) -> None:
    """Check ``fn(word, merges)`` encodes one pre-token by merge rank.

    Hand-made cases first, each built so that a common wrong rule gives another answer: the
    longest token of the vocabulary first, the most frequent pair of the word first, or the
    merges applied from the last learned. Then words of a sonnet and new words (with
    multi-byte characters) against merges learned from that sonnet. Every case gets its own
    copy of the merges, and a function that changes them (pops merges as it applies them)
    fails: a tokenizer encodes every word with the same list.
    """
    require_function(fn, "encode_word", function="my_encode_word")
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
        (b"", list(learned)),
        *[(w, list(learned)) for w in picked + novel],   # a fresh list for every case
    ]
    _run_watched(fn, encode_word, cases, name="encode_word",
                 hint="start from single bytes; repeatedly find the neighbouring pair with the "
                      "smallest index in merges and merge it everywhere; stop when no pair is a "
                      "merge")


def check_decode(fn: Callable[[Sequence[int], Mapping[int, bytes]], str]) -> None:
    """Check ``fn(ids, vocab)`` joins the bytes and decodes once with ``errors="replace"``.

    Cases split ``é`` and an emoji over two tokens (decoding each token on its own gives
    U+FFFD where the whole gives the character), and hold invalid bytes (``errors="strict"``
    raises, ``errors="ignore"`` silently drops them).
    """
    require_function(fn, "decode", function="my_decode")
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
    _run_watched(fn, decode, cases, name="decode",
                 hint="join first: one character's bytes can be split over two tokens; then "
                      "decode the joined bytes once as UTF-8 with errors='replace'")


def _random_word_counts(rng: random.Random) -> dict[bytes, int]:
    """A few pre-tokens over a small alphabet (so pairs repeat), with counts."""
    letters = "abcdé"
    counts = {}
    for _ in range(rng.randint(3, 8)):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(1, 5)))
        counts[(" " if rng.random() < 0.7 else "") + word] = rng.randint(1, 6)
    return {w.encode("utf-8"): c for w, c in counts.items()}


def check_train_bpe(fn: Callable[[Mapping[bytes, int], int], list[tuple[int, int]]]) -> None:
    """Check ``fn(word_counts, num_merges)`` learns the merges of :func:`train_bpe`.

    Hand-made cases catch counting each distinct word once (its count ignored), breaking ties
    by the first pair seen or the largest pair, counting pairs across two words, not stopping
    when nothing is left to merge, and numbering new tokens from another start; then random
    pre-token counts, each with its own number of merges, drawn so that no merge spells an
    existing token (the one case where the teaching trainer reuses an id).
    """
    require_function(fn, "train_bpe", function="my_train_bpe")
    cases: list[tuple] = [
        ({b" aab": 1, b" cd": 5}, 1),       # weighted: ( ,c) and (c,d) tie at 5; not (a,a)
        ({b"ba": 1, b"ab": 1}, 1),          # a tie: (a, b) = (97, 98) is the smaller pair
        ({b"ab": 3, b"ba": 2}, 2),          # no pair across words: (b, b) is none
        ({b" ab": 2}, 5),                   # only two merges are possible
        ({b"aaaa": 1, b" aaa": 2}, 4),      # (a, a) three times in aaaa, merged twice
        ({b" low": 5, b" lower": 2, b" newest": 6, b" widest": 3}, 10),  # Sennrich et al.
        ({" café".encode(): 3, b" cafe": 2}, 6),
        ({b"a": 4, b"": 1}, 3),
        ({}, 3),
    ]
    rng = random.Random(405)
    while len(cases) < 17:
        word_counts, n = _random_word_counts(rng), rng.randint(1, 14)
        text = EOT.join(w.decode() for w, c in word_counts.items() for _ in range(c))
        merges, vocab = train_bpe_naive(text, 256 + n + 1, special_tokens=(EOT,))
        if len(vocab) - 256 == len(merges):  # no id reused: new ids are 256, 257, ...
            cases.append((word_counts, n))
    _run_watched(fn, train_bpe, cases, name="train_bpe",
                 hint="start from each word's byte values; num_merges times: count the pairs "
                      "inside each word, times the word's count; take the largest count, ties "
                      "to the smallest (left, right); give it id 256 + len(merges); merge it in "
                      "every word; stop early when no word has two ids left")
