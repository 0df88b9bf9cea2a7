"""Int8 weight quantization, one scale per output channel, and the layers that run on it.

A weight matrix W (out, in) becomes a matrix of int8 codes and one float scale per row (per
output channel), symmetric around zero:

    sᵢ  = maxₖ |Wᵢₖ| / 127                           the row's largest weight maps to ±127
    qᵢₖ = clamp(round(Wᵢₖ / sᵢ), −127, 127)          stored as int8 (1 byte instead of 4)
    Ŵᵢₖ = sᵢ · qᵢₖ                                    what the layer computes with

Rounding moves a weight by at most half a step, so every element obeys |Wᵢₖ − Ŵᵢₖ| ≤ sᵢ/2
(up to float32 rounding), and a row holding multiples of its scale comes back exactly. One
scale per row rather than one per matrix keeps a row of small weights from being rounded on
the step of the matrix's largest weight; −128 is left unused so that the grid is symmetric.

**Which matmul runs on the int8 weights.** Decoding one token multiplies a vector by every
weight matrix, reading each weight once: the time is the time to read the weights, so a
quarter of the bytes can make it up to four times faster, *if* the matmul reads the int8
codes themselves. Three kernels are offered (``benchmarks/bench_quant.py`` measures them on
GPT-2's shapes):

- ``"int8"`` (the default where torch has a quantized engine: fbgemm/x86 on Intel/AMD,
  qnnpack on ARM): int8 × int8 products summed in int32, the CPU's integer dot-product units
  (VNNI). The activations are quantized on the fly, at each call, to 8 bits with one scale
  for the call (per token when decoding one token; over all rows when scoring a batch)
  (``torch.ops.quantized.linear_dynamic``, the kernel under torch's own
  ``quantize_dynamic``, fed with *our* int8 codes and per-channel scales). The weights are
  stored int8 only; activations stay float32 between layers. On x86 CPUs without VNNI the
  activations use 7 bits (fbgemm's ``reduce_range``: 8 bits could saturate its 16-bit
  partial sums there).
- ``"bf16"``: weight-only in the strict sense, ``torch._weight_int8pack_mm``: the int8 codes
  are widened inside the kernel and multiplied with the activations in bfloat16, its only
  vectorized input type on x86 (float32 inputs take a scalar loop, several times slower
  still). Slower than ``"int8"`` on the machines measured: it widens every code to a
  float before multiplying, where a VNNI instruction multiplies and sums 64 int8 pairs.
- ``"dequant"``: the reference: Ŵ = s·q rebuilt in float32 for this one layer at each call.
  Exact to float32 rounding, slow; for tests and for devices with neither kernel.

Error bound of a layer's output (what the tests check): with x the input row,
``y − ŷ = Σₖ xₖ(Wᵢₖ − Ŵᵢₖ) + Σₖ (xₖ − x̂ₖ)Ŵᵢₖ``, hence

    |yᵢ − ŷᵢ| ≤ (sᵢ/2)·‖x‖₁ + δ·Σₖ|Ŵᵢₖ|      δ = the largest error of an activation:
                                               0 for "dequant"; one activation step for
                                               "int8"; bfloat16 rounding for "bf16"

(:func:`output_error_bound` computes it).

Example:
    >>> w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]])
    >>> q, scale = quantize(w)
    >>> q.tolist(), [round(s, 6) for s in scale.tolist()]
    ([[64, -127, 32], [127, 0, -32]], [0.007874, 0.015748])
    >>> bool(((dequantize(q, scale) - w).abs() <= scale[:, None] / 2).all())
    True
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_tensor

__all__ = ["QMAX", "KERNELS", "quantize", "dequantize", "output_error_bound", "resolve_kernel",
           "Int8Linear", "Int8Embedding"]

QMAX = 127  # codes in [-QMAX, QMAX]: symmetric, -128 unused
KERNELS = ("int8", "bf16", "dequant")
_WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT8_ENGINES = ("x86", "fbgemm", "qnnpack", "onednn")
_BF16_EPS = 2.0**-8  # bfloat16 keeps 8 significant bits: rounding moves a value by ≤ 2⁻⁸ of it


def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a (out, in) matrix to int8 codes with one symmetric scale per row.

    Args:
        weight: float32, float16 or bfloat16 (out, in) matrix, every value finite.

    Returns:
        ``(q, scale)``: q int8 (out, in), contiguous; scale float32 (out,), positive. A row
        of zeros gets scale 1 (any scale represents it exactly).

    Raises:
        TypeError: not a tensor, or not a float dtype listed above (names ``weight``).
        ValueError: not 2-D, or holding NaN or ±inf (a NaN would give NaN scales).

    Example:
        >>> q, scale = quantize(torch.tensor([[1.0, -0.5, 0.0]]))
        >>> q.tolist(), round(scale.item(), 6)          # scale = 1/127
        ([[127, -64, 0]], 0.007874)
    """
    check_tensor("weight", weight)
    if weight.dtype not in _WEIGHT_DTYPES:
        raise TypeError(f"weight must be float32, float16 or bfloat16, got {weight.dtype}"
                        + ("; convert it with .float() first" if weight.is_floating_point()
                           else " (an integer tensor has nothing to quantize)"))
    if weight.dim() != 2:
        raise ValueError(f"weight must be a 2-D (out, in) matrix, got shape "
                         f"{tuple(weight.shape)}")
    w = weight.detach().float()  # (out, in)
    if not bool(torch.isfinite(w).all()):
        what = "NaN" if bool(torch.isnan(w).any()) else "inf"
        raise ValueError(f"weight contains {what} (shape {tuple(w.shape)}): it has no int8 "
                         "code; fix the model before quantizing it")
    scale = w.abs().amax(dim=1) / QMAX  # (out,)
    # An all-zero row (or one so tiny that its scale underflows) would divide by 0.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # (out,)
    q = torch.round(w / scale[:, None]).clamp_(-QMAX, QMAX)  # (out, in), integers
    return q.to(torch.int8).contiguous(), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 matrix the codes stand for: Ŵ = scale[:, None] · q.

    Args:
        q: int8 (out, in) codes.
        scale: float32 (out,) positive scales, one per row.

    Example:
        >>> dequantize(torch.tensor([[127, -64]], dtype=torch.int8), torch.tensor([0.5]))
        tensor([[ 63.5000, -32.0000]])
    """
    _check_codes(q, scale)
    return q.float() * scale[:, None]  # (out, in)


def _check_codes(q: object, scale: object) -> None:
    check_tensor("q", q)
    check_tensor("scale", scale)
    if q.dtype != torch.int8 or q.dim() != 2:
        raise TypeError(f"q must be a 2-D int8 tensor of codes, got {q.dtype} of shape "
                        f"{tuple(q.shape)}")
    if scale.dtype != torch.float32 or scale.shape != q.shape[:1]:
        raise TypeError(f"scale must be a float32 tensor of shape ({q.shape[0]},), one per row "
                        f"of q, got {scale.dtype} of shape {tuple(scale.shape)}")
    if scale.device.type != "meta" and not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise ValueError("scale must be positive and finite in every row")


@functools.cache
def _int8_engine() -> tuple[str | None, bool]:
    """(torch's quantized engine if it can run our int8 matmul, else None; whether the
    activations must use 7 bits). Tried once on a tiny layer."""
    engine = torch.backends.quantized.engine
    if engine not in _INT8_ENGINES:
        return None, True
    try:
        packed = _prepack(torch.ones(2, 4, dtype=torch.int8), torch.ones(2), None)
        torch.ops.quantized.linear_dynamic(torch.ones(1, 4), packed, True)
    except (RuntimeError, AttributeError, NotImplementedError):
        return None, True
    reduce_range = engine != "qnnpack" and not _has_vnni()
    return engine, reduce_range


def _has_vnni() -> bool:
    """Whether fbgemm can sum u8×s8 products straight into int32 (AVX512-VNNI). Without it,
    pairs of products are summed in 16 bits first, where 8-bit activations can saturate."""
    try:
        flags = torch._C._cpu._get_cpu_capability()  # a dict of CPU flags (torch ≥ 2.6)
    except AttributeError:
        return False
    return bool(flags.get("avx512_vnni", False))


def resolve_kernel(kernel: str, device: torch.device | str = "cpu") -> str:
    """The kernel to use for ``kernel`` (``"auto"`` or one of :data:`KERNELS`) on ``device``.

    ``"auto"`` is ``"int8"`` on a CPU whose torch has a quantized engine, else ``"dequant"``.

    Raises:
        ValueError: an unknown name, or a kernel this machine cannot run (``"int8"`` without
            an engine or off the CPU), naming ``kernel`` and what to use instead.

    Example:
        >>> resolve_kernel("dequant")
        'dequant'
    """
    device = torch.device(device)
    if kernel not in ("auto", *KERNELS):
        raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}")
    engine, _ = _int8_engine()
    if kernel == "auto":
        return "int8" if engine is not None and device.type in ("cpu", "meta") else "dequant"
    if kernel == "int8" and device.type not in ("cpu", "meta"):
        raise ValueError(f"kernel='int8' runs on the CPU only (torch's quantized engines), "
                         f"but the layer is on {device}; use kernel='bf16' or 'dequant'")
    if kernel == "int8" and engine is None:
        raise ValueError(
            f"kernel='int8' needs torch's quantized int8 engine (fbgemm/x86 on Intel and AMD, "
            f"qnnpack on ARM); this machine's torch offers "
            f"{torch.backends.quantized.supported_engines} with engine "
            f"{torch.backends.quantized.engine!r}: use kernel='bf16' or 'dequant'")
    return kernel


def _prepack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> object:
    """Our codes and scales in the engine's packed layout (an int8 copy, reordered for its
    dot-product instructions). torch builds it from a per-channel quantized tensor, a type it
    marks as deprecated: the warning is silenced here, once per layer."""
    zero = torch.zeros(q.shape[0], dtype=torch.long)  # symmetric: zero point 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        return torch.ops.quantized.linear_prepack(qw, bias)


def _aligned(q: torch.Tensor) -> torch.Tensor:
    """``q``, or an aligned copy: ``_weight_int8pack_mm`` reads the codes with aligned 16-byte
    loads, and a tensor read from a file may start anywhere (a misaligned one crashes the
    process). torch's own allocations are aligned to 64 bytes."""
    return q if q.data_ptr() % 64 == 0 else q.clone()


