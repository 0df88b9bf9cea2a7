"""Chapter 02 exercises: splitting and merging heads, the sinusoidal table, rotary positions.

Each checker runs the learner's function on fixed random cases (drawn from its own seeded
generator) and compares it with a reference computed another way: heads by ``chunk``/``cat``
rather than ``view``/``transpose``, the sinusoidal table in float64 straight from the formula,
and RoPE from :mod:`llmcourse.nn.positional`, itself checked against ``transformers``' Llama
rotary code in ``tests/test_checks_ch01_ch02.py``.

Example:
    >>> from llmcourse.checks.ch02 import check_split_heads, split_heads
    >>> check_split_heads(split_heads)
    ✓ split_heads: 5 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmcourse.checks import compare, require_function
from llmcourse.nn.positional import apply_rope, rope_cos_sin

__all__ = [
    "split_heads", "merge_heads", "sinusoidal_table", "rope",
    "check_split_heads", "check_merge_heads", "check_sinusoidal_table", "check_rope",
]


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, E) → (B, n_head, T, E / n_head): head h gets features h·hd … (h+1)·hd - 1.

    Example:
        >>> x = torch.arange(8.0).view(1, 2, 4)           # (B=1, T=2, E=4)
        >>> split_heads(x, 2)[0, 1]                       # head 1: features 2, 3 of each token
        tensor([[2., 3.],
                [6., 7.]])
    """
    b, t, e = x.shape
    return x.view(b, t, n_head, e // n_head).transpose(1, 2)  # (B, h, T, hd)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_head, T, hd) → (B, T, n_head·hd), the inverse of :func:`split_heads`.

    Example:
        >>> x = torch.randn(2, 5, 12)
        >>> torch.equal(merge_heads(split_heads(x, 3)), x)
        True
    """
    b, h, t, hd = x.shape
    return x.transpose(1, 2).reshape(b, t, h * hd)  # (B, T, E); reshape copies: not contiguous


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


def _split_reference(x: torch.Tensor, n_head: int) -> torch.Tensor:
    # Cut the features into n_head consecutive chunks and stack them as a new head axis.
    return torch.stack(x.chunk(n_head, dim=-1), dim=1)  # (B, h, T, hd)


def check_split_heads(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``fn(x, n_head)``: (B, T, E) → (B, n_head, T, E / n_head), consecutive features."""
    require_function(fn, "split_heads")
    gen = torch.Generator().manual_seed(201)
    shapes = [(1, 2, 4, 2), (2, 5, 12, 3), (3, 4, 16, 4), (2, 7, 8, 1), (1, 3, 6, 6)]
    cases = [(torch.randn(b, t, e, generator=gen), h) for b, t, e, h in shapes]
    compare(fn, _split_reference, cases, name="split_heads",
            hint="x.view(B, T, n_head, head_dim) then .transpose(1, 2); viewing as "
                 "(B, n_head, T, head_dim) directly mixes tokens into heads")


def check_merge_heads(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x)``: (B, n_head, T, hd) → (B, T, n_head·hd), head 0's features first."""
    require_function(fn, "merge_heads")
    gen = torch.Generator().manual_seed(202)
    shapes = [(1, 2, 2, 2), (2, 3, 5, 4), (3, 4, 4, 4), (2, 1, 7, 8), (1, 6, 3, 1)]
    cases = [(torch.randn(*s, generator=gen),) for s in shapes]
    compare(fn, lambda x: torch.cat(x.unbind(dim=1), dim=-1), cases, name="merge_heads",
            hint="undo split_heads in reverse order: .transpose(1, 2) first, then "
                 ".reshape(B, T, n_head * head_dim)")


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
