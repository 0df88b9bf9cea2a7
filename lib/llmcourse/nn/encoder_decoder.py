"""The two halves of the original Transformer (Vaswani et al., 2017, Figure 1): the encoder
block, the decoder block, and the cross-attention that joins them.

An **encoder block** reads the whole source at once: self-attention with no causal mask (every
source token may look at every other, left and right), only padding hidden, then the
feed-forward network. A **decoder block** writes the target one token at a time: causal
self-attention over the target so far, then **cross-attention**, whose queries come from the
target and whose keys and values come from the encoder's output (the "memory"), then the
feed-forward network. Cross-attention is where the question "which source words matter for the
next target word?" is asked:

    CrossAttention(X_tgt, M) = softmax((X_tgt W_Q)(M W_K)ᵀ / √d_k + padding) (M W_V)

Both blocks reuse the course's parts: :class:`~llmcourse.nn.block.SelfAttention` (the GPT's
attention, here also without the causal mask), :class:`~llmcourse.nn.feedforward.FeedForward`,
:class:`~llmcourse.nn.norms.LayerNorm`, and torch's fused attention kernel, whose math
:func:`llmcourse.nn.attention.scaled_dot_product_attention` spells out (tests check both
against ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer`` with copied weights).

The encoder's keys and values are the same at every decoding step, so a decoder computes them
once per layer (:meth:`CrossAttention.memory_kv`) and reuses them for every generated token.

Example:
    >>> enc, dec = EncoderBlock(16, 4), DecoderBlock(16, 4)
    >>> src, tgt = torch.randn(2, 7, 16), torch.randn(2, 5, 16)     # (B, S, C), (B, T, C)
    >>> memory = enc(src)                                           # (B, S, C)
    >>> dec(tgt, dec.cross_attn.memory_kv(memory)).shape            # (B, T, C)
    torch.Size([2, 5, 16])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_features, check_positive
from llmcourse.nn.attention import check_attn_mask, scaled_dot_product_attention
from llmcourse.nn.block import SelfAttention
from llmcourse.nn.feedforward import FeedForward
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.linear import Linear
from llmcourse.nn.norms import LayerNorm

__all__ = ["CrossAttention", "EncoderBlock", "DecoderBlock"]

MemoryKV = tuple[torch.Tensor, torch.Tensor]  # the encoder's keys and values, (B, h, S, hd) each


class CrossAttention(nn.Module):
    """Multi-head attention from target positions (queries) to source positions (keys/values).

    ``c_q`` projects the decoder's states to queries; ``c_kv`` projects the encoder's output to
    keys and values in one matrix product (the two are always needed together).
    """

    def __init__(self, n_embd: int, n_head: int, *, bias: bool = True, dropout: float = 0.0
                 ) -> None:
        super().__init__()
        check_positive("n_embd", n_embd)
        check_positive("n_head", n_head)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.c_q = Linear(n_embd, n_embd, bias=bias)
        self.c_kv = Linear(n_embd, 2 * n_embd, bias=bias)
        self.c_proj = Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, h, T, hd)

    def memory_kv(self, memory: torch.Tensor) -> MemoryKV:
        """Keys and values of the encoder's output ``memory`` (B, S, C), (B, h, S, hd) each:
        computed once per source, reused at every decoding step."""
        check_features("memory", memory, self.n_embd)
        k, v = self.c_kv(memory).split(self.n_embd, dim=2)  # 2 × (B, S, C)
        return self._heads(k), self._heads(v)  # (B, h, S, hd) each

    def forward(self, x: torch.Tensor, memory_kv: MemoryKV, memory_mask: torch.Tensor | None = None,
                *, need_weights: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``x`` (B, T, C) to the memory's keys/values (B, h, S, hd).

        ``memory_mask`` (bool, True = attend; broadcastable to (B, h, T, S)) hides the source's
        padding. With ``need_weights`` the attention weights (B, h, T, S) are returned too,
        computed by the course's own :func:`scaled_dot_product_attention`.
        """
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 3
                and x.shape[-1] == self.n_embd):
            check_features("x", x, self.n_embd)  # says what is wrong
        k, v = memory_kv
        b, t, c = x.shape
        if k.shape[0] != b or k.shape[1] != self.n_head or k.shape != v.shape:
            raise ValueError(f"memory keys/values of shape {tuple(k.shape)}, {tuple(v.shape)} do "
                             f"not fit queries (B={b}, h={self.n_head}): expected (B, h, S, hd)")
        if memory_mask is not None:
            check_attn_mask(memory_mask, (b, self.n_head, t, k.shape[2]))
        q = self._heads(self.c_q(x))  # (B, h, T, hd)
        if need_weights:
            y, weights = scaled_dot_product_attention(q, k, v, memory_mask, return_weights=True)
        else:
            drop = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C): heads side by side
        y = self.resid_dropout(self.c_proj(y))  # (B, T, C)
        return (y, weights) if need_weights else y


