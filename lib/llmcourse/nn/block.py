"""Self-attention (causal for a decoder, bidirectional for an encoder) and the Transformer
block in its two arrangements (pre-LN as in GPT-2, post-LN as in the original Transformer).

Parameter names follow GPT-2's (``ln_1``, ``attn.c_attn``, ``mlp.c_fc`` …) so that a state dict
converts to Hugging Face's by renaming nothing and transposing the linear weights.

Example:
    >>> x = torch.randn(2, 5, 16)                                # (B, T, C)
    >>> Block(n_embd=16, n_head=4)(x).shape
    torch.Size([2, 5, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_features, check_positive
from llmcourse.nn.attention import causal_mask, check_attn_mask
from llmcourse.nn.feedforward import FeedForward
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.linear import Linear
from llmcourse.nn.norms import LayerNorm

__all__ = ["SelfAttention", "CausalSelfAttention", "Block"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused Q/K/V projection (GPT-2's ``c_attn``).

    ``causal=True`` (a decoder: GPT, the decoder of chapter 06) lets each position see itself
    and the positions before it; ``causal=False`` (an encoder) lets every position see every
    other one, except what a ``mask`` forbids (padding).

    Same math as :func:`llmcourse.nn.attention.scaled_dot_product_attention` with a causal mask
    (tests check it); the forward calls torch's fused kernel, which is faster and never builds
    the (T, T) score matrix in memory.

    The checks here are O(1) (dtype, shapes; a float mask is scanned for NaN as torch's own
    function would need): this forward runs once per layer and per decoding step, and the
    model checked the values of its input where they entered.
    """

    def __init__(self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0,
                 causal: bool = True) -> None:
        super().__init__()
        check_positive("n_embd", n_embd)
        check_positive("n_head", n_head)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.c_attn = Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.causal = causal

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """Attend within ``x`` (B, T, C).

        ``mask`` (bool, True = attend, or float, added to the scores; broadcastable to
        (B, h, T, S)) replaces the plain causal mask (a causal model builds it, causal part
        included, when there is padding; an encoder passes its padding mask).
        With ``cache``, this layer's keys/values are appended and attention runs
        over all S = cached + T positions.
        """
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 3
                and x.shape[-1] == self.n_embd):
            check_features("x", x, self.n_embd)  # says what is wrong
        b, t, c = x.shape
        s = t + (cache.length if cache is not None else 0)  # keys attended over
        if mask is not None:  # before anything is written to the cache
            check_attn_mask(mask, (b, self.n_head, t, s))
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 × (B, T, C)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        k = k.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        v = v.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, h, S, hd)
        drop = self.dropout if self.training else 0.0
        if mask is None and self.causal and t > 1 and s != t:
            # torch's is_causal aligns the mask to the top-left corner; with cached keys the
            # new queries are the *last* t positions, so build the bottom-right-aligned mask.
            mask = causal_mask(t, s, device=x.device)  # (T, S)
        if mask is None:
            # A single new query (t == 1) is the last position: it may see every key.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop,
                                               is_causal=self.causal and t > 1)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


CausalSelfAttention = SelfAttention  # the GPT's name for it: causal is the default


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
        """(B, T, C) → (B, T, C); ``mask``, ``cache`` and ``layer`` as in
        :meth:`CausalSelfAttention.forward`, which checks the mask."""
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 3
                and x.shape[-1] == self.attn.n_embd):
            check_features("x", x, self.attn.n_embd)  # says what is wrong
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), mask, cache, layer)  # (B, T, C)
            x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        else:
            x = self.ln_1(x + self.attn(x, mask, cache, layer))  # (B, T, C)
            x = self.ln_2(x + self.mlp(x))  # (B, T, C)
        return x
