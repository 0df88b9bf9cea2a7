"""Chapter 09 exercises: the size and compute of a model, applied where the chapter did not go.

- :func:`check_int4_group_quantize`: group-wise symmetric int4 quantization of a weight matrix
  (one scale per group of consecutive weights in a row, codes −7..7), all-zero groups included;
- :func:`check_max_context`: the inverse KV-cache question, the longest context whose cache
  fits a memory budget, for a model with grouped-query attention;
- :func:`check_training_flops`: the FLOPs to train a Llama-style model (SwiGLU MLP, GQA,
  untied output layer) on a number of tokens, ≈ 6N per token plus the attention term.

Each checker runs the learner's function on fresh cases from its own seeded generator (the
notebook's random state is untouched) and compares with the reference below, dtype and type
included (int8 codes, scales in the weights' dtype, an ``int`` context). When a case differs,
the checker also tries the usual mistakes on it, and when one of them gives the learner's
answer the hint names it. The references are checked against code no one here wrote in
``tests/test_checks_ch09.py`` (torch's ``quantize_per_channel_group`` and
``PerChannelMinMaxObserver``, the bytes of the course's ``KVCache``, ``FlopCounterMode`` over
``transformers``' ``LlamaForCausalLM``), which also checks that the usual mistakes fail.

Example:
    >>> check_max_context(max_context)
    ✓ max_context: 11 case(s) match the reference
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmcourse.checks import Mistake, check_cases, clone_args, require_function

__all__ = [
    "int4_group_quantize", "max_context", "training_flops",
    "check_int4_group_quantize", "check_max_context", "check_training_flops",
]


# ------------------------------------------------------------------------------ the solutions


def int4_group_quantize(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise symmetric int4 quantization of a weight matrix ``w`` (out, in), ``in``
    divisible by ``group_size``: each row is cut into groups of ``group_size`` consecutive
    weights, and each group g gets its own scale

        s_g = max_{j in g} |w_j| / 7,     q_j = clamp(round(w_j / s_g), −7, 7)

    so that ``s_g * q_j`` ≈ ``w_j``, off by at most s_g / 2. Returns ``q`` (out, in)
    ``torch.int8`` holding the codes −7..7 (a file format packs two 4-bit codes per byte) and
    ``scale`` (out, in // group_size) in ``w``'s dtype. An all-zero group gets scale 1 (any
    positive scale would do: its codes are 0), never 0, whose division gives 0/0 = NaN.

    Example:
        >>> w = torch.tensor([[0.7, -0.2, 0.0, 0.0, 0.035, -0.01]])
        >>> q, scale = int4_group_quantize(w, 2)
        >>> q
        tensor([[ 7, -2,  0,  0,  7, -2]], dtype=torch.int8)
        >>> scale
        tensor([[0.1000, 1.0000, 0.0050]])
    """
    out, inp = w.shape
    groups = w.reshape(out, inp // group_size, group_size)  # (out, G, g) consecutive weights
    amax = groups.abs().amax(dim=2)  # (out, G) largest magnitude of each group
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))  # (out, G), never 0
    q = torch.round(groups / scale[..., None]).clamp(-7, 7)  # (out, G, g) codes −7..7
    return q.to(torch.int8).reshape(out, inp), scale  # (out, in) int8, (out, G)


def max_context(n_layer: int, n_head: int, n_kv_head: int, head_dim: int,
                bytes_per_value: int, budget_bytes: int, batch: int) -> int:
    """The longest context T whose KV cache, for ``batch`` sequences, fits in ``budget_bytes``:

        T = floor(budget_bytes / (2 · n_layer · n_kv_head · head_dim · batch · bytes_per_value))

    The denominator is what one more token of context costs the whole batch: a key and a
    value (the 2) per key/value head, per layer, per sequence. ``n_head`` does not enter: under
    grouped-query attention the n_head query heads share n_kv_head cached heads. Rounding down,
    since T + 1 tokens would not fit; 0 when the budget does not hold a single token.

    Example:
        >>> max_context(80, 64, 8, 128, 2, 20 * 10**9, 8)  # Llama-2 70B, bf16, 20 GB, 8 seqs
        7629
    """
    per_token = 2 * n_layer * n_kv_head * head_dim * batch * bytes_per_value  # bytes
    return budget_bytes // per_token


