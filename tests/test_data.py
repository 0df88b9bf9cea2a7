"""llmcourse.text.corpus: the corpus, the split by work, the character tokenizer, streams,
batches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmcourse.text.bpe import EOT, ByteLevelBPE
from llmcourse.text.chars import CharTokenizer
from llmcourse.text.corpus import (
    CHAR_SEPARATOR,
    VALIDATION_WORKS,
    load_works,
    nats_per_char,
    split_works,
    strip_gutenberg,
    token_stream,
)
from llmcourse.training.batches import get_batch


@pytest.fixture(scope="module")
def works():
    return load_works()


# ---------------------------------------------------------------- the corpus and its split


def test_corpus_has_the_works_without_licence_text(works):
    assert len(works) == 42
    assert all(text.strip() for text in works.values())
    for name, text in works.items():
        assert "project gutenberg" not in text.lower(), name
        assert "\r" not in text and not text.startswith("\ufeff"), name


def test_validation_works_are_the_named_plays(works):
    _, val = split_works(works)
    # The file stems really are these works: each opens with its title.
    assert val["hamlet"].startswith("HAMLET, PRINCE OF DENMARK")
    assert val["twelfth_night"].startswith("TWELFTH NIGHT")
    assert val["henry_v"].startswith("THE LIFE OF KING HENRY V\n")
    assert val["sonnets"].startswith("THE SONNETS")
    assert "To be, or not to be" in val["hamlet"]


def test_split_holds_out_exactly_the_named_works_and_nothing_overlaps(works):
    train, val = split_works(works)
    assert set(val) == set(VALIDATION_WORKS) and len(VALIDATION_WORKS) == 4
    assert set(train).isdisjoint(val)
    assert set(train) | set(val) == set(works)
    assert all(train[k] == works[k] for k in train) and all(val[k] == works[k] for k in val)
    # No held-out passage hides inside a training work (checked on long distinctive lines).
    train_text = "\n".join(train.values())
    for text in val.values():
        probes = [ln for ln in text.split("\n") if len(ln) > 45][::25]
        assert probes and not any(p in train_text for p in probes)


def test_char_vocabulary_of_training_works_covers_held_out_works(works):
    train, val = split_works(works)
    tok = CharTokenizer.from_text("".join(train.values()) + CHAR_SEPARATOR)
    for text in val.values():
        assert tok.decode(tok.encode(text)) == text  # the unknown policy never fires


@pytest.mark.parametrize(
    "validation, match",
    [(["hamlet", "no_such_play"], "no_such_play"), ("hamlet", "sequence of work names")],
)
def test_split_refuses_bad_validation_names(works, validation, match):
    with pytest.raises((ValueError, TypeError), match=match):
        split_works(works, validation)


def test_split_refuses_holding_out_everything():
    with pytest.raises(ValueError, match="none is left to train on"):
        split_works({"a": "x", "b": "y"}, ["a", "b"])


def test_load_works_refuses_a_folder_without_texts(tmp_path):
    with pytest.raises(ValueError, match="no \\*_gut.txt files"):
        load_works(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        load_works(tmp_path / "missing")


# ---------------------------------------------------------------- Gutenberg licence rule

HEADER = ("The Project Gutenberg EBook of Hamlet\nThis eBook is for the use of anyone...\n"
          "*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n\n\n")
FOOTER = "\n\n*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\nSection 1. General Terms\n"


def test_strip_gutenberg_removes_header_and_footer():
    body = "HAMLET\n\nACT I.\nWho's there?"
    assert strip_gutenberg(HEADER + body + FOOTER) == body
    assert strip_gutenberg(HEADER + body) == body
    assert strip_gutenberg(body + FOOTER) == body


def test_strip_gutenberg_handles_older_markers_crlf_and_bom():
    raw = ("\ufeffheader\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\nLine one.\r\n"
           "Line two.\r\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nlicence")
    assert strip_gutenberg(raw) == "Line one.\nLine two."


@given(st.text(alphabet=st.characters(blacklist_characters="\r\ufeff"), max_size=200))
def test_strip_gutenberg_keeps_text_without_markers(text):
    assert strip_gutenberg(text) == text


# ---------------------------------------------------------------- CharTokenizer

@given(st.text(alphabet="abcXYZ .,;'\n!?", max_size=100))
def test_char_tokenizer_roundtrip(text):
    tok = CharTokenizer.from_text("abcXYZ .,;'\n!?")
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text


def test_char_ids_are_sorted_characters():
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"] and tok.encode("hole") == [1, 3, 2, 0]


def test_unknown_character_is_refused_by_default_with_its_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"character 'z' at position 2 is not in the vocab"):
        tok.encode("abz")


def test_unknown_character_maps_to_the_named_stand_in():
    tok = CharTokenizer.from_text("ab ", unknown=" ")
    assert tok.decode(tok.encode("a€b")) == "a b"
    with pytest.raises(ValueError, match="must be a character of the vocabulary"):
        CharTokenizer.from_text("ab", unknown="?")


def test_char_tokenizer_save_load(tmp_path):
    tok = CharTokenizer.from_text("to be or not\n", unknown=" ")
    tok.save(tmp_path)
    back = CharTokenizer.load(tmp_path)
    assert back.chars == tok.chars and back.unknown == " "
    assert [p.name for p in tmp_path.iterdir()] == ["char_vocab.json"]  # no temp file left
    with pytest.raises(ValueError, match="file not found"):
        CharTokenizer.load(tmp_path / "nothing")


def test_char_decode_refuses_ids_out_of_range():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharTokenizer.from_text("ab").decode([0, 2])


# ---------------------------------------------------------------- token streams

def test_char_stream_is_the_joined_text():
    works = {"a": "to be", "b": "or not", "c": "to be"}
    tok = CharTokenizer.from_text("".join(works.values()) + CHAR_SEPARATOR)
    stream = token_stream(works, tok, CHAR_SEPARATOR)
    assert stream.dtype == torch.long and stream.dim() == 1
    assert tok.decode(stream) == CHAR_SEPARATOR.join(works.values())


def test_bpe_stream_puts_one_endoftext_token_between_works():
    works = {"a": "the cat sat on the mat", "b": "the dog sat on the log"}
    tok = ByteLevelBPE.train(" ".join(works.values()) * 5, vocab_size=270,
                             special_tokens=(EOT,))
    stream = token_stream(works, tok, EOT)
    assert (stream == tok.eot_id).sum() == 1
    assert tok.decode(stream.tolist()) == EOT.join(works.values())
    cut = stream.tolist().index(tok.eot_id)
    assert stream[:cut].tolist() == tok.encode(works["a"])  # each work encoded on its own


def test_token_stream_refuses_no_works():
    with pytest.raises(ValueError, match="works is empty"):
        token_stream({}, CharTokenizer.from_text("a"), "a")


# ---------------------------------------------------------------- get_batch

@given(n=st.integers(9, 60), b=st.integers(1, 6), t=st.integers(1, 8), seed=st.integers(0, 99))
def test_get_batch_windows_and_shift(n, b, t, seed):
    stream = torch.arange(n) * 7  # distinct values, so a window's position is readable
    x, y = get_batch(stream, b, t, torch.Generator().manual_seed(seed))
    assert x.shape == y.shape == (b, t) and x.dtype == y.dtype == stream.dtype
    starts = x[:, 0] // 7
    assert ((starts >= 0) & (starts <= n - t - 1)).all()
    assert torch.equal(x, (starts[:, None] + torch.arange(t)) * 7)  # contiguous windows
    assert torch.equal(y, x + 7)  # each target is the next token


def test_get_batch_reaches_every_start_including_the_last():
    stream = torch.arange(12)
    x, _ = get_batch(stream, 500, 8, torch.Generator().manual_seed(0))
    assert set(x[:, 0].tolist()) == {0, 1, 2, 3}  # 12 tokens, windows of 8 + 1


def test_get_batch_is_reproducible_with_a_generator():
    stream = torch.arange(1000)
    a = get_batch(stream, 4, 16, torch.Generator().manual_seed(3))
    b = get_batch(stream, 4, 16, torch.Generator().manual_seed(3))
    c = get_batch(stream, 4, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_get_batch_refuses_a_stream_shorter_than_one_window():
    with pytest.raises(ValueError, match=r"has 8 tokens, fewer than one window of "
                                         r"block_size \+ 1 = 9"):
        get_batch(torch.arange(8), 2, 8)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(stream=torch.rand(20)), ValueError, "1-D integer"),
    (dict(stream=torch.arange(20).view(4, 5)), ValueError, "1-D integer"),
    (dict(stream=list(range(20))), TypeError, "torch.Tensor"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    (dict(block_size=0), ValueError, "block_size must be a positive integer"),
])
def test_get_batch_bad_input(kwargs, err, match):
    args = dict(stream=torch.arange(20), batch_size=2, block_size=4) | kwargs
    with pytest.raises(err, match=match):
        get_batch(**args)


# ---------------------------------------------------------------- nats per character

def test_nats_per_char_of_a_char_model_is_its_loss():
    assert nats_per_char(1.7, 500, 500) == pytest.approx(1.7)


def test_nats_per_char_counts_the_same_total_information():
    # A uniform model over V tokens spends ln V nats per token, whatever the segmentation:
    # 3 chars per token at ln 64 per token is ln 4 per char.
    import math

    assert nats_per_char(math.log(64), 100, 300) == pytest.approx(math.log(64) / 3)


@pytest.mark.parametrize("args, match", [
    ((1.0, 0, 10), "n_tokens"), ((1.0, 10, 0), "n_chars"), ((float("nan"), 1, 1), "finite"),
    ((-0.5, 1, 1), "finite number >= 0"),
])
def test_nats_per_char_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        nats_per_char(*args)
