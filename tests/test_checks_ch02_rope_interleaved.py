"""Chapter 02's transfer exercise: RoPE with interleaved pairs (GPT-J, the RoFormer paper) and
its relation to the "rotate half" layout (GPT-NeoX, Llama in transformers), a permutation of
the features. The references are checked against transformers' GPT-J rotary code; then each
checker must pass them and reject the plausible wrong versions below."""

from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_check_fails as fails
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch02
from llmcourse.nn.positional import apply_rope, rope_cos_sin

# ---------------------------------------------------------------- references


def test_interleaved_reference_matches_transformers_gptj():
    from transformers.models.gptj.modeling_gptj import (
        apply_rotary_pos_emb,
        create_sinusoidal_positions,
    )

    torch.manual_seed(2)
    b, t, h, hd = 2, 9, 3, 16
    x = torch.randn(b, t, h, hd)  # GPT-J's layout: (B, T, heads, hd)
    table = create_sinusoidal_positions(t, hd)  # (T, hd): sin half, then cos half
    sin, cos = table[None, :, : hd // 2], table[None, :, hd // 2:]  # (1, T, hd/2) each
    want = apply_rotary_pos_emb(x, sin, cos)  # (B, T, h, hd)
    got = ch02.rope_interleaved(x.transpose(1, 2), 10000.0).transpose(1, 2)  # ours: (..., T, hd)
    torch.testing.assert_close(got, want)


@settings(max_examples=25, deadline=None)
@given(half=st.integers(1, 16), t=st.integers(1, 12), base=st.sampled_from([10.0, 1e4, 5e5]),
       seed=st.integers(0, 2**16))
def test_layouts_are_one_permutation_apart(half, t, base, seed):
    hd = 2 * half
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, t, hd, generator=gen)  # a "rotate half" vector per position
    idx = ch02.half_to_interleaved(hd)
    cos, sin = rope_cos_sin(hd, t, base)  # the library's tables, checked against Llama's
    torch.testing.assert_close(ch02.rope_interleaved(x[..., idx], base),
                               apply_rope(x, cos, sin)[..., idx])
    # Scores do not care about the layout: permuting q and k alike keeps every dot product.
    q, k = x, torch.randn(2, t, hd, generator=gen)
    s_half = ch02.rope(q, base) @ ch02.rope(k, base).transpose(-2, -1)
    s_inter = (ch02.rope_interleaved(q[..., idx], base)
               @ ch02.rope_interleaved(k[..., idx], base).transpose(-2, -1))
    torch.testing.assert_close(s_inter, s_half, atol=1e-4, rtol=1e-4)


def test_half_to_interleaved_is_a_permutation_with_pairs_side_by_side():
    for hd in (2, 4, 6, 64):
        idx = ch02.half_to_interleaved(hd)
        assert idx.dtype == torch.int64 and sorted(idx.tolist()) == list(range(hd))
        assert (idx[1::2] - idx[0::2]).tolist() == [hd // 2] * (hd // 2)


@pytest.mark.parametrize("hd", [0, 3, -2, 4.0, True])
def test_half_to_interleaved_refuses_odd_or_non_int_widths(hd):
    with pytest.raises(ValueError, match="positive even int"):
        ch02.half_to_interleaved(hd)


# ---------------------------------------------------------------- check_rope_interleaved


def _interleaved(sign: float = 1.0, start: int = 0, fixed_base: float | None = None,
                 exponent: float = 2.0, repeat_wrong: bool = False, half_pairs: bool = False,
                 out_float32: bool = False):
    """A learner's interleaved RoPE; the keyword arguments plant one mistake at a time."""

    def fn(x, base):
        base = fixed_base or base
        t, hd = x.shape[-2], x.shape[-1]
        freq = base ** (-exponent * torch.arange(hd // 2, dtype=torch.float32) / hd)  # (hd/2,)
        angle = torch.arange(start, start + t, dtype=torch.float32)[:, None] * freq
        cos, sin = angle.cos().to(x.dtype), sign * angle.sin().to(x.dtype)  # (T, hd/2)
        if repeat_wrong:  # the rotate-half tables (cat) used with interleaved pairs
            cos2, sin2 = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)  # (T, hd)
            rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)
            return x * cos2 + rotated * sin2
        if half_pairs:
            a, b = x[..., : hd // 2], x[..., hd // 2:]
            return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.zeros(x.shape) if out_float32 else torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    return fn


def test_rope_interleaved_solution_and_helper_pass(capsys):
    ch02.check_rope_interleaved(ch02.rope_interleaved)
    ch02.check_rope_interleaved(_interleaved())  # the wrong versions differ in one place
    assert capsys.readouterr().out.count("✓ rope_interleaved: 7 case(s)") == 2


@pytest.mark.parametrize(("wrong", "says"), [
    (_interleaved(half_pairs=True), "values differ"),  # rotate-half pairing
    (_interleaved(sign=-1.0), "values differ"),  # turns the other way
    (_interleaved(start=1), "values differ"),  # positions counted from 1
    (_interleaved(fixed_base=10000.0), "values differ"),  # ignores the base argument
    (_interleaved(exponent=1.0), "values differ"),  # base**(-i/hd): wrong frequencies
    (_interleaved(repeat_wrong=True), "values differ"),  # cat where repeat_interleave is due
    (_interleaved(out_float32=True), "dtype torch.float32 != expected torch.float64"),
], ids=["half-pairs", "sin-sign", "from-one", "fixed-base", "wrong-frequencies",
        "cat-not-interleave", "float32-for-float64"])
def test_rope_interleaved_wrong_versions_fail(wrong, says):
    fails(ch02.check_rope_interleaved, wrong, "✗ rope_interleaved", says, "expected:", "got:",
          "hint: pair i is features (2i, 2i+1)")


def test_rope_interleaved_not_implemented_says_so():
    def fn(x, base):
        raise NotImplementedError("exercise")

    fails(ch02.check_rope_interleaved, fn, "not implemented yet")


# ---------------------------------------------------------------- check_half_to_interleaved


def test_half_to_interleaved_solution_and_a_loop_pass(capsys):
    def loop(hd):
        out = []
        for i in range(hd // 2):
            out += [i, i + hd // 2]
        return torch.tensor(out)

    ch02.check_half_to_interleaved(ch02.half_to_interleaved)
    ch02.check_half_to_interleaved(loop)
    assert capsys.readouterr().out.count("✓ half_to_interleaved: 6 case(s)") == 2


@pytest.mark.parametrize(("wrong", "says"), [
    (lambda hd: ch02.half_to_interleaved(hd).argsort(), "case 3 differs"),  # the inverse
    (lambda hd: torch.arange(hd), "case 2 differs"),  # identity
    (lambda hd: torch.arange(hd).view(2, -1).flip(0).flatten(), "case 1 differs"),  # halves swapped
    (lambda hd: ch02.half_to_interleaved(hd).int(), "dtype torch.int32 != expected torch.int64"),
    (lambda hd: ch02.half_to_interleaved(hd).float(), "dtype torch.float32 != expected"),
    (lambda hd: ch02.half_to_interleaved(hd).tolist(), "expected a torch.Tensor, got list"),
], ids=["inverse", "identity", "halves-swapped", "int32", "float", "list"])
def test_half_to_interleaved_wrong_versions_fail(wrong, says):
    fails(ch02.check_half_to_interleaved, wrong, "✗ half_to_interleaved", says,
          "hint: interleaved position 2i holds")
