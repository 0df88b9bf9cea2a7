"""Chapter 10 exercises: the modern block's pieces, applied where the chapter did not take them.

- :func:`check_rms_norm`: RMSNorm that survives float16 (the mean of squares in float32, the
  result in the input's dtype), as Llama's code does;
- :func:`check_swiglu_width`: the SwiGLU MLP's hidden width at the parameters of a 4·d GELU
  MLP, rounded up to a multiple as Llama's code does (an ``int``);
- :func:`check_rope_at`: RoPE at given positions (the new tokens of cached decoding sit after
  the cache, not at 0), in the "rotate half" layout;
- :func:`check_gqa_attention`: causal grouped-query attention with the queries grouped, equal
  to attention over keys and values repeated with ``repeat_interleave``.

Each checker runs the learner's function on fresh cases from its own seeded generator (the
notebook's random state is untouched) and compares with the reference below, dtype and type
included. When a case differs, the checker also tries the usual mistakes on it, and when one
of them gives the learner's answer the hint names it. The references use torch primitives
only; ``tests/test_checks_ch10.py`` checks them against code no one here wrote
(``torch.nn.RMSNorm``, ``transformers``' ``LlamaRMSNorm``, ``LlamaRotaryEmbedding`` with
``apply_rotary_pos_emb``, ``repeat_kv`` with ``scaled_dot_product_attention``, the widths of
the published Llama configs), and that the usual mistakes fail.

Example:
    >>> check_swiglu_width(swiglu_width)
    ✓ swiglu_width: 13 case(s) match the reference
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmcourse.checks import Mistake, check_cases, clone_args, require_function

__all__ = [
    "rms_norm", "swiglu_width", "rope_at", "gqa_attention",
    "check_rms_norm", "check_swiglu_width", "check_rope_at", "check_gqa_attention",
]

_HALF = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------ the solutions


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm (Zhang & Sennrich 2019) over the last axis of ``x`` (..., d), Llama's way:

        y = x / √(mean(x²) + ε) · γ

    with the mean of squares taken in float32 when ``x`` is float16 or bfloat16 (in x's own
    dtype when it is float32 or float64), the normalised x cast back to x's dtype, then scaled
    by ``weight`` (d,), which has x's dtype. In float16, x² overflows (inf) from |x| = 256 on,
    since 256² = 65536 exceeds the largest float16, 65504.

    Example:
        >>> x = torch.tensor([[3.0, -4.0], [300.0, 400.0]], dtype=torch.float16)
        >>> rms_norm(x, torch.ones(2, dtype=torch.float16))
        tensor([[ 0.8486, -1.1318],
                [ 0.8486,  1.1318]], dtype=torch.float16)
    """
    wide = x.to(torch.promote_types(x.dtype, torch.float32))  # (..., d) float32 or float64
    inv_rms = torch.rsqrt(wide.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1)
    return weight * (wide * inv_rms).to(x.dtype)  # (..., d) in x's dtype


def swiglu_width(d_model: int, multiple_of: int, ffn_dim_multiplier: float = 1.0) -> int:
    """The hidden width of a SwiGLU MLP as Meta's Llama code chooses it.

    A GELU MLP of width 4d has 2 · d · 4d weights; SwiGLU has three matrices (gate, up,
    down), so at the same count 3 · d · d_ff = 8d², d_ff = (2/3) · 4d. Llama's code truncates
    that to an int, scales it by ``ffn_dim_multiplier`` (truncating again), then rounds up to
    a multiple of ``multiple_of`` (matrix shapes the hardware likes):

        h = ⌊2 · 4d / 3⌋,   h = ⌊m · h⌋,   d_ff = multiple_of · ⌈h / multiple_of⌉

    Example:
        >>> swiglu_width(4096, 256)          # LLaMA 7B's intermediate_size
        11008
        >>> swiglu_width(4096, 1024, 1.3)    # Llama 3 8B's
        14336
    """
    hidden = int(2 * (4 * d_model) / 3)  # equal parameters to a 4·d GELU MLP
    hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)  # round up


