"""Chapter 09 exercise checkers: they pass the solutions and fail the usual mistakes.

The solutions are themselves checked against code no one here wrote: the int8 codes against
``torch.quantize_per_channel`` given the same scales, the cache bytes against the bytes of the
course's ``KVCache`` tensors, the training FLOPs against ``FlopCounterMode`` over a forward and
backward pass of ``transformers``' ``LlamaForCausalLM`` with grouped-query attention.
"""

from __future__ import annotations

import random

import pytest
import torch
from checker_helpers import assert_check_fails as fails
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch09
from llmcourse.models import sizing
from llmcourse.nn.kv_cache import KVCache

CHECKS = {
    "int8_quantize": (ch09.check_int8_quantize, ch09.int8_quantize),
    "kv_cache_bytes": (ch09.check_kv_cache_bytes, ch09.kv_cache_bytes),
    "training_flops": (ch09.check_training_flops, ch09.training_flops),
}


# ------------------------------------------------------------------------ solutions pass


@pytest.mark.parametrize("name", list(CHECKS))
def test_solution_passes(name, capsys):
    check, solution = CHECKS[name]
    check(solution)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}:") and out.count("✓") == 1, out


@pytest.mark.parametrize("name", list(CHECKS))
def test_not_implemented_says_so(name):
    def todo(*args):
        raise NotImplementedError("exercise")

    fails(CHECKS[name][0], todo, "not implemented yet")


@pytest.mark.parametrize("name", list(CHECKS))
def test_passing_the_result_instead_of_the_function_is_a_type_error(name):
    with pytest.raises(TypeError, match=rf"pass the function itself.*my_{name}"):
        CHECKS[name][0](123)


def test_checkers_leave_the_global_random_state_alone(capsys):
    torch.manual_seed(0)
    random.seed(0)
    expected = torch.rand(1), random.random()
    torch.manual_seed(0)
    random.seed(0)
    for check, solution in CHECKS.values():
        check(solution)
    assert torch.equal(torch.rand(1), expected[0]) and random.random() == expected[1]


# ------------------------------------------------------------------------ solutions vs oracles


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@settings(deadline=None, max_examples=40)
@given(st.integers(1, 12), st.integers(1, 40), st.floats(1e-3, 1e3), st.integers(0, 10**6))
def test_int8_codes_equal_torch_quantize_per_channel(out, inp, magnitude, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * magnitude  # (out, in)
    if out > 1:
        w[seed % out] = 0.0  # an all-zero row
    q, scale = ch09.int8_quantize(w)
    assert q.dtype == torch.int8 and scale.shape == (out, 1) and scale.dtype == w.dtype
    theirs = torch.quantize_per_channel(w, scale[:, 0].double(), torch.zeros(out, dtype=torch.long),
                                        axis=0, dtype=torch.qint8).int_repr()
    assert torch.equal(q, theirs)
    # the round trip: within half a step of each row, the largest weight exactly ±127 codes
    assert bool(((q.float() * scale - w).abs() <= scale / 2 * (1 + 1e-6)).all())
    nonzero = w.abs().amax(dim=1) > 0
    assert bool((q.abs().amax(dim=1)[nonzero] == 127).all())


def test_int8_handles_float64_and_keeps_its_dtype():
    w = torch.randn(3, 5, dtype=torch.float64)
    q, scale = ch09.int8_quantize(w)
    assert scale.dtype == torch.float64 and q.dtype == torch.int8


def test_kv_bytes_equal_the_course_cache_and_sizing():
    rng = random.Random(0)
    for _ in range(10):
        n_layer, n_kv, batch = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 3)
        n_head, head_dim, seq = n_kv * rng.randint(1, 4), rng.choice([4, 8]), rng.randint(1, 30)
        for dtype, nbytes in ((torch.float32, 4), (torch.bfloat16, 2)):
            cache = KVCache(n_layer, batch, n_kv, seq, head_dim, dtype=dtype)  # K/V heads
            got = ch09.kv_cache_bytes(n_layer, n_head, n_kv, head_dim, seq, batch, nbytes)
            assert got == cache.k.nbytes + cache.v.nbytes
            assert got == sizing.kv_cache_bytes(n_layer, n_kv, head_dim, seq, batch, nbytes)


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


# ------------------------------------------------------------------------ mistakes: int8


def _codes(w, scale):
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8)


def q_per_tensor(w):
    scale = (w.abs().amax() / 127).clamp(min=1e-12).expand(w.shape[0], 1).clone()
    return _codes(w, scale), scale


def q_per_tensor_scalar(w):
    scale = w.abs().amax() / 127
    return _codes(w, scale.clamp(min=1e-12)), scale


def q_divide_128(w):
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 128, 1.0).to(w.dtype)
    return _codes(w, scale), scale


def q_truncate(w):
    scale = ch09.int8_quantize(w)[1]
    return (w / scale).to(torch.int8), scale


def q_floor(w):
    scale = ch09.int8_quantize(w)[1]
    return (w / scale).floor().clamp(-127, 127).to(torch.int8), scale


def q_half_up(w):
    scale = ch09.int8_quantize(w)[1]
    return (w / scale + 0.5).floor().clamp(-127, 127).to(torch.int8), scale


def q_uint8(w):
    q, scale = ch09.int8_quantize(w)
    return q.to(torch.uint8), scale


def q_uint8_asymmetric(w):  # 0..255 with an offset: another scheme, not this one
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    scale = ((hi - lo) / 255).clamp(min=1e-12)
    return torch.round((w - lo) / scale).to(torch.uint8), scale


