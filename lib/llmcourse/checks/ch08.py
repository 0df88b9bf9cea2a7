"""Chapter 08 exercises: two logits processors and one quality metric.

- :func:`check_top_p_filter`: nucleus (top-p) filtering, against ``transformers``'
  ``TopPLogitsWarper``;
- :func:`check_repetition_penalty`: the CTRL repetition penalty, against ``transformers``'
  ``RepetitionPenaltyLogitsProcessor``;
- :func:`check_distinct_n`: distinct-n over several texts, against
  :func:`llmcourse.decoding.metrics.distinct_n`.

Each checker runs the learner's function on fixed cases drawn from its own seeded generator
(the notebook's global random state is untouched). Some cases are built by hand to catch one
mistake each: a top-p that drops the token whose probability crosses p, a penalty that divides
negative scores (which *raises* them), n-grams counted across the boundary between two texts.
The course's solutions are :func:`llmcourse.decoding.processors.top_p_filter`,
:func:`llmcourse.decoding.processors.apply_repetition_penalty` and
:func:`llmcourse.decoding.metrics.distinct_n`;
``tests/test_checks_ch08.py`` checks that they pass and that the usual mistakes fail.

Example:
    >>> from llmcourse.decoding.processors import top_p_filter
    >>> check_top_p_filter(top_p_filter)
    ✓ top_p_filter: 8 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmcourse.checks import compare, require_function
from llmcourse.decoding.metrics import distinct_n

__all__ = ["check_top_p_filter", "check_repetition_penalty", "check_distinct_n"]

NEG_INF = float("-inf")


def _logits_of(probs: Sequence[float], order: Sequence[int]) -> torch.Tensor:
    """Scores (1, V) whose softmax is ``probs``, laid out in vocabulary order ``order``, so
    that the most likely token is not simply token 0."""
    p = torch.tensor(probs, dtype=torch.float64)[list(order)]
    return torch.log(p)[None].float()  # (1, V)


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
    float64.
    """
    require_function(fn, "top_p_filter")
    gen = torch.Generator().manual_seed(80)

    def randn(*shape: int, scale: float = 1.0, dtype: torch.dtype = torch.float32
              ) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=gen, dtype=dtype)

    masked = randn(2, 20, scale=2.0)  # (2, 20)
    masked[0, ::3] = NEG_INF
    masked[1, 10:] = NEG_INF
    cases = [
        (randn(2, 10, scale=2.0), 0.9),
        (_logits_of([0.6, 0.3, 0.1], [2, 0, 1]), 0.7),  # keep two: 0.6 alone is < 0.7
        (_logits_of([0.5, 0.25, 0.15, 0.1], [3, 1, 0, 2]), 0.8),  # keep three
        (_logits_of([0.95, 0.03, 0.02], [1, 2, 0]), 0.9),  # the top token alone
        (randn(3, 50, scale=3.0), 0.5),
        (masked, 0.8),
        (randn(1, 4096, scale=4.0), 0.95),  # a language model's vocabulary
        (randn(2, 30, scale=2.0, dtype=torch.float64), 0.6),
    ]
    compare(fn, _hf_top_p, cases, name="top_p_filter", atol=1e-6, rtol=1e-6,
            hint="softmax, sort, cumulative sum; keep the fewest most likely tokens whose "
                 "probabilities reach p (the token that crosses p stays), set the others to "
                 "-inf, and return scores, not probabilities")


# ------------------------------------------------------------------------------ repetition penalty


def _hf_repetition_penalty(scores: torch.Tensor, input_ids: torch.Tensor,
                           penalty: float) -> torch.Tensor:
    from transformers import RepetitionPenaltyLogitsProcessor  # heavy: only when needed

    return RepetitionPenaltyLogitsProcessor(penalty=penalty)(input_ids, scores.clone())


def check_repetition_penalty(fn: Callable[[torch.Tensor, torch.Tensor, float],
                                          torch.Tensor]) -> None:
    """Check ``fn(scores, input_ids, penalty)`` against ``transformers``'
    ``RepetitionPenaltyLogitsProcessor(penalty)``.

    ``scores`` is (B, V), ``input_ids`` (B, L) the text so far. Every token that occurs in a
    row's text has its score s replaced by s / penalty when s > 0 and s · penalty when s < 0,
    once however often it occurs; other tokens keep their score.

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

    signs = torch.tensor([[1.5, -2.0, 0.5, -0.25, 3.0, -1.0]])  # (1, 6)
    zero = torch.tensor([[0.0, 1.0, -1.0, 2.0]])  # a seen token scoring exactly 0
    cases = [
        (signs, torch.tensor([[0, 1, 3, 1, 1]]), 1.5),  # token 1 three times, penalised once
        (signs, torch.tensor([[5, 2, 3]]), 2.0),
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


# ------------------------------------------------------------------------------ distinct-n


def _distinct_n_cases() -> list[tuple[list[list[int]], int]]:
    """The ``(texts, n)`` cases of :func:`check_distinct_n`: five by hand, three drawn from a
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
        (texts(4, 5, 30), 3),
        (texts(3, 3, 20), 4),
        (texts(6, 50, 40), 1),
    ]


def check_distinct_n(fn: Callable[[list[list[int]], int], float]) -> None:
    """Check ``fn(texts, n)`` against :func:`llmcourse.decoding.metrics.distinct_n`.

    ``texts`` is a list of token-id lists; the answer is the number of distinct n-grams over
    all texts divided by the number of n-grams over all texts (pooled, not averaged per
    text). An n-gram never spans two texts, and a text shorter than n has none.

    The cases include texts of unequal length (where the mean of per-text ratios differs from
    the pooled ratio), texts whose concatenation would create new n-grams at the seams, a
    text shorter than n, and every n from 1 to 4.
    """
    require_function(fn, "distinct_n")
    compare(fn, distinct_n, _distinct_n_cases(), name="distinct_n", atol=1e-9, rtol=1e-9,
            hint="collect the n-grams (tuples of n consecutive tokens) of each text separately, "
                 "then divide the size of the set of all of them by their total count, pooled "
                 "over texts; a text of L tokens has max(L - n + 1, 0) n-grams")