def rope_at(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """RoPE (Su et al. 2021) for queries or keys ``x`` (..., T, hd) at ``positions`` (T,),
    int64, in the "rotate half" layout (Llama in ``transformers``): feature i pairs with
    i + hd/2, and at position p pair i turns by angle p · θ_i, θ_i = base^(−2i/hd):

        (a, b) → (a cos − b sin, a sin + b cos)

    The angles are taken in float64 and the tables cast to x's dtype.

    Example:
        >>> rope_at(torch.tensor([[1.0, 0.0]]), torch.tensor([3]))  # turned by 3 radians
        tensor([[-0.9900,  0.1411]])
    """
    hd = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)  # (hd/2,) θ_i
    angle = positions.to(torch.float64)[:, None] * inv_freq  # (T, hd/2)
    angle = torch.cat([angle, angle], dim=-1)  # (T, hd): pair i is features i and i + hd/2
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)  # (T, hd) each
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hd/2) each
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin  # (..., T, hd)


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal grouped-query attention (Ainslie et al. 2023) without copying keys or values.

    ``q`` (B, H, T, hd); ``k``, ``v`` (B, H_kv, T, hd) with H_kv dividing H. Query head h
    reads key/value head h // g, g = H / H_kv (``repeat_interleave``'s order, as in
    ``transformers``' ``repeat_kv``). The queries are viewed as (B, H_kv, g, T, hd), so each
    group meets its one key/value head by broadcasting:

        out = softmax(Q Kᵀ / √hd + causal mask) V,   returned as (B, H, T, hd)

    Example:
        >>> q, k, v = torch.ones(1, 4, 3, 2), torch.ones(1, 2, 3, 2), torch.ones(1, 2, 3, 2)
        >>> gqa_attention(q, k, v).shape
        torch.Size([1, 4, 3, 2])
    """
    b, h, t, hd = q.shape
    h_kv = k.shape[1]
    qg = q.reshape(b, h_kv, h // h_kv, t, hd)  # (B, H_kv, g, T, hd): head h -> group h // g
    scores = qg @ k.unsqueeze(2).transpose(-2, -1) / math.sqrt(hd)  # (B, H_kv, g, T, T)
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)  # (T, T) key > query
    weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)  # (B, H_kv, g, T, T)
    return (weights @ v.unsqueeze(2)).reshape(b, h, t, hd)  # (B, H, T, hd)


# ------------------------------------------------------------------------------ the machinery


def _close(a: Any, b: Any, tol: float = 1e-3) -> bool:
    """Same values, dtype aside (NaN equal to NaN); numbers exactly."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.isclose(
            a.detach().double(), b.detach().double(), atol=tol, rtol=tol, equal_nan=True).all())
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return a == b
    return False


def _gives(wrong: Callable[..., Any], hint: str) -> Mistake:
    """A mistake recognised by its values: ``wrong(*case)`` has the learner's values and not
    the reference's (on a case where the mistake shows)."""
    def fits(got: Any, expected: Any, case: Sequence[Any]) -> bool:
        mistaken = wrong(*clone_args(case))
        return not _close(mistaken, expected) and _close(got, mistaken)
    return Mistake(fits, hint)


def _dtype(test: Callable[[torch.dtype, torch.dtype], bool], hint: str) -> Mistake:
    """A mistake recognised by the result's dtype compared with the input's (the case's first
    tensor)."""
    def fits(got: Any, expected: Any, case: Sequence[Any]) -> bool:
        return isinstance(got, torch.Tensor) and test(got.dtype, case[0].dtype)
    return Mistake(fits, hint)


