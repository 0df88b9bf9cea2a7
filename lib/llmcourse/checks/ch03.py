"""Chapter 03 exercises: LayerNorm, the pre-LN block, and a GPT's parameter count.

Each checker runs the learner's function on fixed cases (drawn from its own seeded generator, so
the notebook's global random state is untouched) and compares the result with code no one here
wrote: ``torch.nn.functional.layer_norm``, ``torch.nn.TransformerEncoderLayer(norm_first=True)``
and ``transformers.GPT2LMHeadModel(...).num_parameters()``. The course's solutions are
:func:`llmcourse.nn.norms.layer_norm`, :func:`pre_ln_block` below and
:func:`llmcourse.models.gpt.parameter_count`; ``tests/test_checks_ch03.py`` checks that they pass
and
that the usual mistakes (unbiased variance, ε outside the square root, post-LN where pre-LN was
asked, the tied output matrix counted twice) fail.

Example:
    >>> from llmcourse.nn.norms import layer_norm
    >>> check_layer_norm(layer_norm)
    ✓ layer_norm: 6 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.checks import compare, require_function
from llmcourse.models.gpt import GPTConfig

__all__ = ["pre_ln_block", "check_layer_norm", "check_pre_ln_block", "check_parameter_count"]

Sublayer = Callable[[torch.Tensor], torch.Tensor]


def pre_ln_block(x: torch.Tensor, ln_1: Sublayer, attn: Sublayer, ln_2: Sublayer,
                 mlp: Sublayer) -> torch.Tensor:
    """One pre-LN Transformer block (GPT-2's arrangement) built from its four sublayers.

        h = x + attn(ln_1(x))
        y = h + mlp(ln_2(h))

    Each sublayer reads a normalised copy of the residual stream and *adds* its result to it,
    so the stream itself is never normalised inside the block.

    Example:
        >>> ident = lambda t: t
        >>> pre_ln_block(torch.ones(1, 2, 3), ident, ident, ident, ident)  # x + x, then h + h
        tensor([[[4., 4., 4.],
                 [4., 4., 4.]]])
    """
    h = x + attn(ln_1(x))  # (B, T, C)
    return h + mlp(ln_2(h))  # (B, T, C)


# ------------------------------------------------------------------------------ layer_norm


def check_layer_norm(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float],
                                  torch.Tensor]) -> None:
    """Check ``fn(x, weight, bias, eps)`` against ``torch.nn.functional.layer_norm``.

    The cases normalise over the last axis with random γ (``weight``) and β (``bias``). They
    include a narrow vector (C = 4, where the unbiased variance, 1/(C−1), is far from torch's
    1/C), inputs with a tiny spread (where ε must sit inside the square root), a large ε (a
    hard-coded 1e-5 fails) and float64.
    """
    require_function(fn, "layer_norm")
    gen = torch.Generator().manual_seed(30)

    def case(shape: tuple[int, ...], scale: float = 1.0, shift: float = 0.0, eps: float = 1e-5,
             dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        c = shape[-1]
        x = torch.randn(*shape, generator=gen, dtype=dtype) * scale + shift  # (..., C)
        weight = 1.0 + 0.5 * torch.randn(c, generator=gen, dtype=dtype)  # (C,) γ
        bias = 0.5 * torch.randn(c, generator=gen, dtype=dtype)  # (C,) β
        return x, weight, bias, eps

    cases = [
        case((3, 8)),
        case((2, 5, 16), scale=4.0, shift=3.0),
        case((6, 4)),  # C = 4: unbiased variance is 4/3 of the biased one
        case((2, 3, 12), scale=1e-3),  # variance 1e-6 < ε: ε outside √ is far off
        case((4, 10), eps=0.1),
        case((2, 7, 32), scale=2.0, dtype=torch.float64),
    ]
    compare(fn, lambda x, w, b, eps: F.layer_norm(x, w.shape, w, b, eps), cases,
            name="layer_norm", atol=1e-5, rtol=1e-4,
            hint="over the last axis: mean, then the biased variance (divide by C, "
                 "unbiased=False), then (x - mean) / sqrt(var + eps), then * weight + bias")


# ------------------------------------------------------------------------------ pre-LN block


class _CausalSelfAttention:
    """The attention sublayer of a ``TransformerEncoderLayer``, with a causal mask."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        self.mha = mha

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=x.dtype)  # (T, T)
        return self.mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]

    def __repr__(self) -> str:
        return f"attn(C={self.mha.embed_dim}, heads={self.mha.num_heads}, causal)"


