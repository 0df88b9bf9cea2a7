"""Token ids as the tokenizers' ``decode`` takes them: any 1-D sequence of integers.

:func:`token_id_list` accepts a list or tuple of ints, a 1-D numpy array or torch tensor of an
integer dtype, or any iterable of integers (numpy integer scalars included), and returns a plain
``list[int]``. Anything else fails once, here, with a message naming what was wrong (the shape
of a 2-D batch, the dtype of a float tensor, the position of a bad id) and what was expected.

Example:
    >>> import numpy as np
    >>> token_id_list(np.array([3, 1]), vocab_size=5)
    [3, 1]
    >>> token_id_list(np.zeros((2, 3), dtype=int), vocab_size=5)
    Traceback (most recent call last):
    ...
    ValueError: ids must be 1-D (one sequence of token ids), got an array of shape (2, 3); ...
"""

from __future__ import annotations

import operator

__all__ = ["token_id_list"]


def _shape_error(kind: str, shape: tuple[int, ...]) -> ValueError:
    if not shape:
        return ValueError(f"ids must be 1-D (one sequence of token ids), got a 0-d "
                          f"{kind.split()[-1]} (a single id); wrap it in a list")
    return ValueError(f"ids must be 1-D (one sequence of token ids), got {kind} of shape "
                      f"{shape}; decode each row of a batch separately")


def token_id_list(ids: object, vocab_size: int) -> list[int]:
    """``ids`` as a list of ints in ``0..vocab_size-1``, or a clear ``TypeError``/``ValueError``.

    Example:
        >>> token_id_list((2, 0), vocab_size=3)
        [2, 0]
        >>> token_id_list([0, 3], vocab_size=3)
        Traceback (most recent call last):
        ...
        ValueError: token id 3 at position 1 is outside the vocabulary: vocab_size is 3, ...
    """
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(f"ids must be a sequence of int token ids, got {type(ids).__name__}; "
                        "to encode text, call encode()")
    if isinstance(ids, int):
        raise TypeError("ids must be a sequence of token ids, got a single int; wrap it in a "
                        "list: decode([id])")
    shape = getattr(ids, "shape", None)
    if shape is not None and hasattr(ids, "tolist") and hasattr(ids, "dtype"):
        # A numpy array or a torch tensor: check its shape and dtype, then take plain ints.
        kind = "a tensor" if type(ids).__module__.startswith("torch") else "an array"
        shape = tuple(shape)
        if len(shape) != 1:
            raise _shape_error(kind, shape)
        dtype = ids.dtype
        is_int = (getattr(dtype, "kind", None) in ("i", "u")  # numpy
                  or (not getattr(dtype, "is_floating_point", True)
                      and not getattr(dtype, "is_complex", True)
                      and str(dtype) != "torch.bool"))        # torch
        if not is_int:
            raise TypeError(f"ids must hold integer token ids, got {kind} of dtype {dtype}")
        out = ids.tolist()
    else:
        try:
            out = list(ids)
        except TypeError:
            raise TypeError(f"ids must be a sequence of int token ids, got "
                            f"{type(ids).__name__}") from None
    if not out or (set(map(type, out)) == {int} and min(out) >= 0 and max(out) < vocab_size):
        return out  # the common case, checked at C speed
    for k, i in enumerate(out):
        if type(i) is not int:
            if isinstance(i, bool) or isinstance(i, (float, complex, str, bytes)):
                raise TypeError(f"token ids must be ints, got {type(i).__name__} ({i!r}) at "
                                f"position {k}")
            if isinstance(i, (list, tuple)) or getattr(i, "shape", ()) != ():
                raise TypeError(f"ids must be a flat sequence of ints, got a "
                                f"{type(i).__name__} at position {k}; decode each row of a "
                                "batch separately")
            try:
                i = out[k] = operator.index(i)  # numpy / torch integer scalars
            except TypeError:
                raise TypeError(f"token ids must be ints, got {type(i).__name__} ({i!r}) at "
                                f"position {k}") from None
        if not 0 <= i < vocab_size:
            raise ValueError(f"token id {i} at position {k} is outside the vocabulary: "
                             f"vocab_size is {vocab_size}, so ids must be in "
                             f"0..{vocab_size - 1}")
    return out
