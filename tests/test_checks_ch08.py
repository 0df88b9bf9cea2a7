"""Chapter 08 checkers: each passes the course's solution (and an independently written one)
and fails the usual mistakes with a message that says what went wrong. The filter and
penalty checkers compare with ``transformers``' own logits processors, so passing them also
checks the course's ``llmcourse.decoding.processors`` against code no one here wrote."""

from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_check_fails as fails

from llmcourse.checks import ch08
from llmcourse.decoding.metrics import distinct_n
from llmcourse.decoding.processors import apply_repetition_penalty, top_k_filter, top_p_filter

pytestmark = pytest.mark.usefixtures("quiet_transformers")

NEG_INF = float("-inf")


# ---------------------------------------------------------------- top-k, a k per row


def _top_k_rows(scores, k):
    """One row at a time in plain Python: keep every score >= the row's k-th largest."""
    out = scores.clone()
    for r, k_r in enumerate(k.tolist()):
        row = scores[r].tolist()
        cut = sorted(row, reverse=True)[min(k_r, len(row)) - 1]
        for i, s in enumerate(row):
            if s < cut:
                out[r, i] = NEG_INF
    return out


def _top_k_per_row(scores, k, *, clamp=True, below=True, first_k=False, exactly_k=False,
                   off_by_one=False, fill=NEG_INF):
    """Sort and gather, with switches for the usual mistakes."""
    v = scores.shape[-1]
    if first_k:  # one k for the whole batch
        k = torch.full_like(k, int(k[0]))
    if exactly_k:  # torch.topk's indices, row by row: ties broken, not kept
        rows = [top_k_filter_exact(scores[r:r + 1], min(int(k_r), v))
                for r, k_r in enumerate(k.tolist())]
        return torch.cat(rows)
    index = (k.clamp(max=v) if clamp else k) - (0 if off_by_one else 1)  # (B,)
    kth = scores.sort(dim=-1, descending=True).values.gather(1, index[:, None])  # (B, 1)
    return scores.masked_fill(scores < kth if below else scores <= kth, fill)


def top_k_filter_exact(scores, k):
    """Keeps exactly the k indices torch.topk returns."""
    keep = torch.topk(scores, k, dim=-1).indices
    mask = torch.ones_like(scores, dtype=torch.bool).scatter_(1, keep, False)
    return scores.masked_fill(mask, NEG_INF)


def _top_k_library(scores, k):
    return torch.cat([top_k_filter(scores[r:r + 1], int(k_r)) for r, k_r in
                      enumerate(k.tolist())])


@pytest.mark.parametrize("fn", [_top_k_library, _top_k_rows, _top_k_per_row],
                         ids=["llmcourse-per-row", "python-rows", "sort-gather"])
def test_top_k_per_row_passes_correct(fn, capsys):
    ch08.check_top_k_per_row(fn)
    assert "✓ top_k_per_row: 8 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,fragment", [
    pytest.param(lambda s, k: _top_k_per_row(s, k, exactly_k=True),
                 "where the reference is finite", id="breaks-ties"),
    pytest.param(lambda s, k: _top_k_per_row(s, k, first_k=True), "differs",
                 id="one-k-for-the-batch"),
    pytest.param(lambda s, k: _top_k_per_row(s, k, below=False),
                 "where the reference is finite", id="drops-the-kth-too"),
    pytest.param(lambda s, k: _top_k_per_row(s, k, clamp=False), "raised RuntimeError",
                 id="k-larger-than-vocabulary"),
    pytest.param(lambda s, k: _top_k_per_row(s, k, off_by_one=True), "differs",
                 id="off-by-one"),
    pytest.param(lambda s, k: _top_k_per_row(s, k, fill=0.0), "where the reference has -inf",
                 id="fills-zero"),
    pytest.param(lambda s, k: _top_k_per_row(s, k).softmax(-1), "differs",
                 id="returns-probabilities"),
    pytest.param(lambda s, k: _top_k_per_row(s, k).double(), "dtype torch.float64 != expected",
                 id="returns-float64"),
])
def test_top_k_per_row_fails_wrong(wrong, fragment):
    fails(ch08.check_top_k_per_row, wrong, "✗ top_k_per_row", fragment, "hint: sort each row")