def training_flops(n_layer: int, d_model: int, n_head: int, n_kv_head: int, d_ff: int,
                   vocab_size: int, context: int, tokens: int) -> float:
    """FLOPs to train a Llama-style model on ``tokens`` tokens in sequences of ``context``:

        N = n_layer · (2d² + 2·d·n_kv_head·(d / n_head) + 3·d·d_ff) + V·d
        FLOPs = 6 · N · tokens + 6 · n_layer · context · d · tokens

    N counts the weights each token is multiplied by: per layer W_q and W_o (d × d each), W_k
    and W_v (d × n_kv_head·head_dim each), the SwiGLU MLP's gate, up and down (d × d_ff each),
    and once the untied output layer (d × V). The embedding lookup is a copy, no arithmetic;
    norms and activations are a few FLOPs per number, left out. A product costs 2 FLOPs per
    weight per token forward and twice that backward: 6N. The attention's scores and weighted
    sum cost 4·t·d per layer for a token at position t (every query head, grouped or not),
    2·context·d on average over a causal sequence, times 3 for training.

    Example:
        >>> f"{training_flops(32, 4096, 32, 32, 11008, 32000, 4096, 2 * 10**12):.3g}"
        '8.57e+22'
    """
    head_dim = d_model // n_head
    per_layer = 2 * d_model**2 + 2 * d_model * n_kv_head * head_dim + 3 * d_model * d_ff
    n = n_layer * per_layer + vocab_size * d_model
    return float(6 * n * tokens + 6 * n_layer * context * d_model * tokens)


# ------------------------------------------------------------------------------ the machinery


_Fits = Callable[[Any, Any, Sequence[Any]], bool]  # Mistake.fits(got, expected, case)


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal dtypes for tensors (NaN equal to NaN); numbers to 1e-9 relative."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.isclose(
            a.detach().double(), b.detach().double(), rtol=1e-6, atol=0, equal_nan=True).all())
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)  # values only: compare names an int/float slip
    return False


def _gives(*wrongs: Callable[..., Any]) -> _Fits:
    """A mistake recognised by its result: the learner's answer equals ``wrong(*case)`` for
    one of ``wrongs`` (one that raises on the case is passed over)."""
    def fits(got: Any, expected: Any, case: Sequence[Any]) -> bool:
        for wrong in wrongs:
            with contextlib.suppress(Exception):
                if _same(got, wrong(*clone_args(case))):
                    return True
        return False
    return fits


# ------------------------------------------------------------------------------ int4 groups


def _pair(got: Any) -> bool:
    return (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(t, torch.Tensor) for t in got))


def _tie_tolerance(dtype: torch.dtype) -> float:
    """How close to a half-step w / s may fall, in steps, for either neighbouring code to be
    a nearest code once w / s is rounded in ``dtype`` (bf16 keeps 8 significant bits)."""
    return 8 * max(torch.finfo(dtype).eps, 1e-6)


