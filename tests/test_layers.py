"""LayerNorm, GELU, feed-forward, causal self-attention and the Transformer block.

Oracles: ``torch.nn.LayerNorm``, ``torch.nn.functional.gelu(approximate="tanh")``,
``torch.nn.MultiheadAttention`` and ``torch.nn.TransformerEncoderLayer`` (pre-LN and post-LN)
with the same weights copied in.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from llmcourse.nn.attention import causal_mask, scaled_dot_product_attention
from llmcourse.nn.block import Block, CausalSelfAttention
from llmcourse.nn.feedforward import FeedForward, gelu_tanh
from llmcourse.nn.norms import LayerNorm, layer_norm

ATOL = 1e-5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomise(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.dim() == 1 else 0.0))
    return module


shapes = st.tuples(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.integers(1, 33))


# ------------------------------------------------------------------------------ LayerNorm


@given(shape=shapes, bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-6, 1e-2]),
       seed=st.integers(0, 10_000), offset=st.floats(-100, 100))
def test_oracle_layernorm_module_matches_torch(shape, bias, eps, seed, offset):
    lead, dim = shape
    theirs = _randomise(nn.LayerNorm(dim, eps=eps, bias=bias), seed)
    ours = LayerNorm(dim, bias=bias, eps=eps)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*lead, dim, generator=_gen(seed + 1)) * 3 + offset
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=ATOL, rtol=1e-5)


@given(shape=shapes, affine=st.sampled_from(["none", "weight", "both"]),
       seed=st.integers(0, 10_000))
def test_oracle_layer_norm_function_matches_torch(shape, affine, seed):
    lead, dim = shape
    theirs = nn.LayerNorm(dim, elementwise_affine=affine != "none", bias=affine == "both")
    _randomise(theirs, seed)
    x = torch.randn(*lead, dim, generator=_gen(seed + 1)) * 2 + 0.5
    with torch.no_grad():
        ours = layer_norm(x, theirs.weight, theirs.bias, eps=theirs.eps)
        torch.testing.assert_close(ours, theirs(x), atol=ATOL, rtol=1e-5)


def test_layer_norm_output_has_zero_mean_unit_variance():
    x = torch.randn(4, 7, 64, generator=_gen(0)) * 5 + 3
    y = layer_norm(x, None, None)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4, 7), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------ GELU


@given(xs=st.lists(st.floats(-20, 20, allow_nan=False), min_size=1, max_size=50))
def test_oracle_gelu_tanh_matches_torch(xs):
    x = torch.tensor(xs)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-5)


def test_gelu_tanh_is_the_approximation_not_exact_gelu():
    x = torch.linspace(-3, 3, 101)
    assert (gelu_tanh(x) - F.gelu(x)).abs().max() > 1e-5  # erf-GELU differs a little
    assert (gelu_tanh(x) - F.gelu(x)).abs().max() < 1e-2


def test_oracle_feedforward_matches_torch_sequential():
    ff = _randomise(FeedForward(12), 1, std=0.2)
    theirs = nn.Sequential(nn.Linear(12, 48), nn.GELU(approximate="tanh"), nn.Linear(48, 12))
    theirs[0].load_state_dict(ff.c_fc.state_dict())
    theirs[2].load_state_dict(ff.c_proj.state_dict())
    x = torch.randn(2, 5, 12, generator=_gen(1))
    with torch.no_grad():
        torch.testing.assert_close(ff(x), theirs(x), atol=ATOL, rtol=1e-5)
        assert ff.c_fc.out_features == 48  # 4 × n_embd hidden units, as in GPT-2


# ------------------------------------------------------------------------------ attention


def _manual_causal_attention(attn: CausalSelfAttention, x: torch.Tensor,
                             mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same computation written with our own scaled_dot_product_attention."""
    b, t, c = x.shape
    h, hd = attn.n_head, attn.head_dim
    wq, wk, wv = attn.c_attn.weight.chunk(3)
    bq, bk, bv = attn.c_attn.bias.chunk(3)
    q = (x @ wq.T + bq).view(b, t, h, hd).transpose(1, 2)
    k = (x @ wk.T + bk).view(b, t, h, hd).transpose(1, 2)
    v = (x @ wv.T + bv).view(b, t, h, hd).transpose(1, 2)
    if mask is None:
        y = scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        y = scaled_dot_product_attention(q, k, v, mask)
    y = y.transpose(1, 2).reshape(b, t, c)
    return y @ attn.c_proj.weight.T + attn.c_proj.bias


