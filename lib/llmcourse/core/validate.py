"""Small input checks shared by the modules, so that bad input fails with a clear message.

Each helper raises ``TypeError`` for a wrong type or dtype and ``ValueError`` for a wrong shape
or value, naming the argument, what it was, and what was expected.
"""

from __future__ import annotations

import torch


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Require a ``torch.Tensor``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_float(name: str, x: object) -> torch.Tensor:
    """Require a floating-point tensor with no NaN in it."""
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN (shape {tuple(x.shape)}); expected finite values")
    return x


def check_rank(name: str, x: torch.Tensor, ranks: tuple[int, ...], layout: str) -> None:
    """Require ``x.dim()`` to be one of ``ranks``; ``layout`` names the expected axes."""
    if x.dim() not in ranks:
        raise ValueError(
            f"{name} must have shape {layout} ({' or '.join(map(str, ranks))} dims), "
            f"got shape {tuple(x.shape)}"
        )


def check_last_dim(name: str, x: torch.Tensor, size: int, what: str) -> None:
    """Require the last axis of ``x`` to have ``size`` entries."""
    if x.shape[-1] != size:
        raise ValueError(
            f"{name} has last dimension {x.shape[-1]} (shape {tuple(x.shape)}), "
            f"expected {what} = {size}"
        )


def check_token_ids(name: str, idx: object, vocab_size: int) -> torch.Tensor:
    """Require a (B, T) integer tensor of token ids in ``[0, vocab_size)``."""
    idx = check_tensor(name, idx)
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer token ids, got dtype {idx.dtype}")
    check_rank(name, idx, (2,), "(batch, time)")
    if idx.numel() and (idx.min() < 0 or idx.max() >= vocab_size):
        bad = idx[(idx < 0) | (idx >= vocab_size)][0].item()
        raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    return idx


def check_positive(name: str, value: object) -> None:
    """Require a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