def output_error_bound(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, *,
                       kernel: str) -> torch.Tensor:
    """Largest possible |y − ŷ| between the float layer (x Wᵀ) and its int8 version (x Ŵᵀ as
    ``kernel`` computes it), per output: ``(sᵢ/2)·‖x‖₁ + δ·Σₖ|Ŵᵢₖ|`` (see the module's
    docstring), plus float32 rounding. x (..., in) → (..., out).

    δ, the error of one activation, is 0 for ``"dequant"``; for ``"int8"`` one step of the
    activation grid: torch spans [min(x, 0), max(x, 0)] of the whole call with 255 steps (127
    with 7 bits) and rounds its zero point to an integer, which can shift the grid by half a
    step, so an activation moves by at most one step; for ``"bf16"`` the rounding of x, of the
    scales and of the output to bfloat16, ≤ 2⁻⁸ each of what they round.

    Example:
        >>> q, s = quantize(torch.tensor([[1.0, -1.0]]))
        >>> bound = output_error_bound(torch.tensor([[2.0, 0.0]]), q, s, kernel="dequant")
        >>> round(bound.item(), 4)                   # (s/2)·‖x‖₁ = (1/127)/2 · 2, and rounding
        0.0079
    """
    w_hat = dequantize(q, scale)  # (out, in)
    x = x.float()
    x_l1 = x.abs().sum(-1, keepdim=True)  # (..., 1)
    mags = x.abs() @ w_hat.abs().t()  # (..., out): Σₖ |xₖ||Ŵᵢₖ|
    bound = scale / 2 * x_l1  # (..., out)
    if kernel == "int8":
        _, reduce_range = _int8_engine()
        span = float(x.max().clamp(min=0) - x.min().clamp(max=0))
        step = span / (127 if reduce_range else 255)
        bound = bound + step * w_hat.abs().sum(-1)  # (..., out)
    elif kernel == "bf16":
        bound = bound + 3 * _BF16_EPS * (mags + bound)  # x, the scales, the output
    elif kernel != "dequant":
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return bound + 1e-5 * mags + 1e-6  # float32 sums over `in` terms  # (..., out)


