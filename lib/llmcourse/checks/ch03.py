"""Chapter 03 exercises: RMSNorm, the post-LN block, and the parameter count of GPT variants.

Each exercise applies an idea of the chapter somewhere the chapter did not: the chapter writes
LayerNorm, the exercise RMSNorm (Zhang and Sennrich, 2019); the chapter writes the pre-LN
block by hand, the exercise the post-LN one; the chapter counts GPT-2's parameters, the
exercise a GPT without biases or with an output layer of its own.

Each checker runs the learner's function on fresh random cases (drawn from its own seeded
generator, so the notebook's global random state is untouched) and compares the result with
code no one here wrote: ``torch.nn.functional.rms_norm``,
``torch.nn.TransformerEncoderLayer(norm_first=False)``, and a model assembled from PyTorch's
own layers whose parameters are counted. ``tests/test_checks_ch03.py`` checks that correct
versions pass and the usual mistakes fail with a message that says what differs.

Example:
    >>> import torch
    >>> def rms(x, weight, eps):
    ...     return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
    >>> check_rms_norm(rms)
    ✓ rms_norm: 6 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.checks import compare, require_function
from llmcourse.models.gpt import GPTConfig

__all__ = ["check_rms_norm", "check_post_ln_block", "check_parameter_count",
           "torch_parameter_count"]

Sublayer = Callable[[torch.Tensor], torch.Tensor]

# ------------------------------------------------------------------------------ RMSNorm


def check_rms_norm(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(x, weight, eps)`` against ``torch.nn.functional.rms_norm`` over the last axis.

    The cases have a mean far from 0 (subtracting the mean, as LayerNorm does, fails), a
    spread below √ε (ε must sit inside the square root), a large ε (a hard-coded 1e-5 fails),
    a narrow C = 4, and float64 inputs (the result must keep the input's dtype).
    """
    require_function(fn, "rms_norm")
    gen = torch.Generator().manual_seed(33)

    def case(shape: tuple[int, ...], scale: float = 1.0, shift: float = 0.0, eps: float = 1e-5,
             dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        c = shape[-1]
        x = torch.randn(*shape, generator=gen, dtype=dtype) * scale + shift  # (..., C)
        weight = 1.0 + 0.5 * torch.randn(c, generator=gen, dtype=dtype)  # (C,) γ
        return x, weight, eps

    cases = [
        case((3, 8)),
        case((2, 5, 16), scale=2.0, shift=3.0),  # mean ≈ 3: RMS ≠ standard deviation
        case((6, 4), shift=-1.0),
        case((2, 3, 12), scale=1e-3),  # mean of squares 1e-6 < ε: ε outside √ is far off
        case((4, 10), eps=0.1, shift=0.5),
        case((2, 7, 32), scale=2.0, shift=1.0, dtype=torch.float64),
    ]
    compare(fn, lambda x, w, eps: F.rms_norm(x, w.shape, w, eps), cases, name="rms_norm",
            atol=1e-5, rtol=1e-4,
            hint="over the last axis: the root of the mean of the squares plus eps, "
                 "sqrt(mean(x²) + eps), with no mean subtracted; then x / that * weight, "
                 "in x's own dtype")


# ------------------------------------------------------------------------------ post-LN block


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


def _torch_layer(c: int, n_head: int, gen: torch.Generator) -> nn.TransformerEncoderLayer:
    """A post-LN ``TransformerEncoderLayer`` shaped like a GPT-2 block with GELU, random
    weights (LayerNorm γ and β too, so that swapping ln_1 and ln_2 shows)."""
    with torch.random.fork_rng(devices=[]):  # its default init draws from the global RNG
        layer = nn.TransformerEncoderLayer(c, n_head, dim_feedforward=4 * c, dropout=0.0,
                                           activation="gelu", batch_first=True,
                                           norm_first=False)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("norm"):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / c**0.5)
    return layer.eval()


def check_post_ln_block(fn: Callable[[torch.Tensor, Sublayer, Sublayer, Sublayer, Sublayer],
                                     torch.Tensor]) -> None:
    """Check ``fn(x, ln_1, attn, ln_2, mlp)`` against a ``torch.nn.TransformerEncoderLayer``
    with ``norm_first=False`` (the 2017 arrangement) and a causal mask, whose sublayers are
    the four arguments.

    A pre-LN block, a block that normalises before the sublayer, one without one of the
    residual connections or one that adds the sublayer to the *normalised* input gives
    different numbers.
    """
    require_function(fn, "post_ln_block")
    gen = torch.Generator().manual_seed(34)
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
        compare(fn, reference, cases, name="post_ln_block", atol=1e-4, rtol=1e-4,
                hint="post-LN: each sublayer reads the stream as it is, its output is added "
                     "to the stream, and the sum is normalised: h = ln_1(x + attn(x)), then "
                     "ln_2(h + mlp(h))")


