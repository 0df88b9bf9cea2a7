"""Chapter 09 exercise checkers: they pass the solutions and fail the usual mistakes.

The solutions are themselves checked against code no one here wrote: the int4 codes against
torch's own group-wise quantizer (``quantized_decomposed.quantize_per_channel_group``) given
the same scales, the scales against torch's ``PerChannelMinMaxObserver`` run over the groups,
the longest context against the bytes of the course's ``KVCache`` tensors (allocated on the
meta device), the training FLOPs against ``FlopCounterMode`` over a forward and backward pass
of ``transformers``' ``LlamaForCausalLM`` with grouped-query attention.
"""

from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_check_fails as fails
from checker_helpers import assert_check_passes as passes
from checker_helpers import checker_contract_tests
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch09
from llmcourse.models import sizing
from llmcourse.nn.kv_cache import KVCache

CHECKS = {
    "int4_group_quantize": (ch09.check_int4_group_quantize, ch09.int4_group_quantize),
    "max_context": (ch09.check_max_context, ch09.max_context),
    "training_flops": (ch09.check_training_flops, ch09.training_flops),
}


# ------------------------------------------------------------------------ the checkers' contract


(test_solution_passes, test_not_implemented_says_so,
 test_passing_the_result_instead_of_the_function_is_a_type_error,
 test_checkers_leave_the_global_random_state_alone) = checker_contract_tests(CHECKS)


# ------------------------------------------------------------------------ solutions vs oracles


