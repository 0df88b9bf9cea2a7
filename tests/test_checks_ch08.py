"""Chapter 08 checkers: each passes the course's solution (and an independently written one)
and fails the usual mistakes. The top-p and repetition-penalty checkers compare with
``transformers``' own logits processors, so passing them also checks the course's
``llmcourse.decoding.processors`` against code no one here wrote."""

from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_check_fails as fails

from llmcourse.checks import ch08
from llmcourse.decoding.metrics import distinct_n
from llmcourse.decoding.processors import apply_repetition_penalty, top_p_filter

pytestmark = pytest.mark.usefixtures("quiet_transformers")

NEG_INF = float("-inf")


# ---------------------------------------------------------------- top-p


def _top_p_descending(scores, p, *, crossing=True, keep_one=True, on_logits=False,
                      fill=NEG_INF, least_likely=False):
    """Top-p the way the definition reads (sort descending, keep while the mass before a
    token is below p), with switches that produce the usual mistakes."""
    probs = scores if on_logits else scores.softmax(dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=not least_likely)  # (B, V)
    total = sorted_p.cumsum(dim=-1)  # (B, V) mass up to and including each token
    before = total - sorted_p  # mass of the more likely tokens
    keep_sorted = before < p if crossing else total <= p
    if keep_one:
        keep_sorted[:, 0] = True
    keep = keep_sorted.scatter(1, order, keep_sorted)
    return scores.masked_fill(~keep, fill)


def _top_p_rows(scores, p):
    """One row at a time in plain Python: a second independent correct version."""
    out = scores.clone()
    for r in range(scores.shape[0]):
        probs = scores[r].double().softmax(-1).tolist()
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
        mass, kept = 0.0, set()
        for i in ranked:
            kept.add(i)
            mass += probs[i]
            if mass >= p:
                break
        for i in range(len(probs)):
            if i not in kept:
                out[r, i] = NEG_INF
    return out


@pytest.mark.parametrize("fn", [top_p_filter, _top_p_descending, _top_p_rows],
                         ids=["llmcourse", "descending", "python-rows"])
def test_top_p_passes_correct(fn, capsys):
    ch08.check_top_p_filter(fn)
    assert "✓ top_p_filter: 8 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda s, p: _top_p_descending(s, p, crossing=False), id="drops-crossing-token"),
    pytest.param(lambda s, p: _top_p_descending(s, p, crossing=False, keep_one=False),
                 id="drops-crossing-token-keeps-nothing"),
    pytest.param(lambda s, p: _top_p_descending(s, p, on_logits=True), id="cumsum-of-logits"),
    pytest.param(lambda s, p: _top_p_descending(s, p, least_likely=True), id="least-likely"),
    pytest.param(lambda s, p: _top_p_descending(s, p, fill=0.0), id="fills-zero"),
    pytest.param(lambda s, p: _top_p_descending(s, p).softmax(-1), id="returns-probabilities"),
    pytest.param(lambda s, p: _top_p_descending(s, 1 - p), id="one-minus-p"),
    pytest.param(lambda s, p: s.masked_fill(s.softmax(-1) < 1 - p, NEG_INF),
                 id="threshold-on-each-probability"),
    pytest.param(lambda s, p: s, id="no-filter"),
])
def test_top_p_fails_wrong(wrong):
    fails(ch08.check_top_p_filter, wrong, "✗ top_p_filter", "hint: softmax, sort")


def test_top_p_dropping_the_crossing_token_is_caught_by_the_hand_made_case():
    """The wrong version's first failure is the (0.6, 0.3, 0.1), p = 0.7 case or earlier, and
    it reports expected vs got."""
    message = fails(ch08.check_top_p_filter,
                     lambda s, p: _top_p_descending(s, p, crossing=False), "expected:", "got:")
    assert "case 1 differs" in message or "case 2 differs" in message


# ---------------------------------------------------------------- repetition penalty


def _penalty_loop(scores, input_ids, penalty, *, per_occurrence=False, rule="ctrl",
                  last_only=False, invert=False):
    """The penalty one row and one token at a time, with switches for the usual mistakes."""
    out = scores.clone()
    for r in range(scores.shape[0]):
        ids = input_ids[r].tolist()
        if last_only:
            ids = ids[-1:]
        seen = set(ids)
        targets = [i for i in range(scores.shape[1]) if (i in seen) != invert]
        for i in targets:
            times = ids.count(i) if per_occurrence else 1
            for _ in range(max(times, 1)):
                s = out[r, i]
                if rule == "ctrl":
                    out[r, i] = s * penalty if s < 0 else s / penalty
                elif rule == "divide-all":
                    out[r, i] = s / penalty
                elif rule == "reversed":
                    out[r, i] = s / penalty if s < 0 else s * penalty
                elif rule == "subtract":
                    out[r, i] = s - penalty
    return out


@pytest.mark.parametrize("fn", [apply_repetition_penalty, _penalty_loop],
                         ids=["llmcourse", "python-loop"])
def test_repetition_penalty_passes_correct(fn, capsys):
    ch08.check_repetition_penalty(fn)
    assert "✓ repetition_penalty: 8 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda s, i, p: _penalty_loop(s, i, p, rule="divide-all"),
                 id="divides-negative-scores"),
    pytest.param(lambda s, i, p: _penalty_loop(s, i, p, rule="reversed"), id="reversed-rule"),
    pytest.param(lambda s, i, p: _penalty_loop(s, i, p, rule="subtract"), id="subtracts"),
    pytest.param(lambda s, i, p: _penalty_loop(s, i, p, per_occurrence=True),
                 id="once-per-occurrence"),
    pytest.param(lambda s, i, p: _penalty_loop(s, i, p, last_only=True), id="last-token-only"),
    pytest.param(lambda s, i, p: _penalty_loop(s, i, p, invert=True), id="unseen-tokens"),
    pytest.param(lambda s, i, p: s, id="no-penalty"),
])
def test_repetition_penalty_fails_wrong(wrong):
    fails(ch08.check_repetition_penalty, wrong, "✗ repetition_penalty", "MULTIPLIED")


