"""Where input enters the tokenizers (encode, decode, save, load, the constructors): any 1-D
array-like of integer ids is accepted; anything else fails there, once, with a message naming
what was wrong and what was expected."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmcourse.text.bpe import ByteLevelBPE
from llmcourse.text.chars import CharTokenizer
from llmcourse.text.ids import token_id_list


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer.from_text("abc ")


@pytest.fixture(scope="module")
def bpe() -> ByteLevelBPE:
    return ByteLevelBPE.train("abc abc ab a", 262)


def _tokenizers(char, bpe):
    return {"char": char, "bpe": bpe}


ONE_D = {
    "list": [0, 1, 2],
    "tuple": (0, 1, 2),
    "range": range(3),
    "numpy int64": np.array([0, 1, 2]),
    "numpy uint8": np.array([0, 1, 2], dtype=np.uint8),
    "numpy int32": np.array([0, 1, 2], dtype=np.int32),
    "torch int64": torch.tensor([0, 1, 2]),
    "torch int32": torch.tensor([0, 1, 2], dtype=torch.int32),
    "list of numpy ints": list(np.array([0, 1, 2])),
    "list of 0-d tensors": list(torch.tensor([0, 1, 2])),
    "a numpy slice": np.arange(6)[:3],
    "a strided tensor": torch.arange(6)[::2][:2],
}


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("name", list(ONE_D))
def test_decode_accepts_1d_array_likes(char, bpe, kind, name):
    tok = _tokenizers(char, bpe)[kind]
    ids = ONE_D[name]
    plain = [int(i) for i in ids]
    assert tok.decode(ids) == tok.decode(plain)
    assert isinstance(tok.decode(ids), str)


def test_decode_of_numpy_names_no_numpy_repr(char):
    """The bug report: a numpy array gave "token id np.int64(0) is outside the vocabulary"."""
    assert char.decode(np.array([1, 2])) == "ab"
    with pytest.raises(ValueError) as err:
        char.decode(np.array([0, 9]))
    assert "np.int64" not in str(err.value)
    assert "token id 9 at position 1 is outside the vocabulary" in str(err.value)


BAD = [
    (torch.zeros(2, 3, dtype=torch.long), ValueError,
     r"ids must be 1-D .*got a tensor of shape \(2, 3\); decode each row"),
    (np.zeros((1, 4), dtype=int), ValueError, r"got an array of shape \(1, 4\)"),
    (torch.tensor(1), ValueError, r"got a 0-d tensor \(a single id\); wrap it in a list"),
    (np.int64(1), ValueError, r"0-d array \(a single id\)"),
    (torch.tensor([0.0, 1.0]), TypeError, r"integer token ids, got a tensor of dtype "
                                           r"torch.float32"),
    (np.array([0.5]), TypeError, r"integer token ids, got an array of dtype float64"),
    (torch.tensor([True, False]), TypeError, r"dtype torch.bool"),
    (np.array([True]), TypeError, r"dtype bool"),
    ([[0, 1], [1, 0]], TypeError, r"flat sequence of ints, got a list at position 0"),
    ([0, 1.0], TypeError, r"ints, got float \(1.0\) at position 1"),
    ([True], TypeError, r"ints, got bool"),
    ([0, "a"], TypeError, r"ints, got str \('a'\) at position 1"),
    ([0, None], TypeError, r"ints, got NoneType \(None\) at position 1"),
    ("abc", TypeError, r"got str; to encode text, call encode\(\)"),
    (b"\x00", TypeError, r"got bytes"),
    (3, TypeError, r"got a single int; wrap it in a list"),
    (None, TypeError, r"sequence of int token ids, got NoneType"),
    ([-1], ValueError, r"token id -1 at position 0 is outside the vocabulary"),
    (np.array([0, 10**6]), ValueError, r"token id 1000000 at position 1 is outside"),
]


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize(("ids", "exc", "match"), BAD,
                         ids=[f"bad{i}" for i in range(len(BAD))])
def test_decode_refuses_with_a_clear_message(char, bpe, kind, ids, exc, match):
    with pytest.raises(exc, match=match):
        _tokenizers(char, bpe)[kind].decode(ids)


def test_token_id_list_returns_plain_ints():
    out = token_id_list(np.array([1, 2], dtype=np.int16), 5)
    assert out == [1, 2] and all(type(i) is int for i in out)
    assert token_id_list([], 5) == [] and token_id_list(torch.tensor([], dtype=torch.long), 5) \
        == []


def test_token_bytes_takes_numpy_scalars_and_refuses_bad_ids(bpe):
    assert bpe.token_bytes(np.int64(0)) == b"!"
    with pytest.raises(ValueError, match="token id 262 .* outside the vocabulary"):
        bpe.token_bytes(262)


# ------------------------------------------------------------------------------ encode

@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("text", [b"abc", ["abc"], None, 3])
def test_encode_refuses_non_str(char, bpe, kind, text):
    with pytest.raises(TypeError, match=f"text must be a str, got {type(text).__name__}"):
        _tokenizers(char, bpe)[kind].encode(text)


def test_bpe_encode_names_the_lone_surrogate_and_where(bpe):
    for text, pos in [("a\ud800b", 1), ("ab<|endoftext|>c \udfff", 17)]:
        for encode in (bpe.encode, bpe.encode_ordinary):
            with pytest.raises(ValueError, match=f"lone surrogate '.*' at position {pos}, .*"
                                                 "expected valid Unicode"):
                encode(text)
    with pytest.raises(ValueError, match="lone surrogate '.*' at position 4"):
        ByteLevelBPE.train("abc \ud800", 300)


# ------------------------------------------------------------------------------ constructors

@pytest.mark.parametrize(("chars", "exc", "match"), [
    (b"ab", TypeError, "chars must be a str or an iterable of single characters, got bytes"),
    (5, TypeError, "got int"),
    (["ab", "c"], ValueError, "single characters, got 'ab'"),
    ("aba", ValueError, "distinct; 'a' appears 2 times"),
    ("", ValueError, "at least one character"),
])
def test_char_tokenizer_constructor(chars, exc, match):
    with pytest.raises(exc, match=match):
        CharTokenizer(chars)


def test_char_unknown_must_be_a_character():
    with pytest.raises(TypeError, match="unknown must be a character or None, got int"):
        CharTokenizer("ab", unknown=1)


def test_bpe_constructor_names_a_bad_merge():
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match=r"merge 0 \(97, 98\) does not make a token of the "
                                         r"vocab; expected a pair of vocab ids"):
        ByteLevelBPE(vocab, [(97, 98)])
    with pytest.raises(ValueError, match=r"merge 0 \(97, 98, 99\) does not make a token"):
        ByteLevelBPE({**vocab, 256: b"ab"}, [(97, 98, 99)])
    with pytest.raises(TypeError, match=r"vocab\[256\] must be non-empty bytes, got 'ab'"):
        ByteLevelBPE({**vocab, 256: "ab"}, [])
    with pytest.raises(TypeError, match="vocab must be a mapping of id -> bytes, got list"):
        ByteLevelBPE(list(vocab.values()), [])


# ------------------------------------------------------------------------------ save / load

@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_and_load_refuse_a_non_path(char, bpe, kind):
    tok = _tokenizers(char, bpe)[kind]
    with pytest.raises(TypeError, match="folder must be a path .*got int"):
        tok.save(3)
    with pytest.raises(TypeError, match="folder must be a path .*got NoneType"):
        type(tok).load(None)


def test_save_is_atomic_and_leaves_no_temporary_files(char, bpe, tmp_path):
    char.save(tmp_path / "c")
    bpe.save(tmp_path / "b")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["char_vocab.json"]
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".")]
    assert CharTokenizer.load(tmp_path / "c").chars == char.chars
    assert ByteLevelBPE.load(tmp_path / "b").merges == bpe.merges


def test_bpe_save_refuses_a_bad_model_max_length(bpe, tmp_path):
    with pytest.raises(ValueError, match="model_max_length must be a positive int or None, "
                                         "got -5"):
        bpe.save(tmp_path, model_max_length=-5)


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", r"char_vocab.json: not valid JSON .*expected a CharTokenizer file"),
    ("[1, 2]", r"expected a JSON object with \"chars\" \(a string\)"),
    ('{"chars": ["a", "b"]}', r"expected a JSON object with \"chars\" \(a string\)"),
    ('{"chars": "ab", "unknown": 3}', r"\"unknown\" \(a character or null\)"),
    ('{"chars": "aab", "unknown": null}', r"not a valid CharTokenizer file \(chars must be "
                                          r"distinct"),
    ('{"chars": "ab", "unknown": "z"}', r"unknown='z' must be a character of the vocabulary"),
])
def test_char_load_names_what_is_wrong(tmp_path, content, match):
    (tmp_path / CharTokenizer.FILE).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        CharTokenizer.load(tmp_path)


def test_char_load_of_a_folder_without_the_file(tmp_path):
    with pytest.raises(ValueError, match="char_vocab.json: file not found"):
        CharTokenizer.load(tmp_path)


def test_bpe_load_names_a_merges_file_that_is_not_utf8(bpe, tmp_path):
    bpe.save(tmp_path)
    (tmp_path / "merges.txt").write_bytes(b"#version: 0.2\n\xff\xfe a\n")
    with pytest.raises(ValueError, match="merges.txt: not UTF-8 text"):
        ByteLevelBPE.load(tmp_path)


def test_bpe_load_names_a_vocab_of_the_wrong_shape(bpe, tmp_path):
    bpe.save(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(["a", "b"]), encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json: expected a JSON object of token string"):
        ByteLevelBPE.load(tmp_path)
