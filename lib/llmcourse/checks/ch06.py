"""Chapter 06 exercises: the encoder-decoder's training inputs, its cross-attention, its loss.

- :func:`check_teacher_forcing`: from a padded batch of targets, the decoder's input (the
  target shifted right behind a start token) and the labels (padding set to -100), against
  ``transformers``' ``shift_tokens_right`` (BART's) and ``masked_fill``;
- :func:`check_cross_attention`: multi-head cross-attention from raw weight matrices, with the
  source's padding mask, against ``torch.nn.MultiheadAttention`` with the same weights;
- :func:`check_label_smoothed_loss`: the label-smoothed cross-entropy the original
  Transformer trained with (Vaswani et al., 2017, §5.4), against
  ``torch.nn.functional.cross_entropy(..., label_smoothing=ε)``.

Each checker runs the learner's function on fresh random cases drawn from its own seeded
generator (the notebook's global random state is untouched), float32 and float64 where there
are floats; results must have the reference's dtype. When a result differs, the checker also
tries the usual mistakes on the same case, and when one of them gives the learner's numbers,
the hint names it ("the padding mask is inverted", "ε spread over the V − 1 wrong classes").
The functions below are the course's solutions; ``tests/test_checks_ch06.py`` checks them
against the same oracles and checks that the usual mistakes fail.

Example:
    >>> from llmcourse.checks.ch06 import check_teacher_forcing, teacher_forcing
    >>> check_teacher_forcing(teacher_forcing)
    ✓ teacher_forcing: 7 case(s) match the reference
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.checks import CheckFailed, Mistake, check_cases, clone_args, require_function

__all__ = [
    "teacher_forcing", "cross_attention", "label_smoothed_loss",
    "check_teacher_forcing", "check_cross_attention", "check_label_smoothed_loss",
]

IGNORE = -100  # the label that cross-entropy skips (F.cross_entropy's ignore_index default)


# ------------------------------------------------------------------------------ the solutions


def teacher_forcing(target: torch.Tensor, *, bos_id: int, pad_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's input and labels for teacher-forced training on padded targets.

    ``target`` (N, T) holds, in each row, the target's token ids, then EOS, then ``pad_id`` up
    to T. Position t of the decoder reads the true token t − 1 and must predict token t:

        decoder_input = [BOS, y_1, …, y_{T−1}]      labels = [y_1, …, y_T], −100 where padding

    Example:
        >>> target = torch.tensor([[5, 6, 2, 0], [7, 8, 9, 2]])    # EOS = 2, padding = 0
        >>> decoder_input, labels = teacher_forcing(target, bos_id=1, pad_id=0)
        >>> decoder_input
        tensor([[1, 5, 6, 2],
                [1, 7, 8, 9]])
        >>> labels
        tensor([[   5,    6,    2, -100],
                [   7,    8,    9,    2]])
    """
    bos = target.new_full((target.shape[0], 1), bos_id)  # (N, 1)
    decoder_input = torch.cat([bos, target[:, :-1]], dim=1)  # (N, T) shifted right
    labels = target.masked_fill(target == pad_id, IGNORE)  # (N, T) a new tensor
    return decoder_input, labels



