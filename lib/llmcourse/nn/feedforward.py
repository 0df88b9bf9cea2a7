"""The position-wise feed-forward network of a Transformer block: expand to 4·C, GELU, project
back. Parameter names follow GPT-2's (``c_fc``, ``c_proj``).

Example:
    >>> ffn = FeedForward(n_embd=8)
    >>> ffn(torch.randn(2, 3, 8)).shape                      # (B, T, C) -> (B, T, C)
    torch.Size([2, 3, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_float, check_last_dim

__all__ = ["gelu_tanh", "FeedForward"]


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016), the one GPT-2 uses:

        GELU(x) ≈ ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))

    Example:
        >>> round(gelu_tanh(torch.tensor(1.0)).item(), 4)
        0.8412
    """
    check_float("x", x)
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class FeedForward(nn.Module):
    """Position-wise MLP: expand to 4·C, GELU, project back (applied to each token alone)."""

    def __init__(self, n_embd: int, *, hidden: int | None = None, bias: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        hidden = hidden or 4 * n_embd
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) → (..., C)."""
        check_float("x", x)
        check_last_dim("x", x, self.c_fc.in_features, "n_embd")
        h = F.gelu(self.c_fc(x), approximate="tanh")  # (..., 4C); = gelu_tanh, fused
        return self.dropout(self.c_proj(h))  # (..., C)