def _by_dtype(case: Sequence[Any]) -> tuple[float, float]:
    """(atol, rtol) for a case, by its first tensor's dtype: float16/bfloat16 to a rounding or
    two (1e-2), float32 to 1e-5, float64 to 1e-9."""
    dtype = case[0].dtype
    tol = 1e-2 if dtype in _HALF else 1e-9 if dtype == torch.float64 else 1e-5
    return tol, tol


# ------------------------------------------------------------------------------ RMSNorm


def _rms(center: bool = False, square: str = "mean", eps: str = "inside", weight: bool = True,
         upcast: bool = True, dim: int | None = -1) -> Callable[..., Any]:
    """A variant of :func:`rms_norm`: centred (LayerNorm's), a sum of squares instead of the
    mean (the vector's norm) or the variance (biased or not), ε added after the root or not
    at all, no weight, no float32 for half inputs, another axis (None: all of them)."""
    def wrong(x: torch.Tensor, w: torch.Tensor, epsilon: float) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32)) if upcast else x
        dims = tuple(range(x.dim())) if dim is None else (dim,)
        if center:
            wide = wide - wide.mean(dim=dims, keepdim=True)
        ms = {"mean": lambda: wide.pow(2).mean(dim=dims, keepdim=True),
              "sum": lambda: wide.pow(2).sum(dim=dims, keepdim=True),
              "var": lambda: wide.var(dim=dims, keepdim=True, unbiased=False),
              "unbiased": lambda: wide.var(dim=dims, keepdim=True)}[square]()
        y = (wide * torch.rsqrt(ms + epsilon) if eps == "inside" else
             wide / (ms.sqrt() + epsilon) if eps == "outside" else wide / ms.sqrt())
        y = y.to(x.dtype)
        return w * y if weight else y
    return wrong


_VARIANCE = ("x is divided by its standard deviation, √var(x), which subtracts the mean "
             "inside: RMSNorm divides by the root of the mean of the squares, "
             "√(mean(x²) + ε), with no mean taken out anywhere")
_RMS_MISTAKES = [
    _dtype(lambda got, x: got != x and x in _HALF,
           "the result is not in x's dtype: take the mean of squares in float32, then cast the "
           "normalised x back with .to(x.dtype) before the weight"),
    _dtype(lambda got, x: got != x,
           "keep x's dtype: float32 in, float32 out; float64 in, float64 out"),
    _gives(_rms(upcast=False),
           "rows with a large feature came out as 0 (or inf/NaN): in float16, x² overflows "
           "to inf from |x| = 256 on (the largest float16 is 65504), and x / √inf = 0. Take "
           "the mean of squares in float32 (x.float()), then cast back to x.dtype"),
    Mistake(lambda got, exp, case: (case[0].dtype == torch.float64 and isinstance(got,
            torch.Tensor) and got.dtype == torch.float64 and _close(got, exp, 1e-5)),
            "right to about float32's precision only: for float64 input keep float64 "
            "(upcast float16/bfloat16 to float32, never float64 down: x.float() casts down)"),
    _gives(_rms(center=True),
           "the mean is subtracted: that is LayerNorm. RMSNorm does not centre: it divides x "
           "by √(mean(x²) + ε), the root of the mean of the squares"),
    _gives(_rms(square="var"), _VARIANCE),
    _gives(_rms(square="unbiased"), _VARIANCE),
    _gives(_rms(square="sum"),
           "a sum of squares instead of their mean (x / ‖x‖): that makes the mean square of "
           "the result 1/d. The RMS is √(mean(x²)) = ‖x‖ / √d"),
    _gives(_rms(eps="none"),
           "ε is missing: a row of zeros (padding, say) gives 0 / √0 = NaN, and a row of tiny "
           "values is blown up; divide by √(mean(x²) + ε)"),
    _gives(_rms(eps="outside"),
           "ε is added after the square root: Llama (and torch.nn.RMSNorm) add it inside, "
           "x / √(mean(x²) + ε); it matters on rows of small values, where mean(x²) ≈ ε"),
    _gives(_rms(weight=False),
           "the weight γ is missing: multiply the normalised x by weight (one gain per feature)"),
    _gives(_rms(dim=0),
           "the mean runs over the wrong axis: RMSNorm normalises each vector over its d "
           "features, the last axis: mean(dim=-1, keepdim=True)"),
    _gives(_rms(dim=None),
           "one mean over the whole tensor: RMSNorm normalises each vector on its own, over "
           "the last axis: mean(dim=-1, keepdim=True)"),
]


