"""llmcourse.course.attention_maps: the recomputed weights against transformers' own attention
probabilities (eager GPT-2 with output_attentions), the self-check against the module's output,
and the head scores on patterns whose answer is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse.course.attention_maps import (
    attention_mass,
    attention_weights,
    offset_target,
    repeated_random_tokens,
    uniform_mass,
)
from llmcourse.models.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _model(seed: int = 0) -> GPT:
    """A small GPT with weights far from their near-zero initialisation, so that the heads
    attend sharply and differently."""
    torch.manual_seed(seed)
    model = GPT(CFG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def test_weights_equal_transformers_eager_attention_probabilities():
    model = _model()
    hf = model.to_hf().eval()
    hf.set_attn_implementation("eager")  # the implementation that materialises the weights
    ids = torch.randint(CFG.vocab_size, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = torch.stack(hf(ids, output_attentions=True).attentions, dim=1)  # (B, L, h, T, T)
    ours = attention_weights(model, ids)
    assert ours.shape == (3, CFG.n_layer, CFG.n_head, 12, 12)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert theirs.amax(-1).mean() > 0.5  # sharp enough that a wrong recomputation would show


def test_weights_are_causal_distributions_and_the_model_is_left_as_it_was():
    model = _model().train()
    ids = torch.randint(CFG.vocab_size, (2, 9))
    w = attention_weights(model, ids)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, CFG.n_layer, CFG.n_head, 9))
    assert w.triu(1).abs().max() == 0  # no query sees a later key
    assert model.training  # mode restored
    assert all(not block.attn._forward_hooks for block in model.transformer.h)  # hooks removed


def test_hooks_are_removed_and_mode_restored_when_the_forward_refuses_the_input():
    model = _model()
    with pytest.raises(ValueError, match="longer than the model's context"):
        attention_weights(model, torch.zeros(1, CFG.block_size + 1, dtype=torch.long))
    assert all(not block.attn._forward_hooks for block in model.transformer.h)
    assert not model.training


def test_a_module_that_is_not_causal_attention_is_caught(monkeypatch):
    """The self-check can fail: attention without its causal mask gives other outputs than the
    causal weights, so the recomputation refuses to return them."""
    model = _model()
    sdpa = F.scaled_dot_product_attention

    def not_causal(q, k, v, *args, **kwargs):
        kwargs["is_causal"] = False
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", not_causal)
    with pytest.raises(RuntimeError, match="does not reproduce the module's output"):
        attention_weights(model, torch.randint(CFG.vocab_size, (1, 8)))


def test_attention_weights_refuses_another_model():
    with pytest.raises(TypeError, match="course's GPT"):
        attention_weights(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long))


def test_a_head_with_no_preference_scores_the_uniform_baseline():
    """Queries and keys of zero give equal scores: every head spreads evenly over keys 0..i,
    which is what uniform_mass assumes."""
    model = _model()
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_attn.weight[: 2 * CFG.n_embd].zero_()  # q and k rows
            block.attn.c_attn.bias[: 2 * CFG.n_embd].zero_()
    ids = torch.randint(CFG.vocab_size, (2, 10))
    w = attention_weights(model, ids)
    keys = torch.rand(2, 10, generator=torch.Generator().manual_seed(3)) < 0.3  # (B, T)
    by_key = keys[:, None, :].expand(2, 10, 10)  # (B, T, T): the same keys for every query
    for target in (offset_target(10, 1), offset_target(10, 0), by_key):
        expected = torch.full((CFG.n_layer, CFG.n_head), uniform_mass(target))
        torch.testing.assert_close(attention_mass(w, target), expected)


def _pattern(t: int, key_of: list[int]) -> torch.Tensor:
    """(1, 1, 1, T, T) weights: query i puts all its attention on key key_of[i]."""
    w = torch.zeros(t, t)
    w[torch.arange(t), torch.tensor(key_of)] = 1.0
    return w[None, None, None]


def test_scores_on_known_patterns():
    t = 6
    previous = _pattern(t, [0, 0, 1, 2, 3, 4])
    first = _pattern(t, [0] * t)
    assert attention_mass(previous, offset_target(t, 1)).item() == 1.0
    assert attention_mass(first, offset_target(t, 1)).item() == pytest.approx(1 / (t - 1))
    first_key = torch.zeros(t, t, dtype=torch.bool)
    first_key[1:, 0] = True
    assert attention_mass(first, first_key).item() == 1.0
    # uniform baseline by hand: mean over i = 1..5 of 1/(i+1)
    by_hand = sum(1 / (i + 1) for i in range(1, t)) / (t - 1)
    assert uniform_mass(offset_target(t, 1)) == pytest.approx(by_hand)


def test_induction_target_on_an_ideal_induction_pattern():
    n = 5
    gen = torch.Generator().manual_seed(0)
    ids, target, queries = repeated_random_tokens(2, n, 100, gen, low=10)
    assert ids.shape == (2, 2 * n) and ids.dtype == torch.int64
    assert torch.equal(ids[:, :n], ids[:, n:]) and ids.min() >= 10
    assert queries.tolist() == [False] * n + [True] * (n - 1) + [False]
    for i in range(n, 2 * n - 1):  # each target key follows the same token's first occurrence
        (j,) = target[i].nonzero()[:, 0].tolist()
        assert torch.equal(ids[:, j - 1], ids[:, i])
    ideal = _pattern(2 * n, [0] * n + [i - n + 1 for i in range(n, 2 * n)])
    assert attention_mass(ideal, target, queries).item() == 1.0
    previous = _pattern(2 * n, [0] + list(range(2 * n - 1)))
    assert attention_mass(previous, target, queries).item() == 0.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="offset must be"):
        offset_target(4, 4)
    with pytest.raises(ValueError, match="target must be bool"):
        attention_mass(torch.zeros(1, 1, 1, 3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="weights must be"):
        attention_mass(torch.zeros(1, 3, 3), offset_target(3, 1))
    with pytest.raises(ValueError, match="no query to average over"):
        attention_mass(torch.zeros(1, 1, 1, 3, 3), torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="n must be at least 2"):
        repeated_random_tokens(1, 1, 10, torch.Generator())