class EncoderBlock(nn.Module):
    """One encoder block: bidirectional self-attention, then the feed-forward network.

    post-LN (2017, the default here as in ``nn.TransformerEncoderLayer``):
        x = LN₁(x + SelfAttn(x));   x = LN₂(x + FFN(x))
    pre-LN (``norm_first=True``):
        x = x + SelfAttn(LN₁(x));   x = x + FFN(LN₂(x))
    """

    def __init__(self, n_embd: int, n_head: int, *, hidden: int | None = None,
                 bias: bool = True, dropout: float = 0.0, norm_first: bool = False,
                 activation: str = "relu", eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = SelfAttention(n_embd, n_head, bias=bias, dropout=dropout, causal=False)
        self.ln_1 = LayerNorm(n_embd, bias=bias, eps=eps)
        self.mlp = FeedForward(n_embd, hidden=hidden, bias=bias, dropout=dropout,
                               activation=activation)
        self.ln_2 = LayerNorm(n_embd, bias=bias, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, C) → (B, S, C); ``mask`` (bool, True = attend, broadcastable to
        (B, h, S, S)) hides the padding."""
        if self.norm_first:
            x = x + self.attn(self.ln_1(x), mask)  # (B, S, C)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, mask))  # (B, S, C)
        return self.ln_2(x + self.mlp(x))


class DecoderBlock(nn.Module):
    """One decoder block: causal self-attention, cross-attention to the encoder, feed-forward.

    post-LN (2017):  x = LN₁(x + SelfAttn(x));  x = LN₂(x + CrossAttn(x, M));  x = LN₃(x + FFN(x))
    pre-LN:          x = x + SelfAttn(LN₁(x));  x = x + CrossAttn(LN₂(x), M);  x = x + FFN(LN₃(x))
    """

    def __init__(self, n_embd: int, n_head: int, *, hidden: int | None = None,
                 bias: bool = True, dropout: float = 0.0, norm_first: bool = False,
                 activation: str = "relu", eps: float = 1e-5) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = SelfAttention(n_embd, n_head, bias=bias, dropout=dropout, causal=True)
        self.ln_1 = LayerNorm(n_embd, bias=bias, eps=eps)
        self.cross_attn = CrossAttention(n_embd, n_head, bias=bias, dropout=dropout)
        self.ln_2 = LayerNorm(n_embd, bias=bias, eps=eps)
        self.mlp = FeedForward(n_embd, hidden=hidden, bias=bias, dropout=dropout,
                               activation=activation)
        self.ln_3 = LayerNorm(n_embd, bias=bias, eps=eps)

    def forward(self, x: torch.Tensor, memory_kv: MemoryKV,
                memory_mask: torch.Tensor | None = None, *, self_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """(B, T, C) → (B, T, C).

        ``memory_kv`` are this block's keys/values of the encoder output
        (:meth:`CrossAttention.memory_kv`), ``memory_mask`` hides the source's padding;
        ``self_mask`` replaces the plain causal mask (the model builds it when the target has
        padding); ``cache`` and ``layer`` keep this block's self-attention keys/values for
        step-by-step decoding.
        """
        if self.norm_first:
            x = x + self.self_attn(self.ln_1(x), self_mask, cache, layer)  # (B, T, C)
            x = x + self.cross_attn(self.ln_2(x), memory_kv, memory_mask)
            return x + self.mlp(self.ln_3(x))
        x = self.ln_1(x + self.self_attn(x, self_mask, cache, layer))  # (B, T, C)
        x = self.ln_2(x + self.cross_attn(x, memory_kv, memory_mask))
        return self.ln_3(x + self.mlp(x))
