"""How big a model is, how much memory it needs and how much arithmetic a token costs, from
its config alone (no tensors are allocated: pure arithmetic).

- :func:`parameters` — the parameter count (GPT-2-style models through the course's own
  :func:`~llmcourse.models.gpt.parameter_count`);
- :func:`weight_bytes` — the weights stored in fp32, bf16, int8 or int4;
- :func:`training_state_bytes` — weights, gradients and Adam's two moments;
- :func:`kv_cache_bytes` — the keys and values a generating model keeps per token;
- :func:`forward_flops_per_token`, :func:`training_flops` — ≈ 2N per token to run, ≈ 6N to
  train, plus the attention term.

Published configs of well-known models are in :data:`PUBLISHED`, with their sources.

Example:
    >>> gpt2 = PUBLISHED["gpt2"]
    >>> parameters(gpt2), weight_bytes(parameters(gpt2), "bf16") / 1e9
    (124439808, 0.248879616)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from llmcourse.core.validate import check_positive
from llmcourse.models.gpt import GPTConfig, parameter_count

__all__ = [
    "ModelShape", "PUBLISHED", "PAPER_PARAMETERS", "BYTES_PER_VALUE", "TRAINING_RECIPES",
    "parameters", "matmul_parameters", "weight_bytes", "training_bytes_per_parameter",
    "training_state_bytes", "kv_cache_bytes_per_token", "kv_cache_bytes",
    "forward_flops_per_token", "training_flops",
]


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only Transformer, in one of two families.

    ``style="gpt2"`` (GPT-2, GPT-3): learned positions, LayerNorms with biases, biases on every
    linear layer, a GELU MLP of two matrices d×d_ff and d_ff×d, the output layer tied to the
    token embedding. ``style="llama"`` (Llama 2): rotary positions (no parameters), RMSNorms
    (a weight only), no biases, a SwiGLU MLP of three matrices (gate, up, down), an untied
    output layer (``tie_embeddings=True`` ties it, as small Llama-style models often do), and
    grouped-query attention when ``n_kv_head < n_head`` (Ainslie et al. 2023; chapter 10): the
    query heads share ``n_kv_head`` heads of keys and values.

    Example:
        >>> s = ModelShape("toy", n_layer=2, d_model=64, n_head=4, vocab_size=100, context=32)
        >>> s.head_dim, s.kv_heads, s.ff
        (16, 4, 256)
    """

    name: str
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    context: int  # the longest sequence the model was trained on
    n_kv_head: int | None = None  # None: one key/value head per query head
    d_ff: int | None = None  # None: 4 · d_model
    style: Literal["gpt2", "llama"] = "gpt2"
    tie_embeddings: bool | None = None  # None: the style's own (gpt2 tied, llama untied)

    def __post_init__(self) -> None:
        for field in ("n_layer", "d_model", "n_head", "vocab_size", "context"):
            check_positive(field, getattr(self, field))
        for field in ("n_kv_head", "d_ff"):
            if getattr(self, field) is not None:
                check_positive(field, getattr(self, field))
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head="
                             f"{self.kv_heads} (each key/value head serves a group of queries)")
        if self.style not in ("gpt2", "llama"):
            raise ValueError(f"style must be 'gpt2' or 'llama', got {self.style!r}")
        if self.tie_embeddings is not None and not isinstance(self.tie_embeddings, bool):
            raise TypeError(f"tie_embeddings must be True, False or None, got "
                            f"{self.tie_embeddings!r}")
        if self.style == "gpt2" and (self.kv_heads != self.n_head or self.ff != 4 * self.d_model
                                     or self.tie_embeddings is False):
            raise ValueError("a 'gpt2'-style model has n_kv_head = n_head, d_ff = 4·d_model and "
                             "a tied output layer")

    @property
    def head_dim(self) -> int:
        """Features per attention head, d_model / n_head."""
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Heads of keys and values (n_head unless grouped-query attention)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def tied(self) -> bool:
        """Whether the output layer is the token embedding (one matrix, counted once)."""
        return self.style == "gpt2" if self.tie_embeddings is None else self.tie_embeddings

    @property
    def ff(self) -> int:
        """The MLP's hidden width."""
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    def to_gpt_config(self) -> GPTConfig:
        """The course's :class:`GPTConfig` of a GPT-2-style shape.

        Example:
            >>> PUBLISHED["gpt2-medium"].to_gpt_config().n_embd
            1024
        """
        if self.style != "gpt2":
            raise ValueError(f"{self.name} is a {self.style!r}-style model; only 'gpt2'-style "
                             "shapes are course GPTs")
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.context,
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.d_model)


