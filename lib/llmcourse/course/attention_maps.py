"""Reading a trained GPT's attention: every head's weights, and scores that name what a head does.

The course's attention calls torch's fused kernel, which never forms the (T, T) matrix of
weights. To read them without touching the model's forward, :func:`attention_weights` puts a
forward hook on each block's attention module, keeps the input it receives (the output of
``ln_1``), and recomputes, with the module's own ``c_attn`` weights,

    A = softmax(q kᵀ / √d_head + causal mask)            one (T, T) matrix per head

It then checks its work: ``A v``, heads side by side, through the module's ``c_proj``, must give
the output the module itself returned; a mismatch raises instead of returning wrong maps.

A head's behaviour is measured as the attention mass that its queries put on chosen keys
(:func:`attention_mass`), next to what uniform attention over the visible keys would put there
(:func:`uniform_mass`), the baseline a head with no preference scores:

- previous-token head: the key just before each query, ``target = offset_target(T, 1)``;
- a head that watches line starts or speaker names: the keys that are newlines or names;
- induction head (Olsson et al., 2022, *In-context Learning and Induction Heads*): on a random
  token sequence repeated twice, from each token of the second copy to the token that came
  *after* the same token in the first copy (:func:`repeated_random_tokens` builds the input
  and that target).

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> _ = torch.manual_seed(0)
    >>> model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16))
    >>> w = attention_weights(model, torch.randint(50, (1, 8)))   # (B, L, h, T, T)
    >>> tuple(w.shape), round(float(w[0, 1, 0, 3].sum()), 6)      # each row sums to 1
    ((1, 2, 2, 8, 8), 1.0)
    >>> attention_mass(w, offset_target(8, 0)).shape               # (L, h): one score a head
    torch.Size([2, 2])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmcourse.core.validate import check_positive, check_tensor
from llmcourse.models.gpt import GPT
from llmcourse.nn.block import CausalSelfAttention

__all__ = [
    "attention_weights",
    "offset_target",
    "attention_mass",
    "uniform_mass",
    "repeated_random_tokens",
]


def _head_weights(attn: CausalSelfAttention, x: torch.Tensor, out: torch.Tensor
                  ) -> torch.Tensor:
    """One layer's attention weights (B, h, T, T) from the module's input ``x`` (B, T, C),
    checked against the module's own output ``out`` (B, T, C)."""
    b, t, c = x.shape
    q, k, v = attn.c_attn(x).split(attn.n_embd, dim=2)  # 3 × (B, T, C)
    q, k, v = (z.view(b, t, attn.n_head, attn.head_dim).transpose(1, 2)
               for z in (q, k, v))  # 3 × (B, h, T, hd)
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)  # (B, h, T, T)
    later = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # (T, T): j > i
    weights = torch.softmax(scores.masked_fill(later, float("-inf")), dim=-1)  # (B, h, T, T)
    heads = (weights @ v).transpose(1, 2).reshape(b, t, c)  # (B, T, C): heads side by side
    rebuilt = attn.c_proj(heads)  # (B, T, C): what the module returned
    tol = 1e-4 * (1.0 + out.abs().max().item())
    gap = (rebuilt - out).abs().max().item()
    if not gap <= tol:
        raise RuntimeError(f"recomputed attention does not reproduce the module's output (max "
                           f"difference {gap:.3g}); the module no longer computes causal "
                           "softmax(q kᵀ/√d) v, so these weights would be wrong")
    return weights


