"""Shared by the chapter checkers' tests: a checker must reject a known-wrong answer, pass a
right one with one line, and every chapter's checkers keep the same contract
(:func:`checker_contract_tests`)."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable, Mapping

import pytest
import torch

from llmcourse.checks import CheckFailed


def assert_check_fails(check: Callable, fn: Callable, *fragments: str) -> str:
    """Run ``check(fn)``, require ``CheckFailed`` whose message holds every fragment; return it."""
    with pytest.raises(CheckFailed) as info:
        check(fn)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_check_passes(check: Callable, fn: Callable, start: str) -> str:
    """Run ``check(fn)``, require one pass line (one ✓) starting with ``start``; return it."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        check(fn)
    out = printed.getvalue()
    assert out.startswith(start) and out.count("✓") == 1, out
    return out


def checker_contract_tests(checks: Mapping[str, tuple[Callable, Callable]]
                           ) -> tuple[Callable, Callable, Callable, Callable]:
    """The tests every chapter's checkers pass, for ``checks`` = {name: (check_name, solution)}:
    the solution passes with one line; an exercise not done yet says so; a result passed
    instead of the function is a TypeError showing the call; the global random states (torch's
    and Python's) are left as they were. Assign the four to names starting with ``test_`` in
    the test module, so that pytest collects them there."""
    names = list(checks)

    @pytest.mark.parametrize("name", names)
    def test_solution_passes(name: str) -> None:
        check, solution = checks[name]
        assert_check_passes(check, solution, f"✓ {name}:")

    @pytest.mark.parametrize("name", names)
    def test_not_implemented_says_so(name: str) -> None:
        def todo(*args: object, **kwargs: object) -> None:
            raise NotImplementedError("exercise")

        message = assert_check_fails(checks[name][0], todo, "the exercise is not implemented")
        assert message.startswith(f"✗ {name}"), message  # "✗ name:" or "✗ name (part):"

    @pytest.mark.parametrize("name", names)
    @pytest.mark.parametrize("result", [torch.zeros(2), 123], ids=["tensor", "int"])
    def test_passing_the_result_instead_of_the_function_is_a_type_error(
            name: str, result: object) -> None:
        with pytest.raises(TypeError, match=rf"pass the function itself, e\.g\. "
                                            rf"check_{name}\(my_{name}\), without calling it"):
            checks[name][0](result)

    @pytest.mark.parametrize("name", names)
    def test_checkers_leave_the_global_random_state_alone(name: str) -> None:
        torch_state, python_state = torch.random.get_rng_state(), random.getstate()
        check, solution = checks[name]
        assert_check_passes(check, solution, f"✓ {name}:")
        assert torch.equal(torch.random.get_rng_state(), torch_state)
        assert random.getstate() == python_state

    return (test_solution_passes, test_not_implemented_says_so,
            test_passing_the_result_instead_of_the_function_is_a_type_error,
            test_checkers_leave_the_global_random_state_alone)
