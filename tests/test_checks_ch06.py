"""Chapter 06 exercise checkers: they pass the solutions and fail the usual mistakes.

The solutions are themselves checked against code no one here wrote: the teacher-forcing
shift against ``transformers``' ``shift_tokens_right`` (BART's), cross-attention against
``torch.nn.MultiheadAttention`` with copied weights, the label-smoothed loss against
``F.cross_entropy(..., label_smoothing=ε)``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_check_fails as fails
from checker_helpers import checker_contract_tests
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from llmcourse.checks import ch06

CHECKS = {
    "teacher_forcing": (ch06.check_teacher_forcing, ch06.teacher_forcing),
    "cross_attention": (ch06.check_cross_attention, ch06.cross_attention),
    "label_smoothed_loss": (ch06.check_label_smoothed_loss, ch06.label_smoothed_loss),
}


# ------------------------------------------------------------------------ the checkers' contract

(test_solution_passes, test_not_implemented_says_so,
 test_passing_the_result_instead_of_the_function_is_a_type_error,
 test_checkers_leave_the_global_random_state_alone) = checker_contract_tests(CHECKS)


def test_a_learner_error_names_the_case_and_the_hint():
    def broken(target, *, bos_id, pad_id):
        return target[:, :-1] + target  # shapes (N, T - 1) and (N, T) do not add

    fails(ch06.check_teacher_forcing, broken, "raised RuntimeError", "case:", "bos_id=",
          "pad_id=", "hint: decoder_input = torch.cat")


# ------------------------------------------------------------------------ solutions vs oracles

@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), t=st.integers(1, 9), seed=st.integers(0, 10**6))
def test_teacher_forcing_is_bart_shift_tokens_right(n, t, seed):
    from transformers.models.bart.modeling_bart import shift_tokens_right

    gen = torch.Generator().manual_seed(seed)
    pad, bos, eos = 0, 1, 2
    target = torch.full((n, t), pad)
    for row, length in enumerate(torch.randint(0, t, (n,), generator=gen).tolist()):
        target[row, :length] = torch.randint(3, 40, (length,), generator=gen)
        target[row, length] = eos
    decoder_input, labels = ch06.teacher_forcing(target, bos_id=bos, pad_id=pad)
    assert torch.equal(labels, torch.where(target == pad, -100, target))
    assert torch.equal(decoder_input, shift_tokens_right(labels, pad, bos))
    assert decoder_input.dtype == labels.dtype == torch.long
    assert bool((decoder_input[:, 0] == bos).all())


def _mha(c, n_head, w_q, w_k, w_v, w_o, dtype):
    mha = nn.MultiheadAttention(c, n_head, bias=False, batch_first=True, dtype=dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w_q, w_k, w_v]))
        mha.out_proj.weight.copy_(w_o)
    return mha.eval()


@pytest.mark.parametrize("b, t, s, c, n_head", [(2, 3, 5, 8, 2), (3, 6, 2, 16, 4),
                                                 (1, 1, 9, 12, 3), (2, 4, 4, 8, 1)])
def test_cross_attention_is_torch_multihead_attention(b, t, s, c, n_head):
    gen = torch.Generator().manual_seed(b * 100 + t * 10 + s)
    x = torch.randn(b, t, c, generator=gen, dtype=torch.float64)
    memory = torch.randn(b, s, c, generator=gen, dtype=torch.float64)
    w = [torch.randn(c, c, generator=gen, dtype=torch.float64) / c**0.5 for _ in range(4)]
    lengths = torch.randint(1, s + 1, (b,), generator=gen)
    src_mask = (torch.arange(s) < lengths[:, None]).long()
    want, _ = _mha(c, n_head, *w, torch.float64)(x, memory, memory,
                                                 key_padding_mask=src_mask == 0)
    got = ch06.cross_attention(x, memory, *w, src_mask, n_head)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_cross_attention_ignores_what_the_padding_holds():
    gen = torch.Generator().manual_seed(0)
    x, memory = torch.randn(2, 3, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    w = [torch.randn(8, 8, generator=gen) for _ in range(4)]
    src_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    other = memory.clone()
    other[0, 3:] = 1e3
    a = ch06.cross_attention(x, memory, *w, src_mask, 2)
    torch.testing.assert_close(ch06.cross_attention(x, other, *w, src_mask, 2), a)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 1.0])
@pytest.mark.parametrize("ignore", [-100, 0])
def test_label_smoothed_loss_is_torch_cross_entropy(eps, ignore):
    gen = torch.Generator().manual_seed(int(eps * 10) + ignore)
    logits = 3 * torch.randn(3, 7, 19, generator=gen, dtype=torch.float64)
    targets = torch.randint(1, 19, (3, 7), generator=gen)
    targets[torch.rand(3, 7, generator=gen) < 0.3] = ignore
    targets[0, 0] = 5
    want = F.cross_entropy(logits.reshape(-1, 19), targets.reshape(-1), ignore_index=ignore,
                           label_smoothing=eps)
    got = ch06.label_smoothed_loss(logits, targets, eps, ignore)
    assert got.dtype == torch.float64 and got.shape == ()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_label_smoothing_is_kl_to_the_smoothed_distribution_plus_its_entropy():
    """Written a third way: −Σ_j q_j log p_j with q = (1 − ε)·onehot + ε / V, by hand."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    targets = torch.tensor([[0, 5, -100], [2, 2, 4]])
    eps, v = 0.1, 6
    total, count = 0.0, 0
    for i in range(2):
        for j in range(3):
            if targets[i, j] == -100:
                continue
            q = torch.full((v,), eps / v, dtype=torch.float64)
            q[targets[i, j]] += 1 - eps
            total += -(q * logits[i, j].log_softmax(-1)).sum().item()
            count += 1
    assert math.isclose(ch06.label_smoothed_loss(logits, targets, eps).item(), total / count,
                        rel_tol=1e-12)


