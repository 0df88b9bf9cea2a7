"""Is our decoding the same as ``transformers``'? The harness chapter 08 runs for every strategy.

Two things are compared, each against code no one here wrote:

- **the tokens**: several ways of generating (the notebook's teaching loop,
  :func:`llmcourse.decoding.generate.generate`, ``transformers``' ``generate``) are run from the
  same seed, and :func:`compare_runs` counts the new tokens where each differs from the first;
- **the distributions**: :class:`SideBySide` is a logits processor that runs our processors and
  ``transformers``' on the same scores at every step, keeps the largest difference of the two
  probability distributions, and passes ours on. Equal tokens could hide slightly different
  distributions (a draw lands on the same token more often than not); this cannot.

:func:`hf_generate` calls ``transformers``' ``generate`` with exactly the settings named:
without it, sampling would keep only the 50 most likely tokens (``top_k=50``, its default) and
the checkpoint's end-of-sequence token would stop some runs early.

Example:
    >>> import torch
    >>> runs = {"a": lambda: torch.tensor([[1, 2, 3, 4]]),
    ...         "b": lambda: torch.tensor([[1, 2, 3, 5]])}
    >>> print(compare_runs("demo", runs, seed=0, prompt_length=2).line())
    ✗ demo: b differs from a at 1 of 2 new tokens (first at new token 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["hf_generate", "SideBySide", "ParityReport", "compare_runs", "magnitude",
           "largest_difference"]

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids (B, L), scores (B, V))


def hf_generate(hf_model: Any, input_ids: torch.Tensor, max_new_tokens: int,
                **settings: Any) -> torch.Tensor:
    """``transformers``' ``generate`` with exactly these settings, no hidden defaults.

    ``top_k`` defaults to 0 (keep every token; ``transformers`` would keep 50 when sampling),
    ``top_p`` to 1.0 and ``eos_token_id`` to None (generate all ``max_new_tokens``), unless
    ``settings`` names them; the prompt is one unpadded row per sequence.

    Args:
        hf_model: a ``transformers`` causal LM, e.g. ``GPT2LMHeadModel``.
        input_ids: (B, T) prompt ids.
        max_new_tokens: how many tokens to add.
        **settings: any ``GenerationConfig`` field (``do_sample``, ``temperature``, ...).

    Returns:
        (B, T + n) ids, prompt included.
    """
    from transformers import GenerationConfig  # heavy (seconds): only when called

    settings = {"top_k": 0, "top_p": 1.0, "eos_token_id": None, **settings}
    config = GenerationConfig(max_new_tokens=max_new_tokens, bos_token_id=None,
                              pad_token_id=settings.get("eos_token_id"), **settings)
    with torch.no_grad():
        return hf_model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config)


class SideBySide:
    """A logits processor that runs ``ours`` and ``theirs`` on the same scores, records how far
    the two processed distributions are apart, and passes ours on.

    Args:
        ours: processors ``f(ids, scores) -> scores``, applied in order.
        theirs: ``transformers`` logits processors (same call signature), applied in order.

    After a generation, :attr:`max_diff` is the largest ``|softmax(ours) - softmax(theirs)|``
    over every step and token (``inf`` when the two ever disagree about which tokens are
    allowed, i.e. have probability 0), and :attr:`steps` the number of steps seen.

    Example:
        >>> import torch
        >>> side = SideBySide([lambda ids, s: s / 2], [lambda ids, s: s * 0.5])
        >>> _ = side(None, torch.tensor([[1.0, 2.0, -float("inf")]]))
        >>> side.max_diff, side.steps
        (0.0, 1)
    """

    def __init__(self, ours: Sequence[Processor], theirs: Sequence[Processor]) -> None:
        self.ours, self.theirs = list(ours), list(theirs)
        self.max_diff = 0.0
        self.steps = 0

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        a = scores  # (B, V)
        for process in self.ours:
            a = process(ids, a)
        b = scores.clone()  # (B, V): some transformers processors write in place
        for process in self.theirs:
            b = process(ids, b)
        self.steps += 1
        if not torch.equal(torch.isneginf(a), torch.isneginf(b)):  # different tokens allowed
            self.max_diff = math.inf
        else:
            diff = (a.softmax(-1) - b.softmax(-1)).abs().max().item()
            self.max_diff = max(self.max_diff, diff)
        return a


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest ``|a - b|`` of two processed score tensors, which hold ``-inf`` for the
    tokens a filter ruled out: ``inf`` when they disagree about which entries are infinite,
    else the largest difference of the finite entries (0.0 when there are none).

    Plain ``(a - b).abs().max()`` would be NaN as soon as both hold ``-inf`` at the same place.

    Example:
        >>> ninf = float("-inf")
        >>> largest_difference(torch.tensor([1.0, ninf]), torch.tensor([1.5, ninf]))
        0.5
        >>> largest_difference(torch.tensor([1.0, ninf]), torch.tensor([1.0, 2.0]))
        inf
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    if not torch.equal(torch.isinf(a) & (a > 0), torch.isinf(b) & (b > 0)) or \
            not torch.equal(torch.isneginf(a), torch.isneginf(b)):
        return math.inf
    finite = torch.isfinite(a) & torch.isfinite(b)  # same shape as a
    if not bool(finite.any()):
        return 0.0
    return (a[finite].double() - b[finite].double()).abs().max().item()


def magnitude(x: float) -> str:
    """A difference as a power of ten just above it (``"0"`` when exactly 0): round-off
    differences vary in their last digits from machine to machine, their size does not.

    Example:
        >>> magnitude(0.0), magnitude(3.2e-8), magnitude(1e-6), magnitude(float("inf"))
        ('0', '< 1e-7', '≤ 1e-6', 'inf')
    """
    if x == 0:
        return "0"
    if math.isinf(x) or math.isnan(x):
        return str(x)
    exponent = math.ceil(math.log10(x))
    return f"{'≤' if 10.0 ** exponent == x else '<'} 1e{exponent}"


@dataclass
class ParityReport:
    """What :func:`compare_runs` found for one strategy.

    Attributes:
        name: the strategy.
        new_tokens: new tokens per sequence in the first run (the reference).
        differing: for every other run, how many new-token positions (over all rows) differ
            from the reference; a run of another shape counts every position it lacks or adds.
        first_difference: for every other run, the first new-token position (1-based) where
            it differs, or 0 when it does not.
        max_dp: the largest probability difference a :class:`SideBySide` recorded, or None.
        outputs: each run's ids.
        tol: the largest ``max_dp`` that still counts as equal.
    """

    name: str
    new_tokens: int
    differing: dict[str, int]
    first_difference: dict[str, int]
    max_dp: float | None = None
    outputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    tol: float = 1e-5

    @property
    def ok(self) -> bool:
        """Every run gave the reference's tokens, and the distributions (if recorded) agree."""
        tokens_equal = not any(self.differing.values())
        return tokens_equal and (self.max_dp is None or self.max_dp <= self.tol)

    def line(self) -> str:
        """One line: ✓ and what agreed, or ✗ and the first disagreement."""
        names = list(self.outputs) or [*self.differing]
        reference = names[0] if self.outputs else "the reference"
        problems = [f"{run} differs from {reference} at {count} of {self.new_tokens} new "
                    f"tokens (first at new token {self.first_difference[run]})"
                    for run, count in self.differing.items() if count]
        dist = ""
        if self.max_dp is not None:
            dist = f"; processed distributions: largest |Δp| {magnitude(self.max_dp)}"
            if self.max_dp > self.tol:
                problems.append(f"processed distributions differ (largest |Δp| "
                                f"{magnitude(self.max_dp)} > {self.tol:g})")
        if problems:
            return f"✗ {self.name}: " + "; ".join(problems)
        return (f"✓ {self.name}: {' = '.join(names)} on all {self.new_tokens} new tokens"
                + dist)


