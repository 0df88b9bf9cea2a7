"""The reader's machine, measured: how many FLOP/s its matrix products reach, and from that
how long training runs of known size would take on it and on a GPU of known peak.

A training run's arithmetic is known in advance (≈ 6N FLOPs per token, see
:mod:`llmcourse.models.sizing`); divided by the rate the hardware sustains, it gives the
time. The rate a training loop sustains is below the rate of one large matrix product (other
operations, memory traffic, small matrices): the ratio is the *utilization*, an assumption
stated wherever a time is computed. For a CPU the measured matmul rate itself is the ceiling;
for a GPU, the vendor's peak times a utilization typical of large runs. Peak memory of a
step is measured by :func:`llmcourse.training.memory.peak_memory_bytes`.

Example: three training runs at 300 GFLOP/s (a 2-core CPU's fp32 matmul rate; measure yours
with :func:`matmul_flops_per_second`) and on one H100 at 40% of its bf16 peak:

    >>> for row in training_times(300e9):
    ...     print(f"{row['job']:31} {format_duration(row['here_s']):>13} "
    ...           f"{format_duration(row['gpu_s']):>10}")
    course checkpoint (5.8M)             24.4 min     1.11 s
    GPT-2 small (124M), 10B tokens       308 days      5.6 h
    GPT-3 (175B), 300B tokens        33,200 years 25.2 years
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmcourse.core.validate import check_positive
from llmcourse.models.gpt import GPTConfig
from llmcourse.models.sizing import PUBLISHED, ModelShape, training_flops
from llmcourse.training.cli import PRESETS

__all__ = [
    "H100_SXM_BF16_DENSE", "GPU_UTILIZATION", "GPT3_TRAINING_FLOPS", "TrainingJob",
    "matmul_flops_per_second", "time_to_train", "format_duration", "course_checkpoint_job",
    "reference_jobs", "training_times",
]

# NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: 1,979 teraFLOPS of bf16 "with sparsity",
# which doubles the dense rate: 989 TFLOP/s dense. (H200 has the same compute.)
H100_SXM_BF16_DENSE = 989e12
# An assumption, not a measurement: large training runs keep roughly 40% of the peak busy
# (PaLM reported 46.2% "model FLOPs utilization", Chowdhery et al. 2022, Table 3).
GPU_UTILIZATION = 0.4
# GPT-3 175B's training compute: 3.14e23 FLOPs (Brown et al. 2020, Table D.1), ≈ 6N · 300B
# tokens.
GPT3_TRAINING_FLOPS = 3.14e23

_clock = time.perf_counter  # tests replace it to check the arithmetic, never a timing


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_second(size: int = 1024, repeats: int = 5, *,
                            dtype: torch.dtype = torch.float32, device: str = "cpu",
                            min_seconds: float = 0.05) -> float:
    """Achieved FLOP/s of a square matrix product (size × size) @ (size × size) here: the
    median over ``repeats`` timings, each of enough products to last ``min_seconds``.

    One product costs 2·size³ FLOPs (size² outputs, each size multiplications and about as
    many additions). The first product is a warm-up and is not timed. It uses the threads
    torch is set to (``torch.get_num_threads()``); the number depends on the machine, on what
    else runs on it, and on ``size`` (small matrices do not keep the cores busy).

    Raises:
        ValueError: a size, repeat count or time that is not positive; a device that is not
            here; a dtype whose matrix product this machine cannot run.

    Example:
        >>> rate = matmul_flops_per_second(size=64, repeats=3, min_seconds=0.001)
        >>> rate > 0 and math.isfinite(rate)
        True
    """
    check_positive("size", size)
    check_positive("repeats", repeats)
    if isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float)) \
            or not 0 < min_seconds < 60:
        raise ValueError(f"min_seconds must be a number of seconds in (0, 60), got "
                         f"{min_seconds!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"matmul_flops_per_second measures 'cpu' or 'cuda', got {device!r}")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dev, dtype)  # (n, n)
    b = torch.randn(size, size, generator=gen).to(dev, dtype)  # (n, n)
    out = torch.empty(size, size, device=dev, dtype=dtype)  # (n, n) reused: no allocation
    try:
        torch.mm(a, b, out=out)  # the warm-up (and: can this machine multiply in dtype?)
    except RuntimeError as err:
        raise ValueError(f"this machine cannot multiply {dtype} matrices on {device!r}: "
                         f"{err}") from None
    _synchronize(dev)
    start = _clock()
    torch.mm(a, b, out=out)
    _synchronize(dev)
    one = max(_clock() - start, 1e-9)
    per_timing = max(1, math.ceil(min_seconds / one))  # products per timing
    rates = []
    for _ in range(repeats):
        start = _clock()
        for _ in range(per_timing):
            torch.mm(a, b, out=out)
        _synchronize(dev)
        rates.append(2 * size**3 * per_timing / max(_clock() - start, 1e-12))
    return float(statistics.median(rates))


def time_to_train(flops: float, flops_per_second: float, utilization: float = 1.0) -> float:
    """Seconds to do ``flops`` FLOPs on hardware that reaches ``flops_per_second`` at best, of
    which a fraction ``utilization`` (in (0, 1]) is sustained:

        time = flops / (flops_per_second · utilization)

    Example:
        >>> time_to_train(6e18, 1e12)                       # 6e18 FLOPs at 1 TFLOP/s
        6000000.0
        >>> time_to_train(6e18, 1e12, utilization=0.5)      # half as busy: twice as long
        12000000.0
    """
    for name, value in (("flops", flops), ("flops_per_second", flops_per_second)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if isinstance(utilization, bool) or not isinstance(utilization, (int, float)) \
            or not 0 < utilization <= 1:
        raise ValueError(f"utilization must be a fraction in (0, 1], got {utilization!r}")
    return flops / (flops_per_second * utilization)


_UNITS = (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_duration(seconds: float) -> str:
    """A duration in the largest unit that keeps it at least 1, three significant digits.

    Example:
        >>> [format_duration(s) for s in (0.5, 42, 5400, 3 * 86400, 4e9, 1.05e12)]
        ['0.5 s', '42 s', '1.5 h', '3 days', '127 years', '33,300 years']
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number ≥ 0, got {seconds!r}")
    for unit, size in _UNITS:
        if seconds >= size or unit == "s":
            value = float(f"{seconds / size:.3g}")  # three significant digits
            return f"{value:,.0f} {unit}" if value >= 1000 else f"{value:g} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class TrainingJob:
    """A training run of known arithmetic: its FLOPs, where the number comes from, and how
    long it really took where that was recorded."""

    name: str
    flops: float
    source: str
    measured_seconds: float | None = None


