"""Grouped-query attention with rotary positions: the attention of Llama-style models.

Two changes to GPT-2's multi-head attention (:class:`llmcourse.nn.block.SelfAttention`):

- **Rotary positions inside attention** (RoPE, Su et al. 2021). Nothing is added to the token
  embeddings; instead every query and key is rotated by its position, pair by pair, so that
  the score ⟨R(m) q, R(n) k⟩ depends on the offset n − m only (:mod:`llmcourse.nn.positional`,
  with Llama's "rotate half" pairing: dimension i goes with i + head_dim/2).
- **Grouped-query attention** (GQA, Ainslie et al. 2023). ``n_head`` query heads share
  ``n_kv_head`` heads of keys and values: query head j reads key/value head
  j // (n_head / n_kv_head). ``n_kv_head = n_head`` is multi-head attention, ``n_kv_head = 1``
  multi-query attention (Shazeer 2019). The key/value projections, and the KV cache, shrink
  by n_head / n_kv_head: the cache stores the ``n_kv_head`` heads only, and the sharing
  happens inside the attention product.

Parameter names follow ``transformers``' Llama (``q_proj``, ``k_proj``, ``v_proj``,
``o_proj``); there are no biases.

Example:
    >>> from llmcourse.nn.positional import rope_cos_sin
    >>> attn = GroupedQueryAttention(n_embd=32, n_head=4, n_kv_head=2)    # head_dim 8
    >>> cos, sin = rope_cos_sin(8, 16)                                    # (16, 8) each
    >>> x = torch.randn(2, 5, 32)                                         # (B, T, C)
    >>> attn(x, cos[:5], sin[:5]).shape, attn.k_proj.weight.shape         # keys: 2 heads × 8
    (torch.Size([2, 5, 32]), torch.Size([16, 32]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_features, check_positive, check_rank, check_tensor
from llmcourse.nn.attention import causal_mask, check_attn_mask
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.linear import Linear
from llmcourse.nn.positional import rope_rotate

__all__ = ["repeat_kv", "GroupedQueryAttention"]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Give each of the ``n_rep`` query heads of a group its copy of the group's key/value
    head: (B, n_kv_head, S, hd) → (B, n_kv_head · n_rep, S, hd), head j of the result being
    head j // n_rep of ``x``.

    That is ``x.repeat_interleave(n_rep, dim=1)`` (kv heads a, b → a, a, b, b), not
    ``x.repeat(1, n_rep, 1, 1)`` (→ a, b, a, b), which would pair query heads with the wrong
    keys. It is ``transformers``' ``repeat_kv``, and what ``scaled_dot_product_attention(...,
    enable_gqa=True)`` does inside (tests check both).

    Example:
        >>> x = torch.tensor([10.0, 20.0]).view(1, 2, 1, 1)            # kv heads a=10, b=20
        >>> repeat_kv(x, 2).flatten().tolist()
        [10.0, 10.0, 20.0, 20.0]
    """
    check_tensor("x", x)
    check_rank("x", x, (4,), "(batch, n_kv_head, time, head_dim)")
    check_positive("n_rep", n_rep)
    b, kv, s, hd = x.shape
    if n_rep == 1:
        return x
    # A view that repeats each head n_rep times in place, then one copy into (B, kv·n_rep, …).
    return x[:, :, None].expand(b, kv, n_rep, s, hd).reshape(b, kv * n_rep, s, hd)


class GroupedQueryAttention(nn.Module):
    """Causal self-attention with ``n_head`` query heads sharing ``n_kv_head`` key/value heads,
    and RoPE applied to queries and keys.

        q = RoPE(x W_q)  (B, n_head, T, hd)      k = RoPE(x W_k),  v = x W_v  (B, n_kv, T, hd)
        y = softmax(q kᵀ / √hd + causal mask) v   each query head with its group's k, v
        out = y W_o

    ``forward`` takes the RoPE tables already picked at the tokens' positions (the model picks
    them once per forward for all layers), and, with a :class:`KVCache` built with
    ``n_head=n_kv_head``, appends the rotated keys and the values of the new tokens.

    The grouping runs inside torch's fused attention (``enable_gqa=True``), which reads each
    key/value head once for its whole group instead of materialising :func:`repeat_kv`'s
    copies; the result is the same (tests check it). The checks are O(1), as in
    :class:`~llmcourse.nn.block.SelfAttention`: this runs once per layer and decoding step.
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int | None = None, *,
                 dropout: float = 0.0) -> None:
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        for name, value in (("n_embd", n_embd), ("n_head", n_head), ("n_kv_head", n_kv_head)):
            check_positive(name, value)
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        if n_head % n_kv_head:
            raise ValueError(f"n_head={n_head} must be a multiple of n_kv_head={n_kv_head}: "
                             "each key/value head serves an equal group of query heads")
        self.n_embd, self.n_head, self.n_kv_head = n_embd, n_head, n_kv_head
        self.head_dim = n_embd // n_head
        self.n_rep = n_head // n_kv_head  # query heads per key/value head
        kv_width = n_kv_head * self.head_dim
        self.q_proj = Linear(n_embd, n_embd, bias=False)
        self.k_proj = Linear(n_embd, kv_width, bias=False)
        self.v_proj = Linear(n_embd, kv_width, bias=False)
        self.o_proj = Linear(n_embd, n_embd, bias=False)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """Attend within ``x`` (B, T, C), causally.

        Args:
            x: (B, T, C).
            cos, sin: RoPE's tables at the T new tokens' positions, broadcastable to
                (B, 1, T, head_dim) (e.g. ``rope_cos_sin(...)[0][positions]``, (T, hd)).
            mask: None (plain causal attention), or a bool/float mask broadcastable to
                (B, n_head, T, S) that replaces it (causal part included), as
                :class:`~llmcourse.nn.block.SelfAttention` takes it.
            cache: keys/values of earlier tokens, (n_layer, B, n_kv_head, max_len, hd);
                this layer's new ones are appended and attention runs over all S positions.
            layer: this layer's index in the cache.
        """
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 3
                and x.shape[-1] == self.n_embd):
            check_features("x", x, self.n_embd)  # says what is wrong
        b, t, c = x.shape
        s = t + (cache.length if cache is not None else 0)  # keys attended over
        if mask is not None:  # before anything is written to the cache
            check_attn_mask(mask, (b, self.n_head, t, s))
        hd = self.head_dim
        q = self.q_proj(x).view(b, t, self.n_head, hd).transpose(1, 2)  # (B, h, T, hd)
        k = self.k_proj(x).view(b, t, self.n_kv_head, hd).transpose(1, 2)  # (B, kv, T, hd)
        v = self.v_proj(x).view(b, t, self.n_kv_head, hd).transpose(1, 2)  # (B, kv, T, hd)
        q, k = rope_rotate(q, cos, sin), rope_rotate(k, cos, sin)  # positions, by rotation
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, kv, S, hd): the cache holds kv heads only
        drop = self.dropout if self.training else 0.0
        if mask is None and t > 1 and s != t:
            # New queries are the *last* t positions: a bottom-right-aligned causal mask.
            mask = causal_mask(t, s, device=x.device)  # (T, S)
        gqa = self.n_rep > 1  # query head j reads kv head j // n_rep (= repeat_kv)
        if mask is None:  # t == 1 (the last position sees every key), or no cache
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=t > 1,
                                               enable_gqa=gqa)  # (B, h, T, hd)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop,
                                               enable_gqa=gqa)  # (B, h, T, hd)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C): heads side by side
        return self.resid_dropout(self.o_proj(y))  # (B, T, C)