def _torch_group_codes(w, scale, group_size):
    """torch's own group-wise quantizer, given the scales: round(w · (1/s)), clamped."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers quantized_decomposed

    return torch.ops.quantized_decomposed.quantize_per_channel_group(
        w, scale, torch.zeros_like(scale), -7, 7, torch.int8, group_size)


def _equal_but_ties(q, theirs, w, scale, group_size, tolerance):
    """Equal codes, except one apart where w / s is within ``tolerance`` of the half-step
    between them (torch multiplies by 1/s where the reference divides)."""
    out, inp = w.shape
    exact = (w.double().reshape(out, -1, group_size) / scale.double()[..., None]).reshape(out, inp)
    differ = q != theirs
    mid = (q.double() + theirs.double()) / 2
    tie = ((q.long() - theirs.long()).abs() == 1) & ((exact - mid).abs() <= tolerance)
    return bool((~differ | tie).all())


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 9), st.integers(1, 6), st.sampled_from([2, 4, 8, 32]),
       st.floats(1e-3, 1e3), st.integers(0, 10**6), st.sampled_from(["float32", "bfloat16"]))
def test_int4_codes_equal_torch_group_quantizer(out, n_groups, group_size, magnitude, seed,
                                                dtype):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n_groups * group_size, generator=g, dtype=torch.float64) * magnitude
    w[seed % out, : group_size * (seed % 2)] = 0.0  # an all-zero group, every other example
    w = w.to(getattr(torch, dtype))  # (out, in)
    q, scale = ch09.int4_group_quantize(w, group_size)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.shape == (out, n_groups) and scale.dtype == w.dtype
    theirs = _torch_group_codes(w, scale, group_size)
    assert _equal_but_ties(q, theirs, w, scale, group_size, ch09._tie_tolerance(w.dtype))
    # the round trip: within half a step (up to the dtype's rounding of w / s), codes −7..7,
    # and each nonzero group's largest weight on ±7
    s = scale.double().repeat_interleave(group_size, dim=1)  # (out, in)
    error = (q.double() * s - w.double()).abs()
    assert bool((error <= s * (0.5 + ch09._tie_tolerance(w.dtype))).all())
    assert int(q.abs().max()) <= 7
    nonzero = w.reshape(out, n_groups, group_size).abs().amax(dim=2) > 0  # (out, G)
    top = q.reshape(out, n_groups, group_size).abs().amax(dim=2)  # (out, G)
    assert bool((top[nonzero] == 7).all()) and bool((scale[~nonzero] == 1).all())


def test_int4_scales_equal_torch_symmetric_observer_over_the_groups():
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    gen = torch.Generator().manual_seed(1)
    for out, inp, group_size in ((4, 16, 4), (8, 96, 32), (3, 128, 128), (16, 64, 2)):
        w = torch.randn(out, inp, generator=gen) * torch.rand(out, 1, generator=gen)  # (out, in)
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, quant_min=-7,
                                            quant_max=7, qscheme=torch.per_channel_symmetric)
        observer(w.reshape(-1, group_size))  # one "channel" per group
        theirs, zero_points = observer.calculate_qparams()  # (out · G,)
        scale = ch09.int4_group_quantize(w, group_size)[1]
        assert torch.equal(zero_points, torch.zeros_like(zero_points))
        torch.testing.assert_close(scale, theirs.reshape(out, -1), rtol=1e-6, atol=0)


def test_int4_groups_beat_one_scale_per_row_on_a_row_with_an_outlier():
    # why groups: one large weight coarsens the step of its group only, not of its whole row
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(8, 512, generator=gen)  # (8, 512)
    w[3, 100] = 40.0
    error = {}
    for group_size in (512, 64):  # one group per row, then 8 groups per row
        q, scale = ch09.int4_group_quantize(w, group_size)
        w_hat = q.float() * scale.repeat_interleave(group_size, dim=1)  # (8, 512)
        error[group_size] = (w_hat - w)[3].pow(2).mean().item()
    # the outlier's group loses its other weights to code 0 either way; the other 7 groups
    # of the row keep a fine step
    assert error[64] < error[512] / 5


def test_int4_keeps_float64_and_bfloat16():
    for dtype in (torch.float64, torch.bfloat16):
        q, scale = ch09.int4_group_quantize(torch.randn(3, 8).to(dtype), 4)
        assert scale.dtype == dtype and q.dtype == torch.int8 and scale.shape == (3, 2)


_BYTES = {4: torch.float32, 2: torch.bfloat16, 1: torch.int8}


def _cache_bytes(n_layer, n_kv, head_dim, nbytes, seq, batch):
    """The bytes of the course's cache of ``seq`` tokens, allocated on the meta device."""
    cache = KVCache(n_layer, batch, n_kv, seq, head_dim, dtype=_BYTES[nbytes], device="meta")
    return cache.k.nbytes + cache.v.nbytes


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 80), st.integers(1, 8), st.integers(1, 8), st.sampled_from([32, 64, 128]),
       st.sampled_from([4, 2, 1]), st.integers(1, 10**11), st.integers(1, 64))
def test_max_context_is_the_longest_the_course_cache_fits(n_layer, n_kv, group, head_dim,
                                                          nbytes, budget, batch):
    t = ch09.max_context(n_layer, n_kv * group, n_kv, head_dim, nbytes, budget, batch)
    assert type(t) is int and t >= 0
    if t > 0:
        assert _cache_bytes(n_layer, n_kv, head_dim, nbytes, t, batch) <= budget
        assert sizing.kv_cache_bytes(n_layer, n_kv, head_dim, t, batch, nbytes) <= budget
    assert _cache_bytes(n_layer, n_kv, head_dim, nbytes, t + 1, batch) > budget


