"""Logits processors: the small functions that reshape the next-token scores before a token
is chosen, and the settings object that validates them.

Decoding turns scores (B, V) into one token per row. Each processor below takes the scores and
returns new ones, in the order ``transformers`` applies them, so that our choices match
``GPT2LMHeadModel.generate`` token for token:

    1. repetition penalty      divide positive / multiply negative scores of tokens already seen
    2. no-repeat-n-gram         forbid a token that would complete an n-gram already in the text
    3. minimum length           forbid EOS until ``min_new_tokens`` tokens were generated
    ---- only when sampling ----
    4. temperature              s / T: T < 1 sharpens, T > 1 flattens the distribution
    5. top-k                    keep the k highest scores
    6. top-p (nucleus)          keep the smallest set of tokens holding probability ≥ p
    7. min-p                    keep tokens with probability ≥ min_p · (the top probability)
    8. typical                  keep the tokens whose surprisal is closest to the entropy,
                                smallest such set holding probability ≥ typical_p

A forbidden token gets the score ``-inf``: probability exactly 0 after the softmax.

Example:
    >>> s = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    >>> top_k_filter(s, 2)
    tensor([[2., 1., -inf, -inf]])
    >>> apply_repetition_penalty(s, torch.tensor([[0, 3]]), 2.0)
    tensor([[ 1.,  1.,  0., -2.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DecodingSettings",
    "apply_repetition_penalty",
    "ban_repeated_ngrams",
    "suppress_tokens",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
    "min_p_filter",
    "typical_filter",
    "process_logits",
]

NEG_INF = float("-inf")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


@dataclass(frozen=True)
class DecodingSettings:
    """Every knob of :func:`llmcourse.decoding.generate.generate`, checked once on construction.

    ``eos_token_id`` is normalised to a tuple of ids (empty: no end-of-sequence token), and
    ``pad_token_id`` defaults to the first EOS id, as ``transformers`` does.
    """

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    min_new_tokens: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    eos_token_id: int | Sequence[int] | None = None
    pad_token_id: int | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        def fail(name: str, value: object, expected: str) -> None:
            raise ValueError(f"{name} must be {expected}, got {value!r}")

        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            fail("max_new_tokens", self.max_new_tokens, "an integer >= 1")
        if not isinstance(self.do_sample, bool):
            raise TypeError(f"do_sample must be True or False, got {self.do_sample!r}")
        if not _is_number(self.temperature):
            raise TypeError(f"temperature must be a number, got {type(self.temperature).__name__}")
        if self.do_sample and not self.temperature > 0:
            fail("temperature", self.temperature, "> 0 when sampling (use do_sample=False for "
                 "greedy decoding, the limit of temperature → 0)")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            fail("top_k", self.top_k, "an integer >= 1 (or None to keep every token)")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            fail("top_p", self.top_p, "in (0, 1] (or None)")
        if self.min_p is not None and (not _is_number(self.min_p) or not 0 <= self.min_p <= 1):
            fail("min_p", self.min_p, "in [0, 1] (or None)")
        if self.typical_p is not None and (not _is_number(self.typical_p)
                                           or not 0 < self.typical_p <= 1):
            fail("typical_p", self.typical_p, "in (0, 1] (or None; 1 keeps every token)")
        if not _is_number(self.repetition_penalty) or not self.repetition_penalty > 0:
            fail("repetition_penalty", self.repetition_penalty,
                 "a number > 0 (1.0 = no penalty, > 1 discourages repeats)")
        if not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            fail("no_repeat_ngram_size", self.no_repeat_ngram_size, "an integer >= 0 (0 = off)")
        if not _is_int(self.min_new_tokens) or self.min_new_tokens < 0:
            fail("min_new_tokens", self.min_new_tokens, "an integer >= 0")
        if not _is_int(self.num_beams) or self.num_beams < 1:
            fail("num_beams", self.num_beams, "an integer >= 1 (1 = no beam search)")
        if not _is_number(self.length_penalty):
            raise TypeError(f"length_penalty must be a number, got {self.length_penalty!r}")
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            fail("early_stopping", self.early_stopping, 'True, False or "never"')
        eos = self.eos_token_id
        if eos is None:
            eos = ()
        elif _is_int(eos):
            eos = (eos,)
        elif isinstance(eos, Sequence) and not isinstance(eos, str):
            eos = tuple(eos)
        else:
            fail("eos_token_id", eos, "a token id, a list of token ids, or None")
        valid = "a token id >= 0" if self.vocab_size is None else \
            f"a token id in [0, {self.vocab_size})"
        for name, ids in (("eos_token_id", eos), ("pad_token_id", (self.pad_token_id,))):
            for i in ids:
                if i is None:
                    continue
                if not _is_int(i) or i < 0 or (self.vocab_size is not None
                                               and i >= self.vocab_size):
                    fail(name, self.eos_token_id if name == "eos_token_id" else i,
                         f"{valid} (or None)")
        object.__setattr__(self, "eos_token_id", eos)
        if self.pad_token_id is None and eos:
            object.__setattr__(self, "pad_token_id", eos[0])

    @property
    def min_tokens_to_keep(self) -> int:
        """Tokens the sampling filters always keep: beam sampling needs one more than the EOS
        ids so that some beam can go on (``transformers``' rule)."""
        return max(2, len(self.eos_token_id) + 1) if self.num_beams > 1 else 1


def apply_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor, penalty: float,
                             ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Penalise every token that already occurs in ``input_ids`` (Keskar et al., 2019, CTRL).

    A seen token's score s becomes s / penalty if s > 0 and s · penalty if s < 0, so with
    penalty > 1 it always moves down. Each token is penalised once however often it occurs.

    Args:
        scores: (B, V) next-token scores.
        input_ids: (B, L) the text so far.
        penalty: > 0; 1 changes nothing.
        ignore: optional (B, L) bool, True at positions not to count (left padding).
    """
    b, v = scores.shape
    ids = input_ids if ignore is None else input_ids.masked_fill(ignore, v)  # (B, L)
    # Column v is a sink for ignored positions, dropped afterwards.
    seen = torch.zeros(b, v + 1, dtype=torch.bool, device=scores.device)
    seen.scatter_(1, ids, True)  # (B, V + 1)
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)  # (B, V)
    return torch.where(seen[:, :v], penalised, scores)


def ban_repeated_ngrams(scores: torch.Tensor, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in ``input_ids``.

    The next token completes the n-gram ``(last n-1 tokens, token)``. So look for every earlier
    place where the same n-1 tokens occur, and ban the token that followed them there.

    Example:
        >>> ban_repeated_ngrams(torch.zeros(1, 4), torch.tensor([[1, 2, 3, 1]]), 2)
        tensor([[0., 0., -inf, 0.]])
    """
    b, length = input_ids.shape
    if n < 1 or length < n:
        return scores
    v = scores.shape[1]
    prefix = input_ids[:, length - n + 1:]  # (B, n-1): the n-1 tokens the next one extends
    windows = input_ids.unfold(1, n, 1)  # (B, W, n), every n-gram so far, W = L - n + 1
    same_start = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)  # (B, W)
    # Windows that do not match point at the spare column v, which is dropped.
    targets = torch.where(same_start, windows[..., -1], v)  # (B, W)
    banned = torch.zeros(b, v + 1, dtype=torch.bool, device=scores.device)
    banned.scatter_(1, targets, True)  # (B, V + 1)
    return scores.masked_fill(banned[:, :v], NEG_INF)