# ------------------------------------------------------------------------ mistakes: teacher forcing

def _bos(target, bos_id):
    return target.new_full((target.shape[0], 1), bos_id)


def _labels(target, pad_id):
    return target.masked_fill(target == pad_id, -100)


def tf_shift_left(target, *, bos_id, pad_id):
    return torch.cat([target[:, 1:], _bos(target, pad_id)], 1), _labels(target, pad_id)


def tf_zeros_in_front(target, *, bos_id, pad_id):
    return torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], 1), _labels(target,
                                                                                   pad_id)


def tf_pad_in_front(target, *, bos_id, pad_id):
    return torch.cat([_bos(target, pad_id), target[:, :-1]], 1), _labels(target, pad_id)


def tf_bos_at_the_end(target, *, bos_id, pad_id):
    return torch.cat([target[:, 1:], _bos(target, bos_id)], 1), _labels(target, pad_id)


def tf_not_shifted(target, *, bos_id, pad_id):
    return target.clone(), _labels(target, pad_id)


def tf_labels_keep_pad(target, *, bos_id, pad_id):
    return torch.cat([_bos(target, bos_id), target[:, :-1]], 1), target.clone()


def tf_eos_ignored(target, *, bos_id, pad_id):
    labels = _labels(target, pad_id)
    eos_at = (target != pad_id).sum(1) - 1
    labels[torch.arange(len(target)), eos_at] = -100
    return torch.cat([_bos(target, bos_id), target[:, :-1]], 1), labels


def tf_labels_shifted(target, *, bos_id, pad_id):
    left = torch.cat([target[:, 1:], _bos(target, pad_id)], 1)
    return torch.cat([_bos(target, bos_id), target[:, :-1]], 1), _labels(left, pad_id)


def tf_int32(target, *, bos_id, pad_id):
    return tuple(a.int() for a in ch06.teacher_forcing(target, bos_id=bos_id, pad_id=pad_id))


def tf_float(target, *, bos_id, pad_id):
    decoder_input = torch.zeros(target.shape)  # a float buffer filled with the ids
    decoder_input[:, 0] = bos_id
    decoder_input[:, 1:] = target[:, :-1]
    return decoder_input, _labels(target, pad_id)


