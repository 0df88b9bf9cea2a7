"""Positional information: sinusoidal, learned, and rotary (RoPE).

Attention alone is permutation-equivariant: shuffle the tokens and the outputs shuffle the same
way. A language model must know order, so position is injected either by *adding* a vector to
each token embedding (sinusoidal or learned, as in the original Transformer and GPT-2) or by
*rotating* queries and keys so that their dot product depends on relative offset (RoPE, Su et
al., 2021, used by Llama).

Example:
    >>> pe = sinusoidal_positions(4, 6)                # (T=4, d=6)
    >>> pe[0].tolist()                                  # position 0: sin 0 = 0, cos 0 = 1
    [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

import torch
from torch import nn

from llmcourse.core.validate import check_float, check_positive, check_rank, check_tensor

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _check_base(base: object) -> None:
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise ValueError(f"base must be a positive number (the wavelength scale), got {base!r}")


def _check_positions(positions: object) -> torch.Tensor:
    positions = check_tensor("positions", positions)
    if positions.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"positions must be integers, got {positions.dtype}")
    # Indexing takes int64/int32 only (a uint8 index would even be read as a boolean mask).
    return positions if positions.dtype in (torch.int64, torch.int32) else positions.long()

__all__ = [
    "sinusoidal_positions",
    "LearnedPositions",
    "rope_cos_sin",
    "rotate_half",
    "rope_rotate",
    "apply_rope",
    "RotaryEmbedding",
]


def sinusoidal_positions(n_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed sinusoidal table of "Attention Is All You Need" (section 3.5).

        PE(pos, 2i)   = sin(pos / base^(2i/d))
        PE(pos, 2i+1) = cos(pos / base^(2i/d))

    Returns a (n_positions, dim) float32 tensor; ``dim`` must be even.
    """
    check_positive("n_positions", n_positions)
    check_positive("dim", dim)
    _check_base(base)
    if dim % 2:
        raise ValueError(f"dim must be even (sin and cos pairs), got {dim}")
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (T, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)  # (d/2,)
    angle = pos / base ** (two_i / dim)  # (T, d/2)
    pe = torch.zeros(n_positions, dim)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe  # (T, d)


class LearnedPositions(nn.Module):
    """A learned vector per position (GPT-2's ``wpe``): an embedding table indexed by position.

    Example:
        >>> LearnedPositions(16, 8)(torch.arange(5)).shape
        torch.Size([5, 8])
    """

    def __init__(self, n_positions: int, dim: int) -> None:
        super().__init__()
        check_positive("n_positions", n_positions)
        check_positive("dim", dim)
        self.n_positions = n_positions
        self.table = nn.Embedding(n_positions, dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Vectors for integer ``positions`` of any shape (...,) → (..., dim)."""
        positions = _check_positions(positions)
        if positions.numel() and (positions.min() < 0 or positions.max() >= self.n_positions):
            raise ValueError(
                f"positions must lie in [0, {self.n_positions}) (the table's length), got "
                f"{int(positions.min())}..{int(positions.max())}"
            )
        return self.table(positions)


def rope_cos_sin(head_dim: int, n_positions: int, base: float = 10000.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of RoPE's rotation angles, each (n_positions, head_dim).

    Pair i of the head (dimensions i and i + head_dim/2, the "rotate half" layout used by
    GPT-NeoX and Llama in ``transformers``) turns by angle ``pos · base^(-2i/head_dim)``.
    """
    check_positive("head_dim", head_dim)
    check_positive("n_positions", n_positions)
    _check_base(base)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE (pairs rotate), got {head_dim}")
    # 1 / base^(2i/hd), written as transformers' Llama writes it, so that the two tables are
    # equal to the last bit (base^(-2i/hd) can differ from it in the last place).
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angle = torch.arange(n_positions, dtype=torch.float32)[:, None] * inv_freq  # (T, hd/2)
    angle = torch.cat([angle, angle], dim=-1)  # (T, hd)
    return angle.cos(), angle.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x₁, x₂) → (−x₂, x₁) over the two halves of the last axis: each pair (i, i + hd/2)
    turned by 90°, the sine's partner in RoPE's rotation.

    Example:
        >>> rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        [-3.0, -4.0, 1.0, 2.0]
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., hd/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., hd)


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE's rotation with tables already picked at the positions: ``x`` (..., T, hd),
    ``cos``/``sin`` broadcastable to it (e.g. (B, 1, T, hd) for (B, h, T, hd) heads).

        x · cos + rotate_half(x) · sin

    No checks beyond what the arithmetic does: a model picks the rows once per forward (after
    checking the positions) and calls this for the queries and keys of every layer.
    :func:`apply_rope` is the checked entry point.

    Example:
        >>> cos, sin = rope_cos_sin(4, 3)
        >>> x = torch.randn(3, 4)
        >>> torch.equal(rope_rotate(x, cos, sin), apply_rope(x, cos, sin))
        True
    """
    return x * cos + rotate_half(x) * sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate queries or keys ``x`` (..., T, head_dim) by their positions.

    ``positions`` (T,) or broadcastable (..., T) picks rows of the tables; default 0..T-1.
    Because rotations compose, ⟨R(m) q, R(n) k⟩ = ⟨q, R(n - m) k⟩: the score depends only on
    the offset n - m, the property ``tests/test_positional.py`` checks.
    """
    check_float("x", x)
    check_rank("x", x, tuple(range(2, 9)), "(..., T, head_dim)")
    check_float("cos", cos)
    check_float("sin", sin)
    if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"cos/sin must be (n_positions, head_dim={x.shape[-1]}), got {tuple(cos.shape)} "
            f"and {tuple(sin.shape)}"
        )
    t = x.shape[-2]
    if positions is None:
        if t > cos.shape[0]:
            raise ValueError(f"sequence length {t} exceeds the RoPE table's {cos.shape[0]}")
        c, s = cos[:t], sin[:t]  # (T, hd)
    else:
        positions = _check_positions(positions)
        if positions.dim() == 0 or positions.shape[-1] != t:
            raise ValueError(f"positions must end in the sequence axis T={t} of x "
                             f"{tuple(x.shape)}, got shape {tuple(positions.shape)}")
        if positions.numel() and (positions.min() < 0 or positions.max() >= cos.shape[0]):
            raise ValueError(f"positions must lie in [0, {cos.shape[0]}), got "
                             f"{int(positions.min())}..{int(positions.max())}")
        c, s = cos[positions], sin[positions]  # (..., T, hd)
    return rope_rotate(x, c.to(x.dtype), s.to(x.dtype))  # (..., T, hd)


class RotaryEmbedding(nn.Module):
    """Holds RoPE's tables and applies them to queries and keys.

    Example:
        >>> rope = RotaryEmbedding(head_dim=4, n_positions=8)
        >>> q = torch.randn(1, 2, 3, 4)                     # (B, h, T, hd)
        >>> rope(q).shape
        torch.Size([1, 2, 3, 4])
    """

    def __init__(self, head_dim: int, n_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        cos, sin = rope_cos_sin(head_dim, n_positions, base)
        self.register_buffer("cos", cos, persistent=False)  # (T, hd)
        self.register_buffer("sin", sin, persistent=False)  # (T, hd)

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate ``x`` (..., T, head_dim); see :func:`apply_rope`."""
        return apply_rope(x, self.cos, self.sin, positions)
