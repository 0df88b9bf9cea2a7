"""A Llama-style language model: GPT-2's decoder with the four changes of today's open models,
convertible to and from ``transformers.LlamaForCausalLM`` (:mod:`llmcourse.models.llama_hf`).

    tokens → embed_tokens → n_layer × LlamaBlock → norm → lm_head → logits

    LlamaBlock:  x = x + Attention(RMSNorm(x))        RoPE on q, k; grouped-query attention
                 x = x + SwiGLU(RMSNorm(x))

What changed from :class:`llmcourse.models.gpt.GPT`, and where each piece lives:

============================  ==============================  ================================
GPT-2                         Llama                           module
============================  ==============================  ================================
LayerNorm (mean, variance)    RMSNorm (root mean square)      :mod:`llmcourse.nn.norms`
learned positions, added      RoPE, rotating q and k          :mod:`llmcourse.nn.positional`
multi-head attention          grouped-query attention         :mod:`llmcourse.nn.grouped_query`
GELU MLP, 2 matrices          SwiGLU MLP, 3 matrices          :mod:`llmcourse.nn.feedforward`
biases everywhere             no biases
output layer tied             untied (tying optional)
============================  ==============================  ================================

Parameter names are ``transformers``' (``model.layers.0.self_attn.q_proj.weight`` …), so the
state dict converts by checking names and shapes only: :mod:`llmcourse.models.llama_hf`
(``to_hf(model)``, ``from_hf(hf_model)``, the config and the state dict both ways).

Example:
    >>> cfg = LlamaConfig(vocab_size=100, block_size=16, n_layer=2, n_head=4, n_kv_head=2,
    ...                   n_embd=32, d_ff=64)
    >>> model = Llama(cfg)
    >>> logits, loss = model(torch.zeros(1, 8, dtype=torch.long))
    >>> logits.shape, loss is None, model.num_parameters() == parameter_count(cfg)
    (torch.Size([1, 8, 100]), True, True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from llmcourse.core.validate import check_positive
from llmcourse.models.gpt import init_gpt2_weights
from llmcourse.models.inputs import check_model_inputs
from llmcourse.models.sizing import ModelShape, parameters
from llmcourse.nn.feedforward import SwiGLU
from llmcourse.nn.grouped_query import GroupedQueryAttention
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.linear import Linear, input_major
from llmcourse.nn.norms import RMSNorm
from llmcourse.nn.positional import RotaryEmbedding

__all__ = ["LlamaConfig", "LlamaBlock", "Llama", "parameter_count"]


def _is_number(x: object) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes of a Llama-style model. The defaults are Llama 2 7B's (Touvron et al. 2023)."""

    vocab_size: int = 32000
    block_size: int = 4096  # the context; RoPE's tables cover positions 0..block_size-1
    n_layer: int = 32
    n_head: int = 32  # query heads
    n_kv_head: int | None = None  # key/value heads; None: n_head (no grouping); 1: multi-query
    n_embd: int = 4096
    d_ff: int = 11008  # SwiGLU's hidden width; 8·n_embd/3 matches GPT-2's MLP in parameters
    rope_theta: float = 10000.0  # RoPE's base: wavelengths from 2π to 2π·theta
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False  # the output layer is the token embedding
    dropout: float = 0.0  # on embeddings, attention probabilities and each branch's output

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)  # frozen: set once, here
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd",
                     "d_ff"):
            check_positive(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if self.head_dim % 2:
            raise ValueError(f"head size n_embd / n_head = {self.n_embd} / {self.n_head} = "
                             f"{self.head_dim} is odd; RoPE rotates pairs of features, so it "
                             "must be even")
        if self.n_kv_head > self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head="
                             f"{self.n_kv_head}: each key/value head serves an equal group of "
                             "query heads")
        if not _is_number(self.rope_theta) or not self.rope_theta > 1:
            raise ValueError(f"rope_theta must be a number > 1 (RoPE's base), got "
                             f"{self.rope_theta!r}")
        eps = self.rms_norm_eps
        if not _is_number(eps) or not 0.0 < eps < 1.0:
            raise ValueError(f"rms_norm_eps must be a small positive number, got {eps!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise TypeError(f"tie_embeddings must be True or False, got "
                            f"{self.tie_embeddings!r}")

    @property
    def head_dim(self) -> int:
        """Features per head, n_embd / n_head."""
        return self.n_embd // self.n_head

    def to_shape(self, name: str = "llama") -> ModelShape:
        """This config as a :class:`~llmcourse.models.sizing.ModelShape` (for its arithmetic).

        Example:
            >>> LlamaConfig().to_shape().kv_heads, parameters(LlamaConfig().to_shape())
            (32, 6738415616)
        """
        return ModelShape(name, n_layer=self.n_layer, d_model=self.n_embd, n_head=self.n_head,
                          vocab_size=self.vocab_size, context=self.block_size,
                          n_kv_head=self.n_kv_head, d_ff=self.d_ff, style="llama",
                          tie_embeddings=self.tie_embeddings)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for JSON)."""
        return asdict(self)


def parameter_count(cfg: LlamaConfig) -> int:
    """Parameters of a Llama-style model by formula (a tied matrix counted once):
    :func:`llmcourse.models.sizing.parameters` of its shape,

        V·d (·2 untied) + L · (2d² + 2·d·h_kv·d_head + 3·d·d_ff + 2d) + d

    Example:
        >>> parameter_count(LlamaConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2,
        ...                             n_kv_head=1, n_embd=8, d_ff=16, tie_embeddings=True))
        680
    """
    if not isinstance(cfg, LlamaConfig):
        raise TypeError(f"cfg must be a LlamaConfig, got {type(cfg).__name__}")
    return parameters(cfg.to_shape())


class LlamaBlock(nn.Module):
    """One Llama decoder block, pre-norm like GPT-2's with RMSNorm, grouped-query attention
    with RoPE, and a SwiGLU MLP:

        x = x + Attention(RMSNorm₁(x));   x = x + SwiGLU(RMSNorm₂(x))

    Example:
        >>> from llmcourse.nn.positional import rope_cos_sin
        >>> cfg = LlamaConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_kv_head=1,
        ...                   n_embd=8, d_ff=16)
        >>> cos, sin = rope_cos_sin(cfg.head_dim, 8)
        >>> LlamaBlock(cfg)(torch.randn(2, 5, 8), cos[:5], sin[:5]).shape
        torch.Size([2, 5, 8])
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c = config
        self.input_layernorm = RMSNorm(c.n_embd, eps=c.rms_norm_eps)
        self.self_attn = GroupedQueryAttention(c.n_embd, c.n_head, c.n_kv_head,
                                               dropout=c.dropout)
        self.post_attention_layernorm = RMSNorm(c.n_embd, eps=c.rms_norm_eps)
        self.mlp = SwiGLU(c.n_embd, c.d_ff, dropout=c.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """(B, T, C) → (B, T, C); the arguments as in :meth:`GroupedQueryAttention.forward`."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)  # (B,T,C)
        return x + self.mlp(self.post_attention_layernorm(x))  # (B, T, C)


class Llama(nn.Module):
    """Llama-style language model, the layout and the names of ``transformers``'
    ``LlamaForCausalLM``.

    One forward serves training (with ``targets``), scoring and cached decoding (with a
    :class:`KVCache` of ``n_kv_head`` heads from :meth:`new_cache`), with the arguments,
    checks and errors of :meth:`llmcourse.models.gpt.GPT.forward`. Activation checkpointing
    works as for the GPT (``model.activation_checkpointing = True``).

    Initialisation is the course GPT's (normal, std 0.02; the two projections into the
    residual stream, ``o_proj`` and ``down_proj``, scaled by 1/√(2·n_layer)), so that a
    side-by-side training run changes the architecture only.

    Example:
        >>> cfg = LlamaConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=1,
        ...                   n_embd=16, d_ff=32, tie_embeddings=True)
        >>> model = Llama(cfg)
        >>> model.lm_head.weight is model.model.embed_tokens.weight      # tied: one matrix
        True
        >>> x = torch.randint(0, 50, (2, 6))
        >>> logits, loss = model(x, targets=x)
        >>> logits.shape, loss.item() > 0
        (torch.Size([2, 6, 50]), True)
    """

    activation_checkpointing: bool = False  # see the GPT's docstring

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
        self.config = c = config
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(c.vocab_size, c.n_embd),
            layers=nn.ModuleList(LlamaBlock(c) for _ in range(c.n_layer)),
            norm=RMSNorm(c.n_embd, eps=c.rms_norm_eps),
        ))
        self.drop = nn.Dropout(c.dropout)
        self.rotary = RotaryEmbedding(c.head_dim, c.block_size, c.rope_theta)  # no parameters
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:  # one matrix, stored as the output layer reads it fastest (GPT)
            embed = self.model.embed_tokens
            embed.weight = nn.Parameter(input_major(embed.weight))
            self.lm_head.weight = embed.weight
        # The course GPT's initialisation; o_proj and down_proj write into the residual stream.
        init_gpt2_weights(self, c.n_layer, residual_projections=("o_proj.weight",
                                                                 "down_proj.weight"))

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (a tied matrix once), like HF's ``num_parameters``."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` for this model: ``n_kv_head`` heads per layer.

        Example:
            >>> cfg = LlamaConfig(vocab_size=10, block_size=8, n_layer=2, n_head=4,
            ...                   n_kv_head=2, n_embd=16, d_ff=16)
            >>> Llama(cfg).new_cache(3).k.shape         # (n_layer, B, n_kv_head, T, head_dim)
            torch.Size([2, 3, 2, 8, 4])
        """
        c = self.config
        p = self.model.embed_tokens.weight
        return KVCache(c.n_layer, batch_size, c.n_kv_head, max_len or c.block_size,
                       c.head_dim, dtype=p.dtype, device=p.device)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position, and the mean cross-entropy when ``targets`` are given.

        The arguments, the returned ``(logits (B, T, vocab_size), loss or None)`` and every
        check are those of :meth:`llmcourse.models.gpt.GPT.forward`, made by the same
        :func:`llmcourse.models.inputs.check_model_inputs`: ids (B, T) in the vocabulary, at
        most ``block_size`` positions with the cache, targets (-100 ignored), a left-padding
        ``attention_mask`` (B, cached + T), ``position_ids`` (B, T) in [0, block_size),
        ``last_only`` for generation; the cache must also have this model's layers,
        ``n_kv_head`` heads and head size. The positions pick RoPE's rotations instead of a
        learned vector.
        """
        c = self.config
        idx, targets, positions, mask = check_model_inputs(
            idx, targets, vocab_size=c.vocab_size, block_size=c.block_size,
            attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            last_only=last_only, cache_layout=(c.n_layer, c.n_kv_head, c.head_dim),
        )  # (B, T), (B, T) or None, (B|1, T), (B, 1, T, S) or None

        x = self.drop(self.model.embed_tokens(idx))  # (B, T, C): no position added
        cos = self.rotary.cos[positions][:, None]  # (B|1, 1, T, hd), shared by every layer
        sin = self.rotary.sin[positions][:, None]  # (B|1, 1, T, hd)
        recompute = (self.activation_checkpointing and self.training and cache is None
                     and torch.is_grad_enabled())
        for i, layer in enumerate(self.model.layers):
            if recompute:  # keep x only; backward runs the block again (see the GPT)
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, None, i,
                                                      use_reentrant=False)  # (B, T, C)
            else:
                x = layer(x, cos, sin, mask, cache, i)  # (B, T, C)
        if cache is not None:
            cache.advance(idx.shape[1])
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        logits = self.lm_head(self.model.norm(x))  # (B, T, V)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-100)
        return logits, loss
