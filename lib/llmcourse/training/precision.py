"""Mixed precision for training: bfloat16 compute, float32 master weights.

``TrainConfig(dtype="bf16")`` runs the forward pass (and so the backward pass) under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matrix products and attention run in
bfloat16, which halves the bytes moved and uses the bfloat16 units of recent hardware (AMX or
AVX512-BF16 on x86 CPUs, tensor cores on GPUs from compute capability 8.0); LayerNorm, softmax
and the loss stay in float32 (autocast's own lists). The parameters, their gradients and
AdamW's moments stay float32: an update of ``lr × (m / √v)`` ≈ 1e-4 of a weight near 1 is
below bfloat16's resolution (8 bits of mantissa: steps of 2⁻⁷ ≈ 0.008 near 1) and would be
lost if the weights themselves were bfloat16. These float32 copies are the "master weights".

Training a model whose parameters *are* half precision is refused (:func:`check_master_weights`):
on a CPU, AdamW's ``eps = 1e-8`` underflows to 0 in float16 and the first step divides by
zero, filling the weights with NaN.

Example:
    >>> layer = torch.nn.Linear(4, 4)
    >>> with autocast("bf16", "cpu"):
    ...     y = layer(torch.randn(2, 4))
    >>> y.dtype, layer.weight.dtype
    (torch.bfloat16, torch.float32)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["DTYPES", "autocast", "check_master_weights", "fast_bf16"]

# TrainConfig.dtype -> the autocast dtype (None: plain float32, no autocast).
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
_HALF = (torch.float16, torch.bfloat16)


def autocast(dtype: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """The context to run forward passes in: ``torch.autocast`` for ``"bf16"``, nothing for
    ``"fp32"`` (so that float32 training is exactly what it was without this module)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))}, got {dtype!r}")
    compute = DTYPES[dtype]
    if compute is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=compute)


def check_master_weights(model: nn.Module) -> None:
    """Refuse to train a model with half-precision parameters (before any step changes it).

    Example:
        >>> check_master_weights(torch.nn.Linear(2, 2).half())
        Traceback (most recent call last):
        ...
        TypeError: cannot train a model whose parameters are torch.float16 (weight, ...
    """
    half = [(name, p.dtype) for name, p in model.named_parameters() if p.dtype in _HALF]
    if half:
        names = ", ".join(name for name, _ in half[:3]) + (", …" if len(half) > 3 else "")
        raise TypeError(
            f"cannot train a model whose parameters are {half[0][1]} ({names}): AdamW's "
            "updates are below half precision's resolution, and on a CPU its first float16 "
            "step turns the weights into NaN. Train a float32 model (model.float()) and, for "
            "speed, TrainConfig(dtype='bf16'): bfloat16 autocast with float32 master weights")


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def fast_bf16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether ``device`` has hardware bfloat16 matrix products, and in words why.

    On a CPU without AMX or AVX512-BF16 (most laptops; Apple silicon is not detected), torch
    emulates bfloat16 and ``dtype="bf16"`` is usually *slower* than float32.

    Example:
        >>> fast, why = fast_bf16("cpu")
        >>> isinstance(fast, bool) and why.startswith("CPU")
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, (f"CUDA compute capability {major}.{minor} (bfloat16 tensor cores "
                            "from 8.0)")
    if device.type != "cpu":
        return False, f"{device.type}: unknown"
    capability = torch.backends.cpu.get_cpu_capability()
    units = sorted({"amx_bf16", "avx512_bf16"} & _cpu_flags())
    if units:
        return True, f"CPU with {' and '.join(units)} (torch's CPU capability: {capability})"
    return False, (f"CPU without amx_bf16 or avx512_bf16 (torch's CPU capability: "
                   f"{capability}): bfloat16 is emulated, likely slower than float32")
