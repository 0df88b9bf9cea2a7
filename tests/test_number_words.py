"""The translation data of chapter 06: number words from ``num2words`` (the oracle for the
words is ``num2words`` itself, called directly), a split by number, one character tokenizer
for both languages, and the padded teacher-forcing tensors the encoder–decoder trains on.
"""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from num2words import num2words

from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.text.chars import CharTokenizer
from llmcourse.text.number_words import (
    BOS,
    EOS,
    PAD,
    PairBatch,
    decode_target,
    encode_pairs,
    number_pairs,
    pair_tokenizer,
    split_numbers,
)
from llmcourse.training.batches import draw_batch

E = re.escape


@lru_cache(maxsize=1)
def _all_pairs() -> tuple[tuple[str, str], ...]:
    """The pairs of 0..9999 (about 2 s of num2words), computed once."""
    return tuple(number_pairs(range(10_000)))


@lru_cache(maxsize=1)
def _tokenizer() -> CharTokenizer:
    return pair_tokenizer(_all_pairs())


# --- split_numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize("n, test_fraction, val_fraction, sizes", [
    (10_000, 0.1, 0.05, (8500, 500, 1000)),
    (1000, 0.2, 0.1, (700, 100, 200)),
    (3, 0.1, 0.05, (1, 1, 1)),  # every set gets at least one number
    (101, 0.5, 0.25, (26, 25, 50)),  # round(50.5) = 50: Python rounds half to even
])
def test_split_is_disjoint_covers_everything_and_has_the_requested_sizes(
        n, test_fraction, val_fraction, sizes):
    s = split_numbers(n, test_fraction=test_fraction, val_fraction=val_fraction)
    train, val, test = set(s.train), set(s.val), set(s.test)
    assert not (train & val or train & test or val & test)
    assert train | val | test == set(range(n))
    assert len(s.train) == len(train)  # no number twice
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    assert (len(s.test), len(s.val), len(s.train)) == (n_test, n_val, n - n_test - n_val)
    assert (len(s.train), len(s.val), len(s.test)) == sizes
    assert s.train == sorted(s.train) and s.val == sorted(s.val) and s.test == sorted(s.test)


def test_split_is_deterministic_for_a_seed_and_differs_for_another():
    a, b = split_numbers(1000, seed=0), split_numbers(1000, seed=0)
    assert a == b
    c = split_numbers(1000, seed=1)
    assert c.test != a.test and c.val != a.val and c.train != a.train
    assert len(c.test) == len(a.test)


@pytest.mark.parametrize("kw, fragments", [
    (dict(n=2), ("n must be an integer ≥ 3", "got 2")),
    (dict(n=True), ("n must be an integer", "got True")),
    (dict(n=100.0), ("n must be an integer", "got 100.0")),
    (dict(n=100, test_fraction=0), ("test_fraction must be in (0, 1)", "got 0")),
    (dict(n=100, val_fraction=1.0), ("val_fraction must be in (0, 1)", "got 1.0")),
    (dict(n=100, test_fraction=0.6, val_fraction=0.4),
     ("test_fraction + val_fraction must leave numbers to train on",)),
    (dict(n=4, test_fraction=0.5, val_fraction=0.4),  # 2 + 2 of 4: nothing left to train on
     ("no number left to train on", "n=4", "2 test", "2 validation")),
])
def test_split_refuses(kw, fragments):
    with pytest.raises(ValueError, match=".*".join(E(f) for f in fragments)):
        split_numbers(**kw)


@pytest.mark.parametrize("name, value", [("test_fraction", "0.1"), ("val_fraction", None)])
def test_split_refuses_fractions_that_are_not_numbers(name, value):
    with pytest.raises(TypeError, match=E(f"{name} must be a number")):
        split_numbers(100, **{name: value})


# --- number_pairs ------------------------------------------------------------------------------

NUMBERS = [0, 1, 7, 11, 16, 21, 23, 70, 97, 100, 101, 999, 1000, 1234, 9999, 123_456]


@pytest.mark.parametrize("target", ["de", "fr"])
def test_number_pairs_are_num2words(target):
    pairs = number_pairs(NUMBERS, target=target)
    assert pairs == [(num2words(n, lang="en"), num2words(n, lang=target)) for n in NUMBERS]


@given(st.lists(st.integers(0, 10**6), max_size=5))
def test_number_pairs_are_num2words_for_any_numbers(numbers):
    assert number_pairs(numbers) == [(num2words(n), num2words(n, lang="de")) for n in numbers]


def test_number_pairs_show_the_german_reordering():
    """The facts chapter 06 is about, written out by hand (not by num2words)."""
    assert dict(zip(NUMBERS, number_pairs(NUMBERS), strict=True))[23] == \
        ("twenty-three", "dreiundzwanzig")  # three-and-twenty
    assert number_pairs([97], target="fr") == [("ninety-seven", "quatre-vingt-dix-sept")]


