"""Peak memory of a piece of work, on a CPU or a GPU.

Training memory is weights + gradients + optimizer state (fixed) plus the activations a
forward pass keeps for the backward pass (growing with batch × context). To see a remedy such
as activation checkpointing work, measure the *peak* bytes of tensors alive at once while a
step runs.

- On a GPU, PyTorch's caching allocator counts this itself: ``torch.cuda.max_memory_allocated``
  after ``torch.cuda.reset_peak_memory_stats``.
- On a CPU, torch keeps no such count, and Python's ``tracemalloc`` does not see tensor memory
  (torch allocates it in C++). The process's resident size (RSS) does, but also everything
  else, and the C library keeps freed memory mapped, so its peak says little about one step.
  What does work is the profiler: ``torch.profiler.profile(profile_memory=True)`` records
  every allocation and every free of torch's CPU allocator, with its size and time. Replayed in
  time order, their running sum is the bytes allocated at each moment; its maximum is the peak.

The profiler makes the measured work slower (it records every operator too): use the number,
never the time of a measured run.

Example:
    >>> def work():
    ...     a = torch.ones(1000, 1000)          # 4 MB
    ...     b = a * 2                           # 4 MB more: 8 MB at the peak
    ...     del a
    ...     return (b + 1).sum()                # a freed before b + 1 takes its 4 MB
    >>> round(peak_memory_bytes(work) / 1e6, 3)   # + a few bytes of scalars
    8.0
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

__all__ = ["peak_memory_bytes"]


def _cpu_peak(fn: Callable[[], object]) -> int:
    # Kineto, the profiler's engine, logs "USDT ... profiler_start/stop" to the terminal
    # (and so into a notebook) unless its log level is above all messages. It reads the
    # variable when first used, so setting it here works unless a profiler already ran.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile  # imported on use: a second of start

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each "[memory]" event is one allocation (+bytes) or one free (-bytes) of the allocator.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    now = peak = 0
    for _, nbytes in events:
        now += nbytes
        peak = max(peak, now)
    return peak


def peak_memory_bytes(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """The most bytes of tensor memory allocated at once, above the level when ``fn`` starts,
    while ``fn()`` runs on ``device``.

    What existed before (the model's weights, say) is not counted; what ``fn`` allocates and
    keeps (new gradients, its result) counts at its largest. A free of memory that existed
    before lowers the level below the start, so the peak is never below 0.

    Args:
        fn: the work, called once with no arguments (its result is discarded).
        device: ``"cpu"`` (through the profiler's allocation records) or a CUDA device
            (through the caching allocator's own peak counter).

    Raises:
        ValueError: a device that is neither a CPU nor an available CUDA device.

    Example:
        >>> peak_memory_bytes(lambda: torch.zeros(256, 1024)) / 2**20   # 1 MiB of float32
        1.0
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable taking no arguments, got {type(fn).__name__}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device such as 'cpu' or 'cuda' "
                         f"({err})") from None
    if device.type == "cpu":
        return _cpu_peak(fn)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine")
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - start)
    raise ValueError(f"peak_memory_bytes measures 'cpu' or 'cuda' devices, got {str(device)!r}")
