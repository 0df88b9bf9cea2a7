"""Data-parallel training: the course's loop on several processes, with PyTorch's DDP.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m llmcourse.training tiny --out data/cache/tiny-ddp --max-steps 20

(``torchrun`` is the same program under a shorter name.) ``torchrun`` starts one process per
``--nproc_per_node`` and tells each its ``RANK`` and the ``WORLD_SIZE`` through the environment.
Every process holds a whole copy of the model. At every step each process (each *rank*) runs
forward and backward on its own rows of the global batch; then
``torch.nn.parallel.DistributedDataParallel`` (DDP, Li et al. 2020, "PyTorch Distributed")
averages the gradients across the processes (an all-reduce, overlapped with the backward
pass), so that every rank holds the gradient of the whole batch and takes the same
optimizer step. Nothing here sends gradients itself: DDP and ``torch.distributed`` do.

What this module adds around DDP, for the loop (:func:`llmcourse.training.loop.train`) and the
command (:mod:`llmcourse.training.cli`):

- :func:`init_from_env`: join the process group that ``torchrun`` set up (gloo on a CPU, NCCL
  on CUDA, each rank on its own GPU), with a timeout, so that a rank that stops answering ends
  the run with an error instead of a hang;
- :func:`split_batch`: the batch is *global* (``TrainConfig.batch_size`` sequences per
  optimizer step, however many processes share it), so it must split evenly into
  ``world_size × grad_accum_steps`` micro-batches; a clear error otherwise;
- :func:`check_same_run`: every rank describes its run (config, data fingerprint, step); if
  they disagree, every rank stops with an error naming the difference;
- :func:`gather`, :func:`all_sum`, :func:`rank0_decides`, :func:`barrier`: the few
  collective calls the loop needs (random states for the checkpoint, the logged loss, when to
  stop, waiting for rank 0's checkpoint).

Example (one process: nothing is distributed, every helper is a no-op):
    >>> world()
    (0, 1)
    >>> split_batch(batch_size=32, grad_accum_steps=2, world_size=4)      # rows per micro-batch
    4
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import numbers
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["world", "is_distributed", "init_from_env", "shutdown", "split_batch",
           "fingerprint", "check_same_run", "gather", "all_sum", "rank0_decides", "barrier",
           "explain_failures", "wrap"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` when no process group is running.

    Example:
        >>> world()
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """Whether this process trains with others (a process group of two or more ranks)."""
    return world()[1] > 1


def init_from_env(device: str = "cpu", timeout_s: float = 600.0) -> str | None:
    """Join the process group described by ``torchrun``'s environment variables, if any.

    Without ``WORLD_SIZE`` in the environment (a plain ``python`` run) nothing happens and
    None is returned. Otherwise the backend is gloo for a CPU device and NCCL for CUDA, where
    each rank takes the GPU ``cuda:LOCAL_RANK``.

    Args:
        device: the run's device, ``"cpu"`` or ``"cuda"`` (a CUDA index is replaced).
        timeout_s: how long a collective call waits for the other ranks before failing; a rank
            that hangs (rather than dies, which ``torchrun`` notices at once) ends the run
            after this long.

    Returns:
        The device this rank trains on, or None when not under ``torchrun``.

    Example:
        >>> "WORLD_SIZE" in os.environ or init_from_env("cpu") is None
        True
    """
    if "WORLD_SIZE" not in os.environ:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or \
            not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but CUDA is not available on this "
                             "machine; use --device cpu (gloo)")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"local rank {local} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; start at most that many processes "
                             "per node (--nproc_per_node)")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
        backend = "nccl"
    elif kind == "cpu":
        device, backend = "cpu", "gloo"
    else:
        raise ValueError(f"data-parallel training runs on 'cpu' (gloo) or 'cuda' (NCCL), got "
                         f"device {device!r}")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return device


def shutdown() -> None:
    """Leave the process group (a no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def split_batch(batch_size: int, grad_accum_steps: int, world_size: int) -> int:
    """Rows per micro-batch when ``world_size`` processes share a global batch of
    ``batch_size`` sequences, each accumulating ``grad_accum_steps`` micro-batches.

        batch_size = world_size × grad_accum_steps × micro-batch rows

    Raises:
        ValueError: more processes than sequences in the batch, or a batch that does not
            split evenly (the step would no longer be the one of the whole batch).

    Example:
        >>> split_batch(12, 1, 2)
        6
        >>> split_batch(12, 1, 5)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=12 does not split evenly into 5 processes × 1 micro-batches ...
    """
    for name, v in (("batch_size", batch_size), ("grad_accum_steps", grad_accum_steps),
                    ("world_size", world_size)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    batch_size, grad_accum_steps, world_size = int(batch_size), int(grad_accum_steps), \
        int(world_size)
    if world_size > batch_size:
        raise ValueError(f"{world_size} processes but the batch holds only {batch_size} "
                         f"sequence{'s' if batch_size > 1 else ''}: every process needs at "
                         f"least one. Start at most "
                         f"{batch_size} processes (torchrun --nproc_per_node) or raise the "
                         "batch size (--batch-size, the global batch)")
    parts = world_size * grad_accum_steps
    if batch_size % parts:
        fits = [n for n in range(1, batch_size + 1) if batch_size % (n * grad_accum_steps) == 0]
        raise ValueError(f"batch_size={batch_size} does not split evenly into {world_size} "
                         f"processes × {grad_accum_steps} micro-batches (grad_accum_steps) = "
                         f"{parts} equal parts. Use a batch size that is a multiple of {parts}, "
                         f"or a number of processes among {fits}")
    return batch_size // parts


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short sha256 of tensors' values, shapes and dtypes: equal data, equal fingerprint.

    Example:
        >>> fingerprint(torch.arange(5)) == fingerprint(torch.arange(5)), \\
        ...     fingerprint(torch.arange(5)) == fingerprint(torch.arange(6))
        (True, False)
    """
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)} {t.dtype};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} vs {y!r}")
    return out


def check_same_run(description: Mapping[str, Any]) -> None:
    """Stop every rank, with the same clear error, if the ranks describe different runs.

    Each rank passes a JSON-able description of its run (the training config, the model's
    config, a :func:`fingerprint` of its data, the step it starts from); all are gathered on
    every rank and compared. Ranks that disagree would otherwise train on silently: DDP
    averages gradients of models fed different data or stepped by different schedules.

    Raises:
        ValueError: naming the ranks and the first fields that differ.

    Example:
        >>> check_same_run({"max_steps": 10})      # one process: nothing to compare
    """
    text = json.dumps(description, sort_keys=True, default=str)
    if not is_distributed():
        return
    everyone = gather(text)
    base = json.loads(everyone[0])
    for rank, other in enumerate(everyone):
        if other != everyone[0]:
            diff = _differences(base, json.loads(other))
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3
                                           else "")
            raise ValueError(f"the processes disagree on the run: rank 0 vs rank {rank}: "
                             f"{shown}. Every rank must be started with the same command, "
                             "code and data")


def gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` alone).

    Example:
        >>> gather({"step": 3})
        [{'step': 3}]
    """
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of a tensor over the ranks (a copy; ``value`` itself when alone).

    Example:
        >>> all_sum(torch.tensor(2.5))
        tensor(2.5000)
    """
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def rank0_decides(flag: bool, device: str | torch.device = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank: one decision where each rank's own could differ
    (a wall-clock limit), so that no rank stops while the others wait for it.

    Example:
        >>> rank0_decides(True)
        True
    """
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], device=device)  # (1,)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier() -> None:
    """Wait until every rank is here (no-op alone): the other ranks wait while rank 0 writes
    the checkpoint, so that none reads or writes it half-way."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def explain_failures() -> Iterator[None]:
    """Re-raise a failed collective operation with what it most likely means.

    When a rank dies, the others learn it as a broken connection; when it hangs, as a
    timeout, deep inside DDP or gloo/NCCL, with a message naming a C++ file. This adds the
    rank and the likely cause in words (``torchrun``'s final report names the first process
    that failed). Other errors pass unchanged.

    Example:
        >>> with explain_failures():
        ...     pass
    """
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if not is_distributed() or isinstance(err, torch.OutOfMemoryError) or not any(
                word in text.lower() for word in ("gloo", "nccl", "c10d", "timed out",
                                                  "connection")):
            raise
        rank, size = world()
        raise RuntimeError(
            f"rank {rank} of {size}: a collective operation with the other processes failed: "
            "another process has most likely died (a crash, the out-of-memory killer) or "
            "stopped answering for longer than the process group's timeout (the command's "
            "--dist-timeout). torchrun's report lists how each process ended. The last "
            f"checkpoint written is intact (continue with --resume). Cause: {text}") from err


def wrap(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` when distributed,
    else ``model`` itself. DDP copies rank 0's weights to every rank when it is built, so all
    ranks start from the same model whatever their own initialization.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> wrap(layer, "cpu") is layer
        True
    """
    if not is_distributed():
        return model
    device = torch.device(device)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
