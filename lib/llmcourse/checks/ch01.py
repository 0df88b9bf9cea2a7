"""Chapter 01 exercises: scaled dot-product attention, the causal mask, padding masks.

Each checker runs the learner's function on fixed random cases (drawn from its own seeded
generator, so the notebook's global random state is untouched) and compares the result with
``torch.nn.functional.scaled_dot_product_attention`` or ``torch.tril``, which no one here wrote.
The functions below are the course's solutions; ``tests/test_checks_ch01_ch02.py`` checks that
they pass and that the usual mistakes (no √d_k, softmax over the wrong axis, a mask off by one)
fail.

Example:
    >>> from llmcourse.checks.ch01 import attention, check_attention
    >>> check_attention(attention)
    ✓ attention: 6 case(s) match the reference
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmcourse.checks import compare, require_function

__all__ = [
    "attention", "causal_mask", "padded_attention",
    "check_attention", "check_causal_mask", "check_padded_attention",
]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V over any leading batch axes.

    Args:
        q: (..., T_q, d_k) queries.
        k: (..., T_k, d_k) keys.
        v: (..., T_k, d_v) values.

    Returns:
        (..., T_q, d_v): for each query, the weighted average of the values.

    Example:
        >>> q = k = v = torch.eye(2)                      # two orthogonal tokens
        >>> attention(q, k, v).sum(dim=-1)                # rows of averages still sum to 1
        tensor([1., 1.])
    """
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k), a distribution over keys
    return weights @ v  # (..., T_q, d_v)


def causal_mask(t: int) -> torch.Tensor:
    """Boolean (t, t) mask, True where query i may attend to key j, i.e. j ≤ i.

    Example:
        >>> causal_mask(3).int()
        tensor([[1, 0, 0],
                [1, 1, 0],
                [1, 1, 1]], dtype=torch.int32)
    """
    return torch.ones(t, t, dtype=torch.bool).tril()  # (T, T), on and below the diagonal


def padded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     lengths: torch.Tensor) -> torch.Tensor:
    """Attention for a batch of sequences padded at the end: keys at j ≥ lengths[b] are ignored.

    Args:
        q: (B, T_q, d_k) queries.
        k: (B, T_k, d_k) keys.
        v: (B, T_k, d_v) values.
        lengths: (B,) integers in [1, T_k], the number of real (non-padding) keys per sequence.

    Returns:
        (B, T_q, d_v). Padding keys get weight exactly 0, so what sits in the padding never
        changes the result.

    Example:
        >>> k = v = torch.tensor([[[1.0], [5.0]]])          # (B=1, T=2, d=1); token 2 is padding
        >>> padded_attention(k, k, v, torch.tensor([1]))    # only the first key counts
        tensor([[[1.],
                 [1.]]])
    """
    t_k = k.shape[-2]
    real = torch.arange(t_k, device=k.device) < lengths[:, None]  # (B, T_k), True at real keys
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, T_q, T_k)
    scores = scores.masked_fill(~real[:, None, :], float("-inf"))  # (B, T_q, T_k)
    weights = torch.softmax(scores, dim=-1)  # (B, T_q, T_k), 0 at padding keys
    return weights @ v  # (B, T_q, d_v)


def _qkv(gen: torch.Generator, batch: tuple[int, ...], t_q: int, t_k: int, d_k: int, d_v: int,
         dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.randn(*batch, t_q, d_k, generator=gen, dtype=dtype)  # (..., T_q, d_k)
    k = torch.randn(*batch, t_k, d_k, generator=gen, dtype=dtype)  # (..., T_k, d_k)
    v = torch.randn(*batch, t_k, d_v, generator=gen, dtype=dtype)  # (..., T_k, d_v)
    return q, k, v


def check_attention(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                    ) -> None:
    """Check ``fn(q, k, v)`` against ``torch.nn.functional.scaled_dot_product_attention``.

    Cases: a single sequence (T, d), a batch, a batch of heads (B, h, T, d), cross-attention
    with T_q ≠ T_k and d_v ≠ d_k (where a softmax over the wrong axis shows), and float64.
    """
    require_function(fn, "attention")
    gen = torch.Generator().manual_seed(101)
    cases = [
        _qkv(gen, (), 4, 4, 8, 8),
        _qkv(gen, (2,), 5, 5, 16, 16),
        _qkv(gen, (2, 3), 6, 6, 4, 4),
        _qkv(gen, (2,), 3, 7, 8, 5),
        _qkv(gen, (1, 2), 1, 9, 32, 3),
        _qkv(gen, (3,), 4, 6, 12, 12, torch.float64),
    ]
    compare(fn, F.scaled_dot_product_attention, cases, name="attention",
            hint="scores = q @ k.transpose(-2, -1) / sqrt(d_k) (use -2, -1, not .T, so batch "
                 "axes stay put); softmax over the last axis (the keys); then @ v")


def check_causal_mask(fn: Callable[[int], torch.Tensor]) -> None:
    """Check ``fn(t)`` returns the (t, t) boolean mask with True on and below the diagonal."""
    require_function(fn, "causal_mask")
    cases = [(t,) for t in (1, 2, 3, 5, 8)]

    def learner(t: int) -> torch.Tensor:
        mask = fn(t)
        # compare() accepts equal values of another dtype; a float mask would break ~mask later.
        if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
            raise TypeError(f"the mask must have dtype torch.bool, got {mask.dtype}")
        return mask

    compare(learner, lambda t: torch.ones(t, t, dtype=torch.bool).tril(), cases, name="causal_mask",
            hint="query i (row) may see keys 0..i (columns), itself included: True on and below "
                 "the diagonal, dtype torch.bool (torch.tril)")


def check_padded_attention(
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    """Check ``fn(q, k, v, lengths)`` against torch's attention with a key-padding mask.

    Every case has some sequence shorter than the batch's length, so a mask that keeps one
    padding key too many (``<=`` for ``<``) or masks the queries instead of the keys shows.
    """
    require_function(fn, "padded_attention")
    gen = torch.Generator().manual_seed(102)
    shapes = [((2,), 4, 4, 8, 8, [2, 4]), ((3,), 5, 5, 4, 6, [5, 1, 3]),
              ((2,), 3, 6, 16, 4, [6, 2]), ((4,), 6, 6, 8, 8, [1, 2, 3, 4])]
    cases = []
    for batch, t_q, t_k, d_k, d_v, lengths in shapes:
        q, k, v = _qkv(gen, batch, t_q, t_k, d_k, d_v)
        cases.append((q, k, v, torch.tensor(lengths)))

    def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  lengths: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(k.shape[-2]) < lengths[:, None]  # (B, T_k)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, :])

    compare(fn, reference, cases, name="padded_attention",
            hint="key j of sequence b is real when j < lengths[b]; set the scores of the other "
                 "keys (columns, not rows) to -inf before the softmax")
