"""Normalisation layers.

- Layer normalisation (Ba et al., 2016; GPT-2): each vector rescaled to mean 0 and variance 1
  over its features, then scaled and shifted by learned γ and β.
- RMS normalisation (Zhang & Sennrich, 2019; Llama): each vector divided by its root mean
  square, then scaled by a learned γ. No mean is subtracted and there is no shift: one
  reduction instead of two, and a parameter vector fewer.

Example:
    >>> norm = LayerNorm(4)
    >>> y = norm(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    >>> round(y.mean().item(), 6), round(y.var(unbiased=False).item(), 3)
    (0.0, 1.0)
    >>> y = RMSNorm(4)(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    >>> round(y.pow(2).mean().sqrt().item(), 3)              # root mean square 1, mean not 0
    1.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import (
    check_finite,
    check_float,
    check_last_dim,
    check_positive,
    check_rank,
)

__all__ = ["layer_norm", "LayerNorm", "rms_norm", "RMSNorm"]


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm written out (Ba et al., 2016): normalise each vector over its features.

        y = (x − mean(x)) / √(var(x) + ε) · γ + β        (biased variance, as torch uses)

    ``weight`` (γ) and ``bias`` (β) have shape (C,) or are None. Every input must be finite:
    one inf in a vector would make its mean and variance inf and the whole output NaN.

    Example:
        >>> y = layer_norm(torch.tensor([[1.0, 2.0, 3.0]]), None, None)
        >>> [round(v, 4) for v in y[0].tolist()]
        [-1.2247, 0.0, 1.2247]
    """
    check_finite("x", x)
    check_rank("x", x, tuple(range(1, 9)), "(..., C)")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            check_finite(name, p)
            if p.shape != x.shape[-1:]:
                raise ValueError(f"{name} must have shape (C,) = ({x.shape[-1]},) to match x "
                                 f"{tuple(x.shape)}, got {tuple(p.shape)}")
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1)
    y = (x - mean) / torch.sqrt(var + eps)  # (..., C)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias. Same math as :func:`layer_norm` (tested equal); the
    forward uses torch's fused kernel because it is faster."""

    def __init__(self, dim: int, *, bias: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        check_positive("dim", dim)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., dim) over its last axis.

        Checks the dtype and the last axis only (O(1)), not the values: inside a model this
        runs twice per layer and step, and the model checked its input where it entered."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            check_float("x", x)  # names the wrong type or dtype
        check_last_dim("x", x, self.weight.shape[0], "the LayerNorm's dim")
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm written out (Zhang & Sennrich, 2019): divide each vector by its root mean square.

        y = x / √(mean(x²) + ε) · γ

    Unlike :func:`layer_norm` the mean is not subtracted first: a vector keeps its direction
    and only its length is normalised (to √C). ``weight`` (γ) has shape (C,) or is None. Every
    input must be finite, as for :func:`layer_norm`.

    Example:
        >>> y = rms_norm(torch.tensor([[1.0, 2.0, 3.0]]), None)
        >>> [round(v, 4) for v in y[0].tolist()]                # x / √(14/3)
        [0.4629, 0.9258, 1.3887]
    """
    check_finite("x", x)
    check_rank("x", x, tuple(range(1, 9)), "(..., C)")
    if weight is not None:
        check_finite("weight", weight)
        if weight.shape != x.shape[-1:]:
            raise ValueError(f"weight must have shape (C,) = ({x.shape[-1]},) to match x "
                             f"{tuple(x.shape)}, got {tuple(weight.shape)}")
    ms = x.pow(2).mean(dim=-1, keepdim=True)  # (..., 1) mean square
    y = x * torch.rsqrt(ms + eps)  # (..., C)
    return y if weight is None else y * weight


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain γ (initialised to ones), as in Llama. Same math as
    :func:`rms_norm` and as ``torch.nn.RMSNorm(dim, eps=eps)`` (both tested equal); the forward
    uses torch's fused kernel.

    ``eps`` defaults to 1e-5, Llama 2's ``rms_norm_eps`` (``torch.nn.RMSNorm`` would default to
    the dtype's machine epsilon, ``transformers``' ``LlamaConfig`` to 1e-6).

    Example:
        >>> norm, x = RMSNorm(3), torch.tensor([[2.0, -2.0, 4.0]])
        >>> torch.allclose(norm(x), torch.nn.RMSNorm(3, eps=1e-5)(x))
        True
    """

    def __init__(self, dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        check_positive("dim", dim)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be a small positive number, got {eps!r}")
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (..., dim) over its last axis; O(1) checks, as :class:`LayerNorm`."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            check_float("x", x)  # names the wrong type or dtype
        check_last_dim("x", x, self.weight.shape[0], "the RMSNorm's dim")
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