def _int4_judged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The learner's function, its answer adapted where it is as right as the reference's:
    on an all-zero group whose codes are 0, any finite positive scale (read as 1); a scale
    within 1e-6 of the reference's (read as it); and a code one off the reference's where
    w / s lies within :func:`_tie_tolerance` of the half-step between them (w / s computed in
    bf16 or float32, by division or by the inverse, rounds either way there)."""
    def learner(w: torch.Tensor, group_size: int) -> Any:
        ref_q, ref_s = int4_group_quantize(w.clone(), group_size)  # before fn could change w
        out, inp = w.shape
        exact = (w.double().reshape(out, -1, group_size)
                 / ref_s.double()[..., None]).reshape(out, inp)  # (out, in) w / s, exactly
        zero = (w == 0).reshape(out, -1, group_size).all(dim=2)  # (out, G)
        got = fn(w, group_size)
        if not _pair(got):
            return got
        q, scale = got
        if (q.shape != ref_q.shape or q.dtype != ref_q.dtype or scale.shape != ref_s.shape
                or scale.dtype != ref_s.dtype):
            return got
        codes_zero = (q.reshape(out, -1, group_size) == 0).all(dim=2)  # (out, G)
        fine = zero & codes_zero & torch.isfinite(scale) & (scale > 0)
        close = torch.isclose(scale.double(), ref_s.double(), rtol=1e-6, atol=0)
        scale = torch.where(fine | close, ref_s, scale)
        one_off = (q.long() - ref_q.long()).abs() == 1
        mid = (q.double() + ref_q.double()) / 2
        tie = one_off & ((exact - mid).abs() <= _tie_tolerance(w.dtype))
        return torch.where(tie, ref_q, q), scale
    return learner


def _int4(w: torch.Tensor, g: int, *, divisor: float = 7, lo: int = -7, hi: int = 7,
          rounding: str = "round", signed_max: bool = False) -> Any:
    """A variant of :func:`int4_group_quantize`: another divisor, code range, rounding, or
    max(group) instead of max|group|."""
    groups = w.reshape(w.shape[0], -1, g)  # (out, G, g)
    amax = groups.amax(dim=2).clamp(min=0) if signed_max else groups.abs().amax(dim=2)
    scale = torch.where(amax > 0, amax / divisor, torch.ones_like(amax))  # (out, G)
    x = groups / scale[..., None]  # (out, G, g)
    x = {"round": x.round(), "floor": x.floor(), "trunc": x.trunc()}[rounding]
    return x.clamp(lo, hi).to(torch.int8).reshape(w.shape), scale


def _int4_per_row(w: torch.Tensor, g: int, expand: bool) -> Any:
    q, scale = _int4(w, w.shape[1])  # one group per row: scale (out, 1)
    return q, scale.expand(-1, w.shape[1] // g).contiguous() if expand else scale


def _int4_strided(w: torch.Tensor, g: int) -> Any:
    out, inp = w.shape
    groups = w.reshape(out, g, inp // g)  # (out, g, G): every G-th weight, not consecutive
    amax = groups.abs().amax(dim=1)  # (out, G)
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
    q = (groups / scale[:, None, :]).round().clamp(-7, 7).to(torch.int8)  # (out, g, G)
    return q.reshape(out, inp), scale


def _int4_columns(w: torch.Tensor, g: int) -> Any:
    out, inp = w.shape
    groups = w.reshape(out // g, g, inp)  # (out/g, g, in): down the columns
    amax = groups.abs().amax(dim=1)  # (out/g, in)
    scale = torch.where(amax > 0, amax / 7, torch.ones_like(amax))
    q = (groups / scale[:, None, :]).round().clamp(-7, 7).to(torch.int8)  # (out/g, g, in)
    return q.reshape(out, inp), scale


def _int4_transposed(w: torch.Tensor, g: int) -> Any:
    q, scale = int4_group_quantize(w.T.contiguous(), g)  # groups along the columns of w
    return q.T, scale  # scale (in, out / g)


def _int4_minmax(w: torch.Tensor, g: int) -> Any:
    groups = w.reshape(w.shape[0], -1, g)  # (out, G, g)
    lo, hi = groups.amin(dim=2), groups.amax(dim=2)  # (out, G)
    scale = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(hi))
    q = (torch.round((groups - lo[..., None]) / scale[..., None]) - 8).clamp(-8, 7)
    return q.to(torch.int8).reshape(w.shape), scale


def _when(test: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], bool]) -> _Fits:
    """A mistake recognised by a property of the answer ``(q, scale)`` given ``(w, g)``."""
    def fits(got: Any, expected: Any, case: Sequence[Any]) -> bool:
        return _pair(got) and bool(test(got[0], got[1], *case))
    return fits


def _zero_group_scale_not_positive(q: torch.Tensor, s: torch.Tensor, w: torch.Tensor,
                                   g: int) -> bool:
    zero = (w == 0).reshape(w.shape[0], -1, g).all(dim=2)  # (out, G)
    return s.shape == zero.shape and bool((zero & ~(s > 0)).any())


_GROUPS = "w.reshape(out, in // group_size, group_size)"
_INT4_MISTAKES = [
    Mistake(_gives(lambda w, g: _int4_per_row(w, g, True),
                   lambda w, g: _int4_per_row(w, g, False)),
            "one scale per row (max|row| / 7): that is per-channel scaling, the chapter's "
            "int8 scheme. With 15 levels a row's one large weight makes the step coarse for "
            f"the whole row; here each group of group_size weights gets its own: {_GROUPS}, "
            "then amax over the last dim"),
    Mistake(_gives(_int4_strided),
            "the groups are not consecutive weights: reshape(out, group_size, in // "
            "group_size) puts every (in // group_size)-th weight in one group. Keep the group "
            f"last, {_GROUPS}, so that group k is w[r, k·group_size:(k+1)·group_size]"),
    Mistake(_gives(_int4_columns, _int4_transposed),
            "the groups run down the columns (group_size consecutive rows of one input): "
            f"they run along each row, over the inputs, {_GROUPS}; scale is (out, in // "
            "group_size)"),
    Mistake(_gives(*(lambda w, g, lo=lo, d=d: _int4(w, g, divisor=d, lo=lo)
                     for d in (8, 16) for lo in (-7, -8))),
            "the scale divides by 8 (or 16), as if the codes ran to ±8: symmetric int4 uses "
            "−7..7 (−8 has no +8 to pair with), so s = max|group| / 7 and the largest weight "
            "of each group maps to ±7 exactly"),
    Mistake(_gives(*(lambda w, g, lo=lo: _int4(w, g, divisor=15, lo=lo)
                     for lo in (-7, -8))),
            "the scale divides by 15, the number of levels: symmetric codes use 7 of them on "
            "each side of 0, so s = max|group| / 7"),
    Mistake(_when(lambda q, s, w, g: torch.equal(q, _int4_minmax(w, g)[0])),
            "asymmetric (min-max) codes −8..7: those need a zero point to come back to w, "
            "which this function does not return. Here the codes are symmetric, no offset: "
            "s = max|group| / 7, q = clamp(round(w / s), −7, 7)"),
    Mistake(_gives(lambda w, g: _int4(w, g, signed_max=True)),
            "the scale comes from max(group), not max(|group|): a group whose largest weight "
            "is negative gets too small a scale. Use .abs().amax(...)"),
    Mistake(_gives(lambda w, g: _int4(w, g, rounding="floor")),
            "the codes are rounded down (floor): −0.2 becomes −1, and every weight may move "
            "by up to a whole step. Round to the nearest code, torch.round(w / s), which "
            "keeps |w − s·q| ≤ s / 2"),
    Mistake(_gives(lambda w, g: _int4(w, g, rounding="trunc")),
            "the codes are truncated toward 0 (a cast without rounding): 2.9 becomes 2. "
            "Round to the nearest code first: torch.round(w / s)"),
    Mistake(_when(lambda q, s, w, g: s.dtype == torch.int8 and q.is_floating_point()),
            "the pair is swapped: return (q, scale), the int8 codes first"),
    Mistake(_when(lambda q, s, w, g: q.dtype == torch.uint8),
            "q is uint8, which holds 0..255: the negative codes wrap around (−1 becomes 255). "
            "Symmetric codes need a signed type: .to(torch.int8)"),
    Mistake(_when(lambda q, s, w, g: q.is_floating_point()),
            "q is still a float tensor: round, clamp, then .to(torch.int8); the point is a "
            "small integer per weight instead of a float"),
    Mistake(_when(lambda q, s, w, g: q.dtype != torch.int8),
            "q should be torch.int8, the smallest integer type torch computes with (a file "
            "format then packs two 4-bit codes per byte)"),
    Mistake(_when(lambda q, s, w, g: q.dim() == 3),
            "q still has the groups' shape (out, in // group_size, group_size): reshape it "
            "back to (out, in)"),
    Mistake(_when(lambda q, s, w, g: s.shape == w.shape),
            "scale has one number per weight (each group's scale repeated): store one per "
            "group, shape (out, in // group_size); repeat it only to dequantize"),
    Mistake(_when(lambda q, s, w, g: s.shape == (w.shape[0], w.shape[1] // g, 1)),
            "scale has shape (out, in // group_size, 1): drop the last dim (amax without "
            "keepdim, or scale[..., 0])"),
    Mistake(_when(lambda q, s, w, g: s.dim() == 1 and s.numel() == w.numel() // g),
            "scale is flattened to (out · in // group_size,): keep it (out, in // "
            "group_size), row r's groups in row r"),
    Mistake(_when(lambda q, s, w, g: s.shape != (w.shape[0], w.shape[1] // g)),
            "scale must be one number per group, shape (out, in // group_size): amax over "
            f"the last dim of {_GROUPS}"),
    Mistake(_when(lambda q, s, w, g: s.dtype != w.dtype),
            "scale is not in w's dtype: keep it so (amax / 7 already is); a float32 scale for "
            "float64 weights loses precision, and for bf16 weights doubles its bytes"),
    Mistake(_when(_zero_group_scale_not_positive),
            "an all-zero group got scale 0 (or NaN): max|group| / 7 = 0 there, and w / 0 = "
            "0/0 = NaN, which no integer can hold. Give such a group a positive scale, 1 say: "
            "torch.where(amax > 0, amax / 7, 1)"),
    Mistake(_when(lambda q, s, w, g: bool((q.long().abs() > 7).any())),
            "some codes are outside −7..7: clamp(round(w / s), −7, 7)"),
]


def _int4_case(gen: torch.Generator, out: int, inp: int, g: int, *,
               dtype: torch.dtype = torch.float32, zero_groups: Sequence[tuple[int, int]] = (),
               outliers: int = 0, negative_max: bool = False, spread: bool = False,
               std: float = 1.0) -> tuple[torch.Tensor, int]:
    w = torch.randn(out, inp, generator=gen, dtype=torch.float64) * std  # (out, in)
    if spread:  # rows of very different magnitudes
        w = w * 10 ** torch.empty(out, 1, dtype=torch.float64).uniform_(-3, 2, generator=gen)
    for _ in range(outliers):  # a few weights 20 to 50 times the rest
        r, c = (int(torch.randint(n, (1,), generator=gen)) for n in (out, inp))
        w[r, c] *= float(torch.empty(1, dtype=torch.float64).uniform_(20, 50, generator=gen))
    groups = w.view(out, inp // g, g)  # (out, G, g) a view: edits reach w
    if negative_max:  # each group's largest magnitude is a negative weight
        top = groups.gather(2, groups.abs().argmax(dim=2, keepdim=True))  # (out, G, 1)
        groups.mul_(-top.sign())
    for r, k in zero_groups:
        groups[r, k] = 0.0
    return w.to(dtype), g


def check_int4_group_quantize(
        fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(w, group_size) -> (q, scale)``, group-wise symmetric int4 quantization of
    ``w`` (out, in): ``q`` (out, in) ``torch.int8`` with the reference's codes −7..7, ``scale``
    (out, in // group_size) in ``w``'s dtype. On an all-zero group any finite positive scale
    is accepted (its codes must be 0), and where w / s falls on a half-step, up to the
    rounding of ``w``'s dtype, either neighbouring code. Cases: a (2, 6) matrix, small and
    realistic matrices, outlier weights, all-zero groups, groups whose largest weight is
    negative, rows of magnitudes from 1e-3 to 1e2, a square matrix, one group per row, and
    float64 and bfloat16 weights.

    Example:
        >>> check_int4_group_quantize(int4_group_quantize)
        ✓ int4_group_quantize: 10 case(s) match the reference
    """
    require_function(fn, "int4_group_quantize", function="my_int4_group_quantize")
    gen = torch.Generator().manual_seed(909)
    cases = [
        (torch.tensor([[0.7, -0.2, 0.0, 0.0, 0.035, -0.01],
                       [0.14, 0.5, -0.9, -0.3, 0.06, 0.02]]), 2),
        _int4_case(gen, 4, 16, 4),
        _int4_case(gen, 8, 64, 16, outliers=3, zero_groups=((2, 1),)),
        _int4_case(gen, 6, 24, 8, negative_max=True),
        _int4_case(gen, 12, 12, 4),  # square: per-column groups would have a shape
        _int4_case(gen, 16, 128, 32, std=0.02, spread=True, outliers=4,
                   zero_groups=((0, 0), (15, 3))),  # GPT-2-like init scale
        _int4_case(gen, 3, 8, 8),  # one group per row
        _int4_case(gen, 5, 32, 8, dtype=torch.float64, negative_max=True, zero_groups=((4, 2),)),
        _int4_case(gen, 8, 64, 32, dtype=torch.bfloat16, outliers=2),
        _int4_case(gen, 4, 16, 4, dtype=torch.bfloat16, spread=True, zero_groups=((1, 3),)),
    ]
    check_cases(fn, int4_group_quantize, cases, name="int4_group_quantize",
                tolerance=(0.0, 1e-6), judged=_int4_judged(fn), mistakes=_INT4_MISTAKES,
                hint=f"groups = {_GROUPS}; amax = groups.abs().amax(dim=2); scale = amax / 7 "
                     "(1 on an all-zero group); q = round(groups / scale[..., None]).clamp(-7, "
                     "7) as int8, reshaped to (out, in); keep the scale in w's dtype")


