"""The parts of a Transformer block: LayerNorm, the GELU feed-forward, causal self-attention,
and the block itself in its two arrangements (pre-LN as in GPT-2, post-LN as in the original
Transformer).

Parameter names follow GPT-2's (``ln_1``, ``attn.c_attn``, ``mlp.c_fc`` …) so that a state dict
converts to Hugging Face's by renaming nothing and transposing the linear weights.

Example:
    >>> x = torch.randn(2, 5, 16)                                # (B, T, C)
    >>> Block(n_embd=16, n_head=4)(x).shape
    torch.Size([2, 5, 16])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_float, check_last_dim, check_positive, check_rank
from .attention import causal_mask
from .kv_cache import KVCache

__all__ = ["layer_norm", "LayerNorm", "gelu_tanh", "FeedForward", "CausalSelfAttention", "Block"]


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm written out (Ba et al., 2016): normalise each vector over its features.

        y = (x − mean(x)) / √(var(x) + ε) · γ + β        (biased variance, as torch uses)

    ``weight`` (γ) and ``bias`` (β) have shape (C,) or are None.

    Example:
        >>> y = layer_norm(torch.tensor([[1.0, 2.0, 3.0]]), None, None)
        >>> [round(v, 4) for v in y[0].tolist()]
        [-1.2247, 0.0, 1.2247]
    """
    check_float("x", x)
    check_rank("x", x, tuple(range(1, 9)), "(..., C)")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            check_float(name, p)
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
        """Normalise ``x`` (..., dim) over its last axis."""
        check_float("x", x)
        check_last_dim("x", x, self.weight.shape[0], "the LayerNorm's dim")
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


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


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused Q/K/V projection (GPT-2's ``c_attn``).

    Same math as :func:`llmcourse.attention.scaled_dot_product_attention` with a causal mask
    (tests check it); the forward calls torch's fused kernel, which is faster and never builds
    the (T, T) score matrix in memory.
    """

    def __init__(self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0
                 ) -> None:
        super().__init__()
        check_positive("n_embd", n_embd)
        check_positive("n_head", n_head)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """Attend within ``x`` (B, T, C).

        ``mask`` (broadcastable to (B, h, T, S), True = attend) replaces the plain causal
        mask; the model builds it when there is padding or a cache. With ``cache``, this
        layer's keys/values are appended and attention runs over all S cached positions.
        """
        check_float("x", x)
        check_rank("x", x, (3,), "(batch, time, n_embd)")
        check_last_dim("x", x, self.n_embd, "n_embd")
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 × (B, T, C)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        k = k.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        v = v.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, h, S, hd), S = cached + T
        drop = self.dropout if self.training else 0.0
        if mask is None and k.shape[-2] != t:
            # torch's is_causal aligns the mask to the top-left corner; with cached keys the
            # new queries are the *last* t positions, so build the bottom-right-aligned mask.
            mask = causal_mask(t, k.shape[-2], device=x.device)  # (T, S)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    """One Transformer decoder block.

    pre-LN (GPT-2):   x = x + Attn(LN₁(x));   x = x + MLP(LN₂(x))
    post-LN (2017):   x = LN₁(x + Attn(x));   x = LN₂(x + MLP(x))

    Pre-LN keeps a clean residual path from the output back to the input, which is why deep
    pre-LN stacks train without warmup tricks; notebook 03 measures the gradient norms.
    """

    def __init__(self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0,
                 norm_first: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = LayerNorm(n_embd, bias=bias, eps=eps)
        self.attn = CausalSelfAttention(n_embd, n_head, bias=bias, dropout=dropout)
        self.ln_2 = LayerNorm(n_embd, bias=bias, eps=eps)
        self.mlp = FeedForward(n_embd, bias=bias, dropout=dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """(B, T, C) → (B, T, C)."""
        check_float("x", x)
        check_rank("x", x, (3,), "(batch, time, n_embd)")
        check_last_dim("x", x, self.attn.n_embd, "n_embd")
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), mask, cache, layer)  # (B, T, C)
            x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        else:
            x = self.ln_1(x + self.attn(x, mask, cache, layer))  # (B, T, C)
            x = self.ln_2(x + self.mlp(x))  # (B, T, C)
        return x