class Int8Linear(nn.Module):
    """y = x Ŵᵀ + b with Ŵ = scale · q held as int8 codes and float32 scales.

    Buffers (the state dict): ``weight`` int8 (out, in), ``scale`` float32 (out,), ``bias``
    float32 (out,) or None. The ``"int8"`` kernel also keeps the codes in the engine's packed
    layout (another int8 copy, built at the first call), so the layer holds 2 bytes per
    weight against fp32's 4, and its file 1.

    Args:
        q, scale: from :func:`quantize`.
        bias: float (out,) or None.
        kernel: ``"auto"`` or one of :data:`KERNELS` (see the module's docstring).

    Example:
        >>> layer = nn.Linear(4, 3)
        >>> q8 = Int8Linear.from_float(layer, kernel="dequant")
        >>> x = torch.randn(2, 4)
        >>> bool(((q8(x) - layer(x)).abs() <= output_error_bound(
        ...     x, q8.weight, q8.scale, kernel="dequant")).all())
        True
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
                 *, kernel: str = "auto") -> None:
        super().__init__()
        _check_codes(q, scale)
        if bias is not None:
            check_tensor("bias", bias)
            if bias.shape != q.shape[:1] or not bias.is_floating_point():
                raise ValueError(f"bias must be a float tensor of shape ({q.shape[0]},), got "
                                 f"{bias.dtype} of shape {tuple(bias.shape)}")
            bias = bias.detach().float()
        self.out_features, self.in_features = q.shape
        self.kernel = resolve_kernel(kernel, q.device)
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)
        self._packed: object | None = None  # the kernel's form of the codes, at the first call
        self._reduce_range = _int8_engine()[1]
        self.register_load_state_dict_post_hook(_after_load)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, kernel: str = "auto") -> Int8Linear:
        """Quantize an ``nn.Linear`` (or the course's ``Linear``); the layer is not changed."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        q, scale = quantize(linear.weight)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, scale, bias, kernel=kernel)

    def _unpack(self) -> None:
        self._packed = None  # new weights: pack again at the next call

    def _apply(self, fn, recurse=True):  # .to(), .cpu(), ...: the packed copy would be stale
        self._unpack()
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) float32 → (..., out) float32. Checks dtype and width only (O(1): this runs
        for every layer and every generated token)."""
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
            check_tensor("x", x)
            raise TypeError(f"x must be float32 (the activations the int8 kernels take), got "
                            f"{x.dtype}")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must be (..., {self.in_features}), got {tuple(x.shape)}")
        if self.kernel == "int8":
            if x.device.type != "cpu":
                raise ValueError(f"kernel='int8' runs on the CPU only, x is on {x.device}")
            if self._packed is None:
                self._packed = _prepack(self.weight, self.scale, self.bias)
            return torch.ops.quantized.linear_dynamic(x, self._packed, self._reduce_range)
        if self.kernel == "bf16":
            if self._packed is None:
                self._packed = _aligned(self.weight), self.scale.to(torch.bfloat16)
            rows = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, in)
            y = torch._weight_int8pack_mm(rows, *self._packed)  # (M, out)
            y = y.float().view(*x.shape[:-1], self.out_features)  # (..., out)
            return y if self.bias is None else y + self.bias
        return F.linear(x, dequantize(self.weight, self.scale), self.bias)  # (..., out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, kernel={self.kernel!r}")


def _after_load(module: Int8Linear, incompatible_keys: object) -> None:
    module._unpack()  # new codes: the kernel's copy is rebuilt at the next call


class Int8Embedding(nn.Module):
    """A lookup table held as int8 rows with one scale per row: row i is scale[i] · q[i].

    For the GPT's tied embedding these are the very codes and scales of its output layer
    (the output layer's output channels are the vocabulary's rows), stored once.

    Example:
        >>> table = torch.randn(10, 4)
        >>> emb = Int8Embedding(*quantize(table))
        >>> idx = torch.tensor([[3, 7]])
        >>> emb(idx).shape, torch.equal(emb(idx), dequantize(emb.weight, emb.scale)[idx])
        (torch.Size([1, 2, 4]), True)
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        _check_codes(q, scale)
        self.num_embeddings, self.embedding_dim = q.shape
        self.register_buffer("weight", q)
        self.register_buffer("scale", scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Integer ids (...) → float32 rows (..., dim). The ids are checked by the model."""
        return self.weight[idx].float() * self.scale[idx].unsqueeze(-1)  # (..., dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
