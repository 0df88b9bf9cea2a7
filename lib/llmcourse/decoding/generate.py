"""Text generation: one ``generate`` for greedy decoding, sampling and beam search, over a
preallocated KV cache.

A language model gives a distribution over the next token; generating is choosing a token,
appending it, and asking again. The loop is the same for every strategy:

    prefill:  run the whole prompt once, storing every layer's keys/values in the cache
    repeat:   scores = logits of the last position          (B, V)
              scores = logits processors (penalties, filters; see ``llmcourse.decoding.processors``)
              token  = argmax(scores)  or  a draw from softmax(scores)
              run the model on that one token; the cache supplies the prefix

Beam search (``num_beams > 1``) keeps several candidates per prompt; see
``llmcourse.decoding.beam``.

Every choice follows ``transformers``' ``GPT2LMHeadModel.generate`` so that both give the same
tokens for the same weights and settings (the tests check it over a grid of settings):

- prompts of unequal length are padded on the LEFT, with an ``attention_mask`` (1 = token,
  0 = padding); positions count real tokens only, ``attention_mask.cumsum(-1) - 1``. A GPT
  continues from the last position, so a right-padded row would continue after its padding:
  a mask with padding on the right is refused; without a mask, when the pad id is also an EOS
  id (so no mask can be inferred from it), a batch in which some rows end with it but not all
  gets a warning, as in transformers;
- a sequence that produced ``eos_token_id`` is finished; it goes on receiving
  ``pad_token_id`` (default: the EOS id) until every sequence is finished;
- sampling draws with ``torch.multinomial(softmax(scores), 1)``: seed a ``torch.Generator``
  (or the global RNG with ``torch.manual_seed``) to repeat a draw.

One difference in defaults: ``transformers`` samples with ``top_k=50`` unless told otherwise;
here ``top_k=None`` keeps every token. Pass ``top_k=50`` to get its default.

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32))
    >>> out = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5)
    >>> out.shape                                  # the prompt, then 5 new tokens
    torch.Size([1, 8])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from llmcourse.core.torch_modes import eval_mode
from llmcourse.core.validate import check_padding_mask, check_token_ids
from llmcourse.decoding.beam import beam_search
from llmcourse.decoding.decoder import Decoder, StepDecoder, model_device
from llmcourse.decoding.processors import DecodingSettings, process_logits

__all__ = ["generate", "decode_loop"]


def _prompt_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 settings: DecodingSettings) -> torch.Tensor | None:
    """Check the attention mask; None when nothing is padded (the model's fast path)."""
    if attention_mask is None:
        pad = settings.pad_token_id
        if pad is None or not bool((input_ids == pad).any()):
            return None
        if pad in settings.eos_token_id:
            _warn_right_padding(input_ids, pad)
            # transformers infers the mask from the pad id only when that id cannot be an
            # EOS: a leading EOS is the usual start-of-text token, so it counts as a token.
            return None
        attention_mask = (input_ids != pad).long()
        origin = f"inferred from pad_token_id={pad}"
    else:
        origin = "attention_mask"
        attention_mask = check_padding_mask("attention_mask", attention_mask,
                                            tuple(input_ids.shape), "shaped like input_ids (B, T)")
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


def _warn_right_padding(input_ids: torch.Tensor, pad: int) -> None:
    """With pad == EOS and no mask, a row that ends in the pad id while another does not looks
    right-padded, and generation would continue after the padding. A prompt may also end with
    a real EOS, so, like transformers, this warns (naming the way out) rather than refuses."""
    ends_in_pad = input_ids[:, -1] == pad  # (B,)
    if input_ids.shape[0] > 1 and bool(ends_in_pad.any()) and not bool(ends_in_pad.all()):
        row = int(ends_in_pad.nonzero()[0])
        warnings.warn(
            f"input_ids looks right-padded: row {row} ends with pad_token_id={pad}, which is "
            "also an EOS id, while other rows do not, so that row would be continued after "
            "its padding. Pad on the LEFT (a tokenizer with padding_side='left') and pass the "
            "attention_mask; if those trailing ids are real tokens, pass an attention_mask of "
            "ones to say so (and silence this warning)",
            UserWarning, stacklevel=4,  # the caller of generate
        )


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
    typical_p: float | None = None,
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
        model: a :class:`llmcourse.models.gpt.GPT` or :class:`llmcourse.models.llama.Llama`.
        input_ids: (B, T) prompt ids; prompts of unequal length are padded on the LEFT
            (``[pad, pad, a, b]``, not ``[a, b, pad, pad]``), with ``attention_mask`` marking
            the padding; with a tokenizer, ask for ``padding_side="left"``.
        max_new_tokens: the most tokens to add (≥ 1); fewer when every row reached EOS.
        do_sample: draw tokens from the distribution instead of taking the most likely one.
        temperature: divides the scores before sampling (> 0; sampling only).
        top_k: sample among the k most likely tokens only (≥ 1; None = all).
        top_p: sample from the smallest set of tokens with probability ≥ p, in (0, 1].
        min_p: drop tokens less likely than min_p × the top token's probability, in [0, 1].
        typical_p: locally typical sampling: keep the tokens whose surprisal −log p is closest
            to the entropy, the fewest holding probability ≥ typical_p, in (0, 1] (1 = off).
        repetition_penalty: > 1 lowers the score of tokens already in the text (1 = off).
        no_repeat_ngram_size: n > 0 forbids repeating any n-gram of the text (0 = off).
        num_beams: > 1 runs beam search with that many beams.
        length_penalty: beam search ranks finished beams by log-prob / length**length_penalty.
        early_stopping: beam search stops when ``num_beams`` beams have finished (True), when
            no beam can improve by a heuristic (False), or never before the end ("never").
        eos_token_id: id (or ids) that end a sequence; None generates ``max_new_tokens``.
        pad_token_id: fills finished sequences; defaults to the (first) EOS id.
        attention_mask: (B, T) 1 for tokens, 0 for left padding. Without it, the padding is
            inferred from ``pad_token_id`` when that id is not an EOS id.
        generator: a seeded ``torch.Generator`` (on the model's device) for the draws; None
            uses the global RNG.
        use_cache: False recomputes the whole sequence every step (slow; for comparison).
        min_new_tokens: EOS is forbidden until this many tokens were generated.

    Returns:
        (B, T + n) token ids, prompt included, n ≤ max_new_tokens.

    Raises:
        ValueError: impossible settings (temperature ≤ 0 with sampling, top_p or typical_p
            outside (0, 1], top_k < 1, …), a prompt that does not leave room for
            ``max_new_tokens`` in the model's context, or padding on the right in
            ``attention_mask``.

    Warns:
        UserWarning: no ``attention_mask``, the pad id is an EOS id, and some rows but not all
            end with it: probably right padding, which would be continued.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "new_cache"):
        raise TypeError(f"model must be a llmcourse GPT or Llama, got {type(model).__name__}")
    cfg = model.config
    check_token_ids("input_ids", input_ids, cfg.vocab_size)
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty; give each prompt at least one token")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    settings = DecodingSettings(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
        repetition_penalty=repetition_penalty,
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
    device = model_device(model)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model on {device}; "
                         f"create it with torch.Generator(device={str(device)!r})")
    input_ids = input_ids.to(device=device, dtype=torch.long)
    mask = _prompt_mask(input_ids, attention_mask, settings)

    with eval_mode(model), torch.inference_mode():
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
            out = decode_loop(decoder, input_ids, settings, padding=padding, generator=generator)
    return out.clone()  # a normal tensor, not an inference-mode one


def _check_some_token_left(scores: torch.Tensor, step: int) -> None:
    """Sampling needs at least one allowed token per row (greedy just takes id 0)."""
    dead = torch.isneginf(scores).all(dim=-1)  # (B,)
    if bool(dead.any()):
        raise ValueError(f"every token was ruled out for row {int(dead.nonzero()[0])} at new "
                         f"token {step}: the penalties/filters (no_repeat_ngram_size, min_p, …) "
                         "left nothing to sample from")


def decode_loop(decoder: StepDecoder, input_ids: torch.Tensor, settings: DecodingSettings, *,
                padding: torch.Tensor | None, generator: torch.Generator | None
                ) -> torch.Tensor:
    """Greedy decoding or sampling: one token per row per step, from the prompts
    ``input_ids`` (B, T), over any ``decoder`` (a GPT's :class:`Decoder` or an
    encoder–decoder's), until every row emitted EOS or ``max_new_tokens`` were added."""
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
