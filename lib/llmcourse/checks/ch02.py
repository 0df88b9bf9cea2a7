"""Chapter 02 exercises: the sinusoidal table, rotary positions in both pair layouts.

Each checker runs the learner's function on fixed random cases (drawn from its own seeded
generator) and compares it with a reference computed another way: the sinusoidal table in
float64 straight from the formula, "rotate half" RoPE from :mod:`llmcourse.nn.positional`
(itself checked against ``transformers``' Llama rotary code), and interleaved RoPE from the
formula below, checked against ``transformers``' GPT-J rotary code in
``tests/test_checks_ch02_rope_interleaved.py``.

Example:
    >>> from llmcourse.checks.ch02 import check_rope_interleaved, rope_interleaved
    >>> check_rope_interleaved(rope_interleaved)
    ✓ rope_interleaved: 7 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmcourse.checks import compare, require_function
from llmcourse.nn.positional import apply_rope, rope_cos_sin

__all__ = [
    "sinusoidal_table", "rope", "rope_interleaved", "half_to_interleaved",
    "check_sinusoidal_table", "check_rope", "check_rope_interleaved",
    "check_half_to_interleaved",
]


def sinusoidal_table(n_positions: int, dim: int) -> torch.Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(same angle); float32.

    Example:
        >>> sinusoidal_table(2, 4)
        tensor([[0.0000, 1.0000, 0.0000, 1.0000],
                [0.8415, 0.5403, 0.0100, 0.9999]])
    """
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (T, 1)
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    angle = pos * freq  # (T, dim/2)
    pe = torch.empty(n_positions, dim)
    pe[:, 0::2] = angle.sin()  # even columns
    pe[:, 1::2] = angle.cos()  # odd columns
    return pe  # (T, dim)


def rope(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate queries or keys x (..., T, hd) by their positions 0..T-1 ("rotate half" layout).

    Pair i is (x[..., i], x[..., i + hd/2]); at position t it turns by angle t·base^(-2i/hd):

        (a, b) → (a cos θ - b sin θ,  a sin θ + b cos θ)

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])    # (T=2, hd=2): one pair, angle = t
        >>> rope(x)                                       # position 1 turned by 1 radian
        tensor([[1.0000, 0.0000],
                [0.5403, 0.8415]])
    """
    t, hd = x.shape[-2], x.shape[-1]
    freq = base ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)  # (hd/2,)
    angle = torch.arange(t, dtype=torch.float32)[:, None] * freq  # (T, hd/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)  # (T, hd/2)
    a, b = x[..., : hd // 2], x[..., hd // 2:]  # (..., T, hd/2) each: the two halves of pairs
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)  # (..., T, hd)


def rope_interleaved(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE with neighbouring features as pairs (the RoFormer paper, GPT-J, Meta's Llama code).

    Pair i is (x[..., 2i], x[..., 2i + 1]); at position t (0 … T-1) it turns by the same angle
    t·base^(-2i/hd) as pair i of the "rotate half" layout of :func:`rope`:

        (a, b) → (a cos θ - b sin θ,  a sin θ + b cos θ)

    The two layouts differ only in which features they call pair i, so one is the other
    conjugated by a permutation of the features: see :func:`half_to_interleaved`.

    Example:
        >>> x = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])  # (T=2, hd=4)
        >>> rope_interleaved(x)[1]              # position 1: pair 0 turns 1 rad, pair 1 0.01
        tensor([0.5403, 0.8415, 0.9999, 0.0100])
    """
    t, hd = x.shape[-2], x.shape[-1]
    freq = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (hd/2,)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * freq  # (T, hd/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)  # (T, hd/2)
    a, b = x[..., 0::2], x[..., 1::2]  # (..., T, hd/2) each: first and second of each pair
    turned = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)  # (..., T, hd/2, 2)
    return turned.flatten(-2)  # (..., T, hd): pairs back side by side