# Published configs. GPT-2: OpenAI's released hparams.json of each size (github.com/openai/
# gpt-2, download_model.py), the same numbers as Hugging Face's gpt2, gpt2-medium, gpt2-large
# and gpt2-xl config.json. GPT-3 175B: Brown et al. 2020, "Language Models are Few-Shot
# Learners", Table 2.1 (n_layers 96, d_model 12288, n_heads 96, d_head 128, context 2048),
# with GPT-2's model, architecture and tokenization (50257 tokens), which section 2.1 says it
# reuses (its alternating dense and sparse attention patterns change no parameter).
# Llama 2: Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models",
# section 2.2 and Table 1 (context 4096; GQA for the 34B and 70B models), and the config.json
# of meta-llama/Llama-2-7b-hf and Llama-2-70b-hf (hidden_size, intermediate_size,
# num_attention_heads, num_key_value_heads, num_hidden_layers, vocab_size 32000,
# tie_word_embeddings false).
PUBLISHED: dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("gpt2", n_layer=12, d_model=768, n_head=12, vocab_size=50257, context=1024),
    ModelShape("gpt2-medium", n_layer=24, d_model=1024, n_head=16, vocab_size=50257,
               context=1024),
    ModelShape("gpt2-large", n_layer=36, d_model=1280, n_head=20, vocab_size=50257,
               context=1024),
    ModelShape("gpt2-xl", n_layer=48, d_model=1600, n_head=25, vocab_size=50257, context=1024),
    ModelShape("gpt3-175b", n_layer=96, d_model=12288, n_head=96, vocab_size=50257,
               context=2048),
    ModelShape("llama2-7b", n_layer=32, d_model=4096, n_head=32, vocab_size=32000,
               context=4096, n_kv_head=32, d_ff=11008, style="llama"),
    ModelShape("llama2-70b", n_layer=80, d_model=8192, n_head=64, vocab_size=32000,
               context=4096, n_kv_head=8, d_ff=28672, style="llama"),
)}

# What the papers call each model, with the relative gap to the count computed here that the
# tests allow. GPT-2's paper (Radford et al. 2019, Table 2) lists 117M, 345M, 762M, 1542M,
# counted in a way it does not state: the released weights hold 124M, 355M, 774M, 1558M (the
# names in use today), up to 6.4% more. GPT-3: 175.0B (Brown et al. 2020, Table 2.1). Llama 2:
# 7B and 70B are the names of Touvron et al. 2023, Table 1, rounded to the billion.
PAPER_PARAMETERS: dict[str, tuple[float, float]] = {  # name: (the paper's count, tolerance)
    "gpt2": (117e6, 0.07),
    "gpt2-medium": (345e6, 0.03),
    "gpt2-large": (762e6, 0.02),
    "gpt2-xl": (1542e6, 0.02),
    "gpt3-175b": (175.0e9, 0.005),
    "llama2-7b": (7e9, 0.04),
    "llama2-70b": (70e9, 0.02),
}


def parameters(shape: ModelShape) -> int:
    """The number of parameters of ``shape``.

    GPT-2 style: the course's :func:`~llmcourse.models.gpt.parameter_count`,
    V·d + T·d + L·(12d² + 13d) + 2d. Llama style, with h_kv·d_head = the width of the keys:

        2·V·d                                   token embedding and untied output layer
                                                (V·d when tied: one matrix for both)
        + L · (2d² + 2·d·h_kv·d_head            W_q, W_o; W_k, W_v (narrower under GQA)
               + 3·d·d_ff + 2d)                 SwiGLU's gate, up, down; two RMSNorms
        + d                                     final RMSNorm

    Example:
        >>> parameters(PUBLISHED["gpt2-xl"]), parameters(PUBLISHED["llama2-7b"])
        (1557611200, 6738415616)
    """
    if shape.style == "gpt2":
        return parameter_count(shape.to_gpt_config())
    d, kv_width = shape.d_model, shape.kv_heads * shape.head_dim
    per_layer = 2 * d * d + 2 * d * kv_width + 3 * d * shape.ff + 2 * d
    embeddings = (1 if shape.tied else 2) * shape.vocab_size * d
    return embeddings + shape.n_layer * per_layer + d