@given(n_head=st.integers(1, 4), head_dim=st.integers(1, 6), b=st.integers(1, 3),
       t=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_causal_self_attention_equals_our_attention_with_is_causal(n_head, head_dim, b, t, seed):
    attn = _randomise(CausalSelfAttention(n_head * head_dim, n_head), seed).eval()
    x = torch.randn(b, t, n_head * head_dim, generator=_gen(seed))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _manual_causal_attention(attn, x),
                                   atol=ATOL, rtol=1e-5)


def test_causal_self_attention_with_padding_mask_equals_our_attention():
    attn = _randomise(CausalSelfAttention(8, 2), 2).eval()
    x = torch.randn(2, 5, 8, generator=_gen(2))
    keys = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    mask = causal_mask(5)[None, None] & keys[:, None, None, :]  # (B, 1, T, T)
    mask = mask | torch.eye(5, dtype=torch.bool)  # padding rows see themselves
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), _manual_causal_attention(attn, x, mask),
                                   atol=ATOL, rtol=1e-5)


def test_oracle_causal_self_attention_matches_torch_multihead():
    attn = _randomise(CausalSelfAttention(12, 3), 3).eval()
    mha = nn.MultiheadAttention(12, 3, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.c_attn.weight)  # both pack (q; k; v) rows
        mha.in_proj_bias.copy_(attn.c_attn.bias)
        mha.out_proj.weight.copy_(attn.c_proj.weight)
        mha.out_proj.bias.copy_(attn.c_proj.bias)
    x = torch.randn(2, 6, 12, generator=_gen(3))
    with torch.no_grad():
        theirs, _ = mha(x, x, x, attn_mask=~causal_mask(6), need_weights=False)
        torch.testing.assert_close(attn(x), theirs, atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------ block


def _torch_layer_from_block(block: Block, n_embd: int, n_head: int, norm_first: bool
                            ) -> nn.TransformerEncoderLayer:
    layer = nn.TransformerEncoderLayer(
        n_embd, n_head, dim_feedforward=4 * n_embd, dropout=0.0,
        activation=lambda x: F.gelu(x, approximate="tanh"), batch_first=True,
        norm_first=norm_first, layer_norm_eps=1e-5,
    )
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(block.attn.c_attn.weight)
        layer.self_attn.in_proj_bias.copy_(block.attn.c_attn.bias)
        layer.self_attn.out_proj.weight.copy_(block.attn.c_proj.weight)
        layer.self_attn.out_proj.bias.copy_(block.attn.c_proj.bias)
        layer.linear1.load_state_dict(block.mlp.c_fc.state_dict())
        layer.linear2.load_state_dict(block.mlp.c_proj.state_dict())
        layer.norm1.load_state_dict(block.ln_1.state_dict())
        layer.norm2.load_state_dict(block.ln_2.state_dict())
    return layer.eval()


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("n_embd, n_head, b, t", [(8, 2, 2, 5), (12, 3, 1, 7), (16, 1, 3, 1)])
def test_oracle_block_matches_torch_encoder_layer(norm_first, n_embd, n_head, b, t):
    block = _randomise(Block(n_embd, n_head, norm_first=norm_first), n_embd + t, std=0.2).eval()
    layer = _torch_layer_from_block(block, n_embd, n_head, norm_first)
    x = torch.randn(b, t, n_embd, generator=_gen(t))
    src_mask = nn.Transformer.generate_square_subsequent_mask(t)  # float, -inf above diagonal
    with torch.no_grad():
        theirs = layer(x, src_mask=src_mask, is_causal=True)
        torch.testing.assert_close(block(x), theirs, atol=ATOL, rtol=1e-5)


def test_pre_ln_and_post_ln_blocks_differ():
    torch.manual_seed(0)
    pre = _randomise(Block(8, 2, norm_first=True), 5).eval()
    post = Block(8, 2, norm_first=False).eval()
    post.load_state_dict(pre.state_dict())
    x = torch.randn(1, 4, 8, generator=_gen(5))
    with torch.no_grad():
        assert not torch.allclose(pre(x), post(x), atol=1e-3)
        # Post-LN ends with a LayerNorm: with ln_2 at identity scale, rows are normalised.
        post.ln_2.weight.fill_(1.0)
        post.ln_2.bias.zero_()
        torch.testing.assert_close(post(x).mean(-1), torch.zeros(1, 4), atol=1e-5, rtol=0)


def test_block_is_causal_future_tokens_do_not_change_the_past():
    block = _randomise(Block(8, 2), 6, std=0.2).eval()
    x = torch.randn(1, 6, 8, generator=_gen(6))
    y = x.clone()
    y[:, 4:] = torch.randn(1, 2, 8, generator=_gen(7))
    with torch.no_grad():
        torch.testing.assert_close(block(x)[:, :4], block(y)[:, :4], atol=ATOL, rtol=1e-5)
        assert not torch.allclose(block(x)[:, 4:], block(y)[:, 4:])
