"""A preallocated key/value cache for fast autoregressive generation.

Without a cache, generating token t+1 recomputes keys and values for all t earlier tokens: the
work per token grows with the context. With it, each step computes K and V for the new token
only and appends them; earlier ones are read back. The buffers are allocated once, at the
largest length the generation can reach, so appending is a copy into place, not a ``torch.cat``
that reallocates every step.

Example:
    >>> cache = KVCache(n_layer=1, batch_size=1, n_head=2, max_len=8, head_dim=4)
    >>> k_all, v_all = cache.update(0, torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    >>> cache.advance(3); k_all.shape, cache.length
    (torch.Size([1, 2, 3, 4]), 3)
"""

from __future__ import annotations

import torch

from llmcourse.core.validate import check_positive, check_rank, check_tensor

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of every layer, shape (n_layer, B, n_head, max_len, head_dim) each.

    The model writes each layer's new keys/values at ``[length, length + T)`` with
    :meth:`update`, then calls :meth:`advance` once after the last layer.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        for name, value in (("n_layer", n_layer), ("batch_size", batch_size), ("n_head", n_head),
                            ("max_len", max_len), ("head_dim", head_dim)):
            check_positive(name, value)
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0

    @property
    def batch_size(self) -> int:
        """Number of sequences cached."""
        return self.k.shape[1]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values (B, n_head, T, head_dim); return all so far, (B, h, L+T, hd)."""
        n_layer = self.k.shape[0]
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layer:
            raise ValueError(f"layer must be an integer in [0, {n_layer}), got {layer!r}")
        for name, x in (("k", k), ("v", v)):  # O(1) checks: this runs per layer and step
            check_tensor(name, x)
            check_rank(name, x, (4,), "(batch, n_head, time, head_dim)")
            if x.dtype != self.k.dtype:
                raise TypeError(f"{name} has dtype {x.dtype} but the cache holds {self.k.dtype}")
        if v.shape != k.shape:
            raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and "
                             f"{tuple(v.shape)}")
        t = k.shape[-2]
        end = self.length + t
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} cached + {t} new > max_len {self.max_len}"
            )
        if k.shape[:2] != self.k.shape[1:3] or k.shape[-1] != self.k.shape[-1]:
            raise ValueError(
                f"keys of shape {tuple(k.shape)} do not fit a cache of (B, h, ·, hd) = "
                f"{tuple(self.k.shape[1:3])} + ({self.k.shape[-1]},)"
            )
        # select/narrow: the same views as self.k[layer, :, :, a:b], with less Python per call
        # (this runs once per layer and per generated token).
        k_all = self.k.select(0, layer).narrow(2, 0, end)  # (B, h, L+T, hd)
        v_all = self.v.select(0, layer).narrow(2, 0, end)
        k_all.narrow(2, self.length, t).copy_(k)
        v_all.narrow(2, self.length, t).copy_(v)
        return k_all, v_all

    def advance(self, t: int) -> None:
        """Mark ``t`` more positions as filled (after every layer has stored them).

        ``t`` must lie in [0, max_len - length]: a cache cannot shrink this way, nor hold
        more positions than it has room for."""
        room = self.max_len - self.length
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= room:
            raise ValueError(f"advance(t) needs an integer t in [0, {room}] (max_len "
                             f"{self.max_len} - {self.length} cached), got {t!r}")
        self.length += t

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the sequences ``index`` (B',), e.g. the surviving beams of beam search."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
