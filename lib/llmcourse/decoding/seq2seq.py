"""Generation with an encoder–decoder: read the source once, then write the target token by
token with the same loops as the GPT (greedy/sampling in :mod:`llmcourse.decoding.generate`,
beam search in :mod:`llmcourse.decoding.beam`).

What changes from a decoder-only model is only how the next logits are computed
(:class:`Seq2SeqDecoder`):

    once:       memory = Encoder(src);  K_l, V_l = memory W_K, memory W_V   for every layer l
    each step:  logits = Decoder(new target token; self-attention cache; K_l, V_l)

The "prompt" of the target side is the start token alone; the search loops, the logits
processors and the stopping rules are the GPT's, so one beam search serves both model kinds
(tests check it against ``transformers``' ``generate`` on a Marian model with the same weights).

Example:
    >>> from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
    >>> model = Seq2Seq(Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=12, max_len=10,
    ...                               n_embd=16, n_head=2, ffn_hidden=32))
    >>> out = translate(model, torch.tensor([[4, 5, 6]]), bos_id=1, eos_id=2, max_new_tokens=5)
    >>> out.shape[0], out[0, 0].item(), out.shape[1] <= 6      # start token + up to 5 tokens
    (1, 1, True)
"""

from __future__ import annotations

import torch

from llmcourse.core.torch_modes import eval_mode
from llmcourse.decoding.beam import beam_search
from llmcourse.decoding.generate import decode_loop
from llmcourse.decoding.processors import DecodingSettings
from llmcourse.models.seq2seq import Seq2Seq

__all__ = ["Seq2SeqDecoder", "translate"]


class Seq2SeqDecoder:
    """Runs a :class:`Seq2Seq` decoder one step at a time for N target rows.

    The source is encoded once, and every decoder layer's cross-attention keys/values are
    computed once from it; with ``use_cache`` the decoder's self-attention keys/values are
    kept too, so each step runs one new token through the decoder.

    Args:
        model: the encoder–decoder.
        src: (N, S) source ids, one row per target row (beam search repeats each source).
        src_mask: (N, S) 1 for tokens, 0 for padding, or None when nothing is padded.
        max_len: the longest the target rows will get.
        use_cache: False recomputes the whole target every step (for comparison).
    """

    def __init__(self, model: Seq2Seq, src: torch.Tensor, src_mask: torch.Tensor | None, *,
                 max_len: int, use_cache: bool = True) -> None:
        self.model = model
        memory, self.memory_mask = model.encode(src, src_mask)  # (N, S, C)
        self.memory_kv = model.memory_kv(memory)  # per layer: (N, h, S, hd) × 2
        self.cache = model.new_cache(src.shape[0], max_len) if use_cache else None

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float logits (N, V) for the token after ``tokens`` (N, L), the target so far."""
        start = self.cache.length if self.cache is not None else 0
        logits = self.model.decode(tokens[:, start:], self.memory_kv, self.memory_mask,
                                   cache=self.cache, last_only=True)  # (N, 1, V)
        return logits[:, -1].float()  # (N, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N,): beam search's surviving beams. Their sources follow them
        (within one source's beams they are the same rows, but a general index may mix)."""
        if self.cache is not None:
            self.cache.reorder(index)
        self.memory_kv = [(k.index_select(0, index), v.index_select(0, index))
                          for k, v in self.memory_kv]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, index)


def translate(model: Seq2Seq, src: torch.Tensor, src_mask: torch.Tensor | None = None, *,
              bos_id: int, eos_id: int, max_new_tokens: int, num_beams: int = 1,
              length_penalty: float = 1.0, early_stopping: bool | str = False,
              use_cache: bool = True) -> torch.Tensor:
    """Greedy (``num_beams=1``) or beam-search translation of every source row.

    Args:
        model: a :class:`Seq2Seq`.
        src: (B, S) source ids; padding (the model's ``pad_id``) marked by ``src_mask``.
        src_mask: (B, S) 1 for tokens, 0 for padding; needed when ``src`` is padded.
        bos_id: the start token every target begins with.
        eos_id: the token that ends a target.
        max_new_tokens: the most tokens to write after the start token.
        num_beams, length_penalty, early_stopping: as in
            :func:`llmcourse.decoding.generate.generate`.
        use_cache: False recomputes the whole target every step.

    Returns:
        (B, 1 + n) target ids, the start token first, n ≤ max_new_tokens; rows that ended
        early are filled after their EOS with the model's pad id (greedy), or with
        ``pad_id or eos_id`` (beam search, transformers' rule: a pad id of 0 counts as unset).

    Raises:
        ValueError: anything :meth:`Seq2Seq.encode` refuses (ids outside the source
            vocabulary, padding without a mask, an empty source, a source too long), a
            target longer than ``max_len``, or impossible settings.
    """
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a llmcourse Seq2Seq, got {type(model).__name__}")
    cfg = model.config
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value < cfg.tgt_vocab_size:
            raise ValueError(f"{name} must be an id of the target vocabulary [0, "
                             f"{cfg.tgt_vocab_size}), got {value!r}")
    settings = DecodingSettings(max_new_tokens=max_new_tokens, num_beams=num_beams,
                                length_penalty=length_penalty, early_stopping=early_stopping,
                                eos_token_id=eos_id, pad_token_id=cfg.pad_id,
                                vocab_size=cfg.tgt_vocab_size)
    total = 1 + max_new_tokens
    if total > cfg.max_len:
        raise ValueError(f"the start token + max_new_tokens={max_new_tokens} = {total} is "
                         f"longer than the model's max_len={cfg.max_len}")
    device = model.lm_head.weight.device
    src = src.to(device) if isinstance(src, torch.Tensor) else src
    with eval_mode(model), torch.inference_mode():
        model.memory_mask(src, src_mask)  # check before repeating anything per beam
        b = src.shape[0]
        start = torch.full((b, 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
        if num_beams > 1:
            rows = lambda x: None if x is None else x.repeat_interleave(num_beams, dim=0)
            decoder = Seq2SeqDecoder(model, rows(src), rows(src_mask), max_len=total,
                                     use_cache=use_cache)
            out = beam_search(decoder, start, settings)
        else:
            decoder = Seq2SeqDecoder(model, src, src_mask, max_len=total, use_cache=use_cache)
            out = decode_loop(decoder, start, settings, padding=None, generator=None)
    return out.clone()
