"""Small matplotlib helpers shared by the notebooks: one look for every attention map.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import torch
    >>> w = torch.softmax(torch.randn(3, 3), dim=-1)   # (T_q, T_k)
    >>> ax = attention_heatmap(w, ["a", "b", "c"], ["a", "b", "c"], title="demo")
    >>> ax.get_title()
    'demo'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # matplotlib is imported lazily: the library itself does not need it
    from matplotlib.axes import Axes

__all__ = ["attention_heatmap"]


def attention_heatmap(
    weights: torch.Tensor,
    xlabels: Sequence[str],
    ylabels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    annotate: bool = True,
) -> Axes:
    """Draw attention weights (T_q, T_k) as a heatmap: row = query, column = key.

    The colour scale is fixed to [0, 1] so that maps in different panels compare at a glance;
    with ``annotate`` each cell also shows its weight with two decimals (skipped above 12 x 12,
    where the numbers would not fit).

    Args:
        weights: a 2-D tensor (T_q, T_k) of weights in [0, 1], e.g. one head's softmax output.
        xlabels: T_k labels for the keys (columns), e.g. the tokens attended to.
        ylabels: T_q labels for the queries (rows), e.g. the tokens attending.
        ax: the axes to draw on; a new figure is made when omitted.
        title: optional title above the map.
        annotate: write each weight in its cell.

    Returns:
        The axes drawn on.
    """
    import matplotlib.pyplot as plt  # imported here: the library itself does not need matplotlib

    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dim() != 2:
        raise ValueError(f"weights must be 2-D (T_query, T_key), got shape {tuple(weights.shape)}")
    t_q, t_k = weights.shape
    if len(xlabels) != t_k or len(ylabels) != t_q:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} need {t_k} xlabels (keys) and {t_q} "
            f"ylabels (queries), got {len(xlabels)} and {len(ylabels)}"
        )
    w = weights.detach().float().cpu()  # (T_q, T_k)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * t_k + 1.5, 0.5 * t_q + 1.0))
    ax.imshow(w.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(t_k), labels=list(xlabels), rotation=45, ha="right")
    ax.set_yticks(range(t_q), labels=list(ylabels))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate and max(t_q, t_k) <= 12:
        for i in range(t_q):
            for j in range(t_k):
                value = float(w[i, j])
                # Dark cells get white text; a NaN cell (fully masked row) is left blank.
                if not math.isnan(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if value > 0.6 else "black")
    if title is not None:
        ax.set_title(title)
    return ax
