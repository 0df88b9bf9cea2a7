"""Random training batches: windows of a token stream (a GPT), or translation pairs (an
encoder–decoder).

A language model learns from every position of a window at once: for a window ``w`` of
``block_size + 1`` tokens, the input is ``w[:-1]`` and the target ``w[1:]``, so each of the
``block_size`` positions predicts its next token.

Example:
    >>> stream = torch.arange(100)
    >>> x, y = get_batch(stream, batch_size=2, block_size=8,
    ...                  generator=torch.Generator().manual_seed(0))
    >>> x.shape, bool((x[:, 1:] == y[:, :-1]).all()), bool((y == x + 1).all())
    (torch.Size([2, 8]), True, True)
"""

from __future__ import annotations

from typing import Any

import torch

from llmcourse.text.number_words import PairBatch

__all__ = ["get_batch", "draw_batch", "batch_rows"]

# Held out for validation, by file stem (`hamlet_gut.txt` → "hamlet"): two tragedies' worth of
# drama in different registers (Hamlet, Henry V), a comedy (Twelfth Night), and verse (Sonnets).
VALIDATION_WORKS: tuple[str, ...] = ("hamlet", "twelfth_night", "henry_v", "sonnets")
# Between works in a character stream: a blank line, which the texts already use between scenes.


def get_batch(stream: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``stream``: inputs ``x`` and targets ``y`` = ``x``
    shifted left by one, both (batch_size, block_size), on ``stream``'s device.

    Window starts are uniform over every start that leaves room for the target, i.e.
    ``0 .. len(stream) - block_size - 1``, drawn from ``generator`` (a CPU generator; the
    global one when None).

    Example:
        >>> x, y = get_batch(torch.arange(10), 3, 4, torch.Generator().manual_seed(0))
        >>> bool((y == x + 1).all()), x.shape
        (True, torch.Size([3, 4]))
    """
    if not isinstance(stream, torch.Tensor):
        raise TypeError(f"stream must be a torch.Tensor, got {type(stream).__name__}")
    if stream.dim() != 1 or stream.is_floating_point():
        raise ValueError(f"stream must be a 1-D integer tensor of token ids, got shape "
                         f"{tuple(stream.shape)} dtype {stream.dtype}")
    for name, v in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    n = stream.numel()
    if n < block_size + 1:
        raise ValueError(f"the token stream has {n} tokens, fewer than one window of "
                         f"block_size + 1 = {block_size + 1} (input plus its shifted target)")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size + 1)  # (T+1,)
    windows = stream[(starts[:, None] + offsets).to(stream.device)]  # (B, T+1)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T), (B, T)


def draw_batch(data: torch.Tensor | PairBatch, batch_size: int, block_size: int,
               generator: torch.Generator | None = None
               ) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """The model's arguments for one random batch, ``(args, kwargs)``, so that the training
    loop calls ``model(*args, **kwargs)`` for either kind of model:

    - a token stream (1-D tensor, a GPT): ``((x,), {"targets": y})`` from :func:`get_batch`;
    - a :class:`~llmcourse.text.number_words.PairBatch` (an encoder–decoder):
      ``batch_size`` pairs drawn uniformly, trimmed to their longest source and target,
      ``((src, tgt_in), {"src_mask": ..., "targets": ...})``; ``block_size`` is unused.

    Example:
        >>> args, kwargs = draw_batch(torch.arange(50), 2, 4, torch.Generator().manual_seed(0))
        >>> args[0].shape, sorted(kwargs)
        (torch.Size([2, 4]), ['targets'])
    """
    if isinstance(data, PairBatch):
        index = torch.randint(len(data), (batch_size,), generator=generator)  # (B,)
        b = data.rows(index.to(data.src.device))
        return (b.src, b.tgt_in), {"src_mask": b.src_mask, "targets": b.targets}
    x, y = get_batch(data, batch_size, block_size, generator)  # (B, T), (B, T)
    return (x,), {"targets": y}


def batch_rows(args: tuple[torch.Tensor, ...], kwargs: dict[str, Any], start: int, stop: int
               ) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """Rows ``start:stop`` of a batch from :func:`draw_batch`, in the same form: a
    micro-batch (gradient accumulation) or one process's shard (data-parallel training).
    Translation pairs are trimmed again to the longest source and target among these rows.

    Example:
        >>> args, kwargs = draw_batch(torch.arange(50), 4, 3, torch.Generator().manual_seed(0))
        >>> part, part_kw = batch_rows(args, kwargs, 2, 4)
        >>> torch.equal(part[0], args[0][2:4]), torch.equal(part_kw["targets"],
        ...                                                 kwargs["targets"][2:4])
        (True, True)
    """
    rows = slice(start, stop)
    if "src_mask" in kwargs:  # an encoder-decoder's pairs
        b = PairBatch(args[0], kwargs["src_mask"], args[1], kwargs["targets"]).rows(rows)
        return (b.src, b.tgt_in), {"src_mask": b.src_mask, "targets": b.targets}
    return tuple(a[rows] for a in args), {k: v[rows] for k, v in kwargs.items()}