@torch.no_grad()
def attention_weights(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Every head's attention weights for the token ids ``idx`` (B, T), as (B, L, h, T, T).

    ``weights[b, l, h, i, j]`` is how much query position ``i`` of sequence ``b`` attends to key
    ``j`` in head ``h`` of block ``l``; rows sum to 1 and ``j > i`` is 0 (causal). The model runs
    its ordinary forward once, in eval mode (no dropout), with hooks that only read; its
    training mode is restored and the hooks removed afterwards, whatever happens.

    Raises:
        TypeError: ``model`` is not the course's :class:`GPT`.
        ValueError: ``idx`` is refused by the model's forward (not ids, too long, ...).
        RuntimeError: the recomputed weights do not reproduce a module's output.

    Example:
        >>> from llmcourse.models.gpt import GPT, GPTConfig
        >>> model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
        >>> w = attention_weights(model, torch.tensor([[1, 2, 3]]))
        >>> w[0, 0, 0].triu(1).abs().sum().item()                  # nothing after the query
        0.0
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be the course's GPT, got {type(model).__name__}")
    captured: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured.append((module, args[0], output))  # (B, T, C) in, (B, T, C) out

    was_training = model.training
    hooks = [block.attn.register_forward_hook(keep) for block in model.transformer.h]
    try:
        model.eval()
        model(idx)  # validates idx; the hooks collect each block's attention input and output
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    layers = [_head_weights(m, x, out) for m, x, out in captured]  # L × (B, h, T, T)
    return torch.stack(layers, dim=1)  # (B, L, h, T, T)


def offset_target(t: int, offset: int) -> torch.Tensor:
    """Bool (T, T), True at key ``i - offset`` for every query ``i`` that has one.

    ``offset = 1`` is the previous token, ``0`` the token itself.

    Example:
        >>> offset_target(3, 1).int().tolist()
        [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    """
    check_positive("t", t)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < t:
        raise ValueError(f"offset must be an int in [0, {t}), got {offset!r}")
    return torch.eye(t, dtype=torch.bool).roll(offset, dims=0).tril(-offset)  # (T, T)


def _queries(target: torch.Tensor, queries: torch.Tensor | None) -> torch.Tensor:
    """The queries to average over, bool (B|1, T): given, or those with a target key."""
    if queries is None:
        return target.any(dim=-1)  # (..., T)
    check_tensor("queries", queries)
    if queries.dtype != torch.bool or queries.shape[-1] != target.shape[-1]:
        raise ValueError(f"queries must be bool (B, T) or (T,) with T = {target.shape[-1]}, got "
                         f"{queries.dtype} {tuple(queries.shape)}")
    return queries


def _check_target(target: object, t: int | None = None) -> torch.Tensor:
    target = check_tensor("target", target)
    if (target.dtype != torch.bool or target.dim() not in (2, 3)
            or target.shape[-1] != target.shape[-2] or (t is not None and target.shape[-1] != t)):
        raise ValueError(f"target must be bool (T, T) or (B, T, T), True at the keys that count "
                         f"for each query{'' if t is None else f', T = {t}'}; got "
                         f"{target.dtype} {tuple(target.shape)}")
    return target


def attention_mass(weights: torch.Tensor, target: torch.Tensor,
                   queries: torch.Tensor | None = None) -> torch.Tensor:
    """Per head, the mean over queries of the attention put on the ``target`` keys: (L, h).

        score(l, h) = mean over (b, i in queries) of  Σ_{j : target[b, i, j]} weights[b, l, h, i, j]

    Args:
        weights: (B, L, h, T, T) from :func:`attention_weights`.
        target: bool (T, T) or (B, T, T): which keys count for each query.
        queries: bool (T,) or (B, T): which queries to average over; default, every query
            with at least one target key.

    Example:
        >>> w = torch.tensor([[0.5, 0.5], [0.25, 0.75]])[None, None, None]   # (1, 1, 1, 2, 2)
        >>> attention_mass(w, offset_target(2, 1)).tolist()                  # query 1 → key 0
        [[0.25]]
    """
    check_tensor("weights", weights)
    if weights.dim() != 5 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be (B, L, h, T, T), got {tuple(weights.shape)}")
    b, _, _, t, _ = weights.shape
    target = _check_target(target, t).expand(b, t, t)  # (B, T, T)
    queries = _queries(target, queries).expand(b, t)  # (B, T)
    if not queries.any():
        raise ValueError("no query to average over: the target marks no key for any of them")
    mass = (weights * target[:, None, None]).sum(-1)  # (B, L, h, T)
    picked = queries[:, None, None].to(mass.dtype)  # (B, 1, 1, T)
    return (mass * picked).sum((0, 3)) / picked.sum()  # (L, h)


def uniform_mass(target: torch.Tensor, queries: torch.Tensor | None = None) -> float:
    """What :func:`attention_mass` gives for a head that spreads each query's attention evenly
    over the keys it may see (keys 0..i): the score of a head with no preference.

    Example:
        >>> round(uniform_mass(offset_target(4, 1)), 4)     # (1/2 + 1/3 + 1/4) / 3
        0.3611
    """
    target = _check_target(target)
    b, t = (target.shape[0] if target.dim() == 3 else 1), target.shape[-1]
    visible = torch.ones(t, t).tril()  # (T, T): keys 0..i
    uniform = visible / visible.sum(-1, keepdim=True)  # (T, T), each row sums to 1
    return attention_mass(uniform.expand(b, 1, 1, t, t), target, queries).item()


def repeated_random_tokens(batch: int, n: int, vocab_size: int, generator: torch.Generator,
                           low: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The induction test's input: ``batch`` random sequences of ``n`` tokens, each repeated.

    Returns ``(ids, target, queries)``: ids (batch, 2n) int64, uniform in [low, vocab_size);
    target (2n, 2n) True from each position ``n + i`` of the second copy to position
    ``i + 1``, the token that followed the same token in the first copy; queries (2n,) True
    on the second copy but its last token (whose successor is not in the sequence). A head
    that does "find the earlier occurrence of this token, and look at what came next" scores
    near 1; one with no preference, near :func:`uniform_mass`.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> ids, target, queries = repeated_random_tokens(1, 3, 10, gen)
        >>> torch.equal(ids[:, :3], ids[:, 3:]), target.nonzero().tolist()
        (True, [[3, 1], [4, 2]])
    """
    for name, value in (("batch", batch), ("n", n), ("vocab_size", vocab_size)):
        check_positive(name, value)
    if n < 2:
        raise ValueError(f"n must be at least 2 (a token and the one after it), got {n}")
    if isinstance(low, bool) or not isinstance(low, int) or not 0 <= low < vocab_size:
        raise ValueError(f"low must be an int in [0, vocab_size={vocab_size}), got {low!r}")
    first = torch.randint(low, vocab_size, (batch, n), generator=generator)  # (B, n)
    ids = torch.cat([first, first], dim=1)  # (B, 2n)
    target = torch.zeros(2 * n, 2 * n, dtype=torch.bool)  # (2n, 2n)
    i = torch.arange(n - 1)
    target[n + i, i + 1] = True
    return ids, target, target.any(dim=-1)  # (B, 2n), (2n, 2n), (2n,)