def tf_in_place(target, *, bos_id, pad_id):
    decoder_input = torch.cat([_bos(target, bos_id), target[:, :-1]], 1)
    target[target == pad_id] = -100
    return decoder_input, target


def tf_swapped(target, *, bos_id, pad_id):
    return ch06.teacher_forcing(target, bos_id=bos_id, pad_id=pad_id)[::-1]


def tf_pad_assumed_zero(target, *, bos_id, pad_id):
    return ch06.teacher_forcing(target, bos_id=bos_id, pad_id=0)


def tf_bos_assumed_one(target, *, bos_id, pad_id):
    return ch06.teacher_forcing(target, bos_id=1, pad_id=pad_id)


def tf_longer_input(target, *, bos_id, pad_id):  # all of the target behind BOS: (N, T + 1)
    return torch.cat([_bos(target, bos_id), target], 1), _labels(target, pad_id)


@pytest.mark.parametrize("wrong, fragments", [
    (tf_shift_left, ("shifted LEFT", "BOS in front")),
    (tf_zeros_in_front, ("must be bos_id", "not 0")),
    (tf_pad_in_front, ("must be bos_id", "not pad_id")),
    (tf_bos_at_the_end, ("bos_id goes in FRONT",)),
    (tf_not_shifted, ("unshifted", "the very token it must predict")),
    (tf_labels_keep_pad, ("labels still hold pad_id", "-100")),
    (tf_eos_ignored, ("EOS is a real label", "learn to stop")),
    (tf_labels_shifted, ("labels are shifted too",)),
    (tf_int32, ("dtype torch.int32 != expected torch.int64", "torch.long")),
    (tf_float, ("dtype torch.float32 != expected torch.int64",)),
    (tf_in_place, ("changed its argument `target` in place", "masked_fill(...) returns a copy")),
    (tf_swapped, ("swapped", "(decoder_input, labels) in that order")),
    (tf_pad_assumed_zero, ("labels = target.masked_fill(target == pad_id, -100)",)),
    (tf_bos_assumed_one, ("a column of bos_id",)),
    (tf_longer_input, ("shape (", "target[:, :-1]")),
])
def test_teacher_forcing_mistakes_fail(wrong, fragments):
    fails(ch06.check_teacher_forcing, wrong, "✗ teacher_forcing", *fragments)


def test_teacher_forcing_failure_shows_the_case_and_expected_vs_got():
    message = fails(ch06.check_teacher_forcing, tf_labels_keep_pad, "✗ teacher_forcing: case",
                    "differs: item 1:", "case:", "bos_id=", "pad_id=", "expected:", "got:")
    assert "case 1 differs" in message


def test_teacher_forcing_positional_parameters_are_fine():
    def positional(target, bos_id, pad_id):
        return ch06.teacher_forcing(target, bos_id=bos_id, pad_id=pad_id)

    ch06.check_teacher_forcing(positional)


# ------------------------------------------------------------------------ mistakes: cross-attention

def _attend(x, memory, w_q, w_k, w_v, w_o, src_mask, n_head, *, scale=None, dim=-1,
            zero_after=False, mask_rows=False, keys_from=None, project=True, heads=None,
            inverted=False, transposed=False):
    """The reference with one knob per usual mistake."""
    heads = heads or n_head
    b, t, c = x.shape
    kv = memory if keys_from is None else keys_from
    s, d = kv.shape[1], c // heads
    lin = (lambda a, w: a @ w) if transposed else (lambda a, w: a @ w.T)
    q = lin(x, w_q).view(b, t, heads, d).transpose(1, 2)
    k = lin(kv, w_k).view(b, s, heads, d).transpose(1, 2)
    v = lin(kv, w_v).view(b, s, heads, d).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d) if scale is None else scale(c, d))
    padding = (src_mask == 1) if inverted else (src_mask == 0)
    padding = padding[:, None, :, None] if mask_rows else padding[:, None, None, :]
    if zero_after:
        weights = scores.softmax(-1).masked_fill(padding, 0.0)
    else:
        weights = scores.masked_fill(padding, float("-inf")).softmax(dim)
    out = (weights @ v).transpose(1, 2).reshape(b, t, c)
    return lin(out, w_o) if project else out


