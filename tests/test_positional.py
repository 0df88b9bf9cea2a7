"""Positional encodings: the sinusoidal table against its formula, learned positions, and RoPE
(its relative-position property, norm preservation, and ``transformers``' Llama rotary code)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmcourse.nn.positional import (
    LearnedPositions,
    RotaryEmbedding,
    apply_rope,
    rope_cos_sin,
    sinusoidal_positions,
)

# ------------------------------------------------------------------------------ sinusoidal


@pytest.mark.parametrize("pos, dim, n_positions", [(0, 6, 4), (1, 8, 2), (7, 16, 10),
                                                    (63, 32, 64), (511, 64, 512)])
def test_sinusoidal_table_matches_formula(pos, dim, n_positions):
    pe = sinusoidal_positions(n_positions, dim)
    assert pe.shape == (n_positions, dim) and pe.dtype == torch.float32
    for i in range(dim // 2):
        angle = pos / 10000 ** (2 * i / dim)
        assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=2e-5)
        assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=2e-5)


def test_sinusoidal_other_base_matches_formula():
    pe = sinusoidal_positions(5, 4, base=100.0)
    assert pe[3, 2].item() == pytest.approx(math.sin(3 / 100 ** (2 / 4)), abs=1e-6)
    assert pe[3, 3].item() == pytest.approx(math.cos(3 / 100 ** (2 / 4)), abs=1e-6)


def test_sinusoidal_offsets_are_linear_maps():
    # PE(pos + k) is a fixed rotation of PE(pos) for every pos: the reason the paper gives.
    pe = sinusoidal_positions(20, 8).double()
    k = 3
    for i in range(4):
        w = 1 / 10000 ** (2 * i / 8)
        # (sin, cos)(a + kw) = (sin a, cos a) @ [[cos kw, −sin kw], [sin kw, cos kw]]
        rot = torch.tensor([[math.cos(k * w), -math.sin(k * w)],
                            [math.sin(k * w), math.cos(k * w)]], dtype=torch.float64)
        pair = pe[:, 2 * i:2 * i + 2]  # (T, 2): (sin, cos)
        torch.testing.assert_close(pair[:-k] @ rot, pair[k:], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ learned


def test_learned_positions_look_up_the_table():
    torch.manual_seed(0)
    lp = LearnedPositions(10, 4)
    pos = torch.tensor([[0, 3, 9], [1, 1, 2]])
    out = lp(pos)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out, lp.table.weight[pos])
    assert lp.table.weight.requires_grad
    for dtype in (torch.uint8, torch.int16, torch.int32):  # any integer dtype indexes the same
        torch.testing.assert_close(lp(pos.to(dtype)), out)


def test_rope_accepts_any_integer_position_dtype():
    cos, sin = rope_cos_sin(4, 8)
    x = _vec(9, 2, 3, 4).float()
    ref = apply_rope(x, cos, sin, torch.tensor([1, 0, 5]))
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        torch.testing.assert_close(apply_rope(x, cos, sin, torch.tensor([1, 0, 5], dtype=dtype)),
                                   ref)


# ------------------------------------------------------------------------------ RoPE


def _vec(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rope_at(x: torch.Tensor, pos: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate a single vector x (hd,) as if it sat at position ``pos``."""
    return apply_rope(x[None], cos, sin, torch.tensor([pos]))[0]


@given(
    half=st.integers(1, 8),
    m=st.integers(0, 200),
    n=st.integers(0, 200),
    shift=st.integers(0, 200),
    seed=st.integers(0, 10_000),
)
def test_rope_score_depends_only_on_relative_position(half, m, n, shift, seed):
    hd = 2 * half
    cos, sin = rope_cos_sin(hd, 401)
    cos, sin = cos.double(), sin.double()
    q, k = _vec(seed, hd), _vec(seed + 1, hd)
    score = _rope_at(q, m, cos, sin) @ _rope_at(k, n, cos, sin)
    shifted = _rope_at(q, m + shift, cos, sin) @ _rope_at(k, n + shift, cos, sin)
    assert shifted.item() == pytest.approx(score.item(), abs=1e-4, rel=1e-4)
    # The same score with the query left at position 0 and the key at the offset n - m.
    if n >= m:
        offset = q @ _rope_at(k, n - m, cos, sin)
        assert offset.item() == pytest.approx(score.item(), abs=1e-4, rel=1e-4)


@given(half=st.integers(1, 8), t=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_rope_preserves_norms(half, t, seed):
    hd = 2 * half
    rope = RotaryEmbedding(hd, 16)
    x = _vec(seed, 2, 3, t, hd).float()  # (B, h, T, hd)
    y = rope(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_rope_at_position_zero_is_identity_and_rotates_pairs():
    hd = 4
    cos, sin = rope_cos_sin(hd, 8)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(apply_rope(x, cos, sin, torch.tensor([0])), x)
    # Pair i is (x[i], x[i + hd/2]), turned by pos · 10000^(-2i/hd).
    pos = 5
    y = apply_rope(x, cos, sin, torch.tensor([pos]))[0]
    for i in range(hd // 2):
        a = pos * 10000 ** (-2 * i / hd)
        x1, x2 = x[0, i].item(), x[0, i + hd // 2].item()
        assert y[i].item() == pytest.approx(x1 * math.cos(a) - x2 * math.sin(a), abs=1e-5)
        assert y[i + hd // 2].item() == pytest.approx(x1 * math.sin(a) + x2 * math.cos(a),
                                                      abs=1e-5)


def test_rope_default_positions_equal_arange():
    cos, sin = rope_cos_sin(6, 10)
    x = _vec(3, 2, 7, 6).float()
    torch.testing.assert_close(apply_rope(x, cos, sin), apply_rope(x, cos, sin, torch.arange(7)))


def test_oracle_rope_matches_transformers_llama(quiet_transformers):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    b, h, t, hd = 2, 3, 9, 8
    config = LlamaConfig(hidden_size=h * hd, num_attention_heads=h, num_key_value_heads=h,
                         head_dim=hd, max_position_embeddings=64)
    theirs_rope = LlamaRotaryEmbedding(config)
    q, k = _vec(4, b, h, t, hd).float(), _vec(5, b, h, t, hd).float()
    position_ids = torch.tensor([list(range(3, 3 + t)), list(range(20, 20 + t))])  # (B, T)
    cos_hf, sin_hf = theirs_rope(q, position_ids)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos_hf, sin_hf)

    rope = RotaryEmbedding(hd, 64)
    positions = position_ids[:, None, :]  # (B, 1, T): broadcast over heads
    torch.testing.assert_close(rope(q, positions), q_hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rope(k, positions), k_hf, atol=1e-5, rtol=1e-5)
