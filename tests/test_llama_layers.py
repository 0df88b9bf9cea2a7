"""The pieces of the Llama-style block, each against code no one here wrote: RMSNorm against
``torch.nn.RMSNorm`` and ``transformers``' ``LlamaRMSNorm``; SwiGLU against ``LlamaMLP``;
RoPE's tables against ``LlamaRotaryEmbedding`` (bit for bit); the repetition of key/value heads
against ``repeat_kv`` and ``torch.repeat_interleave``, and torch's ``enable_gqa`` against it;
grouped-query attention against ``LlamaAttention`` with copied weights, with and without a
cache. Each with the plausible wrong version it must not equal, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from llmcourse.nn.feedforward import SwiGLU, silu
from llmcourse.nn.grouped_query import GroupedQueryAttention, repeat_kv
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.norms import RMSNorm, rms_norm
from llmcourse.nn.positional import rope_cos_sin, rope_rotate, rotate_half

pytestmark = pytest.mark.usefixtures("quiet_transformers")


def _randn(*shape: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


# ------------------------------------------------------------------ RMSNorm


@given(c=st.integers(1, 40), lead=st.lists(st.integers(1, 4), max_size=3),
       eps=st.sampled_from([1e-6, 1e-5, 1e-2]), scale=st.sampled_from([1e-3, 1.0, 50.0]),
       seed=st.integers(0, 2**16))
def test_rmsnorm_equals_torch(c, lead, eps, scale, seed):
    x = _randn(*lead, c, seed=seed, scale=scale, shift=0.5 * scale)
    ours = RMSNorm(c, eps=eps)
    with torch.no_grad():
        ours.weight.copy_(_randn(c, seed=seed + 1, shift=1.0))
    theirs = torch.nn.RMSNorm(c, eps=eps)
    theirs.load_state_dict(ours.state_dict())
    want = theirs(x)
    torch.testing.assert_close(ours(x), want)
    torch.testing.assert_close(rms_norm(x, ours.weight, eps), want)


def test_rmsnorm_equals_transformers_llama_rmsnorm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x = _randn(2, 5, 16, shift=0.3)
    ours, theirs = RMSNorm(16, eps=1e-6), LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(_randn(16, seed=1))
        theirs.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)


def test_rmsnorm_is_not_layernorm():
    """Subtracting the mean first (a LayerNorm without a shift) is a different function for
    any input whose mean is not 0; the two agree only when it is."""
    x = _randn(4, 8, shift=1.0)
    layer = F.layer_norm(x, (8,), None, None, 1e-5)
    assert (rms_norm(x, None) - layer).abs().max() > 0.1
    centred = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(rms_norm(centred, None), F.layer_norm(centred, (8,), eps=1e-5),
                               atol=1e-5, rtol=0)


def test_rmsnorm_output_has_unit_rms_and_keeps_direction():
    x = _randn(3, 10, scale=7.0, shift=2.0)
    y = rms_norm(x, None, eps=0.0)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3))
    torch.testing.assert_close(F.normalize(y, dim=-1), F.normalize(x, dim=-1))


@pytest.mark.parametrize("call, error, match", [
    (lambda: RMSNorm(0), ValueError, "dim must be a positive integer"),
    (lambda: RMSNorm(4, eps=0.0), ValueError, "eps must be a small positive number"),
    (lambda: RMSNorm(4)(torch.ones(2, 5)), ValueError, "RMSNorm's dim"),
    (lambda: RMSNorm(4)(torch.ones(2, 4, dtype=torch.long)), TypeError, "float"),
    (lambda: rms_norm(torch.tensor([1.0, float("nan")]), None), ValueError, "NaN"),
    (lambda: rms_norm(torch.ones(2, 3), torch.ones(4)), ValueError, r"weight must have shape"),
])
def test_rmsnorm_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------ SwiGLU


def test_swiglu_equals_transformers_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    ours = SwiGLU(12, 20)
    theirs = LlamaMLP(LlamaConfig(hidden_size=12, intermediate_size=20, num_attention_heads=2))
    theirs.load_state_dict(ours.state_dict())  # the same names: gate_proj, up_proj, down_proj
    x = _randn(3, 4, 12)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=0)
    assert sum(p.numel() for p in ours.parameters()) == 3 * 12 * 20  # no biases


def test_swiglu_gates_with_silu_of_the_gate_branch():
    torch.manual_seed(0)
    ffn = SwiGLU(6, 9)
    x = _randn(5, 6, scale=2.0)
    gate, up = ffn.gate_proj(x), ffn.up_proj(x)
    torch.testing.assert_close(ffn(x), ffn.down_proj(silu(gate) * up))
    wrong = ffn.down_proj(gate * silu(up))  # SiLU on the other branch
    assert (ffn(x) - wrong).abs().max() > 0.1
    torch.testing.assert_close(silu(x), F.silu(x))


def test_swiglu_bad_input():
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        SwiGLU(4, 0)
    with pytest.raises(ValueError, match="n_embd"):
        SwiGLU(4, 8)(torch.ones(2, 5))


# ------------------------------------------------------------------ RoPE


@pytest.mark.parametrize("hd, base", [(8, 10000.0), (16, 500.0), (64, 500000.0)])
def test_rope_tables_equal_transformers_bit_for_bit(hd, base):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=hd * 2, num_attention_heads=2, max_position_embeddings=300,
                      rope_parameters={"rope_type": "default", "rope_theta": base})
    pos = torch.arange(300)[None]
    cos, sin = LlamaRotaryEmbedding(cfg)(torch.zeros(1), pos)  # (1, T, hd)
    ours_cos, ours_sin = rope_cos_sin(hd, 300, base)
    assert torch.equal(ours_cos, cos[0]) and torch.equal(ours_sin, sin[0])


def test_rope_rotation_equals_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    from transformers.models.llama.modeling_llama import rotate_half as hf_rotate_half

    q, k = _randn(2, 3, 7, 8), _randn(2, 1, 7, 8, seed=1)
    cos, sin = rope_cos_sin(8, 7)
    want_q, want_k = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    assert torch.equal(rope_rotate(q, cos, sin), want_q)
    assert torch.equal(rope_rotate(k, cos, sin), want_k)
    assert torch.equal(rotate_half(q), hf_rotate_half(q))


# ------------------------------------------------------------------ key/value heads


@pytest.mark.parametrize("kv, n_rep", [(1, 4), (2, 3), (3, 1), (4, 2)])
def test_repeat_kv_equals_repeat_interleave_and_transformers(kv, n_rep):
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    x = _randn(2, kv, 5, 4)
    want = x.repeat_interleave(n_rep, dim=1)
    assert torch.equal(repeat_kv(x, n_rep), want)
    assert torch.equal(hf_repeat_kv(x, n_rep), want)
    if kv > 1 and n_rep > 1:
        assert not torch.equal(x.repeat(1, n_rep, 1, 1), want)  # the wrong pairing


@pytest.mark.parametrize("t, s", [(6, 6), (1, 9), (4, 9)])
def test_sdpa_enable_gqa_equals_explicit_repetition(t, s):
    """What the attention relies on: torch's enable_gqa pairs query head j with kv head
    j // n_rep, as repeat_kv does."""
    q, k, v = _randn(2, 6, t, 8), _randn(2, 2, s, 8, seed=1), _randn(2, 2, s, 8, seed=2)
    mask = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    want = F.scaled_dot_product_attention(q, repeat_kv(k, 3), repeat_kv(v, 3), attn_mask=mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ grouped-query attention


def _hf_attention(ours: GroupedQueryAttention, max_pos: int = 32):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaAttention

    cfg = LlamaConfig(hidden_size=ours.n_embd, num_attention_heads=ours.n_head,
                      num_key_value_heads=ours.n_kv_head, max_position_embeddings=max_pos)
    cfg._attn_implementation = "eager"  # the plain formula, no fused kernel
    theirs = LlamaAttention(cfg, layer_idx=0).eval()
    theirs.load_state_dict(ours.state_dict())  # the same names: q_proj, k_proj, v_proj, o_proj
    return theirs


@pytest.mark.parametrize("n_head, n_kv", [(4, 4), (4, 2), (6, 1)])
def test_attention_equals_transformers_llama_attention(n_head, n_kv):
    torch.manual_seed(0)
    ours = GroupedQueryAttention(8 * n_head, n_head, n_kv).eval()
    theirs = _hf_attention(ours)
    t = 9
    x = _randn(2, t, 8 * n_head)
    cos, sin = rope_cos_sin(8, 32)
    causal = torch.full((t, t), float("-inf")).triu(1)[None, None]  # eager takes additive
    with torch.no_grad():
        want, _ = theirs(x, (cos[None, :t], sin[None, :t]), attention_mask=causal)
        torch.testing.assert_close(ours(x, cos[:t], sin[:t]), want, atol=1e-5, rtol=0)


def test_attention_with_a_cache_of_kv_heads_equals_the_whole_sequence():
    torch.manual_seed(1)
    ours = GroupedQueryAttention(32, 4, 2).eval()
    x = _randn(2, 10, 32)
    cos, sin = rope_cos_sin(8, 16)
    cache = KVCache(1, 2, 2, 16, 8)  # two kv heads of 8: half the keys a 4-head cache holds
    with torch.no_grad():
        whole = ours(x, cos[:10], sin[:10])
        parts = [ours(x[:, :6], cos[:6], sin[:6], cache=cache)]
        cache.advance(6)
        for i in range(6, 8):
            parts.append(ours(x[:, i:i + 1], cos[i:i + 1], sin[i:i + 1], cache=cache))
            cache.advance(1)
        parts.append(ours(x[:, 8:], cos[8:10], sin[8:10], cache=cache))  # two new tokens
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: GroupedQueryAttention(32, 4, 3), ValueError,
     "n_head=4 must be a multiple of n_kv_head=3"),
    (lambda: GroupedQueryAttention(30, 4, 2), ValueError, "not divisible by n_head=4"),
    (lambda: GroupedQueryAttention(32, 4, 0), ValueError, "n_kv_head must be a positive"),
    (lambda: repeat_kv(torch.ones(2, 3, 4), 2), ValueError, "batch, n_kv_head, time"),
    (lambda: repeat_kv(torch.ones(1, 2, 3, 4), 0), ValueError, "n_rep must be a positive"),
])
def test_attention_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_attention_refuses_a_cache_of_all_query_heads():
    attn = GroupedQueryAttention(32, 4, 2)
    cos, sin = rope_cos_sin(8, 8)
    with pytest.raises(ValueError, match="do not fit a cache"):
        attn(torch.ones(1, 3, 32), cos[:3], sin[:3], cache=KVCache(1, 1, 4, 8, 8))
    with pytest.raises(ValueError, match="n_embd"):
        attn(torch.ones(1, 3, 16), cos[:3], sin[:3])
