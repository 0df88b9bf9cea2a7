"""Chapter 05 exercise checkers: they pass the solutions and fail the usual mistakes.

The solutions are themselves checked against code no one here wrote: the schedule against
torch's LinearLR + CosineAnnealingLR (through ``llmcourse.training.loop.lr_at``, tested in
test_train.py, and directly here), the loss against ``F.cross_entropy``.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_check_fails as fails
from hypothesis import given
from hypothesis import strategies as st

from llmcourse.checks import ch05

CHECKS = {
    "lr_schedule": (ch05.check_lr_schedule, ch05.lr_schedule),
    "cross_entropy": (ch05.check_cross_entropy, ch05.cross_entropy),
    "get_batch": (ch05.check_get_batch, ch05.get_batch),
}


# ------------------------------------------------------------------------ solutions pass

@pytest.mark.parametrize("name", list(CHECKS))
def test_solution_passes(name, capsys):
    check, solution = CHECKS[name]
    check(solution)
    out = capsys.readouterr().out
    assert out.startswith(f"✓ {name}:"), out


def test_library_get_batch_passes(capsys):
    from llmcourse.training.batches import get_batch

    ch05.check_get_batch(get_batch)
    assert "✓ get_batch" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(CHECKS))
def test_not_implemented_says_so(name):
    def todo(*args):
        raise NotImplementedError("exercise")

    fails(CHECKS[name][0], todo, "not implemented yet")


def test_passing_the_result_instead_of_the_function_is_a_type_error():
    with pytest.raises(TypeError, match="pass the function itself"):
        ch05.check_cross_entropy(ch05.cross_entropy(torch.zeros(1, 2), torch.tensor([0])))


# ------------------------------------------------------------------------ solutions vs oracles

def test_lr_schedule_solution_matches_torch_schedulers():
    max_lr, min_lr, w, s = 1e-3, 1e-4, 20, 300
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr)
    warm = torch.optim.lr_scheduler.LinearLR(opt, 1 / w, 1.0, total_iters=w - 1)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s - w, eta_min=min_lr)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[w])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(s):
            assert ch05.lr_schedule(step, max_lr, min_lr, w, s) == pytest.approx(
                opt.param_groups[0]["lr"], rel=1e-6)
            opt.step()
            sched.step()


@given(st.integers(1, 20), st.integers(2, 50), st.floats(-50, 50), st.integers(0, 10**6))
def test_cross_entropy_solution_matches_torch(n, v, shift, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * 10 + shift
    targets = torch.randint(0, v, (n,), generator=g)
    torch.testing.assert_close(ch05.cross_entropy(logits, targets),
                               F.cross_entropy(logits, targets), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------ mistakes fail

def lr_no_warmup(step, max_lr, min_lr, w, s):
    if step >= s:
        return min_lr
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * step / s))


def lr_warmup_from_zero(step, max_lr, min_lr, w, s):  # step/W: the first update has lr 0
    if step < w:
        return max_lr * step / w
    return ch05.lr_schedule(step, max_lr, min_lr, w, s)


def lr_decay_to_zero(step, max_lr, min_lr, w, s):
    return ch05.lr_schedule(step, max_lr, 0.0, w, s)


def lr_linear_decay(step, max_lr, min_lr, w, s):
    if step < w:
        return max_lr * (step + 1) / w
    return max(min_lr, max_lr - (max_lr - min_lr) * (step - w) / (s - w))


@pytest.mark.parametrize("wrong", [lr_no_warmup, lr_warmup_from_zero, lr_decay_to_zero,
                                   lr_linear_decay])
def test_lr_schedule_mistakes_fail(wrong):
    fails(ch05.check_lr_schedule, wrong, "✗ lr_schedule", "expected", "got", "hint")


def ce_naive(logits, targets):  # exp overflows for large logits
    p = logits.exp() / logits.exp().sum(-1, keepdim=True)
    return -p[torch.arange(len(targets)), targets].log().mean()


def ce_sum(logits, targets):
    return ch05.cross_entropy(logits, targets) * len(targets)


def ce_wrong_axis(logits, targets):
    return -F.log_softmax(logits, dim=0)[torch.arange(len(targets)), targets].mean()


def ce_no_minus(logits, targets):
    return F.log_softmax(logits, dim=-1)[torch.arange(len(targets)), targets].mean()


def test_cross_entropy_naive_exp_fails_on_large_logits():
    fails(ch05.check_cross_entropy, ce_naive, "got NaN", "exp that overflowed", "row maximum")


@pytest.mark.parametrize("wrong", [ce_sum, ce_wrong_axis, ce_no_minus])
def test_cross_entropy_mistakes_fail(wrong):
    fails(ch05.check_cross_entropy, wrong, "✗ cross_entropy", "expected", "got")


def gb_misses_last_start(data, b, t, g):
    starts = torch.randint(len(data) - t - 1, (b,), generator=g)
    x = torch.stack([data[i:i + t] for i in starts])
    return x, torch.stack([data[i + 1:i + 1 + t] for i in starts])


def gb_past_the_end(data, b, t, g):
    starts = torch.randint(len(data) - t + 1, (b,), generator=g)
    x = torch.stack([data[i:i + t] for i in starts])
    return x, torch.stack([data[i + 1:i + 1 + t] for i in starts])


def gb_no_shift(data, b, t, g):
    x, _ = ch05.get_batch(data, b, t, g)
    return x, x.clone()


def gb_global_rng(data, b, t, g):
    starts = torch.randint(len(data) - t, (b,))  # ignores the generator
    x = torch.stack([data[i:i + t] for i in starts])
    return x, torch.stack([data[i + 1:i + 1 + t] for i in starts])


def gb_transposed(data, b, t, g):
    x, y = ch05.get_batch(data, b, t, g)
    return x.T, y.T


def gb_strided(data, b, t, g):  # windows of every other token
    starts = torch.randint(len(data) - 2 * t, (b,), generator=g) if len(data) > 2 * t else \
        torch.zeros(b, dtype=torch.long)
    x = torch.stack([data[i:i + 2 * t:2] for i in starts])
    return x, x + 3


@pytest.mark.parametrize("wrong, fragment", [
    (gb_misses_last_start, "no window started at"),
    (gb_past_the_end, "get_batch"),
    (gb_no_shift, "not x shifted by one"),
    (gb_global_rng, "different batches"),
    (gb_transposed, "shapes"),
    (gb_strided, "consecutive tokens"),
])
def test_get_batch_mistakes_fail(wrong, fragment):
    fails(ch05.check_get_batch, wrong, fragment, "hint")
