"""Pre-LN vs post-LN, measured: gradient norms by depth at initialisation, and a short training
run at one learning rate with and without warm-up (chapter 03, section 7).

Xiong et al. (2020), *On Layer Normalization in the Transformer Architecture* (ICML), analyse
the two arrangements at initialisation with Xavier-initialised weight matrices (Gaussian,
variance 2 / (fan_in + fan_out)), zero biases and LayerNorm γ = 1, β = 0, and their Fig. 3
plots the gradient norm of W², the second matrix of each feed-forward network (here
``mlp.c_proj.weight``): layer by layer, and for the last layer at several depths.
:func:`ffn_grad_norms` measures that quantity on a stack of the course's
:class:`~llmcourse.nn.block.Block`, in that initialisation or in GPT-2's (weights of standard
deviation 0.02, the residual projections scaled by 1/√(2L)); :func:`train_tiny_lm` trains a
small language model of either arrangement on a synthetic task.

Everything runs in float64 on one CPU thread, so the numbers are the same on every run, and
draws its random numbers from its own seeded generators: the global random state is untouched.

Example:
    >>> g = ffn_grad_norms(3, norm_first=True, seeds=[0], n_embd=16, n_head=2, seq_len=8)
    >>> g.shape, g.dtype                     # one gradient norm per block
    (torch.Size([3]), torch.float64)
    >>> bool((g > 0).all())
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_positive
from llmcourse.nn.block import Block
from llmcourse.nn.norms import LayerNorm
from llmcourse.training.loop import TrainConfig, lr_at

__all__ = ["INITS", "init_blocks_", "make_stack", "ffn_grad_norms", "last_ffn_grad_by_depth",
           "repeat_batch", "TinyLM", "warmup_lr", "train_tiny_lm"]

INITS = ("xavier", "gpt2")  # Xiong et al.'s analysis, GPT-2's own


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One CPU thread inside the block: these matrices are tiny, and coordinating threads
    costs more than it saves (and makes float sums depend on the thread count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _xavier_normal_(w: torch.Tensor, gen: torch.Generator) -> None:
    """Xavier (Glorot) normal: N(0, 2 / (fan_in + fan_out)) for a (fan_out, fan_in) matrix."""
    fan_out, fan_in = w.shape
    with torch.no_grad():
        w.copy_(torch.randn(w.shape, generator=gen, dtype=w.dtype)
                * math.sqrt(2.0 / (fan_in + fan_out)))


def _normal_(w: torch.Tensor, std: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        w.copy_(torch.randn(w.shape, generator=gen, dtype=w.dtype) * std)


def init_blocks_(blocks: Sequence[Block], init: str, gen: torch.Generator) -> None:
    """Initialise the weight matrices of ``blocks`` in place; biases 0, LayerNorm γ = 1, β = 0.

    ``"xavier"``: every matrix Xavier normal, W_Q, W_K and W_V (stacked in ``c_attn``) each as
    its own C × C matrix, as in Xiong et al.'s analysis. ``"gpt2"``: every matrix
    N(0, 0.02²), the two residual projections (``attn.c_proj``, ``mlp.c_proj``) N(0, (0.02 /
    √(2L))²), as :class:`llmcourse.models.gpt.GPT` does.

    Example:
        >>> blocks = [Block(8, 2) for _ in range(2)]
        >>> init_blocks_(blocks, "gpt2", torch.Generator().manual_seed(0))
        >>> round(blocks[0].mlp.c_fc.weight.std().item(), 2)
        0.02
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    n_layer = len(blocks)
    for block in blocks:
        c = block.attn.n_embd
        for name, p in block.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.zero_()
                elif name.startswith("ln_"):
                    p.fill_(1.0)  # γ
        if init == "xavier":
            for i in range(3):  # W_Q, W_K, W_V: rows [0, C), [C, 2C), [2C, 3C) of c_attn
                _xavier_normal_(block.attn.c_attn.weight[i * c:(i + 1) * c], gen)  # (C, C)
            for w in (block.attn.c_proj.weight, block.mlp.c_fc.weight, block.mlp.c_proj.weight):
                _xavier_normal_(w, gen)
        else:
            for w in (block.attn.c_attn.weight, block.mlp.c_fc.weight):
                _normal_(w, 0.02, gen)
            for w in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
                _normal_(w, 0.02 / math.sqrt(2 * n_layer), gen)


def make_stack(n_layer: int, *, norm_first: bool, init: str = "xavier", seed: int = 0,
               n_embd: int = 64, n_head: int = 4) -> nn.ModuleList:
    """``n_layer`` course :class:`Block` s of one arrangement, initialised by
    :func:`init_blocks_`, in float64.

    Example:
        >>> stack = make_stack(2, norm_first=False, n_embd=8, n_head=2)
        >>> len(stack), stack[0].norm_first, stack[0].ln_1.weight.dtype
        (2, False, torch.float64)
    """
    check_positive("n_layer", n_layer)
    with torch.random.fork_rng(devices=[]):  # the default init (overwritten) draws globally
        blocks = nn.ModuleList(Block(n_embd, n_head, norm_first=norm_first)
                               for _ in range(n_layer)).double()
    init_blocks_(list(blocks), init, torch.Generator().manual_seed(seed))
    return blocks


