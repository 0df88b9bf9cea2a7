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


def check_finite(name: str, x: object) -> torch.Tensor:
    """Require a floating-point tensor whose every value is finite (no NaN, no ±inf).

    For the entry points of functions that would turn one inf into NaN everywhere downstream
    (``inf - inf`` in a softmax, ``inf / inf`` in a normalisation).
    """
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        what = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise ValueError(f"{name} contains {what} (shape {tuple(x.shape)}); expected finite "
                         "values")
    return x


def check_features(name: str, x: object, size: int, what: str = "n_embd") -> torch.Tensor:
    """Require a floating-point (batch, time, ``size``) tensor: dtype and shape only, O(1).

    For modules that readers may call directly but that also run inside a model, once per
    layer and per step: no scan of the values, which the model checked where they entered.
    """
    x = check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_rank(name, x, (3,), f"(batch, time, {what})")
    check_last_dim(name, x, size, what)
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


def check_padding_mask(name: str, mask: object, shape: tuple[int, ...],
                       layout: str = "(B, T)") -> torch.Tensor:
    """Require a 0/1 padding mask of ``shape`` (1 = real token, 0 = padding), of integer,
    bool or float dtype as ``transformers`` accepts; return it as a bool tensor.
    ``layout`` names the expected axes in the message.

    Example:
        >>> check_padding_mask("attention_mask", torch.tensor([[0, 1, 1]]), (1, 3)).tolist()
        [[False, True, True]]
    """
    mask = check_tensor(name, mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must be {layout} = {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.is_complex():
        raise TypeError(f"{name} must hold 0/1 integers or bools, got dtype {mask.dtype}")
    if mask.dtype != torch.bool:
        ok = (mask == 0) | (mask == 1)  # (B, S)
        if not bool(ok.all()):
            values = mask[~ok].unique().tolist()[:5]
            raise ValueError(f"{name} must hold only 1 (real token) and 0 (padding), got "
                             f"values {values}")
    return mask.bool()


def check_positive(name: str, value: object) -> None:
    """Require a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
