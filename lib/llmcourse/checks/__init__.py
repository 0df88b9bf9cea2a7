"""Exercise checkers: compare a learner's function with the reference on random cases.

Every checker prints one short pass line, or raises ``AssertionError`` naming the first case
that differs, what was expected, what came back, and a hint. Chapter-specific checkers live in
``llmcourse.checks.chNN`` and are built on :func:`compare`; each first hands its argument to
:func:`require_function`, so that passing a function's *result* instead of the function says so.
Checkers that know the usual wrong answers to their exercise list them as :class:`Mistake`
tuples and run :func:`check_cases`, whose hint then names the mistake the learner made.

Example:
    >>> import torch
    >>> from llmcourse.checks import compare
    >>> compare(lambda x: x * 2, lambda x: x + x, [(torch.ones(2),)], name="double")
    ✓ double: 1 case(s) match the reference
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch

__all__ = ["compare", "check_cases", "Mistake", "clone_args", "require_function", "CheckFailed"]


class CheckFailed(AssertionError):
    """Raised when a learner's answer differs from the reference on some case."""


def _describe(value: Any, limit: int = 300) -> str:
    """A short, readable description of a case argument or a result."""
    if isinstance(value, torch.Tensor):
        head = f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
        flat = value.detach().flatten()
        if flat.is_floating_point():
            items = [f"{v:.4g}" for v in flat[:8].tolist()]
        else:
            items = [str(v) for v in flat[:8].tolist()]
        more = ", …" if flat.numel() > 8 else ""
        text = f"{head} [{', '.join(items)}{more}]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + " …"


def _first_difference(expected: torch.Tensor, got: torch.Tensor, close: torch.Tensor) -> str:
    """Where two same-shape tensors first differ, and the two values there."""
    index = tuple(int(i) for i in (~close).nonzero()[0].tolist())
    e, g = expected[index].item(), got[index].item()
    return f"first at index {index}: expected {e:.6g}, got {g:.6g}"


def _non_finite_mismatch(expected: torch.Tensor, got: torch.Tensor) -> str:
    """Why two float tensors disagree about NaN or ±inf, naming the first such index; "" when
    they agree on where those are. A -inf that the reference also has is a correct answer (a
    masked score, a filtered logit), so only disagreements are reported."""
    nan = torch.isnan(got) & ~torch.isnan(expected)
    if bool(nan.any()):
        index = tuple(int(i) for i in nan.nonzero()[0].tolist())
        return (f"got NaN at {int(nan.sum())} position(s), first at index {index} where the "
                f"reference is {expected[index].item():.6g}; NaN comes from inf / inf, inf - inf, "
                "0 * inf or 0 / 0: an exp that overflowed, or a row of only -inf scores?")
    inf_where_finite = torch.isinf(got) & torch.isfinite(expected)
    if bool(inf_where_finite.any()):
        index = tuple(int(i) for i in inf_where_finite.nonzero()[0].tolist())
        return (f"got {got[index].item()} at {int(inf_where_finite.sum())} position(s) where "
                f"the reference is finite, first at index {index} (reference "
                f"{expected[index].item():.6g}): something masked or filtered that should be "
                "kept, or an overflow")
    finite_where_inf = torch.isfinite(got) & torch.isinf(expected)
    if bool(finite_where_inf.any()):
        index = tuple(int(i) for i in finite_where_inf.nonzero()[0].tolist())
        return (f"got a finite value at {int(finite_where_inf.sum())} position(s) where the "
                f"reference has {expected[index].item()}, first at index {index} (got "
                f"{got[index].item():.6g}): something kept that should be masked or filtered")
    return ""


