"""Where token ids enter a decoder-only language model: the checks and the tensors derived from
the inputs, written once for :class:`~llmcourse.models.gpt.GPT` and
:class:`~llmcourse.models.llama.Llama`, whose forwards differ only in what they do with them
(a learned position vector added, or RoPE's rotations).

    idx (B, T), targets, attention_mask, position_ids, cache, last_only
        → check_model_inputs → ModelInputs(idx, targets, positions (B|1, T), mask)

Everything a caller can get wrong is refused here, once, with a message naming the argument:
ids outside the vocabulary or not integers, no token at all, more positions than the context,
a cache of another shape, targets of another shape or with nothing to score, positions or a
mask of the wrong shape or values. The layers inside check shapes only.

Example:
    >>> inputs = check_model_inputs(torch.tensor([[5, 6, 7]]), vocab_size=10, block_size=8)
    >>> inputs.positions.tolist(), inputs.mask is None
    ([[0, 1, 2]], True)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from llmcourse.core.validate import check_padding_mask, check_tensor, check_token_ids
from llmcourse.nn.kv_cache import KVCache

__all__ = ["ModelInputs", "check_model_inputs", "check_cache", "check_targets",
           "token_positions", "causal_padding_mask", "position_ids_from_mask"]


class ModelInputs(NamedTuple):
    """The checked inputs of one forward, ready for the layers."""

    idx: torch.Tensor  # (B, T) int64 or int32: what nn.Embedding indexes with
    targets: torch.Tensor | None  # (B, T) int64, -100 where nothing is scored
    positions: torch.Tensor  # (B, T) or (1, T): the positions of the new tokens
    mask: torch.Tensor | None  # (B, 1, T, S) bool, True = attend; None: causal, no padding


def check_model_inputs(
    idx: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    vocab_size: int,
    block_size: int,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: KVCache | None = None,
    last_only: bool = False,
    cache_layout: tuple[int, int, int] | None = None,
) -> ModelInputs:
    """Check the arguments of a language model's forward and derive what its layers need.

    Args:
        idx: token ids (B, T), each in [0, vocab_size).
        targets: next-token ids (B, T) or None; -100 marks a position not scored.
        vocab_size, block_size: the model's vocabulary and context (the most positions).
        attention_mask: (B, cached + T), 1 for tokens and 0 for (left) padding, or None.
        position_ids: (B, T) or (1, T) positions of the new tokens, or None for
            cached..cached+T-1.
        cache: the model's :class:`KVCache` or None; its length is the number of cached tokens.
        last_only: only the last position's logits will be computed (then no targets).
        cache_layout: (n_layer, n_kv_head, head_dim) the cache must have, with B sequences;
            None checks the batch size only. See :func:`check_cache`.

    Returns:
        :class:`ModelInputs`: ``idx`` as int64/int32, ``targets`` as int64, the positions
        (:func:`token_positions`) and the attention mask (:func:`causal_padding_mask`).

    Example:
        >>> ids = torch.tensor([[0, 4, 5], [3, 4, 5]])
        >>> real = torch.tensor([[0, 1, 1], [1, 1, 1]])         # row 0 is left-padded
        >>> inputs = check_model_inputs(ids, ids, vocab_size=6, block_size=8,
        ...                             attention_mask=real,
        ...                             position_ids=position_ids_from_mask(real))
        >>> inputs.positions.tolist(), tuple(inputs.mask.shape)
        ([[0, 0, 1], [0, 1, 2]], (2, 1, 3, 3))
        >>> check_model_inputs(torch.zeros(1, 9, dtype=torch.long), vocab_size=6, block_size=8)
        Traceback (most recent call last):
        ...
        ValueError: sequence of 9 tokens (0 cached + 9 new) is longer than the model's context ...
    """
    check_token_ids("idx", idx, vocab_size)
    b, t = idx.shape
    if b == 0 or t == 0:
        raise ValueError(f"idx holds no token (shape {tuple(idx.shape)}); give at least one "
                         "sequence of at least one token")
    if idx.dtype not in (torch.int64, torch.int32):
        idx = idx.long()  # nn.Embedding indexes with int64/int32 only
    past = 0 if cache is None else cache.length
    if past + t > block_size:
        raise ValueError(
            f"sequence of {past + t} tokens ({past} cached + {t} new) is longer than the "
            f"model's context block_size={block_size}"
        )
    if cache is not None:
        check_cache(cache, b, cache_layout)
    if last_only and targets is not None:
        raise ValueError("last_only=True gives one position's logits; the loss needs "
                         "all of them (pass targets with last_only=False)")
    if targets is not None:
        targets = check_targets(targets, idx, vocab_size)  # (B, T) int64
    positions = token_positions(b, t, past, position_ids, block_size, idx.device)  # (B|1, T)
    mask = causal_padding_mask(b, t, past, attention_mask, idx.device)  # (B, 1, T, S)
    return ModelInputs(idx, targets, positions, mask)


def check_cache(cache: KVCache, batch_size: int,
                layout: tuple[int, int, int] | None = None) -> None:
    """Require a cache for ``batch_size`` sequences and, when ``layout`` = (n_layer, n_kv_head,
    head_dim) is given, of that many layers, key/value heads and features per head (a
    grouped-query model's cache has fewer heads than queries: a GPT's would not fit, nor would
    a cache made for another model). Both language models pass their layout.

    Example:
        >>> check_cache(KVCache(2, 1, 4, 16, 8), 1, layout=(2, 2, 8))
        Traceback (most recent call last):
        ...
        ValueError: cache holds (n_layer, batch, heads, head_dim) = (2, 1, 4, 8), but this model ...
    """
    if cache.batch_size != batch_size:
        raise ValueError(f"cache holds {cache.batch_size} sequences but idx has {batch_size}")
    if layout is None:
        return
    n_layer, n_kv_head, head_dim = layout
    want = (n_layer, batch_size, n_kv_head, head_dim)
    got = (cache.k.shape[0], cache.batch_size, cache.k.shape[2], cache.k.shape[4])
    if got != want:
        raise ValueError(f"cache holds (n_layer, batch, heads, head_dim) = {got}, but "
                         f"this model and idx need {want}; make it with new_cache")


def check_targets(targets: torch.Tensor, idx: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Next-token ids of idx's shape, in the vocabulary or -100, at least one scored; returned
    as int64 for ``cross_entropy``.

    Example:
        >>> check_targets(torch.tensor([[2, -100]], dtype=torch.int32), torch.zeros(1, 2), 5)
        tensor([[   2, -100]])
        >>> check_targets(torch.full((1, 2), -100), torch.zeros(1, 2), 5)
        Traceback (most recent call last):
        ...
        ValueError: targets score no position: all 2 are -100 (ignored), so the mean loss is ...
    """
    check_tensor("targets", targets)
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"targets must hold integer token ids, got {targets.dtype}")
    if targets.shape != idx.shape:
        raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got "
                         f"{tuple(targets.shape)}")
    scored = targets != -100  # (B, T)
    bad = scored & ((targets < 0) | (targets >= vocab_size))  # (B, T)
    if bad.any():
        raise ValueError(f"targets hold id {int(targets[bad][0])}, outside the "
                         f"vocabulary [0, {vocab_size}) (and not -100, 'ignore')")
    if not scored.any():
        # cross_entropy would return 0 / 0 = NaN without a word.
        raise ValueError(f"targets score no position: all {targets.numel()} are -100 "
                         "(ignored), so the mean loss is undefined; keep at least one "
                         "target token")
    return targets.long()