def _rms_case(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, eps: float, *,
              offset: float = 0.0, massive: bool = False, small_row: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, float]:
    x = torch.randn(*shape, generator=gen) + offset  # (..., d)
    if massive:  # a few features in the hundreds and thousands, as in trained LLMs
        rows = x.reshape(-1, shape[-1])  # (N, d), a view
        rows[::2, 3] = torch.empty(rows[::2].shape[0]).uniform_(300, 3000, generator=gen)
        rows[1::3, -5] = -torch.empty(rows[1::3].shape[0]).uniform_(260, 900, generator=gen)
    if small_row:  # a row where mean(x²) ≈ ε, and a row of zeros (padding)
        rows = x.reshape(-1, shape[-1])
        rows[0] *= 3e-3
        rows[-1] = 0.0
    weight = 0.5 + torch.rand(shape[-1], generator=gen)  # (d,) gains around 1
    return x.to(dtype), weight.to(dtype), eps


def check_rms_norm(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(x, weight, eps)``, RMSNorm over x's last axis computed Llama's way (the mean
    of squares in float32 for float16/bfloat16 inputs), result in x's dtype. Cases: float32
    (rows far from mean 0, a row whose mean square is about ε, a row of zeros), float64,
    float16 with features in the hundreds and thousands, bfloat16. Half precision is held to
    1e-2 (a rounding or two: multiplying by the weight before or after the cast back both
    pass), float32 to 1e-5, float64 to 1e-9.

    Example:
        >>> check_rms_norm(rms_norm)
        ✓ rms_norm: 7 case(s) match the reference
    """
    require_function(fn, "rms_norm", function="my_rms_norm")
    gen = torch.Generator().manual_seed(1010)
    cases = [
        _rms_case(gen, (4, 8), torch.float32, 1e-6),
        _rms_case(gen, (3, 16), torch.float32, 1e-5, offset=3.0),
        _rms_case(gen, (2, 5, 64), torch.float32, 1e-5, small_row=True),
        _rms_case(gen, (3, 7, 32), torch.float64, 1e-6, offset=-1.0),
        _rms_case(gen, (2, 4, 128), torch.float16, 1e-5, massive=True),
        _rms_case(gen, (2, 3, 96), torch.bfloat16, 1e-5, massive=True),
        _rms_case(gen, (5, 48), torch.float16, 1e-6),
    ]
    check_cases(fn, rms_norm, cases, name="rms_norm", mistakes=_RMS_MISTAKES,
                tolerance=_by_dtype,
                hint="wide = x.float() for float16/bfloat16 (else x); y = wide * torch.rsqrt("
                     "wide.pow(2).mean(dim=-1, keepdim=True) + eps); return weight * "
                     "y.to(x.dtype)")


# ------------------------------------------------------------------------------ SwiGLU width


def _width(two_thirds: float = 2 / 3, four: int = 4, first: str = "floor", mult: str = "before",
           rounding: str = "up") -> Callable[..., Any]:
    """A variant of :func:`swiglu_width`: another factor than 2/3 of 4d, ceil instead of
    floor first, the multiplier ignored or applied after rounding, rounding to the nearest
    multiple, down, one multiple too many, or not at all."""
    def wrong(d: int, m: int, multiplier: float) -> Any:
        exact = two_thirds * four * d
        h = math.ceil(exact) if first == "ceil" else int(exact)
        if mult == "before":
            h = int(multiplier * h)
        if rounding == "up":
            h = m * ((h + m - 1) // m)
        elif rounding == "nearest":
            h = m * round(h / m)
        elif rounding == "down":
            h = m * (h // m)
        elif rounding == "one more":
            h = m * (h // m + 1)
        return int(multiplier * h) if mult == "after" else h
    return wrong


_ROUND_UP = "round up: multiple_of * ((h + multiple_of - 1) // multiple_of)"
_WIDTH_MISTAKES = [
    Mistake(lambda got, exp, case: isinstance(got, float) and got == exp,
            "the right width, as a float: a width is an int (int(...), and // instead of /)"),
    _gives(_width(two_thirds=1.0),
           "that is the width of the 4·d GELU MLP: a SwiGLU MLP has three matrices instead of "
           "two, so at equal parameters 3 · d · d_ff = 2 · d · 4d and d_ff = (2/3) · 4d"),
    _gives(_width(two_thirds=3 / 2),
           "3/2 instead of 2/3: three matrices instead of two means a narrower MLP, "
           "d_ff = (2/3) · 4d, not a wider one"),
    _gives(_width(four=1),
           "2/3 of d_model: it is 2/3 of the GELU MLP's width 4·d_model, i.e. 8d/3"),
    _gives(_width(rounding="none"),
           "the width is not a multiple of multiple_of: after h = int(ffn_dim_multiplier * h), "
           f"{_ROUND_UP}"),
    _gives(_width(rounding="nearest"),
           f"rounded to the nearest multiple: Llama rounds up (never below h); {_ROUND_UP}"),
    _gives(_width(rounding="down"),
           f"rounded down to a multiple: Llama rounds up (never below h); {_ROUND_UP}"),
    _gives(_width(first="ceil"),
           "2 · 4d / 3 is rounded up at first: Llama's code truncates it, h = int(2 * 4 * d / "
           "3), and rounds up only at the end, to the multiple"),
    _gives(_width(rounding="one more"),
           "one multiple too many when h is already a multiple: (h // m + 1) * m overshoots; "
           f"{_ROUND_UP}"),
    _gives(_width(mult="ignored"),
           "ffn_dim_multiplier is ignored: h = int(ffn_dim_multiplier * h) before rounding up"),
    _gives(_width(mult="after"),
           "the multiplier is applied after rounding: the result is then no multiple of "
           "multiple_of. Multiply h first (h = int(ffn_dim_multiplier * h)), round up last"),
]


def check_swiglu_width(fn: Callable[[int, int, float], int]) -> None:
    """Check ``fn(d_model, multiple_of, ffn_dim_multiplier)``, a SwiGLU MLP's hidden width
    chosen as Llama's code does, an ``int``: small widths (multiple_of 1, an h that already
    is a multiple, remainders below and above half a multiple, a multiplier of 1.3), then the
    published widths of LLaMA 7B, 13B, 33B, 65B, Llama 2 70B and Llama 3 8B and 405B.

    Example:
        >>> check_swiglu_width(swiglu_width)
        ✓ swiglu_width: 13 case(s) match the reference
    """
    require_function(fn, "swiglu_width", function="my_swiglu_width")
    rng = random.Random(1010)
    cases: list[tuple[int, int, float]] = [
        (96, 64, 1.0),    # 256 is already a multiple
        (64, 1, 1.0),     # 170.67: floor, not ceil
        (200, 32, 1.0),   # 533 = 16.7 multiples: up, not down
        (1000, 256, 1.0),  # 2666 = 10.4 multiples: up, not nearest
        (640, 96, 1.3),   # the multiplier before the rounding
    ]
    cases += [(8 * rng.randint(16, 400), rng.choice([8, 32, 128]), 1.0)]
    cases += [(4096, 256, 1.0), (5120, 256, 1.0), (6656, 256, 1.0), (8192, 256, 1.0),
              (8192, 4096, 1.3), (4096, 1024, 1.3), (16384, 4096, 1.2)]
    check_cases(fn, swiglu_width, cases, name="swiglu_width", mistakes=_WIDTH_MISTAKES,
                tolerance=(0.0, 0.0),
                hint="h = int(2 * 4 * d_model / 3); h = int(ffn_dim_multiplier * h); then "
                     + _ROUND_UP)


# ------------------------------------------------------------------------------ RoPE


def _rope(positions: Callable[[torch.Tensor], torch.Tensor] = lambda p: p, *, power: int = 2,
          layout: str = "half", freqs: str = "cat", sign: int = 1,
          base: float | None = None) -> Callable[..., Any]:
    """A variant of :func:`rope_at`: other positions, θ_i = base^(−power·i/hd), neighbouring
    pairs, the frequencies repeated pairwise under the half layout, turned backwards, or a
    fixed base."""
    def wrong(x: torch.Tensor, pos: torch.Tensor, b: float = 10000.0) -> torch.Tensor:
        hd = x.shape[-1]
        inv_freq = (base or b) ** (-power * torch.arange(hd // 2, dtype=torch.float64) / hd)
        angle = positions(pos).to(torch.float64)[:, None] * inv_freq  # (T, hd/2)
        if layout == "pairs":  # (2i, 2i + 1) turned by θ_i
            c, s = angle.cos().to(x.dtype), sign * angle.sin().to(x.dtype)
            a, bb = x[..., 0::2], x[..., 1::2]
            return torch.stack([a * c - bb * s, a * s + bb * c], dim=-1).flatten(-2)
        angle = (torch.cat([angle, angle], dim=-1) if freqs == "cat"
                 else angle.repeat_interleave(2, dim=-1))  # (T, hd)
        x1, x2 = x.chunk(2, dim=-1)
        return (x * angle.cos().to(x.dtype)
                + torch.cat([-x2, x1], dim=-1) * sign * angle.sin().to(x.dtype))
    return wrong


def _consecutive(p: torch.Tensor) -> torch.Tensor:
    return p[0] + torch.arange(len(p))


_ROPE_MISTAKES = [
    _dtype(lambda got, x: got != x, "keep x's dtype: cast the cos/sin tables to x.dtype"),
    _gives(_rope(_consecutive),
           "positions are not always consecutive: token t turns by positions[t] · θ_i, "
           "whatever the others are (not positions[0] + t)"),
    _gives(_rope(lambda p: torch.arange(len(p))),
           "the tokens are turned as if at positions 0, 1, …, T−1: use `positions`. A new "
           "token after a cache of 37 sits at position 37, and its query must turn by 37·θ_i "
           "to match the keys the cache holds, already turned at their own positions"),
    _gives(_rope(lambda p: p + 1),
           "positions one too far: position p turns by p · θ_i, and positions count from 0"),
    _gives(_rope(lambda p: p - 1), "positions one too few: position p turns by p · θ_i"),
    _gives(_rope(sign=-1),
           "the pairs turn backwards (a sine of the wrong sign): (a, b) → (a cos − b sin, "
           "a sin + b cos), i.e. x · cos + rotate_half(x) · sin with rotate_half(x) = "
           "cat(−x2, x1)"),
    _gives(_rope(layout="pairs"),
           "neighbouring features (2i, 2i+1) are paired: that is the interleaved layout. Here "
           "(Llama in transformers) feature i pairs with i + hd/2: x1, x2 = x.chunk(2, dim=-1)"),
    _gives(_rope(freqs="interleave"),
           "the frequencies are repeated pairwise (θ0, θ0, θ1, θ1, …): with pairs (i, i + hd/2) "
           "the table is cat([angle, angle], dim=-1), so that features i and i + hd/2 share θ_i"),
    _gives(_rope(power=1),
           "θ_i = base^(−i/hd): the exponent is −2i/hd (torch.arange(0, hd, 2) / hd), so that "
           "the slowest pair turns by about 1/base per position"),
    _gives(_rope(base=10000.0),
           "the base is fixed at 10000: use the `base` argument (Llama 3 uses 500000)"),
]


def check_rope_at(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> None:
    """Check ``fn(x, positions, base)``: x (..., T, hd) turned by RoPE at ``positions`` (T,)
    int64, in the rotate-half layout, in x's dtype. Cases: one new token after a cache, a
    chunk after a cache, positions from 0, positions that are not consecutive, bases 10000,
    500000 (Llama 3) and 100, head sizes 2 to 128, 3-D and 4-D x, float64. The tolerance,
    1e-3, admits angles taken in float32 at positions near 1000 (as ``transformers`` does),
    nothing more: every usual mistake is off by far more.

    Example:
        >>> check_rope_at(rope_at)
        ✓ rope_at: 7 case(s) match the reference
    """
    require_function(fn, "rope_at", function="my_rope_at")
    gen = torch.Generator().manual_seed(1010)
    specs = [  # x's shape, positions, base, dtype
        ((1, 2, 1, 8), [37], 10000.0, torch.float32),  # one new token after a cache of 37
        ((2, 3, 4, 16), list(range(100, 104)), 10000.0, torch.float32),  # a chunk after 100
        ((1, 2, 5, 32), list(range(5)), 10000.0, torch.float32),  # a prompt, from 0
        ((2, 2, 3, 128), list(range(1021, 1024)), 500000.0, torch.float32),
        ((1, 1, 6, 8), [0, 1, 2, 5, 9, 20], 10000.0, torch.float32),  # not consecutive
        ((3, 2, 2), [7, 8], 100.0, torch.float32),  # (H, T, hd), head size 2
        ((2, 2, 3, 16), [40, 41, 42], 10000.0, torch.float64),
    ]
    cases = [(torch.randn(*shape, generator=gen, dtype=dtype), torch.tensor(pos), base)
             for shape, pos, base, dtype in specs]
    check_cases(fn, rope_at, cases, name="rope_at", mistakes=_ROPE_MISTAKES,
                tolerance=(1e-3, 1e-3),
                hint="θ_i = base ** (−torch.arange(0, hd, 2) / hd); angle = positions[:, None] "
                     "* θ (T, hd/2), then cat([angle, angle], dim=-1); x1, x2 = x.chunk(2, "
                     "dim=-1); x * cos + cat([−x2, x1], dim=-1) * sin, cos and sin in x's dtype")


# ------------------------------------------------------------------------------ GQA


def _gqa(order: str = "interleave", mask: str = "causal", scale: str = "hd",
         softmax_dim: int = -1) -> Callable[..., Any]:
    """A variant of :func:`gqa_attention` written the long way (keys and values repeated):
    heads repeated as ``repeat`` does (h % H_kv), no mask, the diagonal masked too, the past
    masked instead of the future, another scale (none, hd, H·hd), softmax over the queries."""
    def wrong(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, t, hd = q.shape
        g = h // k.shape[1]
        if order == "interleave":
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        else:
            k, v = k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)  # (B, H, T, hd)
        div = {"hd": math.sqrt(hd), "none": 1.0, "hd1": float(hd), "d": math.sqrt(h * hd)}
        scores = q @ k.transpose(-2, -1) / div[scale]  # (B, H, T, T)
        ones = torch.ones(t, t, dtype=torch.bool)
        hidden = {"causal": ones.triu(1), "none": ~ones, "strict": ones.triu(0),
                  "past": ones.tril(-1)}[mask]
        return scores.masked_fill(hidden, float("-inf")).softmax(dim=softmax_dim) @ v
    return wrong


def _shape_hint(got: Any, expected: Any, case: Sequence[Any]) -> bool:
    return isinstance(got, torch.Tensor) and got.shape != expected.shape


_GQA_MISTAKES = [
    Mistake(_shape_hint,
            "the result must be (B, H, T, hd), one output per query head: with the queries "
            "viewed as (B, H_kv, g, T, hd), reshape the output back to (B, H, T, hd)"),
    _dtype(lambda got, x: got != x,
           "keep q's dtype: float32 in, float32 out; float64 in, float64 out"),
    _gives(_gqa(order="repeat"),
           "query head h reads key/value head h % H_kv: that is .repeat's order. Query heads "
           "come in groups of g = H / H_kv consecutive heads sharing one key/value head, head "
           "h reads h // g (repeat_interleave's order; transformers' repeat_kv): view q as "
           "(B, H_kv, g, T, hd), not (B, g, H_kv, T, hd)"),
    _gives(_gqa(mask="none"),
           "no causal mask: position i may attend to keys 0..i only; fill the scores above "
           "the diagonal with −inf before the softmax"),
    _gives(_gqa(mask="strict"),
           "the diagonal is masked too: a position attends to itself (keys 0..i), so mask "
           "only j > i (torch.ones(T, T, dtype=torch.bool).triu(1)); otherwise the first "
           "row has no key left, and softmax of only −inf is NaN"),
    _gives(_gqa(mask="past"),
           "the past is masked instead of the future: hide the keys j > i (triu(1)), keep "
           "j ≤ i"),
    _gives(_gqa(scale="none"), "the scores are not scaled: divide QKᵀ by √hd"),
    _gives(_gqa(scale="hd1"), "the scores are divided by hd: divide by √hd"),
    _gives(_gqa(scale="d"),
           "the scores are divided by √(H·hd), the model width: each head scales by its own "
           "size, √hd"),
    _gives(_gqa(softmax_dim=-2),
           "the softmax runs over the queries: each query's weights over the keys sum to 1, "
           "softmax(dim=-1)"),
]


def check_gqa_attention(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
                        ) -> None:
    """Check ``fn(q, k, v)``: causal grouped-query attention, q (B, H, T, hd), k and v
    (B, H_kv, T, hd), result (B, H, T, hd) in q's dtype. Cases: multi-query (H_kv = 1),
    groups of 2 and 4 with 2 and 3 key/value heads, H_kv = H (plain multi-head), one token,
    float64. float32 is held to 1e-5, float64 to 1e-9.

    Example:
        >>> check_gqa_attention(gqa_attention)
        ✓ gqa_attention: 7 case(s) match the reference
    """
    require_function(fn, "gqa_attention", function="my_gqa_attention")
    gen = torch.Generator().manual_seed(1010)
    specs = [  # B, H, H_kv, T, hd, dtype
        (1, 2, 1, 3, 4, torch.float32),  # multi-query attention
        (2, 4, 2, 5, 8, torch.float32),
        (1, 8, 2, 7, 16, torch.float32),  # groups of 4
        (2, 6, 3, 4, 8, torch.float32),  # 3 key/value heads, groups of 2
        (1, 4, 4, 6, 8, torch.float32),  # H_kv = H: multi-head attention
        (3, 4, 2, 1, 8, torch.float32),  # one token
        (2, 6, 2, 5, 8, torch.float64),
    ]
    cases = [(torch.randn(b, h, t, hd, generator=gen, dtype=dtype),
              torch.randn(b, h_kv, t, hd, generator=gen, dtype=dtype),
              torch.randn(b, h_kv, t, hd, generator=gen, dtype=dtype))
             for b, h, h_kv, t, hd, dtype in specs]
    check_cases(fn, gqa_attention, cases, name="gqa_attention", mistakes=_GQA_MISTAKES,
                tolerance=_by_dtype,
                hint="qg = q.reshape(B, H_kv, g, T, hd); scores = qg @ "
                     "k.unsqueeze(2).transpose(-2, -1) / √hd; −inf above the diagonal; "
                     "softmax(dim=-1) @ v.unsqueeze(2); reshape to (B, H, T, hd)")