def _same(expected: Any, got: Any, atol: float, rtol: float) -> tuple[bool, str]:
    """Whether two results agree, dtype included; the reason when they do not.

    Tensors must have the reference's dtype (float32 for float32 inputs, float64 for float64,
    int64 for token ids), and a Python ``int`` answer must be an ``int``, not ``124439808.0``:
    a dtype slip is a real bug that silently costs precision, memory or indexing later."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return False, f"expected a torch.Tensor, got {type(got).__name__}"
        if got.shape != expected.shape:
            return False, f"shape {tuple(got.shape)} != expected {tuple(expected.shape)}"
        if got.dtype != expected.dtype:
            return False, (f"dtype {got.dtype} != expected {expected.dtype} (values aside: "
                           "keep the input's dtype, and integer ids as torch.long)")
        got = got.detach()
        if expected.is_floating_point():
            close = torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
            if bool(close.all()):
                return True, ""
            non_finite = _non_finite_mismatch(expected, got)
            if non_finite:
                return False, non_finite
            where = _first_difference(expected, got, close)
            diff = (got - expected).abs()[~close].max()
            return False, (f"values differ (max abs difference {diff.item():.3g}, tolerance "
                           f"atol={atol:g}, rtol={rtol:g}; {where})")
        if torch.equal(got, expected):
            return True, ""
        return False, _first_difference(expected, got, got == expected)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return False, f"expected a sequence of length {len(expected)}, got {_describe(got)}"
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            ok, why = _same(e, g, atol, rtol)
            if not ok:
                return False, f"item {i}: {why}"
        return True, ""
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            return False, f"expected a single value, got a tensor of shape {tuple(got.shape)}"
        got = got.item()  # a 0-d tensor is an acceptable answer for a number
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return bool(expected == got), "values differ"
    if isinstance(expected, int):
        if isinstance(got, bool) or not isinstance(got, int):
            return False, (f"expected an int, got {type(got).__name__} {got!r} (a count or an "
                           "id is an integer: int(...), or // instead of /)")
        return expected == got, "values differ"
    if isinstance(expected, float):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return False, f"expected a float, got {type(got).__name__} {got!r}"
        ok = abs(got - expected) <= atol + rtol * abs(expected)
        return ok, "values differ"
    return bool(expected == got), "values differ"


def clone_args(case: Sequence[Any]) -> list[Any]:
    """The arguments of a case, each tensor cloned: what a function does to its arguments in
    place cannot change what the next function called on the case sees.

    Example:
        >>> x = torch.zeros(2)
        >>> args = clone_args((x, 3))
        >>> args[0].add_(1); x, args[1]
        tensor([1., 1.])
        (tensor([0., 0.]), 3)
    """
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in case]


def require_function(fn: object, name: str, *, function: str | None = None) -> None:
    """Refuse anything but a function as the learner's answer to checker ``check_{name}``.

    The usual slip is to pass what the function returns (``check_softmax(softmax(x))``): the
    message says what came instead and how the call should read.

    Args:
        fn: what the learner passed to the checker.
        name: the exercise, as in the checker's name ``check_{name}``.
        function: the function's name in the example call (default: ``name``).

    Raises:
        TypeError: ``fn`` is not callable; names its type and value and the expected call.

    Example:
        >>> require_function(abs, "softmax")                   # a function: nothing to say
        >>> require_function(0.5, "softmax")
        Traceback (most recent call last):
        ...
        TypeError: check_softmax() needs your function, got float: 0.5; pass the function ...
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be the exercise's name (a non-empty str), got {name!r}")
    if callable(fn):
        return
    example = f"check_{name}({function or name})"
    raise TypeError(f"check_{name}() needs your function, got {type(fn).__name__}: "
                    f"{_describe(fn, 80)}; pass the function itself, e.g. {example}, "
                    "without calling it")


