"""Chapter 01 exercises: batched attention, a sliding-window causal mask, ALiBi's biases.

Each checker runs the learner's function on fixed random cases (drawn from its own seeded
generator, so the notebook's global random state is untouched) and compares the result with
``torch.nn.functional.scaled_dot_product_attention`` or with a reference built another way
(``torch.tril`` for the window, the formula of Press et al. 2022 for ALiBi), itself checked in
the tests against ``transformers``' sliding-window mask and BLOOM's ALiBi. The functions below
are the course's solutions; ``tests/test_checks_ch01_ch02.py`` and
``tests/test_checks_ch01_masks.py`` check that they pass and that the usual mistakes (no √d_k,
softmax over the wrong axis, a window off by one, a bias of the wrong sign or slope, rows
masked instead of columns, the wrong dtype) fail.

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
    "attention", "sliding_window_mask", "alibi_slopes", "alibi_bias",
    "check_attention", "check_sliding_window_mask", "check_alibi_bias",
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


def sliding_window_mask(t: int, window: int) -> torch.Tensor:
    """Boolean (t, t) mask, True where query i may attend to key j: j ≤ i and i - j < window.

    Each token sees itself and the ``window - 1`` tokens before it, as in Longformer's
    causal windows (Beltagy et al., 2020) and Mistral 7B (Jiang et al., 2023). A window of 1
    is "only itself"; a window of t or more is the plain causal mask.

    Example:
        >>> sliding_window_mask(4, 2).int()
        tensor([[1, 0, 0, 0],
                [1, 1, 0, 0],
                [0, 1, 1, 0],
                [0, 0, 1, 1]], dtype=torch.int32)
    """
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be a positive int, got {t!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int (1 = only itself), got {window!r}")
    ones = torch.ones(t, t, dtype=torch.bool)  # (T, T)
    return ones.tril() & ~ones.tril(-window)  # (T, T): on/below the diagonal, not window below


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's slope per head, the geometric sequence 2^(-8/n), 2^(-16/n), …, 2^(-8) (float32).

    This is the rule of Press et al. (2022, section 3) for a number of heads that is a power of
    two; 8 heads get 1/2, 1/4, …, 1/256.

    Example:
        >>> alibi_slopes(4)
        tensor([0.2500, 0.0625, 0.0156, 0.0039])
    """
    if isinstance(n_head, bool) or not isinstance(n_head, int) or n_head < 1 or (
            n_head & (n_head - 1)):
        raise ValueError(f"n_head must be a power of two (1, 2, 4, 8, …), got {n_head!r}")
    h = torch.arange(1, n_head + 1, dtype=torch.float64)  # (n_head,) 1 … n
    return (2.0 ** (-8.0 * h / n_head)).float()  # (n_head,)


def alibi_bias(n_head: int, t: int) -> torch.Tensor:
    """ALiBi's additive attention bias with the causal mask: (n_head, t, t), float32.

    Entry [h, i, j] is -m_h · (i - j) for a key j at or before the query i (a penalty that grows
    linearly with the distance, steeper for heads with a larger slope m_h) and -inf for a later
    key. Added to the scores q·k/√d_k, it replaces position embeddings (Press et al., 2022).

    Example:
        >>> alibi_bias(2, 3)[0]                           # head 0, slope 2^-4 = 0.0625
        tensor([[ 0.0000,    -inf,    -inf],
                [-0.0625,  0.0000,    -inf],
                [-0.1250, -0.0625,  0.0000]])
    """
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ValueError(f"t must be a positive int, got {t!r}")
    pos = torch.arange(t)  # (T,)
    offset = (pos[None, :] - pos[:, None]).float()  # (T, T): j - i = -(distance back) ≤ 0 at j ≤ i
    bias = alibi_slopes(n_head)[:, None, None] * offset  # (n_head, T, T): -m_h · (i - j)
    later = pos[None, :] > pos[:, None]  # (T, T): key j after query i
    return bias.masked_fill(later, float("-inf"))  # (n_head, T, T)


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


def check_sliding_window_mask(fn: Callable[[int, int], torch.Tensor]) -> None:
    """Check ``fn(t, window)``: the (t, t) boolean mask with True where 0 ≤ i - j < window.

    The cases include a window of 1 (only itself), windows of t and beyond (the plain causal
    mask) and random sizes in between, so a window one too wide or too narrow, a window that
    looks ahead, and a mask of another dtype all show.
    """
    require_function(fn, "sliding_window_mask")
    gen = torch.Generator().manual_seed(103)
    cases = [(1, 1), (5, 1), (6, 2), (4, 4), (3, 7)]
    for _ in range(4):
        t = int(torch.randint(4, 13, (1,), generator=gen))
        cases.append((t, int(torch.randint(2, t, (1,), generator=gen))))

    def reference(t: int, window: int) -> torch.Tensor:
        i = torch.arange(t)[:, None]  # (T, 1) query positions
        j = torch.arange(t)[None, :]  # (1, T) key positions
        return (j <= i) & (i - j < window)  # (T, T)

    compare(fn, reference, cases, name="sliding_window_mask",
            hint="row i is the query, column j the key: True when j <= i (not later) and "
                 "i - j < window (the query itself counts as one of the window); dtype "
                 "torch.bool")


def check_alibi_bias(fn: Callable[[int, int], torch.Tensor]) -> None:
    """Check ``fn(n_head, t)`` against ALiBi's formula: float32 (n_head, t, t) with
    -m_h · (i - j) at and below the diagonal and -inf above it, m_h = 2^(-8h/n_head).

    Several head counts (1 to 16) tell a slope sequence of the wrong base or start from the
    right one; a positive bias, a bias on the rows, or one without the causal -inf all show.
    """
    require_function(fn, "alibi_bias")
    gen = torch.Generator().manual_seed(104)
    cases = [(1, 3), (2, 4), (8, 6), (16, 5), (4, 1)]
    for _ in range(3):
        cases.append((2 ** int(torch.randint(0, 5, (1,), generator=gen)),
                      int(torch.randint(2, 10, (1,), generator=gen))))

    def reference(n_head: int, t: int) -> torch.Tensor:
        slopes = 2.0 ** (-8.0 * torch.arange(1, n_head + 1, dtype=torch.float64) / n_head)
        i = torch.arange(t, dtype=torch.float64)[:, None]  # (T, 1) query positions
        j = torch.arange(t, dtype=torch.float64)[None, :]  # (1, T) key positions
        bias = slopes[:, None, None] * (j - i)  # (n_head, T, T) = -m_h (i - j), in float64
        return bias.masked_fill(j > i, float("-inf")).float()  # (n_head, T, T)

    compare(fn, reference, cases, name="alibi_bias", atol=1e-7, rtol=1e-6,
            hint="entry [h, i, j] = -m_h * (i - j) for j <= i (a penalty: minus, growing with "
                 "the distance back), -inf for j > i; slopes m_h = 2**(-8 * h / n_head) for "
                 "h = 1..n_head; float32")
