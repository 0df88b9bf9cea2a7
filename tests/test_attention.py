"""Scaled dot-product attention and multi-head attention, checked against torch.

Oracles: ``torch.nn.functional.scaled_dot_product_attention`` and
``torch.nn.MultiheadAttention(batch_first=True)`` with the same weights copied in.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from llmcourse.nn.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention

ATOL = 1e-5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _ensure_one_key(allowed: torch.Tensor) -> torch.Tensor:
    """Let every query see at least key 0, so that no row is fully masked."""
    allowed = allowed.clone()
    allowed[..., 0] = True
    return allowed


@st.composite
def attention_case(draw):
    """Random q, k, v (any number of batch axes, T_q != T_k, d_k != d_v) and a random mask."""
    batch = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=3)))
    t_q, t_k = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    d_k, d_v = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    g = _gen(draw(st.integers(0, 2**31 - 1)))
    q = _randn(g, *batch, t_q, d_k)
    k = _randn(g, *batch, t_k, d_k)
    v = _randn(g, *batch, t_k, d_v)
    kind = draw(st.sampled_from(["none", "bool", "bool-broadcast", "float", "float-broadcast"]))
    mask = None
    if kind != "none":
        if kind.endswith("broadcast"):
            # Each batch axis kept or set to 1, and possibly fewer leading axes than the scores.
            keep = [draw(st.booleans()) for _ in batch]
            lead = [n if kp else 1 for n, kp in zip(batch, keep, strict=True)]
            lead = lead[draw(st.integers(0, len(lead))):]
            q_axis = t_q if draw(st.booleans()) else 1
            shape = (*lead, q_axis, t_k)
        else:
            shape = (*batch, t_q, t_k)
        allowed = _ensure_one_key(torch.rand(shape, generator=g) < 0.6)
        if kind.startswith("bool"):
            mask = allowed
        else:  # additive: -inf forbids, other finite values just shift the scores
            mask = torch.randn(shape, generator=g).masked_fill(~allowed, float("-inf"))
    return q, k, v, mask


@given(case=attention_case())
def test_oracle_attention_matches_torch(case):
    q, k, v, mask = case
    ours = scaled_dot_product_attention(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.shape == theirs.shape == (*q.shape[:-1], v.shape[-1])
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


@given(case=attention_case())
def test_oracle_attention_causal_matches_torch(case):
    q, k, v, _ = case
    ours = scaled_dot_product_attention(q, k, v, is_causal=True)
    theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


@given(case=attention_case(), scale=st.floats(0.01, 3.0))
def test_oracle_attention_custom_scale_matches_torch(case, scale):
    q, k, v, mask = case
    ours = scaled_dot_product_attention(q, k, v, mask, scale=scale)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=1e-5)


@given(case=attention_case())
def test_weights_are_softmax_of_scaled_scores_and_sum_to_one(case):
    q, k, v, mask = case
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    # Recompute the weights from the definition, element by element with math.exp.
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
    expected = torch.softmax(scores.double(), dim=-1).float()
    assert w.shape == scores.shape
    torch.testing.assert_close(w, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-6, rtol=0)
    assert (w >= 0).all()
    if mask is not None:  # forbidden keys get exactly zero weight
        forbidden = ~mask if mask.dtype == torch.bool else torch.isneginf(mask)
        assert (w.masked_select(forbidden.expand_as(w)) == 0).all()
    torch.testing.assert_close(out, w @ v, atol=ATOL, rtol=1e-5)


def test_weights_match_hand_computed_softmax():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # (T_q=2, d=2)
    k = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])  # (T_k=3, d=2)
    v = torch.arange(6.0).reshape(3, 2)
    _, w = scaled_dot_product_attention(q, k, v, return_weights=True)
    s = 1 / math.sqrt(2)
    for i, row in enumerate([[1 * s, 2 * s, 0.0], [2 * s, 0.0, 0.0]]):
        z = sum(math.exp(x) for x in row)
        assert w[i].tolist() == pytest.approx([math.exp(x) / z for x in row], abs=1e-6)


def test_oracle_attention_fully_masked_row_matches_torch():
    g = _gen(0)
    q, k, v = _randn(g, 2, 3, 4), _randn(g, 2, 5, 4), _randn(g, 2, 5, 3)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False  # query 1 may attend to nothing
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert not torch.isnan(out).any() and not torch.isnan(w).any()
    assert (w[:, 1] == 0).all()


def test_attention_mask_and_causal_combine():
    g = _gen(1)
    q, k, v = _randn(g, 2, 4, 3), _randn(g, 2, 4, 3), _randn(g, 2, 4, 5)
    pad = torch.tensor([[True, True, True, True], [False, True, True, True]])[:, None, :]
    ours = scaled_dot_product_attention(q, k, v, _ensure_one_key(pad), is_causal=True)
    both = _ensure_one_key(pad) & torch.ones(4, 4, dtype=torch.bool).tril()
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=both))


# ------------------------------------------------------------------------------ causal_mask


@given(t_q=st.integers(1, 8), extra=st.integers(0, 8))
def test_causal_mask_with_offset(t_q, extra):
    t_k = t_q + extra
    m = causal_mask(t_q, t_k)
    assert m.shape == (t_q, t_k) and m.dtype == torch.bool
    for i in range(t_q):
        absolute = t_k - t_q + i  # the query's position when the queries are the last t_q
        assert m[i].tolist() == [j <= absolute for j in range(t_k)]


def test_causal_mask_square_is_torch_tril_and_torch_is_causal():
    m = causal_mask(5)
    assert torch.equal(m, torch.ones(5, 5, dtype=torch.bool).tril())
    g = _gen(2)
    q, k, v = _randn(g, 1, 5, 4), _randn(g, 1, 5, 4), _randn(g, 1, 5, 4)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, m),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
    )


def test_causal_mask_last_rows_equal_full_mask_rows():
    # With a cache, the last t_q queries of a length-t_k sequence see what they saw before.
    full = causal_mask(7)
    assert torch.equal(causal_mask(3, 7), full[-3:])


# ------------------------------------------------------------------------------ multi-head


def _torch_mha(embed_dim, num_heads, *, kdim=None, vdim=None, bias=True, seed=0):
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True, kdim=kdim, vdim=vdim,
                                bias=bias)
    with torch.no_grad():  # torch zeroes its biases at init; randomise all so copying shows
        for p in mha.parameters():
            p.normal_(0.0, 0.5)
    return mha.eval()


def _ours_from(mha, *, kdim=None, vdim=None, bias=True):
    ours = MultiHeadAttention(mha.embed_dim, mha.num_heads, kdim=kdim, vdim=vdim, bias=bias)
    return ours.load_torch_weights(mha)


@st.composite
def mha_case(draw):
    num_heads = draw(st.integers(1, 4))
    embed_dim = num_heads * draw(st.integers(1, 4))
    cross = draw(st.booleans())
    kdim = draw(st.sampled_from([None, 3, 7])) if cross else None
    vdim = draw(st.sampled_from([None, 2, 5])) if cross else None
    b = draw(st.integers(1, 3))
    t_q = draw(st.integers(1, 6))
    t_k = draw(st.integers(1, 6)) if cross else t_q
    seed = draw(st.integers(0, 2**31 - 1))
    use_padding = draw(st.booleans())
    use_causal = draw(st.booleans()) and t_q <= t_k
    return embed_dim, num_heads, cross, kdim, vdim, b, t_q, t_k, seed, use_padding, use_causal


def _check_mha_against_torch(embed_dim, num_heads, cross, kdim, vdim, b, t_q, t_k, seed,
                             use_padding, use_causal):
    mha = _torch_mha(embed_dim, num_heads, kdim=kdim, vdim=vdim, seed=seed)
    ours = _ours_from(mha, kdim=kdim, vdim=vdim)
    g = _gen(seed)
    x = _randn(g, b, t_q, embed_dim)
    key = _randn(g, b, t_k, kdim or embed_dim) if cross else x
    value = _randn(g, b, t_k, vdim or embed_dim) if cross else x

    padding = None
    if use_padding:  # True = a padding key to ignore; keep the first key real in every row
        padding = torch.rand(b, t_k, generator=g) < 0.4
        padding[:, 0] = False
    attn_mask = None  # torch: True = forbidden
    our_mask = None  # ours: True = may attend
    if use_causal:
        our_mask = causal_mask(t_q, t_k)
        attn_mask = ~our_mask
    theirs, w_avg = mha(x, key, value, key_padding_mask=padding, attn_mask=attn_mask,
                        need_weights=True, average_attn_weights=True)
    _, w_heads = mha(x, key, value, key_padding_mask=padding, attn_mask=attn_mask,
                     need_weights=True, average_attn_weights=False)
    with torch.no_grad():
        out, w = ours(x, key, value, mask=our_mask, key_padding_mask=padding, need_weights=True)
    torch.testing.assert_close(out, theirs, atol=ATOL, rtol=1e-5)
    assert w.shape == (b, num_heads, t_q, t_k)
    torch.testing.assert_close(w, w_heads, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.mean(dim=1), w_avg, atol=1e-6, rtol=1e-5)


@given(case=mha_case())
def test_oracle_multihead_matches_torch(case):
    _check_mha_against_torch(*case)


@pytest.mark.parametrize(
    "kdim, vdim, t_q, t_k, use_padding, use_causal",
    [(None, None, 3, 7, True, False), (5, 3, 4, 6, True, True), (7, None, 6, 2, False, False),
     (None, 2, 1, 5, True, True)],
)
def test_oracle_multihead_cross_attention_matches_torch(kdim, vdim, t_q, t_k, use_padding,
                                                        use_causal):
    _check_mha_against_torch(12, 3, True, kdim, vdim, 2, t_q, t_k, t_q + t_k, use_padding,
                             use_causal)


def test_oracle_multihead_self_attention_with_padding_and_causal_matches_torch():
    _check_mha_against_torch(8, 2, False, None, None, 3, 6, 6, 11, True, True)


def test_oracle_multihead_is_causal_matches_torch_mask():
    mha = _torch_mha(12, 3, seed=3)
    ours = _ours_from(mha)
    x = _randn(_gen(3), 2, 6, 12)
    theirs, _ = mha(x, x, x, attn_mask=~causal_mask(6), need_weights=False)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, is_causal=True), theirs, atol=ATOL, rtol=1e-5)


def test_oracle_multihead_additive_float_mask_matches_torch():
    mha = _torch_mha(8, 2, seed=4)
    ours = _ours_from(mha)
    g = _gen(4)
    x, mem = _randn(g, 3, 4, 8), _randn(g, 3, 5, 8)
    mask = _randn(g, 4, 5)
    mask[1:, 2] = float("-inf")
    theirs, _ = mha(x, mem, mem, attn_mask=mask, need_weights=False)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, mem, mask=mask), theirs, atol=ATOL, rtol=1e-5)


def test_oracle_multihead_without_bias_matches_torch():
    mha = _torch_mha(8, 4, bias=False, seed=5)
    ours = _ours_from(mha, bias=False)
    x = _randn(_gen(5), 2, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), mha(x, x, x)[0], atol=ATOL, rtol=1e-5)


def test_multihead_self_attention_is_permutation_equivariant():
    mha = MultiHeadAttention(8, 2)
    x = _randn(_gen(6), 1, 5, 8)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(mha(x[:, perm]), mha(x)[:, perm], atol=ATOL, rtol=1e-5)


def test_load_torch_weights_copies_every_parameter():
    mha = _torch_mha(6, 3, kdim=4, vdim=5, seed=7)
    ours = _ours_from(mha, kdim=4, vdim=5)
    e = 6
    torch.testing.assert_close(ours.q_proj.weight, mha.q_proj_weight)
    torch.testing.assert_close(ours.k_proj.weight, mha.k_proj_weight)
    torch.testing.assert_close(ours.v_proj.weight, mha.v_proj_weight)
    torch.testing.assert_close(ours.q_proj.bias, mha.in_proj_bias[:e])
    torch.testing.assert_close(ours.k_proj.bias, mha.in_proj_bias[e:2 * e])
    torch.testing.assert_close(ours.v_proj.bias, mha.in_proj_bias[2 * e:])
    torch.testing.assert_close(ours.out_proj.weight, mha.out_proj.weight)
    torch.testing.assert_close(ours.out_proj.bias, mha.out_proj.bias)