def compare(
    learner: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Iterable[Sequence[Any]],
    *,
    name: str,
    hint: str = "",
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> None:
    """Run ``learner`` and ``reference`` on each case and require equal results.

    Args:
        learner: the reader's function.
        reference: the course's reference implementation with the same signature.
        cases: argument tuples; each is passed as ``fn(*case)``. Tensors are cloned so that a
            learner who modifies its inputs in place cannot change what the reference sees.
        name: what is being checked, shown in the pass line and in failures.
        hint: a one-line nudge shown when a case differs (the usual mistake).
        atol, rtol: tolerances for floating-point tensors.

    Raises:
        CheckFailed: on the first case whose results differ, or when the learner raises.
    """
    count = 0
    for case in cases:
        if isinstance(case, (str, bytes)) or not isinstance(case, Sequence):
            raise TypeError(f"compare({name!r}): each case must be a tuple of arguments, got "
                            f"{type(case).__name__}; wrap a single argument as (x,)")
        expected = reference(*clone_args(case))
        try:
            got = learner(*clone_args(case))
        except NotImplementedError:
            raise CheckFailed(f"✗ {name}: the exercise is not implemented yet") from None
        except Exception as err:  # the learner's bug, reported with its case
            raise CheckFailed(
                f"✗ {name}: raised {type(err).__name__}: {err}\n"
                f"  case: {', '.join(_describe(a) for a in case)}"
                + (f"\n  hint: {hint}" if hint else "")
            ) from err
        ok, why = _same(expected, got, atol, rtol)
        if not ok:
            raise CheckFailed(
                f"✗ {name}: case {count + 1} differs: {why}\n"
                f"  case:     {', '.join(_describe(a) for a in case)}\n"
                f"  expected: {_describe(expected)}\n"
                f"  got:      {_describe(got)}"
                + (f"\n  hint: {hint}" if hint else "")
            )
        count += 1
    if count == 0:
        raise ValueError(f"compare({name!r}) was given no cases; expected at least one")
    print(f"✓ {name}: {count} case(s) match the reference")


class Mistake(NamedTuple):
    """A usual wrong answer to an exercise, and the hint that names it.

    ``fits(got, expected, case)`` says whether the learner's answer ``got`` on the arguments
    ``case`` is this mistake's, given the reference's answer ``expected``; it may raise, which
    counts as "no". Chapters build their mistakes from wrong versions of the reference (the
    answer has a wrong version's values) or from a property of the answer (its dtype, its
    shape); :func:`check_cases` shows the hint of the first mistake that fits.

    Example:
        >>> halved = Mistake(lambda got, expected, case: got == expected / 2, "forgot the 2")
        >>> halved.fits(3.0, 6.0, (3.0,)), halved.hint
        (True, 'forgot the 2')
    """

    fits: Callable[[Any, Any, Sequence[Any]], bool]
    hint: str


def _diagnose(fn: Callable[..., Any], reference: Callable[..., Any], case: Sequence[Any],
              mistakes: Sequence[Mistake]) -> str | None:
    """The hint of the first of ``mistakes`` that fits ``fn``'s answer on ``case``; None when
    ``fn`` (or the reference) raises or no mistake fits."""
    try:
        got = fn(*clone_args(case))
        expected = reference(*clone_args(case))
    except Exception:  # the learner's error is reported with its case by compare
        return None
    for mistake in mistakes:
        with contextlib.suppress(Exception):
            if mistake.fits(got, expected, case):
                return mistake.hint
    return None


def _quietly_compare(learner: Callable[..., Any], reference: Callable[..., Any],
                     case: Sequence[Any], name: str, atol: float, rtol: float,
                     hint: str) -> None:
    """:func:`compare` on one case without its pass line (:func:`check_cases` prints one for
    all cases)."""
    with contextlib.redirect_stdout(io.StringIO()):
        compare(learner, reference, [case], name=name, atol=atol, rtol=rtol, hint=hint)


def check_cases(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Sequence[Any]],
    *,
    name: str,
    hint: str,
    mistakes: Sequence[Mistake] = (),
    tolerance: tuple[float, float] | Callable[[Sequence[Any]], tuple[float, float]] = (1e-5, 1e-5),
    judged: Callable[..., Any] | None = None,
    against: str = "the reference",
) -> None:
    """:func:`compare` case by case, with the hint of the learner's mistake when a usual one fits.

    On each case the learner's answer is first matched against ``mistakes``: the hint of the
    first that fits replaces ``hint`` (the general recipe) should the case differ. One pass
    line for all cases: "✓ {name}: N case(s) match {against}".

    Args:
        fn: the learner's function; the mistakes are recognised on its answers.
        reference: the reference implementation with the same signature.
        cases: argument tuples, each passed as ``fn(*case)`` (tensors cloned for every call).
        name: the exercise, shown in the pass line and in failures.
        hint: the nudge shown when a case differs and no usual mistake fits.
        mistakes: the usual wrong answers, tried in order.
        tolerance: ``(atol, rtol)`` for floating-point tensors, or a function giving them for
            a case (say, tighter for float64 cases).
        judged: what is compared with the reference, when ``fn``'s answer needs adapting
            first (default ``fn``); the mistakes are still recognised on ``fn``'s answers.
        against: what the pass line says the cases match.

    Raises:
        CheckFailed: on the first case whose results differ ("case N differs"), or when the
            learner raises.
        ValueError: when ``cases`` is empty (nothing would have been checked).

    Example:
        >>> square = lambda x: x * x
        >>> doubled = Mistake(lambda got, expected, case: torch.equal(got, 2 * case[0]),
        ...                   "that is x + x: square is x times x")
        >>> cases = [(torch.tensor([0.0, 2.0]),), (torch.tensor([3.0]),)]  # x + x = x² at 0, 2
        >>> check_cases(lambda x: x ** 2, square, cases, name="square", hint="x * x",
        ...             mistakes=[doubled])
        ✓ square: 2 case(s) match the reference
        >>> check_cases(lambda x: x + x, square, cases, name="square", hint="x * x",
        ...             mistakes=[doubled])
        Traceback (most recent call last):
        ...
        llmcourse.checks.CheckFailed: ✗ square: case 2 differs: values differ ...
          hint: that is x + x: square is x times x
    """
    if not cases:
        raise ValueError(f"check_cases({name!r}) was given no cases; expected at least one")
    compared = fn if judged is None else judged
    for number, case in enumerate(cases, 1):
        atol, rtol = tolerance(case) if callable(tolerance) else tolerance
        try:
            _quietly_compare(compared, reference, case, name, atol, rtol, hint)
        except CheckFailed as general:
            # Only a failing case is diagnosed: the usual mistakes cost a run each.
            err = general
            specific = _diagnose(fn, reference, case, mistakes)
            if specific is not None:
                try:
                    _quietly_compare(compared, reference, case, name, atol, rtol, specific)
                except CheckFailed as named:
                    err = named
            message = str(err).replace(": case 1 differs:", f": case {number} differs:", 1)
            raise CheckFailed(message) from err.__cause__
    print(f"✓ {name}: {len(cases)} case(s) match {against}")
