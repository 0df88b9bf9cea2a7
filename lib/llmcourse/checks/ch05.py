"""Chapter 05 exercises: three pieces of the training loop.

- :func:`lr_schedule`: linear warmup, then cosine decay to a floor;
- :func:`cross_entropy`: the loss, from logits, without overflow;
- :func:`get_batch`: random windows of the token stream and their next tokens.

The schedule and the loss are compared with references on fixed cases (the schedule with
:func:`llmcourse.training.loop.lr_at`, itself tested against torch's own schedulers; the loss with
``torch.nn.functional.cross_entropy``). ``get_batch`` draws at random, so its checker tests
properties instead: shapes, contiguous windows, the shift by one, every start reachable
(the last one included), and reproducibility with a seeded generator.

Example:
    >>> from llmcourse.checks.ch05 import check_cross_entropy, cross_entropy
    >>> check_cross_entropy(cross_entropy)
    ✓ cross_entropy: 7 case(s) match the reference
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailed, compare, require_function
from llmcourse.training.loop import TrainConfig, lr_at

__all__ = [
    "lr_schedule", "cross_entropy", "get_batch",
    "check_lr_schedule", "check_cross_entropy", "check_get_batch",
]


def lr_schedule(step: int, max_lr: float, min_lr: float, warmup_steps: int,
                max_steps: int) -> float:
    """Learning rate of update ``step`` (0-based): warmup to ``max_lr``, cosine to ``min_lr``.

        s < W:        max_lr · (s + 1) / W
        W ≤ s < S:    min_lr + ½ (max_lr − min_lr)(1 + cos(π (s − W) / (S − W)))
        s ≥ S:        min_lr

    Example:
        >>> lr_schedule(0, 1.0, 0.0, 10, 100), lr_schedule(55, 1.0, 0.0, 10, 100)
        (0.1, 0.5)
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of −log softmax(logits)[target] over the rows: logits (N, V), targets (N,).

        −log p_y = −(z_y − log Σ_j e^{z_j}),  with log Σ_j e^{z_j} = m + log Σ_j e^{z_j − m}

    Subtracting the row maximum ``m`` keeps ``exp`` from overflowing.

    Example:
        >>> cross_entropy(torch.tensor([[0.0, 0.0, 0.0, 0.0]]), torch.tensor([2]))  # log 4
        tensor(1.3863)
    """
    m = logits.amax(dim=-1, keepdim=True)  # (N, 1)
    log_z = m.squeeze(-1) + (logits - m).exp().sum(dim=-1).log()  # (N,) log-partition
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)  # (N,) z_y
    return (log_z - picked).mean()


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``data`` (1-D), as inputs x and targets y = x shifted
    by one, both (batch_size, block_size). Starts are uniform over 0 .. len(data) − block_size
    − 1, drawn from ``generator``.

    Example:
        >>> x, y = get_batch(torch.arange(10), 2, 4, torch.Generator().manual_seed(0))
        >>> bool((y == x + 1).all())
        True
    """
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    x = torch.stack([data[i:i + block_size] for i in starts])  # (B, T)
    y = torch.stack([data[i + 1:i + 1 + block_size] for i in starts])  # (B, T)
    return x, y