def test_top_k_breaking_ties_fails_on_the_hand_made_tie():
    message = fails(ch08.check_top_k_per_row, lambda s, k: _top_k_per_row(s, k, exactly_k=True))
    assert "case 2 differs" in message


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


def _top_p_nan(scores, p):
    """Masks arithmetically, scores * keep + (1 - keep) * -inf: for a kept token that adds
    0 * -inf, which is NaN."""
    keep = torch.isfinite(_top_p_descending(scores, p)).to(scores.dtype)  # (B, V) 1 or 0
    return scores * keep + (1 - keep) * NEG_INF


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
    pytest.param(lambda s, p: _top_p_descending(s, p, least_likely=True), id="sorts-ascending"),
    pytest.param(lambda s, p: _top_p_descending(s, p, fill=0.0), id="fills-zero"),
    pytest.param(lambda s, p: _top_p_descending(s, p).softmax(-1), id="returns-probabilities"),
    pytest.param(lambda s, p: _top_p_descending(s, p, fill=float("nan")), id="fills-nan"),
    pytest.param(_top_p_nan, id="nan-from-0-times-inf"),
    pytest.param(lambda s, p: _top_p_descending(s, 1 - p), id="one-minus-p"),
    pytest.param(lambda s, p: s.masked_fill(s.softmax(-1) < 1 - p, NEG_INF),
                 id="threshold-on-each-probability"),
    pytest.param(lambda s, p: s, id="no-filter"),
])
def test_top_p_fails_wrong(wrong):
    fails(ch08.check_top_p_filter, wrong, "✗ top_p_filter", "hint: softmax, sort")


def test_top_p_dropping_the_crossing_token_is_named_precisely():
    """The mistake is reported where it is (a -inf where the reference keeps the token) on the
    hand-made (0.6, 0.3, 0.1) case, and the correct -inf elsewhere is not called an overflow."""
    message = fails(ch08.check_top_p_filter,
                    lambda s, p: _top_p_descending(s, p, crossing=False),
                    "got -inf at 1 position(s) where the reference is finite",
                    "something masked or filtered that should be kept", "expected:", "got:")
    assert "case 1 differs" in message or "case 2 differs" in message
    assert "NaN" not in message and "0 * inf" not in message


def test_top_p_sorting_ascending_is_named_precisely():
    message = fails(ch08.check_top_p_filter,
                    lambda s, p: _top_p_descending(s, p, least_likely=True),
                    "case 1 differs", "got a finite value at",
                    "something kept that should be masked")
    assert "NaN" not in message


@pytest.mark.parametrize("wrong", [lambda s, p: _top_p_descending(s, p, fill=float("nan")),
                                   _top_p_nan], ids=["fills-nan", "0-times-inf"])
def test_top_p_nan_is_named_where_it_is(wrong):
    fails(ch08.check_top_p_filter, wrong, "got NaN at", "0 * inf")


def test_top_p_keeping_a_token_that_should_go_is_named():
    """Keeping the whole row (no filter) puts finite scores where the reference has -inf."""
    fails(ch08.check_top_p_filter, lambda s, p: s,
          "got a finite value at", "something kept that should be masked")


# ---------------------------------------------------------------- temperature + top-k + top-p


def _filters(scores, t, k, p, order=("t", "k", "p"), *, multiply=False):
    steps = {"t": (lambda s: s * t) if multiply else (lambda s: s / t),
             "k": lambda s: top_k_filter(s, k),
             "p": lambda s: top_p_filter(s, p)}
    for name in order:
        scores = steps[name](scores)
    return scores


