"""Comparing two training runs that should take the same steps (gradient accumulation, data
parallel, activation checkpointing against the plain run).

Two such runs compute the same gradients up to float32 rounding (~1e-10 absolute for these
tiny models). AdamW steps each weight by ``lr · m̂ / (√v̂ + eps)``: where a weight's gradients
are well above ``eps = 1e-8`` the step changes by about ``lr · δg / √v̂``, invisible; but where
they are all near 0 (the keys' biases, whose gradient is exactly 0 in exact arithmetic because
softmax ignores what is added to every score; an entry that happens to fall near 0) the step is
``lr · noise / (|noise| + eps)``: rounding noise becomes a step of up to ``lr`` in a direction
set by chance. Those few entries are not compared: :func:`assert_same_weights` compares every
entry whose AdamW denominator ``√v̂`` exceeds ``floor``, and checks that they are nearly all.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from llmcourse.training.loop import History, train


def train_keeping_optimizer(model: nn.Module, *args: Any, **kwargs: Any
                            ) -> tuple[History, torch.optim.Optimizer]:
    """:func:`train`, and the optimizer it stepped (for its second moments)."""
    seen: list[torch.optim.Optimizer] = []
    handle = register_optimizer_step_post_hook(lambda opt, a, k: seen.append(opt))
    try:
        history = train(model, *args, **kwargs)
    finally:
        handle.remove()
    return history, seen[-1]


def gradient_scale(model: nn.Module, optimizer: torch.optim.Optimizer
                   ) -> dict[str, torch.Tensor]:
    """√v̂ of every weight entry, by parameter name: the size of its gradients so far."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        beta2 = group["betas"][1]
        for p in group["params"]:
            state = optimizer.state[p]
            v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
            out[names[id(p)]] = v_hat.sqrt()
    return out


def assert_same_weights(reference: nn.Module, optimizer: torch.optim.Optimizer,
                        other: dict[str, torch.Tensor], atol: float, floor: float = 1e-6,
                        most_skipped: float = 0.05) -> None:
    """``other``'s weights equal ``reference``'s (≤ ``atol``) at every entry whose gradients
    are not all within ``floor`` of 0; those left out are fewer than ``most_skipped``."""
    scale = gradient_scale(reference, optimizer)
    skipped = total = 0
    for name, p in reference.named_parameters():
        keep = scale[name] > floor
        torch.testing.assert_close(other[name][keep], p.detach()[keep], atol=atol, rtol=0,
                                   msg=lambda m, name=name: f"{name}: {m}")
        skipped += int((~keep).sum())
        total += keep.numel()
    assert skipped < most_skipped * total, f"{skipped} of {total} entries left out"
    for name, b in reference.named_buffers():
        if name in other:  # persistent buffers (a constant table such as "pe" is not saved)
            torch.testing.assert_close(other[name], b, atol=atol, rtol=0)