def test_max_context_grows_by_the_gqa_factor():
    # Llama-2 70B's 8 key/value heads instead of one per query head: 8 times the context
    s = sizing.PUBLISHED["llama2-70b"]
    budget = 1_000 * sizing.kv_cache_bytes(s.n_layer, s.n_head, s.head_dim, 1, 4, 2)
    full = ch09.max_context(s.n_layer, s.n_head, s.n_head, s.head_dim, 2, budget, 4)
    grouped = ch09.max_context(s.n_layer, s.n_head, s.kv_heads, s.head_dim, 2, budget, 4)
    assert (full, grouped) == (1_000, 1_000 * s.n_head // s.kv_heads)


def test_training_flops_equal_sizing_for_llama_shapes():
    for name in ("llama2-7b", "llama2-70b"):
        s = sizing.PUBLISHED[name]
        ours = ch09.training_flops(s.n_layer, s.d_model, s.n_head, s.kv_heads, s.ff,
                                   s.vocab_size, s.context, 10**9)
        assert ours == sizing.training_flops(s, 10**9)


def test_training_flops_equal_the_counter_on_transformers_llama():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    n_layer, d, n_head, n_kv, d_ff, v, t, b = 2, 32, 4, 2, 72, 50, 12, 3
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=v, hidden_size=d, intermediate_size=d_ff, num_attention_heads=n_head,
        num_key_value_heads=n_kv, num_hidden_layers=n_layer, max_position_embeddings=t,
        tie_word_embeddings=False))
    x = torch.randint(v, (b, t))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, labels=x).loss.backward()
    # The counter sees the whole T × T square of scores (12·L·T·d per token for training);
    # the convention counts the causal half (6·L·T·d): add the other half back.
    other_half = 6 * n_layer * t * d * (b * t)
    assert counter.get_total_flops() == ch09.training_flops(
        n_layer, d, n_head, n_kv, d_ff, v, t, b * t) + other_half


# ------------------------------------------------------------------------ mistakes: int4


def _scale(amax, divisor=7):
    return torch.where(amax > 0, amax / divisor, torch.ones_like(amax))


def _codes(groups, scale, lo=-7, hi=7):  # groups (out, G, g), scale (out, G)
    return torch.round(groups / scale[..., None]).clamp(lo, hi).to(torch.int8)


def _grouped(w, g):
    return w.reshape(w.shape[0], -1, g)  # (out, G, g)


