"""Chapter 00 exercises: softmax, log-softmax, entropy, and the temperature for an entropy.

Each checker runs the learner's function on fixed random cases (their own seeded generator, so
the notebook's global random state is untouched) and compares it with torch, which no one here
wrote, or (for the temperature) with a bisection in float64 whose answer the tests know by
construction. The references below are the course's solutions, tested against the same oracles.

Example:
    >>> from llmcourse.checks.ch00 import check_softmax, softmax
    >>> check_softmax(softmax)
    ✓ softmax: 6 case(s) match the reference
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from llmcourse.checks import compare, require_function

__all__ = [
    "softmax", "log_softmax", "entropy", "temperature_for_entropy",
    "check_softmax", "check_log_softmax", "check_entropy", "check_temperature_for_entropy",
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


def temperature_for_entropy(logits: torch.Tensor, target: float) -> float:
    """The temperature T at which softmax(logits / T) has entropy ``target`` nats.

    The entropy grows strictly with T when the logits are not all equal: from log k (T → 0,
    the probability spread evenly over the k largest logits, k = 1 unless tied) to log V
    (T → ∞, uniform). So there is exactly one answer for log k < target < log V, found here by
    bisection on log T in float64: bracket it by halving and doubling T, then halve the bracket
    100 times.

    Args:
        logits: (V,) scores, not all equal.
        target: the wanted entropy in nats, log k < target < log V.

    Returns:
        T as a Python float.

    Raises:
        ValueError: logits not 1-D or all equal, or a target out of (log k, log V), k being
            the number of tied largest logits (1 unless tied).

    Example:
        >>> logits = torch.tensor([4.0, 2.5, 1.5, 0.5, -2.0])
        >>> t = temperature_for_entropy(logits, 1.0)
        >>> round(t, 4), round(entropy(logits / t).item(), 4)
        (1.3026, 1.0)
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1:
        raise ValueError(f"logits must be a 1-D tensor, got {type(logits).__name__} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    x = logits.detach().double()  # (V,), float64 so that the bisection is limited by T alone
    if bool((x == x[0]).all()):
        raise ValueError("all logits are equal: the entropy is log V at every temperature")
    # As T → 0 the probability spreads evenly over the k largest logits (k = 1 unless tied).
    lowest = math.log(int((x == x.max()).sum()))
    if not lowest < target < math.log(x.numel()):
        raise ValueError(f"target must lie in (log k, log V) = ({lowest:.4g}, "
                         f"{math.log(x.numel()):.4g}) nats, k being the number of tied largest "
                         f"logits, got {target!r}")

    def h(t: float) -> float:
        return entropy(x / t).item()

    low, high = 1.0, 1.0
    while h(low) > target:  # the entropy grows with T: shrink until below the target
        low /= 2
    while h(high) < target:
        high *= 2
    for _ in range(100):
        mid = math.sqrt(low * high)  # the middle on a log scale: T spans orders of magnitude
        low, high = (mid, high) if h(mid) < target else (low, mid)
    return math.sqrt(low * high)


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


def check_temperature_for_entropy(fn: Callable[[torch.Tensor, float], float]) -> None:
    """Check ``fn(logits, target)``, the temperature at which softmax(logits / T) has entropy
    ``target`` nats, against :func:`temperature_for_entropy` (relative tolerance 1e-3).

    Each case's target is the entropy at a temperature T0 drawn at random from a range, so T0
    is the one right answer. The cases include answers below 0.5 and above 2 (which a search
    over too narrow a range of T misses), large logits (at a small T, exp(logits / T)
    overflows and p log p is 0 · -inf where a probability underflows) and float64 logits.
    """
    require_function(fn, "temperature_for_entropy")
    gen = torch.Generator().manual_seed(4)
    specs = [  # vocabulary size, logit scale, dtype, range of the answer T0
        (5, 1.0, torch.float32, (0.15, 0.5)), (12, 2.0, torch.float32, (2.0, 6.0)),
        (50, 1.0, torch.float32, (0.5, 2.0)), (8, 60.0, torch.float32, (5.0, 40.0)),
        (20, 3.0, torch.float64, (0.5, 6.0)), (3, 1.0, torch.float32, (0.15, 6.0)),
    ]
    cases = []
    for v, scale, dtype, (t_low, t_high) in specs:
        logits = torch.randn(v, generator=gen, dtype=dtype) * scale  # (V,)
        u = torch.rand(1, generator=gen, dtype=torch.float64).item()
        t0 = t_low * (t_high / t_low) ** u  # log-uniform in [t_low, t_high]
        cases.append((logits, entropy(logits.double() / t0).item()))
    compare(fn, temperature_for_entropy, cases, name="temperature_for_entropy", atol=0.0,
            rtol=1e-3,
            hint="the entropy grows with T: where H(T) is below the target, the answer is a "
                 "larger T; halve a bracket such as [0.01, 100] until it is tiny, with the "
                 "entropy in nats from a stable log-softmax")