class _FeedForward:
    """The feed-forward sublayer of a ``TransformerEncoderLayer``."""

    def __init__(self, layer: nn.TransformerEncoderLayer) -> None:
        self.layer = layer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        return layer.linear2(layer.activation(layer.linear1(x)))  # (B, T, C)

    def __repr__(self) -> str:
        return f"mlp({self.layer.linear1.in_features} → {self.layer.linear1.out_features} → " \
               f"{self.layer.linear2.out_features})"


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _torch_layer(c: int, n_head: int, gen: torch.Generator) -> nn.TransformerEncoderLayer:
    """A pre-LN ``TransformerEncoderLayer`` shaped like a GPT-2 block, with random weights
    (LayerNorm γ and β too, so that swapping ln_1 and ln_2 shows)."""
    with torch.random.fork_rng(devices=[]):  # its default init draws from the global RNG
        layer = nn.TransformerEncoderLayer(c, n_head, dim_feedforward=4 * c, dropout=0.0,
                                           activation=_gelu_tanh, batch_first=True,
                                           norm_first=True)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("norm"):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / c**0.5)
    return layer.eval()


def check_pre_ln_block(fn: Callable[[torch.Tensor, Sublayer, Sublayer, Sublayer, Sublayer],
                                    torch.Tensor]) -> None:
    """Check ``fn(x, ln_1, attn, ln_2, mlp)`` against a ``torch.nn.TransformerEncoderLayer``
    with ``norm_first=True`` and a causal mask, whose sublayers are the four arguments.

    A post-LN block, a block without one of the residual connections, or one that adds the
    sublayer to the *normalised* input gives different numbers.
    """
    require_function(fn, "pre_ln_block")
    gen = torch.Generator().manual_seed(31)
    cases, oracle = [], {}
    for b, t, c, n_head, shift in [(2, 5, 16, 2, 0.0), (3, 8, 32, 4, 2.0), (1, 1, 24, 3, 0.0),
                                   (2, 12, 64, 8, -1.0)]:
        layer = _torch_layer(c, n_head, gen)
        x = 3.0 * torch.randn(b, t, c, generator=gen) + shift  # (B, T, C), not unit-scale
        cases.append((x, layer.norm1, _CausalSelfAttention(layer.self_attn), layer.norm2,
                      _FeedForward(layer)))
        oracle[id(layer.norm1)] = layer

    def reference(x: torch.Tensor, ln_1: nn.Module, *_: Any) -> torch.Tensor:
        t = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(t, dtype=x.dtype)  # (T, T)
        return oracle[id(ln_1)](x, src_mask=mask, is_causal=True)  # (B, T, C)

    with torch.no_grad():
        compare(fn, reference, cases, name="pre_ln_block", atol=1e-4, rtol=1e-4,
                hint="pre-LN: h = x + attn(ln_1(x)), then h + mlp(ln_2(h)); normalise the "
                     "sublayer's input, never the residual stream itself")


# ------------------------------------------------------------------------------ parameter count

_COUNT_CONFIGS = [
    GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32),
    GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),
    GPTConfig(vocab_size=1000, block_size=64, n_layer=1, n_head=4, n_embd=128),
    GPTConfig(),  # GPT-2 small
    GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # GPT-2 medium
    GPTConfig(vocab_size=32000, block_size=2048, n_layer=36, n_head=20, n_embd=1280),
]


def _hf_num_parameters(cfg: GPTConfig) -> int:
    """``GPT2LMHeadModel(cfg.to_hf()).num_parameters()``, built on the meta device (shapes,
    no memory, no initialisation), so that even large configs count in milliseconds."""
    from transformers import GPT2LMHeadModel  # heavy (seconds): only when needed
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            return int(GPT2LMHeadModel(cfg.to_hf()).num_parameters())
    finally:
        logging.set_verbosity(verbosity)


def check_parameter_count(fn: Callable[[GPTConfig], int]) -> None:
    """Check ``fn(cfg)`` (an int) against ``transformers.GPT2LMHeadModel``'s
    ``num_parameters()`` for several configs, GPT-2 small and medium among them.

    Counting the tied output matrix a second time, leaving out the LayerNorms' γ and β, the
    biases, the final LayerNorm or the position embeddings each gives a different number.
    """
    require_function(fn, "parameter_count")
    cases = [(cfg,) for cfg in _COUNT_CONFIGS]
    compare(fn, _hf_num_parameters, cases, name="parameter_count",
            hint="count wte once (lm_head is tied to it, not a second matrix), and include wpe, "
                 "every bias, and the γ and β (C each) of all 2·n_layer + 1 LayerNorms")
