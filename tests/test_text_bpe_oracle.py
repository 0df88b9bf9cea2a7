"""BPE training checked against an implementation no one here wrote: Hugging Face
``tokenizers``' ``BpeTrainer``.

Its tie-break rule (``Ord for Merge`` in ``tokenizers/src/models/bpe/trainer.rs``): the highest
count wins, and of equal counts the smallest (left id, right id), where the initial characters
are numbered by code point, which for byte-level characters is GPT-2's byte order. That is
our ``tie_break="token-id"``; with it, the merges must be identical, merge for merge. Two ways of
feeding it: the text itself through its ByteLevel pre-tokenizer (GPT-2's regex, as ours), and
the very word counts our trainer counted (each pre-token spelled in byte-level characters,
which hold no whitespace, split on whitespace), which also covers any Unicode text.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from llmcourse.text.bpe import EOT, ByteLevelBPE
from llmcourse.text.bpe_teaching import merge
from llmcourse.text.bpe_train import learn_merges
from llmcourse.text.bytelevel import CHAR_TO_BYTE, pretokenize, token_str
from llmcourse.text.corpus import load_works


def _hf_merges(tok: Tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


def _trainer(vocab_size: int, specials: list[str]) -> trainers.BpeTrainer:
    return trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                               show_progress=False,
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def hf_train_text(texts: list[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    """tokenizers' BpeTrainer on the texts, pre-tokenized as GPT-2 (its ByteLevel, regex on)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.train_from_iterator(texts, _trainer(vocab_size, specials))
    return tok


def hf_train_counts(word_counts: dict[bytes, int], n_tokens: int) -> list[tuple[str, str]]:
    """tokenizers' BpeTrainer fed exactly these word counts."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    lines = [" ".join([token_str(w)] * c) for w, c in word_counts.items()]
    tok.train_from_iterator(lines, _trainer(n_tokens, []))
    return _hf_merges(tok)


def ours_as_str(tok: ByteLevelBPE) -> list[tuple[str, str]]:
    return [(token_str(a), token_str(b)) for a, b in tok.merges]


@pytest.fixture(scope="module")
def works() -> dict[str, str]:
    return load_works()


@pytest.mark.parametrize("vocab_size", [300, 700])
def test_merges_equal_tokenizers_on_shakespeare(works, vocab_size):
    """Two works joined by <|endoftext|>: the merge lists are identical, merge for merge."""
    texts = [works["sonnets"][:30_000], works["tempest"][:30_000]]
    hf = hf_train_text(texts, vocab_size, [EOT])
    ours = ByteLevelBPE.train(EOT.join(texts), vocab_size, tie_break="token-id")
    assert ours.vocab_size == hf.get_vocab_size() == vocab_size
    assert ours_as_str(ours) == _hf_merges(hf)
    assert len(ours.merges) == vocab_size - 257
    # The vocabularies agree token for token, not only the merges.
    assert {token_str(ours.token_bytes(i)) for i in range(ours.vocab_size - 1)} | {EOT} == \
        set(hf.get_vocab())


def test_the_default_tie_break_is_a_different_rule(works):
    """Ties do occur on real text, and the rule decides them: with our default rule
    (bytes by value) the lists part at the first tie between pairs of different bytes."""
    text = works["sonnets"][:30_000]
    hf = [tuple(_bytes(t) for t in m) for m in _hf_merges(hf_train_text([text], 300, [EOT]))]
    by_value = ByteLevelBPE.train(text, 300).merges
    assert by_value != hf
    k = next(i for i, (a, b) in enumerate(zip(by_value, hf, strict=True)) if a != b)
    # Replay the k shared merges; at merge k both picks are among the most frequent pairs.
    words = [[bytes([b]) for b in w.encode("utf-8")] for w in pretokenize(text, [EOT])]
    for a, b in by_value[:k]:
        words = [merge(w, (a, b), a + b) for w in words]
    counts = Counter(p for w in words for p in pairwise(w))
    assert counts[by_value[k]] == counts[hf[k]] == max(counts.values())


def _bytes(token: str) -> bytes:
    return bytes(CHAR_TO_BYTE[c] for c in token)


def test_tie_break_hand_worked():
    """b"ab" and b" a" occur once each: a tie. By byte value " " (32) < "a" (97), so " a"
    first; by GPT-2 id "a" (64) < "Ġ" (220), so "ab" first, as tokenizers does."""
    counts = {b"ab": 1, b" a": 1}
    merges, vocab = learn_merges(counts, 257)
    assert [vocab[a] + vocab[b] for a, b in merges] == [b" a"]
    merges, vocab = learn_merges(counts, 257, tie_break="token-id")
    assert [vocab[a] + vocab[b] for a, b in merges] == [b"ab"]
    assert hf_train_counts(counts, 257) == [("a", "b")]


def test_unknown_tie_break_is_refused():
    with pytest.raises(ValueError, match=r"tie_break='alphabetical' .* one of \('byte-value'"):
        ByteLevelBPE.train("abc", 300, tie_break="alphabetical")


_TEXTS = st.one_of(
    st.text(st.sampled_from("aab b\n'sé😀"), max_size=150),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXTS, st.integers(257, 320))
def test_merges_equal_tokenizers_on_word_counts(text, n_tokens):
    """The same word counts (any Unicode text, so merges that respell an existing token
    happen too): identical merges."""
    counts = {w.encode("utf-8"): c for w, c in Counter(pretokenize(text)).items()}
    merges, vocab = learn_merges(counts, n_tokens, tie_break="token-id")
    assert [(token_str(vocab[a]), token_str(vocab[b])) for a, b in merges] == \
        hf_train_counts(counts, n_tokens)
