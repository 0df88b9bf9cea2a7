"""Shared by the chapter checkers' tests: a checker must reject a known-wrong answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmcourse.checks import CheckFailed


def assert_check_fails(check: Callable, fn: Callable, *fragments: str) -> str:
    """Run ``check(fn)``, require ``CheckFailed`` whose message holds every fragment; return it."""
    with pytest.raises(CheckFailed) as info:
        check(fn)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message