# ------------------------------------------------------------------------------ max context


def _ctx(*, factor: int = 2, heads: str = "kv", batch: bool = True, bits: bool = False,
         rounding: str = "floor", returns_bytes: bool = False) -> Callable[..., Any]:
    """A variant of :func:`max_context`: without the 2, with n_head, without the batch, in
    bits, rounded otherwise, or returning the bytes of the cache instead of its tokens."""
    def wrong(n_layer: int, n_head: int, n_kv_head: int, head_dim: int, nbytes: int,
              budget: int, b: int) -> Any:
        h = n_kv_head if heads == "kv" else n_head
        per_token = factor * n_layer * h * head_dim * (b if batch else 1) * nbytes \
            * (8 if bits else 1)
        t = {"floor": budget // per_token, "ceil": -(-budget // per_token),
             "round": round(budget / per_token), "divide": budget / per_token}[rounding]
        return t * per_token if returns_bytes else t
    return wrong


def _right_as_float(got: Any, expected: Any, case: Sequence[Any]) -> bool:
    return isinstance(got, float) and got == expected


_CTX_MISTAKES = [
    Mistake(_right_as_float,
            "the right number, as a float: a context is a whole number of tokens, an int "
            "(// instead of /, or int(...) of the floor)"),
    Mistake(_gives(_ctx(rounding="divide")),
            "a float, budget / bytes per token: a context is a whole number of tokens, and "
            "the fraction of a token does not fit. Round down: //"),
    Mistake(_gives(_ctx(rounding="ceil"), _ctx(rounding="round")),
            "rounded up (ceil, or round() on a fraction of ½ or more): that many tokens of "
            "cache take more than the budget (T · bytes per token > budget). The longest "
            "context that fits is rounded down: //"),
    Mistake(_gives(_ctx(heads="q")),
            "too short: the cache was counted with n_head. Under grouped-query attention only "
            "n_kv_head heads of keys and values are cached, each shared by n_head / n_kv_head "
            "query heads: that is what makes GQA's context longer"),
    Mistake(_gives(_ctx(factor=1)),
            "twice too long: each token stores a key AND a value for every cached head and "
            "layer, hence the 2"),
    Mistake(_gives(_ctx(batch=False)),
            "batch times too long: each of the batch's sequences keeps its own cache, so one "
            "more token of context costs batch times the bytes of one sequence's token"),
    Mistake(_gives(_ctx(bits=True)),
            "8 times too short: bytes_per_value is already in bytes (4 for float32, 2 for "
            "bf16), not bits"),
    Mistake(_gives(_ctx(returns_bytes=True)),
            "that is the bytes of the cache at the answer's context: return the number of "
            "tokens, T, itself"),
]


