"""Chapter 01 and 02 exercise checkers: they pass the solutions and fail the usual mistakes.

(The masks of chapter 01 are in test_checks_ch01_masks.py, interleaved RoPE in
test_checks_ch02_rope_interleaved.py.)

Each known-wrong version below is a mistake a learner plausibly makes; the checker must raise
``CheckFailed`` for it. The references the checkers compare against are themselves checked
here against code no one here wrote (torch's MultiheadAttention, transformers' Llama RoPE).
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from checker_helpers import assert_check_fails as fails
from hypothesis import given, settings
from hypothesis import strategies as st

import llmcourse.course.plotting
from llmcourse.checks import CheckFailed, ch01, ch02
from llmcourse.nn import positional

matplotlib.use("Agg")


def _passes(check, fn, capsys, name: str) -> None:
    check(fn)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}:"), out


# ---------------------------------------------------------------- chapter 01: attention


def test_attention_solution_passes(capsys):
    _passes(ch01.check_attention, ch01.attention, capsys, "attention")


def test_attention_library_function_passes(capsys):
    from llmcourse.nn.attention import scaled_dot_product_attention

    _passes(ch01.check_attention, scaled_dot_product_attention, capsys, "attention")


def _attention_with(scale_of_d, softmax_dim: int = -1):
    def fn(q, k, v):
        scores = q @ k.transpose(-2, -1) * scale_of_d(q.shape[-1])
        return torch.softmax(scores, dim=softmax_dim) @ v

    return fn


def test_attention_without_sqrt_dk_fails():
    fails(ch01.check_attention, _attention_with(lambda d: 1.0), "values differ", "sqrt(d_k)")


def test_attention_divided_by_dk_not_its_root_fails():
    fails(ch01.check_attention, _attention_with(lambda d: 1.0 / d), "values differ")


def test_attention_softmax_over_queries_fails():
    fails(ch01.check_attention, _attention_with(lambda d: d**-0.5, softmax_dim=-2),
           "case 1 differs")


@pytest.mark.filterwarnings("ignore:The use of `x.T`")
def test_attention_with_dot_T_fails_on_batches():
    # k.T reverses every axis: right for one (T, d) sequence, wrong (or an error) for batches.
    def fn(q, k, v):
        return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1) @ v

    msg = fails(ch01.check_attention, fn, "✗ attention")
    assert "case 1 differs" not in msg  # the first, unbatched case passes


@settings(max_examples=15, deadline=None)
@given(st.one_of(st.floats(0.3, 0.95), st.floats(1.05, 3.0)))
def test_attention_any_wrong_scale_fails(factor):
    with pytest.raises(CheckFailed):
        ch01.check_attention(_attention_with(lambda d: factor / math.sqrt(d)))


def test_attention_not_implemented_says_so():
    def fn(q, k, v):
        raise NotImplementedError("exercise")

    fails(ch01.check_attention, fn, "not implemented yet")


# ---------------------------------------------------------------- chapter 02: positions


def test_sinusoidal_solution_and_library_pass(capsys):
    _passes(ch02.check_sinusoidal_table, ch02.sinusoidal_table, capsys, "sinusoidal_table")
    _passes(ch02.check_sinusoidal_table, positional.sinusoidal_positions, capsys,
            "sinusoidal_table")


def test_sinusoidal_reference_equals_the_formula_elementwise():
    table = ch02._sinusoidal_float64(9, 6)
    for pos in range(9):
        for col in range(6):
            angle = pos / 10000 ** ((col - col % 2) / 6)
            want = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert abs(table[pos, col].item() - want) < 1e-6


def _sinusoidal_with(exponent, sin_first: bool = True, interleave: bool = True, start: int = 0):
    def fn(n, d):
        pos = torch.arange(start, start + n, dtype=torch.float32)[:, None]
        i = torch.arange(0, d, 2, dtype=torch.float32)
        angle = pos / 10000 ** exponent(i, d)
        a, b = (angle.sin(), angle.cos()) if sin_first else (angle.cos(), angle.sin())
        if interleave:
            return torch.stack([a, b], dim=-1).flatten(-2)
        return torch.cat([a, b], dim=-1)

    return fn


@pytest.mark.parametrize("wrong", [
    _sinusoidal_with(lambda i, d: i / d, sin_first=False),  # sin and cos swapped
    _sinusoidal_with(lambda i, d: i / d, interleave=False),  # sin half then cos half
    _sinusoidal_with(lambda i, d: i / 2 / d),  # exponent i/d instead of 2i/d
    _sinusoidal_with(lambda i, d: i / d, start=1),  # positions counted from 1
], ids=["sin-cos-swapped", "halves", "half-exponent", "from-one"])
def test_sinusoidal_wrong_versions_fail(wrong):
    fails(ch02.check_sinusoidal_table, wrong, "✗ sinusoidal_table", "hint:")


def test_rope_solution_passes(capsys):
    _passes(ch02.check_rope, ch02.rope, capsys, "rope")


def test_rope_reference_matches_transformers_llama():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    torch.manual_seed(1)
    cfg = LlamaConfig(hidden_size=32, num_attention_heads=2, max_position_embeddings=64,
                      rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    q, k = torch.randn(2, 2, 11, 16), torch.randn(2, 2, 11, 16)  # (B, h, T, hd)
    cos, sin = LlamaRotaryEmbedding(cfg)(q, torch.arange(11)[None].expand(2, -1))  # (B, T, hd)
    want_q, want_k = apply_rotary_pos_emb(q, k, cos, sin)
    torch.testing.assert_close(ch02.rope(q, 500.0), want_q)
    torch.testing.assert_close(ch02.rope(k, 500.0), want_k)
    c, s = positional.rope_cos_sin(16, 11, 500.0)  # the checker's reference
    torch.testing.assert_close(positional.apply_rope(q, c, s), want_q)


def _rope_with(sign: float = 1.0, interleaved: bool = False, freq_exponent: float = 2.0,
               start: int = 0):
    def fn(x, base):
        t, hd = x.shape[-2], x.shape[-1]
        freq = base ** (-freq_exponent * torch.arange(hd // 2, dtype=torch.float32) / hd)
        angle = sign * torch.arange(start, start + t, dtype=torch.float32)[:, None] * freq
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        if interleaved:  # pairs (0, 1), (2, 3), ... as in the RoPE paper, not rotate-half
            a, b = x[..., 0::2], x[..., 1::2]
            return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)

    return fn


def test_rope_helper_is_right_when_configured_right(capsys):
    # The wrong versions below differ from this one in exactly one place.
    _passes(ch02.check_rope, _rope_with(), capsys, "rope")


@pytest.mark.parametrize("wrong", [
    _rope_with(sign=-1.0),  # rotates the wrong way
    _rope_with(interleaved=True),  # paper's pair layout instead of rotate-half
    _rope_with(freq_exponent=1.0),  # base**(-i/hd): wrong frequencies
    _rope_with(start=1),  # positions counted from 1
], ids=["wrong-sign", "interleaved", "wrong-frequencies", "from-one"])
def test_rope_wrong_versions_fail(wrong):
    fails(ch02.check_rope, wrong, "✗ rope", "values differ", "hint:")


# ---------------------------------------------------------------- plotting helper and docs


def test_attention_heatmap_draws_labels_and_title():
    import matplotlib.pyplot as plt

    w = torch.softmax(torch.randn(2, 3), dim=-1)
    ax = llmcourse.course.plotting.attention_heatmap(w, ["a", "b", "c"], ["x", "y"], title="t")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x", "y"]
    assert len(ax.texts) == 6 and ax.get_title() == "t"
    plt.close("all")


@pytest.mark.parametrize(("weights", "xl", "yl", "err", "what"), [
    (torch.rand(2, 3, 3), ["a"] * 3, ["a"] * 3, ValueError, "2-D"),
    (torch.rand(2, 3), ["a"] * 2, ["a"] * 2, ValueError, "need 3 xlabels"),
    ([[0.5]], ["a"], ["a"], TypeError, "torch.Tensor"),
])
def test_attention_heatmap_bad_input(weights, xl, yl, err, what):
    with pytest.raises(err, match=what):
        llmcourse.course.plotting.attention_heatmap(weights, xl, yl)