def _shape_of(cfg: GPTConfig, name: str) -> ModelShape:
    return ModelShape(name, n_layer=cfg.n_layer, d_model=cfg.n_embd, n_head=cfg.n_head,
                      vocab_size=cfg.vocab_size, context=cfg.block_size)


def course_checkpoint_job(folder: str | Path | None = None) -> TrainingJob:
    """The training of the course checkpoint (the ``course-cpu`` preset: steps × batch ×
    context tokens) by :func:`~llmcourse.models.sizing.training_flops`, with its wall time from
    the checkpoint's ``results.json`` when ``folder`` holds one (default: the course
    checkpoint under data/checkpoints/). Evaluation passes are not counted.

    Example:
        >>> job = course_checkpoint_job()
        >>> f"{job.flops:.3e}", job.measured_seconds is not None
        ('4.397e+14', True)
    """
    preset = PRESETS["course-cpu"]
    plan, cfg = preset.train, preset.model
    tokens = plan.max_steps * plan.batch_size * plan.block_size
    flops = training_flops(_shape_of(cfg, "course-cpu"), tokens, plan.block_size)
    if folder is None:
        from llmcourse.course.gpt2 import course_checkpoint  # imports transformers: on use

        try:
            folder = course_checkpoint()
        except ValueError:
            folder = None
    seconds = None
    results = Path(folder) / "results.json" if folder is not None else None
    if results is not None and results.is_file():
        wall = json.loads(results.read_text()).get("wall_min")
        seconds = 60 * float(wall) if isinstance(wall, (int, float)) else None
    source = (f"course-cpu preset: {plan.max_steps} steps × {plan.batch_size} × "
              f"{plan.block_size} = {tokens:,} tokens, 6N per token + attention")
    return TrainingJob("course checkpoint (5.8M)", float(flops), source, seconds)


def reference_jobs(folder: str | Path | None = None) -> list[TrainingJob]:
    """Three training runs from small to huge: the course checkpoint, GPT-2 small on 10B
    tokens, GPT-3 175B.

    Example:
        >>> [f"{j.flops:.2e}" for j in reference_jobs()]
        ['4.40e+14', '7.98e+18', '3.14e+23']
    """
    gpt2 = PUBLISHED["gpt2"]
    return [
        course_checkpoint_job(folder),
        TrainingJob("GPT-2 small (124M), 10B tokens", float(training_flops(gpt2, 10**10)),
                    "sizing.training_flops; 10B tokens as in karpathy/llm.c's GPT-2 (124M) "
                    "reproduction"),
        TrainingJob("GPT-3 (175B), 300B tokens", GPT3_TRAINING_FLOPS,
                    "Brown et al. 2020, Table D.1"),
    ]


def training_times(flops_per_second: float, *, utilization: float = 1.0,
                   gpu_flops_per_second: float = H100_SXM_BF16_DENSE,
                   gpu_utilization: float = GPU_UTILIZATION,
                   jobs: list[TrainingJob] | None = None) -> list[dict[str, object]]:
    """For each job (default :func:`reference_jobs`), the time it takes here, at
    ``flops_per_second`` × ``utilization``, and on the GPU, at ``gpu_flops_per_second`` ×
    ``gpu_utilization``: rows of ``{"job", "flops", "here_s", "gpu_s", "measured_s"}``.

    Example:
        >>> row = training_times(1e11, utilization=0.5)[0]
        >>> sorted(row), row["here_s"] == time_to_train(row["flops"], 1e11, 0.5)
        (['flops', 'gpu_s', 'here_s', 'job', 'measured_s'], True)
    """
    rows = []
    for job in reference_jobs() if jobs is None else jobs:
        rows.append({
            "job": job.name,
            "flops": job.flops,
            "here_s": time_to_train(job.flops, flops_per_second, utilization),
            "gpu_s": time_to_train(job.flops, gpu_flops_per_second, gpu_utilization),
            "measured_s": job.measured_seconds,
        })
    return rows
