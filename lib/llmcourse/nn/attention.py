"""Scaled dot-product attention and multi-head attention, written to read like the paper.

The one equation of this module (Vaswani et al., 2017, eq. 1):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

Masks follow ``torch.nn.functional.scaled_dot_product_attention``: a boolean mask is ``True``
where a query MAY attend to a key; a floating-point mask is added to the scores (use ``-inf``
to forbid). Every function here is checked against torch in ``tests/test_attention.py``.

Example:
    >>> import torch
    >>> q = k = v = torch.eye(2).unsqueeze(0)          # (B=1, T=2, d=2)
    >>> out = scaled_dot_product_attention(q, k, v, is_causal=True)
    >>> out[0, 0].tolist()                              # the first token sees only itself
    [1.0, 0.0]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmcourse.core.validate import (
    check_finite,
    check_float,
    check_positive,
    check_rank,
    check_tensor,
)

__all__ = [
    "causal_mask",
    "check_attn_mask",
    "scaled_dot_product_attention",
    "MultiHeadAttention",
]


def causal_mask(t_query: int, t_key: int | None = None, device: torch.device | None = None
                ) -> torch.Tensor:
    """Boolean (T_q, T_k) mask, True where query i may attend to key j (j ≤ i + offset).

    When there are more keys than queries (the queries are the *last* ``t_query`` positions,
    as in generation with a cache), query i sits at absolute position ``t_key - t_query + i``.

    Example:
        >>> causal_mask(3).int().tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    check_positive("t_query", t_query)
    t_key = t_query if t_key is None else t_key
    check_positive("t_key", t_key)
    if t_key < t_query:
        raise ValueError(f"causal_mask needs t_key >= t_query, got t_key={t_key} < {t_query}")
    ones = torch.ones(t_query, t_key, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=t_key - t_query)  # (T_q, T_k)


def check_attn_mask(mask: object, scores_shape: tuple[int, ...]) -> None:
    """Check an attention mask as ``F.scaled_dot_product_attention`` would use it: bool (True =
    attend) or floating point (added to the scores), broadcastable to ``scores_shape``
    (..., T_query, T_key), no NaN (a NaN score makes its whole row NaN).

    O(1) for a bool mask; a float mask is scanned for NaN once, far less work than the
    attention it masks.
    """
    check_tensor("mask", mask)
    scores_shape = torch.Size(scores_shape)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask must be bool (True = attend) or float (added), got {mask.dtype}")
    try:
        fits = torch.broadcast_shapes(mask.shape, scores_shape) == scores_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores' "
            f"shape {tuple(scores_shape)} (..., T_query, T_key)"
        )
    if mask.is_floating_point() and torch.isnan(mask).any():
        raise ValueError(f"mask of shape {tuple(mask.shape)} contains NaN; use -inf to forbid "
                         "a position")


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q Kᵀ / √d_k + mask) V, over any number of leading batch axes.

    Args:
        q: queries, shape (..., T_q, d_k).
        k: keys, shape (..., T_k, d_k).
        v: values, shape (..., T_k, d_v).
        mask: optional bool (True = attend) or additive float mask, broadcastable to
            (..., T_q, T_k).
        is_causal: also forbid each query from attending to later keys.
        scale: multiplies the scores; defaults to 1/√d_k.
        return_weights: also return the attention weights (..., T_q, T_k).

    Returns:
        The output (..., T_q, d_v), and the weights when ``return_weights`` is set.

    Raises:
        ValueError: q, k or v holding NaN or ±inf, shapes that do not fit, or a mask that
            does not broadcast to (..., T_q, T_k) or holds NaN.

    A query whose keys are all masked has no distribution to take; as in torch's own function,
    its weights and its output are zero (a plain softmax would give NaN).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_finite(name, t)  # one inf would give inf - inf = NaN in the softmax
        check_rank(name, t, tuple(range(2, 9)), "(..., T, d)")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension d_k, got q {tuple(q.shape)} and "
            f"k {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must have the same number of keys T_k, got k {tuple(k.shape)} and "
            f"v {tuple(v.shape)}"
        )
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"batch axes of q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
            "do not broadcast"
        ) from None
    t_q, t_k = q.shape[-2], k.shape[-2]
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                              or not math.isfinite(scale)):
        raise TypeError(f"scale must be a finite number or None (1/√d_k), got {scale!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale

    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    if mask is not None:
        check_attn_mask(mask, torch.Size((*batch, t_q, t_k)))
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    if is_causal:
        # torch aligns the causal mask to the top-left corner: query i sees keys 0..i.
        allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~allowed, float("-inf"))  # (..., T_q, T_k)
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k), each row sums to 1
    if mask is not None or is_causal:
        nothing_to_see = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., T_q, 1)
        weights = weights.masked_fill(nothing_to_see, 0.0)  # torch's "safe softmax"
    out = weights @ v  # (..., T_q, d_v)
    return (out, weights) if return_weights else out


