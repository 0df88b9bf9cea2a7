"""Switching a module's mode for a while, and switching it back even when an error escapes.

Example:
    >>> import torch
    >>> layer = torch.nn.Dropout(0.5).train()
    >>> with eval_mode(layer):
    ...     layer.training
    False
    >>> layer.training                              # restored afterwards
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (dropout off) inside the ``with`` block; afterwards, on
    success or on an exception, every submodule gets back the mode it had before.

    ``model.train(was_training)`` alone would restore only a single flag for the whole tree;
    the submodules' own flags are recorded, so a model whose parts were in mixed modes (a
    frozen, eval-mode embedding in a training model) comes back exactly as it was.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
