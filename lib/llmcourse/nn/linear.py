"""A linear layer whose weight is stored in the layout that batch-1 decoding reads fastest.

``nn.Linear`` keeps its weight W as (out, in), row after row of outputs. Decoding one token
multiplies a single vector by every weight matrix: ~2 FLOPs per weight but 4 bytes (fp32) to
read, so the time is the time to stream W from memory, and the matrix-vector kernel streams
some layouts faster than others. On the CPUs measured here (``benchmarks/bench_generate.py``
prints it), a square or widening matrix (out ≥ in) is read markedly faster input-major,
(in, out) contiguous, the way GPT-2's own ``Conv1D`` stores it; a narrowing one (out < in, the
MLP's 4C → C projection) is as fast or faster as it is.

:class:`Linear` is an ``nn.Linear`` whose weight is stored that way: the parameter still has
``nn.Linear``'s shape (out, in), names and state dict, but for out ≥ in it is the transposed
*view* of an (in, out) contiguous tensor. ``F.linear(x, W, b)`` then calls
``addmm(b, x, Wᵀ)`` with Wᵀ contiguous: the same sums, no copy, and the fast layout for the
one forward that serves training, scoring and decoding alike. Training is unaffected (a
matrix-matrix product reads either layout at the same speed) and autograd gives the gradient,
and so the optimizer state, the parameter's own layout.

One more choice, for a handful of rows on a CPU (decoding: one token per sequence): torch's
matrix-vector kernel shares a matrix poorly among threads, so the product runs as P = (number
of threads) independent slices side by side with ``torch.bmm``, each thread streaming its own
contiguous part of the stored weight, a *view*, never a copy:

- input-major W (stored (in, out)): the inputs are cut in P parts, x Wᵀ = Σ_p x_p Wᵀ_p;
- output-major W (stored (out, in)): the outputs are cut in P parts, each computed whole.

The sums are the same up to float rounding order (tests compare with ``F.linear``).

Example:
    >>> layer = Linear(4, 8)
    >>> layer.weight.shape, layer.weight.stride()       # (out, in), stored (in, out)
    (torch.Size([8, 4]), (1, 8))
    >>> x = torch.randn(2, 4)
    >>> torch.allclose(layer(x), x @ layer.weight.T + layer.bias)
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Linear", "input_major", "is_input_major"]


def input_major(weight: torch.Tensor) -> torch.Tensor:
    """The same (out, in) matrix, stored input-major: a view of an (in, out) contiguous copy.

    Example:
        >>> input_major(torch.zeros(3, 2)).stride()
        (1, 3)
    """
    return weight.t().contiguous().t()  # (out, in) view of (in, out) storage


def is_input_major(weight: torch.Tensor) -> bool:
    """True when the (out, in) ``weight`` is stored as (in, out) contiguous, i.e. has the
    strides (1, out) that :func:`input_major` gives it."""
    return weight.dim() == 2 and weight.stride() == (1, weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (y = x Wᵀ + b, W of shape (out, in)) with W stored input-major when
    out ≥ in, the layout the batch-1 matrix-vector product streams fastest, and a
    thread-sliced product for a few rows on a CPU (see the module's docstring).

    Same parameters, names, initialisation and state dict as ``nn.Linear``; loading a state
    dict copies into the stored layout.
    """

    MATVEC_ROWS = 16  # up to this many rows the product is memory-bound: slice it by thread

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features >= in_features:
            with torch.no_grad():
                self.weight = nn.Parameter(input_major(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) → (..., out)."""
        weight, bias = self.weight, self.bias
        if x.is_cpu and x.numel() <= self.MATVEC_ROWS * self.in_features:
            parts = torch.get_num_threads()
            y = _sliced_matvec(x.reshape(-1, self.in_features), weight, parts) if parts > 1 \
                else None
            if y is not None:  # (rows, out)
                if bias is not None:
                    y += bias
                return y.view(*x.shape[:-1], self.out_features)  # (..., out)
        return F.linear(x, weight, bias)


def _sliced_matvec(x: torch.Tensor, weight: torch.Tensor, parts: int) -> torch.Tensor | None:
    """x (M, in) @ weightᵀ as ``parts`` slices of the stored weight, one per thread; None
    when the weight does not cut evenly (the caller then uses F.linear).

    ``as_strided`` builds each sliced view in one call (this runs for every layer and every
    generated token, so the number of small Python-level operations shows)."""
    out, inp = weight.shape
    m = x.shape[0]
    if m == 0 or not x.is_contiguous():
        return None
    if weight.stride() == (1, out) and inp % parts == 0:  # input-major: cut the inputs
        k = inp // parts
        w = weight.as_strided((parts, k, out), (k * out, out, 1))  # (P, in/P, out) of Wᵀ
        xs = x.as_strided((parts, m, k), (k, inp, 1))  # (P, M, in/P)
        return torch.bmm(xs, w).sum(dim=0)  # (M, out): the P partial sums added
    if weight.stride() == (inp, 1) and out % parts == 0:  # output-major: cut the outputs
        n = out // parts
        w = weight.as_strided((parts, inp, n), (n * inp, 1, inp))  # (P, in, out/P) of Wᵀ
        ys = torch.bmm(x.expand(parts, m, inp), w)  # (P, M, out/P)
        return ys.transpose(0, 1).reshape(m, out)  # (M, out): the P slices side by side
    return None
