"""Bad input fails early with a ValueError/TypeError that names what was wrong.

One test per kind of bad input per public function or module: wrong rank or shape, wrong
dtype, mismatched head counts, NaN, a sequence longer than the context, bad values. Each case
asserts the exception type and that the message names the offending shapes or values.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from llmcourse.models.gpt import GPT, GPTConfig, parameter_count
from llmcourse.nn.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from llmcourse.nn.block import Block, CausalSelfAttention
from llmcourse.nn.feedforward import FeedForward, gelu_tanh
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.norms import LayerNorm, layer_norm
from llmcourse.nn.positional import (
    LearnedPositions,
    RotaryEmbedding,
    apply_rope,
    rope_cos_sin,
    sinusoidal_positions,
)

E = re.escape
NAN = float("nan")


def _nan(*shape: int) -> torch.Tensor:
    x = torch.randn(*shape)
    x.view(-1)[-1] = NAN
    return x


def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


# Small modules shared by the cases (built once; none of the cases changes them).
MHA = MultiHeadAttention(8, 2)
MHA_CROSS = MultiHeadAttention(8, 2, kdim=6, vdim=4)
LN = LayerNorm(8)
FF = FeedForward(8)
CSA = CausalSelfAttention(8, 2)
BLOCK = Block(8, 2)
LP = LearnedPositions(4, 8)
ROPE = RotaryEmbedding(head_dim=4, n_positions=8)
COS, SIN = rope_cos_sin(4, 8)
CFG = GPTConfig(vocab_size=101, block_size=16, n_layer=2, n_head=2, n_embd=8)
GPT_MODEL = GPT(CFG).eval()
IDS = torch.zeros(2, 5, dtype=torch.long)


def _cache(max_len: int = 4, n_head: int = 2, length: int = 0) -> KVCache:
    cache = KVCache(n_layer=2, batch_size=1, n_head=n_head, max_len=max_len, head_dim=4)
    cache.length = length
    return cache




# ------------------------------------------------------------------------------ rank / shape

WRONG_RANK_OR_SHAPE = [
    pytest.param(lambda: scaled_dot_product_attention(_r(4), _r(3, 4), _r(3, 4)),
                 ValueError, r"q must have shape .* got shape \(4,\)", id="sdpa-rank"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 3, 4), _r(2, 5, 6), _r(2, 5, 6)),
                 ValueError, E("q (2, 3, 4) and k (2, 5, 6)"), id="sdpa-d_k"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 3, 4), _r(2, 5, 4), _r(2, 6, 4)),
                 ValueError, E("k (2, 5, 4) and v (2, 6, 4)"), id="sdpa-t_k"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 3, 4), _r(3, 5, 4), _r(3, 5, 4)),
                 ValueError, E("batch axes of q (2, 3, 4), k (3, 5, 4)"), id="sdpa-batch"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 3, 4), _r(2, 5, 4), _r(2, 5, 4),
                                                      torch.ones(4, 4, dtype=torch.bool)),
                 ValueError, E("mask of shape (4, 4) does not broadcast") + ".*" + E("(2, 3, 5)"),
                 id="sdpa-mask"),
    pytest.param(lambda: scaled_dot_product_attention(_r(3, 4), _r(5, 4), _r(5, 4),
                                                      torch.ones(2, 3, 5, dtype=torch.bool)),
                 ValueError, E("mask of shape (2, 3, 5)"), id="sdpa-mask-extra-axis"),
    pytest.param(lambda: MHA(_r(5, 8)), ValueError,
                 r"query must have shape \(batch, time, features\).*got shape \(5, 8\)",
                 id="mha-rank"),
    pytest.param(lambda: MHA(_r(2, 5, 6)), ValueError,
                 E("query has 6 features (shape (2, 5, 6)), expected 8"), id="mha-features"),
    pytest.param(lambda: MHA_CROSS(_r(2, 5, 8), _r(2, 3, 8), _r(2, 3, 4)), ValueError,
                 E("key has 8 features (shape (2, 3, 8)), expected 6"), id="mha-kdim"),
    pytest.param(lambda: MHA(_r(2, 5, 8), _r(3, 4, 8)), ValueError,
                 E("share the batch size, got 2, 3, 3"), id="mha-batch"),
    pytest.param(lambda: MHA(_r(2, 5, 8), _r(2, 4, 8), _r(2, 3, 8)), ValueError,
                 E("same length, got (2, 4, 8) and (2, 3, 8)"), id="mha-key-value"),
    pytest.param(lambda: MHA(_r(2, 5, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)),
                 ValueError, E("(B, T_k) = (2, 5), got torch.bool (2, 4)"), id="mha-padding"),
    pytest.param(lambda: MHA(_r(2, 5, 8), mask=torch.ones(4, 4, dtype=torch.bool),
                             key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)),
                 ValueError, E("mask of shape (4, 4) does not broadcast"), id="mha-mask"),
    pytest.param(lambda: LP(torch.zeros(2, 3, dtype=torch.long).float()), TypeError,
                 E("positions must be integers, got torch.float32"), id="learned-float-pos"),
    pytest.param(lambda: apply_rope(_r(4), COS, SIN), ValueError,
                 r"x must have shape .* got shape \(4,\)", id="rope-rank"),
    pytest.param(lambda: apply_rope(_r(3, 6), COS, SIN), ValueError,
                 E("cos/sin must be (n_positions, head_dim=6), got (8, 4)"), id="rope-head_dim"),
    pytest.param(lambda: apply_rope(_r(3, 4), COS, SIN, torch.tensor([0, 1])), ValueError,
                 E("sequence axis T=3 of x (3, 4), got shape (2,)"), id="rope-positions"),
    pytest.param(lambda: ROPE(_r(2, 3, 6)), ValueError, E("head_dim=6"), id="rotary-head_dim"),
    pytest.param(lambda: layer_norm(torch.tensor(1.0), None, None), ValueError,
                 E("got shape ()"), id="layer_norm-rank"),
    pytest.param(lambda: layer_norm(_r(2, 8), torch.ones(6), None), ValueError,
                 E("weight must have shape (C,) = (8,) to match x (2, 8), got (6,)"),
                 id="layer_norm-weight"),
    pytest.param(lambda: LN(_r(2, 6)), ValueError,
                 E("x has last dimension 6 (shape (2, 6)), expected the LayerNorm's dim = 8"),
                 id="LayerNorm-dim"),
    pytest.param(lambda: FF(_r(2, 3, 6)), ValueError,
                 E("last dimension 6 (shape (2, 3, 6)), expected n_embd = 8"), id="FF-dim"),
    pytest.param(lambda: CSA(_r(3, 8)), ValueError,
                 r"x must have shape \(batch, time, n_embd\).*got shape \(3, 8\)", id="CSA-rank"),
    pytest.param(lambda: CSA(_r(1, 3, 6)), ValueError,
                 E("last dimension 6 (shape (1, 3, 6)), expected n_embd = 8"), id="CSA-dim"),
    pytest.param(lambda: BLOCK(_r(3, 8)), ValueError, E("got shape (3, 8)"), id="Block-rank"),
    pytest.param(lambda: BLOCK(_r(1, 3, 6)), ValueError,
                 E("last dimension 6 (shape (1, 3, 6)), expected n_embd = 8"), id="Block-dim"),
    pytest.param(lambda: _cache().update(0, _r(2, 4), _r(2, 4)), ValueError,
                 r"k must have shape .* got shape \(2, 4\)", id="KVCache-rank"),
    pytest.param(lambda: _cache().update(0, _r(1, 2, 1, 4), _r(1, 2, 2, 4)), ValueError,
                 E("same shape, got (1, 2, 1, 4) and (1, 2, 2, 4)"), id="KVCache-k-v"),
    pytest.param(lambda: _cache().update(0, _r(3, 2, 1, 4), _r(3, 2, 1, 4)), ValueError,
                 E("keys of shape (3, 2, 1, 4) do not fit a cache of (B, h, ·, hd) = (1, 2)"),
                 id="KVCache-batch"),
]


@pytest.mark.parametrize("call, exc, match", WRONG_RANK_OR_SHAPE)
def test_rejects_wrong_rank_or_shape(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------ dtype

INT = torch.ones(2, 3, 8, dtype=torch.long)

WRONG_DTYPE = [
    pytest.param(lambda: scaled_dot_product_attention(INT, INT, INT), TypeError,
                 E("q must be a floating-point tensor, got dtype torch.int64"), id="sdpa-int"),
    pytest.param(lambda: scaled_dot_product_attention([[1.0]], _r(1, 1), _r(1, 1)), TypeError,
                 E("q must be a torch.Tensor, got list"), id="sdpa-list"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 4), _r(2, 4).double(), _r(2, 4)),
                 TypeError, E("share a dtype, got torch.float32, torch.float64, torch.float32"),
                 id="sdpa-mixed"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 4), _r(2, 4), _r(2, 4),
                                                      torch.ones(2, 2, dtype=torch.long)),
                 TypeError,
                 E("mask must be bool (True = attend) or float (added), got torch.int64"),
                 id="sdpa-mask-int"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 4), _r(2, 4), _r(2, 4), scale="x"),
                 TypeError, E("scale must be a finite number or None (1/√d_k), got 'x'"),
                 id="sdpa-scale"),
    pytest.param(lambda: MHA(INT), TypeError, E("query must be a floating-point tensor, got "
                                                "dtype torch.int64"), id="mha-int"),
    pytest.param(lambda: MHA(_r(2, 5, 8), key_padding_mask=torch.zeros(2, 5)), ValueError,
                 E("must be bool of shape (B, T_k) = (2, 5), got torch.float32"),
                 id="mha-padding-float"),
    pytest.param(lambda: MHA.load_torch_weights(nn.Linear(8, 8)), TypeError,
                 E("expected torch.nn.MultiheadAttention, got Linear"), id="mha-load-type"),
    pytest.param(lambda: LP(torch.zeros(3, dtype=torch.bool)), TypeError,
                 E("positions must be integers, got torch.bool"), id="learned-bool"),
    pytest.param(lambda: LP([0, 1]), TypeError, E("positions must be a torch.Tensor, got list"),
                 id="learned-list"),
    pytest.param(lambda: apply_rope(INT[..., :4], COS, SIN), TypeError,
                 E("x must be a floating-point tensor, got dtype torch.int64"), id="rope-int"),
    pytest.param(lambda: apply_rope(_r(3, 4), COS, SIN, torch.tensor([0.0, 1.0, 2.0])),
                 TypeError, E("positions must be integers, got torch.float32"),
                 id="rope-float-positions"),
    pytest.param(lambda: apply_rope(_r(3, 4), COS.long(), SIN), TypeError,
                 E("cos must be a floating-point tensor, got dtype torch.int64"), id="rope-cos"),
    pytest.param(lambda: ROPE(INT[..., :4]), TypeError, E("got dtype torch.int64"),
                 id="rotary-int"),
    pytest.param(lambda: layer_norm(INT, None, None), TypeError,
                 E("x must be a floating-point tensor, got dtype torch.int64"), id="layer_norm"),
    pytest.param(lambda: LN(INT), TypeError, E("got dtype torch.int64"), id="LayerNorm"),
    pytest.param(lambda: gelu_tanh(INT), TypeError,
                 E("x must be a floating-point tensor, got dtype torch.int64"), id="gelu"),
    pytest.param(lambda: gelu_tanh(1.0), TypeError, E("x must be a torch.Tensor, got float"),
                 id="gelu-float"),
    pytest.param(lambda: FF(INT), TypeError, E("got dtype torch.int64"), id="FF"),
    pytest.param(lambda: CSA(INT), TypeError, E("got dtype torch.int64"), id="CSA"),
    pytest.param(lambda: BLOCK(INT), TypeError, E("got dtype torch.int64"), id="Block"),
    pytest.param(lambda: _cache().update(0, _r(1, 2, 1, 4).double(), _r(1, 2, 1, 4).double()),
                 TypeError, E("k has dtype torch.float64 but the cache holds torch.float32"),
                 id="KVCache-dtype"),
    pytest.param(lambda: parameter_count({"n_embd": 8}), TypeError,
                 E("cfg must be a GPTConfig, got dict"), id="parameter_count"),
    pytest.param(lambda: GPT({"n_embd": 8}), TypeError, E("config must be a GPTConfig, got dict"),
                 id="GPT-config"),
]


@pytest.mark.parametrize("call, exc, match", WRONG_DTYPE)
def test_rejects_wrong_dtype(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------ head counts


def _torch_mha(embed_dim, num_heads, **kw):
    return nn.MultiheadAttention(embed_dim, num_heads, batch_first=True, **kw)


HEAD_MISMATCH = [
    pytest.param(lambda: MultiHeadAttention(10, 3), ValueError,
                 E("embed_dim=10 is not divisible by num_heads=3"), id="MultiHeadAttention"),
    pytest.param(lambda: MultiHeadAttention(8, 0), ValueError,
                 E("num_heads must be a positive integer, got 0"), id="mha-zero-heads"),
    pytest.param(lambda: MHA.load_torch_weights(_torch_mha(8, 4)), ValueError,
                 E("(embed_dim, num_heads, kdim, vdim) = (8, 4, 8, 8); this one (8, 2, 8, 8)"),
                 id="mha-load-heads"),
    pytest.param(lambda: MHA.load_torch_weights(_torch_mha(8, 2, kdim=6, vdim=4)), ValueError,
                 E("(8, 2, 6, 4); this one (8, 2, 8, 8)"), id="mha-load-kdim"),
    pytest.param(lambda: MHA.load_torch_weights(_torch_mha(8, 2, bias=False)), ValueError,
                 E("bias mismatch: torch module has bias=False, this one bias=True"),
                 id="mha-load-bias"),
    pytest.param(lambda: MHA.load_torch_weights(_torch_mha(8, 2, add_bias_kv=True)), ValueError,
                 E("add_bias_kv and add_zero_attn"), id="mha-load-bias-kv"),
    pytest.param(lambda: CausalSelfAttention(10, 4), ValueError,
                 E("n_embd=10 is not divisible by n_head=4"), id="CausalSelfAttention"),
    pytest.param(lambda: Block(12, 5), ValueError, E("n_embd=12 is not divisible by n_head=5"),
                 id="Block"),
    pytest.param(lambda: GPTConfig(n_embd=100, n_head=12), ValueError,
                 E("n_embd=100 must be divisible by n_head=12"), id="GPTConfig"),
    pytest.param(lambda: _cache(n_head=2).update(0, _r(1, 3, 1, 4), _r(1, 3, 1, 4)), ValueError,
                 E("keys of shape (1, 3, 1, 4) do not fit a cache of (B, h, ·, hd) = (1, 2)"),
                 id="KVCache"),
    pytest.param(lambda: GPT_MODEL(IDS[:1], cache=KVCache(2, 1, 4, 16, 2)), ValueError,
                 E("cache holds (n_layer, batch, heads, head_dim) = (2, 1, 4, 2), but this "
                   "model and idx need"), id="GPT-foreign-cache"),
    pytest.param(lambda: ROPE(_r(1, 2, 3, 8)), ValueError, E("head_dim=8"), id="rotary"),
    pytest.param(lambda: RotaryEmbedding(head_dim=5, n_positions=8), ValueError,
                 E("head_dim must be even for RoPE (pairs rotate), got 5"), id="rotary-odd"),
]


@pytest.mark.parametrize("call, exc, match", HEAD_MISMATCH)
def test_rejects_mismatched_head_counts(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------ NaN

NAN_INPUT = [
    pytest.param(lambda: scaled_dot_product_attention(_nan(2, 3, 4), _r(2, 5, 4), _r(2, 5, 4)),
                 ValueError, E("q contains NaN (shape (2, 3, 4))"), id="sdpa-q"),
    pytest.param(lambda: scaled_dot_product_attention(_r(2, 3, 4), _r(2, 5, 4), _nan(2, 5, 4)),
                 ValueError, E("v contains NaN (shape (2, 5, 4))"), id="sdpa-v"),
    pytest.param(lambda: scaled_dot_product_attention(_r(3, 4), _r(5, 4), _r(5, 4),
                                                      _nan(3, 5)),
                 ValueError, E("mask of shape (3, 5) contains NaN"), id="sdpa-mask"),
    pytest.param(lambda: MHA(_nan(2, 5, 8)), ValueError, E("query contains NaN (shape (2, 5, 8))"),
                 id="mha-query"),
    pytest.param(lambda: MHA_CROSS(_r(2, 5, 8), _r(2, 3, 6), _nan(2, 3, 4)), ValueError,
                 E("value contains NaN (shape (2, 3, 4))"), id="mha-value"),
    pytest.param(lambda: apply_rope(_nan(3, 4), COS, SIN), ValueError,
                 E("x contains NaN (shape (3, 4))"), id="rope"),
    pytest.param(lambda: ROPE(_nan(1, 2, 3, 4)), ValueError,
                 E("x contains NaN (shape (1, 2, 3, 4))"), id="rotary"),
    pytest.param(lambda: layer_norm(_nan(2, 8), None, None), ValueError,
                 E("x contains NaN (shape (2, 8))"), id="layer_norm"),
    pytest.param(lambda: layer_norm(_r(2, 8), _nan(8), None), ValueError,
                 E("weight contains NaN (shape (8,))"), id="layer_norm-weight"),
    pytest.param(lambda: gelu_tanh(_nan(5)), ValueError, E("x contains NaN (shape (5,))"),
                 id="gelu"),
    # LayerNorm, FeedForward, CausalSelfAttention, Block and KVCache.update no longer scan
    # their values (they run per layer and step): the model checks its input where it enters.
]


@pytest.mark.parametrize("call, exc, match", NAN_INPUT)
def test_rejects_nan(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------ too long


def _cached_gpt_call(cached: int, new: int, max_len: int | None = None):
    cache = GPT_MODEL.new_cache(batch_size=1, max_len=max_len)
    if cached:
        GPT_MODEL(torch.zeros(1, cached, dtype=torch.long), cache=cache)
    return GPT_MODEL(torch.zeros(1, new, dtype=torch.long), cache=cache)


TOO_LONG = [
    pytest.param(lambda: LP(torch.arange(6)), ValueError,
                 E("positions must lie in [0, 4) (the table's length), got 0..5"),
                 id="LearnedPositions"),
    pytest.param(lambda: apply_rope(_r(9, 4), COS, SIN), ValueError,
                 E("sequence length 9 exceeds the RoPE table's 8"), id="apply_rope"),
    pytest.param(lambda: apply_rope(_r(2, 4), COS, SIN, torch.tensor([7, 8])), ValueError,
                 E("positions must lie in [0, 8), got 7..8"), id="apply_rope-positions"),
    pytest.param(lambda: ROPE(_r(1, 2, 10, 4)), ValueError,
                 E("sequence length 10 exceeds the RoPE table's 8"), id="RotaryEmbedding"),
    pytest.param(lambda: _cache(max_len=4, length=3).update(0, _r(1, 2, 2, 4), _r(1, 2, 2, 4)),
                 ValueError, E("KV cache is full: 3 cached + 2 new > max_len 4"), id="KVCache"),
    pytest.param(lambda: CSA(_r(1, 5, 8), cache=_cache(max_len=4)), ValueError,
                 E("KV cache is full: 0 cached + 5 new > max_len 4"), id="CausalSelfAttention"),
    pytest.param(lambda: BLOCK(_r(1, 2, 8), cache=_cache(max_len=4, length=3)), ValueError,
                 E("KV cache is full: 3 cached + 2 new > max_len 4"), id="Block"),
    pytest.param(lambda: GPT_MODEL(torch.zeros(1, 17, dtype=torch.long)), ValueError,
                 E("sequence of 17 tokens (0 cached + 17 new) is longer than the model's context "
                   "block_size=16"), id="GPT"),
    pytest.param(lambda: _cached_gpt_call(12, 5), ValueError,
                 E("sequence of 17 tokens (12 cached + 5 new) is longer than the model's "
                   "context block_size=16"), id="GPT-cache-overflow"),
    pytest.param(lambda: _cached_gpt_call(3, 3, max_len=5), ValueError,
                 E("KV cache is full: 3 cached + 3 new > max_len 5"), id="GPT-small-cache"),
]


@pytest.mark.parametrize("call, exc, match", TOO_LONG)
def test_rejects_sequence_longer_than_context(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------ bad values

BAD_VALUE = [
    pytest.param(lambda: causal_mask(0), ValueError,
                 E("t_query must be a positive integer, got 0"), id="causal_mask-zero"),
    pytest.param(lambda: causal_mask(2.5), ValueError,
                 E("t_query must be a positive integer, got 2.5"), id="causal_mask-float"),
    pytest.param(lambda: causal_mask(5, 3), ValueError,
                 E("needs t_key >= t_query, got t_key=3 < 5"), id="causal_mask-keys"),
    pytest.param(lambda: sinusoidal_positions(4, 5), ValueError,
                 E("dim must be even (sin and cos pairs), got 5"), id="sinusoidal-odd"),
    pytest.param(lambda: sinusoidal_positions(0, 4), ValueError,
                 E("n_positions must be a positive integer, got 0"), id="sinusoidal-zero"),
    pytest.param(lambda: sinusoidal_positions(4, 4, base=-1.0), ValueError,
                 E("base must be a positive number (the wavelength scale), got -1.0"),
                 id="sinusoidal-base"),
    pytest.param(lambda: rope_cos_sin(6, 0), ValueError,
                 E("n_positions must be a positive integer, got 0"), id="rope_cos_sin"),
    pytest.param(lambda: LearnedPositions(0, 8), ValueError,
                 E("n_positions must be a positive integer, got 0"), id="LearnedPositions"),
    pytest.param(lambda: LP(torch.tensor([-1, 0])), ValueError,
                 E("positions must lie in [0, 4) (the table's length), got -1..0"),
                 id="LearnedPositions-negative"),
    pytest.param(lambda: LayerNorm(0), ValueError, E("dim must be a positive integer, got 0"),
                 id="LayerNorm"),
    pytest.param(lambda: KVCache(0, 1, 2, 4, 4), ValueError,
                 E("n_layer must be a positive integer, got 0"), id="KVCache"),
    pytest.param(lambda: _cache().update(2, _r(1, 2, 1, 4), _r(1, 2, 1, 4)), ValueError,
                 E("layer must be an integer in [0, 2), got 2"), id="KVCache-layer"),
    pytest.param(lambda: GPTConfig(vocab_size=0), ValueError,
                 E("vocab_size must be a positive integer, got 0"), id="GPTConfig-vocab"),
    pytest.param(lambda: GPTConfig(block_size=1024.0), ValueError,
                 E("block_size must be a positive integer, got 1024.0"), id="GPTConfig-block"),
    pytest.param(lambda: GPTConfig(dropout=1.0), ValueError,
                 E("dropout must be a number in [0, 1), got 1.0"), id="GPTConfig-dropout"),
    pytest.param(lambda: GPTConfig(dropout="0.1"), ValueError,
                 E("dropout must be a number in [0, 1), got '0.1'"), id="GPTConfig-dropout-str"),
    pytest.param(lambda: GPTConfig(layer_norm_epsilon=0.0), ValueError,
                 E("layer_norm_epsilon must be a small positive number, got 0.0"),
                 id="GPTConfig-eps"),
    pytest.param(lambda: GPTConfig(bias="yes"), TypeError,
                 E("bias must be True or False, got 'yes'"), id="GPTConfig-bias"),
    pytest.param(lambda: GPTConfig(n_layer=-2), ValueError,
                 E("n_layer must be a positive integer, got -2"), id="GPTConfig-layers"),
    pytest.param(lambda: GPTConfig(norm_first=False).to_hf(), ValueError,
                 E("only pre-LN GPTs with biases have a GPT-2 equivalent"), id="to_hf-post-LN"),
]


@pytest.mark.parametrize("call, exc, match", BAD_VALUE)
def test_rejects_bad_values(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------ GPT.forward

GPT_FORWARD = [
    pytest.param(lambda: GPT_MODEL(torch.tensor([[3, 101, 7]])), ValueError,
                 E("idx holds token id 101, outside the vocabulary [0, 101)"), id="id-too-big"),
    pytest.param(lambda: GPT_MODEL(torch.tensor([[3, -1, 7]])), ValueError,
                 E("idx holds token id -1, outside the vocabulary [0, 101)"), id="id-negative"),
    pytest.param(lambda: GPT_MODEL(torch.tensor([[3.0, 1.0]])), TypeError,
                 E("idx must hold integer token ids, got dtype torch.float32"), id="float-ids"),
    pytest.param(lambda: GPT_MODEL(torch.tensor([[True, False]])), TypeError,
                 E("got dtype torch.bool"), id="bool-ids"),
    pytest.param(lambda: GPT_MODEL(torch.tensor([3, 1, 2])), ValueError,
                 E("idx must have shape (batch, time) (2 dims), got shape (3,)"), id="ids-rank"),
    pytest.param(lambda: GPT_MODEL([[3, 1, 2]]), TypeError,
                 E("idx must be a torch.Tensor, got list"), id="ids-list"),
    pytest.param(lambda: GPT_MODEL(IDS, IDS[:, :4]), ValueError,
                 E("targets must have the shape of idx (2, 5), got (2, 4)"), id="targets-shape"),
    pytest.param(lambda: GPT_MODEL(IDS, IDS.float()), TypeError,
                 E("targets must hold integer token ids, got torch.float32"), id="targets-float"),
    pytest.param(lambda: GPT_MODEL(IDS, IDS + 200), ValueError,
                 E("targets hold id 200, outside the vocabulary [0, 101)"), id="targets-range"),
    pytest.param(lambda: GPT_MODEL(IDS, attention_mask=torch.ones(2, 4)), ValueError,
                 E("attention_mask must be (B, cached + T) = (2, 5), got (2, 4)"),
                 id="attention_mask-shape"),
    pytest.param(lambda: GPT_MODEL(IDS, attention_mask=torch.full((2, 5), 2)), ValueError,
                 E("attention_mask must hold only 1 (real token) and 0 (padding), got values [2]"),
                 id="attention_mask-values"),
    pytest.param(lambda: GPT_MODEL(IDS, position_ids=torch.arange(4)[None]), ValueError,
                 E("position_ids must be (B, T) = (2, 5), got (1, 4)"), id="position_ids-shape"),
    pytest.param(lambda: GPT_MODEL(IDS, position_ids=torch.arange(5.0)[None]), TypeError,
                 E("position_ids must be int64 or int32, got torch.float32"),
                 id="position_ids-float"),
    pytest.param(lambda: GPT_MODEL(IDS, position_ids=torch.arange(12, 17)[None]), ValueError,
                 E("position_ids must lie in [0, block_size=16), got 12..16"),
                 id="position_ids-range"),
    pytest.param(lambda: GPT_MODEL(IDS, cache=GPT_MODEL.new_cache(batch_size=3)), ValueError,
                 E("cache holds 3 sequences but idx has 2"), id="cache-batch"),
    pytest.param(lambda: GPT_MODEL(IDS, IDS, last_only=True), ValueError,
                 E("last_only=True gives one position's logits; the loss needs all of them"),
                 id="last_only-with-targets"),
]


@pytest.mark.parametrize("call, exc, match", GPT_FORWARD)
def test_gpt_forward_rejects(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_gpt_forward_accepts_small_integer_dtypes():
    # Not bad input: uint8/int16/int32 ids are valid and give the int64 result.
    with torch.no_grad():
        ref, _ = GPT_MODEL(IDS + 3)
        for dtype in (torch.uint8, torch.int16, torch.int32):
            torch.testing.assert_close(GPT_MODEL((IDS + 3).to(dtype))[0], ref)


# ------------------------------------------------------------------------------ checkpoints


def _hf_sd(**changes) -> dict[str, torch.Tensor]:
    sd = GPT_MODEL.to_hf_state_dict()
    for k, v in changes.items():
        if v is None:
            del sd[k]
        else:
            sd[k] = v
    return sd


CHECKPOINT = [
    pytest.param(lambda: GPT.from_hf_state_dict(_hf_sd(**{"transformer.wpe.weight": _r(8, 8)}),
                                                CFG),
                 ValueError, E("tensor 'transformer.wpe.weight' has shape (8, 8) in the "
                               "checkpoint but (16, 8) in the model"), id="mismatched-tensor"),
    pytest.param(lambda: GPT.from_hf_state_dict(
                     _hf_sd(**{"transformer.h.0.attn.c_attn.weight": _r(24, 8)}), CFG),
                 ValueError, E("tensor 'transformer.h.0.attn.c_attn.weight' has shape (8, 24) in "
                               "the checkpoint but (24, 8) in the model"),
                 id="untransposed-conv1d"),
    pytest.param(lambda: GPT.from_hf_state_dict(_hf_sd(**{"transformer.h.0.extra": _r(2)}), CFG),
                 ValueError, E("unexpected tensor 'transformer.h.0.extra'"), id="unknown-key"),
    pytest.param(lambda: GPT.from_hf_state_dict(_hf_sd(**{"transformer.ln_f.bias": None}), CFG),
                 ValueError, E("checkpoint lacks tensor 'transformer.ln_f.bias'"),
                 id="missing-key"),
    pytest.param(lambda: GPT.from_hf_state_dict(_hf_sd(**{"lm_head.weight": _r(101, 8)}), CFG),
                 ValueError, E("lm_head.weight differs from transformer.wte.weight"),
                 id="untied-head"),
    pytest.param(lambda: GPT.from_hf_state_dict(_hf_sd(**{"transformer.ln_f.weight": [1.0]}),
                                                CFG),
                 TypeError, E("tensor 'transformer.ln_f.weight' is a list, not a tensor"),
                 id="not-a-tensor"),
    pytest.param(lambda: GPT.from_hf_state_dict([("a", _r(1))]), TypeError,
                 E("state_dict must be a mapping of names to tensors, got list"), id="not-a-dict"),
    pytest.param(lambda: GPT.from_hf_state_dict({"transformer.wte.weight": _r(10, 8)}), ValueError,
                 E("not a GPT-2 checkpoint: no tensor 'transformer.wpe.weight'"),
                 id="infer-no-wpe"),
    pytest.param(lambda: GPT.from_hf_state_dict(_hf_sd()), ValueError,
                 E("cannot infer n_head for width 8; pass a GPTConfig"), id="infer-n_head"),
]


@pytest.mark.parametrize("call, exc, match", CHECKPOINT)
def test_from_hf_state_dict_rejects(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "changes, match",
    [
        pytest.param({"activation_function": "relu"}, E("unsupported activation 'relu'"),
                     id="activation"),
        pytest.param({"n_inner": 100}, E("unsupported n_inner=100; expected 4 * n_embd"),
                     id="n_inner"),
        pytest.param({"scale_attn_by_inverse_layer_idx": True},
                     E("unsupported attention scaling"), id="layer-scaling"),
    ],
)
def test_gpt_config_from_hf_rejects_unsupported_configs(changes, match, quiet_transformers):
    hf_config = CFG.to_hf()
    for k, v in changes.items():
        setattr(hf_config, k, v)
    with pytest.raises(ValueError, match=match):
        GPTConfig.from_hf(hf_config)