def suppress_tokens(scores: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Give ``token_ids`` the score -inf (used to hold EOS back before ``min_new_tokens``)."""
    out = scores.clone()
    out[:, list(token_ids)] = NEG_INF
    return out


def apply_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(s / T): T < 1 sharpens towards greedy, T > 1 flattens towards uniform."""
    return scores / temperature


def top_k_filter(scores: torch.Tensor, k: int, min_keep: int = 1) -> torch.Tensor:
    """Keep the ``k`` highest scores of each row (ties with the k-th are kept too)."""
    k = min(max(k, min_keep), scores.shape[-1])
    kth = torch.topk(scores, k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest score
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_filter(scores: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al., 2020): keep the fewest most-likely tokens whose
    probabilities add up to at least ``p``.

    Equivalently, drop the tail: sort from least to most likely and drop tokens while the
    running total of their probability stays ≤ 1 − p.
    """
    ascending, order = torch.sort(scores, dim=-1)  # (B, V), least likely first
    tail_mass = ascending.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    drop_sorted = tail_mass <= 1 - p
    drop_sorted[:, -min_keep:] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, NEG_INF)


def min_p_filter(scores: torch.Tensor, min_p: float, min_keep: int = 1) -> torch.Tensor:
    """Min-p sampling (Nguyen et al., 2024): keep tokens whose probability is at least
    ``min_p`` times the most likely token's. The cut adapts: strict when the model is sure,
    loose when it is not."""
    probs = scores.softmax(dim=-1)  # (B, V)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)  # (B, V)
    keep = torch.topk(probs, min(min_keep, probs.shape[-1]), dim=-1).indices  # (B, min_keep)
    drop.scatter_(1, keep, False)
    return scores.masked_fill(drop, NEG_INF)


def typical_filter(scores: torch.Tensor, mass: float, min_keep: int = 1) -> torch.Tensor:
    r"""Locally typical sampling (Meister, Pimentel, Wiher & Cotterell, 2023, TACL): keep the
    tokens whose surprisal is closest to the entropy of the distribution, the smallest such set
    holding probability ≥ ``mass`` (τ).

    With p = softmax(scores), each token's surprisal is −log p(x) and the entropy is the mean
    surprisal, H = −Σ_x p(x) log p(x). Sort the tokens by |−log p(x) − H| (smallest first) and
    keep the shortest prefix whose probabilities add up to at least τ, the token that crosses
    τ and any token tied with its distance included, and never fewer than ``min_keep``.

    Unlike top-p, the ranking is not by probability: when the top token is far more
    predictable than the distribution is on average (−log p ≪ H), it is far from H and can be
    dropped, while tokens of ordinary surprisal are kept.

    Args:
        scores: (B, V) float scores; ``-inf`` entries (probability 0) stay ``-inf``.
        mass: τ in (0, 1]; 1 keeps every token.
        min_keep: the fewest tokens kept per row (the closest to H first), ≥ 1.

    Example: one likely token and four equal ones. H ≈ 1.50 nats; the top token's surprisal is
    ≈ 0.90 (distance 0.60), the others' ≈ 1.90 (distance 0.40). With τ = 0.5 the four
    ordinary tokens (0.149 each, 0.596 together) come first and suffice: the MOST likely token
    is the one dropped.

        >>> s = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
        >>> logp = s.log_softmax(-1)
        >>> h = -(logp.exp() * logp).sum(-1)
        >>> round(h.item(), 2), [round(x, 2) for x in (-logp[0, :2]).tolist()]
        (1.5, [0.9, 1.9])
        >>> typical_filter(s, 0.5)
        tensor([[-inf, 0., 0., 0., 0.]])
        >>> typical_filter(s, 0.9)                # the top token is needed to reach 0.9
        tensor([[1., 0., 0., 0., 0.]])
    """
    if not _is_number(mass) or not 0 < mass <= 1:
        raise ValueError(f"mass (typical_p) must be in (0, 1], got {mass!r}")
    if not _is_int(min_keep) or min_keep < 1:
        raise ValueError(f"min_keep must be an integer >= 1, got {min_keep!r}")
    if mass == 1:
        return scores.clone()
    logp = scores.log_softmax(dim=-1)  # (B, V)
    # 0 · log 0 is NaN for a -inf score; such a token adds nothing to the entropy.
    entropy = -(logp * logp.exp()).nansum(dim=-1, keepdim=True)  # (B, 1)
    distance = (-logp - entropy).abs()  # (B, V); +inf for a -inf score
    nearest, order = torch.sort(distance, dim=-1)  # (B, V), closest to H first
    mass_so_far = scores.gather(1, order).softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    # The crossing token is the first whose running mass reaches τ (the last one if rounding
    # keeps the total just below τ); every token no farther from H than it is kept.
    crossing = (mass_so_far < mass).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
    drop_sorted = nearest > nearest.gather(1, crossing)  # (B, V)
    drop_sorted[:, :min_keep] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, NEG_INF)


def process_logits(scores: torch.Tensor, input_ids: torch.Tensor, settings: DecodingSettings,
                   *, prompt_length: int, padding: torch.Tensor | None = None) -> torch.Tensor:
    """Apply every processor that ``settings`` switches on, in ``transformers``' order.

    Args:
        scores: (B, V) float scores (logits, or log-probabilities in beam search).
        input_ids: (B, L) the text so far, prompt (with its left padding) included.
        settings: the decoding settings.
        prompt_length: length of the (padded) prompt, to count the new tokens.
        padding: optional (B, prompt_length) bool, True at left-padding positions; those are
            not counted as "seen" by the repetition penalty.

    Returns:
        The processed (B, V) scores; a new tensor, ``scores`` is left as it was.
    """
    s = settings
    if s.repetition_penalty != 1.0:
        ignore = None
        if padding is not None:
            ignore = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, L)
            ignore[:, :padding.shape[1]] = padding
        scores = apply_repetition_penalty(scores, input_ids, s.repetition_penalty, ignore)
    if s.no_repeat_ngram_size > 0:
        scores = ban_repeated_ngrams(scores, input_ids, s.no_repeat_ngram_size)
    if s.min_new_tokens > 0 and s.eos_token_id and input_ids.shape[1] - prompt_length < \
            s.min_new_tokens:
        scores = suppress_tokens(scores, s.eos_token_id)
    if s.do_sample:
        keep = s.min_tokens_to_keep
        if s.temperature != 1.0:
            scores = apply_temperature(scores, s.temperature)
        if s.top_k is not None:
            scores = top_k_filter(scores, s.top_k, keep)
        if s.top_p is not None and s.top_p < 1.0:
            scores = top_p_filter(scores, s.top_p, keep)
        if s.min_p is not None:
            scores = min_p_filter(scores, s.min_p, keep)
        if s.typical_p is not None and s.typical_p < 1.0:
            scores = typical_filter(scores, s.typical_p, keep)
    return scores