@pytest.mark.parametrize("fn", [
    _filters,
    lambda s, t, k, p: _filters(s, t, k, p, order=("k", "t", "p")),  # these two commute
    lambda s, t, k, p: _filters(s, t, k, p) - 3.0,  # a constant per row: same distribution
    lambda s, t, k, p: torch.log(_filters(s, t, k, p).softmax(-1)),
], ids=["t-k-p", "k-t-p", "shifted", "log-probabilities"])
def test_sampling_filters_pass_correct(fn, capsys):
    ch08.check_sampling_filters(fn)
    assert "✓ sampling_filters: 7 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,case", [
    pytest.param(lambda s, t, k, p: _filters(s, t, k, p, order=("p", "t", "k")), 1,
                 id="top-p-before-temperature"),
    pytest.param(lambda s, t, k, p: _filters(s, t, k, p, order=("t", "p", "k")), 2,
                 id="top-p-before-top-k"),
    pytest.param(lambda s, t, k, p: _filters(s, t, k, p, multiply=True), 1,
                 id="multiplies-by-temperature"),
    pytest.param(lambda s, t, k, p: _filters(s, t, k, p, order=("k", "p")), 1,
                 id="no-temperature"),
    pytest.param(lambda s, t, k, p: _filters(s, t, k, p, order=("t", "p")), 2, id="no-top-k"),
    pytest.param(lambda s, t, k, p: _filters(s, t, k, p, order=("t", "k")), 1, id="no-top-p"),
])
def test_sampling_filters_fail_wrong(wrong, case):
    fails(ch08.check_sampling_filters, wrong, "✗ sampling_filters", f"case {case} differs",
          "hint: scores / temperature first")


# ---------------------------------------------------------------- repetition penalty


def _penalty(scores, input_ids, penalty, *, per_occurrence=False, rule="ctrl",
             last_only=False, invert=False):
    """The penalty without a loop, with switches for the usual mistakes."""
    ids = input_ids[:, -1:] if last_only else input_ids
    counts = torch.zeros_like(scores).scatter_add_(1, ids, torch.ones_like(ids, dtype=scores.dtype))
    seen = (counts > 0) != invert  # (B, V)
    factor = penalty ** counts if per_occurrence else torch.full_like(scores, penalty)
    penalised = {
        "ctrl": torch.where(scores < 0, scores * factor, scores / factor),
        "divide-all": scores / factor,
        "reversed": torch.where(scores < 0, scores / factor, scores * factor),
        "subtract": scores - factor,
    }[rule]
    return torch.where(seen, penalised, scores)


def _penalty_loop(scores, input_ids, penalty):
    """Correct, one row and one token at a time: refused for its loop."""
    out = scores.clone()
    for r, text in enumerate(input_ids.tolist()):
        for i in set(text):
            s = out[r, i]
            out[r, i] = s * penalty if s < 0 else s / penalty
    return out


def _penalty_per_row(scores, input_ids, penalty):
    """Vectorised within a row, but a loop over the rows: refused too."""
    return torch.cat([_penalty(scores[r:r + 1], input_ids[r:r + 1], penalty)
                      for r in range(scores.shape[0])])


@pytest.mark.parametrize("fn", [apply_repetition_penalty, _penalty],
                         ids=["llmcourse", "scatter-add"])
def test_repetition_penalty_passes_correct(fn, capsys):
    ch08.check_repetition_penalty(fn)
    assert "✓ repetition_penalty: 8 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda s, i, p: _penalty(s, i, p, rule="divide-all"),
                 id="divides-negative-scores"),
    pytest.param(lambda s, i, p: _penalty(s, i, p, rule="reversed"), id="reversed-rule"),
    pytest.param(lambda s, i, p: _penalty(s, i, p, rule="subtract"), id="subtracts"),
    pytest.param(lambda s, i, p: _penalty(s, i, p, per_occurrence=True),
                 id="once-per-occurrence"),
    pytest.param(lambda s, i, p: _penalty(s, i, p, last_only=True), id="last-token-only"),
    pytest.param(lambda s, i, p: _penalty(s, i, p, invert=True), id="unseen-tokens"),
    pytest.param(lambda s, i, p: s, id="no-penalty"),
])
def test_repetition_penalty_fails_wrong(wrong):
    fails(ch08.check_repetition_penalty, wrong, "✗ repetition_penalty", "MULTIPLIED")


