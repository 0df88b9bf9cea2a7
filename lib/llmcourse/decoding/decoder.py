"""Running a model one step at a time over a batch of sequences, with or without a KV cache:
the engine under :func:`llmcourse.decoding.generate.generate` and
:func:`llmcourse.decoding.beam.beam_search`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Decoder", "DecodeLinear", "decode_weights"]


class DecodeLinear:
    """``x Wᵀ + b`` for the one-token decode step, with W re-stored for reading speed.

    Decoding one token multiplies a vector by each weight matrix: ~2 FLOPs per weight but
    4 bytes to read, so the time is the time to stream the matrices from memory. Two storage
    choices make that streaming faster on a CPU (``benchmarks/bench_generate.py`` measures
    them):

    - the longer side contiguous: ``nn.Linear`` keeps W as (out, in); for the square and
      widening matrices (out ≥ in) the matrix-vector kernel streams the transpose (in, out),
      GPT-2's own Conv1D layout, markedly faster (the largest matrix, the (V, C) output layer,
      above all); the narrowing MLP projection (4C → C) is faster as it is;
    - one block of outputs per thread: W is cut into ``parts`` blocks of rows, each stored
      contiguously, and ``torch.bmm`` runs the blocks side by side, so every core streams
      its own block.

    The same sums are computed (up to float rounding order). The copy costs the memory of
    the weights once; :func:`decode_weights` keeps it between calls.
    """

    def __init__(self, layer: nn.Linear, parts: int) -> None:
        w = layer.weight.detach()  # (out, in)
        out, inp = w.shape
        width = -(-out // parts)  # outputs per block, the last one zero-padded
        padded = w.new_zeros(parts * width, inp)
        padded[:out] = w
        blocks = padded.view(parts, width, inp)  # (P, width, in)
        self.out = out
        self.input_major = out >= inp
        # Stored (P, in, width) or (P, width, in); used as (P, in, width) either way.
        self.w = blocks.transpose(1, 2).contiguous() if self.input_major else blocks
        self.b = None
        if layer.bias is not None:
            bias = w.new_zeros(parts * width)
            bias[:out] = layer.bias.detach()
            self.b = bias.view(parts, 1, width)  # (P, 1, width)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) → (N, out)."""
        w = self.w if self.input_major else self.w.transpose(1, 2)  # (P, in, width)
        p, _, width = w.shape
        xs = x.expand(p, *x.shape)  # (P, N, in), no copy
        y = torch.bmm(xs, w) if self.b is None else torch.baddbmm(self.b, xs, w)  # (P, N, width)
        return y.transpose(0, 1).reshape(x.shape[0], p * width)[:, :self.out]  # (N, out)


# Decode copies of linear weights, kept between calls: nn.Linear -> (key, DecodeLinear).
_DECODE_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
DECODE_COPY_MAX_BYTES = 2 * 2**30  # bigger models decode from their own weights (no copy)


def decode_weights(model: nn.Module, parts: int | None = None) -> dict[nn.Linear, Callable]:
    """A fast ``layer → callable`` for every linear layer of ``model``, for the decode step.

    CPU models whose linear weights total at most ``DECODE_COPY_MAX_BYTES`` get a
    :class:`DecodeLinear` (``parts`` blocks; default: torch's thread count), built once and
    rebuilt when a weight changes (any in-place update bumps a tensor's ``_version``); other
    models compute ``F.linear`` on their own weights.
    """
    parts = parts or max(1, min(torch.get_num_threads(), 16))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    size = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    out: dict[nn.Linear, Callable] = {}
    for m in linears:
        if m.weight.device.type != "cpu" or size > DECODE_COPY_MAX_BYTES:
            out[m] = lambda x, m=m: F.linear(x, m.weight, m.bias)
            continue
        key = tuple((t._version, t.data_ptr(), t.shape, t.dtype) if t is not None else None
                    for t in (m.weight, m.bias)) + (parts,)
        cached = _DECODE_WEIGHTS.get(m)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, DecodeLinear(m, parts))
            _DECODE_WEIGHTS[m] = cached
        out[m] = cached[1]
    return out


class Decoder:
    """Runs a GPT one step at a time for a batch of N sequences.

    With a cache (the default) only the tokens not yet cached go through the model: the whole
    prompt at the first call (the prefill), then one token per call. Without a cache every
    call recomputes the whole sequence, the quadratic baseline the cache removes.

    The one-token steps of a pre-LN GPT run :meth:`_step`, the model's forward written out
    flat for a single position: no input checks (``generate`` made the inputs), no masks to
    build, weights read in the layout the CPU streams fastest. Tests check it against the
    model's own forward.

    Args:
        model: a :class:`llmcourse.models.gpt.GPT`.
        n: number of sequences (rows).
        prompt_len: length T of the (padded) prompts.
        max_len: the longest the sequences will get (prompt + new tokens).
        attention_mask: (N, T) 1/0 mask of the prompts, or None when nothing is padded.
        use_cache: keep keys/values in a preallocated :class:`~llmcourse.nn.kv_cache.KVCache`.
    """

    def __init__(self, model: nn.Module, n: int, prompt_len: int, *, max_len: int,
                 attention_mask: torch.Tensor | None = None, use_cache: bool = True) -> None:
        self.model = model
        device = model.transformer.wte.weight.device
        self.cache = model.new_cache(n, max_len) if use_cache else None
        self.fast = use_cache and getattr(model.config, "norm_first", False)
        self.linear = decode_weights(model) if self.fast else {}
        self.mask = self.positions = self.keys_visible = None
        if attention_mask is not None:
            mask = torch.ones(n, max_len, dtype=torch.long, device=device)  # (N, max_len)
            mask[:, :prompt_len] = attention_mask
            # Positions count real tokens only, so a left-padded prompt starts at position 0.
            pos = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
            new = pos[:, -1:] + torch.arange(1, max_len - prompt_len + 1, device=device)
            self.mask = mask
            self.positions = torch.cat([pos, new], dim=1)  # (N, max_len)
            self.keys_visible = mask.bool()[:, None, None, :]  # (N, 1, 1, max_len)

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float logits (N, V) for the token after ``tokens`` (N, L), the full text so far."""
        length = tokens.shape[1]
        start = self.cache.length if self.cache is not None else 0
        if self.fast and start > 0 and length - start == 1:
            return self._step(tokens[:, -1])
        kwargs = {}
        if self.mask is not None:
            kwargs = dict(attention_mask=self.mask[:, :length],
                          position_ids=self.positions[:, start:length])
        logits, _ = self.model(tokens[:, start:], cache=self.cache, last_only=True, **kwargs)
        return logits[:, -1].float()  # (N, V)

    def _step(self, token: torch.Tensor) -> torch.Tensor:
        """One new token per row through the model, over the cache: logits (N, V)."""
        m, cache, linear = self.model, self.cache, self.linear
        tr, cfg = m.transformer, m.config
        n, c, h = token.shape[0], cfg.n_embd, cfg.n_head
        at = cache.length  # the new token's slot in the cache
        pos = at if self.positions is None else self.positions[:, at]  # int or (N,)
        x = tr.wte.weight[token] + tr.wpe.weight[pos]  # (N, C)
        # One query sees every cached key (nothing lies in its future) except padding.
        mask = None if self.keys_visible is None else self.keys_visible[..., :at + 1]
        eps = cfg.layer_norm_epsilon
        for i, block in enumerate(tr.h):
            a = F.layer_norm(x, (c,), block.ln_1.weight, block.ln_1.bias, eps)  # (N, C)
            q, k, v = linear[block.attn.c_attn](a).split(c, dim=1)  # 3 × (N, C)
            cache.k[i, :, :, at] = k.view(n, h, c // h)  # (N, h, hd)
            cache.v[i, :, :, at] = v.view(n, h, c // h)
            y = F.scaled_dot_product_attention(
                q.reshape(n, h, 1, c // h), cache.k[i, :, :, :at + 1],
                cache.v[i, :, :, :at + 1], attn_mask=mask,
            )  # (N, h, 1, hd)
            x = x + linear[block.attn.c_proj](y.reshape(n, c))
            a = F.layer_norm(x, (c,), block.ln_2.weight, block.ln_2.bias, eps)
            a = F.gelu(linear[block.mlp.c_fc](a), approximate="tanh")  # (N, 4C)
            x = x + linear[block.mlp.c_proj](a)  # (N, C)
        cache.advance(1)
        x = F.layer_norm(x, (c,), tr.ln_f.weight, tr.ln_f.bias, eps)
        return linear[m.lm_head](x).float()  # (N, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N,) of the cache: beam search's surviving beams."""
        if self.cache is not None:
            self.cache.reorder(index)