def half_to_interleaved(head_dim: int) -> torch.Tensor:
    """Indices ``idx`` (int64, (head_dim,)) that reorder a "rotate half" vector into the
    interleaved layout: ``y = x[..., idx]`` puts pair i = (x_i, x_{i + hd/2}) at 2i, 2i + 1.

    Then ``rope_interleaved(x[..., idx]) == rope(x)[..., idx]``, and because a dot product does
    not change when both vectors are permuted alike, the scores are the same in both layouts:
    permuting the rows of W_Q and W_K converts a model from one layout to the other.

    Example:
        >>> half_to_interleaved(6)
        tensor([0, 3, 1, 4, 2, 5])
    """
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}")
    half = torch.arange(head_dim // 2)  # (hd/2,) pair numbers
    return torch.stack([half, half + head_dim // 2], dim=-1).flatten()  # (hd,)


def _sinusoidal_float64(n_positions: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (T, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)  # (dim/2,)
    angle = pos / 10000.0 ** (two_i / dim)  # (T, dim/2)
    # Interleave: column 2i is sin, column 2i+1 is cos of the same angle.
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2).float()  # (T, dim)


def check_sinusoidal_table(fn: Callable[[int, int], torch.Tensor]) -> None:
    """Check ``fn(n_positions, dim)`` against the formula evaluated in float64.

    The tolerance (1e-4) admits float32 round-off at the larger positions, nothing more.
    """
    require_function(fn, "sinusoidal_table")
    cases = [(1, 2), (4, 4), (10, 8), (50, 16), (64, 6), (7, 128)]
    compare(fn, _sinusoidal_float64, cases, name="sinusoidal_table", atol=1e-4, rtol=1e-4,
            hint="column 2i is sin(pos / 10000**(2i/dim)) and column 2i+1 the cos of the same "
                 "angle; positions start at 0; return a float32 (n_positions, dim) tensor")


def check_rope(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(x, base)`` for x (..., T, hd) against
    :func:`llmcourse.nn.positional.apply_rope`."""
    require_function(fn, "rope")
    gen = torch.Generator().manual_seed(203)
    specs = [((5, 4), 10000.0), ((2, 7, 8), 10000.0), ((1, 2, 9, 16), 100.0),
             ((3, 6, 2), 10.0), ((2, 12, 32), 500000.0)]
    cases = [(torch.randn(*shape, generator=gen), base) for shape, base in specs]
    cases.append((torch.randn(2, 5, 8, generator=gen, dtype=torch.float64), 10000.0))

    def reference(x: torch.Tensor, base: float) -> torch.Tensor:
        cos, sin = rope_cos_sin(x.shape[-1], x.shape[-2], base)  # (T, hd) each
        return apply_rope(x, cos, sin)

    compare(fn, reference, cases, name="rope",
            hint="pair feature i with i + hd/2; at position t (from 0) turn the pair by "
                 "t * base**(-2i/hd): (a, b) -> (a cos - b sin, a sin + b cos)")


def check_rope_interleaved(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(x, base)`` for x (..., T, hd) against :func:`rope_interleaved`.

    Several bases and head widths (2 to 32) and a float64 case: the rotate-half pairing, a sine
    of the wrong sign, positions from 1, a hard-coded base, frequencies repeated in the wrong
    order, and a float32 result for float64 input all fail.
    """
    require_function(fn, "rope_interleaved")
    gen = torch.Generator().manual_seed(204)
    specs = [((5, 4), 10000.0), ((2, 7, 8), 10000.0), ((1, 2, 9, 16), 100.0),
             ((3, 6, 2), 10.0), ((2, 12, 32), 500000.0), ((4, 6), 1000.0)]
    cases = [(torch.randn(*shape, generator=gen), base) for shape, base in specs]
    cases.append((torch.randn(2, 5, 8, generator=gen, dtype=torch.float64), 10000.0))
    compare(fn, rope_interleaved, cases, name="rope_interleaved",
            hint="pair i is features (2i, 2i+1), i.e. x[..., 0::2] and x[..., 1::2]; at "
                 "position t (from 0) it turns by t * base**(-2i/hd): (a, b) -> "
                 "(a cos - b sin, a sin + b cos); put each pair back side by side (stack on a "
                 "new last axis, then flatten); keep x's dtype")


def check_half_to_interleaved(fn: Callable[[int], torch.Tensor]) -> None:
    """Check ``fn(head_dim)``: the int64 indices idx with rope_interleaved(x[..., idx]) ==
    rope(x)[..., idx], i.e. idx[2i] = i and idx[2i + 1] = i + head_dim/2.

    Head widths up to 64, where the inverse permutation (a natural slip) differs: at 2 and 4
    the permutation is its own inverse.
    """
    require_function(fn, "half_to_interleaved")
    cases = [(2,), (4,), (6,), (8,), (16,), (64,)]
    compare(fn, half_to_interleaved, cases, name="half_to_interleaved",
            hint="interleaved position 2i holds half-layout feature i and position 2i+1 holds "
                 "feature i + hd/2; check it with torch.testing.assert_close("
                 "rope_interleaved(x[..., idx]), rope(x)[..., idx]); int64 indices")