def xa_inverted_mask(*a):
    return _attend(*a, inverted=True)


def xa_mask_over_queries(*a):
    return _attend(*a, mask_rows=True)


def xa_no_scale(*a):
    return _attend(*a, scale=lambda c, d: 1.0)


def xa_scale_sqrt_c(*a):
    return _attend(*a, scale=lambda c, d: math.sqrt(c))


def xa_softmax_over_queries(*a):
    return _attend(*a, dim=-2)


def xa_zeroed_after_softmax(*a):
    return _attend(*a, zero_after=True)


def xa_single_head(*a):
    return _attend(*a, heads=1)


def xa_self_attention(x, memory, w_q, w_k, w_v, w_o, src_mask, n_head):  # the mask can't fit
    return _attend(x, memory, w_q, w_k, w_v, w_o, torch.ones(x.shape[:2]), n_head, keys_from=x)


def xa_no_output_projection(*a):
    return _attend(*a, project=False)


def xa_float32_result(*a):
    return _attend(*a).float()


def xa_float32_inside(*a):
    return _attend(*(t.float() if torch.is_tensor(t) and t.is_floating_point() else t
                     for t in a)).to(a[0].dtype)


def xa_weights_not_transposed(*a):
    return _attend(*a, transposed=True)


def xa_heads_split_wrongly(x, memory, w_q, w_k, w_v, w_o, src_mask, n_head):
    b, t, c = x.shape
    s, d = memory.shape[1], c // n_head
    q = (x @ w_q.T).reshape(b, n_head, t, d)  # a reshape is not a transpose
    k = (memory @ w_k.T).reshape(b, n_head, s, d)
    v = (memory @ w_v.T).reshape(b, n_head, s, d)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(
        src_mask[:, None, None, :] == 0, float("-inf"))
    return (scores.softmax(-1) @ v).reshape(b, t, c) @ w_o.T


@pytest.mark.parametrize("wrong, fragments", [
    (xa_inverted_mask, ("padding mask is inverted",)),
    (xa_mask_over_queries, ("raised RuntimeError", "-inf on the keys (last axis)")),
    (xa_no_scale, ("not scaled", "√d")),
    (xa_scale_sqrt_c, ("divided by √C", "C / n_head")),
    (xa_softmax_over_queries, ("softmax runs over the wrong axis",)),
    (xa_zeroed_after_softmax, ("after the softmax", "no longer sum to 1", "BEFORE")),
    (xa_single_head, ("one head over all C features",)),
    (xa_self_attention, ("keys and values come from x", "self-attention")),
    (xa_no_output_projection, ("output projection is missing",)),
    (xa_float32_result, ("dtype torch.float32 != expected torch.float64",)),
    (xa_float32_inside, ("values differ", "tolerance atol=1e-09", "float32's precision")),
    (xa_weights_not_transposed, ("(out, in) layout", "x @ w.T")),
    (xa_heads_split_wrongly, ("values differ", "(B, L, C) → (B, n_head, L, d)")),
])
def test_cross_attention_mistakes_fail(wrong, fragments):
    fails(ch06.check_cross_attention, wrong, "✗ cross_attention", *fragments)


# ------------------------------------------------------------------------ mistakes: the loss

def _parts(logits, targets, ignore_index, dim=-1):
    keep = targets != ignore_index
    logp = logits.log_softmax(dim)[keep]
    return logp, logp.gather(-1, targets[keep][:, None]).squeeze(-1)


def ls_other_classes_only(logits, targets, epsilon, ignore_index=-100):
    logp, logp_y = _parts(logits, targets, ignore_index)
    others = -(logp.sum(-1) - logp_y) / (logits.shape[-1] - 1)
    return ((1 - epsilon) * -logp_y + epsilon * others).mean()