def ffn_grad_norms(n_layer: int, *, norm_first: bool, init: str = "xavier",
                   seeds: Iterable[int] = range(3), n_embd: int = 64, n_head: int = 4,
                   batch: int = 8, seq_len: int = 32, vocab: int = 128) -> torch.Tensor:
    """‖∂loss/∂W²_l‖ (Frobenius) for every block l of a freshly initialised stack: W² is the
    feed-forward network's second matrix, ``mlp.c_proj.weight``. Mean over ``seeds``.

    One backward pass of a language-model-style loss: input x ~ N(0, 1) of shape
    (batch, seq_len, n_embd), the stack, a final LayerNorm (γ = 1, β = 0) for pre-LN only (a
    post-LN stack's output already leaves a LayerNorm), logits through a fixed random
    (n_embd, vocab) matrix of variance 1/n_embd, cross-entropy against random targets.

    Returns:
        float64 tensor (n_layer,), entry 0 next to the input, entry -1 next to the output.

    Example:
        >>> post = ffn_grad_norms(4, norm_first=False, seeds=[0, 1], n_embd=16, n_head=2)
        >>> post.shape
        torch.Size([4])
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    total = torch.zeros(n_layer, dtype=torch.float64)
    with _one_thread():
        for seed in seeds:
            blocks = make_stack(n_layer, norm_first=norm_first, init=init, seed=seed,
                                n_embd=n_embd, n_head=n_head)
            g = torch.Generator().manual_seed(1000 + seed)
            x = torch.randn(batch, seq_len, n_embd, generator=g, dtype=torch.float64)  # (B,T,C)
            w_out = torch.randn(n_embd, vocab, generator=g,
                                dtype=torch.float64) / n_embd**0.5  # (C, V)
            targets = torch.randint(0, vocab, (batch, seq_len), generator=g)  # (B, T)
            h = x
            for block in blocks:
                h = block(h)  # (B, T, C)
            if norm_first:
                h = F.layer_norm(h, (n_embd,))  # LN_f, pre-LN only
            loss = F.cross_entropy((h @ w_out).view(-1, vocab), targets.view(-1))
            loss.backward()
            total += torch.stack([b.mlp.c_proj.weight.grad.norm() for b in blocks])  # (L,)
    return total / len(seeds)


def last_ffn_grad_by_depth(depths: Iterable[int], *, norm_first: bool, init: str = "xavier",
                           seeds: Iterable[int] = range(3), **kwargs: int) -> torch.Tensor:
    """The last block's ‖∂loss/∂W²‖ (:func:`ffn_grad_norms`) for stacks of each depth in
    ``depths``: Xiong et al.'s Theorem 1 bounds it by a constant for post-LN and by a constant
    times 1/√L for pre-LN.

    Returns:
        float64 tensor (len(depths),).

    Example:
        >>> last_ffn_grad_by_depth([2, 4], norm_first=True, seeds=[0], n_embd=16, n_head=2).shape
        torch.Size([2])
    """
    seeds = list(seeds)
    return torch.stack([ffn_grad_norms(n, norm_first=norm_first, init=init, seeds=seeds,
                                       **kwargs)[-1] for n in depths])


# ------------------------------------------------------------------------------ training


def repeat_batch(batch: int, seq_len: int, vocab: int, gen: torch.Generator,
                 periods: tuple[int, int] = (2, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the *repeat* task: each sequence repeats a random pattern of P tokens, P
    drawn per sequence from ``periods`` (inclusive). Once a model has seen one period, every
    next token can be read P positions back: attention must find where.

    Returns:
        ``(x, y)``, int64 (batch, seq_len) each; y is x shifted by one (the next tokens).

    Example:
        >>> x, y = repeat_batch(1, 9, 10, torch.Generator().manual_seed(0), periods=(3, 3))
        >>> x.tolist(), y.tolist()
        ([[9, 3, 0, 9, 3, 0, 9, 3, 0]], [[3, 0, 9, 3, 0, 9, 3, 0, 9]])
    """
    lo, hi = periods
    if not 1 <= lo <= hi:
        raise ValueError(f"periods must be (lo, hi) with 1 <= lo <= hi, got {periods!r}")
    period = torch.randint(lo, hi + 1, (batch, 1), generator=gen)  # (B, 1)
    pattern = torch.randint(0, vocab, (batch, hi), generator=gen)  # (B, hi)
    where = torch.arange(seq_len + 1) % period  # (B, T+1): index into the pattern
    seq = torch.gather(pattern, 1, where)  # (B, T+1)
    return seq[:, :-1], seq[:, 1:]