@pytest.mark.parametrize("loop", [_penalty_loop, _penalty_per_row], ids=["tokens", "rows"])
def test_repetition_penalty_refuses_a_python_loop(loop):
    """The exercise says "without a Python loop": a correct loop is refused for its loop,
    with the counts that show it."""
    fails(ch08.check_repetition_penalty, loop, "✗ repetition_penalty: looks like a Python loop",
          "for a (2, 5) text", "scatter_")


def test_dividing_negative_scores_fails_on_the_first_case():
    """The mistake the hint is about fails on the first, hand-made case (a seen token with a
    negative score), not only deep in the random ones."""
    message = fails(ch08.check_repetition_penalty,
                    lambda s, i, p: _penalty(s, i, p, rule="divide-all"))
    assert "case 1 differs" in message


# ---------------------------------------------------------------- beam step


def _beam_python(beam_scores, logprobs):
    """Every extension listed and sorted in plain Python: an independent correct version."""
    b, k, v = logprobs.shape
    scores, parents, tokens = [], [], []
    for row in range(b):
        ext = sorted(((beam_scores[row, j].item() + logprobs[row, j, t].item(), j, t)
                      for j in range(k) for t in range(v)), key=lambda e: -e[0])[:k]
        scores.append([e[0] for e in ext])
        parents.append([e[1] for e in ext])
        tokens.append([e[2] for e in ext])
    return (torch.tensor(scores, dtype=logprobs.dtype), torch.tensor(parents),
            torch.tensor(tokens))


def _beam(beam_scores, logprobs, *, add=True, per_beam=False, parent_mod=False,
          over_batch=False, float_ids=False, ascending=False, probs=False):
    b, k, v = logprobs.shape
    if per_beam:  # each beam extended by its own best token
        best, token = logprobs.max(dim=-1)  # (B, k)
        scores, order = (beam_scores + best).sort(dim=-1, descending=True)
        return scores, order, token.gather(1, order)
    total = beam_scores[:, :, None] + logprobs if add else logprobs
    if probs:
        total = beam_scores.exp()[:, :, None] * logprobs.exp()
    scores, flat = total.reshape(b, k * v).topk(k, dim=-1)
    if ascending:
        scores, flat = scores.flip(-1), flat.flip(-1)
    parents, tokens = (flat % k, flat // k) if parent_mod else (flat // v, flat % v)
    if over_batch:
        parents = parents + torch.arange(b)[:, None] * k
    if float_ids:
        parents, tokens = parents.float(), tokens.float()
    return scores, parents, tokens


@pytest.mark.parametrize("fn", [ch08.beam_step, _beam, _beam_python],
                         ids=["reference", "switches-off", "python"])
def test_beam_step_passes_correct(fn, capsys):
    ch08.check_beam_step(fn)
    assert "✓ beam_step: 7 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,fragment", [
    pytest.param(lambda s, lp: _beam(s, lp, add=False), "item 0", id="ignores-beam-scores"),
    pytest.param(lambda s, lp: _beam(s, lp, per_beam=True), "item 0",
                 id="each-beam-its-best-token"),
    pytest.param(lambda s, lp: _beam(s, lp, parent_mod=True), "item 1", id="parent-mod-k"),
    pytest.param(lambda s, lp: _beam(s, lp, over_batch=True), "item 1",
                 id="parent-over-the-batch"),
    pytest.param(lambda s, lp: _beam(s, lp, float_ids=True), "dtype torch.float32 != expected "
                 "torch.int64", id="float-ids"),
    pytest.param(lambda s, lp: _beam(s, lp, ascending=True), "item 0", id="worst-first"),
    pytest.param(lambda s, lp: _beam(s, lp, probs=True), "item 0", id="multiplies-probabilities"),
])
def test_beam_step_fails_wrong(wrong, fragment):
    fails(ch08.check_beam_step, wrong, "✗ beam_step", fragment, "hint: add each beam's score")