def test_number_pairs_accept_a_generator():
    assert number_pairs(n for n in (1, 2)) == [("one", "eins"), ("two", "zwei")]


@pytest.mark.parametrize("bad", [-1, True, False, 2.5, 3.0, "3", None])
def test_number_pairs_refuse_what_is_not_a_non_negative_integer(bad):
    with pytest.raises(ValueError, match=E(f"numbers must be non-negative integers, got {bad!r}")):
        number_pairs([1, bad])


def test_number_pairs_refuse_an_unknown_language():
    with pytest.raises(ValueError, match=E("target='xx' is not a language num2words knows")):
        number_pairs([1], target="xx")


# --- pair_tokenizer ----------------------------------------------------------------------------

def test_pair_tokenizer_specials_come_first():
    tok = _tokenizer()
    assert (PAD, BOS, EOS) == ("\x00", "\x02", "\x03")  # ASCII NUL, STX, ETX
    assert tok.chars[:3] == [PAD, BOS, EOS]
    assert [tok.stoi[c] for c in (PAD, BOS, EOS)] == [0, 1, 2]
    rest = tok.chars[3:]
    assert rest == sorted(rest)
    assert set(rest) == {c for pair in _all_pairs() for text in pair for c in text}


@given(st.data())
def test_pair_tokenizer_round_trips_any_text_of_its_characters(data):
    tok = _tokenizer()
    text = data.draw(st.text(alphabet=st.sampled_from(tok.chars[3:]), max_size=60))
    ids = tok.encode(text)
    assert len(ids) == len(text) and all(i >= 3 for i in ids)  # no special id from text
    assert tok.decode(ids) == text


@pytest.mark.parametrize("special", [PAD, BOS, EOS])
@pytest.mark.parametrize("side", [0, 1])
def test_pair_tokenizer_refuses_text_with_a_control_special(special, side):
    pair = ["eins", "one"]
    pair[side] = pair[side][:2] + special + pair[side][2:]
    with pytest.raises(ValueError, match=E(f"control character(s) [{special!r}]")):
        pair_tokenizer([("two", "zwei"), tuple(pair)])


# --- encode_pairs ------------------------------------------------------------------------------

@given(st.lists(st.integers(0, 9999), min_size=1, max_size=8))
def test_encode_pairs_teacher_forcing_layout(numbers):
    tok = _tokenizer()
    pairs = [_all_pairs()[n] for n in numbers]
    b = encode_pairs(pairs, tok)
    assert isinstance(b, PairBatch)
    pad, bos, eos = 0, 1, 2
    n = len(pairs)
    for t in (b.src, b.src_mask, b.tgt_in, b.targets):
        assert t.dtype == torch.int64 and t.shape[0] == n == len(b)
    assert b.tgt_in.shape == b.targets.shape
    assert b.src.shape[1] == max(len(s) for s, _ in pairs)
    assert b.tgt_in.shape[1] == max(len(t) for _, t in pairs) + 1  # BOS … / … EOS
    assert torch.equal(b.src_mask, (b.src != pad).long())
    assert bool((b.tgt_in[:, 0] == bos).all())
    assert torch.equal(b.targets == -100, b.tgt_in == pad)  # scored exactly where real
    both = (b.tgt_in[:, 1:] != pad) & (b.targets[:, :-1] != -100)
    assert torch.equal(b.tgt_in[:, 1:][both], b.targets[:, :-1][both])  # the shift
    for i, (src, tgt) in enumerate(pairs):
        assert tok.decode(b.src[i][b.src_mask[i].bool()]) == src
        assert bool((b.src[i, len(src):] == pad).all())
        assert b.targets[i, :len(tgt)].tolist() == tok.encode(tgt)
        assert int(b.targets[i, len(tgt)]) == eos  # right after the last character
        assert int((b.targets[i] == eos).sum()) == 1 and int((b.tgt_in[i] == eos).sum()) == 0
        assert decode_target(b.tgt_in[i], tok) == tgt


def test_encode_pairs_by_hand():
    tok = pair_tokenizer([("ab", "c")])  # ids: 0 1 2 specials, a=3 b=4 c=5
    b = encode_pairs([("ab", "c"), ("a", "cc")], tok)
    assert b.src.tolist() == [[3, 4], [3, 0]]
    assert b.src_mask.tolist() == [[1, 1], [1, 0]]
    assert b.tgt_in.tolist() == [[1, 5, 0], [1, 5, 5]]
    assert b.targets.tolist() == [[5, 2, -100], [5, 5, 2]]