def q_per_row(w, g):
    scale = _scale(w.abs().amax(dim=1, keepdim=True))  # (out, 1)
    q = torch.round(w / scale).clamp(-7, 7).to(torch.int8)
    return q, scale.expand(-1, w.shape[1] // g).clone()  # (out, G), equal along each row


def q_per_row_column(w, g):
    scale = _scale(w.abs().amax(dim=1, keepdim=True))  # (out, 1)
    return torch.round(w / scale).clamp(-7, 7).to(torch.int8), scale


def q_strided(w, g):
    out, inp = w.shape
    groups = w.reshape(out, g, inp // g)  # every (in / g)-th weight together
    scale = _scale(groups.abs().amax(dim=1))  # (out, G)
    q = torch.round(groups / scale[:, None, :]).clamp(-7, 7).to(torch.int8)
    return q.reshape(out, inp), scale


def q_down_columns(w, g):
    out, inp = w.shape
    groups = w.reshape(out // g, g, inp)  # g consecutive rows of one column
    scale = _scale(groups.abs().amax(dim=1))  # (out / g, in)
    q = torch.round(groups / scale[:, None, :]).clamp(-7, 7).to(torch.int8)
    return q.reshape(out, inp), scale


def q_transposed(w, g):
    q, scale = ch09.int4_group_quantize(w.T, g)  # groups along the columns of w
    return q.T.contiguous(), scale


def q_divide(divisor, lo):
    def wrong(w, g):
        groups = _grouped(w, g)
        scale = _scale(groups.abs().amax(dim=2), divisor)
        return _codes(groups, scale, lo=lo).reshape(w.shape), scale
    wrong.__name__ = f"q_divide_{divisor}_from_{lo}"
    return wrong


def q_min_max(w, g):  # codes −8..7 with an implicit zero point: another scheme
    groups = _grouped(w, g)
    lo, hi = groups.amin(dim=2, keepdim=True), groups.amax(dim=2, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-12)  # (out, G, 1)
    q = (torch.round((groups - lo) / scale) - 8).clamp(-8, 7).to(torch.int8)
    return q.reshape(w.shape), scale[..., 0]


def q_max_not_abs(w, g):
    groups = _grouped(w, g)
    scale = _scale(groups.amax(dim=2).clamp(min=0))
    return _codes(groups, scale).reshape(w.shape), scale


def q_floor(w, g):
    groups = _grouped(w, g)
    scale = _scale(groups.abs().amax(dim=2))
    return (groups / scale[..., None]).floor().clamp(-7, 7).to(torch.int8).reshape(w.shape), scale


def q_cast_without_rounding(w, g):
    groups = _grouped(w, g)
    scale = _scale(groups.abs().amax(dim=2))
    return (groups / scale[..., None]).to(torch.int8).reshape(w.shape), scale


def q_uint8(w, g):
    q, scale = ch09.int4_group_quantize(w, g)
    return q.to(torch.uint8), scale


def q_float_codes(w, g):
    groups = _grouped(w, g)
    scale = _scale(groups.abs().amax(dim=2))
    return torch.round(groups / scale[..., None]).clamp(-7, 7).reshape(w.shape), scale


def q_long_codes(w, g):
    q, scale = ch09.int4_group_quantize(w, g)
    return q.long(), scale


def q_grouped_shape(w, g):
    groups = _grouped(w, g)
    scale = _scale(groups.abs().amax(dim=2))
    return _codes(groups, scale), scale  # (out, G, g) never reshaped back


def q_scale_per_weight(w, g):
    q, scale = ch09.int4_group_quantize(w, g)
    return q, scale.repeat_interleave(g, dim=1)  # (out, in)


def q_scale_flat(w, g):
    q, scale = ch09.int4_group_quantize(w, g)
    return q, scale.flatten()  # (out · G,)


def q_scale_keepdim(w, g):
    groups = _grouped(w, g)
    amax = groups.abs().amax(dim=2, keepdim=True)  # (out, G, 1)
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
    q = torch.round(groups / scale).clamp(-7, 7).to(torch.int8)
    return q.reshape(w.shape), scale


def q_zero_scale(w, g):
    groups = _grouped(w, g)
    scale = groups.abs().amax(dim=2) / 7  # 0 on an all-zero group
    q = torch.round(groups / scale[..., None]).nan_to_num(0.0).clamp(-7, 7).to(torch.int8)
    return q.reshape(w.shape), scale  # the codes rescued, the scale still 0


def q_nan_scale(w, g):
    q, scale = ch09.int4_group_quantize(w, g)
    zero = (_grouped(w, g) == 0).all(dim=2)  # (out, G)
    return q, torch.where(zero, torch.full_like(scale, float("nan")), scale)


def q_scale_float32(w, g):
    q, scale = ch09.int4_group_quantize(w.float(), g)  # everything in float32
    return q, scale


def q_swapped(w, g):
    q, scale = ch09.int4_group_quantize(w, g)
    return scale, q


@pytest.mark.parametrize("wrong, fragments", [
    (q_per_row, ("one scale per row", "per-channel")),
    (q_per_row_column, ("one scale per row",)),
    (q_strided, ("not consecutive weights",)),
    (q_down_columns, ("run down the columns",)),
    (q_transposed, ("run down the columns",)),
    (q_divide(8, -8), ("divides by 8",)),
    (q_divide(8, -7), ("divides by 8",)),
    (q_divide(16, -8), ("divides by 8 (or 16)",)),
    (q_divide(15, -7), ("divides by 15",)),
    (q_divide(15, -8), ("divides by 15",)),
    (q_min_max, ("asymmetric (min-max) codes",)),
    (q_max_not_abs, ("max(group), not max(|group|)",)),
    (q_floor, ("rounded down (floor)",)),
    (q_cast_without_rounding, ("truncated toward 0",)),
    (q_uint8, ("uint8", "wrap around")),
    (q_float_codes, ("still a float tensor",)),
    (q_long_codes, ("should be torch.int8",)),
    (q_grouped_shape, ("reshape it back to (out, in)",)),
    (q_scale_per_weight, ("one number per weight",)),
    (q_scale_flat, ("flattened",)),
    (q_scale_keepdim, ("drop the last dim",)),
    (q_zero_scale, ("all-zero group got scale 0",)),
    (q_nan_scale, ("all-zero group got scale 0 (or NaN)",)),
    (q_scale_float32, ("dtype torch.float32 != expected torch.float64", "not in w's dtype")),
    (q_swapped, ("the pair is swapped",)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_int4_mistakes_fail(wrong, fragments):
    fails(ch09.check_int4_group_quantize, wrong, "✗ int4_group_quantize", "hint", *fragments)


def test_int4_float32_scale_for_bfloat16_weights_fails():
    def wrong(w, g):
        q, scale = ch09.int4_group_quantize(w, g)
        return q, scale.float() if w.dtype == torch.bfloat16 else scale

    fails(ch09.check_int4_group_quantize, wrong, "dtype torch.float32 != expected "
          "torch.bfloat16", "not in w's dtype")


def _passes(fn):
    passes(ch09.check_int4_group_quantize, fn, "✓ int4_group_quantize: 10 case(s)")


def test_int4_flattening_into_rows_of_one_group_passes():
    def flat(w, group_size):
        rows = w.reshape(-1, group_size)  # (out · G, g): row-major, so groups stay in order
        amax = rows.abs().amax(dim=1)  # (out · G,)
        scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
        q = torch.round(rows / scale[:, None]).clamp(-7, 7).to(torch.int8)
        return q.reshape(w.shape), scale.reshape(w.shape[0], -1)

    _passes(flat)


def test_int4_a_loop_over_rows_and_groups_passes():
    def loops(w, group_size):
        out, inp = w.shape
        q = torch.zeros(out, inp, dtype=torch.int8)
        scale = torch.zeros(out, inp // group_size, dtype=w.dtype)
        for r in range(out):
            for k in range(inp // group_size):
                part = w[r, k * group_size:(k + 1) * group_size]
                m = part.abs().max()
                s = m / 7 if m > 0 else torch.ones((), dtype=w.dtype)
                scale[r, k] = s
                q[r, k * group_size:(k + 1) * group_size] = torch.round(part / s).clamp(-7, 7)
        return q, scale

    _passes(loops)


def test_int4_multiplying_by_the_inverse_in_float32_passes():
    def inverse(w, group_size):  # bf16 weights quantized through float32, 1/s multiplied
        groups = _grouped(w.float(), group_size)  # (out, G, g) float32
        amax = groups.abs().amax(dim=2)
        scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax)).to(w.dtype)
        q = (groups * (1 / scale.float())[..., None]).round().clamp(-7, 7).to(torch.int8)
        return q.reshape(w.shape), scale

    _passes(inverse)


def test_int4_any_positive_scale_on_a_zero_group_passes():
    def clamped(w, group_size):  # the usual guard: a tiny scale instead of 0
        groups = _grouped(w, group_size)
        scale = groups.abs().amax(dim=2).clamp(min=1e-8) / 7
        return _codes(groups, scale).reshape(w.shape), scale

    _passes(clamped)


def test_int4_a_learner_that_changes_w_in_place_is_still_judged_on_its_answer():
    def in_place(w, group_size):
        q, scale = ch09.int4_group_quantize(w, group_size)
        w.zero_()
        return q, scale

    _passes(in_place)


def test_int4_ties_tolerance_does_not_hide_floor_in_bfloat16():
    # a wrong rounding in bf16 is not excused as a tie: every case is bf16 here
    def floor_in_bf16(w, group_size):
        q, scale = q_floor(w, group_size)
        return q, scale

    gen = torch.Generator().manual_seed(3)
    w = torch.randn(8, 64, generator=gen).bfloat16()  # (8, 64)
    judged = ch09._int4_judged(floor_in_bf16)(w, 32)
    assert not torch.equal(judged[0], ch09.int4_group_quantize(w, 32)[0])


# ------------------------------------------------------------------------ mistakes: context


def _per_token(n_layer, n_kv, hd, nbytes, b):
    return 2 * n_layer * n_kv * hd * b * nbytes


def ctx_ceil(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return -(-budget // _per_token(n_layer, n_kv, hd, nbytes, b))


def ctx_round(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return round(budget / _per_token(n_layer, n_kv, hd, nbytes, b))


def ctx_float(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return budget / _per_token(n_layer, n_kv, hd, nbytes, b)


def ctx_float_floor(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return float(budget // _per_token(n_layer, n_kv, hd, nbytes, b))


def ctx_n_head(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return budget // _per_token(n_layer, n_head, hd, nbytes, b)


def ctx_no_two(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return budget // (n_layer * n_kv * hd * b * nbytes)


def ctx_no_batch(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return budget // _per_token(n_layer, n_kv, hd, nbytes, 1)


def ctx_bits(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    return budget // _per_token(n_layer, n_kv, hd, 8 * nbytes, b)


def ctx_bytes(n_layer, n_head, n_kv, hd, nbytes, budget, b):
    per = _per_token(n_layer, n_kv, hd, nbytes, b)
    return budget // per * per


@pytest.mark.parametrize("wrong, fragments", [
    (ctx_ceil, ("rounded up", "more than the budget")),
    (ctx_round, ("rounded up", "round() on a fraction of ½ or more")),
    (ctx_float, ("expected an int, got float", "fraction of a token does not fit")),
    (ctx_float_floor, ("expected an int, got float", "the right number, as a float")),
    (ctx_n_head, ("counted with n_head",)),
    (ctx_no_two, ("a key AND a value",)),
    (ctx_no_batch, ("batch times too long",)),
    (ctx_bits, ("not bits",)),
    (ctx_bytes, ("bytes of the cache",)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_context_mistakes_fail(wrong, fragments):
    fails(ch09.check_max_context, wrong, "✗ max_context: case", "hint", *fragments)


def test_context_through_a_float_division_then_int_passes():
    def via_float(n_layer, n_head, n_kv, hd, nbytes, budget, b):
        return int(budget / _per_token(n_layer, n_kv, hd, nbytes, b))

    passes(ch09.check_max_context, via_float, "✓ max_context: 11 case(s)")


def test_context_zero_when_not_one_token_fits():
    assert ch09.max_context(2, 4, 2, 8, 4, 2 * 2 * 2 * 8 * 3 * 4 - 1, 3) == 0


# ------------------------------------------------------------------------ mistakes: FLOPs


def _fl(**kw):
    return ch09._flops(**kw)


@pytest.mark.parametrize("wrong, fragments", [
    (_fl(factor=2, attention=2), ("one forward pass (2N per token)",)),
    (_fl(factor=2), ("forward pass only",)),
    (_fl(attention=0), ("attention term is missing",)),
    (_fl(attention=2), ("forward pass's only",)),
    (_fl(attention=12), ("whole context × context square",)),
    (_fl(kv="q"), ("W_k and W_v are counted d × d",)),
    (_fl(attn_width="kv"), ("key/value width",)),
    (_fl(mlp=2), ("SwiGLU MLP has three",)),
    (_fl(output=2), ("input embedding is a lookup",)),
    (_fl(output=0), ("output layer is missing",)),
    (lambda *a: ch09.training_flops(*a) * 1.001, ("N = n_layer",)),
])
def test_flops_mistakes_fail(wrong, fragments):
    fails(ch09.check_training_flops, wrong, "✗ training_flops: case", "hint", *fragments)


def test_flops_the_mistake_variants_are_independent_of_the_reference():
    # the variant with every switch at its right position is the reference itself
    assert _fl()(3, 64, 4, 2, 160, 1000, 256, 10**6) == ch09.training_flops(
        3, 64, 4, 2, 160, 1000, 256, 10**6)


def test_flops_an_int_answer_passes():
    passes(ch09.check_training_flops, lambda *a: int(ch09.training_flops(*a)),
           "✓ training_flops: 8 case(s)")


def test_flops_a_string_answer_fails():
    fails(ch09.check_training_flops, lambda *a: str(ch09.training_flops(*a)),
          "expected a float, got str")