def check_max_context(fn: Callable[[int, int, int, int, int, int, int], int]) -> None:
    """Check ``fn(n_layer, n_head, n_kv_head, head_dim, bytes_per_value, budget_bytes,
    batch)``, the longest context whose KV cache fits the budget, an ``int``: random configs
    with n_kv_head < n_head (grouped-query attention) and one with n_kv_head = n_head,
    batches of 1 and 3 to 16 (never 2 or 8, which would make a forgotten batch look like a
    forgotten 2, or bits), 4, 2 or 1 bytes a value; a budget of exactly T tokens, one byte
    short of it, one short of a single token (0), then Llama-2 70B's and 7B's published
    configs (Touvron et al. 2023) in bf16 with 20 GB for the cache.

    Example:
        >>> check_max_context(max_context)
        ✓ max_context: 11 case(s) match the reference
    """
    require_function(fn, "max_context", function="my_max_context")
    rng = random.Random(909)
    cases = []
    for i in range(6):
        n_kv = rng.choice([1, 2, 4])
        n_head = n_kv * (1 if i == 3 else rng.choice([3, 4, 6]))  # 8 would look like bits
        batch = 1 if i == 4 else rng.choice([3, 4, 5, 6, 7, 9, 12, 16])
        cases.append((rng.randint(2, 48), n_head, n_kv, rng.choice([32, 64, 80, 128]),
                      rng.choice([4, 2, 1]), rng.randint(10**8, 10**11), batch))
    per_token = 2 * 24 * 4 * 64 * 3 * 2  # bytes of a token for (24, 16, 4, 64, 2, ·, 3)
    cases += [(24, 16, 4, 64, 2, 1000 * per_token, 3), (24, 16, 4, 64, 2, 1000 * per_token - 1, 3),
              (24, 16, 4, 64, 2, per_token - 1, 3),
              (80, 64, 8, 128, 2, 20 * 10**9, 8), (32, 32, 32, 128, 2, 20 * 10**9, 8)]
    check_cases(fn, max_context, cases, name="max_context", tolerance=(0, 0),
                mistakes=_CTX_MISTAKES,
                hint="bytes per token = 2 (a key and a value) · n_layer · n_kv_head · "
                     "head_dim · batch · bytes_per_value; T = budget_bytes // that, an int; "
                     "n_head does not enter")