def test_beam_step_per_prompt_parents_fail_on_the_batch_case():
    message = fails(ch08.check_beam_step, lambda s, lp: _beam(s, lp, over_batch=True))
    assert "case 5 differs" in message


# ---------------------------------------------------------------- sliding-window KV cache


def _append(ck, cv, kn, vn, window, *, dim=2, first=False, trim=True, extra=0, swap=False,
            drop_t=False):
    k, v = torch.cat([ck, kn], dim=dim), torch.cat([cv, vn], dim=dim)
    if swap:
        k, v = v, k
    if drop_t:  # drop as many old positions as came in, once the cache is full
        full = ck.shape[2] >= window
        return ((torch.cat([ck[:, :, kn.shape[2]:], kn], 2), torch.cat([cv[:, :, kn.shape[2]:],
                vn], 2)) if full else (k, v))
    if not trim:
        return k, v
    w = window + extra
    return (k[:, :, :w], v[:, :, :w]) if first else (k[:, :, -w:], v[:, :, -w:])


def _append_python(ck, cv, kn, vn, window):
    """Position by position: append one, drop the oldest while over the window."""
    k, v = ck, cv
    for t in range(kn.shape[2]):
        k = torch.cat([k, kn[:, :, t:t + 1]], dim=2)
        v = torch.cat([v, vn[:, :, t:t + 1]], dim=2)
        if k.shape[2] > window:
            k, v = k[:, :, 1:], v[:, :, 1:]
    return k, v


@pytest.mark.parametrize("fn", [ch08.window_append, _append, _append_python],
                         ids=["reference", "switches-off", "one-at-a-time"])
def test_window_append_passes_correct(fn, capsys):
    ch08.check_window_append(fn)
    assert "✓ window_append: 7 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong,fragment", [
    pytest.param(lambda *a: _append(*a, first=True), "item 0: values differ",
                 id="keeps-the-oldest"),
    pytest.param(lambda *a: _append(*a, trim=False), "item 0: shape", id="never-trims"),
    pytest.param(lambda *a: _append(*a, extra=1), "item 0: shape", id="window-plus-one"),
    pytest.param(lambda *a: _append(*a, dim=-1), "raised RuntimeError",
                 id="concatenates-features"),
    pytest.param(lambda *a: _append(*a, dim=1), "raised RuntimeError", id="concatenates-heads"),
    pytest.param(lambda *a: _append(*a, swap=True), "item 0: values differ", id="swaps-k-v"),
    pytest.param(lambda *a: _append(*a, drop_t=True), "item 0: shape",
                 id="drops-t-when-full"),
])
def test_window_append_fails_wrong(wrong, fragment):
    fails(ch08.check_window_append, wrong, "✗ window_append", fragment,
          "hint: concatenate along the time axis")


# ---------------------------------------------------------------- distinct-n


def _distinct(texts, n, *, mean=False, concat=False, off_by_one=False, ignore_n=False,
              string_keys=False):
    """distinct-n in plain Python, with switches for the usual mistakes."""
    if concat:
        texts = [[t for text in texts for t in text]]
    size = 1 if ignore_n else n

    def grams(text):
        stop = len(text) - size + (0 if off_by_one else 1)
        out = [tuple(text[i:i + size]) for i in range(max(stop, 0))]
        return ["".join(map(str, g)) for g in out] if string_keys else out

    per_text = [grams(text) for text in texts]
    if mean:
        ratios = [len(set(g)) / len(g) for g in per_text if g]
        return sum(ratios) / len(ratios)
    everything = [g for gs in per_text for g in gs]
    return len(set(everything)) / len(everything)


