"""Chapter 05 exercise checkers: they pass the solutions and fail the usual mistakes.

The solutions are themselves checked against code no one here wrote: the WSD schedule against
torch's LinearLR + ConstantLR + LinearLR chained by SequentialLR, the loss against
``F.cross_entropy`` (with ``ignore_index``), the document batches against the library's
``get_batch`` (one document: the same windows from the same generator) and against the
uniform distribution over windows.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_check_fails as fails
from checker_helpers import checker_contract_tests
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch05

CHECKS = {
    "wsd_lr": (ch05.check_wsd_lr, ch05.wsd_lr),
    "cross_entropy": (ch05.check_cross_entropy, ch05.cross_entropy),
    "get_doc_batch": (ch05.check_get_doc_batch, ch05.get_doc_batch),
}


# ------------------------------------------------------------------------ the checkers' contract

(test_solution_passes, test_not_implemented_says_so,
 test_passing_the_result_instead_of_the_function_is_a_type_error,
 test_checkers_leave_the_global_random_state_alone) = checker_contract_tests(CHECKS)


def test_passing_the_result_names_the_call_to_make():
    with pytest.raises(TypeError, match=r"pass the function itself.*my_cross_entropy"):
        ch05.check_cross_entropy(ch05.cross_entropy(torch.zeros(1, 2), torch.tensor([0])))
    with pytest.raises(TypeError, match=r"check_wsd_lr\(my_wsd_lr\)"):
        ch05.check_wsd_lr(ch05.wsd_lr(0, 1.0, 0.0, 1, 1, 3))


# ------------------------------------------------------------------------ solutions vs oracles

def _torch_wsd(max_lr, min_lr, w, d, s, n_steps):
    """The learning rates torch's own schedulers give to steps 0 .. n_steps - 1."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr)
    stable = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    decay = torch.optim.lr_scheduler.LinearLR(opt, 1.0, min_lr / max_lr, total_iters=d)
    if w > 0:
        warm = torch.optim.lr_scheduler.LinearLR(opt, 1 / w, 1.0, total_iters=w - 1)
        parts, milestones = [warm, stable, decay], [w, s - d]
    else:
        parts, milestones = [stable, decay], [s - d]
    sched = torch.optim.lr_scheduler.SequentialLR(opt, parts, milestones=milestones)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_steps):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return rates


@pytest.mark.parametrize("max_lr, min_lr, w, d, s", [
    (1e-3, 1e-4, 20, 60, 300), (1.0, 0.0, 5, 10, 40), (6e-4, 6e-5, 0, 30, 50),
    (3e-3, 3e-4, 1, 1, 3),
])
def test_wsd_solution_matches_torch_schedulers(max_lr, min_lr, w, d, s):
    expected = _torch_wsd(max_lr, min_lr, w, d, s, s + 5)
    got = [ch05.wsd_lr(step, max_lr, min_lr, w, d, s) for step in range(s + 5)]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 20), st.integers(2, 50), st.floats(-50, 50), st.floats(0, 0.9),
       st.sampled_from([torch.float32, torch.float64]), st.integers(0, 10**6))
def test_cross_entropy_solution_matches_torch(n, v, shift, pad, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g) * 10 + shift).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    padded = torch.rand(n, generator=g) < pad
    padded[0] = False
    targets = targets.masked_fill(padded, -100)
    got = ch05.cross_entropy(logits, targets)
    assert got.dtype == dtype
    torch.testing.assert_close(got, F.cross_entropy(logits, targets), atol=1e-5, rtol=1e-5)


@settings(deadline=None, max_examples=30)
@given(st.integers(9, 300), st.integers(1, 40), st.integers(1, 8), st.integers(0, 10**6))
def test_doc_batch_of_one_document_is_the_library_get_batch(n, b, t, seed):
    from llmcourse.training.batches import get_batch

    stream = torch.randint(0, 100, (n,), generator=torch.Generator().manual_seed(seed))
    got = ch05.get_doc_batch([stream], b, t, torch.Generator().manual_seed(seed))
    want = get_batch(stream, b, t, torch.Generator().manual_seed(seed))
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w) and g.dtype == torch.long