class MultiHeadAttention(nn.Module):
    """Multi-head attention (batch first), for self-attention and cross-attention.

    ``h`` heads each attend in a ``d_model / h``-dimensional subspace:

        MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O,
        head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

    The projections are separate ``nn.Linear`` layers (``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj``); :meth:`load_torch_weights` copies them from ``torch.nn.MultiheadAttention``.

    Example:
        >>> mha = MultiHeadAttention(embed_dim=8, num_heads=2)
        >>> x = torch.randn(1, 5, 8)                      # (B, T, E)
        >>> mha(x).shape                                  # self-attention
        torch.Size([1, 5, 8])
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None) -> None:
        super().__init__()
        check_positive("embed_dim", embed_dim)
        check_positive("num_heads", num_heads)
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; each head "
                "needs an equal share of the dimensions"
            )
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, hd)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from ``query`` (B, T_q, E) to ``key``/``value`` (B, T_k, ·).

        ``key`` and ``value`` default to ``query`` (self-attention). ``mask`` is as in
        :func:`scaled_dot_product_attention`, broadcastable to (B, h, T_q, T_k);
        ``key_padding_mask`` (B, T_k) is True at padding keys to ignore (torch's convention).
        With ``need_weights`` the per-head weights (B, h, T_q, T_k) are returned too.
        """
        key = query if key is None else key
        value = key if value is None else value
        for name, t, dim in (("query", query, self.embed_dim), ("key", key, self.kdim),
                             ("value", value, self.vdim)):
            check_float(name, t)
            check_rank(name, t, (3,), "(batch, time, features)")
            if t.shape[-1] != dim:
                raise ValueError(
                    f"{name} has {t.shape[-1]} features (shape {tuple(t.shape)}), expected {dim}"
                )
        if not (query.shape[0] == key.shape[0] == value.shape[0]):
            raise ValueError(
                f"query, key and value must share the batch size, got {query.shape[0]}, "
                f"{key.shape[0]}, {value.shape[0]}"
            )
        if key.shape[1] != value.shape[1]:
            raise ValueError(
                f"key and value must have the same length, got {tuple(key.shape)} and "
                f"{tuple(value.shape)}"
            )
        q = self._split_heads(self.q_proj(query))  # (B, h, T_q, hd)
        k = self._split_heads(self.k_proj(key))  # (B, h, T_k, hd)
        v = self._split_heads(self.v_proj(value))  # (B, h, T_k, hd)
        if mask is not None:  # checked here too, before it is combined with the padding
            check_attn_mask(mask, (q.shape[0], self.num_heads, q.shape[2], k.shape[2]))
        if key_padding_mask is not None:
            check_tensor("key_padding_mask", key_padding_mask)
            if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != key.shape[:2]:
                raise ValueError(
                    f"key_padding_mask must be bool of shape (B, T_k) = {tuple(key.shape[:2])}, "
                    f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
                )
            keep = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T_k)
            mask = keep if mask is None else _combine(mask, keep)
        out, weights = scaled_dot_product_attention(
            q, k, v, mask, is_causal=is_causal, return_weights=True
        )  # (B, h, T_q, hd), (B, h, T_q, T_k)
        b, _, t_q, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t_q, self.embed_dim)  # (B, T_q, E): concat heads
        out = self.out_proj(out)
        return (out, weights) if need_weights else out

    @torch.no_grad()
    def load_torch_weights(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a batch-first ``torch.nn.MultiheadAttention`` of the same size."""
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"expected torch.nn.MultiheadAttention, got {type(mha).__name__}")
        theirs = (mha.embed_dim, mha.num_heads, mha.kdim, mha.vdim)
        ours = (self.embed_dim, self.num_heads, self.kdim, self.vdim)
        if theirs != ours:
            raise ValueError(
                "size mismatch: torch module has (embed_dim, num_heads, kdim, vdim) = "
                f"{theirs}; this one {ours}"
            )
        if (mha.in_proj_bias is not None) != (self.q_proj.bias is not None):
            raise ValueError(
                f"bias mismatch: torch module has bias={mha.in_proj_bias is not None}, this one "
                f"bias={self.q_proj.bias is not None}"
            )
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn have no counterpart here")
        if mha.in_proj_weight is not None:  # packed (3E, E) when q, k, v share a width
            wq, wk, wv = mha.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        self.q_proj.weight.copy_(wq)
        self.k_proj.weight.copy_(wk)
        self.v_proj.weight.copy_(wv)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None:
            bq, bk, bv = mha.in_proj_bias.chunk(3)
            self.q_proj.bias.copy_(bq)
            self.k_proj.bias.copy_(bk)
            self.v_proj.bias.copy_(bv)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self


def _combine(mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Combine a bool or additive mask with a bool keep-mask."""
    if mask.dtype == torch.bool:
        return mask & keep
    return mask.masked_fill(~keep, float("-inf"))