def _differences(reference: torch.Tensor, other: torch.Tensor, prompt_length: int
                 ) -> tuple[int, int]:
    """(new-token positions that differ over all rows, first differing column (1-based) or 0).
    Positions that only one of the two has (another length or batch size) count as differing."""
    a, b = reference[:, prompt_length:], other[:, prompt_length:]  # (B, n), (B', n')
    rows, n = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    differs = torch.ones(max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]),
                         dtype=torch.bool)  # (rows, columns) of either
    differs[:rows, :n] = a[:rows, :n] != b[:rows, :n]
    columns = differs.any(dim=0).nonzero()  # (c, 1)
    first = int(columns[0, 0]) + 1 if len(columns) else 0
    return int(differs.sum()), first


def compare_runs(name: str, runs: Mapping[str, Callable[[], torch.Tensor]], *, seed: int,
                 prompt_length: int, side: SideBySide | None = None,
                 tol: float = 1e-5) -> ParityReport:
    """Run each generation from the same seed and compare the new tokens with the first run's.

    Args:
        name: the strategy, for the report.
        runs: label -> a function with no arguments returning (B, T + n) ids; the first is the
            reference. Each is called right after ``torch.manual_seed(seed)``, so that runs that
            draw from the global random generator draw the same numbers.
        seed: the seed set before each run.
        prompt_length: T; the new tokens are the columns after it.
        side: the :class:`SideBySide` one of the runs used, to report its ``max_diff``.
        tol: the largest probability difference that counts as equal.

    Returns:
        A :class:`ParityReport`; ``report.line()`` is the one-line summary.

    Example:
        >>> import torch
        >>> draw = lambda: torch.randint(0, 9, (1, 6))
        >>> report = compare_runs("same seed", {"one": draw, "two": draw}, seed=3,
        ...                       prompt_length=2)
        >>> report.ok, report.differing
        (True, {'two': 0})
    """
    if not runs:
        raise ValueError("compare_runs needs at least one run")
    if isinstance(prompt_length, bool) or not isinstance(prompt_length, int) or prompt_length < 0:
        raise ValueError(f"prompt_length must be an integer >= 0, got {prompt_length!r}")
    outputs: dict[str, torch.Tensor] = {}
    for label, run in runs.items():
        torch.manual_seed(seed)
        out = run()
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise TypeError(f"run {label!r} must return a (B, T + n) tensor of ids, got "
                            f"{type(out).__name__}")
        outputs[label] = out
    labels = list(outputs)
    reference = outputs[labels[0]]
    differing, first = {}, {}
    for label in labels[1:]:
        differing[label], first[label] = _differences(reference, outputs[label], prompt_length)
    return ParityReport(name=name, new_tokens=reference.shape[1] - prompt_length,
                        differing=differing, first_difference=first,
                        max_dp=None if side is None else side.max_diff, outputs=outputs,
                        tol=tol)