def matmul_parameters(shape: ModelShape) -> int:
    """The weights that multiply every token: the blocks' matrices and the output layer.

    These set the FLOPs: a token meets each of them in one matrix product. Left out: the
    embedding lookups (a copy, no arithmetic), biases and norms (a few times d per layer).
    GPT-2 style: 12·L·d² + V·d (the tied embedding counted once, as the output layer).

    Example:
        >>> s = PUBLISHED["gpt2"]
        >>> matmul_parameters(s), parameters(s) - matmul_parameters(s)  # the rest: T·d + 13Ld + 2d
        (123532032, 907776)
    """
    d, kv_width = shape.d_model, shape.kv_heads * shape.head_dim
    mlp = (3 if shape.style == "llama" else 2) * d * shape.ff
    return shape.n_layer * (2 * d * d + 2 * d * kv_width + mlp) + shape.vocab_size * d


# Bytes per stored number. int4 packs two numbers into a byte. Quantized weights also store
# their scales: one per output row (per channel) or per group of weights, a small overhead.
BYTES_PER_VALUE: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "int4": 0.5}


def weight_bytes(n_parameters: int, dtype: str) -> int:
    """Bytes to store ``n_parameters`` numbers of ``dtype`` (a key of :data:`BYTES_PER_VALUE`),
    scales of quantized formats not included.

    Example:
        >>> [weight_bytes(1_000_001, t) for t in ("fp32", "bf16", "int8", "int4")]
        [4000004, 2000002, 1000001, 500001]
    """
    check_positive("n_parameters", n_parameters)
    if dtype not in BYTES_PER_VALUE:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(BYTES_PER_VALUE)}")
    return math.ceil(n_parameters * BYTES_PER_VALUE[dtype])  # int4: a last half-byte rounds up


# Bytes per parameter of the state AdamW training keeps, activations not included.
# - "fp32": weights, gradients, Adam's first and second moments m, v: 4 numbers of 4 bytes.
# - "autocast": torch.autocast (bf16 or fp16 matmuls, as the course's training command can):
#   the state stays fp32; what shrinks is the activations and the time of each matmul.
# - "mixed": mixed-precision training as Micikevicius et al. 2018 describe it: 16-bit weights
#   and gradients for the passes, an fp32 master copy of the weights for the update, fp32 m
#   and v: 2 + 2 + 4 + 4 + 4 = 16 bytes, the same total (the "16Ψ" of Rajbhandari et al.
#   2020, ZeRO, section 3.1), now half of it optimizer state that ZeRO shards across GPUs.
# - "bf16": everything in bf16 (weights, gradients, m, v), 8 bytes: half the memory, but an
#   update smaller than bf16's ~3 significant digits of a weight is lost in rounding.
TRAINING_RECIPES: dict[str, dict[str, int]] = {
    "fp32": {"weights": 4, "gradients": 4, "adam_m": 4, "adam_v": 4},
    "autocast": {"weights": 4, "gradients": 4, "adam_m": 4, "adam_v": 4},
    "mixed": {"weights": 2, "gradients": 2, "master_weights": 4, "adam_m": 4, "adam_v": 4},
    "bf16": {"weights": 2, "gradients": 2, "adam_m": 2, "adam_v": 2},
}


def training_bytes_per_parameter(recipe: str = "fp32") -> dict[str, int]:
    """What each parameter costs in training with AdamW under ``recipe`` (a key of
    :data:`TRAINING_RECIPES`), part by part, in bytes.

    Example:
        >>> parts = training_bytes_per_parameter("mixed"); parts, sum(parts.values())
        ({'weights': 2, 'gradients': 2, 'master_weights': 4, 'adam_m': 4, 'adam_v': 4}, 16)
    """
    if recipe not in TRAINING_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {sorted(TRAINING_RECIPES)}")
    return dict(TRAINING_RECIPES[recipe])


def training_state_bytes(n_parameters: int, recipe: str = "fp32") -> int:
    """Bytes of weights, gradients and optimizer state to train ``n_parameters`` with AdamW,
    before any activation: 16 per parameter in fp32.

    Example:
        >>> training_state_bytes(parameters(PUBLISHED["gpt2"])) / 1e9   # GPT-2 small, in GB
        1.991036928
    """
    check_positive("n_parameters", n_parameters)
    return n_parameters * sum(training_bytes_per_parameter(recipe).values())