def _heads_and_scores(x: torch.Tensor, memory: torch.Tensor, w_q: torch.Tensor,
                      w_k: torch.Tensor, w_v: torch.Tensor, n_head: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (B, h, T, d), k and v (B, h, S, d), and the scaled scores (B, h, T, S): the part the
    reference and its wrong versions share."""
    b, t, c = x.shape
    s, d = memory.shape[1], c // n_head
    q = (x @ w_q.T).view(b, t, n_head, d).transpose(1, 2)  # (B, h, T, d)
    k = (memory @ w_k.T).view(b, s, n_head, d).transpose(1, 2)  # (B, h, S, d)
    v = (memory @ w_v.T).view(b, s, n_head, d).transpose(1, 2)  # (B, h, S, d)
    return q, k, v, q @ k.transpose(-2, -1) / math.sqrt(d)  # ..., (B, h, T, S)

def cross_attention(x: torch.Tensor, memory: torch.Tensor, w_q: torch.Tensor,
                    w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor,
                    src_mask: torch.Tensor, n_head: int) -> torch.Tensor:
    """Multi-head attention from the decoder's states to the encoder's output.

        head_i = softmax(Q_i K_iᵀ / √d + M) V_i,   Q = x W_qᵀ,  K = memory W_kᵀ,  V = memory W_vᵀ
        out = concat(head_1, …, head_h) W_oᵀ

    with d = C / h and M = −∞ on the columns (keys) of padded source positions.

    Args:
        x: (B, T, C) the decoder's states (the queries).
        memory: (B, S, C) the encoder's output (keys and values).
        w_q, w_k, w_v, w_o: (C, C) weights in ``nn.Linear``'s (out, in) layout, no biases.
        src_mask: (B, S) 1 for a source token, 0 for padding.
        n_head: the number of heads h (divides C).

    Returns:
        (B, T, C), in the dtype of ``x``.

    Example:
        >>> w = torch.eye(4)
        >>> memory = torch.tensor([[[1.0, 0, 0, 0], [0, 9, 9, 9]]])     # position 1: padding
        >>> cross_attention(torch.ones(1, 3, 4), memory, w, w, w, w, torch.tensor([[1, 0]]), 2)
        tensor([[[1., 0., 0., 0.],
                 [1., 0., 0., 0.],
                 [1., 0., 0., 0.]]])
    """
    b, t, c = x.shape
    q, k, v, scores = _heads_and_scores(x, memory, w_q, w_k, w_v, n_head)
    padding = src_mask[:, None, None, :] == 0  # (B, 1, 1, S): hides keys, not queries
    weights = scores.masked_fill(padding, float("-inf")).softmax(dim=-1)  # (B, h, T, S)
    heads = (weights @ v).transpose(1, 2).reshape(b, t, c)  # (B, T, C)
    return heads @ w_o.T  # (B, T, C)


def label_smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, epsilon: float,
                        ignore_index: int = IGNORE) -> torch.Tensor:
    """Label-smoothed cross-entropy, averaged over the positions that are not ignored.

    The target distribution puts 1 − ε on the true token y and spreads ε evenly over all V
    tokens (Szegedy et al., 2016; the true token's share included, as ``torch`` defines it):

        q_j = (1 − ε)·[j = y] + ε / V,     loss = −Σ_j q_j log p_j
                                               = (1 − ε)(−log p_y) + ε · mean_j(−log p_j)

    Args:
        logits: (B, T, V) the decoder's scores.
        targets: (B, T) token ids, ``ignore_index`` where nothing is to be predicted.
        epsilon: the smoothing ε in [0, 1] (the original Transformer used 0.1).
        ignore_index: the label of positions that count neither in the sum nor in the mean.

    Returns:
        A 0-d tensor in the logits' dtype.

    Example:
        >>> logits = torch.zeros(1, 2, 4)                   # uniform: every −log p_j = log 4
        >>> label_smoothed_loss(logits, torch.tensor([[3, -100]]), 0.1)
        tensor(1.3863)
    """
    keep = targets != ignore_index  # (B, T) positions that count
    logp = logits.log_softmax(dim=-1)[keep]  # (n, V)
    nll = -logp.gather(-1, targets[keep][:, None]).squeeze(-1)  # (n,) −log p_y
    smooth = -logp.mean(dim=-1)  # (n,) mean over all V tokens of −log p_j
    return ((1 - epsilon) * nll + epsilon * smooth).mean()


# ------------------------------------------------------------------------------ the machinery


class _Keyword(NamedTuple):
    """A keyword argument inside a case, shown as ``name=value`` in a failure."""

    name: str
    value: Any

    def __repr__(self) -> str:
        return f"{self.name}={self.value!r}"


def _same_values(a: Any, b: Any) -> bool:
    """Whether two results hold the same values (dtype aside), NaN equal to NaN."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            return False
        return bool(torch.isclose(a.detach().double(), b.detach().double(), atol=1e-4,
                                  rtol=1e-4, equal_nan=True).all())
    return False


def _same_dtypes(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return all(_same_dtypes(x, y) for x, y in zip(a, b, strict=True))
    return not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or (
        a.dtype == b.dtype)


def _gives(wrong: Callable[..., Any], hint: str, part: int | None = None) -> Mistake:
    """A usual mistake recognised by its values: the learner's result (or only its item
    ``part``) has those of ``wrong(*case)``, and not the reference's."""
    def fits(got: Any, expected: Any, case: Sequence[Any]) -> bool:
        if _same_values(got, expected):  # a dtype slip (compare names it), or lost precision
            return False
        mistaken = wrong(*clone_args(case))
        if part is None:
            return _same_values(got, mistaken)
        return (isinstance(got, (tuple, list)) and len(got) > part
                and _same_values(got[part], mistaken))
    return Mistake(fits, hint)


_PRECISION = ("right to about float32's precision, not float64's: keep float64 throughout "
              "(torch.tensor, torch.zeros, torch.ones, torch.full make float32 unless given "
              "dtype=, and .float() casts down)")


_PRECISION_LOST = Mistake(  # the reference's values to 1e-4 and its dtypes, not to 1e-9
    lambda got, expected, case: _same_values(got, expected) and _same_dtypes(got, expected),
    _PRECISION)


def _check(fn: Callable[..., Any], reference: Callable[..., Any],
           cases: Sequence[Sequence[Any]], *, name: str, hint: str,
           mistakes: Sequence[Mistake], atol: float = 1e-5, rtol: float = 1e-5,
           against: str = "the reference") -> None:
    """:func:`~llmcourse.checks.check_cases` without autograd, lost precision named before
    the usual mistakes; float64 cases are held to 1e-9."""
    def tolerance(case: Sequence[Any]) -> tuple[float, float]:
        float64 = any(isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in case)
        return (1e-9, 1e-9) if float64 else (atol, rtol)

    with torch.no_grad():
        check_cases(fn, reference, cases, name=name, hint=hint, tolerance=tolerance,
                    mistakes=[_PRECISION_LOST, *mistakes], against=against)


# ------------------------------------------------------------------------------ teacher forcing


def _hf_teacher_forcing(target: torch.Tensor, bos: _Keyword, pad: _Keyword
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers.models.bart.modeling_bart import shift_tokens_right  # heavy: when needed

    labels = target.masked_fill(target == pad.value, IGNORE)  # (N, T)
    return shift_tokens_right(labels, pad.value, bos.value), labels  # (N, T) each


def _targets(gen: torch.Generator, n: int, t: int, vocab: int, *, full: bool = True
             ) -> tuple[torch.Tensor, _Keyword, _Keyword]:
    """(N, T) padded targets: content ids, EOS, then padding; three distinct special ids drawn
    at random (BOS never 0, so a column of zeros is not BOS by chance), one full row (no
    padding) when ``full``."""
    specials = (torch.randperm(vocab - 1, generator=gen)[:3] + 1).tolist()
    bos, eos = specials[0], specials[1]
    pad = 0 if torch.rand((), generator=gen) < 0.5 else specials[2]
    allowed = torch.tensor([i for i in range(vocab) if i not in (bos, eos, pad)])
    target = torch.full((n, t), pad, dtype=torch.long)  # (N, T)
    lengths = torch.randint(0, t, (n,), generator=gen)  # content lengths 0 .. T − 1
    if full:
        lengths[torch.randint(n, (), generator=gen)] = t - 1  # EOS in the last column
    for row, length in enumerate(lengths.tolist()):
        content = allowed[torch.randint(len(allowed), (length,), generator=gen)]
        target[row, :length + 1] = torch.cat([content, torch.tensor([eos])])
    return target, _Keyword("bos_id", bos), _Keyword("pad_id", pad)


def _column(target: torch.Tensor, value: int) -> torch.Tensor:
    return target.new_full((target.shape[0], 1), value)  # (N, 1)


def _tf(part: Callable[[torch.Tensor, int, int], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """One part of a wrong answer, ``part(target, bos_id, pad_id)``, called on a case."""
    return lambda t, b, p: part(t, b.value, p.value)


_BOS_AT_END = ("bos_id goes in FRONT of the decoder's input (the first thing it reads, with "
               "nothing before it), not at the end")
_TF_MISTAKES = [
    _gives(lambda t, b, p: teacher_forcing(t, bos_id=b.value, pad_id=p.value)[::-1],
           "decoder_input and labels are swapped: return (decoder_input, labels) in that "
           "order"),
    _gives(_tf(lambda t, b, p: torch.cat([t[:, 1:], _column(t, p)], dim=1)),
           "decoder_input is the target shifted LEFT (the next token: that is what the "
           "labels hold). The decoder reads the token BEFORE each position: BOS in front, "
           "then target[:, :-1]", part=0),
    _gives(_tf(lambda t, b, p: torch.cat([t[:, 1:], _column(t, b)], dim=1)), _BOS_AT_END, 0),
    _gives(_tf(lambda t, b, p: torch.cat([t[:, :-1], _column(t, b)], dim=1)), _BOS_AT_END, 0),
    _gives(_tf(lambda t, b, p: torch.cat([_column(t, 0), t[:, :-1]], dim=1)),
           "the first column of decoder_input must be bos_id: the shift is right, but what "
           "fills the empty first column is the start token, not 0", part=0),
    _gives(_tf(lambda t, b, p: torch.cat([_column(t, p), t[:, :-1]], dim=1)),
           "the first column of decoder_input must be bos_id: the shift is right, but what "
           "fills the empty first column is the start token, not pad_id", part=0),
    _gives(_tf(lambda t, b, p: t),
           "decoder_input is the target unshifted: the model would see, at every position, "
           "the very token it must predict. Shift right: BOS, then target[:, :-1]", part=0),
    _gives(_tf(lambda t, b, p: torch.cat([_column(t, b), t.masked_fill(t == p, IGNORE)[:, :-1]],
                                         dim=1)),
           "decoder_input holds -100: it was shifted from the labels (or from a target "
           "changed in place). The decoder's input is made of token ids: shift the target "
           "itself", part=0),
    _gives(_tf(lambda t, b, p: t),
           "labels still hold pad_id at the padding: set those positions to -100, which "
           "cross-entropy skips (else the model is trained to predict padding)", part=1),
    _gives(_tf(lambda t, b, p: t.masked_fill(t == p, 0)),
           "labels hold 0 at the padding: set those positions to -100, which cross-entropy "
           "skips (0 is a real class)", part=1),
    _gives(_tf(lambda t, b, p: teacher_forcing(torch.cat([t[:, 1:], _column(t, p)], dim=1),
                                               bos_id=b, pad_id=p)[1]),
           "labels are shifted too: the shift is already in decoder_input (position t reads "
           "token t − 1 and predicts token t), so labels are the target itself, padding set "
           "to -100", part=1),
    _gives(_tf(lambda t, b, p: t.masked_fill(  # EOS: the last column that is not padding
        (t == p) | (torch.arange(t.shape[1]) == (t != p).sum(1, keepdim=True) - 1), IGNORE)),
           "EOS is a real label: the model must learn to stop, so only the padding after it "
           "becomes -100", part=1),
]


def check_teacher_forcing(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(target, *, bos_id, pad_id) -> (decoder_input, labels)`` against
    ``transformers``' ``shift_tokens_right`` (BART's; given the labels, it shifts them right,
    puts ``bos_id`` in front and turns −100 back into ``pad_id``) and ``masked_fill``.

    ``target`` (N, T) ``torch.long``: each row is token ids, then EOS, then ``pad_id`` to the
    right. Both answers are (N, T) ``torch.long``; ``target`` must not change. The cases draw
    the special ids at random (padding 0 or not), include a row without padding (its EOS is in
    the last column, so it is not in the decoder's input), a batch of one and T = 1 (a target
    that is only EOS).

    Example:
        >>> check_teacher_forcing(teacher_forcing)
        ✓ teacher_forcing: 7 case(s) match the reference
    """
    require_function(fn, "teacher_forcing", function="my_teacher_forcing")
    gen = torch.Generator().manual_seed(606)

    def learner(target: torch.Tensor, bos: _Keyword, pad: _Keyword) -> Any:
        return fn(target, bos_id=bos.value, pad_id=pad.value)

    target, bos, pad = _targets(gen, 4, 6, 20)
    before = target.clone()
    with contextlib.suppress(Exception):  # a learner's error is reported with its case below
        learner(target, bos, pad)
    if not torch.equal(target, before):
        raise CheckFailed(
            "✗ teacher_forcing: your function changed its argument `target` in place\n"
            f"  case:     {target.shape[0]}×{target.shape[1]} target, {bos!r}, {pad!r}\n"
            "  hint: the caller still needs the target (to score, to print); build new tensors: "
            "target.masked_fill(...) returns a copy, target.masked_fill_(...) and "
            "target[...] = ... change it")
    cases = [
        _targets(gen, 3, 5, 12),
        _targets(gen, 4, 8, 30),
        _targets(gen, 1, 6, 10),  # a batch of one, no padding
        _targets(gen, 5, 1, 8),  # T = 1: each target is only EOS
        _targets(gen, 6, 10, 50),
        _targets(gen, 3, 7, 9, full=False),  # every row padded
        _targets(gen, 8, 12, 100),
    ]
    _check(learner, _hf_teacher_forcing, cases, name="teacher_forcing",
           mistakes=_TF_MISTAKES,
           hint="decoder_input = torch.cat([a column of bos_id, target[:, :-1]], dim=1); "
                "labels = target.masked_fill(target == pad_id, -100); both torch.long, "
                "returned as (decoder_input, labels)")


# ------------------------------------------------------------------------------ cross-attention


def _torch_cross_attention(x: torch.Tensor, memory: torch.Tensor, w_q: torch.Tensor,
                           w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor,
                           src_mask: torch.Tensor, n_head: int) -> torch.Tensor:
    """``nn.MultiheadAttention`` with the given weights and no biases."""
    c = x.shape[-1]
    with torch.random.fork_rng(devices=[]):  # its initialisation draws from the global RNG
        mha = nn.MultiheadAttention(c, n_head, bias=False, batch_first=True, dtype=x.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w_q, w_k, w_v]))  # (3C, C)
        mha.out_proj.weight.copy_(w_o)  # (C, C)
    out, _ = mha.eval()(x, memory, memory, key_padding_mask=src_mask == 0, need_weights=False)
    return out  # (B, T, C)


def _attention_variant(x: torch.Tensor, memory: torch.Tensor, w_q: torch.Tensor,
                       w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor,
                       src_mask: torch.Tensor, n_head: int, *, softmax_dim: int = -1,
                       renormalise: bool = True) -> torch.Tensor:
    """Cross-attention with the softmax over another axis, or with the padding's weights set
    to 0 after the softmax instead of −∞ before it (two usual mistakes)."""
    b, t, c = x.shape
    q, k, v, scores = _heads_and_scores(x, memory, w_q, w_k, w_v, n_head)
    padding = src_mask[:, None, None, :] == 0  # (B, 1, 1, S)
    if renormalise:
        weights = scores.masked_fill(padding, float("-inf")).softmax(dim=softmax_dim)
    else:
        weights = scores.softmax(dim=-1).masked_fill(padding, 0.0)  # rows no longer sum to 1
    return (weights @ v).transpose(1, 2).reshape(b, t, c) @ w_o.T  # (B, T, C)


def _scaled_q(factor: Callable[[int, int], float]) -> Callable[..., torch.Tensor]:
    """Cross-attention whose queries are multiplied by ``factor(C, n_head)``: the wrong scale."""

    def wrong(x: torch.Tensor, memory: torch.Tensor, w_q: torch.Tensor, *rest: Any
              ) -> torch.Tensor:
        c, n_head = x.shape[-1], rest[-1]
        return _torch_cross_attention(x, memory, w_q * factor(c, n_head), *rest)

    return wrong


_XA_MISTAKES = [
    _gives(lambda x, m, q, k, v, o, mask, h: _torch_cross_attention(x, m, q, k, v, o,
                                                                    1 - mask, h),
           "the padding mask is inverted: src_mask is 1 for a token and 0 for padding, and "
           "it is the padding (src_mask == 0) that gets -inf"),
    _gives(_scaled_q(lambda c, h: math.sqrt(c // h)),
           "the scores are not scaled: divide Q Kᵀ by √d, d = C / n_head the head's size"),
    _gives(_scaled_q(lambda c, h: math.sqrt(c // h) / math.sqrt(c)),
           "the scores are divided by √C: the scale is √d with d = C / n_head, the size of "
           "one head's queries and keys"),
    _gives(lambda *a: _attention_variant(*a, softmax_dim=-2),
           "the softmax runs over the wrong axis: each query's weights over the S source "
           "positions sum to 1, so softmax over the last axis of the (B, h, T, S) scores"),
    _gives(lambda *a: _attention_variant(*a, renormalise=False),
           "the padding's weights were set to 0 after the softmax, so the others no longer "
           "sum to 1: set the padding's scores to -inf BEFORE the softmax"),
    _gives(lambda x, m, q, k, v, o, mask, h: _torch_cross_attention(x, m, q, k, v, o,
                                                                    mask, 1),
           "this is one head over all C features: split Q, K and V into n_head heads of "
           "d = C / n_head features, (B, T, C) → (B, n_head, T, d), attend in each, and "
           "join them back before W_o"),
    _gives(lambda x, m, q, k, v, o, mask, h: _torch_cross_attention(
        x, x, q, k, v, o, torch.ones(x.shape[:2], dtype=torch.long), h),
           "the keys and values come from x: that is self-attention. In cross-attention the "
           "queries come from the decoder (x), the keys and values from the encoder's output "
           "(memory)"),
    _gives(lambda x, m, q, k, v, o, mask, h: _torch_cross_attention(
        x, m, q, k, v, torch.eye(x.shape[-1], dtype=x.dtype), mask, h),
           "the output projection is missing: multiply the joined heads by w_o.T"),
    _gives(lambda x, m, q, k, v, o, mask, h: _torch_cross_attention(
        x, m, q.T, k.T, v.T, o.T, mask, h),
           "the weights are in nn.Linear's (out, in) layout, so a projection is x @ w.T "
           "(what nn.Linear computes), not x @ w"),
]


def check_cross_attention(fn: Callable[..., torch.Tensor]) -> None:
    """Check ``fn(x, memory, w_q, w_k, w_v, w_o, src_mask, n_head)`` against
    ``torch.nn.MultiheadAttention(C, n_head, bias=False, batch_first=True)`` whose
    ``in_proj_weight`` is ``cat(w_q, w_k, w_v)`` and ``out_proj.weight`` is ``w_o``, called as
    ``mha(x, memory, memory, key_padding_mask=src_mask == 0)``.

    ``x`` (B, T, C), ``memory`` (B, S, C) with S ≠ T, weights (C, C) in ``nn.Linear``'s
    (out, in) layout, ``src_mask`` (B, S) ``torch.long``, 1 = token, 0 = padding; the answer
    is (B, T, C) in the inputs' dtype. The cases include one and several heads, sources with
    and without padding, rows with a single source token, one target position (a decoding
    step) and float64 (held to 1e-9: computing in float32 inside shows).

    Example:
        >>> check_cross_attention(cross_attention)
        ✓ cross_attention: 8 case(s) match torch.nn.MultiheadAttention
    """
    require_function(fn, "cross_attention", function="my_cross_attention")
    gen = torch.Generator().manual_seed(607)

    def case(b: int, t: int, s: int, c: int, n_head: int, *, pad: float = 0.4,
             dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        x = torch.randn(b, t, c, generator=gen, dtype=dtype)  # (B, T, C)
        memory = torch.randn(b, s, c, generator=gen, dtype=dtype)  # (B, S, C)
        weights = [torch.randn(c, c, generator=gen, dtype=dtype) / math.sqrt(c)
                   for _ in range(4)]  # (C, C) each, as nn.Linear initialises
        lengths = torch.randint(1, s + 1, (b,), generator=gen)  # (B,) ≥ 1 token per source
        lengths[torch.rand(b, generator=gen) >= pad] = s  # the others unpadded
        src_mask = (torch.arange(s)[None, :] < lengths[:, None]).long()  # (B, S)
        return (x, memory, *weights, src_mask, n_head)

    cases = [
        case(2, 3, 5, 8, 2, pad=1.0),
        case(3, 6, 4, 16, 4, pad=1.0),
        case(1, 4, 7, 12, 1, pad=1.0),  # one head: the split does nothing
        case(4, 5, 9, 32, 4),
        case(2, 1, 6, 16, 2, pad=1.0),  # one target position, as at a decoding step
        case(2, 7, 3, 24, 3, pad=0.0),  # no padding at all
        case(3, 4, 6, 16, 2, pad=1.0, dtype=torch.float64),
        case(2, 5, 8, 32, 8, dtype=torch.float64),
    ]
    _check(fn, _torch_cross_attention, cases, name="cross_attention",
           mistakes=_XA_MISTAKES, atol=1e-5, rtol=1e-4,
           against="torch.nn.MultiheadAttention",
           hint="queries from x, keys and values from memory (x @ w.T for each); split "
                "into n_head heads of d = C / n_head: (B, L, C) → (B, n_head, L, d); "
                "scores (B, n_head, T, S) / √d; -inf on the keys (last axis) where "
                "src_mask == 0; softmax over the last axis; join the heads and multiply "
                "by w_o.T; keep the inputs' dtype")


# ------------------------------------------------------------------------------ the loss


def _torch_label_smoothed(logits: torch.Tensor, targets: torch.Tensor, epsilon: float,
                          ignore_index: int) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index,
                           label_smoothing=epsilon)


def _ls_variant(logits: torch.Tensor, targets: torch.Tensor, eps: float, ignore: int, *,
                dim: int = -1, probs: bool = False, others: bool = False,
                divide: str = "kept") -> torch.Tensor:
    """The loss with one of the usual mistakes: the softmax over axis ``dim``, probabilities
    for log-probabilities, ε spread over the V − 1 wrong classes only, or the sum divided by
    all positions ("all") or by nothing ("none") instead of by the kept ones."""
    keep = targets != ignore  # (B, T)
    logp = logits.softmax(dim) if probs else logits.log_softmax(dim)
    logp = logp[keep]  # (n, V)
    logp_y = logp.gather(-1, targets[keep][:, None]).squeeze(-1)  # (n,)
    if others:
        smooth = -(logp.sum(-1) - logp_y) / (logits.shape[-1] - 1)  # (n,)
    else:
        smooth = -logp.mean(-1)  # (n,)
    per_position = (1 - eps) * -logp_y + eps * smooth  # (n,)
    count = {"kept": len(per_position), "all": targets.numel(), "none": 1}[divide]
    return per_position.sum() / count


def _ls_scaled_nll(logits: torch.Tensor, targets: torch.Tensor, eps: float, ignore: int
                   ) -> torch.Tensor:
    return (1 - eps) * _torch_label_smoothed(logits, targets, 0.0, ignore)


def _ls_nothing_ignored(logits: torch.Tensor, targets: torch.Tensor, eps: float, ignore: int
                        ) -> torch.Tensor:
    counted = targets.masked_fill(targets == ignore, 0)  # (B, T) as if they were class 0
    return _torch_label_smoothed(logits, counted, eps, ignore_index=-1)  # no target is -1


_LS_MISTAKES = [
    _gives(functools.partial(_ls_variant, others=True),
           "ε is spread over the V − 1 wrong classes only: as torch (and Szegedy et al. "
           "2016) define it, ε is spread over ALL V classes, ε / V each, so the true class "
           "gets 1 − ε + ε / V: ε · mean over all V of −log p_j"),
    _gives(functools.partial(_ls_variant, divide="all"),
           "the sum is divided by the number of ALL positions: divide by the number of "
           "positions whose target is not ignore_index (the mean over the kept ones)"),
    _gives(functools.partial(_ls_variant, divide="none"),
           "this is the sum over the positions: take the mean over the positions whose "
           "target is not ignore_index"),
    _gives(functools.partial(_ls_variant, probs=True),
           "probabilities are used where the loss needs log-probabilities: "
           "logits.log_softmax(dim=-1), not softmax"),
    _gives(functools.partial(_ls_variant, dim=1),
           "the log-softmax runs over the wrong axis: the distribution of each position is "
           "over the V tokens, the last axis of (B, T, V)"),
    _gives(_ls_scaled_nll,
           "this is (1 − ε) times the plain cross-entropy: the smoothing also adds ε times "
           "the mean over all V classes of −log p_j, which keeps the model from becoming "
           "too sure"),
    _gives(_ls_nothing_ignored,
           "the positions whose target is ignore_index count: drop them from the sum and "
           "from the number the sum is divided by (use the ignore_index argument, not a "
           "fixed -100)"),
]


def check_label_smoothed_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check ``fn(logits, targets, epsilon, ignore_index)`` against
    ``F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=ignore_index,
    label_smoothing=epsilon)``.

    ``logits`` (B, T, V) as a decoder returns them, ``targets`` (B, T) ``torch.long``; the
    answer is a 0-d tensor in the logits' dtype. The cases use ε ∈ {0, 0.1, 0.3}, targets with
    and without ignored positions, an ``ignore_index`` of 0 (a padding id that is otherwise a
    real class), logits large enough that log(softmax(z)) gives −∞ in float32, and float64
    (held to 1e-9).

    Example:
        >>> check_label_smoothed_loss(label_smoothed_loss)
        ✓ label_smoothed_loss: 8 case(s) match the reference
    """
    require_function(fn, "label_smoothed_loss", function="my_label_smoothed_loss")
    gen = torch.Generator().manual_seed(608)

    def case(b: int, t: int, v: int, eps: float, *, ignored: float = 0.3, scale: float = 2.0,
             ignore: int = IGNORE, dtype: torch.dtype = torch.float32) -> tuple[Any, ...]:
        logits = scale * torch.randn(b, t, v, generator=gen, dtype=torch.float64)  # (B, T, V)
        low = 1 if ignore == 0 else 0  # with ignore_index 0, class 0 is the padding
        targets = torch.randint(low, v, (b, t), generator=gen)  # (B, T)
        drop = torch.rand(b, t, generator=gen) < ignored  # (B, T)
        drop[0, 0] = False  # at least one position counts (with none the mean is 0 / 0)
        if ignored > 0:
            drop[-1, -1] = True  # and at least one is ignored
        return logits.to(dtype), targets.masked_fill(drop, ignore), eps, ignore

    cases = [
        case(2, 5, 7, 0.1),
        case(3, 4, 11, 0.0),  # ε = 0: the plain cross-entropy
        case(4, 6, 30, 0.3),
        case(1, 3, 5, 0.1, ignored=0.0),  # nothing ignored
        case(3, 5, 13, 0.1, ignore=0),  # the padding id 0 is the ignore_index
        case(2, 4, 50, 0.1, scale=60.0),  # log(softmax(z)) underflows to −∞
        case(3, 6, 17, 0.3, dtype=torch.float64),
        case(2, 8, 200, 0.1, ignore=0, dtype=torch.float64),
    ]
    _check(fn, _torch_label_smoothed, cases, name="label_smoothed_loss",
           mistakes=_LS_MISTAKES, atol=1e-5, rtol=1e-5,
           hint="logp = logits.log_softmax(dim=-1) (stable where log(softmax) is not); "
                "keep the positions whose target is not ignore_index; per position "
                "(1 − ε)·(−logp[target]) + ε·mean over the V classes of (−logp); the "
                "mean over the kept positions, in the logits' dtype")