def token_positions(b: int, t: int, past: int, position_ids: torch.Tensor | None,
                    block_size: int, device: torch.device) -> torch.Tensor:
    """The positions of the ``t`` new tokens of ``b`` sequences after ``past`` cached ones:
    ``position_ids`` checked ((B, T) or (1, T), integers in [0, block_size)), or by default
    past..past+t-1, (1, T), the same for every sequence.

    Example:
        >>> token_positions(2, 3, 4, None, 16, torch.device("cpu")).tolist()
        [[4, 5, 6]]
        >>> token_positions(1, 2, 0, torch.tensor([[7, 8]]), 8, torch.device("cpu"))
        Traceback (most recent call last):
        ...
        ValueError: position_ids must lie in [0, block_size=8), got 7..8
    """
    if position_ids is None:
        return torch.arange(past, past + t, device=device)[None]  # (1, T)
    check_tensor("position_ids", position_ids)
    if position_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"position_ids must be int64 or int32, got {position_ids.dtype}")
    if position_ids.shape not in ((b, t), (1, t)):
        raise ValueError(f"position_ids must be (B, T) = {(b, t)}, got "
                         f"{tuple(position_ids.shape)}")
    low, high = int(position_ids.min()), int(position_ids.max())
    if low < 0 or high >= block_size:
        raise ValueError(f"position_ids must lie in [0, block_size={block_size})"
                         f", got {low}..{high}")
    return position_ids


def causal_padding_mask(b: int, t: int, past: int, attention_mask: torch.Tensor | None,
                        device: torch.device) -> torch.Tensor | None:
    """None without padding (the attention applies causality itself, on torch's fast path),
    else the (B, 1, T, S) bool mask over S = past + t keys, True = attend: causal, and no
    padding key. A padding query sees itself only (otherwise it would see no key at all: a NaN
    row); real tokens never attend to padding, so this changes nothing for them.

    Example:
        >>> m = causal_padding_mask(1, 3, 0, torch.tensor([[0, 1, 1]]), torch.device("cpu"))
        >>> m.shape, m[0, 0].int().tolist()
        (torch.Size([1, 1, 3, 3]), [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    """
    if attention_mask is None:
        return None
    s = past + t
    keys = check_padding_mask("attention_mask", attention_mask, (b, s), "(B, cached + T)")
    keys = keys.to(device)[:, None, None, :]  # (B, 1, 1, S)
    allowed = torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=past)  # (T, S)
    self_pos = torch.zeros(t, s, dtype=torch.bool, device=device)  # (T, S)
    rows = torch.arange(t, device=device)  # (T,)
    self_pos[rows, past + rows] = True
    return (allowed & keys) | self_pos  # (B, 1, T, S)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so that a left-padded prompt starts at 0.

        position = (number of real tokens up to and including this one) − 1

    ``attention_mask`` (B, S) holds 1 for tokens and 0 for padding; the result is (B, S)
    int64, with 0 at padding (never seen by a real token, so any value would do). This is
    ``transformers``' rule for GPT-2 generation.

    Example:
        >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
        [[0, 0, 0, 1, 2]]
    """
    mask = attention_mask.long()  # (B, S)
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, S)