# ------------------------------------------------------------------------------ FLOPs


def _flops(*, factor: int = 6, attention: int = 6, kv: str = "kv", mlp: int = 3,
           output: int = 1, attn_width: str = "d") -> Callable[..., Any]:
    """A variant of :func:`training_flops`: ``factor`` per weight per token, ``attention``
    times L·T·d per token (0: none; 12: the whole square), the key/value width from n_kv_head
    or n_head, ``mlp`` matrices, the V·d matrix counted ``output`` times, the attention term
    over d or over the key/value width."""
    def wrong(n_layer: int, d: int, n_head: int, n_kv_head: int, d_ff: int, v: int, t: int,
              tokens: int) -> float:
        hd = d // n_head
        kv_width = (n_kv_head if kv == "kv" else n_head) * hd
        n = n_layer * (2 * d * d + 2 * d * kv_width + mlp * d * d_ff) + output * v * d
        width = d if attn_width == "d" else n_kv_head * hd
        return float(factor * n * tokens + attention * n_layer * t * width * tokens)
    return wrong


_FLOPS_MISTAKES = [
    Mistake(_gives(_flops(factor=2, attention=2)),
            "that is one forward pass (2N per token): training adds the backward pass, two "
            "products of the same size for each product of the forward (∂L/∂x and ∂L/∂W), so "
            "6N per token, and 3 × the attention term"),
    Mistake(_gives(_flops(factor=2)),
            "the weights count 2 FLOPs per token: that is the forward pass only; training "
            "costs 6 per weight per token (forward 2, backward 4)"),
    Mistake(_gives(_flops(attention=0)),
            "the attention term is missing: the scores q·k and the weighted sum of the values "
            "multiply no weight, yet cost 4·t·d per layer for a token at position t: "
            "6 · n_layer · context · d per token for training"),
    Mistake(_gives(_flops(attention=2)),
            "the attention term is the forward pass's only (2·L·T·d): like the weights, it "
            "costs three times that in training, 6 · n_layer · context · d per token"),
    Mistake(_gives(_flops(attention=12)),
            "the attention term counts the whole context × context square: the convention "
            "here is the causal average, a token at position t attends to t keys, t ≈ "
            "context / 2, so 6 · n_layer · context · d per training token"),
    Mistake(_gives(_flops(kv="q")),
            "W_k and W_v are counted d × d: under grouped-query attention they produce only "
            "n_kv_head heads, d × (n_kv_head · d / n_head) each"),
    Mistake(_gives(_flops(attn_width="kv")),
            "the attention term uses the key/value width: every one of the n_head query heads "
            "still scores all keys, so the term is over d = n_head · head_dim"),
    Mistake(_gives(_flops(mlp=2)),
            "the MLP has two matrices here: a SwiGLU MLP has three, gate and up (d × d_ff) and "
            "down (d_ff × d)"),
    Mistake(_gives(_flops(output=2)),
            "V·d is counted twice: the input embedding is a lookup (a copy, no arithmetic); "
            "only the output layer multiplies, once"),
    Mistake(_gives(_flops(output=0)),
            "the output layer is missing: the d × V matrix that turns the last state into "
            "logits multiplies every token too (the embedding lookup is the one left out)"),
]


