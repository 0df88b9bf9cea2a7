"""Chapter 00 exercises: softmax, temperature, log-softmax and entropy.

Each checker runs the learner's function on fixed random cases (their own seeded generator, so
the notebook's global random state is untouched) and compares it with torch, which no one here
wrote. The references below are the course's solutions, tested against the same oracles.

Example:
    >>> from llmcourse.checks.ch00 import check_softmax, softmax
    >>> check_softmax(softmax)
    ✓ softmax: 6 case(s) match the reference
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from llmcourse.checks import compare, require_function

__all__ = [
    "softmax", "softmax_with_temperature", "log_softmax", "entropy",
    "check_softmax", "check_softmax_with_temperature", "check_log_softmax", "check_entropy",
]


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Numerically stable softmax over the last axis.

    softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m), with m = max_j x_j: subtracting the
    maximum changes nothing mathematically but keeps ``exp`` from overflowing.

    Example:
        >>> softmax(torch.tensor([1000.0, 1000.0]))
        tensor([0.5000, 0.5000])
    """
    z = x - x.amax(dim=-1, keepdim=True)  # (..., V), largest entry of each row is 0
    e = z.exp()  # (..., V), every entry in (0, 1]
    return e / e.sum(dim=-1, keepdim=True)  # (..., V)


def softmax_with_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the last axis; T < 1 sharpens, T > 1 flattens.

    Example:
        >>> softmax_with_temperature(torch.tensor([0.0, 1.0]), 1e-3)
        tensor([0., 1.])
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(logits / temperature)  # (..., V)


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    """log softmax(x) over the last axis, computed as x - logsumexp(x) without overflow.

    Example:
        >>> log_softmax(torch.tensor([0.0, 200.0]))
        tensor([-200.,    0.])
    """
    m = x.amax(dim=-1, keepdim=True)  # (..., 1)
    lse = m + (x - m).exp().sum(dim=-1, keepdim=True).log()  # (..., 1) = log sum_j exp(x_j)
    return x - lse  # (..., V)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of the distribution softmax(logits), one value per row.

    H = -sum_i p_i log p_i. Where p_i underflows to 0, p_i log p_i is taken as 0 (its limit).

    Example:
        >>> entropy(torch.zeros(4))  # uniform over 4 outcomes: log 4
        tensor(1.3863)
    """
    logp = log_softmax(logits)  # (..., V), finite even where p underflows, -inf where masked
    p = logp.exp()  # (..., V)
    terms = torch.where(p > 0, p * logp, torch.zeros_like(p))  # (..., V), 0 * -inf would be nan
    return -terms.sum(dim=-1)  # (...)


def _cases(gen: torch.Generator) -> list[tuple[torch.Tensor]]:
    """Logits of several shapes: small, batched, large (overflow bait), masked, float64."""
    return [
        (torch.randn(5, generator=gen),),
        (torch.randn(3, 7, generator=gen),),
        (torch.randn(2, 4, 6, generator=gen) * 3,),
        (torch.randn(4, 9, generator=gen) * 100 + 500,),  # exp(500) is inf in float32
        (torch.randn(2, 3, 2, 8, generator=gen).masked_fill(torch.eye(8, dtype=torch.bool)[:2],
                                                            float("-inf")),),
        (torch.randn(6, 5, generator=gen, dtype=torch.float64) * 50,),
    ]


def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check a softmax over the last axis against ``torch.softmax(x, dim=-1)``.

    Cases include large logits, where a softmax that forgets to subtract the maximum gives
    ``nan``, and 2-D+ shapes, where a softmax over the wrong axis gives different numbers.
    """
    require_function(fn, "softmax")
    gen = torch.Generator().manual_seed(0)
    compare(fn, lambda x: torch.softmax(x, dim=-1), _cases(gen), name="softmax",
            hint="normalize over the last axis (dim=-1) and subtract the row maximum "
                 "(x.amax(dim=-1, keepdim=True)) before exp")


def check_softmax_with_temperature(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(logits, T)`` against ``torch.softmax(logits / T, dim=-1)`` for several T."""
    require_function(fn, "softmax_with_temperature")
    gen = torch.Generator().manual_seed(1)
    temps = [1.0, 0.5, 2.0, 0.1, 10.0, 0.7]
    cases = [(x, t) for (x,), t in zip(_cases(gen), temps, strict=True)]
    compare(fn, lambda x, t: torch.softmax(x / t, dim=-1), cases,
            name="softmax_with_temperature",
            hint="divide the logits by the temperature (do not multiply), then a stable softmax")


def check_log_softmax(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check a log-softmax over the last axis against ``torch.log_softmax(x, dim=-1)``.

    The large-logit cases make ``torch.log(softmax(x))`` fail: probabilities that underflow
    to 0 give ``-inf`` where the true value is a finite, very negative number.
    """
    require_function(fn, "log_softmax")
    gen = torch.Generator().manual_seed(2)
    compare(fn, lambda x: torch.log_softmax(x, dim=-1), _cases(gen), name="log_softmax",
            atol=1e-4, hint="compute x - logsumexp(x), with the row maximum taken out before exp")


def check_entropy(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check the entropy (nats) of softmax(logits) against ``torch.distributions.Categorical``.

    Cases include rows where some probabilities underflow to 0 (their term must count as 0,
    not ``0 * -inf = nan``) and masked ``-inf`` logits.
    """
    require_function(fn, "entropy")
    gen = torch.Generator().manual_seed(3)
    compare(fn, lambda x: torch.distributions.Categorical(logits=x).entropy(), _cases(gen),
            name="entropy", atol=1e-4,
            hint="H = -sum p log p in nats (natural log), with log p from a stable log-softmax")
