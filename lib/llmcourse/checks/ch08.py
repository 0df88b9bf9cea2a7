"""Chapter 08 exercises: logits filters, one beam-search step, a sliding-window KV cache, and
one quality metric.

- :func:`check_top_k_per_row`: top-k with a k for each row, keeping ties with the k-th
  score, against ``transformers``' ``TopKLogitsWarper`` row by row;
- :func:`check_top_p_filter`: nucleus (top-p) filtering, against ``TopPLogitsWarper``;
- :func:`check_sampling_filters`: temperature, top-k and top-p together, in ``transformers``'
  order, against the three warpers applied one after the other;
- :func:`check_repetition_penalty`: the CTRL repetition penalty without a Python loop, against
  ``RepetitionPenaltyLogitsProcessor``;
- :func:`check_beam_step`: one step of beam search for a batch of prompts;
- :func:`check_window_append`: appending to a KV cache that keeps only the last ``window``
  positions;
- :func:`check_distinct_n`: distinct-n over several texts, against
  :func:`llmcourse.decoding.metrics.distinct_n`.

Each checker runs the learner's function on cases drawn from its own seeded generator (the
notebook's global random state is untouched), fresh tensors for every case. Some cases are
built by hand to catch one mistake each (a top-p that drops the token whose probability crosses
p, a top-k that breaks ties, n-grams keyed by a string in which (1, 23) and (12, 3) collide, …);
``tests/test_checks_ch08.py`` checks that the references pass and the usual mistakes fail.

Example:
    >>> from llmcourse.decoding.processors import top_p_filter
    >>> check_top_p_filter(top_p_filter)
    ✓ top_p_filter: 8 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from llmcourse.checks import CheckFailed, compare, require_function
from llmcourse.decoding.metrics import distinct_n

__all__ = ["check_top_k_per_row", "check_top_p_filter", "check_sampling_filters",
           "check_repetition_penalty", "check_beam_step", "check_window_append",
           "check_distinct_n"]

NEG_INF = float("-inf")


def _logits_of(probs: Sequence[float], order: Sequence[int]) -> torch.Tensor:
    """Scores (1, V) whose softmax is ``probs``, laid out in vocabulary order ``order``, so
    that the most likely token is not simply token 0."""
    p = torch.tensor(probs, dtype=torch.float64)[list(order)]
    return torch.log(p)[None].float()  # (1, V)


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen, dtype=dtype)


# ------------------------------------------------------------------------------ top-k


def _hf_top_k_per_row(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    from transformers import TopKLogitsWarper  # heavy (seconds): only when needed

    rows = [TopKLogitsWarper(top_k=int(k_r))(None, scores[r:r + 1].clone())  # (1, V)
            for r, k_r in enumerate(k.tolist())]
    return torch.cat(rows)  # (B, V)


def check_top_k_per_row(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(scores, k)``, top-k with a different k for every row, against
    ``transformers.TopKLogitsWarper(top_k=k[r])`` applied to each row r.

    ``scores`` is (B, V) and ``k`` a (B,) ``torch.long`` tensor (a server batches requests
    that asked for different settings). The answer is the same scores with ``-inf`` wherever a
    score is *below* the k[r]-th largest of its row r: every token tied with the k-th is kept
    (more than k tokens survive a tie), and ``k[r] >= V`` keeps the whole row. ``torch.topk``
    alone keeps exactly k and does not promise which of several equal scores it returns: a
    sampler built on its indices would depend on that order.

    The cases include ties at the cut and at the top, rows with k = 1 next to rows with a
    large k (one k for the whole batch fails), k larger than the vocabulary, rows that
    already hold ``-inf``, a 4096-token vocabulary and float64.
    """
    require_function(fn, "top_k_per_row")
    gen = torch.Generator().manual_seed(79)
    masked = _randn(gen, 2, 12, scale=2.0)  # (2, 12)
    masked[0, ::2] = NEG_INF

    def ks(*values: int) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)  # (B,)

    cases = [
        (_randn(gen, 2, 10, scale=2.0), ks(3, 3)),
        (torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, -2.0]]), ks(2)),  # three tied at the cut: 4
        (torch.tensor([[0.5, 2.0, -1.0, 2.0, 2.0, 0.0], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]),
         ks(1, 4)),  # ties at the top; a row where the cut falls inside a tie
        (_randn(gen, 3, 8), ks(1, 5, 2)),  # a different k in every row
        (_randn(gen, 3, 8), ks(12, 2, 8)),  # k larger than the vocabulary: keep everything
        (masked, ks(4, 1)),
        (_randn(gen, 2, 4096, scale=3.0), ks(40, 400)),
        (_randn(gen, 2, 20, dtype=torch.float64), ks(5, 17)),
    ]
    compare(fn, _hf_top_k_per_row, cases, name="top_k_per_row", atol=0.0, rtol=0.0,
            hint="sort each row in decreasing order and gather its k-th largest score "
                 "(index k - 1, with k clamped to V) as a (B, 1) column; set to -inf every "
                 "score strictly below it, so ties with it stay")


