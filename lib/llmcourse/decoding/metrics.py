"""Measures of generated text: how repetitive, how varied, how likely under the model.

- ``repetition_rate(seqs, n)``: the share of a text's n-grams that already occurred earlier in
  the same text (Welleck et al., 2019, "seq-rep-n"). Greedy decoding loops; this counts it.
- ``distinct_n(seqs, n)``: distinct n-grams / all n-grams over every text (Li et al., 2016).
  1 means no n-gram is ever reused; near 0 means the same few n-grams again and again.
- ``mean_log_likelihood(model, ids)``: the average log-probability the model gives each token
  of a text, (1/N) Σ_t log p(x_t | x_<t). Greedy and beam search score high on it and still
  read badly, which is the point of measuring both.

The first two take token ids as a list, a 1-D tensor (one text), a list of those, or a 2-D
tensor (one text per row).

Example:
    >>> repetition_rate([1, 2, 1, 2, 1, 2], n=2)      # (1,2) (2,1) (1,2) (2,1) (1,2)
    0.6
    >>> distinct_n([[1, 2, 3], [1, 2, 4]], n=1)       # 4 distinct of 6 tokens
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llmcourse.core.torch_modes import eval_mode
from llmcourse.core.validate import check_padding_mask, check_token_ids
from llmcourse.models.inputs import position_ids_from_mask

__all__ = ["ngrams", "repetition_rate", "distinct_n", "mean_log_likelihood"]

TokenSeqs = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | Sequence[torch.Tensor]


def _as_sequences(seqs: TokenSeqs) -> list[list[int]]:
    """Normalise the accepted inputs to a list of lists of ints."""
    if isinstance(seqs, torch.Tensor):
        if seqs.is_floating_point() or seqs.dim() not in (1, 2):
            raise ValueError(f"token ids must be an integer tensor of 1 or 2 dims, got "
                             f"{seqs.dtype} of shape {tuple(seqs.shape)}")
        return [seqs.tolist()] if seqs.dim() == 1 else seqs.tolist()
    if isinstance(seqs, str | bytes) or not isinstance(seqs, Sequence):
        raise TypeError(f"expected token ids (list or tensor), got {type(seqs).__name__}")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in seqs):
        return [list(seqs)]
    out = []
    for s in seqs:
        if isinstance(s, torch.Tensor):
            if s.is_floating_point() or s.dim() != 1:
                raise ValueError(f"each text must be a 1-D integer tensor, got {s.dtype} "
                                 f"{tuple(s.shape)}")
            s = s.tolist()
        if isinstance(s, str | bytes) or not isinstance(s, Sequence) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in s):
            raise TypeError("expected a list of token-id lists; found an element that is not "
                            "a sequence of ints")
        out.append(list(s))
    return out


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return n


def ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """Every run of ``n`` consecutive tokens, in order: ``ngrams([1, 2, 3], 2) == [(1, 2),
    (2, 3)]``."""
    _check_n(n)
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def repetition_rate(seqs: TokenSeqs, n: int = 4) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the same text, pooled over texts.

        repeats(text) = #n-grams(text) − #distinct n-grams(text)
        rate = Σ repeats / Σ #n-grams          (0 = no repeats; → 1 for a loop)

    Raises ValueError when no text has ``n`` tokens.
    """
    _check_n(n)
    total = repeats = 0
    for s in _as_sequences(seqs):
        grams = ngrams(s, n)
        total += len(grams)
        repeats += len(grams) - len(set(grams))
    if total == 0:
        raise ValueError(f"no text has {n} tokens, so there is no {n}-gram to count")
    return repeats / total


def distinct_n(seqs: TokenSeqs, n: int = 1) -> float:
    """Distinct n-grams over all texts divided by all n-grams over all texts (Li et al., 2016).

    Raises ValueError when no text has ``n`` tokens.
    """
    _check_n(n)
    seen: set[tuple[int, ...]] = set()
    total = 0
    for s in _as_sequences(seqs):
        grams = ngrams(s, n)
        total += len(grams)
        seen.update(grams)
    if total == 0:
        raise ValueError(f"no text has {n} tokens, so there is no {n}-gram to count")
    return len(seen) / total


@torch.no_grad()
def mean_log_likelihood(model: nn.Module, input_ids: torch.Tensor, *, start: int = 1,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean log p(x_t | x_<t) per text, over the tokens at positions t ≥ ``start``.

    Args:
        model: a :class:`llmcourse.models.gpt.GPT`.
        input_ids: (B, L) token ids, e.g. ``generate``'s output.
        start: first position scored; pass the prompt length to score only what was
            generated. Position 0 has no context and is never scored.
        attention_mask: optional (B, L), 1 for tokens, 0 for padding (left padding of the
            prompt, or the pad tokens after EOS); padding is neither scored nor attended to,
            and positions count real tokens only, as in ``generate``.

    Returns:
        (B,) float tensor, in nats per token (higher = more likely).

    Raises:
        ValueError: a text with no token to score (nothing at or after ``start``, or only
            padding there): its mean would be 0/0 = NaN.
    """
    check_token_ids("input_ids", input_ids, model.config.vocab_size)
    b, length = input_ids.shape
    if length < 2:
        raise ValueError(f"input_ids has {length} token(s) per text; scoring needs at least 2 "
                         "(position 0 has no context, so it is never scored)")
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < length:
        raise ValueError(f"start must be an integer in [0, {length}), got {start!r}")
    kwargs = {}
    if attention_mask is None:
        real = torch.ones_like(input_ids, dtype=torch.bool)  # (B, L)
    else:
        real = check_padding_mask("attention_mask", attention_mask, tuple(input_ids.shape),
                                  "shaped like input_ids (B, L)")  # (B, L) bool
        real = real.to(input_ids.device)
        kwargs = dict(attention_mask=real, position_ids=position_ids_from_mask(real))
    with eval_mode(model):
        logits, _ = model(input_ids, **kwargs)  # (B, L, V)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, L-1, V): predicts 1..L-1
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, L-1)
    # Score x_t when it is a token, has a token before it, and lies at or after `start`.
    scored = real[:, 1:] & real[:, :-1]  # (B, L-1)
    scored[:, :max(start - 1, 0)] = False
    counts = scored.sum(dim=1)  # (B,)
    if (counts == 0).any():
        row = int((counts == 0).nonzero()[0])
        raise ValueError(f"text {row} has no token to score at positions >= start={start}")
    return torch.where(scored, token_logp, 0.0).sum(dim=1) / counts
