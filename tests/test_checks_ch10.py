"""Chapter 10 exercise checkers: they pass the solutions and fail the usual mistakes.

The solutions are themselves checked against code no one here wrote: RMSNorm against
``torch.nn.RMSNorm`` and ``transformers``' ``LlamaRMSNorm``; the SwiGLU width against the
published Llama configs; RoPE at positions against ``transformers``' ``LlamaRotaryEmbedding``
and ``apply_rotary_pos_emb``; grouped-query attention against
``scaled_dot_product_attention`` over keys and values repeated by ``transformers``'
``repeat_kv``, and against its own ``enable_gqa=True``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_check_fails as fails
from checker_helpers import assert_check_passes, checker_contract_tests
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch10

CHECKS = {
    "rms_norm": (ch10.check_rms_norm, ch10.rms_norm),
    "swiglu_width": (ch10.check_swiglu_width, ch10.swiglu_width),
    "rope_at": (ch10.check_rope_at, ch10.rope_at),
    "gqa_attention": (ch10.check_gqa_attention, ch10.gqa_attention),
}


# ------------------------------------------------------------------------ the checkers' contract


(test_solution_passes, test_not_implemented_says_so,
 test_passing_the_result_instead_of_the_function_is_a_type_error,
 test_checkers_leave_the_global_random_state_alone) = checker_contract_tests(CHECKS)


def test_a_learner_that_raises_is_reported_with_its_case():
    fails(ch10.check_rms_norm, lambda x, w, eps: x @ torch.ones(3, dtype=x.dtype),
          "✗ rms_norm: raised RuntimeError", "case: tensor(shape=(4, 8)")


# ------------------------------------------------------------------------ solutions vs oracles


def _x(shape, dtype, seed, massive=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if massive:
        x[..., 2] = 1000.0 * (1 + torch.rand(shape[:-1], generator=g))
    w = 0.5 + torch.rand(shape[-1], generator=g)
    return x.to(dtype), w.to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12),
                                        (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("massive", [False, True])
def test_rms_norm_equals_torch_rmsnorm(dtype, tol, massive):
    x, w = _x((3, 5, 64), dtype, 7, massive)
    norm = torch.nn.RMSNorm(64, eps=1e-5, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
        theirs = norm(x)
    ours = ch10.rms_norm(x, w, 1e-5)
    assert ours.dtype == theirs.dtype == dtype
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rms_norm_equals_transformers_llama_rmsnorm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    x, w = _x((2, 7, 48), dtype, 11, massive=True)
    norm = LlamaRMSNorm(48, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
        theirs = norm(x)
    ours = ch10.rms_norm(x, w, 1e-6)
    assert ours.dtype == theirs.dtype == dtype
    assert torch.equal(ours, theirs)  # the same operations in the same order


def test_rms_norm_float16_needs_the_float32_reduction():
    x, w = _x((2, 3, 32), torch.float16, 3, massive=True)
    naive = w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # all in float16
    ours = ch10.rms_norm(x, w, 1e-6)
    assert bool((naive[..., 2] == 0).all()) and bool((ours[..., 2] > 1).all())


# Published widths: LLaMA 1 (Touvron et al. 2023a, Table 2 for d_model; the intermediate_size
# of the Hugging Face conversions), Llama 2 70B (ffn_dim_multiplier 1.3, multiple_of 4096 in
# Meta's params.json), Llama 3 (Dubey et al. 2024, Table 3: FFN dimension).
PUBLISHED = [((4096, 256, 1.0), 11008), ((5120, 256, 1.0), 13824), ((6656, 256, 1.0), 17920),
             ((8192, 256, 1.0), 22016), ((8192, 4096, 1.3), 28672), ((4096, 1024, 1.3), 14336),
             ((16384, 4096, 1.2), 53248)]


@pytest.mark.parametrize("args, width", PUBLISHED)
def test_swiglu_width_is_the_published_one(args, width):
    got = ch10.swiglu_width(*args)
    assert got == width and type(got) is int


@settings(deadline=None, max_examples=200)
@given(st.integers(1, 20000), st.sampled_from([1, 2, 8, 64, 256, 1024]))
def test_swiglu_width_at_equal_parameters(d, multiple):
    width = ch10.swiglu_width(d, multiple)
    assert width % multiple == 0
    h = 8 * d // 3  # int(2 · 4d / 3) without floats
    assert h <= width < h + multiple
    # three matrices of d × width hold the GELU MLP's 8d² weights, give or take the rounding
    assert 3 * d * h <= 8 * d * d < 3 * d * (h + 1)


@settings(deadline=None, max_examples=30)
@given(st.sampled_from([2, 8, 16, 64, 128]), st.integers(0, 1500), st.integers(1, 5),
       st.sampled_from([100.0, 10000.0, 500000.0]), st.integers(0, 10**6))
def test_rope_at_equals_transformers(hd, start, t, base, seed):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    config = LlamaConfig(hidden_size=2 * hd, num_attention_heads=2, head_dim=hd,
                         max_position_embeddings=4096)
    config.rope_parameters = {"rope_type": "default", "rope_theta": base}
    rotary = LlamaRotaryEmbedding(config)
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 2, t, hd, generator=g), torch.randn(2, 2, t, hd, generator=g)
    positions = torch.arange(start, start + t)  # (T,)
    assert torch.allclose(rotary.inv_freq.double(),
                          base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    cos, sin = rotary(q, positions[None])  # (1, T, hd): transformers' angles, in float32
    q_theirs, k_theirs = apply_rotary_pos_emb(q, k, cos, sin)
    # float32 angles near position 1500 are off by ~1e-4 rad: the checker's tolerance, 1e-3
    torch.testing.assert_close(ch10.rope_at(q, positions, base), q_theirs, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(ch10.rope_at(k, positions, base), k_theirs, atol=1e-3, rtol=1e-3)


def test_rope_at_decoding_one_token_equals_the_whole_sequence():
    x = torch.randn(2, 3, 9, 16, dtype=torch.float64)
    whole = ch10.rope_at(x, torch.arange(9))
    for t in range(9):
        one = ch10.rope_at(x[..., t:t + 1, :], torch.tensor([t]))
        torch.testing.assert_close(one, whole[..., t:t + 1, :], atol=1e-12, rtol=1e-12)


def test_rope_at_scores_depend_only_on_the_offset():
    q, k = torch.randn(4, 32, dtype=torch.float64), torch.randn(4, 32, dtype=torch.float64)
    for shift in (0, 5, 300):
        qm = ch10.rope_at(q, torch.tensor([10, 11, 12, 13]) + shift)
        kn = ch10.rope_at(k, torch.tensor([3, 11, 2, 0]) + shift)
        torch.testing.assert_close(
            (qm * kn).sum(-1),
            (ch10.rope_at(q, torch.tensor([10, 11, 12, 13])) * ch10.rope_at(
                k, torch.tensor([3, 11, 2, 0]))).sum(-1), atol=1e-9, rtol=1e-9)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 3), st.sampled_from([(1, 1), (2, 1), (4, 2), (6, 3), (8, 2), (4, 4)]),
       st.integers(1, 9), st.sampled_from([2, 8, 16]), st.integers(0, 10**6))
def test_gqa_equals_sdpa_on_repeat_kv(b, heads, t, hd, seed):
    from transformers.models.llama.modeling_llama import repeat_kv

    h, h_kv = heads
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, hd, generator=g, dtype=torch.float64)
    k = torch.randn(b, h_kv, t, hd, generator=g, dtype=torch.float64)
    v = torch.randn(b, h_kv, t, hd, generator=g, dtype=torch.float64)
    ours = ch10.gqa_attention(q, k, v)
    theirs = F.scaled_dot_product_attention(q, repeat_kv(k, h // h_kv),
                                            repeat_kv(v, h // h_kv), is_causal=True)
    native = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert ours.shape == (b, h, t, hd) and ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(ours, native, atol=1e-12, rtol=1e-12)


def test_gqa_keeps_float32():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    assert ch10.gqa_attention(q, k, k).dtype == torch.float32


# ------------------------------------------------------------------------ mistakes: RMSNorm


def _wide(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def rms_layernorm(x, w, eps):  # centres, as LayerNorm does
    xf = _wide(x)
    xf = xf - xf.mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rms_var(x, w, eps):
    xf = _wide(x)
    return w * (xf / torch.sqrt(xf.var(-1, keepdim=True) + eps)).to(x.dtype)


def rms_std(x, w, eps):
    xf = _wide(x)
    return w * (xf / (xf.std(-1, unbiased=False, keepdim=True) + eps)).to(x.dtype)


def rms_sum(x, w, eps):
    xf = _wide(x)
    return w * (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def rms_eps_outside(x, w, eps):
    xf = _wide(x)
    return w * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype)


def rms_no_eps(x, w, eps):
    xf = _wide(x)
    return w * (xf / xf.pow(2).mean(-1, keepdim=True).sqrt()).to(x.dtype)


def rms_no_weight(x, w, eps):
    xf = _wide(x)
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rms_dim0(x, w, eps):
    xf = _wide(x)
    return w * (xf * torch.rsqrt(xf.pow(2).mean(0, keepdim=True) + eps)).to(x.dtype)


def rms_all(x, w, eps):
    xf = _wide(x)
    return w * (xf * torch.rsqrt(xf.pow(2).mean() + eps)).to(x.dtype)


def rms_no_upcast(x, w, eps):  # float16 squares overflow
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rms_float32_out(x, w, eps):  # upcasts, never casts back
    xf = _wide(x)
    return w.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)


def rms_float32_always(x, w, eps):  # Llama's literal x.float(): float64 goes down
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rms_float32_result_for_float64(x, w, eps):
    return ch10.rms_norm(x, w, eps).float() if x.dtype == torch.float64 else ch10.rms_norm(
        x, w, eps)


@pytest.mark.parametrize("wrong, fragments", [
    (rms_layernorm, ("the mean is subtracted: that is LayerNorm",)),
    (rms_var, ("standard deviation",)),
    (rms_std, ("standard deviation",)),
    (rms_sum, ("a sum of squares instead of their mean",)),
    (rms_eps_outside, ("ε is added after the square root",)),
    (rms_no_eps, ("got NaN", "ε is missing")),
    (rms_no_weight, ("the weight γ is missing",)),
    (rms_dim0, ("over the wrong axis",)),
    (rms_all, ("one mean over the whole tensor",)),
    (rms_no_upcast, ("float16, x² overflows", "case 5 differs")),
    (rms_float32_out, ("dtype torch.float32 != expected torch.float16", "cast the normalised "
                       "x back")),
    (rms_float32_always, ("float32's precision only", "case 4 differs")),
    (rms_float32_result_for_float64, ("dtype torch.float32 != expected torch.float64",
                                      "float64 in, float64 out")),
])
def test_rms_mistakes_fail(wrong, fragments):
    fails(ch10.check_rms_norm, wrong, "✗ rms_norm", "hint", *fragments)


@pytest.mark.parametrize("right", [
    lambda x, w, eps: F.rms_norm(x, (x.shape[-1],), w, eps),
    lambda x, w, eps: (_wide(x) / torch.sqrt(_wide(x).pow(2).mean(-1, keepdim=True) + eps)
                       * w.to(_wide(x).dtype)).to(x.dtype),  # the weight before the cast
    lambda x, w, eps: w * (x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True)
                                                    + eps)).to(x.dtype),  # all in float64
])
def test_rms_right_versions_pass(right):
    assert_check_passes(ch10.check_rms_norm, right, "✓ rms_norm: ")


def test_rms_a_learner_that_changes_x_in_place_is_still_judged_on_its_answer():
    def in_place(x, w, eps):
        y = ch10.rms_norm(x, w, eps)
        x.zero_()
        return y

    assert_check_passes(ch10.check_rms_norm, in_place, "✓ rms_norm: ")


# ------------------------------------------------------------------------ mistakes: width


def _round_up(h, m):
    return -(-h // m) * m


@pytest.mark.parametrize("wrong, fragments", [
    (lambda d, m, x: float(ch10.swiglu_width(d, m, x)), ("expected an int, got float",
                                                         "a width is an int")),
    (lambda d, m, x: 8 * d / 3 * x, ("expected an int, got float", "a width is an int")),
    (lambda d, m, x: _round_up(int(x * 4 * d), m), ("width of the 4·d GELU MLP",)),
    (lambda d, m, x: _round_up(int(x * int(3 * 4 * d / 2)), m), ("3/2 instead of 2/3",)),
    (lambda d, m, x: _round_up(int(x * int(2 * d / 3)), m), ("2/3 of d_model",)),
    (lambda d, m, x: int(x * int(8 * d / 3)), ("not a multiple of multiple_of",)),
    (lambda d, m, x: m * round(int(x * (8 * d // 3)) / m), ("nearest multiple",)),
    (lambda d, m, x: m * (int(x * (8 * d // 3)) // m), ("rounded down",)),
    (lambda d, m, x: m * (int(x * (8 * d // 3)) // m + 1), ("one multiple too many",)),
    (lambda d, m, x: _round_up(8 * d // 3, m), ("ffn_dim_multiplier is ignored",)),
    (lambda d, m, x: int(x * _round_up(8 * d // 3, m)), ("applied after rounding",)),
    (lambda d, m, x: _round_up(int(x * math.ceil(8 * d / 3)), m), ("rounded up at first",)),
    (lambda d, m, x: _round_up(int(x * (8 * d // 3)), m) + 1, ("h = int(2 * 4 * d_model / 3)",)),
])
def test_width_mistakes_fail(wrong, fragments):
    fails(ch10.check_swiglu_width, wrong, "✗ swiglu_width: case", "hint", *fragments)


@pytest.mark.parametrize("right", [
    lambda d, m, x: _round_up(int(x * (8 * d // 3)), m),  # integer arithmetic throughout
    lambda d, m, x: math.ceil(int(x * int(2 * 4 * d / 3)) / m) * m,
])
def test_width_right_versions_pass(right):
    assert_check_passes(ch10.check_swiglu_width, right, "✓ swiglu_width: ")


def test_width_a_numpy_or_tensor_int_passes():
    assert_check_passes(ch10.check_swiglu_width, lambda *a: torch.tensor(ch10.swiglu_width(*a)),
                        "✓ swiglu_width: ")


# ------------------------------------------------------------------------ mistakes: RoPE


def _rope_with(x, angle, *, sign=1.0):
    """Rotate-half RoPE with the table ``angle`` (T, hd/2)."""
    angle = torch.cat([angle, angle], dim=-1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * angle.cos().to(x.dtype) + torch.cat([-x2, x1], -1) * sign * angle.sin().to(
        x.dtype)


def _theta(hd, base, power=2.0):
    return base ** (-power * torch.arange(hd // 2, dtype=torch.float32) / hd)


def rope_from_zero(x, pos, base=10000.0):
    return _rope_with(x, torch.arange(len(pos))[:, None] * _theta(x.shape[-1], base))


def rope_plus_one(x, pos, base=10000.0):
    return _rope_with(x, (pos + 1)[:, None] * _theta(x.shape[-1], base))


def rope_start_only(x, pos, base=10000.0):
    p = int(pos[0]) + torch.arange(len(pos))
    return _rope_with(x, p[:, None] * _theta(x.shape[-1], base))


def rope_backwards(x, pos, base=10000.0):
    return _rope_with(x, pos[:, None] * _theta(x.shape[-1], base), sign=-1.0)


def rope_rotate_half_swapped(x, pos, base=10000.0):  # cat(x2, −x1): the same as backwards
    a = torch.cat([pos[:, None] * _theta(x.shape[-1], base)] * 2, -1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * a.cos() + torch.cat([x2, -x1], -1) * a.sin()


def rope_interleaved(x, pos, base=10000.0):
    a = pos[:, None] * _theta(x.shape[-1], base)
    c, s = a.cos().to(x.dtype), a.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], -1).flatten(-2)


def rope_frequencies_interleaved(x, pos, base=10000.0):
    a = (pos[:, None] * _theta(x.shape[-1], base)).repeat_interleave(2, -1)
    x1, x2 = x.chunk(2, dim=-1)
    return x * a.cos().to(x.dtype) + torch.cat([-x2, x1], -1) * a.sin().to(x.dtype)


def rope_exponent_i(x, pos, base=10000.0):
    return _rope_with(x, pos[:, None] * _theta(x.shape[-1], base, power=1.0))


def rope_fixed_base(x, pos, base=10000.0):
    return _rope_with(x, pos[:, None] * _theta(x.shape[-1], 10000.0))


def rope_float32_tables(x, pos, base=10000.0):  # a float64 x comes back float32
    a = torch.cat([pos[:, None] * _theta(x.shape[-1], base)] * 2, -1)
    x1, x2 = x.chunk(2, dim=-1)
    return x.float() * a.cos() + torch.cat([-x2, x1], -1).float() * a.sin()


@pytest.mark.parametrize("wrong, fragments", [
    (rope_from_zero, ("as if at positions 0, 1, …, T−1", "case 1 differs")),
    (rope_plus_one, ("positions one too far",)),
    (rope_start_only, ("not always consecutive", "case 5 differs")),
    (rope_backwards, ("turn backwards",)),
    (rope_rotate_half_swapped, ("turn backwards",)),
    (rope_interleaved, ("interleaved layout",)),
    (rope_frequencies_interleaved, ("repeated pairwise",)),
    (rope_exponent_i, ("the exponent is −2i/hd",)),
    (rope_fixed_base, ("the base is fixed at 10000", "case 4 differs")),
    (rope_float32_tables, ("dtype torch.float32 != expected torch.float64", "cos/sin tables")),
])
def test_rope_mistakes_fail(wrong, fragments):
    fails(ch10.check_rope_at, wrong, "✗ rope_at: case", "hint", *fragments)


def rope_transformers(x, pos, base=10000.0):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    hd = x.shape[-1]
    config = LlamaConfig(hidden_size=2 * hd, num_attention_heads=2, head_dim=hd)
    config.rope_parameters = {"rope_type": "default", "rope_theta": base}
    cos, sin = LlamaRotaryEmbedding(config)(x, pos[None])  # (1, T, hd), float32 angles
    cos, sin = (cos[0], sin[0]) if x.dim() == 3 else (cos, sin)
    return apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=0 if x.dim() == 3 else 1)[0]


def rope_library(x, pos, base=10000.0):
    from llmcourse.nn.positional import apply_rope, rope_cos_sin

    cos, sin = rope_cos_sin(x.shape[-1], int(pos.max()) + 1, base)  # float32 tables
    return apply_rope(x, cos, sin, pos)


def rope_complex(x, pos, base=10000.0):  # (a + ib) · e^{iθp}, pairs (i, i + hd/2)
    x1, x2 = x.double().chunk(2, dim=-1)
    a = pos.double()[:, None] * base ** (-torch.arange(0, x.shape[-1], 2).double() / x.shape[-1])
    z = torch.complex(x1, x2) * torch.polar(torch.ones_like(a), a)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


@pytest.mark.parametrize("right", [rope_transformers, rope_library, rope_complex])
def test_rope_right_versions_pass(right):
    assert_check_passes(ch10.check_rope_at, right, "✓ rope_at: ")


# ------------------------------------------------------------------------ mistakes: GQA


def _attend(q, k, v, *, mask="causal", scale=None, dim=-1):
    t, hd = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(-2, -1) / (math.sqrt(hd) if scale is None else scale)
    ones = torch.ones(t, t, dtype=torch.bool)
    hide = {"causal": ones.triu(1), "none": ~ones, "strict": ones.triu(0),
            "past": ones.tril(-1)}[mask]
    return s.masked_fill(hide, float("-inf")).softmax(dim) @ v


def _rep(k, q):
    return k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)


def gqa_repeat(q, k, v):  # kv head h % H_kv
    g = q.shape[1] // k.shape[1]
    return _attend(q, k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1))


def gqa_grouped_wrong_view(q, k, v):  # q viewed as (B, g, H_kv, T, hd): the same mistake
    b, h, t, hd = q.shape
    h_kv = k.shape[1]
    qg = q.reshape(b, h // h_kv, h_kv, t, hd)
    return _attend(qg, k.unsqueeze(1), v.unsqueeze(1)).reshape(b, h, t, hd)


def gqa_no_mask(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), mask="none")


def gqa_strict_mask(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), mask="strict")


def gqa_past_mask(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), mask="past")


def gqa_no_scale(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), scale=1.0)


def gqa_scale_hd(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), scale=float(q.shape[-1]))


def gqa_scale_width(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), scale=math.sqrt(q.shape[1] * q.shape[-1]))


def gqa_softmax_queries(q, k, v):
    return _attend(q, _rep(k, q), _rep(v, q), dim=-2)


def gqa_groups_not_reshaped(q, k, v):
    b, h, t, hd = q.shape
    h_kv = k.shape[1]
    return _attend(q.reshape(b, h_kv, h // h_kv, t, hd), k.unsqueeze(2), v.unsqueeze(2))


def gqa_float32(q, k, v):
    return ch10.gqa_attention(q.float(), k.float(), v.float())


@pytest.mark.parametrize("wrong, fragments", [
    (gqa_repeat, ("that is .repeat's order", "case 2 differs")),
    (gqa_grouped_wrong_view, ("that is .repeat's order",)),
    (gqa_no_mask, ("no causal mask",)),
    (gqa_strict_mask, ("got NaN", "the diagonal is masked too")),
    (gqa_past_mask, ("the past is masked instead of the future",)),
    (gqa_no_scale, ("not scaled",)),
    (gqa_scale_hd, ("divided by hd",)),
    (gqa_scale_width, ("√(H·hd)",)),
    (gqa_softmax_queries, ("softmax runs over the queries",)),
    (gqa_groups_not_reshaped, ("shape (1, 1, 2, 3, 4) != expected (1, 2, 3, 4)",
                               "reshape the output back")),
    (gqa_float32, ("dtype torch.float32 != expected torch.float64", "float64 in, float64 out")),
])
def test_gqa_mistakes_fail(wrong, fragments):
    fails(ch10.check_gqa_attention, wrong, "✗ gqa_attention: case", "hint", *fragments)


def gqa_transformers_repeat_kv(q, k, v):
    from transformers.models.llama.modeling_llama import repeat_kv

    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, g), repeat_kv(v, g), is_causal=True)


@pytest.mark.parametrize("right", [
    gqa_transformers_repeat_kv,
    lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
    lambda q, k, v: _attend(q, _rep(k, q), _rep(v, q)),
])
def test_gqa_right_versions_pass(right):
    assert_check_passes(ch10.check_gqa_attention, right, "✓ gqa_attention: ")