# ------------------------------------------------------------------------------ parameter count

_COUNT_CASES = [
    (GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32), True),
    (GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, bias=False),
     True),
    (GPTConfig(vocab_size=1000, block_size=64, n_layer=1, n_head=4, n_embd=128), False),
    (GPTConfig(), False),  # GPT-2 small with an output layer of its own
    (GPTConfig(n_layer=24, n_head=16, n_embd=1024, bias=False), True),  # GPT-2 medium's shape
    (GPTConfig(vocab_size=32000, block_size=2048, n_layer=36, n_head=20, n_embd=1280,
               bias=False), False),
    (GPTConfig(vocab_size=500, block_size=32, n_layer=3, n_head=4, n_embd=64, bias=False),
     False),
]


def torch_parameter_count(cfg: GPTConfig, tied: bool) -> int:
    """Parameters of a GPT of config ``cfg`` assembled from PyTorch's own layers, counted.

    ``nn.Embedding`` for tokens and positions, ``cfg.n_layer`` ``nn.TransformerEncoderLayer``
    (``dim_feedforward = 4·C``, ``bias=cfg.bias``: without biases neither the linear layers
    nor the LayerNorms have one), a final ``nn.LayerNorm(bias=cfg.bias)`` and an
    ``nn.Linear(C, V, bias=False)`` output layer, whose weight *is* the token embedding when
    ``tied``. Built on the meta device (shapes only, no memory), so GPT-2-sized configs count
    in milliseconds; ``parameters()`` lists a shared tensor once.

    Example:
        >>> torch_parameter_count(GPTConfig(), tied=True)      # GPT-2 small
        124439808
    """
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
    v, t, c = cfg.vocab_size, cfg.block_size, cfg.n_embd
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        wte, wpe = nn.Embedding(v, c), nn.Embedding(t, c)
        blocks = [nn.TransformerEncoderLayer(c, cfg.n_head, dim_feedforward=4 * c,
                                             bias=cfg.bias, batch_first=True)
                  for _ in range(cfg.n_layer)]
        ln_f = nn.LayerNorm(c, bias=cfg.bias)
        lm_head = nn.Linear(c, v, bias=False)
        if tied:
            lm_head.weight = wte.weight
        model = nn.ModuleList([wte, wpe, *blocks, ln_f, lm_head])
        return sum(p.numel() for p in model.parameters())


def check_parameter_count(fn: Callable[[GPTConfig, bool], int]) -> None:
    """Check ``fn(cfg, tied)`` (an int) against :func:`torch_parameter_count`, a model built
    from PyTorch's layers, on GPTs with and without biases, with a tied output layer or one
    of their own, from a tiny config to a 36-block one.

    Counting the tied output matrix a second time, forgetting an untied one, the final
    LayerNorm, the position embeddings, or keeping the LayerNorms' β (or dropping their γ)
    when there are no biases each gives a different number, and so does a float.
    """
    require_function(fn, "parameter_count", function="my_parameter_count")
    diagnosis = ""
    for cfg, tied in _COUNT_CASES:  # the first wrong count, explained by what it is off by
        try:
            got = fn(cfg, tied)
        except Exception:  # compare reports it with its case
            break
        expected = torch_parameter_count(cfg, tied)
        if isinstance(got, int) and not isinstance(got, bool) and got != expected:
            diagnosis = _off_by(cfg, tied, got - expected)
            break
    compare(fn, torch_parameter_count, _COUNT_CASES, name="parameter_count",
            hint=diagnosis + "per block 12·C² weights; with biases 13·C more (9·C in the "
                 "linear layers, γ and β of two LayerNorms), without them only the two γ "
                 "(2·C); the final LayerNorm likewise; the output layer adds V·C only when it "
                 "is not tied to wte; return an int")


def _off_by(cfg: GPTConfig, tied: bool, diff: int) -> str:
    """What a count that is ``diff`` away from the truth probably missed or added."""
    v, t, c, n = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    d = abs(diff)
    more = "more" if diff > 0 else "fewer"
    if d == v * c:
        what = ("the tied output layer counted as a second matrix" if tied and diff > 0
                else "the untied output layer's own V·C matrix left out" if not tied
                else "V·C")
        return f"your count has V·C = {d:,} {more} ({what}); "
    if d == t * c:
        return f"your count has T·C = {d:,} {more}: the position embeddings? "
    if d in (c, 2 * c):
        return f"your count has {d:,} {more} = {d // c}·C: the final LayerNorm? "
    for final in (0, 1, 2):  # k·C in every block, and maybe C or 2·C in the final LayerNorm
        k, rest = divmod(d - final * c, n * c)
        if rest == 0 and 1 <= k <= 13:
            tail = f" and {final}·C in the final LayerNorm" if final else ""
            return (f"your count has {k}·C per block{tail} {more} ({d:,} in all): the biases, "
                    "or the LayerNorms' γ and β? ")
    return ""
