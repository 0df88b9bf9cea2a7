"""The position-wise feed-forward network of a Transformer block.

- :class:`FeedForward` (GPT-2, the original Transformer): expand to 4·C, a nonlinearity (GELU
  in GPT-2, ReLU in 2017), project back. Parameter names follow GPT-2's (``c_fc``, ``c_proj``).
- :class:`SwiGLU` (Shazeer 2020, "GLU Variants Improve Transformer"; Llama): two expansions,
  one passed through SiLU and used as a gate on the other, then the projection back. Parameter
  names follow ``transformers``' Llama (``gate_proj``, ``up_proj``, ``down_proj``).

Example:
    >>> ffn = FeedForward(n_embd=8)
    >>> ffn(torch.randn(2, 3, 8)).shape                      # (B, T, C) -> (B, T, C)
    torch.Size([2, 3, 8])
    >>> SwiGLU(n_embd=8, hidden=16)(torch.randn(2, 3, 8)).shape
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_float, check_last_dim, check_positive
from llmcourse.nn.linear import Linear

__all__ = ["gelu_tanh", "FeedForward", "silu", "SwiGLU"]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016), the one GPT-2 uses:

        GELU(x) ≈ ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))

    Example:
        >>> round(gelu_tanh(torch.tensor(1.0)).item(), 4)
        0.8412
    """
    check_float("x", x)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = ("gelu", "relu")  # GPT-2's tanh-approximated GELU; the 2017 paper's ReLU


class FeedForward(nn.Module):
    """Position-wise MLP: expand to ``hidden`` (default 4·C), ``activation``, project back
    (applied to each token alone).

        FFN(x) = act(x W₁ + b₁) W₂ + b₂      act = GELU (GPT-2) or max(0, ·) (Vaswani et al.)
    """

    def __init__(self, n_embd: int, *, hidden: int | None = None, bias: bool = True,
                 dropout: float = 0.0, activation: str = "gelu") -> None:
        super().__init__()
        check_positive("n_embd", n_embd)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        if hidden is None:
            hidden = 4 * n_embd  # GPT-2's expansion
        else:  # 0 must not silently mean "the default"
            check_positive("hidden", hidden)
        self.c_fc = Linear(n_embd, hidden, bias=bias)
        self.c_proj = Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) → (..., C).

        Checks the dtype and the last axis only (O(1)); the values were checked where they
        entered the model, so no scan runs here on every layer and step."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            check_float("x", x)  # names the wrong type or dtype
        check_last_dim("x", x, self.c_fc.in_features, "n_embd")
        h = self.c_fc(x)  # (..., 4C)
        # = gelu_tanh, fused; or the paper's ReLU
        h = F.gelu(h, approximate="tanh") if self.activation == "gelu" else F.relu(h)
        return self.dropout(self.c_proj(h))  # (..., C)


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, also called swish (Elfwing et al., 2018; Ramachandran et al., 2017):

        SiLU(x) = x · σ(x) = x / (1 + e⁻ˣ)

    Example:
        >>> round(silu(torch.tensor(1.0)).item(), 4)
        0.7311
    """
    check_float("x", x)
    return x * torch.sigmoid(x)


class SwiGLU(nn.Module):
    """The gated feed-forward network of Llama (Shazeer 2020), applied to each token alone:

        SwiGLU(x) = (SiLU(x W_gate) ⊙ (x W_up)) W_down

    Three matrices instead of two, no biases: ``gate_proj`` and ``up_proj`` (C → hidden),
    ``down_proj`` (hidden → C). The gate's SiLU decides, feature by feature, how much of the
    "up" projection goes through. With ``hidden`` = 8C/3 it has the parameters of GPT-2's
    4C MLP (3 · C · 8C/3 = 8C²), the comparison Shazeer makes.

    Example:
        >>> torch.manual_seed(0) and None
        >>> ffn, x = SwiGLU(4, hidden=6), torch.randn(2, 4)
        >>> by_hand = (silu(x @ ffn.gate_proj.weight.T) * (x @ ffn.up_proj.weight.T)
        ...            ) @ ffn.down_proj.weight.T
        >>> torch.allclose(ffn(x), by_hand, atol=1e-6)
        True
    """

    def __init__(self, n_embd: int, hidden: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("n_embd", n_embd)
        check_positive("hidden", hidden)
        self.gate_proj = Linear(n_embd, hidden, bias=False)
        self.up_proj = Linear(n_embd, hidden, bias=False)
        self.down_proj = Linear(hidden, n_embd, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) → (..., C). O(1) checks, as :class:`FeedForward`."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            check_float("x", x)  # names the wrong type or dtype
        check_last_dim("x", x, self.gate_proj.in_features, "n_embd")
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (..., hidden): SiLU on the gate only
        return self.dropout(self.down_proj(h))  # (..., C)