def check_lr_schedule(fn: Callable[[int, float, float, int, int], float]) -> None:
    """Check ``fn(step, max_lr, min_lr, warmup_steps, max_steps)`` against the library's
    schedule: the first and last warmup steps, the peak, the middle and the end of the cosine,
    past the end, and a schedule without warmup."""
    require_function(fn, "lr_schedule")
    grid = [(1e-3, 1e-4, 100, 2000), (1.0, 0.0, 10, 100), (6e-4, 6e-5, 0, 50)]
    cases = []
    for max_lr, min_lr, w, s in grid:
        for step in sorted({0, 1, max(w - 1, 0), w, w + 1, (w + s) // 2, s - 1, s, s + 5}):
            cases.append((step, max_lr, min_lr, w, s))

    def reference(step: int, max_lr: float, min_lr: float, w: int, s: int) -> float:
        cfg = TrainConfig(max_steps=s, learning_rate=max_lr, min_lr=min_lr, warmup_steps=w)
        return lr_at(step, cfg)

    compare(fn, reference, cases, name="lr_schedule", atol=1e-12, rtol=1e-9,
            hint="warmup is max_lr·(step+1)/warmup_steps (step 0 is not 0); the cosine starts "
                 "at max_lr when step = warmup_steps and ends at min_lr, not at 0")


def check_cross_entropy(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(logits, targets)`` against ``torch.nn.functional.cross_entropy`` (mean over
    rows), including logits large enough to overflow a naive ``exp``."""
    require_function(fn, "cross_entropy")
    gen = torch.Generator().manual_seed(505)
    cases = [
        (torch.zeros(1, 4), torch.tensor([2])),  # uniform: log 4
        (torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]]), torch.tensor([0, 1])),
        (torch.randn(8, 10, generator=gen), torch.randint(0, 10, (8,), generator=gen)),
        (torch.randn(32, 84, generator=gen) * 3, torch.randint(0, 84, (32,), generator=gen)),
        (torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 800.0, 0.0]]), torch.tensor([0, 2])),
        (torch.randn(5, 3, generator=gen) * 200, torch.randint(0, 3, (5,), generator=gen)),
        (torch.randn(3, 50, generator=gen) - 500, torch.randint(0, 50, (3,), generator=gen)),
    ]
    compare(fn, F.cross_entropy, cases, name="cross_entropy", atol=1e-4, rtol=1e-5,
            hint="take the mean over rows of log Σ exp(z) − z[target], computing log Σ exp(z) "
                 "as m + log Σ exp(z − m) with m the row maximum (softmax over the last axis)")


def _fail(msg: str, hint: str) -> None:
    raise CheckFailed(f"✗ get_batch: {msg}\n  hint: {hint}")


def check_get_batch(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(data, batch_size, block_size, generator)`` by its properties on streams whose
    values give away their positions (``data[i] = 3·i``)."""
    require_function(fn, "get_batch")
    count = 0
    for n, b, t in [(50, 4, 8), (12, 400, 8), (9, 300, 8), (200, 16, 1), (1000, 3, 64)]:
        data = torch.arange(n) * 3
        case = f"data=arange({n})·3, batch_size={b}, block_size={t}"
        try:
            x, y = fn(data, b, t, torch.Generator().manual_seed(count))
        except NotImplementedError:
            raise CheckFailed("✗ get_batch: the exercise is not implemented yet") from None
        except Exception as err:
            raise CheckFailed(f"✗ get_batch: raised {type(err).__name__}: {err}\n  case: {case}"
                              "\n  hint: a window needs block_size + 1 tokens, so the last "
                              "start is len(data) − block_size − 1") from err
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            _fail(f"expected two tensors, got {type(x).__name__}, {type(y).__name__} ({case})",
                  "return x, y")
        if x.shape != (b, t) or y.shape != (b, t):
            _fail(f"shapes x {tuple(x.shape)}, y {tuple(y.shape)}; expected both "
                  f"{(b, t)} ({case})", "stack batch_size windows of block_size tokens")
        starts = x[:, 0] // 3
        windows = (starts[:, None] + torch.arange(t)) * 3  # (B, T)
        if not torch.equal(x, windows):
            row = int((x != windows).any(dim=1).nonzero()[0])
            _fail(f"row {row} of x is not a window of consecutive tokens: {x[row].tolist()[:10]}"
                  f" ({case})", "each row is data[i : i + block_size] for a random start i")
        if not torch.equal(y, x + 3):
            row = int((y != x + 3).any(dim=1).nonzero()[0])
            _fail(f"y is not x shifted by one token: row {row} x={x[row].tolist()[:6]} y="
                  f"{y[row].tolist()[:6]} ({case})",
                  "y is data[i + 1 : i + 1 + block_size]: each position's next token")
        if starts.min() < 0 or starts.max() > n - t - 1:
            _fail(f"a window starts at {int(starts.max())}, past the last valid start "
                  f"{n - t - 1} ({case})", "starts go from 0 to len(data) − block_size − 1")
        if b * 1.0 / (n - t) >= 30:  # enough draws to see every start (miss chance < 1e-12)
            seen = set(starts.tolist())
            missing = sorted(set(range(n - t)) - seen)
            if missing:
                _fail(f"with {b} windows no window started at {missing} ({case}); every start "
                      f"0..{n - t - 1} should be possible",
                      "torch.randint(high, …) excludes high: use high = len(data) − block_size")
        x2, _ = fn(data, b, t, torch.Generator().manual_seed(count))
        if not torch.equal(x, x2):
            _fail(f"two calls with generators seeded alike gave different batches ({case})",
                  "draw the starts with torch.randint(…, generator=generator)")
        count += 1
    print(f"✓ get_batch: {count} case(s) have the right windows, shift and starts")