# ------------------------------------------------------------------------------ top-p


def _hf_top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    from transformers import TopPLogitsWarper  # heavy (seconds): only when needed

    return TopPLogitsWarper(top_p=p)(None, scores.clone())  # (B, V)


def check_top_p_filter(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(scores, p)`` against ``transformers.TopPLogitsWarper(top_p=p)``.

    ``scores`` is (B, V); the answer is the same scores with every token outside the nucleus
    set to ``-inf``: the nucleus is the fewest most likely tokens whose probabilities add up to
    at least ``p``, so the token whose probability carries the total past ``p`` is kept.

    The cases include a hand-made distribution (0.6, 0.3, 0.1) with p = 0.7 (the nucleus is
    the top two: dropping the crossing token leaves only one), a peaked one whose top token
    alone exceeds p, rows that already hold ``-inf`` (top-k ran first), a 4096-token row and
    float64. A ``-inf`` where the reference has one is a correct answer; a mistake is named
    where it is: a token dropped that should stay, a token kept that should go, or a NaN.
    """
    require_function(fn, "top_p_filter")
    gen = torch.Generator().manual_seed(80)
    masked = _randn(gen, 2, 20, scale=2.0)  # (2, 20)
    masked[0, ::3] = NEG_INF
    masked[1, 10:] = NEG_INF
    cases = [
        (_randn(gen, 2, 10, scale=2.0), 0.9),
        (_logits_of([0.6, 0.3, 0.1], [2, 0, 1]), 0.7),  # keep two: 0.6 alone is < 0.7
        (_logits_of([0.5, 0.25, 0.15, 0.1], [3, 1, 0, 2]), 0.8),  # keep three
        (_logits_of([0.95, 0.03, 0.02], [1, 2, 0]), 0.9),  # the top token alone
        (_randn(gen, 3, 50, scale=3.0), 0.5),
        (masked, 0.8),
        (_randn(gen, 1, 4096, scale=4.0), 0.95),  # a language model's vocabulary
        (_randn(gen, 2, 30, scale=2.0, dtype=torch.float64), 0.6),
    ]
    compare(fn, _hf_top_p, cases, name="top_p_filter", atol=1e-6, rtol=1e-6,
            hint="softmax, sort, cumulative sum; keep the fewest most likely tokens whose "
                 "probabilities reach p (the token that crosses p stays), set the others to "
                 "-inf, and return scores, not probabilities")


# ------------------------------------------------------------------------------ all three


def _hf_sampling_filters(scores: torch.Tensor, temperature: float, k: int,
                         p: float) -> torch.Tensor:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    out = scores.clone()
    for warp in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(k),
                 TopPLogitsWarper(p)):
        out = warp(None, out)
    return out.softmax(dim=-1)  # (B, V): compared as the distribution that gets sampled


def check_sampling_filters(fn: Callable[[torch.Tensor, float, int, float], torch.Tensor]
                           ) -> None:
    """Check ``fn(scores, temperature, k, p)``: temperature, then top-k, then top-p, the order
    in which ``transformers`` (and :func:`llmcourse.decoding.processors.process_logits`)
    applies them.

    The answer's softmax is compared with the softmax of the three warpers applied in turn
    (the distribution a token is drawn from), so scores that differ by a constant per row
    pass. The hand-made cases tell the orders apart: (0.5, 0.3, 0.2) at T = 0.5 with p = 0.6
    (top-p before the temperature keeps two tokens, after it one) and (0.5, 0.3, 0.2) with
    k = 2 and p = 0.6 (top-p over the whole row keeps two, over the renormalised top two one).
    """
    require_function(fn, "sampling_filters")
    gen = torch.Generator().manual_seed(83)
    cases = [
        (_logits_of([0.5, 0.3, 0.2], [1, 2, 0]), 0.5, 3, 0.6),  # temperature before top-p
        (_logits_of([0.5, 0.3, 0.2], [0, 2, 1]), 1.0, 2, 0.6),  # top-k before top-p
        (_randn(gen, 2, 12, scale=2.0), 1.5, 6, 0.8),
        (_randn(gen, 3, 30, scale=2.0), 0.7, 10, 0.9),
        (_randn(gen, 2, 16, scale=3.0), 0.5, 16, 0.5),
        (_randn(gen, 1, 4096, scale=3.0), 0.8, 40, 0.95),
        (_randn(gen, 2, 20, scale=2.0, dtype=torch.float64), 1.3, 5, 0.7),
    ]
    compare(lambda *a: fn(*a).softmax(dim=-1), _hf_sampling_filters, cases,
            name="sampling_filters", atol=1e-6, rtol=1e-5,
            hint="scores / temperature first, then top-k on those, then top-p on what top-k "
                 "left (its softmax renormalises over the k survivors)")


# ------------------------------------------------------------------------------ repetition penalty


class _CountTorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods called while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _torch_calls(fn: Callable[..., Any], *args: Any) -> int | None:
    """How many torch operations ``fn(*args)`` runs; None when it raises (the comparison
    that follows reports that)."""
    try:
        with _CountTorchCalls() as counter:
            fn(*args)
    except Exception:
        return None
    return counter.calls


def _hf_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor,
                           penalty: float) -> torch.Tensor:
    from transformers import RepetitionPenaltyLogitsProcessor  # heavy: only when needed

    return RepetitionPenaltyLogitsProcessor(penalty=penalty)(input_ids, scores.clone())


def check_repetition_penalty(fn: Callable[[torch.Tensor, torch.Tensor, float],
                                          torch.Tensor]) -> None:
    """Check ``fn(scores, input_ids, penalty)`` against ``transformers``'
    ``RepetitionPenaltyLogitsProcessor(penalty)``, and that it has no Python loop.

    ``scores`` is (B, V), ``input_ids`` (B, L) the text so far. Every token that occurs in a
    row's text has its score s replaced by s / penalty when s > 0 and s · penalty when s < 0,
    once however often it occurs; other tokens keep their score.

    "No Python loop" is measured: the function runs on a (2, 5) and a (6, 20) text while the
    torch operations it calls are counted; a vectorised version runs the same few operations
    whatever the size, a loop over rows or tokens runs more on the larger input.

    The cases mix positive and negative scores on seen tokens (dividing a negative score
    *raises* it), repeat tokens (penalised once, not once per occurrence), use a penalty
    below 1 (which rewards repeats), a seen token whose score is exactly 0, and float64.
    """
    require_function(fn, "repetition_penalty", function="apply_repetition_penalty")
    gen = torch.Generator().manual_seed(81)

    def case(b: int, v: int, length: int, penalty: float, *, low: int = 0,
             dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        scores = 2.0 * torch.randn(b, v, generator=gen, dtype=dtype)  # (B, V)
        ids = torch.randint(low, v, (b, length), generator=gen)  # (B, L)
        return scores, ids, penalty

    small, large = case(2, 30, 5, 1.3), case(6, 30, 20, 1.3)
    counts = _torch_calls(fn, *small), _torch_calls(fn, *large)
    if None not in counts and counts[1] > counts[0]:
        raise CheckFailed(
            f"✗ repetition_penalty: looks like a Python loop: {counts[0]} torch operations for "
            f"a (2, 5) text, {counts[1]} for a (6, 20) one; a vectorised version runs the same "
            "few operations whatever the size\n"
            "  hint: mark the seen tokens in a (B, V) boolean tensor with scatter_, compute the "
            "penalised scores for every token with torch.where, and keep them where seen")
    signs = torch.tensor([[1.5, -2.0, 0.5, -0.25, 3.0, -1.0]])  # (1, 6)
    zero = torch.tensor([[0.0, 1.0, -1.0, 2.0]])  # a seen token scoring exactly 0
    cases = [
        (signs, torch.tensor([[0, 1, 3, 1, 1]]), 1.5),  # token 1 three times, penalised once
        (signs.clone(), torch.tensor([[5, 2, 3]]), 2.0),
        (zero, torch.tensor([[0, 2]]), 1.3),
        case(2, 12, 6, 1.3),
        case(3, 40, 25, 1.2),
        case(2, 16, 10, 0.7),  # < 1 makes seen tokens MORE likely
        case(4, 100, 8, 2.5, low=50),  # only the upper half of the vocabulary is ever seen
        case(2, 20, 12, 1.4, dtype=torch.float64),
    ]
    compare(fn, _hf_repetition_penalty, cases, name="repetition_penalty", atol=1e-6, rtol=1e-6,
            hint="for every token that occurs in input_ids (once, however often): a positive "
                 "score is divided by the penalty, a negative one MULTIPLIED by it, so that "
                 "penalty > 1 always lowers it; unseen tokens keep their score")


# ------------------------------------------------------------------------------ beam step


def beam_step(beam_scores: torch.Tensor, logprobs: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The checker's reference for one beam-search step (no EOS, no length penalty).

    Args:
        beam_scores: (B, k) total log-probability of each prompt's k beams.
        logprobs: (B, k, V) next-token log-probabilities of every beam.

    Returns:
        ``(scores, parents, tokens)``, each (B, k), best first: the k best one-token
        extensions over all k·V of each prompt, the beam (0..k-1) each extends, and the token.

    Example:
        >>> s, parent, token = beam_step(torch.tensor([[0.0, -1.0]]),
        ...                              torch.tensor([[[-2.0, -0.1], [-0.2, -3.0]]]))
        >>> s, parent, token
        (tensor([[-0.1000, -1.2000]]), tensor([[0, 1]]), tensor([[1, 0]]))
    """
    b, k, v = logprobs.shape
    total = (beam_scores[:, :, None] + logprobs).reshape(b, k * v)  # (B, k·V)
    scores, flat = total.topk(k, dim=-1)  # (B, k), sorted best first
    return scores, flat // v, flat % v


def check_beam_step(fn: Callable[[torch.Tensor, torch.Tensor],
                                 tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(beam_scores, logprobs) -> (scores, parents, tokens)``, one step of beam search
    for a batch of prompts, against :func:`beam_step`.

    ``beam_scores`` is (B, k), ``logprobs`` (B, k, V); the k new beams of each prompt are its
    k best extensions (score of the beam + log-probability of the token) over all k·V,
    best first; ``parents`` (0..k-1, within the prompt) and ``tokens`` are ``torch.long``.

    The cases include the first step (only beam 0 is alive: the others score ``-inf``), a
    step where every survivor comes from one beam, a beam whose best token is not among the
    k best extensions, k = 1 (greedy), several prompts (a parent index counted over the whole
    batch is wrong) and float64.
    """
    require_function(fn, "beam_step")
    gen = torch.Generator().manual_seed(84)

    def logprobs(b: int, k: int, v: int, scale: float = 2.0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.log_softmax(_randn(gen, b, k, v, scale=scale, dtype=dtype), dim=-1)

    first = torch.tensor([[0.0, NEG_INF, NEG_INF]])  # (1, 3) the prompt, once
    one_beam = logprobs(1, 3, 8)  # (1, 3, 8)
    one_beam[0, 0] = torch.log(torch.tensor([0.3, 0.25, 0.2, 0.1, 0.05, 0.05, 0.03, 0.02]))
    cases = [
        (first, logprobs(1, 3, 10)),
        (torch.tensor([[-1.0, -6.0, -7.0]]), one_beam),  # all three from beam 0
        (torch.tensor([[-1.0, -3.0]]), torch.log(torch.tensor(
            [[[0.5, 0.4, 0.1], [0.9, 0.05, 0.05]]]))),  # beam 1's best token is not enough
        (_randn(gen, 1, 1), logprobs(1, 1, 12)),  # k = 1: greedy
        (-_randn(gen, 3, 4).abs() * 5, logprobs(3, 4, 20)),  # several prompts
        (-_randn(gen, 2, 2).abs() * 5, logprobs(2, 2, 4096, scale=4.0)),
        (-_randn(gen, 2, 3, dtype=torch.float64).abs() * 5,
         logprobs(2, 3, 15, dtype=torch.float64)),
    ]
    compare(fn, beam_step, cases, name="beam_step", atol=1e-6, rtol=1e-6,
            hint="add each beam's score to its log-probabilities ((B, k, 1) + (B, k, V)), "
                 "flatten each prompt's k·V extensions, take the k best with topk, and recover "
                 "the beam with // V and the token with % V")


# ------------------------------------------------------------------------------ sliding window


def window_append(cache_k: torch.Tensor, cache_v: torch.Tensor, k_new: torch.Tensor,
                  v_new: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The checker's reference: append new keys/values to a cache that keeps only the last
    ``window`` positions.

    Args:
        cache_k, cache_v: (B, h, L, d), L <= window (L = 0 for an empty cache).
        k_new, v_new: (B, h, T, d), the positions to append (T = 1 at a decode step).
        window: the most positions the cache keeps.

    Returns:
        The new keys and values, (B, h, min(L + T, window), d), oldest first.

    Example:
        >>> k = torch.arange(3.0).view(1, 1, 3, 1)
        >>> window_append(k, k, torch.tensor([[[[9.0]]]]), torch.zeros(1, 1, 1, 1), 3)[0]
        tensor([[[[1.],
                  [2.],
                  [9.]]]])
    """
    k = torch.cat([cache_k, k_new], dim=2)  # (B, h, L + T, d)
    v = torch.cat([cache_v, v_new], dim=2)
    return k[:, :, -window:], v[:, :, -window:]  # (B, h, min(L + T, window), d)


def check_window_append(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(cache_k, cache_v, k_new, v_new, window) -> (k, v)`` against
    :func:`window_append`: the cache after appending, keeping only the newest ``window``
    positions along the time axis (axis 2 of (B, h, T, d)), oldest first.

    The cases include an empty cache, a cache with room left, a full cache, a prompt longer
    than the window (only its last ``window`` positions stay), ``window = 1``, keys and
    values that differ (so a swap shows), several heads and float64.
    """
    require_function(fn, "window_append")
    gen = torch.Generator().manual_seed(85)

    def case(b: int, h: int, length: int, t: int, d: int, window: int,
             dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        k, v, kn, vn = (_randn(gen, b, h, n, d, dtype=dtype)
                        for n in (length, length, t, t))  # (B, h, L or T, d)
        return k, v + 10.0, kn, vn + 10.0, window

    compare(fn, window_append, [
        case(1, 2, 0, 3, 4, 8),  # empty cache, prompt fits
        case(2, 2, 3, 1, 4, 8),  # room left
        case(1, 3, 8, 1, 4, 8),  # full: the oldest goes
        case(2, 1, 5, 2, 3, 6),  # two new, one over
        case(1, 2, 0, 12, 4, 5),  # a prompt longer than the window
        case(1, 1, 1, 1, 2, 1),  # window 1: only the newest
        case(2, 4, 6, 1, 8, 6, dtype=torch.float64),
    ], name="window_append", atol=0.0, rtol=0.0,
        hint="concatenate along the time axis (dim=2 of (B, h, T, d)), then keep the last "
             "window positions with [:, :, -window:]; the same for keys and values")


# ------------------------------------------------------------------------------ distinct-n


def _distinct_n_cases() -> list[tuple[list[list[int]], int]]:
    """The ``(texts, n)`` cases of :func:`check_distinct_n`: seven by hand, four drawn from a
    seeded generator (the tests work the hand-made ones out on paper)."""
    gen = torch.Generator().manual_seed(82)

    def texts(count: int, vocab: int, longest: int) -> list[list[int]]:
        lengths = torch.randint(longest // 2, longest + 1, (count,), generator=gen).tolist()
        return [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in lengths]

    return [
        ([[1, 2, 3, 1, 2, 3]], 1),
        ([[1, 2, 3, 1, 2, 3]], 2),
        ([[1, 2, 1], [2, 1, 2]], 2),  # the seam would add a bigram (1, 2)
        ([[5, 5, 5, 5, 5, 5, 5, 5], [1, 2, 3]], 1),  # per-text mean 0.5625, pooled 4/11
        ([[4, 7, 4, 7, 4], [9], [1, 2, 3]], 2),  # [9] has no bigram
        ([[1, 23, 12, 3]], 2),  # (1, 23) and (12, 3) both read "123" as a joined string
        ([[11, 1, 1, 11], [111, 2]], 2),  # (11, 1) and (1, 11) both read "111"
        (texts(4, 5, 30), 3),
        (texts(3, 3, 20), 4),
        (texts(3, 150, 20), 2),  # ids of one to three digits: joined strings collide
        (texts(6, 50, 40), 1),
    ]


def check_distinct_n(fn: Callable[[list[list[int]], int], float]) -> None:
    """Check ``fn(texts, n)`` against :func:`llmcourse.decoding.metrics.distinct_n`.

    ``texts`` is a list of token-id lists; the answer is the number of distinct n-grams over
    all texts divided by the number of n-grams over all texts (pooled, not averaged per
    text). An n-gram never spans two texts, and a text shorter than n has none.

    The cases include texts of unequal length (where the mean of per-text ratios differs from
    the pooled ratio), texts whose concatenation would create new n-grams at the seams, a
    text shorter than n, ids of several digits (n-grams keyed by a joined string such as
    ``"".join(map(str, gram))`` collide: (1, 23) and (12, 3) both give "123"), and every n
    from 1 to 4.
    """
    require_function(fn, "distinct_n")
    compare(fn, distinct_n, _distinct_n_cases(), name="distinct_n", atol=1e-9, rtol=1e-9,
            hint="collect the n-grams of each text separately as tuples (a joined string "
                 "confuses (1, 23) with (12, 3)), then divide the size of the set of all of "
                 "them by their total count, pooled over texts; a text of L tokens has "
                 "max(L - n + 1, 0) n-grams")
