"""``llmcourse.course.hf_parity``, chapter 08's verification harness: it reports agreement when
our generation and ``transformers``' agree, and, what matters more, it reports a mismatch when
one of them is wrong (a generate with a hidden default, a wrong processor, a shorter run)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from llmcourse.course.hf_parity import (
    ParityReport,
    SideBySide,
    compare_runs,
    hf_generate,
    largest_difference,
    magnitude,
)
from llmcourse.decoding.generate import generate
from llmcourse.decoding.processors import top_k_filter, top_p_filter
from llmcourse.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("quiet_transformers", "one_thread")

CFG = GPTConfig(vocab_size=97, block_size=48, n_layer=2, n_head=2, n_embd=32)
T, NEW, SEED = 6, 12, 1234


@pytest.fixture(scope="module")
def models(quiet_transformers):
    torch.manual_seed(0)
    model = GPT(CFG).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(6.0)  # peaked distributions, like a trained model
    hf = model.to_hf()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(hf.generation_config, name, None)
    return model, hf


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, CFG.vocab_size, (2, T), generator=torch.Generator().manual_seed(1))


def _loop(model, ids, side, *, sample):
    """The teaching loop of chapter 08: the whole text every step, one processor."""
    with torch.no_grad():
        for _ in range(NEW):
            scores = side(ids, model(ids)[0][:, -1])  # (B, V)
            token = torch.multinomial(scores.softmax(-1), 1) if sample else \
                scores.argmax(-1, keepdim=True)  # (B, 1)
            ids = torch.cat([ids, token], dim=1)
    return ids


def _runs(model, hf, prompt, side, *, hf_settings=None, **settings):
    sample = settings.get("do_sample", False)
    return {
        "our loop": lambda: _loop(model, prompt, side, sample=sample),
        "llmcourse": lambda: generate(model, prompt, max_new_tokens=NEW, **settings),
        "transformers": lambda: hf_generate(hf, prompt, NEW, **(hf_settings or settings)),
    }


@pytest.mark.parametrize("ours,theirs,settings", [
    ([], [], dict(do_sample=False)),
    ([], [], dict(do_sample=True)),
    ([lambda i, s: s / 0.7], [TemperatureLogitsWarper(0.7)], dict(do_sample=True,
                                                                  temperature=0.7)),
    ([lambda i, s: top_p_filter(s, 0.8)], [TopPLogitsWarper(0.8)], dict(do_sample=True,
                                                                      top_p=0.8)),
], ids=["greedy", "sampling", "temperature", "top-p"])
def test_agreeing_runs_are_reported_equal(models, prompt, ours, theirs, settings):
    model, hf = models
    side = SideBySide(ours, theirs)
    report = compare_runs("s", _runs(model, hf, prompt, side, **settings), seed=SEED,
                          prompt_length=T, side=side)
    assert report.ok, report.line()
    assert report.differing == {"llmcourse": 0, "transformers": 0}
    assert side.steps == NEW and report.max_dp == side.max_diff <= 1e-6
    assert report.line().startswith("✓ s: our loop = llmcourse = transformers on all 12 new")


def test_hf_generate_switches_off_the_top_k_50_default(models, prompt):
    """Without top_k=0, transformers' sampling keeps 50 tokens; the harness must not, or the
    comparison with our unfiltered sampling would be against another strategy."""
    model, hf = models
    side = SideBySide([], [])
    runs = _runs(model, hf, prompt, side, do_sample=True)
    runs["transformers, top_k=50"] = lambda: hf_generate(hf, prompt, NEW, do_sample=True,
                                                         top_k=50)
    report = compare_runs("defaults", runs, seed=SEED, prompt_length=T)
    assert report.differing["transformers"] == 0
    assert report.differing["transformers, top_k=50"] > 0


def test_a_wrong_generate_is_reported(models, prompt):
    """A generate with a setting of its own (top-k 5 where the others keep every token) is
    caught, named, and counted, and the line starts with ✗."""
    model, hf = models
    side = SideBySide([], [])
    runs = _runs(model, hf, prompt, side, do_sample=True)
    runs["llmcourse"] = lambda: generate(model, prompt, max_new_tokens=NEW, do_sample=True,
                                         top_k=5)
    report = compare_runs("sampling", runs, seed=SEED, prompt_length=T, side=side)
    assert not report.ok
    assert report.differing["llmcourse"] > 0 and report.differing["transformers"] == 0
    line = report.line()
    assert line.startswith("✗ sampling: llmcourse differs from our loop at ")
    assert f"of {NEW} new tokens (first at new token {report.first_difference['llmcourse']})" \
        in line


def test_a_different_seed_is_reported(models, prompt):
    """Runs that draw from another seed are different draws: the harness must see it."""
    model, hf = models
    runs = {"a": lambda: generate(model, prompt, max_new_tokens=NEW, do_sample=True),
            "b": lambda: generate(model, prompt, max_new_tokens=NEW, do_sample=True,
                                  generator=torch.Generator().manual_seed(SEED + 1))}
    assert not compare_runs("seeds", runs, seed=SEED, prompt_length=T).ok


def test_a_wrong_processor_is_seen_in_the_distributions(models, prompt):
    """Temperature 0.7 on our side and 0.75 on theirs: the processed distributions differ even
    on steps where the tokens drawn happen to agree."""
    model, hf = models
    side = SideBySide([lambda i, s: s / 0.7], [TemperatureLogitsWarper(0.75)])
    _loop(model, prompt, side, sample=False)
    assert 1e-3 < side.max_diff < 1
    report = ParityReport("t", NEW, {"x": 0}, {"x": 0}, max_dp=side.max_diff)
    assert not report.ok
    assert "processed distributions differ" in report.line()


def test_a_different_support_is_infinitely_far(models, prompt):
    """Top-k 5 against top-k 6 allow different tokens: max_diff is inf, not a small number."""
    model, hf = models
    side = SideBySide([lambda i, s: top_k_filter(s, 5)], [TopKLogitsWarper(6)])
    _loop(model, prompt, side, sample=False)
    assert math.isinf(side.max_diff)


def test_side_by_side_does_not_let_theirs_change_our_scores():
    """transformers processors may write into the scores they get: ours must not see it."""
    def in_place(ids, scores):
        return scores.fill_(0.0)

    side = SideBySide([], [in_place])
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    out = side(None, scores)
    assert torch.equal(out, torch.tensor([[1.0, 2.0, 3.0]]))


def test_runs_of_another_length_or_batch_differ():
    ref = lambda: torch.tensor([[1, 2, 3, 4, 5]])  # noqa: E731
    report = compare_runs("shape", {"ref": ref,
                                    "short": lambda: torch.tensor([[1, 2, 3, 4]]),
                                    "rows": lambda: torch.tensor([[1, 2, 3, 4, 5]] * 2)},
                          seed=0, prompt_length=2)
    assert report.differing == {"short": 1, "rows": 3}
    assert report.first_difference == {"short": 3, "rows": 1}
    assert not report.ok


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one run"):
        compare_runs("x", {}, seed=0, prompt_length=1)
    with pytest.raises(ValueError, match="prompt_length"):
        compare_runs("x", {"a": lambda: torch.zeros(1, 2, dtype=torch.long)}, seed=0,
                     prompt_length=-1)
    with pytest.raises(TypeError, match="must return a"):
        compare_runs("x", {"a": lambda: [1, 2]}, seed=0, prompt_length=1)


@pytest.mark.parametrize("x,text", [(0.0, "0"), (3e-8, "< 1e-7"), (1e-3, "≤ 1e-3"),
                                    (0.5, "< 1e0"), (math.inf, "inf")])
def test_magnitude(x, text):
    assert magnitude(x) == text


def test_largest_difference_of_filtered_scores():
    ninf, inf = float("-inf"), float("inf")
    a = torch.tensor([[2.0, ninf, 0.5], [ninf, 1.0, 3.0]])
    assert largest_difference(a, a.clone()) == 0.0
    assert largest_difference(a, a + 0.25) == pytest.approx(0.25)
    moved = a.clone()
    moved[0, 1], moved[0, 2] = 0.0, ninf  # the same number of -inf, in other places
    assert largest_difference(a, moved) == inf
    assert largest_difference(a, a.masked_fill(torch.isinf(a), inf)) == inf
    assert largest_difference(torch.full((2,), ninf), torch.full((2,), ninf)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        largest_difference(a, a[:1])