def test_dividing_negative_scores_fails_on_the_first_case():
    """The mistake the hint is about fails on the first, hand-made case (a seen token with a
    negative score), not only deep in the random ones."""
    message = fails(ch08.check_repetition_penalty,
                     lambda s, i, p: _penalty_loop(s, i, p, rule="divide-all"))
    assert "case 1 differs" in message


# ---------------------------------------------------------------- distinct-n


def _distinct(texts, n, *, mean=False, concat=False, off_by_one=False, ignore_n=False):
    """distinct-n in plain Python, with switches for the usual mistakes."""
    if concat:
        texts = [[t for text in texts for t in text]]
    size = 1 if ignore_n else n

    def grams(text):
        stop = len(text) - size + (0 if off_by_one else 1)
        return [tuple(text[i:i + size]) for i in range(max(stop, 0))]

    per_text = [grams(text) for text in texts]
    if mean:
        ratios = [len(set(g)) / len(g) for g in per_text if g]
        return sum(ratios) / len(ratios)
    everything = [g for gs in per_text for g in gs]
    return len(set(everything)) / len(everything)


# The checker's five hand-made cases, worked out on paper:
#   [1 2 3 1 2 3], n=1: {1, 2, 3} of 6 unigrams                              -> 3/6
#   [1 2 3 1 2 3], n=2: (12)(23)(31)(12)(23): 3 distinct of 5                 -> 3/5
#   [1 2 1] [2 1 2], n=2: (12)(21) | (21)(12): 2 of 4 (no (12) across the seam) -> 2/4
#   [5 x8] [1 2 3], n=1: {5, 1, 2, 3} of 11 unigrams                          -> 4/11
#   [4 7 4 7 4] [9] [1 2 3], n=2: (47)(74)(47)(74) | none | (12)(23)          -> 4/6
HAND_WORKED = [3 / 6, 3 / 5, 2 / 4, 4 / 11, 4 / 6]


def test_distinct_n_checker_expects_the_hand_worked_values():
    """The checker's reference is the library's own distinct_n, so check what it expects
    against numbers worked out by hand, not against itself."""
    cases = ch08._distinct_n_cases()[:len(HAND_WORKED)]
    for (texts, n), want in zip(cases, HAND_WORKED, strict=True):
        assert distinct_n(texts, n) == pytest.approx(want, abs=1e-12), (texts, n)


def test_distinct_n_checker_expects_an_independent_count_on_every_case():
    """On the random cases too: the reference equals a plain-Python count written here."""
    cases = ch08._distinct_n_cases()
    assert len(cases) == 8 and {n for _, n in cases} == {1, 2, 3, 4}
    for texts, n in cases:
        assert distinct_n(texts, n) == pytest.approx(_distinct(texts, n), abs=1e-12), (texts, n)


def test_distinct_n_checker_fails_a_reference_off_on_one_case_only():
    """An answer wrong on a single hand-made case is caught (the checker compares them all)."""
    def wrong_on_the_seam_case(texts, n):
        return 0.75 if texts == [[1, 2, 1], [2, 1, 2]] else _distinct(texts, n)

    message = fails(ch08.check_distinct_n, wrong_on_the_seam_case, "✗ distinct_n")
    assert "case 3 differs" in message


@pytest.mark.parametrize("fn", [distinct_n, _distinct], ids=["llmcourse", "python"])
def test_distinct_n_passes_correct(fn, capsys):
    ch08.check_distinct_n(fn)
    assert "✓ distinct_n: 8 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda t, n: _distinct(t, n, mean=True), id="mean-per-text"),
    pytest.param(lambda t, n: _distinct(t, n, concat=True), id="across-texts"),
    pytest.param(lambda t, n: _distinct(t, n, off_by_one=True), id="off-by-one"),
    pytest.param(lambda t, n: _distinct(t, n, ignore_n=True), id="tokens-not-ngrams"),
    pytest.param(lambda t, n: 1.0 - _distinct(t, n), id="repeated-share"),
])
def test_distinct_n_fails_wrong(wrong):
    fails(ch08.check_distinct_n, wrong, "✗ distinct_n", "hint: collect the n-grams")


# ---------------------------------------------------------------- all checkers


CHECKS = [ch08.check_top_p_filter, ch08.check_repetition_penalty, ch08.check_distinct_n]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_not_implemented_is_reported(check):
    def todo(*args):
        raise NotImplementedError("exercise")

    fails(check, todo, "not implemented yet")


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_not_a_function_is_refused(check):
    with pytest.raises(TypeError, match="pass the function itself"):
        check(torch.zeros(3))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_checkers_leave_global_rng_alone(check):
    """Cases come from the checker's own generator: the notebook's seeded RNG is untouched."""
    fn = {ch08.check_top_p_filter: top_p_filter,
          ch08.check_repetition_penalty: apply_repetition_penalty,
          ch08.check_distinct_n: distinct_n}[check]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check(fn)
    assert torch.equal(torch.rand(3), expected)


def test_learner_modifying_inputs_in_place_does_not_change_the_reference():
    def in_place(scores, p):
        scores.fill_(0.0)
        return top_p_filter(scores, p)

    fails(ch08.check_top_p_filter, in_place, "✗ top_p_filter")
