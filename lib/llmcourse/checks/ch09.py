"""Chapter 09 exercises: the size and compute of a model, applied where the chapter did not go.

- :func:`check_int8_quantize`: per-output-channel symmetric int8 quantization of a weight
  matrix (one scale per row), an all-zero row included;
- :func:`check_kv_cache_bytes`: the KV cache's bytes for a model with grouped-query attention
  (fewer key/value heads than query heads);
- :func:`check_training_flops`: the FLOPs to train a Llama-style model (SwiGLU MLP, GQA,
  untied output layer) on a number of tokens, ≈ 6N per token plus the attention term.

Each checker runs the learner's function on fresh cases from its own seeded generator (the
notebook's random state is untouched) and compares with the reference below, dtype and type
included (int8 codes, a scale in the weights' dtype, an ``int`` byte count). When a case
differs, the checker also tries the usual mistakes on it, and when one of them gives the
learner's answer the hint names it. The references are checked against code no one here wrote
in ``tests/test_checks_ch09.py`` (``torch.quantize_per_channel``, the bytes of the course's
``KVCache``, ``FlopCounterMode`` over ``transformers``' ``LlamaForCausalLM``), which also checks
that the usual mistakes fail.

Example:
    >>> check_kv_cache_bytes(kv_cache_bytes)
    ✓ kv_cache_bytes: 8 case(s) match the reference
"""

from __future__ import annotations

import contextlib
import io
import math
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from llmcourse.checks import CheckFailed, compare, require_function

__all__ = [
    "int8_quantize", "kv_cache_bytes", "training_flops",
    "check_int8_quantize", "check_kv_cache_bytes", "check_training_flops",
]


# ------------------------------------------------------------------------------ the solutions


def int8_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization of a weight matrix ``w`` (out, in), one scale per output
    row (per channel):

        scale_r = max_j |w_rj| / 127,     q_rj = clamp(round(w_rj / scale_r), −127, 127)

    so that ``q * scale`` ≈ ``w``, off by at most scale_r / 2 in row r. Returns ``q`` (out, in)
    ``torch.int8`` and ``scale`` (out, 1) in ``w``'s dtype. An all-zero row gets scale 1 (any
    positive scale would do: its codes are 0), never 0, whose division gives 0/0 = NaN.

    Example:
        >>> q, scale = int8_quantize(torch.tensor([[0.5, -1.27, 0.01], [0.0, 0.0, 0.0]]))
        >>> q
        tensor([[  50, -127,    1],
                [   0,    0,    0]], dtype=torch.int8)
        >>> scale
        tensor([[0.0100],
                [1.0000]])
    """
    amax = w.abs().amax(dim=1, keepdim=True)  # (out, 1) largest magnitude of each row
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))  # (out, 1)
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)  # (out, in)
    return q, scale


def kv_cache_bytes(n_layer: int, n_head: int, n_kv_head: int, head_dim: int, seq_len: int,
                   batch: int, bytes_per_value: int) -> int:
    """Bytes of the keys and values a model caches for ``batch`` sequences of ``seq_len``
    tokens:

        2 · n_layer · n_kv_head · head_dim · seq_len · batch · bytes_per_value

    a key and a value (the 2) per key/value head, per layer, per token. ``n_head`` does not
    enter: under grouped-query attention the n_head query heads share n_kv_head cached heads.

    Example:
        >>> kv_cache_bytes(80, 64, 8, 128, 4096, 1, 2) / 2**30   # Llama-2 70B, bf16, GiB
        1.25
    """
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * bytes_per_value


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


class _Mistake(NamedTuple):
    """A usual mistake: whether the learner's answer on a case is this mistake's, and the
    hint that names it."""

    fits: Callable[[Any, Sequence[Any]], bool]
    hint: str


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


def _gives(wrong: Callable[..., Any]) -> Callable[[Any, Sequence[Any]], bool]:
    """A mistake recognised by its result: the learner's answer equals ``wrong(*case)``."""
    def fits(got: Any, case: Sequence[Any]) -> bool:
        with contextlib.suppress(Exception):
            return _same(got, wrong(*case))
        return False
    return fits