def q_per_column(w):
    amax = w.abs().amax(dim=0, keepdim=True)  # (1, in)
    scale = torch.where(amax > 0, amax / 127, 1.0).to(w.dtype)
    return _codes(w, scale), scale


def q_nan_on_zero_rows(w):
    scale = w.abs().amax(dim=1, keepdim=True) / 127  # 0 on an all-zero row: 0/0 = NaN
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def q_nan_float_codes(w):
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(w / scale).clamp(-127, 127), scale


def q_float_codes(w):
    q, scale = ch09.int8_quantize(w)
    return q.to(w.dtype), scale


def q_scale_1d(w):
    q, scale = ch09.int8_quantize(w)
    return q, scale[:, 0]


def q_scale_float32(w):
    q, scale = ch09.int8_quantize(w)
    return q, scale.float()


def q_max_not_abs(w):
    amax = w.amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, 1.0).to(w.dtype)
    return _codes(w, scale), scale


def q_divide_255(w):
    amax = w.abs().amax(dim=1, keepdim=True)
    scale = torch.where(amax > 0, amax / 255, 1.0).to(w.dtype)
    return _codes(w, scale), scale


def q_scale_swapped(w):
    q, scale = ch09.int8_quantize(w)
    return scale, q


@pytest.mark.parametrize("wrong, fragments", [
    (q_per_tensor, ("per-tensor quantization",)),
    (q_per_tensor_scalar, ("shape (out, 1)", "not one scale for the whole matrix")),
    (q_divide_128, ("divides by 128", "−127..127")),
    (q_divide_255, ("divides by 255",)),
    (q_truncate, ("truncated toward 0",)),
    (q_floor, ("rounded down",)),
    (q_half_up, ("tie to the even code",)),
    (q_uint8, ("uint8", "wrap around")),
    (q_uint8_asymmetric, ("uint8",)),
    (q_per_column, ("not one per column",)),
    (q_nan_on_zero_rows, ("all-zero row got scale 0", "0/0 = NaN")),
    (q_nan_float_codes, ("still a float tensor",)),
    (q_float_codes, ("still a float tensor", "one byte per weight")),
    (q_scale_1d, ("shape (out, 1)", "keepdim=True")),
    (q_scale_float32, ("dtype torch.float32 != expected torch.float64",)),
    (q_max_not_abs, ("max(row), not max(|row|)",)),
    (q_scale_swapped, ("✗ int8_quantize",)),
])
def test_int8_mistakes_fail(wrong, fragments):
    fails(ch09.check_int8_quantize, wrong, "✗ int8_quantize", "hint", *fragments)


def test_int8_any_positive_scale_on_a_zero_row_passes(capsys):
    def clamped(w):  # the usual guard: a tiny scale instead of 0
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127
        return _codes(w, scale), scale

    ch09.check_int8_quantize(clamped)
    assert capsys.readouterr().out.startswith("✓ int8_quantize")


def test_int8_multiplying_by_the_inverse_scale_passes(capsys):
    def inverse(w):
        amax = w.abs().amax(dim=1, keepdim=True)
        scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        return (w * (1 / scale)).round().clamp(-127, 127).to(torch.int8), scale

    ch09.check_int8_quantize(inverse)
    assert capsys.readouterr().out.startswith("✓ int8_quantize")


def test_int8_a_learner_that_changes_w_in_place_is_still_judged_on_its_answer():
    def in_place(w):
        q, scale = ch09.int8_quantize(w)
        w.zero_()
        return q, scale

    ch09.check_int8_quantize(in_place)  # compare hands each side its own copy


# ------------------------------------------------------------------------ mistakes: KV cache


def kv_float(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return 2.0 * n_layer * n_kv * hd * seq * b * nbytes


def kv_no_two(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return n_layer * n_kv * hd * seq * b * nbytes


def kv_n_head(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return 2 * n_layer * n_head * hd * seq * b * nbytes


def kv_n_head_no_two(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return n_layer * n_head * hd * seq * b * nbytes


def kv_no_batch(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return 2 * n_layer * n_kv * hd * seq * nbytes


def kv_per_token(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return 2 * n_layer * n_kv * hd * b * nbytes


def kv_bits(n_layer, n_head, n_kv, hd, seq, b, nbytes):
    return 16 * n_layer * n_kv * hd * seq * b * nbytes


def kv_divides_by_group(n_layer, n_head, n_kv, hd, seq, b, nbytes):  # GQA applied twice
    return 2 * n_layer * n_kv * hd * seq * b * nbytes // (n_head // n_kv)


@pytest.mark.parametrize("wrong, fragments", [
    (kv_float, ("expected an int, got float", "a count of bytes is an int")),
    (kv_no_two, ("a key AND a value",)),
    (kv_n_head, ("counted with n_head", "n_kv_head heads")),
    (kv_n_head_no_two, ("counted with n_head and without the 2",)),
    (kv_no_batch, ("batch is missing",)),
    (kv_per_token, ("bytes of one token",)),
    (kv_bits, ("not bits",)),
    (kv_divides_by_group, ("n_head does not enter",)),
])
def test_kv_mistakes_fail(wrong, fragments):
    fails(ch09.check_kv_cache_bytes, wrong, "✗ kv_cache_bytes: case", "hint", *fragments)


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


def test_flops_an_int_answer_passes(capsys):
    ch09.check_training_flops(lambda *a: int(ch09.training_flops(*a)))
    assert capsys.readouterr().out.startswith("✓ training_flops")


def test_flops_a_string_answer_fails():
    fails(ch09.check_training_flops, lambda *a: str(ch09.training_flops(*a)),
          "expected a float, got str")