def ls_ignored_counted(logits, targets, epsilon, ignore_index=-100):  # gathers at -100
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, targets[..., None]).squeeze(-1)
    return ((1 - epsilon) * nll - epsilon * logp.mean(-1)).mean()


def ls_ignored_as_class_zero(logits, targets, epsilon, ignore_index=-100):
    safe = targets.masked_fill(targets == ignore_index, 0)
    return ch06.label_smoothed_loss(logits, safe, epsilon, -12345)


def ls_mean_over_all_rows(logits, targets, epsilon, ignore_index=-100):
    logp, logp_y = _parts(logits, targets, ignore_index)
    return ((1 - epsilon) * -logp_y - epsilon * logp.mean(-1)).sum() / targets.numel()


def ls_sum(logits, targets, epsilon, ignore_index=-100):
    logp, logp_y = _parts(logits, targets, ignore_index)
    return ((1 - epsilon) * -logp_y - epsilon * logp.mean(-1)).sum()


def ls_probabilities(logits, targets, epsilon, ignore_index=-100):
    keep = targets != ignore_index
    p = logits.softmax(-1)[keep]
    p_y = p.gather(-1, targets[keep][:, None]).squeeze(-1)
    return ((1 - epsilon) * -p_y - epsilon * p.mean(-1)).mean()


def ls_log_of_softmax(logits, targets, epsilon, ignore_index=-100):  # log(0) = -inf
    keep = targets != ignore_index
    logp = logits.softmax(-1).log()[keep]
    logp_y = logp.gather(-1, targets[keep][:, None]).squeeze(-1)
    return ((1 - epsilon) * -logp_y - epsilon * logp.mean(-1)).mean()


def ls_wrong_axis(logits, targets, epsilon, ignore_index=-100):
    logp, logp_y = _parts(logits, targets, ignore_index, dim=1)
    return ((1 - epsilon) * -logp_y - epsilon * logp.mean(-1)).mean()


def ls_scaled_loss_only(logits, targets, epsilon, ignore_index=-100):
    return (1 - epsilon) * F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                           ignore_index=ignore_index)


def ls_float32_result(logits, targets, epsilon, ignore_index=-100):
    return ch06.label_smoothed_loss(logits, targets, epsilon, ignore_index).float()


def ls_hardcoded_minus_100(logits, targets, epsilon, ignore_index=-100):
    return ch06.label_smoothed_loss(logits, targets, epsilon)


def ls_epsilon_over_v_minus_nothing(logits, targets, epsilon, ignore_index=-100):
    """Smoothing added on top of the full cross-entropy: (−log p_y) + ε·mean(−log p)."""
    logp, logp_y = _parts(logits, targets, ignore_index)
    return (-logp_y - epsilon * logp.mean(-1)).mean()


@pytest.mark.parametrize("wrong, fragments", [
    (ls_other_classes_only, ("V − 1 wrong classes", "ε / V each")),
    (ls_ignored_counted, ("raised", "keep the positions whose target is not ignore_index")),
    (ls_ignored_as_class_zero, ("positions whose target is ignore_index count",)),
    (ls_mean_over_all_rows, ("number of ALL positions",)),
    (ls_sum, ("this is the sum",)),
    (ls_probabilities, ("probabilities are used", "log_softmax")),
    (ls_log_of_softmax, ("where the reference is finite", "log_softmax")),
    (ls_wrong_axis, ("log-softmax runs over the wrong axis",)),
    (ls_scaled_loss_only, ("(1 − ε) times the plain cross-entropy",)),
    (ls_float32_result, ("dtype torch.float32 != expected torch.float64",)),
    (ls_hardcoded_minus_100, ("not a fixed -100",)),
    (ls_epsilon_over_v_minus_nothing, ("values differ", "(1 − ε)·(−logp[target])")),
])
def test_label_smoothed_loss_mistakes_fail(wrong, fragments):
    fails(ch06.check_label_smoothed_loss, wrong, "✗ label_smoothed_loss", *fragments)