class TinyLM(nn.Module):
    """A small GPT-shaped language model of either arrangement: token and position embeddings,
    ``n_layer`` course :class:`Block` s, a final LayerNorm for pre-LN only, a linear output
    layer (not tied). float64.

    With ``init="xavier"`` every matrix is Xavier normal (:func:`init_blocks_`) and the two
    embeddings N(0, ½) each, so that the blocks' input has variance 1 as in
    :func:`ffn_grad_norms`; with ``"gpt2"`` everything is GPT-2's (0.02).

    Example:
        >>> model = TinyLM(vocab=10, seq_len=8, n_layer=2, n_embd=16, n_head=2, norm_first=False)
        >>> model(torch.zeros(3, 8, dtype=torch.long)).shape      # (B, T) -> (B, T, vocab)
        torch.Size([3, 8, 10])
    """

    def __init__(self, *, vocab: int = 16, seq_len: int = 24, n_layer: int = 6,
                 n_embd: int = 48, n_head: int = 4, norm_first: bool, init: str = "xavier",
                 seed: int = 0) -> None:
        super().__init__()
        check_positive("n_layer", n_layer)
        with torch.random.fork_rng(devices=[]):  # the default init (overwritten) draws globally
            self.wte = nn.Embedding(vocab, n_embd)
            self.wpe = nn.Embedding(seq_len, n_embd)
            self.blocks = nn.ModuleList(Block(n_embd, n_head, norm_first=norm_first)
                                        for _ in range(n_layer))
            self.ln_f = LayerNorm(n_embd) if norm_first else None
            self.head = nn.Linear(n_embd, vocab, bias=False)
        self.double()
        gen = torch.Generator().manual_seed(seed)
        init_blocks_(list(self.blocks), init, gen)
        if init == "xavier":
            _normal_(self.wte.weight, 0.5**0.5, gen)
            _normal_(self.wpe.weight, 0.5**0.5, gen)
            _xavier_normal_(self.head.weight, gen)
        else:
            for w in (self.wte.weight, self.wpe.weight, self.head.weight):
                _normal_(w, 0.02, gen)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids ``idx`` (B, T)."""
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        if self.ln_f is not None:
            x = self.ln_f(x)  # (B, T, C)
        return self.head(x)  # (B, T, V)


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """The learning rate at ``step`` (0-based): a linear rise over the first ``warmup_steps``
    steps, lr · (step + 1) / warmup_steps, then ``lr``; no warm-up when warmup_steps is 0.
    It is :func:`llmcourse.training.loop.lr_at` with no decay.

    Example:
        >>> [warmup_lr(s, 1.0, 4) for s in range(6)]
        [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    # The training loop's own schedule, with the cosine flattened (min_lr = learning_rate):
    # one warm-up formula in the library, not a second one here.
    cfg = TrainConfig(max_steps=max(warmup_steps, step + 1), learning_rate=lr, min_lr=lr,
                      warmup_steps=warmup_steps)
    return lr_at(step, cfg)


def train_tiny_lm(*, norm_first: bool, lr: float, warmup_steps: int = 0, steps: int = 200,
                  batch: int = 8, seed: int = 0, init: str = "xavier", vocab: int = 16,
                  seq_len: int = 24, n_layer: int = 6, n_embd: int = 48,
                  n_head: int = 4) -> list[float]:
    """Train a :class:`TinyLM` on :func:`repeat_batch` and return the loss of every step.

    The defaults are chapter 03's run: 6 blocks of width 48 with 4 heads, a vocabulary of 16,
    200 steps of 8 sequences of 24 tokens. Adam with β = (0.9, 0.98) and ε = 1e-9 (Vaswani et
    al., 2017), the learning rate :func:`warmup_lr`, a fresh batch every step (so each loss is
    measured on sequences the model has not seen). The batches and the initial weights depend
    on ``seed`` only: runs that differ in arrangement or schedule see the same data. float64
    on one thread: the same losses on every run.

    Example:
        >>> losses = train_tiny_lm(norm_first=True, lr=1e-3, steps=3, n_layer=1, n_embd=16,
        ...                        n_head=2, seq_len=8)
        >>> len(losses)
        3
    """
    check_positive("steps", steps)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    model = TinyLM(vocab=vocab, seq_len=seq_len, n_layer=n_layer, n_embd=n_embd,
                   n_head=n_head, norm_first=norm_first, init=init, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9,
                           foreach=True)  # one op per step for all tensors: faster on a CPU
    data = torch.Generator().manual_seed(10_000 + seed)
    losses = []
    with _one_thread():
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = warmup_lr(step, lr, warmup_steps)
            x, y = repeat_batch(batch, seq_len, vocab, data)  # (B, T) each
            loss = F.cross_entropy(model(x).view(-1, vocab), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses
