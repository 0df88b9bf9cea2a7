"""Text generation: one ``generate`` for greedy decoding, sampling and beam search, over a
preallocated KV cache.

A language model gives a distribution over the next token; generating is choosing a token,
appending it, and asking again. The loop is the same for every strategy:

    prefill:  run the whole prompt once, storing every layer's keys/values in the cache
    repeat:   scores = logits of the last position          (B, V)
              scores = logits processors (penalties, filters; see ``llmcourse.sampling``)
              token  = argmax(scores)  or  a draw from softmax(scores)
              run the model on that one token; the cache supplies the prefix

Beam search (``num_beams > 1``) keeps several candidates per prompt; see ``llmcourse.beam``.

Every choice follows ``transformers``' ``GPT2LMHeadModel.generate`` so that both give the same
tokens for the same weights and settings (the tests check it over a grid of settings):

- prompts of unequal length are padded on the LEFT, with an ``attention_mask`` (1 = token,
  0 = padding); positions count real tokens only, ``attention_mask.cumsum(-1) - 1``;
- a sequence that produced ``eos_token_id`` is finished; it goes on receiving
  ``pad_token_id`` (default: the EOS id) until every sequence is finished;
- sampling draws with ``torch.multinomial(softmax(scores), 1)``: seed a ``torch.Generator``
  (or the global RNG with ``torch.manual_seed``) to repeat a draw.

One difference in defaults: ``transformers`` samples with ``top_k=50`` unless told otherwise;
here ``top_k=None`` keeps every token. Pass ``top_k=50`` to get its default.

Example:
    >>> from llmcourse.model import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32))
    >>> out = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5)
    >>> out.shape                                  # the prompt, then 5 new tokens
    torch.Size([1, 8])
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_tensor, check_token_ids
from .beam import beam_search
from .sampling import DecodingSettings, process_logits

__all__ = ["generate", "Decoder", "DecodeLinear", "decode_weights"]


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
        model: a :class:`llmcourse.model.GPT`.
        n: number of sequences (rows).
        prompt_len: length T of the (padded) prompts.
        max_len: the longest the sequences will get (prompt + new tokens).
        attention_mask: (N, T) 1/0 mask of the prompts, or None when nothing is padded.
        use_cache: keep keys/values in a preallocated :class:`~llmcourse.kv_cache.KVCache`.
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


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off while generating; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _prompt_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 settings: DecodingSettings) -> torch.Tensor | None:
    """Check the attention mask; None when nothing is padded (the model's fast path)."""
    if attention_mask is None:
        pad = settings.pad_token_id
        # transformers infers the mask from the pad id when that id cannot be an EOS.
        if pad is None or pad in settings.eos_token_id or not (input_ids == pad).any():
            return None
        attention_mask = (input_ids != pad).long()
        origin = f"inferred from pad_token_id={pad}"
    else:
        check_tensor("attention_mask", attention_mask)
        origin = "attention_mask"
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids "
                             f"{tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
        if attention_mask.is_floating_point() or attention_mask.is_complex() or \
                not ((attention_mask == 0) | (attention_mask == 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token), as "
                             "integers or bools")
        attention_mask = attention_mask.to(input_ids.device).long()
    if bool((attention_mask == 1).all()):
        return None
    if not bool((attention_mask[:, 1:] >= attention_mask[:, :-1]).all()):
        raise ValueError(f"{origin}: padding must be on the LEFT (zeros before the tokens of each "
                         "row); a GPT continues from the last position, so right padding would "
                         "put the padding between the prompt and its continuation")
    if not bool(attention_mask[:, -1].all()):
        raise ValueError(f"{origin}: a row is all padding; every prompt needs at least one token")
    return attention_mask


def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    min_new_tokens: int = 0,
) -> torch.Tensor:
    """Continue each prompt of ``input_ids`` (B, T) by up to ``max_new_tokens`` tokens.

    Args:
        model: a :class:`llmcourse.model.GPT`.
        input_ids: (B, T) prompt ids; prompts of unequal length are left-padded.
        max_new_tokens: the most tokens to add (≥ 1); fewer when every row reached EOS.
        do_sample: draw tokens from the distribution instead of taking the most likely one.
        temperature: divides the scores before sampling (> 0; sampling only).
        top_k: sample among the k most likely tokens only (≥ 1; None = all).
        top_p: sample from the smallest set of tokens with probability ≥ p, in (0, 1].
        min_p: drop tokens less likely than min_p × the top token's probability, in [0, 1].
        repetition_penalty: > 1 lowers the score of tokens already in the text (1 = off).
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram of the text (0 = off).
        num_beams: > 1 runs beam search with that many beams.
        length_penalty: beam search ranks finished beams by log-prob / length**length_penalty.
        early_stopping: beam search stops when ``num_beams`` beams have finished (True), when
            no beam can improve by a heuristic (False), or never before the end ("never").
        eos_token_id: id (or ids) that end a sequence; None generates ``max_new_tokens``.
        pad_token_id: fills finished sequences; defaults to the (first) EOS id.
        attention_mask: (B, T) 1 for tokens, 0 for left padding.
        generator: a seeded ``torch.Generator`` (on the model's device) for the draws; None
            uses the global RNG.
        use_cache: False recomputes the whole sequence every step (slow; for comparison).
        min_new_tokens: EOS is forbidden until this many tokens were generated.

    Returns:
        (B, T + n) token ids, prompt included, n ≤ max_new_tokens.

    Raises:
        ValueError: impossible settings (temperature ≤ 0 with sampling, top_p outside (0, 1],
            top_k < 1, …) or a prompt that does not leave room for ``max_new_tokens`` in the
            model's context.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "new_cache"):
        raise TypeError(f"model must be a llmcourse GPT, got {type(model).__name__}")
    cfg = model.config
    check_token_ids("input_ids", input_ids, cfg.vocab_size)
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty; give each prompt at least one token")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    settings = DecodingSettings(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
        num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, vocab_size=cfg.vocab_size,
    )
    b, t = input_ids.shape
    total = t + max_new_tokens
    if total > cfg.block_size:
        raise ValueError(
            f"prompt of {t} tokens + max_new_tokens={max_new_tokens} = {total} is longer than "
            f"the model's context block_size={cfg.block_size}; shorten the prompt to at most "
            f"{cfg.block_size - max_new_tokens} tokens or ask for fewer new tokens"
        )
    device = model.transformer.wte.weight.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model on {device}; "
                         f"create it with torch.Generator(device={str(device)!r})")
    input_ids = input_ids.to(device=device, dtype=torch.long)
    mask = _prompt_mask(input_ids, attention_mask, settings)

    with _eval_mode(model), torch.inference_mode():
        padding = None if mask is None else mask == 0  # (B, T)
        if num_beams > 1:
            rows = lambda x: None if x is None else x.repeat_interleave(num_beams, dim=0)
            decoder = Decoder(model, b * num_beams, t, max_len=total, attention_mask=rows(mask),
                              use_cache=use_cache)
            out = beam_search(decoder, input_ids, settings, padding=rows(padding),
                              generator=generator)
        else:
            decoder = Decoder(model, b, t, max_len=total, attention_mask=mask,
                              use_cache=use_cache)
            out = _decode(decoder, input_ids, settings, padding=padding, generator=generator)
    return out.clone()  # a normal tensor, not an inference-mode one


def _check_some_token_left(scores: torch.Tensor, step: int) -> None:
    """Sampling needs at least one allowed token per row (greedy just takes id 0)."""
    dead = torch.isneginf(scores).all(dim=-1)  # (B,)
    if bool(dead.any()):
        raise ValueError(f"every token was ruled out for row {int(dead.nonzero()[0])} at new "
                         f"token {step}: the penalties/filters (no_repeat_ngram_size, min_p, …) "
                         "left nothing to sample from")


def _decode(decoder: Decoder, input_ids: torch.Tensor, settings: DecodingSettings, *,
            padding: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy decoding or sampling: one token per row per step."""
    b, t = input_ids.shape
    seq = torch.empty(b, t + settings.max_new_tokens, dtype=torch.long, device=input_ids.device)
    seq[:, :t] = input_ids
    eos = torch.tensor(settings.eos_token_id, device=seq.device) if settings.eos_token_id \
        else None
    unfinished = torch.ones(b, dtype=torch.bool, device=seq.device)
    length = t
    for _ in range(settings.max_new_tokens):
        text = seq[:, :length]  # (B, L)
        scores = decoder.next_logits(text)  # (B, V)
        scores = process_logits(scores, text, settings, prompt_length=t, padding=padding)
        if settings.do_sample:
            _check_some_token_left(scores, length - t)
            probs = torch.softmax(scores, dim=-1)  # (B, V)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        else:
            token = scores.argmax(dim=-1)  # (B,)
        if eos is not None:
            token = torch.where(unfinished, token, settings.pad_token_id)
        seq[:, length] = token
        length += 1
        if eos is not None:
            unfinished &= ~torch.isin(token, eos)
            if not bool(unfinished.any()):
                break
    return seq[:, :length]
