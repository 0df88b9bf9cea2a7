"""Encoding one pre-token: the three implementations of the rule agree with each other and with
Hugging Face ``tokenizers`` (GPT-2's real merges, and hand-made merge tables where a token is
made twice or a merge comes before the merge making its part), including very long words.

No timings here: ``benchmarks/bench_tokenizer.py`` measures the speed of a 1 MB word.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from llmcourse.core.assets import asset_dir
from llmcourse.text.bpe import EOT, ByteLevelBPE
from llmcourse.text.bpe_encode import bpe_buckets, bpe_heap, bpe_short
from llmcourse.text.bytelevel import token_str


@pytest.fixture(scope="module")
def gpt2() -> ByteLevelBPE:
    return ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))


@pytest.fixture(scope="module")
def hf_gpt2() -> Tokenizer:
    folder = asset_dir("gpt2-tokenizer")
    tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return tok


def _letters(n: int, alphabet: str, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


LONG_WORDS = {
    "20k random letters": _letters(20_000, "abcdefghijklmnopqrstuvwxyz", 1),
    "20k of 'a'": "a" * 20_000,
    "20k English-like": ("Supercalifragilisticexpialidocious" * 600)[:20_000],
    "6k CJK letters": _letters(6_000, "中文字日本語のテキスト한국어", 2),
    "20k digits": _letters(20_000, "0123456789", 3),
    "5k emoji": _letters(5_000, "😀🤗👍🏽", 4),
    "20k spaces then a word": " " * 20_000 + "x",
}


@pytest.mark.parametrize("name", list(LONG_WORDS))
def test_long_single_word_equals_tokenizers(gpt2, hf_gpt2, name):
    text = LONG_WORDS[name]
    ids = gpt2.encode(text)
    assert ids == hf_gpt2.encode(text).ids
    assert gpt2.decode(ids) == text
    assert len(ids) > 100


_WORDS = st.lists(st.sampled_from([b"a", b"b", b"ab", b" ", b"th", b"e", b"\xc3\xa9", b"0"]),
                  min_size=1, max_size=120).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(_WORDS)
def test_three_encoders_agree_on_gpt2(gpt2, word):
    table = gpt2._table
    ids = [gpt2._byte_ids[b] for b in word]
    want = bpe_short(list(ids), table)
    assert bpe_heap(list(ids), table) == want
    assert bpe_buckets(list(ids), table) == want


def test_gpt2_table_is_monotone(gpt2):
    """Each GPT-2 merge's parts are made by earlier merges, and no token is made twice."""
    assert gpt2._table.monotone


# Hand-made tables the fast path must not take: "abc" made by two merges; a merge listed
# before the merge that makes its left part.
_BYTES = {i: bytes([i]) for i in range(256)}
_A, _B, _C = ord("a"), ord("b"), ord("c")
TABLES = {
    "a token made twice": ([b"ab", b"bc", b"abc"], [(_A, _B), (_B, _C), (256, _C), (_A, 257)]),
    "a part made later": ([b"ab", b"abc", b"ca"], [(256, _C), (_C, _A), (_A, _B)]),
    # "abab": the heap merges a+b, then at once ab+a (rank 0), leaving [aba, b]; taking rank
    # 1 everywhere first would give [ab, ab].
    "a part made later, overlapping": ([b"ab", b"aba"], [(256, _A), (_A, _B)]),
}


def _hf_from_table(extra: list[bytes], merges: list[tuple[int, int]]) -> Tokenizer:
    tokens = {**_BYTES, **{256 + k: t for k, t in enumerate(extra)}}
    vocab = {token_str(t): i for i, t in tokens.items()}
    hf = Tokenizer(models.BPE(vocab, [(token_str(tokens[a]), token_str(tokens[b]))
                                      for a, b in merges]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return hf


@pytest.mark.parametrize("name", list(TABLES))
def test_non_monotone_tables_equal_tokenizers(name):
    extra, merges = TABLES[name]
    ours = ByteLevelBPE({**_BYTES, **{256 + k: t for k, t in enumerate(extra)}}, merges)
    assert not ours._table.monotone
    with pytest.raises(ValueError, match="monotone"):
        bpe_buckets([_A, _B], ours._table)
    hf = _hf_from_table(extra, merges)
    rng = random.Random(5)
    for n in [1, 2, 3, 5, 8, 13, 30, 200, 3000]:
        for _ in range(20 if n < 100 else 2):
            word = "".join(rng.choice("abc") for _ in range(n))
            assert ours.encode(word) == hf.encode(word).ids, word
            ids = list(word.encode())
            assert bpe_heap(list(ids), ours._table) == bpe_short(list(ids), ours._table)


def test_long_pre_tokens_are_not_cached():
    """A cache of chunk -> ids must not hold a megabyte chunk for the rest of the session."""
    tok = ByteLevelBPE.load(asset_dir("gpt2-tokenizer"))
    assert tok.encode("a" * 5_000 + " b" + EOT)[-1] == tok.eot_id
    assert " b" in tok._cache and not any(len(k) > 256 for k in tok._cache)
