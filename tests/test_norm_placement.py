"""llmcourse.course.norm_placement: the initialisations, the gradient measurement (checked against
a stack of torch's own TransformerEncoderLayer with copied weights), the claims chapter 03 makes
from it, and the training run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.course import norm_placement as npl
from llmcourse.nn.feedforward import gelu_tanh

# ---------------------------------------------------------------- initialisation


def test_xavier_init_draws_each_matrix_with_its_own_fans():
    (block,) = npl.make_stack(1, norm_first=True, init="xavier", n_embd=64, n_head=4)
    c = 64
    w = block.attn.c_attn.weight  # (3C, C): W_Q, W_K, W_V each C × C → variance 2 / 2C
    for i in range(3):
        assert w[i * c:(i + 1) * c].std().item() == pytest.approx(math.sqrt(1 / c), rel=0.05)
    assert block.attn.c_proj.weight.std().item() == pytest.approx(math.sqrt(1 / c), rel=0.05)
    for m in (block.mlp.c_fc, block.mlp.c_proj):  # C × 4C: variance 2 / 5C
        assert m.weight.std().item() == pytest.approx(math.sqrt(2 / (5 * c)), rel=0.05)
    for name, p in block.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        elif name.startswith("ln_"):
            assert torch.all(p == 1), name


def test_gpt2_init_matches_the_course_gpt():
    blocks = npl.make_stack(8, norm_first=True, init="gpt2", n_embd=64, n_head=4)
    assert blocks[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert blocks[3].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    assert blocks[5].attn.c_proj.weight.std().item() == pytest.approx(residual, rel=0.1)
    assert blocks[7].mlp.c_proj.weight.std().item() == pytest.approx(residual, rel=0.05)


def test_unknown_init_is_refused():
    with pytest.raises(ValueError, match="init must be one of"):
        npl.make_stack(2, norm_first=True, init="kaiming")


# ---------------------------------------------------------------- gradient measurement


def _torch_twin(block, norm_first: bool) -> nn.TransformerEncoderLayer:
    c, n_head = block.attn.n_embd, block.attn.n_head
    twin = nn.TransformerEncoderLayer(c, n_head, dim_feedforward=4 * c, dropout=0.0,
                                      activation=gelu_tanh, batch_first=True,
                                      norm_first=norm_first).double()
    with torch.no_grad():
        twin.self_attn.in_proj_weight.copy_(block.attn.c_attn.weight)
        twin.self_attn.in_proj_bias.copy_(block.attn.c_attn.bias)
        twin.self_attn.out_proj.load_state_dict(block.attn.c_proj.state_dict())
        twin.linear1.load_state_dict(block.mlp.c_fc.state_dict())
        twin.linear2.load_state_dict(block.mlp.c_proj.state_dict())
        twin.norm1.load_state_dict(block.ln_1.state_dict())
        twin.norm2.load_state_dict(block.ln_2.state_dict())
    return twin


@pytest.mark.parametrize("norm_first", [True, False])
def test_ffn_grad_norms_equal_those_of_torch_encoder_layers(norm_first):
    """The measurement, redone on torch.nn.TransformerEncoderLayer copies of the same blocks
    (so the course Block of either arrangement is also checked against torch's): the same
    gradient norms."""
    n, c, seed, batch, seq_len, vocab = 4, 32, 7, 3, 10, 20
    got = npl.ffn_grad_norms(n, norm_first=norm_first, seeds=[seed], n_embd=c, n_head=4,
                             batch=batch, seq_len=seq_len, vocab=vocab)
    twins = [_torch_twin(b, norm_first) for b in npl.make_stack(
        n, norm_first=norm_first, seed=seed, n_embd=c, n_head=4)]
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(batch, seq_len, c, generator=g, dtype=torch.float64)
    w_out = torch.randn(c, vocab, generator=g, dtype=torch.float64) / c**0.5
    targets = torch.randint(0, vocab, (batch, seq_len), generator=g)
    mask = nn.Transformer.generate_square_subsequent_mask(seq_len, dtype=torch.float64)
    h = x
    for twin in twins:
        h = twin(h, src_mask=mask, is_causal=True)
    if norm_first:
        h = F.layer_norm(h, (c,))
    F.cross_entropy((h @ w_out).view(-1, vocab), targets.view(-1)).backward()
    expected = torch.stack([t.linear2.weight.grad.norm() for t in twins])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_ffn_grad_norms_is_deterministic_and_averages_seeds():
    kw = dict(norm_first=False, n_embd=16, n_head=2, seq_len=8)
    a, b = npl.ffn_grad_norms(3, seeds=[0], **kw), npl.ffn_grad_norms(3, seeds=[1], **kw)
    torch.testing.assert_close(npl.ffn_grad_norms(3, seeds=[0, 1], **kw), (a + b) / 2)
    assert torch.equal(npl.ffn_grad_norms(3, seeds=[0], **kw), a)
    with pytest.raises(ValueError, match="at least one seed"):
        npl.ffn_grad_norms(3, seeds=[], **kw)


def test_xavier_last_block_gradient_by_depth_as_in_xiong_theorem_1():
    """Xiong et al.'s setting: the last block's W² gradient does not shrink with depth in
    post-LN and shrinks like 1/√L in pre-LN (an 8× deeper stack: about 1/√8 ≈ 0.35)."""
    pre = npl.last_ffn_grad_by_depth([3, 24], norm_first=True, seeds=[0, 1])
    post = npl.last_ffn_grad_by_depth([3, 24], norm_first=False, seeds=[0, 1])
    assert 0.2 < (pre[1] / pre[0]).item() < 0.6
    assert (post[1] / post[0]).item() > 0.8


def test_xavier_pre_ln_gives_early_blocks_larger_gradients_post_ln_does_not():
    """Layer by layer (the chapter's left panel): pre-LN's W² gradient falls from the first
    block to the last, post-LN's stays within a few tens of percent."""
    pre = npl.ffn_grad_norms(12, norm_first=True, seeds=[0, 1])
    post = npl.ffn_grad_norms(12, norm_first=False, seeds=[0, 1])
    assert (pre[0] / pre[-1]).item() > 2.0
    assert torch.all(pre[:-1] > pre[1:])  # every block more than the one above it
    assert 0.7 < (post[0] / post[-1]).item() < 1.4


def test_gpt2_init_gradients_are_flat_and_alike_for_both_arrangements():
    pre = npl.ffn_grad_norms(12, norm_first=True, init="gpt2", seeds=[0, 1])
    post = npl.ffn_grad_norms(12, norm_first=False, init="gpt2", seeds=[0, 1])
    for g in (pre, post):
        assert (g.max() / g.min()).item() < 1.2
    assert (pre.mean() / post.mean()).item() == pytest.approx(1.0, abs=0.15)


# ---------------------------------------------------------------- the task and the training


def test_repeat_batch_repeats_with_the_period_and_y_is_x_shifted():
    gen = torch.Generator().manual_seed(3)
    x, y = npl.repeat_batch(64, 20, 16, gen, periods=(2, 6))
    assert x.shape == y.shape == (64, 20) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    seq = torch.cat([x, y[:, -1:]], dim=1)
    for row in seq:
        period = next(p for p in range(2, 7) if torch.equal(row[p:], row[:-p]))
        assert 2 <= period <= 6
    assert int(x.max()) < 16 and int(x.min()) >= 0
    with pytest.raises(ValueError, match="periods"):
        npl.repeat_batch(2, 8, 16, gen, periods=(3, 2))


def test_warmup_lr():
    assert [npl.warmup_lr(s, 2.0, 4) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert npl.warmup_lr(0, 3e-3, 0) == 3e-3
    with pytest.raises(ValueError, match="warmup_steps"):
        npl.warmup_lr(0, 1.0, -1)


def test_tiny_lm_has_a_final_norm_for_pre_ln_only():
    pre = npl.TinyLM(vocab=10, seq_len=8, n_layer=2, n_embd=16, n_head=2, norm_first=True)
    post = npl.TinyLM(vocab=10, seq_len=8, n_layer=2, n_embd=16, n_head=2, norm_first=False)
    assert pre.ln_f is not None and post.ln_f is None
    assert all(b.norm_first for b in pre.blocks) and not any(b.norm_first for b in post.blocks)
    assert pre.wte.weight.dtype == torch.float64


def test_training_is_deterministic_and_learns():
    kw = dict(norm_first=True, lr=3e-3, steps=60, n_layer=2, n_embd=32, n_head=4, seq_len=16)
    losses = npl.train_tiny_lm(**kw)
    assert losses == npl.train_tiny_lm(**kw)
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3


def test_training_refuses_a_bad_learning_rate():
    for lr in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="lr must be a positive number"):
            npl.train_tiny_lm(norm_first=True, lr=lr, steps=1)


def test_chapter_03_run_post_ln_lags_and_warm_up_helps_it():
    """Chapter 03's training run (the defaults, lr 3e-3): without warm-up post-LN learns
    far less than pre-LN; a 100-step warm-up helps post-LN but it still ends behind."""
    def final(norm_first, warmup):
        losses = npl.train_tiny_lm(norm_first=norm_first, lr=3e-3, warmup_steps=warmup)
        return sum(losses[-20:]) / 20

    pre, post, post_warm = final(True, 0), final(False, 0), final(False, 100)
    assert pre < 1.8 < post_warm < post - 0.2
    assert post > pre + 0.6


def test_global_random_state_is_untouched():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    npl.ffn_grad_norms(2, norm_first=True, seeds=[0], n_embd=16, n_head=2, seq_len=8)
    npl.train_tiny_lm(norm_first=False, lr=1e-3, steps=2, n_layer=1, n_embd=16, n_head=2)
    assert torch.equal(torch.rand(3), expected)
