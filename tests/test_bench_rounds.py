"""The benchmarks' rule for a speed goal on a noisy machine (benchmarks/rounds.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Loaded by its path: benchmarks/ is a folder of scripts, not a package on sys.path.
_SPEC = importlib.util.spec_from_file_location(
    "benchmarks_rounds", Path(__file__).resolve().parents[1] / "benchmarks" / "rounds.py")
_ROUNDS = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_ROUNDS)
verdict = _ROUNDS.verdict


@pytest.mark.parametrize(("ratios", "word"), [
    ([1.3, 1.26, 1.25], "met"),          # every round reaches the goal, the lowest exactly
    ([1.2, 1.3, 1.4], "undecided"),      # one round short: noise decides, not the median
    ([1.24, 1.0, 0.5], "NOT met"),       # no round reaches it
    ([1.25], "met"),
])
def test_a_goal_is_met_only_when_every_round_reaches_it(ratios, word):
    assert verdict(ratios, 1.25).split(" (")[0].split(":")[0] == word


def test_the_verdict_reports_the_spread_it_was_judged_on():
    text = verdict([0.97, 1.02, 0.99], 1.0)
    assert "median 0.99x" in text and "rounds 0.97x-1.02x" in text and "3 rounds" in text


def test_no_rounds_is_an_error_not_a_verdict():
    with pytest.raises(ValueError, match="no rounds measured"):
        verdict([], 1.0)