def test_doc_batch_draws_every_window_equally_often():
    lengths, t, b = [12, 5, 9, 30, 8], 4, 40_000  # windows per document: 8, 1, 5, 26, 4
    docs = [1000 * (d + 1) + torch.arange(n) for d, n in enumerate(lengths)]
    x, _ = ch05.get_doc_batch(docs, b, t, torch.Generator().manual_seed(0))
    windows = [(d, s) for d, n in enumerate(lengths) for s in range(n - t)]
    counts = torch.tensor([int(((x[:, 0] // 1000 - 1 == d) & (x[:, 0] % 1000 == s)).sum())
                           for d, s in windows], dtype=torch.float64)
    expected = b / len(windows)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert counts.sum() == b
    assert chi2 < 90, chi2  # 43 degrees of freedom: the 0.9999 quantile is about 84


# ------------------------------------------------------------------------ mistakes: schedule

def lr_warmup_from_zero(step, max_lr, min_lr, w, d, s):  # step / W: the first update has lr 0
    if step < w:
        return max_lr * step / w
    return ch05.wsd_lr(step, max_lr, min_lr, w, d, s)


def lr_warmup_starts_at_max(step, max_lr, min_lr, w, d, s):  # no warm-up at all
    return ch05.wsd_lr(step, max_lr, min_lr, 0, d, s)


def lr_decay_off_by_one(step, max_lr, min_lr, w, d, s):  # the decay's first step already lower
    if w <= step < s and step >= s - d:
        return max_lr - (max_lr - min_lr) * (step - (s - d) + 1) / d
    return ch05.wsd_lr(step, max_lr, min_lr, w, d, s)


def lr_decay_starts_late(step, max_lr, min_lr, w, d, s):  # stable one step too long
    if w <= step < s and step >= s - d:
        return max_lr - (max_lr - min_lr) * (step - (s - d) - 1) / d if step > s - d else max_lr
    return ch05.wsd_lr(step, max_lr, min_lr, w, d, s)


def lr_decay_to_zero(step, max_lr, min_lr, w, d, s):
    return ch05.wsd_lr(step, max_lr, 0.0, w, d, s)


def lr_cosine_decay(step, max_lr, min_lr, w, d, s):
    if w <= step < s and step >= s - d:
        progress = (step - (s - d)) / d
        return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
    return ch05.wsd_lr(step, max_lr, min_lr, w, d, s)


def lr_no_stable_phase(step, max_lr, min_lr, w, d, s):  # linear decay from the warm-up's end
    if w <= step < s:
        return max_lr - (max_lr - min_lr) * (step - w) / (s - w)
    return ch05.wsd_lr(step, max_lr, min_lr, w, d, s)


def lr_keeps_falling(step, max_lr, min_lr, w, d, s):  # past the end: below min_lr, negative
    if step >= s:
        return max_lr - (max_lr - min_lr) * (step - (s - d)) / d
    return ch05.wsd_lr(step, max_lr, min_lr, w, d, s)


def lr_warmup_over_d(step, max_lr, min_lr, w, d, s):  # the arguments mixed up
    return ch05.wsd_lr(step, max_lr, min_lr, d, w, s) if d <= s - w else max_lr


@pytest.mark.parametrize("wrong", [
    lr_warmup_from_zero, lr_warmup_starts_at_max, lr_decay_off_by_one, lr_decay_starts_late,
    lr_decay_to_zero, lr_cosine_decay, lr_no_stable_phase, lr_keeps_falling, lr_warmup_over_d,
])
def test_wsd_mistakes_fail(wrong):
    fails(ch05.check_wsd_lr, wrong, "✗ wsd_lr (", "differs", "expected", "got", "hint")


@pytest.mark.parametrize("wrong, phase, fragment", [
    (lr_warmup_from_zero, "warm-up", "not 0, not max_lr"),
    (lr_warmup_starts_at_max, "warm-up", "step 0 already gets max_lr / W"),
    (lr_no_stable_phase, "stable", "stays at max_lr until step S − D"),
    (lr_decay_off_by_one, "decay", "starts at max_lr on step S − D"),
    (lr_cosine_decay, "decay", "linear, not cosine"),
    (lr_decay_to_zero, "decay", "towards min_lr, not 0"),
    (lr_keeps_falling, "after the end", "stays at min_lr"),
])
def test_wsd_failure_names_the_phase(wrong, phase, fragment):
    fails(ch05.check_wsd_lr, wrong, f"✗ wsd_lr ({phase}): case", fragment)


def test_wsd_answer_that_is_not_a_number_fails():
    fails(ch05.check_wsd_lr, lambda *a: str(ch05.wsd_lr(*a)), "✗ wsd_lr", "expected a float, "
          "got str")


def test_wsd_pass_line_counts_every_phase(capsys):
    ch05.check_wsd_lr(ch05.wsd_lr)
    out = capsys.readouterr().out
    assert out.count("✓") == 1 and "warm-up" in out and "after the end" in out, out


# ------------------------------------------------------------------------ mistakes: the loss

def ce_naive(logits, targets, ignore_index=-100):  # exp overflows for large logits
    keep = targets != ignore_index
    z, y = logits[keep], targets[keep]
    p = z.exp() / z.exp().sum(-1, keepdim=True)
    return -p[torch.arange(len(y)), y].log().mean()


def ce_padding_counted(logits, targets, ignore_index=-100):  # ignored rows add 0 but count
    keep = targets != ignore_index
    safe = targets.masked_fill(~keep, 0)
    per_row = F.cross_entropy(logits, safe, reduction="none") * keep
    return per_row.mean()


def ce_padding_not_skipped(logits, targets, ignore_index=-100):  # gathers at index -100
    m = logits.amax(dim=-1, keepdim=True)
    log_z = m.squeeze(-1) + (logits - m).exp().sum(dim=-1).log()
    return (log_z - logits.gather(-1, targets[:, None]).squeeze(-1)).mean()


def ce_hardcoded_minus_100(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits, targets, ignore_index=-100)


def ce_float32_result(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)


def ce_sum(logits, targets, ignore_index=-100):
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")


def ce_wrong_axis(logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    logp = F.log_softmax(logits, dim=0)[keep]
    return -logp[torch.arange(int(keep.sum())), targets[keep]].mean()


def test_cross_entropy_naive_exp_fails_on_large_logits():
    fails(ch05.check_cross_entropy, ce_naive, "got NaN", "exp that overflowed", "row maximum")


def test_cross_entropy_padding_not_skipped_names_it():
    fails(ch05.check_cross_entropy, ce_padding_not_skipped, "raised", "-100",
          "ignore_index first")


def test_cross_entropy_float32_for_float64_names_the_dtype():
    fails(ch05.check_cross_entropy, ce_float32_result, "dtype torch.float32 != expected "
          "torch.float64", "keep the logits' dtype")


@pytest.mark.parametrize("wrong", [ce_padding_counted, ce_hardcoded_minus_100, ce_sum,
                                   ce_wrong_axis])
def test_cross_entropy_mistakes_fail(wrong):
    fails(ch05.check_cross_entropy, wrong, "✗ cross_entropy: case", "expected", "got",
          "ignore_index")


# ------------------------------------------------------------------------ mistakes: batches

def _windows(docs, pairs, t, shift=1):
    x = torch.stack([docs[d][s:s + t] for d, s in pairs])
    y = torch.stack([docs[d][s + shift:s + shift + t] for d, s in pairs])
    return x, y


def _counts(docs, t):
    return torch.tensor([max(len(d) - t, 0) for d in docs])


def gb_float_ids(docs, b, t, g):  # a float buffer filled with the ids
    x, y = ch05.get_doc_batch(docs, b, t, g)
    bx, by = torch.zeros(b, t), torch.zeros(b, t)
    bx[:], by[:] = x, y
    return bx, by


def gb_target_off_by_one(docs, b, t, g):  # y shifted by two
    counts = _counts(docs, t) - 1
    k = torch.multinomial(counts.clamp(min=0).double(), b, replacement=True, generator=g)
    starts = [int(torch.randint(int(counts[d]), (1,), generator=g)) for d in k.tolist()]
    return _windows(docs, list(zip(k.tolist(), starts, strict=True)), t, shift=2)


def gb_y_is_x(docs, b, t, g):
    x, _ = ch05.get_doc_batch(docs, b, t, g)
    return x, x.clone()


def gb_misses_last_start(docs, b, t, g):  # torch.randint(len - t - 1): one start short
    counts = _counts(docs, t)
    k = torch.multinomial(counts.double(), b, replacement=True, generator=g)
    starts = [int(torch.randint(max(int(counts[d]) - 1, 1), (1,), generator=g))
              for d in k.tolist()]
    return _windows(docs, list(zip(k.tolist(), starts, strict=True)), t)


def gb_past_the_end(docs, b, t, g):  # torch.randint(len - t + 1): the target overruns
    counts = _counts(docs, t)
    k = torch.multinomial(counts.double(), b, replacement=True, generator=g)
    pairs = [(d, int(torch.randint(int(counts[d]) + 1, (1,), generator=g))) for d in k.tolist()]
    x = torch.stack([torch.cat([docs[d], docs[d][-1:] + 1])[s:s + t] for d, s in pairs])
    return x, x + 1  # pads the document with the "next" id, as if it went on


def gb_document_uniform(docs, b, t, g):  # a document first, uniformly: short ones too often
    counts = _counts(docs, t)
    usable = (counts > 0).nonzero().squeeze(1)
    k = usable[torch.randint(len(usable), (b,), generator=g)]
    starts = [int(torch.randint(int(counts[d]), (1,), generator=g)) for d in k.tolist()]
    return _windows(docs, list(zip(k.tolist(), starts, strict=True)), t)


def gb_concatenated(docs, b, t, g):  # one stream: windows cross from a document to the next
    stream = torch.cat(list(docs))
    starts = torch.randint(len(stream) - t, (b,), generator=g)
    return (torch.stack([stream[i:i + t] for i in starts]),
            torch.stack([stream[i + 1:i + 1 + t] for i in starts]))


def gb_short_document_drawn(docs, b, t, g):  # counts of len - t, negative ones not removed
    lengths = torch.tensor([len(d) for d in docs])
    k = torch.multinomial((lengths - t).abs().double(), b, replacement=True, generator=g)
    pairs = [(d, int(torch.randint(max(len(docs[d]) - t, 1), (1,), generator=g)))
             for d in k.tolist()]
    return _windows(docs, pairs, t)


def gb_global_rng(docs, b, t, g):  # ignores the generator
    return ch05.get_doc_batch(docs, b, t, torch.Generator().manual_seed(
        int(torch.randint(10**6, (1,)))))


def gb_transposed(docs, b, t, g):
    x, y = ch05.get_doc_batch(docs, b, t, g)
    return x.T, y.T


@pytest.mark.parametrize("wrong, fragments", [
    (gb_float_ids, ("dtype torch.float32", "torch.long")),
    (gb_target_off_by_one, ("y is not x shifted by one", "next token")),
    (gb_y_is_x, ("y is not x shifted by one",)),
    (gb_misses_last_start, ("none was (document, start)", "excludes high")),
    (gb_past_the_end, ("runs past the end", "block_size + 1 tokens")),
    (gb_document_uniform, ("drawn", "in proportion to its number of windows")),
    (gb_concatenated, ("not a window of consecutive tokens of one document",)),
    (gb_short_document_drawn, ("get_doc_batch",)),
    (gb_global_rng, ("different batches", "generator=generator")),
    (gb_transposed, ("shapes",)),
])
def test_get_doc_batch_mistakes_fail(wrong, fragments):
    fails(ch05.check_get_doc_batch, wrong, "✗ get_doc_batch", *fragments, "hint")
