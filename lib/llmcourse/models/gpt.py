"""A GPT (decoder-only Transformer) in the shape of GPT-2, convertible to and from
``transformers.GPT2LMHeadModel``.

    tokens → wte + wpe → n_layer × Block → ln_f → lm_head (= wteᵀ, tied) → logits

Example:
    >>> cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32)
    >>> model = GPT(cfg)
    >>> logits, loss = model(torch.zeros(1, 8, dtype=torch.long))
    >>> logits.shape, loss is None
    (torch.Size([1, 8, 100]), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from llmcourse.core.validate import check_positive
from llmcourse.models.inputs import check_model_inputs, position_ids_from_mask
from llmcourse.nn.block import Block
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.linear import Linear, input_major
from llmcourse.nn.norms import LayerNorm

__all__ = ["GPTConfig", "GPT", "parameter_count", "init_gpt2_weights", "position_ids_from_mask"]


@dataclass(frozen=True)
class GPTConfig:
    """Sizes of a GPT. The defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257
    block_size: int = 1024  # the context: the most positions the model can attend over
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    norm_first: bool = True  # pre-LN as in GPT-2; False gives the 2017 post-LN arrangement
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_positive(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        eps = self.layer_norm_epsilon
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
            raise ValueError(f"layer_norm_epsilon must be a small positive number, got {eps!r}")
        for name in ("bias", "norm_first"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_hf(self) -> Any:
        """The equivalent ``transformers.GPT2Config``."""
        if not self.norm_first or not self.bias:
            raise ValueError("only pre-LN GPTs with biases have a GPT-2 equivalent")
        from transformers import GPT2Config  # seconds to import: only for interop with HF

        return GPT2Config(
            vocab_size=self.vocab_size, n_positions=self.block_size, n_embd=self.n_embd,
            n_layer=self.n_layer, n_head=self.n_head, activation_function="gelu_new",
            resid_pdrop=self.dropout, embd_pdrop=self.dropout, attn_pdrop=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon, tie_word_embeddings=True,
            bos_token_id=self.vocab_size - 1, eos_token_id=self.vocab_size - 1,
        )

    @classmethod
    def from_hf(cls, hf_config: Any) -> GPTConfig:
        """Read a ``transformers.GPT2Config`` (or anything with its attribute names)."""
        act = getattr(hf_config, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {act!r}; the course GPT uses GELU-tanh")
        if not getattr(hf_config, "scale_attn_weights", True) or getattr(
                hf_config, "scale_attn_by_inverse_layer_idx", False):
            raise ValueError("unsupported attention scaling: the course GPT scales scores by "
                             "1/√head_dim only (scale_attn_weights=True, "
                             "scale_attn_by_inverse_layer_idx=False)")
        n_inner = getattr(hf_config, "n_inner", None)
        if n_inner not in (None, 4 * hf_config.n_embd):
            raise ValueError(f"unsupported n_inner={n_inner}; expected 4 * n_embd")
        return cls(
            vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions,
            n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd,
            layer_norm_epsilon=hf_config.layer_norm_epsilon,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (for JSON)."""
        return asdict(self)


def parameter_count(cfg: GPTConfig) -> int:
    """Parameters of a GPT by formula (tied embeddings counted once):

        V·C + T·C                                  token and position embeddings
        + L · (12·C² + 13·C)                       per block: attention 4C²+4C, MLP 8C²+5C,
                                                   two LayerNorms 4C
        + 2·C                                      final LayerNorm
    """
    if not isinstance(cfg, GPTConfig):
        raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
    v, t, c, n = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    per_block = 12 * c * c + (13 * c if cfg.bias else 2 * c)
    return v * c + t * c + n * per_block + (2 * c if cfg.bias else c)


def init_gpt2_weights(model: nn.Module, n_layer: int,
                      residual_projections: tuple[str, ...]) -> None:
    """GPT-2's initialisation (Radford et al. 2019, §2.3), in place: every linear and embedding
    matrix N(0, 0.02²), biases zero, and the matrices that write into the residual stream
    (parameter names ending in one of ``residual_projections``) N(0, (0.02/√(2·n_layer))²),
    so that the residual stream's variance does not grow with depth (each block adds two
    such projections). The course's GPT and the Llama-style model of chapter 10 share it.

    Example:
        >>> m = nn.Sequential(nn.Linear(64, 256), nn.Linear(256, 64))
        >>> init_gpt2_weights(m, n_layer=8, residual_projections=("1.weight",))
        >>> round(m[0].weight.std().item(), 2), round(m[1].weight.std().item(), 3)
        (0.02, 0.005)
    """
    def normal(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    model.apply(normal)  # children before parents: the order of the random draws is fixed
    for name, p in model.named_parameters():
        if name.endswith(residual_projections):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


class GPT(nn.Module):
    """GPT-2-shaped language model with tied input/output embeddings.

    One forward serves training (with ``targets``), scoring and cached decoding (with a
    :class:`KVCache`, one token at a time). For the decoding step, whose time is the time to
    read every weight once, the matrices are stored in the layout the matrix-vector product
    reads fastest (see :mod:`llmcourse.nn.linear`); the tied embedding, the largest matrix,
    is stored (n_embd, vocab) like the output layer's input-major ``x @ W``. Parameter names,
    shapes and the state dict are those of ``nn.Linear``/``nn.Embedding``.

    **Activation checkpointing** (Chen et al. 2016, "Training deep nets with sublinear memory
    cost"; ``transformers`` calls it gradient checkpointing): with
    ``model.activation_checkpointing = True``, a training forward keeps only each block's
    input, and the backward pass runs each block's forward again to get the activations it
    needs (``torch.utils.checkpoint``, which also replays dropout's random draws). The
    activations held between forward and backward shrink from every intermediate of every
    block to one (B, T, C) tensor per block, for about one more forward pass of compute. The
    gradients are those of the plain forward. It applies only where there is a backward pass to
    feed: in training mode, with gradients enabled, without a cache; evaluation and decoding
    are unchanged. It is a setting of the run, not of the model's shape: it is not in
    :class:`GPTConfig` or in a checkpoint.

        >>> m = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=8))
        >>> x = torch.randint(0, 16, (2, 8), generator=torch.Generator().manual_seed(0))
        >>> m(x, x)[1].backward(); plain = m.lm_head.weight.grad.clone()
        >>> m.zero_grad(); m.activation_checkpointing = True
        >>> m(x, x)[1].backward()
        >>> torch.allclose(m.lm_head.weight.grad, plain, atol=1e-7)
        True
    """

    activation_checkpointing: bool = False  # see the class docstring

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),
            wpe=nn.Embedding(c.block_size, c.n_embd),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList(
                Block(c.n_embd, c.n_head, bias=c.bias, dropout=c.dropout,
                      norm_first=c.norm_first, eps=c.layer_norm_epsilon)
                for _ in range(c.n_layer)
            ),
            ln_f=LayerNorm(c.n_embd, bias=c.bias, eps=c.layer_norm_epsilon),
        ))
        # The embedding, (vocab, C), stored (C, vocab): the output layer then reads it as
        # x @ Wᵀ with Wᵀ contiguous (fast for one token); looking up a few rows is cheap anyway.
        self.transformer.wte.weight = nn.Parameter(input_major(self.transformer.wte.weight))
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        # Weight tying (Press & Wolf, 2017): the output layer reuses the token embeddings.
        self.lm_head.weight = self.transformer.wte.weight
        init_gpt2_weights(self, c.n_layer, residual_projections=("c_proj.weight",))

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (the tied matrix once), like HF's ``num_parameters``."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` sized for this model."""
        c = self.config
        p = self.transformer.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.block_size,
                       c.n_embd // c.n_head, dtype=p.dtype, device=p.device)

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

        Args:
            idx: token ids (B, T).
            targets: next-token ids (B, T); positions holding -100 are ignored (HF's rule).
            attention_mask: (B, S) with 1 for real tokens and 0 for padding, over all S =
                cached + T positions (for batches of prompts of unequal length).
            position_ids: (B, T) positions of the new tokens; default cached..cached+T-1.
            cache: a :class:`KVCache`; new keys/values are appended and it advances by T.
            last_only: return the logits of the last position only, (B, 1, vocab_size).
                Generation needs nothing else, and the vocabulary projection is the largest
                matmul of the model: for a long prompt this skips most of the prefill's work.

        Returns:
            ``(logits (B, T, vocab_size), loss or None)``.

        Raises:
            ValueError/TypeError: this is where inputs enter the model, so everything is
                checked here, once, by :func:`llmcourse.models.inputs.check_model_inputs`
                (the Llama's forward calls it too): ids outside the vocabulary or not
                integers, no token at all, a sequence longer than the context, a cache for
                another batch size, targets of another shape or with nothing to score (all
                -100: the mean loss would be 0/0 = NaN), a mask or positions of the wrong
                shape or values. The blocks inside check only shapes.
        """
        c = self.config
        idx, targets, positions, mask = check_model_inputs(
            idx, targets, vocab_size=c.vocab_size, block_size=c.block_size,
            attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            last_only=last_only, cache_layout=(c.n_layer, c.n_head, c.n_embd // c.n_head),
        )  # (B, T), (B, T) or None, (B|1, T), (B, 1, T, S) or None

        x = self.transformer.wte(idx) + self.transformer.wpe(positions)  # (B, T, C)
        x = self.transformer.drop(x)
        recompute = (self.activation_checkpointing and self.training and cache is None
                     and torch.is_grad_enabled())
        for i, block in enumerate(self.transformer.h):
            if recompute:  # keep x only; backward runs the block again (class docstring)
                x = torch.utils.checkpoint.checkpoint(block, x, mask, None, i,
                                                      use_reentrant=False)  # (B, T, C)
            else:
                x = block(x, mask, cache, i)  # (B, T, C)
        if cache is not None:
            cache.advance(idx.shape[1])
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        x = self.transformer.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                   ignore_index=-100)
        return logits, loss

    # --- Hugging Face interop -------------------------------------------------------------

    _CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    _HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in older checkpoints

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under ``GPT2LMHeadModel``'s names and layouts.

        GPT-2 stores its linear layers as ``Conv1D`` with weight (in, out), the transpose of
        ``nn.Linear``'s (out, in).
        """
        out = {}
        for name, tensor in self.state_dict().items():
            if name.endswith(self._CONV1D):
                tensor = tensor.t()
            out[name] = tensor.detach().clone().contiguous()
        return out

    @classmethod
    def from_hf_state_dict(cls, state_dict: dict[str, torch.Tensor],
                           config: GPTConfig | None = None) -> GPT:
        """Build a GPT from a ``GPT2LMHeadModel`` state dict (keys with or without the
        ``transformer.`` prefix as HF writes them). The config is inferred from the shapes
        when not given. Unknown, missing or mis-shaped tensors are refused by name."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping of names to tensors, got "
                            f"{type(state_dict).__name__}")
        sd = {k: v for k, v in state_dict.items() if not k.endswith(cls._HF_BUFFERS)}
        sd = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
              for k, v in sd.items()}
        if config is None:
            config = _infer_config(sd)
        model = cls(config)
        expected = model.state_dict()
        sd.setdefault("lm_head.weight", sd.get("transformer.wte.weight"))
        unknown = sorted(set(sd) - set(expected))
        missing = sorted(set(expected) - set(sd))
        if unknown:
            raise ValueError(f"not a GPT-2 checkpoint for this config: unexpected tensor "
                             f"{unknown[0]!r} (and {len(unknown) - 1} more)")
        if missing:
            raise ValueError(f"checkpoint lacks tensor {missing[0]!r} (and {len(missing) - 1} "
                             "more)")
        converted = {}
        for name, ours in expected.items():
            theirs = sd[name]
            if not isinstance(theirs, torch.Tensor):
                raise TypeError(f"tensor {name!r} is a {type(theirs).__name__}, not a tensor")
            if name.endswith(cls._CONV1D):
                theirs = theirs.t()
            if theirs.shape != ours.shape:
                raise ValueError(
                    f"tensor {name!r} has shape {tuple(theirs.shape)} in the checkpoint but "
                    f"{tuple(ours.shape)} in the model (config {config})"
                )
            converted[name] = theirs
        # Our output layer IS the token embedding; an untied checkpoint cannot be represented.
        if not torch.equal(converted["lm_head.weight"], converted["transformer.wte.weight"]):
            raise ValueError("lm_head.weight differs from transformer.wte.weight: the "
                             "checkpoint's embeddings are not tied, which this GPT requires")
        model.load_state_dict(converted)
        return model

    def to_hf(self) -> Any:
        """An equivalent ``transformers.GPT2LMHeadModel`` holding copies of these weights."""
        from transformers import GPT2LMHeadModel  # seconds to import: only for interop

        hf = GPT2LMHeadModel(self.config.to_hf())
        missing, unexpected = hf.load_state_dict(self.to_hf_state_dict(), strict=False)
        missing = [k for k in missing if not k.endswith(self._HF_BUFFERS)]
        if missing or unexpected:
            raise ValueError(f"HF model did not take the weights: missing {missing}, "
                             f"unexpected {unexpected}")
        return hf.eval()

    @classmethod
    def from_hf(cls, hf_model: Any) -> GPT:
        """Copy a ``transformers.GPT2LMHeadModel`` into a course GPT."""
        return cls.from_hf_state_dict(hf_model.state_dict(), GPTConfig.from_hf(hf_model.config))


def _infer_config(sd: dict[str, torch.Tensor]) -> GPTConfig:
    """Read sizes off a GPT-2 state dict; n_head cannot be read off shapes, so it must be
    given through a config unless the width is one of GPT-2's own (64 per head)."""
    try:
        v, c = sd["transformer.wte.weight"].shape
        t = sd["transformer.wpe.weight"].shape[0]
    except KeyError as err:
        raise ValueError(f"not a GPT-2 checkpoint: no tensor {err.args[0]!r}") from None
    layers = {k.split(".")[2] for k in sd if k.startswith("transformer.h.")}
    if not layers or not all(i.isdigit() for i in layers):
        raise ValueError("not a GPT-2 checkpoint: no blocks transformer.h.<i>.* found")
    n_layer = 1 + max(int(i) for i in layers)
    if c % 64:
        raise ValueError(f"cannot infer n_head for width {c}; pass a GPTConfig")
    return GPTConfig(vocab_size=v, block_size=t, n_layer=n_layer, n_head=c // 64, n_embd=c)
