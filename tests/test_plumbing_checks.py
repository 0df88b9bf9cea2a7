"""One argument check for every chapter checker: ``llmcourse.checks.require_function``."""

from __future__ import annotations

import pytest
import torch

from llmcourse.checks import CheckFailed, ch00, ch01, ch02, ch03, ch07, ch08, require_function

CHECKERS = [getattr(mod, name) for mod in (ch00, ch01, ch02, ch03, ch07, ch08)
            for name in mod.__all__ if name.startswith("check_")]


def test_every_chapter_module_has_checkers():
    assert len(CHECKERS) == 4 + 3 + 4 + 3 + 3 + 3


@pytest.mark.parametrize("check", CHECKERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("not_a_function", [torch.zeros(3), 0.5, None, "softmax"],
                         ids=["tensor", "float", "None", "str"])
def test_a_result_instead_of_a_function_is_refused_naming_both(check, not_a_function):
    """Passing what the function returns (not the function) is a TypeError that names the
    checker, what came and what to write, never a CheckFailed from deep inside a case."""
    with pytest.raises(TypeError) as info:
        check(not_a_function)
    message = str(info.value)
    assert not isinstance(info.value, CheckFailed)
    assert message.startswith(f"{check.__name__}() needs your function, got "
                              f"{type(not_a_function).__name__}: "), message
    assert "pass the function itself" in message
    assert f"e.g. {check.__name__}(" in message and "without calling it" in message


def test_require_function_message_shows_the_value_and_the_call():
    with pytest.raises(TypeError) as info:
        require_function(torch.tensor([0.25, 0.75]), "softmax")
    assert str(info.value) == (
        "check_softmax() needs your function, got Tensor: tensor(shape=(2,), "
        "dtype=torch.float32) [0.25, 0.75]; pass the function itself, e.g. "
        "check_softmax(softmax), without calling it")
    with pytest.raises(TypeError, match=r"e\.g\. check_state_dict_conversion\(hf_to_course\)"):
        require_function({}, "state_dict_conversion", function="hf_to_course")


def test_require_function_accepts_any_callable():
    class Learner:
        def __call__(self, x):
            return x

    for fn in (abs, lambda x: x, Learner(), torch.softmax, torch.nn.Identity()):
        assert require_function(fn, "softmax") is None


def test_require_function_long_values_are_cut():
    with pytest.raises(TypeError) as info:
        require_function(list(range(1000)), "distinct_n")
    assert len(str(info.value)) < 250 and " …" in str(info.value)


@pytest.mark.parametrize("name", ["", None, 3])
def test_require_function_needs_the_exercise_name(name):
    with pytest.raises(TypeError, match="name must be the exercise's name"):
        require_function(abs, name)
