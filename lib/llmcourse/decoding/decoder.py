"""Running a model one step at a time over a batch of sequences, with or without a KV cache:
the engine under :func:`llmcourse.decoding.generate.generate` and
:func:`llmcourse.decoding.beam.beam_search`.

Every step goes through the model's own forward, the one that trains and scores: with a cache
it sees only the tokens not cached yet (the whole prompt at the first call, then one token).

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=8))
    >>> decoder = Decoder(model.eval(), n=2, prompt_len=3, max_len=5)
    >>> with torch.no_grad():
    ...     decoder.next_logits(torch.zeros(2, 3, dtype=torch.long)).shape
    torch.Size([2, 50])
"""

from __future__ import annotations

import itertools
from typing import Protocol

import torch
from torch import nn

from llmcourse.models.inputs import position_ids_from_mask

__all__ = ["StepDecoder", "Decoder", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s weights (a GPT, a Llama, an int8 GPT whose matrices are
    buffers: its first parameter or, failing that, buffer).

    Example:
        >>> model_device(nn.Linear(2, 2))
        device(type='cpu')
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    raise ValueError(f"{type(model).__name__} holds no weights, so no device to run on")


class StepDecoder(Protocol):
    """What the search loops need of a model: the next token's logits for the text so far,
    and keeping only some rows (beam search). :class:`Decoder` is the GPT's;
    :class:`llmcourse.decoding.seq2seq.Seq2SeqDecoder` the encoder–decoder's."""

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


class Decoder:
    """Runs a decoder-only model (a GPT or a Llama) one step at a time for a batch of N
    sequences.

    With a cache (the default) only the tokens not yet cached go through the model: the whole
    prompt at the first call (the prefill), then one token per call. Without a cache every
    call recomputes the whole sequence, the quadratic baseline the cache removes.

    Args:
        model: a :class:`llmcourse.models.gpt.GPT` or :class:`llmcourse.models.llama.Llama`:
            anything with their ``forward`` and ``new_cache``.
        n: number of sequences (rows).
        prompt_len: length T of the (padded) prompts.
        max_len: the longest the sequences will get (prompt + new tokens).
        attention_mask: (N, T) 1/0 mask of the (left-padded) prompts, already checked by the
            caller, or None when nothing is padded.
        use_cache: keep keys/values in a preallocated :class:`~llmcourse.nn.kv_cache.KVCache`.
    """

    def __init__(self, model: nn.Module, n: int, prompt_len: int, *, max_len: int,
                 attention_mask: torch.Tensor | None = None, use_cache: bool = True) -> None:
        self.model = model
        device = model_device(model)
        self.cache = model.new_cache(n, max_len) if use_cache else None
        self.mask = self.positions = None
        if attention_mask is not None:
            # Every generated token is real: the mask grows by ones after the prompt.
            mask = torch.ones(n, max_len, dtype=torch.long, device=device)  # (N, max_len)
            mask[:, :prompt_len] = attention_mask
            self.mask = mask
            self.positions = position_ids_from_mask(mask)  # (N, max_len)

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float logits (N, V) for the token after ``tokens`` (N, L), the full text so far."""
        length = tokens.shape[1]
        start = self.cache.length if self.cache is not None else 0
        kwargs = {}
        if self.mask is not None:
            kwargs = dict(attention_mask=self.mask[:, :length],
                          position_ids=self.positions[:, start:length])
        logits, _ = self.model(tokens[:, start:], cache=self.cache, last_only=True, **kwargs)
        return logits[:, -1].float()  # (N, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N,) of the cache: beam search's surviving beams."""
        if self.cache is not None:
            self.cache.reorder(index)