def check_training_flops(fn: Callable[..., float]) -> None:
    """Check ``fn(n_layer, d_model, n_head, n_kv_head, d_ff, vocab_size, context, tokens)``,
    the FLOPs to train a Llama-style model (:func:`training_flops` gives the convention), to
    1e-9 relative; an ``int`` or a ``float`` answer. Random configs with and without
    grouped-query attention, then Llama-2 7B and 70B's published configs on 2 trillion tokens
    (Touvron et al. 2023).

    Example:
        >>> check_training_flops(training_flops)
        ✓ training_flops: 8 case(s) match the reference
    """
    require_function(fn, "training_flops", function="my_training_flops")
    rng = random.Random(909)
    cases = []
    for i in range(6):
        n_kv = rng.choice([1, 2, 4])
        n_head = n_kv * (1 if i == 2 else rng.choice([2, 4, 8]))
        d = n_head * rng.choice([16, 32, 64])
        cases.append((rng.randint(1, 24), d, n_head, n_kv, rng.choice([2, 3, 4]) * d + 8 * i,
                      rng.randint(100, 50_000), rng.choice([64, 256, 1024, 2048]),
                      rng.randint(10**6, 10**10)))
    cases += [(32, 4096, 32, 32, 11008, 32000, 4096, 2 * 10**12),
              (80, 8192, 64, 8, 28672, 32000, 4096, 2 * 10**12)]
    check_cases(fn, training_flops, cases, name="training_flops", tolerance=(0.0, 1e-9),
                mistakes=_FLOPS_MISTAKES,
                hint="N = n_layer · (2d² + 2·d·n_kv_head·head_dim + 3·d·d_ff) + V·d, then "
                     "6 · N · tokens + 6 · n_layer · context · d · tokens")