def kv_cache_bytes_per_token(n_layer: int, n_kv_head: int, head_dim: int,
                             bytes_per_value: float = 4) -> int:
    """Bytes the KV cache adds for each token of each sequence:

        2 · n_layer · n_kv_head · head_dim · bytes_per_value

    (a key and a value of n_kv_head · head_dim numbers, in every layer). Grouped-query
    attention shrinks it by n_head / n_kv_head.

    Example:
        >>> kv_cache_bytes_per_token(12, 12, 64, 4)      # GPT-2 small in fp32: 72 KiB a token
        73728
    """
    for name, value in (("n_layer", n_layer), ("n_kv_head", n_kv_head), ("head_dim", head_dim)):
        check_positive(name, value)
    if isinstance(bytes_per_value, bool) or not bytes_per_value > 0:
        raise ValueError(f"bytes_per_value must be positive, got {bytes_per_value!r}")
    return math.ceil(2 * n_layer * n_kv_head * head_dim * bytes_per_value)


def kv_cache_bytes(n_layer: int, n_kv_head: int, head_dim: int, seq_len: int,
                   batch: int = 1, bytes_per_value: float = 4) -> int:
    """Bytes of a KV cache holding ``batch`` sequences of ``seq_len`` tokens:

        2 · n_layer · n_kv_head · head_dim · seq_len · batch · bytes_per_value

    the size of the course's :class:`~llmcourse.nn.kv_cache.KVCache` of ``max_len=seq_len``
    (its k and v tensors, (n_layer, batch, n_kv_head, seq_len, head_dim) each).

    Example:
        >>> s = PUBLISHED["llama2-70b"]                  # bf16, one full 4096-token context
        >>> kv_cache_bytes(s.n_layer, s.kv_heads, s.head_dim, s.context, 1, 2) / 2**30  # GiB
        1.25
    """
    check_positive("seq_len", seq_len)
    check_positive("batch", batch)
    return math.ceil(kv_cache_bytes_per_token(n_layer, n_kv_head, head_dim, 1)
                     * seq_len * batch * bytes_per_value)


def forward_flops_per_token(shape: ModelShape, context: int | None = None, *,
                            full_square: bool = False) -> int:
    """FLOPs of one forward pass per token, for sequences of ``context`` tokens (default:
    the model's whole context):

        2 · matmul_parameters + 2 · n_layer · context · d_model

    A product with a weight matrix costs 2 FLOPs (multiply, add) per weight per token. The
    attention adds, in each layer, a token at position t scoring t keys and summing t values
    (4·t·d FLOPs); averaged over a causal sequence, t ≈ context/2 (Kaplan et al. 2020,
    section 2.1; GQA changes nothing here, every query head still does this work). With
    ``full_square=True`` the whole context × context square is counted, 4·context·d per
    token per layer, as an unfused attention computes it before masking (and as
    ``torch.utils.flop_counter`` counts it).

    Example:
        >>> s = PUBLISHED["gpt2"]
        >>> round(forward_flops_per_token(s) / (2 * parameters(s)), 4)  # ≈ 2N, plus attention
        1.0685
    """
    t = shape.context if context is None else context
    check_positive("context", t)
    attention = (4 if full_square else 2) * shape.n_layer * t * shape.d_model
    return 2 * matmul_parameters(shape) + attention


def training_flops(shape: ModelShape, tokens: int, context: int | None = None, *,
                   full_square: bool = False) -> int:
    """FLOPs to train on ``tokens`` tokens in sequences of ``context``: three forward passes'
    worth per token, ≈ 6N · tokens.

    The backward pass of each product y = xW computes two products of the same size,
    ∂L/∂x = ∂L/∂y · Wᵀ and ∂L/∂W = xᵀ · ∂L/∂y, so it costs twice the forward pass; the same
    holds for the attention's products.

    Example:
        >>> f"{training_flops(PUBLISHED['gpt2'], 10**10):.3g}"   # GPT-2 small, 10B tokens
        '7.98e+18'
    """
    check_positive("tokens", tokens)
    return 3 * forward_flops_per_token(shape, context, full_square=full_square) * tokens