# The checker's seven hand-made cases, worked out on paper:
#   [1 2 3 1 2 3], n=1: {1, 2, 3} of 6 unigrams                              -> 3/6
#   [1 2 3 1 2 3], n=2: (12)(23)(31)(12)(23): 3 distinct of 5                 -> 3/5
#   [1 2 1] [2 1 2], n=2: (12)(21) | (21)(12): 2 of 4 (no (12) across the seam) -> 2/4
#   [5 x8] [1 2 3], n=1: {5, 1, 2, 3} of 11 unigrams                          -> 4/11
#   [4 7 4 7 4] [9] [1 2 3], n=2: (47)(74)(47)(74) | none | (12)(23)          -> 4/6
#   [1 23 12 3], n=2: (1,23)(23,12)(12,3): all distinct                      -> 3/3
#   [11 1 1 11] [111 2], n=2: (11,1)(1,1)(1,11) | (111,2): all distinct       -> 4/4
HAND_WORKED = [3 / 6, 3 / 5, 2 / 4, 4 / 11, 4 / 6, 3 / 3, 4 / 4]


def test_distinct_n_checker_expects_the_hand_worked_values():
    """The checker's reference is the library's own distinct_n, so check what it expects
    against numbers worked out by hand, not against itself."""
    cases = ch08._distinct_n_cases()[:len(HAND_WORKED)]
    for (texts, n), want in zip(cases, HAND_WORKED, strict=True):
        assert distinct_n(texts, n) == pytest.approx(want, abs=1e-12), (texts, n)


def test_distinct_n_checker_expects_an_independent_count_on_every_case():
    """On the random cases too: the reference equals a plain-Python count written here."""
    cases = ch08._distinct_n_cases()
    assert len(cases) == 11 and {n for _, n in cases} == {1, 2, 3, 4}
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
    assert "✓ distinct_n: 11 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda t, n: _distinct(t, n, mean=True), id="mean-per-text"),
    pytest.param(lambda t, n: _distinct(t, n, concat=True), id="across-texts"),
    pytest.param(lambda t, n: _distinct(t, n, off_by_one=True), id="off-by-one"),
    pytest.param(lambda t, n: _distinct(t, n, ignore_n=True), id="tokens-not-ngrams"),
    pytest.param(lambda t, n: _distinct(t, n, string_keys=True), id="joined-string-keys"),
    pytest.param(lambda t, n: 1.0 - _distinct(t, n), id="repeated-share"),
])
def test_distinct_n_fails_wrong(wrong):
    fails(ch08.check_distinct_n, wrong, "✗ distinct_n", "hint: collect the n-grams")


def test_distinct_n_string_keys_fail_on_the_collision_case():
    message = fails(ch08.check_distinct_n, lambda t, n: _distinct(t, n, string_keys=True))
    assert "case 6 differs" in message


# ---------------------------------------------------------------- all checkers


def _sampling_filters(s, t, k, p):
    return top_p_filter(top_k_filter(s / t, k), p)


REFERENCES = {
    ch08.check_top_k_per_row: _top_k_library,
    ch08.check_top_p_filter: top_p_filter,
    ch08.check_sampling_filters: _sampling_filters,
    ch08.check_repetition_penalty: apply_repetition_penalty,
    ch08.check_beam_step: ch08.beam_step,
    ch08.check_window_append: ch08.window_append,
    ch08.check_distinct_n: distinct_n,
}
CHECKS = list(REFERENCES)


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
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check(REFERENCES[check])
    assert torch.equal(torch.rand(3), expected)


def test_learner_modifying_inputs_in_place_does_not_change_the_reference():
    def in_place(scores, p):
        scores.fill_(0.0)
        return top_p_filter(scores, p)

    fails(ch08.check_top_p_filter, in_place, "✗ top_p_filter")