@given(st.lists(st.integers(0, 9999), min_size=2, max_size=10), st.data())
def test_rows_trims_to_the_longest_chosen_pair(numbers, data):
    tok = _tokenizer()
    pairs = [_all_pairs()[n] for n in numbers]
    full = encode_pairs(pairs, tok)
    index = torch.tensor(data.draw(st.lists(st.integers(0, len(pairs) - 1), min_size=1,
                                            max_size=6)))
    sub = full.rows(index)
    chosen = [pairs[i] for i in index.tolist()]
    s = max(len(a) for a, _ in chosen)
    t = max(len(b) for _, b in chosen) + 1
    assert sub.src.shape == sub.src_mask.shape == (len(index), s)
    assert sub.tgt_in.shape == sub.targets.shape == (len(index), t)
    assert torch.equal(sub.src, full.src[index, :s])
    assert torch.equal(sub.tgt_in, full.tgt_in[index, :t])
    assert torch.equal(sub.targets, full.targets[index, :t])
    assert bool((full.src[index, s:] == 0).all())  # only padding was cut
    assert bool((full.targets[index, t:] == -100).all())
    alone = encode_pairs(chosen, tok)  # as if the chosen pairs were encoded on their own
    for name in ("src", "src_mask", "tgt_in", "targets"):
        assert torch.equal(getattr(sub, name), getattr(alone, name)), name


@pytest.mark.parametrize("pairs, exc, fragments", [
    ([], ValueError, ("pairs is empty",)),
    ([("one", "")], ValueError, ("pair 0", "target is empty")),
    ([("one", "eins"), ("", "zwei")], ValueError, ("pair 1", "source is empty")),
    ([("one", "ei\x00ns")], ValueError, ("pair 0", "control character", "'\\x00'")),
    ([("on\x03e", "eins")], ValueError, ("pair 0", "control character", "'\\x03'")),
    ([("one", "eins?")], ValueError, ("character '?'", "not in the vocabulary")),
])
def test_encode_pairs_refuses(pairs, exc, fragments):
    with pytest.raises(exc, match=".*".join(E(f) for f in fragments)):
        encode_pairs(pairs, _tokenizer())


@pytest.mark.parametrize("chars", [list("abc"), ["\x02", "\x00", "\x03", "a"]])
def test_encode_pairs_refuses_a_tokenizer_without_the_specials_at_0_1_2(chars):
    with pytest.raises(ValueError, match=E("tokenizer must have NUL, STX, ETX at ids 0, 1, 2")):
        encode_pairs([("a", "a")], CharTokenizer(chars))


# --- decode_target -----------------------------------------------------------------------------

@pytest.mark.parametrize("ids, text", [
    ([1, 5, 6, 2, 7, 0, 0], "lm"),  # BOS dropped, stop at the first EOS
    ([5, 6, 2, 2], "lm"),  # no BOS
    ([1, 5, 6], "lm"),  # no EOS: everything
    ([1, 2, 5], ""),  # EOS first
    ([], ""),
    ([1, 1, 5], "\x02l"),  # only the first token is the start token
    ([1, 5, 0, 6, 2], "l"),  # padding is never text either
    ([1, 5, 6, 0, 0], "lm"),  # a teacher-forcing row: padding, no EOS
])
def test_decode_target(ids, text):
    tok = CharTokenizer([PAD, BOS, EOS, "j", "k", "l", "m", "n"])
    assert decode_target(ids, tok) == text
    assert decode_target(torch.tensor(ids, dtype=torch.long), tok) == text


# --- the data the notebook trains on -----------------------------------------------------------

def test_held_out_numbers_use_no_character_unseen_in_training():
    """Split seed 0 of 0..9999: every character of every German target (and English source)
    occurs in the training split's pairs, so the held-out set has no unknown character."""
    pairs = _all_pairs()
    split = split_numbers(len(pairs), seed=0)
    seen_de = {c for n in split.train for c in pairs[n][1]}
    seen_en = {c for n in split.train for c in pairs[n][0]}
    assert {c for _, de in pairs for c in de} <= seen_de
    assert {c for en, _ in pairs for c in en} <= seen_en
    assert {"ß", "ö", "ü"} <= seen_de  # dreißig, zwölf, fünf: not ASCII


def test_draw_batch_on_pairs_gives_the_models_arguments():
    tok = _tokenizer()
    data = encode_pairs([_all_pairs()[n] for n in range(0, 10_000, 97)], tok)
    gen = torch.Generator().manual_seed(0)
    args, kwargs = draw_batch(data, 6, 999, gen)  # block_size unused for pairs
    src, tgt_in = args
    assert sorted(kwargs) == ["src_mask", "targets"] and src.shape[0] == tgt_in.shape[0] == 6
    assert src.shape[1] == int(kwargs["src_mask"].sum(dim=1).max())  # trimmed
    again = draw_batch(data, 6, 999, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(args, again[0], strict=True))
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                                  max_len=64, n_encoder_layer=1, n_decoder_layer=1,
                                  n_head=2, n_embd=16, ffn_hidden=32))
    logits, loss = model(*args, **kwargs)
    assert logits.shape == (*tgt_in.shape, tok.vocab_size)
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(
        float(tok.vocab_size))).item()) < 2.0  # about uniform at initialisation
