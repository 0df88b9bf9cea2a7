"""The settings of a training run, checked when built: :class:`TrainConfig`.

Everything about a run except the model and the data: how many steps, the batch, the
schedule of the learning rate, AdamW's settings, evaluation, precision, and the two
memory remedies (gradient accumulation and activation checkpointing). A wrong value fails
here, naming the field, rather than steps later inside torch.

``batch_size`` is the *global* batch: the number of sequences behind one optimizer step. It is
split into ``grad_accum_steps`` micro-batches (and, under ``torchrun``, over the processes), none
of which changes the update: see :mod:`llmcourse.training.loop`.

Example:
    >>> cfg = TrainConfig(batch_size=32, grad_accum_steps=4)      # 4 micro-batches of 8
    >>> cfg.batch_size // cfg.grad_accum_steps
    8
    >>> TrainConfig(batch_size=30, grad_accum_steps=4)
    Traceback (most recent call last):
    ...
    ValueError: batch_size=30 (the whole batch of one step) does not split into ...
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from llmcourse.training.precision import DTYPES

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the model and the data. Checked when built."""

    max_steps: int = 2000
    batch_size: int = 12  # sequences per optimizer step, all micro-batches and processes
    block_size: int = 64  # context of each training window; at most the model's block_size
    learning_rate: float = 1e-3  # peak, reached at the end of warmup
    min_lr: float = 1e-4  # where the cosine ends
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices only (configure_optimizer)
    beta1: float = 0.9
    beta2: float = 0.99  # nanoGPT's choice for small data: the second moment adapts faster
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    eval_interval: int = 250
    eval_batches: int = 20
    seed: int = 1337
    device: str = "cpu"
    log_interval: int = 10  # record the batch loss (and update the bar) every this many steps
    progress: bool = True  # a tqdm progress bar
    max_minutes: float | None = None  # stop early (with a checkpoint) after this long
    dtype: str = "fp32"  # "bf16": bfloat16 autocast, float32 master weights (precision.py)
    compile: bool = False  # torch.compile the model (worth it on a GPU, for long runs)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (batch_size is the whole)
    activation_checkpointing: bool = False  # GPT only: recompute blocks in the backward pass

    def __post_init__(self) -> None:
        # Types first, so that a string from a config file or a command line ("1e-3") is
        # named here rather than failing as "'>' not supported" deep in a comparison.
        for name in _INT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):  # numpy's ints too
                raise TypeError(f"TrainConfig.{name} must be an int, got "
                                f"{type(v).__name__} {v!r}")
        for name in _FLOAT_FIELDS:
            v = getattr(self, name)
            if v is None and name in _OPTIONAL_FIELDS:
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"TrainConfig.{name} must be a float (an int will do), got "
                                f"{type(v).__name__} {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"TrainConfig.{name} must be a finite number, got {v!r}")
        for name in ("progress", "compile", "activation_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"TrainConfig.{name} must be True or False, got "
                                f"{getattr(self, name)!r}")
        if not isinstance(self.device, str | torch.device):
            raise TypeError(f"TrainConfig.device must be a str such as 'cpu' or 'cuda', got "
                            f"{type(self.device).__name__} {self.device!r}")

        for name in ("max_steps", "batch_size", "block_size", "eval_interval", "eval_batches",
                     "log_interval", "grad_accum_steps"):
            v = getattr(self, name)
            if v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(f"batch_size={self.batch_size} (the whole batch of one step) does "
                             f"not split into grad_accum_steps={self.grad_accum_steps} equal "
                             "micro-batches; choose a batch_size that is a multiple of it")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps must be an integer in [0, max_steps={self.max_steps}]"
                             f", got {self.warmup_steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"min_lr must be in [0, learning_rate={self.learning_rate}], got "
                             f"{self.min_lr!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0 or None, got {self.max_minutes!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))} (bfloat16 "
                             f"autocast with float32 master weights), got {self.dtype!r}")
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"device {self.device!r} is not a torch device such as 'cpu', "
                             f"'cuda' or 'cuda:1' ({err})") from None


_INT_FIELDS = ("max_steps", "batch_size", "block_size", "warmup_steps", "eval_interval",
               "eval_batches", "seed", "log_interval", "grad_accum_steps")
_FLOAT_FIELDS = ("learning_rate", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip",
                 "max_minutes")
_OPTIONAL_FIELDS = ("max_minutes",)
