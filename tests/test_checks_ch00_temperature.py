"""Chapter 00's transfer exercise: the temperature at which softmax(logits / T) has a given
entropy. The reference must recover a temperature known by construction, and the checker must
reject the plausible wrong answers below, each with a message that helps."""

from __future__ import annotations

import math

import pytest
import torch
from checker_helpers import assert_check_fails as fails
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch00


def _torch_entropy(logits: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Categorical(logits=logits).entropy()  # the oracle, not ours


def _bisect(logits, target, *, low=0.01, high=100.0, steps=60, entropy=_torch_entropy,
            inverted=False, geometric=True, result=lambda t: t):
    """A learner's bisection; the keyword arguments plant one mistake at a time."""
    for _ in range(steps):
        mid = math.sqrt(low * high) if geometric else (low + high) / 2
        too_low = entropy(logits / mid).item() < target
        if inverted:
            too_low = not too_low
        low, high = (mid, high) if too_low else (low, mid)
    return result((low + high) / 2)


@settings(max_examples=25, deadline=None)
@given(v=st.integers(2, 40), scale=st.sampled_from([0.5, 1.0, 5.0, 50.0]),
       t0=st.floats(0.2, 20.0), seed=st.integers(0, 2**16))
def test_reference_recovers_the_temperature_it_was_built_from(v, scale, t0, seed):
    logits = torch.randn(v, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    logits = logits * scale  # (V,)
    target = _torch_entropy(logits / t0).item()
    if not 1e-6 < target < math.log(v) - 1e-6:  # flat ends: T is not determined by H
        return
    got = ch00.temperature_for_entropy(logits, target)
    assert _torch_entropy(logits / got).item() == pytest.approx(target, abs=1e-9)
    assert got == pytest.approx(t0, rel=1e-4)


@pytest.mark.parametrize(("logits", "target", "what"), [
    (torch.zeros(4), 1.0, "all logits are equal"),
    (torch.tensor([1.0, 2.0]), math.log(2), r"target must lie in \(log k, log V\) = \(0, "),
    (torch.tensor([1.0, 2.0]), 0.0, r"target must lie in \(log k, log V\)"),
    (torch.tensor([1.0, 1.0, 0.0]), 0.5, r"\(0.6931, 1.099\) nats, k being the number of tied"),
    (torch.ones(2, 3), 0.5, "1-D"),
])
def test_reference_refuses_impossible_targets(logits, target, what):
    with pytest.raises(ValueError, match=what):
        ch00.temperature_for_entropy(logits, target)


def test_reference_with_tied_largest_logits():
    logits = torch.tensor([1.0, 1.0, 0.0])  # the entropy falls to log 2, not 0, as T -> 0
    t = ch00.temperature_for_entropy(logits, 0.8)
    assert _torch_entropy(logits.double() / t).item() == pytest.approx(0.8, abs=1e-9)


def test_solution_and_a_plain_float32_bisection_pass(capsys):
    ch00.check_temperature_for_entropy(ch00.temperature_for_entropy)
    ch00.check_temperature_for_entropy(_bisect)
    ch00.check_temperature_for_entropy(lambda x, h: _bisect(x, h, entropy=ch00.entropy))
    ch00.check_temperature_for_entropy(lambda x, h: torch.tensor(_bisect(x, h)))  # 0-d tensor
    out = capsys.readouterr().out
    assert out.count("✓ temperature_for_entropy: 6 case(s)") == 4, out


def _naive_entropy(logits):
    p = logits.exp() / logits.exp().sum()  # overflows for large logits / T
    return -(p * p.log()).sum()  # 0 * -inf = nan where p underflows


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda x, h: _bisect(x, h, inverted=True), id="searches-the-wrong-way"),
    pytest.param(lambda x, h: _bisect(x, h * math.log(2)), id="target-in-bits"),
    pytest.param(lambda x, h: _bisect(x, h, entropy=lambda z: _torch_entropy(z) / math.log(2)),
                 id="entropy-in-bits"),
    pytest.param(lambda x, h: _bisect(x, h, result=lambda t: 1 / t), id="returns-1/T"),
    pytest.param(lambda x, h: _bisect(x, h, low=0.5, high=2.0), id="range-too-narrow"),
    pytest.param(lambda x, h: _bisect(x, h, steps=8), id="too-few-halvings"),
    pytest.param(lambda x, h: _bisect(x, h, entropy=_naive_entropy), id="naive-entropy-nan"),
    pytest.param(lambda x, h: min((abs(_torch_entropy(x / t).item() - h), t)
                                  for t in torch.logspace(-2, 2, 100).tolist())[1],
                 id="coarse-grid"),
])
def test_wrong_versions_fail_with_the_hint(wrong):
    fails(ch00.check_temperature_for_entropy, wrong, "✗ temperature_for_entropy",
          "values differ", "expected:", "got:", "hint: the entropy grows with T")


def test_integer_answer_is_rejected():
    fails(ch00.check_temperature_for_entropy, lambda x, h: round(_bisect(x, h)),
          "✗ temperature_for_entropy")


def test_learner_that_raises_is_reported_with_its_case():
    def fn(logits, target):
        raise NotImplementedError("exercise")

    fails(ch00.check_temperature_for_entropy, fn, "not implemented yet")
    fails(ch00.check_temperature_for_entropy, lambda x, h: x[5].item(), "raised IndexError",
          "case: tensor(shape=(5,)")


def test_checker_refuses_a_result_instead_of_a_function():
    with pytest.raises(TypeError, match="needs your function, got float"):
        ch00.check_temperature_for_entropy(1.3)
