"""How the benchmarks judge a speed goal on a noisy machine: by interleaved rounds.

Each benchmark measures the two things it compares in alternation, round after round, so that
a slow spell of a shared machine falls on both; the ratio of each round compares like with
like. A goal is then

- **met** only when every round reaches it,
- **NOT met** when no round does,
- **undecided** when some rounds do and some do not: the noise of the machine is larger than
  the gap to the goal, and only a quieter machine (or more rounds) can decide.

Example:
    >>> verdict([1.02, 1.05, 1.01], 1.0)
    'met (median 1.02x, rounds 1.01x-1.05x, 3 rounds)'
    >>> verdict([0.97, 1.02, 0.99], 1.0).split(":")[0]
    'undecided'
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["verdict"]


def verdict(ratios: Sequence[float], goal: float, unit: str = "{:.2f}x") -> str:
    """'met' only when every round's ratio reaches ``goal``, 'NOT met' when none does;
    rounds on both sides leave it to noise, which is said instead of a verdict. ``unit``
    formats a round's value (say ``"{:.0%}"`` for a fraction of a bound).

    Example:
        >>> verdict([0.61, 0.58], 0.75, unit="{:.0%}")
        'NOT met (median 60%, rounds 58%-61%, 2 rounds)'
    """
    if not ratios:
        raise ValueError("no rounds measured: a verdict needs at least one round")
    lo, med, hi = min(ratios), statistics.median(ratios), max(ratios)
    spread = (f"median {unit.format(med)}, rounds {unit.format(lo)}-{unit.format(hi)}, "
              f"{len(ratios)} rounds")
    if lo >= goal:
        return f"met ({spread})"
    if hi < goal:
        return f"NOT met ({spread})"
    return f"undecided: noise decides ({spread}; rerun on a quiet machine)"