def _check(fn: Callable[..., Any], reference: Callable[..., Any],
           cases: Sequence[Sequence[Any]], *, name: str, hint: str,
           mistakes: Sequence[_Mistake], atol: float = 0.0, rtol: float = 1e-9,
           learner: Callable[..., Any] | None = None) -> None:
    """:func:`~llmcourse.checks.compare` case by case, the hint of the usual mistake that
    gives the learner's answer when one does, then one pass line. ``learner`` (default
    ``fn``) is what is compared, when the learner's answer needs adapting first."""
    learner = fn if learner is None else learner
    for number, case in enumerate(cases, 1):
        specific = None
        with contextlib.suppress(Exception):
            got = learner(*[a.clone() if isinstance(a, torch.Tensor) else a for a in case])
            specific = next((m.hint for m in mistakes if m.fits(got, case)), None)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # one pass line, below
                compare(learner, reference, [case], name=name, atol=atol, rtol=rtol,
                        hint=specific or hint)
        except CheckFailed as err:
            message = str(err).replace(": case 1 differs:", f": case {number} differs:", 1)
            raise CheckFailed(message) from err.__cause__
    print(f"✓ {name}: {len(cases)} case(s) match the reference")


# ------------------------------------------------------------------------------ int8


def _zero_rows_any_positive_scale(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The learner's function, its answer adapted: on an all-zero row whose codes are all 0,
    any finite positive scale is as good as the reference's 1, so it is read as 1."""
    def learner(w: torch.Tensor) -> Any:
        zero = (w == 0).all(dim=1, keepdim=True)  # (out, 1) before fn could change w
        out = fn(w)
        if not (isinstance(out, (tuple, list)) and len(out) == 2
                and all(isinstance(t, torch.Tensor) for t in out)):
            return out
        q, scale = out
        if q.shape != w.shape or scale.shape != zero.shape or not zero.any():
            return out
        fine = zero & (q == 0).all(dim=1, keepdim=True) & torch.isfinite(scale) & (scale > 0)
        return q, torch.where(fine, torch.ones_like(scale), scale)
    return learner


def _q_then(w: torch.Tensor, scale: torch.Tensor, codes: Callable[[torch.Tensor], torch.Tensor]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    return codes(w / scale), scale


def _scale_of(w: torch.Tensor, amax: torch.Tensor, divisor: float = 127) -> torch.Tensor:
    return torch.where(amax > 0, amax / divisor, torch.ones_like(amax))


def _int8_wrong_divisor(divisor: float) -> Callable[[torch.Tensor], Any]:
    def wrong(w: torch.Tensor) -> Any:
        s = _scale_of(w, w.abs().amax(dim=1, keepdim=True), divisor)
        return _q_then(w, s, lambda x: x.round().clamp(-127, 127).to(torch.int8))
    return wrong


def _int8_wrong_codes(codes: Callable[[torch.Tensor], torch.Tensor]
                      ) -> Callable[[torch.Tensor], Any]:
    def wrong(w: torch.Tensor) -> Any:
        return _q_then(w, int8_quantize(w)[1], codes)
    return wrong


def _int8_per_tensor(w: torch.Tensor) -> Any:
    s = _scale_of(w, w.abs().amax().expand(w.shape[0], 1))  # (out, 1), all the same
    return _q_then(w, s, lambda x: x.round().clamp(-127, 127).to(torch.int8))


def _int8_max_not_abs(w: torch.Tensor) -> Any:
    s = _scale_of(w, w.amax(dim=1, keepdim=True).clamp(min=0))
    return _q_then(w, s, lambda x: x.round().clamp(-127, 127).to(torch.int8))


def _shape_is(part: int, bad: Callable[[torch.Size, torch.Size], bool]
              ) -> Callable[[Any, Sequence[Any]], bool]:
    def fits(got: Any, case: Sequence[Any]) -> bool:
        return (isinstance(got, (tuple, list)) and len(got) == 2
                and isinstance(got[part], torch.Tensor) and bad(got[part].shape, case[0].shape))
    return fits


def _dtype_is(part: int, dtypes: tuple[torch.dtype, ...]) -> Callable[[Any, Sequence[Any]], bool]:
    def fits(got: Any, case: Sequence[Any]) -> bool:
        return (isinstance(got, (tuple, list)) and len(got) == 2
                and isinstance(got[part], torch.Tensor) and got[part].dtype in dtypes)
    return fits


def _zero_row_scale_not_positive(got: Any, case: Sequence[Any]) -> bool:
    w = case[0]
    zero = (w == 0).all(dim=1)
    if not (zero.any() and isinstance(got, (tuple, list)) and len(got) == 2):
        return False
    scale = got[1]
    return (isinstance(scale, torch.Tensor) and scale.shape == (w.shape[0], 1)
            and bool((~(scale[zero] > 0)).any()))  # 0 or NaN on a zero row


_INT8_MISTAKES = [
    _Mistake(_zero_row_scale_not_positive,
             "an all-zero row got scale 0 (or NaN): max|row| / 127 = 0 there, and w / 0 = "
             "0/0 = NaN, which no int8 can hold (the cast gives garbage, different on different "
             "machines). Give such a row a positive scale, 1 say: torch.where(amax > 0, "
             "amax / 127, 1)"),
    _Mistake(_dtype_is(0, (torch.uint8,)),
             "q is uint8, which holds 0..255: the negative codes wrap around (−1 becomes 255). "
             "Symmetric codes need the signed type: .to(torch.int8)"),
    _Mistake(_dtype_is(0, (torch.float16, torch.bfloat16, torch.float32, torch.float64)),
             "q is still a float tensor: round, clamp, then .to(torch.int8); the whole point is "
             "one byte per weight instead of four"),
    _Mistake(_shape_is(1, lambda s, w: len(s) < 2 or s[0] != w[0] or s[1] != 1),
             "scale must be one number per output row, shape (out, 1): amax over dim=1 with "
             "keepdim=True (per channel, not one scale for the whole matrix, not one per "
             "column), so that q * scale broadcasts back to w's shape"),
    _Mistake(_gives(_int8_per_tensor),
             "every row has the same scale: that is per-tensor quantization. Per channel means "
             "each output row r gets its own scale, max|w[r]| / 127 (amax over dim=1)"),
    _Mistake(_gives(lambda w: _q_then(w, _scale_of(w, w.abs().amax(dim=0, keepdim=True).T),
                                      lambda x: x.round().clamp(-127, 127).to(torch.int8))),
             "the scales come from the columns (amax over dim=0): the output channels are the "
             "rows of w, (out, in), so take amax over dim=1"),
    _Mistake(_gives(_int8_wrong_divisor(128)),
             "the scale divides by 128: symmetric int8 uses −127..127 (127 steps each side), so "
             "scale = max|row| / 127 and the largest weight maps to ±127 exactly"),
    _Mistake(_gives(_int8_wrong_divisor(255)),
             "the scale divides by 255, the range of 8 bits: symmetric codes use half of it on "
             "each side of 0, so scale = max|row| / 127"),
    _Mistake(_gives(_int8_max_not_abs),
             "the scale comes from max(row), not max(|row|): a row whose largest weight is "
             "negative then gets too small a scale. Use w.abs().amax(dim=1, keepdim=True)"),
    _Mistake(_gives(_int8_wrong_codes(lambda x: x.to(torch.int8))),
             "the codes are truncated toward 0 (a cast without rounding): 2.9 becomes 2. Round "
             "to the nearest code first: torch.round(w / scale)"),
    _Mistake(_gives(_int8_wrong_codes(lambda x: x.floor().clamp(-127, 127).to(torch.int8))),
             "the codes are rounded down (floor): −0.2 becomes −1. Round to the nearest code: "
             "torch.round(w / scale)"),
    _Mistake(_gives(_int8_wrong_codes(
        lambda x: (x + 0.5).floor().clamp(-127, 127).to(torch.int8))),
             "halves are rounded up (floor(x + 0.5)): torch.round rounds a tie to the even "
             "code (2.5 → 2, −3.5 → −4), as torch's own quantize_per_channel does"),
]


def _weights(gen: torch.Generator, out: int, inp: int, *, dtype: torch.dtype = torch.float32,
             zero_rows: Sequence[int] = (), negative_max: bool = False,
             spread: bool = False) -> tuple[torch.Tensor]:
    w = torch.randn(out, inp, generator=gen, dtype=torch.float64)  # (out, in)
    if spread:  # rows of very different magnitudes
        w = w * 10 ** torch.empty(out, 1, dtype=torch.float64).uniform_(-4, 3, generator=gen)
    if negative_max:  # each row's largest magnitude is a negative weight
        top = w.gather(1, w.abs().argmax(dim=1, keepdim=True))  # (out, 1)
        w = w * -top.sign()
    for r in zero_rows:
        w[r] = 0.0
    return (w.to(dtype),)


def check_int8_quantize(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(w) -> (q, scale)``, per-output-channel symmetric int8 quantization of ``w``
    (out, in): ``q`` (out, in) ``torch.int8`` equal to the reference's code for code, ``scale``
    (out, 1) in ``w``'s dtype. On an all-zero row any finite positive scale is accepted (its
    codes must be 0). Cases: a single weight, small and realistic matrices, all-zero rows,
    rows whose largest weight is negative, rows of magnitudes from 1e-4 to 1e3, a square
    matrix (where per-column scales have the right shape), exact ties (½ steps) and float64.

    Example:
        >>> check_int8_quantize(int8_quantize)
        ✓ int8_quantize: 9 case(s) match the reference
    """
    require_function(fn, "int8_quantize", function="my_int8_quantize")
    gen = torch.Generator().manual_seed(909)
    # (2, 6) exact ties: scales 1 and 1/8 (127 / 8 = 15.875), so w / scale is exactly ½ off
    ties = torch.tensor([[127.0, 2.5, -3.5, 0.5, -0.5, 1.5],
                         [-15.875, 0.3125, 0.4375, -0.0625, 0.1875, 15.875]])
    cases = [
        (torch.tensor([[-0.75]]),),
        _weights(gen, 4, 8),
        _weights(gen, 8, 16, zero_rows=(3,)),
        _weights(gen, 6, 6, negative_max=True),
        _weights(gen, 5, 12, spread=True),
        (0.02 * _weights(gen, 32, 64, zero_rows=(0, 31))[0],),  # GPT-2-like init scale
        (ties,),
        _weights(gen, 3, 7, dtype=torch.float64, negative_max=True),
        _weights(gen, 7, 5, dtype=torch.float64, zero_rows=(6,), spread=True),
    ]
    _check(fn, int8_quantize, cases, name="int8_quantize", atol=0.0, rtol=1e-6,
           learner=_zero_rows_any_positive_scale(fn), mistakes=_INT8_MISTAKES,
           hint="scale = w.abs().amax(dim=1, keepdim=True) / 127 (1 on an all-zero row), "
                "q = torch.round(w / scale).clamp(-127, 127).to(torch.int8); keep the scale in "
                "w's dtype")


# ------------------------------------------------------------------------------ KV cache


def _kv(factor: int = 2, heads: str = "kv", batch: bool = True, seq: bool = True,
        as_float: bool = False) -> Callable[..., Any]:
    def wrong(n_layer: int, n_head: int, n_kv_head: int, head_dim: int, seq_len: int, b: int,
              nbytes: int) -> Any:
        h = n_kv_head if heads == "kv" else n_head
        out = factor * n_layer * h * head_dim * (seq_len if seq else 1) * (b if batch else 1) \
            * nbytes
        return float(out) if as_float else out
    return wrong


_KV_MISTAKES = [
    _Mistake(_gives(_kv(as_float=True)),
             "the right number, as a float: a count of bytes is an int (multiply ints, or "
             "int(...) at the end; / makes a float even when it divides exactly)"),
    _Mistake(_gives(_kv(factor=1)),
             "half the bytes: the cache holds a key AND a value for every head, layer and "
             "token, hence the 2"),
    _Mistake(_gives(_kv(heads="q")),
             "counted with n_head: under grouped-query attention only n_kv_head heads of keys "
             "and values are computed and cached, each shared by n_head / n_kv_head query "
             "heads"),
    _Mistake(_gives(_kv(heads="q", factor=1)),
             "counted with n_head and without the 2: only n_kv_head heads are cached, and each "
             "holds a key and a value"),
    _Mistake(_gives(_kv(batch=False)),
             "batch is missing: each of the batch's sequences has its own keys and values"),
    _Mistake(_gives(_kv(seq=False)),
             "that is the bytes of one token: multiply by seq_len, the tokens cached"),
    _Mistake(_gives(lambda *a: 8 * _kv()(*a)),
             "8 times too many: bytes_per_value is already in bytes (4 for float32, 2 for "
             "bf16), not bits"),
]


def check_kv_cache_bytes(fn: Callable[[int, int, int, int, int, int, int], int]) -> None:
    """Check ``fn(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, bytes_per_value)``,
    the bytes of a KV cache, an ``int``: random configs with n_kv_head < n_head (grouped-query
    attention) and one with n_kv_head = n_head, batches of 1 and 3 to 16 (never 2, which would
    make a forgotten batch look like a forgotten 2), 4, 2 or 1 bytes a value,
    and Llama-2 70B's published config (80 layers, 64 query and 8 key/value heads of 128).

    Example:
        >>> check_kv_cache_bytes(kv_cache_bytes)
        ✓ kv_cache_bytes: 8 case(s) match the reference
    """
    require_function(fn, "kv_cache_bytes", function="my_kv_cache_bytes")
    rng = random.Random(909)
    cases = []
    for i in range(6):
        n_kv = rng.choice([1, 2, 4])
        n_head = n_kv * (1 if i == 3 else rng.choice([3, 4, 6]))  # 8 would look like bits
        cases.append((rng.randint(2, 48), n_head, n_kv, rng.choice([32, 64, 80, 128]),
                      rng.randint(17, 8192), rng.randint(3, 16) if i != 4 else 1,
                      rng.choice([4, 2, 1])))
    cases += [(80, 64, 8, 128, 4096, 1, 2), (80, 64, 8, 128, 4096, 8, 2)]
    _check(fn, kv_cache_bytes, cases, name="kv_cache_bytes", atol=0, rtol=0,
           mistakes=_KV_MISTAKES,
           hint="2 (a key and a value) · n_layer · n_kv_head · head_dim · seq_len · batch · "
                "bytes_per_value, an int; n_head does not enter")


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
    _Mistake(_gives(_flops(factor=2, attention=2)),
             "that is one forward pass (2N per token): training adds the backward pass, two "
             "products of the same size for each product of the forward (∂L/∂x and ∂L/∂W), so "
             "6N per token, and 3 × the attention term"),
    _Mistake(_gives(_flops(factor=2)),
             "the weights count 2 FLOPs per token: that is the forward pass only; training "
             "costs 6 per weight per token (forward 2, backward 4)"),
    _Mistake(_gives(_flops(attention=0)),
             "the attention term is missing: the scores q·k and the weighted sum of the values "
             "multiply no weight, yet cost 4·t·d per layer for a token at position t: "
             "6 · n_layer · context · d per token for training"),
    _Mistake(_gives(_flops(attention=2)),
             "the attention term is the forward pass's only (2·L·T·d): like the weights, it "
             "costs three times that in training, 6 · n_layer · context · d per token"),
    _Mistake(_gives(_flops(attention=12)),
             "the attention term counts the whole context × context square: the convention "
             "here is the causal average, a token at position t attends to t keys, t ≈ "
             "context / 2, so 6 · n_layer · context · d per training token"),
    _Mistake(_gives(_flops(kv="q")),
             "W_k and W_v are counted d × d: under grouped-query attention they produce only "
             "n_kv_head heads, d × (n_kv_head · d / n_head) each"),
    _Mistake(_gives(_flops(attn_width="kv")),
             "the attention term uses the key/value width: every one of the n_head query heads "
             "still scores all keys, so the term is over d = n_head · head_dim"),
    _Mistake(_gives(_flops(mlp=2)),
             "the MLP has two matrices here: a SwiGLU MLP has three, gate and up (d × d_ff) and "
             "down (d_ff × d)"),
    _Mistake(_gives(_flops(output=2)),
             "V·d is counted twice: the input embedding is a lookup (a copy, no arithmetic); "
             "only the output layer multiplies, once"),
    _Mistake(_gives(_flops(output=0)),
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
    _check(fn, training_flops, cases, name="training_flops", atol=0.0, rtol=1e-9,
           mistakes=_FLOPS_MISTAKES,
           hint="N = n_layer · (2d² + 2·d·n_kv_head·head_dim + 3·d·d_ff) + V·d, then "
                "6 · N · tokens + 6 · n_layer · context · d · tokens")
