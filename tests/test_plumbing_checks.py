"""One argument check for every chapter checker: ``llmcourse.checks.require_function``."""

from __future__ import annotations

import pytest
import torch

from llmcourse.checks import (
    CheckFailed,
    ch00,
    ch01,
    ch02,
    ch03,
    ch04,
    ch05,
    ch06,
    ch07,
    ch08,
    ch09,
    ch10,
    require_function,
)

# every chapter with checkers
CHAPTERS = (ch00, ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, ch10)
CHECKERS = [getattr(mod, name) for mod in CHAPTERS for name in mod.__all__
            if name.startswith("check_")]


def test_every_checker_a_notebook_calls_exists_and_every_checker_is_called():
    """The notebooks and the checker modules name the same checkers: an exercise whose checker
    was renamed or removed fails here, not in a reader's notebook, and no checker is orphaned."""
    import json
    import re
    from pathlib import Path

    from llmcourse.core.files import REPO_ROOT

    called = set()
    for path in sorted(Path(REPO_ROOT, "notebooks").glob("[0-9][0-9]_*.ipynb")):
        module = "ch" + path.name[:2]  # chapter NN's exercises are checked by checks.chNN
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                called |= {(module, c) for c in re.findall(r"\b(check_\w+)\(", source)}
    modules = {m.__name__.rsplit(".", 1)[1]: m for m in CHAPTERS}
    defined = {(name, check) for name, mod in modules.items() for check in mod.__all__
               if check.startswith("check_")}
    assert all(modules[name].__all__ for name in modules)
    missing = {c for c in called if c[0] in modules} - defined
    assert not missing, f"notebooks call checkers that do not exist: {sorted(missing)}"
    orphans = defined - called
    assert not orphans, f"checkers no notebook calls: {sorted(orphans)}"


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
