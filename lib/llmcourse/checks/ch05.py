"""Chapter 05 exercises: the training loop's pieces, applied where the chapter did not go.

- :func:`wsd_lr`: a schedule the chapter does not use, warm-up, stable, decay (WSD);
- :func:`cross_entropy`: the loss from logits, without overflow, skipping padded targets
  (``ignore_index``) as ``torch.nn.functional.cross_entropy`` does;
- :func:`get_doc_batch`: random windows that never cross from one document into the next,
  drawn uniformly over every window of every document.

Each checker runs the learner's function on fresh random cases drawn from its own seeded
generator (the notebook's random state is untouched). The schedule and the loss are compared
with references (the loss with ``torch.nn.functional.cross_entropy`` itself; the schedule with
:func:`wsd_lr`, tested against torch's own ``LinearLR``/``ConstantLR`` schedulers chained
together). Results must have the reference's type and dtype: a float32 loss for float32
logits, float64 for float64, ``torch.long`` token ids. ``get_doc_batch`` draws at random, so
its checker tests properties instead: shapes and dtype, windows of consecutive tokens inside
one document, the shift by one, every window reachable (the last of each document too), each
document drawn in proportion to its number of windows, reproducibility with a seeded
generator.

Example:
    >>> from llmcourse.checks.ch05 import check_cross_entropy, cross_entropy
    >>> check_cross_entropy(cross_entropy)
    ✓ cross_entropy: 9 case(s) match the reference
"""

from __future__ import annotations

import contextlib
import io
import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailed, compare, require_function

__all__ = [
    "wsd_lr", "cross_entropy", "get_doc_batch",
    "check_wsd_lr", "check_cross_entropy", "check_get_doc_batch",
]


def wsd_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int,
           max_steps: int) -> float:
    """Learning rate of update ``step`` (0-based) under warm-up, stable, decay (WSD).

        s < W:              max_lr · (s + 1) / W                       (as the chapter's warm-up)
        W ≤ s < S − D:      max_lr                                     (stable)
        S − D ≤ s < S:      max_lr − (max_lr − min_lr) · (s − (S − D)) / D   (linear decay)
        s ≥ S:              min_lr

    with W = ``warmup_steps``, D = ``decay_steps``, S = ``max_steps`` (W + D ≤ S). The decay
    starts at ``max_lr`` on step S − D and would reach ``min_lr`` on step S, as the chapter's
    cosine does. Used by MiniCPM (Hu et al., 2024) and studied by Hägele et al. (2024): the
    stable phase does not depend on S, so a run can be extended or branched before the decay.

    Example:
        >>> [wsd_lr(s, 1.0, 0.0, 2, 4, 10) for s in (0, 1, 2, 5, 6, 7, 9, 10)]
        [0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.25, 0.0]
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    decay_start = max_steps - decay_steps
    if step < decay_start:
        return max_lr
    return max_lr - (max_lr - min_lr) * (step - decay_start) / decay_steps


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -100) -> torch.Tensor:
    """Mean of −log softmax(logits)[target] over the rows whose target is not ``ignore_index``:
    logits (N, V), targets (N,) of dtype long.

        −log p_y = log Σ_j e^{z_j} − z_y,  with log Σ_j e^{z_j} = m + log Σ_j e^{z_j − m}

    Subtracting the row maximum ``m`` keeps ``exp`` from overflowing. Rows whose target is
    ``ignore_index`` (padding) count neither in the sum nor in the number of rows.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [9.0, 0.0, 0.0, 0.0]])
        >>> cross_entropy(logits, torch.tensor([2, -100]))      # only row 0 counts: log 4
        tensor(1.3863)
    """
    keep = targets != ignore_index  # (N,) rows that count
    z, y = logits[keep], targets[keep]  # (n, V), (n,)
    m = z.amax(dim=-1, keepdim=True)  # (n, 1)
    log_z = m.squeeze(-1) + (z - m).exp().sum(dim=-1).log()  # (n,) log-partition
    picked = z.gather(-1, y[:, None]).squeeze(-1)  # (n,) z_y
    return (log_z - picked).mean()


def get_doc_batch(docs: Sequence[torch.Tensor], batch_size: int, block_size: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows, each inside one document of ``docs`` (1-D tensors of
    token ids of any lengths): inputs ``x`` and targets ``y`` = ``x`` shifted by one, both
    (batch_size, block_size) and of the documents' dtype.

    A document of length L holds max(L − block_size, 0) windows (each needs block_size + 1
    tokens). Every window of every document is equally likely, so a document is drawn in
    proportion to its number of windows: draw a flat index k among all windows, find its
    document from the cumulative counts, and start at k minus the windows before it.

    Example:
        >>> docs = [torch.arange(10), torch.arange(100, 103), torch.arange(200, 206)]
        >>> x, y = get_doc_batch(docs, 4, 4, torch.Generator().manual_seed(0))
        >>> x.shape, bool((y == x + 1).all()), bool(((x >= 100) & (x < 200)).any())
        (torch.Size([4, 4]), True, False)
    """
    counts = torch.tensor([max(len(d) - block_size, 0) for d in docs])  # (D,) windows per doc
    ends = counts.cumsum(0)  # (D,) flat index just past each document's windows
    k = torch.randint(int(ends[-1]), (batch_size,), generator=generator)  # (B,) flat indices
    doc = torch.searchsorted(ends, k, right=True)  # (B,) the document holding window k
    start = k - (ends[doc] - counts[doc])  # (B,) its start inside that document
    windows = torch.stack([docs[d][s:s + block_size + 1]
                           for d, s in zip(doc.tolist(), start.tolist(), strict=True)])  # (B, T+1)
    return windows[:, :-1], windows[:, 1:]  # (B, T), (B, T)


# ------------------------------------------------------------------------ the schedule


def _wsd_cases(rng: random.Random, n_runs: int) -> list[tuple[int, float, float, int, int, int]]:
    """For each of ``n_runs`` random WSD schedules: its boundary steps and two random ones."""
    cases = []
    for i in range(n_runs):
        max_lr = 10 ** rng.uniform(-4, -2)
        min_lr = 0.0 if i == 1 else max_lr * rng.choice([0.1, rng.uniform(0.01, 0.5)])
        w = 0 if i == 2 else rng.randint(2, 60)
        d = rng.randint(2, 200)
        s = w + d + rng.randint(1, 300)  # a stable phase of at least one step
        steps = {0, 1, w - 1, w, w + 1, s - d - 1, s - d, s - d + 1, s - 1, s, s + 7,
                 rng.randrange(s), rng.randrange(s)}
        cases += [(step, max_lr, min_lr, w, d, s) for step in sorted(st for st in steps
                                                                     if st >= 0)]
    return cases


_WSD_HINTS = {
    "warm-up": "in the warm-up (step < warmup_steps) the rate is max_lr · (step + 1) / "
               "warmup_steps: step 0 already gets max_lr / W (not 0, not max_lr) and step W − 1 "
               "gets max_lr",
    "stable": "after the warm-up the rate stays at max_lr until step S − D "
              "(S = max_steps, D = decay_steps)",
    "decay": "the decay starts at max_lr on step S − D (S = max_steps, D = decay_steps) and "
             "falls in a straight line, by (max_lr − min_lr) / D per step: "
             "max_lr − (max_lr − min_lr) · (step − (S − D)) / D; linear, not cosine, and "
             "towards min_lr, not 0",
    "after the end": "from step S = max_steps on, the rate stays at min_lr",
}


def _wsd_phase(step: int, w: int, d: int, s: int) -> str:
    if step < w:
        return "warm-up"
    if step >= s:
        return "after the end"
    return "stable" if step < s - d else "decay"


def check_wsd_lr(fn: Callable[[int, float, float, int, int, int], float]) -> None:
    """Check ``fn(step, max_lr, min_lr, warmup_steps, decay_steps, max_steps)`` against
    :func:`wsd_lr` on random schedules: the first and last warm-up steps, the stable phase, the
    first, second and last decay steps, past the end, a schedule without warm-up and one that
    decays to 0. The answer must be a Python float (or a 0-d tensor). Phases are checked in
    order, each with its own hint, so a failure says which phase is wrong."""
    require_function(fn, "wsd_lr", function="my_wsd_lr")
    by_phase: dict[str, list[tuple[int, float, float, int, int, int]]] = {p: [] for p in
                                                                          _WSD_HINTS}
    for case in _wsd_cases(random.Random(505), 4):
        step, _, _, w, d, s = case
        by_phase[_wsd_phase(step, w, d, s)].append(case)
    for phase, cases in by_phase.items():
        with contextlib.redirect_stdout(io.StringIO()):  # one pass line for all phases, below
            compare(fn, wsd_lr, cases, name=f"wsd_lr ({phase})", atol=1e-12, rtol=1e-9,
                    hint=_WSD_HINTS[phase])
    print(f"✓ wsd_lr: {sum(map(len, by_phase.values()))} case(s) match the reference "
          f"({', '.join(f'{len(c)} {p}' for p, c in by_phase.items())})")


# ------------------------------------------------------------------------ the loss


def _torch_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int) -> torch.Tensor:
    # By keyword: F.cross_entropy's third positional parameter is the class weights.
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


def check_cross_entropy(fn: Callable[..., torch.Tensor]) -> None:
    """Check ``fn(logits, targets, ignore_index)`` against ``torch.nn.functional.cross_entropy``
    (mean over the rows that count), on random logits including ones large enough to overflow a
    naive ``exp``, padded rows to skip, another ``ignore_index``, and float64 logits (whose
    loss must stay float64)."""
    require_function(fn, "cross_entropy", function="my_cross_entropy")
    gen = torch.Generator().manual_seed(505)

    def case(n: int, v: int, scale: float = 1.0, shift: float = 0.0, pad: float = 0.0,
             ignore: int = -100, dtype: torch.dtype = torch.float32
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
        logits = torch.randn(n, v, generator=gen, dtype=torch.float64) * scale + shift  # (N, V)
        targets = torch.randint(0, v, (n,), generator=gen)  # (N,)
        padded = torch.rand(n, generator=gen) < pad  # (N,)
        padded[0] = False  # at least one row counts (with none, the mean is 0/0 = NaN)
        if pad > 0:
            padded[-1] = True  # and at least one is padding
        return logits.to(dtype), targets.masked_fill(padded, ignore), ignore

    cases = [
        case(1, 4, scale=0.0),  # uniform: log 4
        case(8, 10),
        case(32, 84, scale=3.0),
        case(6, 3, scale=300.0),  # exp(z) overflows float32 without the max
        case(4, 50, shift=-500.0),  # exp(z) underflows to 0 without the max: log 0
        case(12, 20, pad=0.4),  # padded rows: mean over the others
        case(16, 84, scale=2.0, pad=0.5),
        case(10, 7, pad=0.3, ignore=0),  # here the padding id is 0, a real class otherwise
        case(9, 11, scale=2.0, pad=0.3, dtype=torch.float64),  # float64 stays float64
    ]
    compare(fn, _torch_cross_entropy, cases, name="cross_entropy", atol=1e-4, rtol=1e-5,
            hint="select the rows whose target is not ignore_index first (a boolean mask), "
                 "then take the mean over those rows of log Σ exp(z) − z[target], computing "
                 "log Σ exp(z) as m + log Σ exp(z − m) with m the row maximum; keep the "
                 "logits' dtype")


# ------------------------------------------------------------------------ the batches


def _fail(msg: str, hint: str) -> None:
    raise CheckFailed(f"✗ get_doc_batch: {msg}\n  hint: {hint}")


def _docs(lengths: list[int]) -> list[torch.Tensor]:
    """Documents whose values give away where they come from: document d, position i holds
    1000·(d + 1) + i (ids of dtype long, as a tokenizer returns them)."""
    return [1000 * (d + 1) + torch.arange(n) for d, n in enumerate(lengths)]


def check_get_doc_batch(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Check ``fn(docs, batch_size, block_size, generator)`` by its properties on random
    document lengths (some too short to hold a window), with values that give away each
    token's document and position."""
    require_function(fn, "get_doc_batch", function="my_get_doc_batch")
    rng = random.Random(505)
    count = 0
    plans = [(3, 4, 8, False), (4, 3000, 8, True), (5, 6000, 6, True), (2, 16, 1, False),
             (3, 2, 64, False)]
    for n_docs, b, t, many in plans:
        hi = 3 * t + 4
        lengths = [rng.randint(t + 2, hi) for _ in range(n_docs)]
        if many:
            lengths[rng.randrange(n_docs)] = t + 1  # a document with exactly one window
            lengths.insert(rng.randrange(n_docs + 1), rng.randint(1, t))  # one with none
        docs = _docs(lengths)
        counts = [max(n - t, 0) for n in lengths]
        total = sum(counts)
        case = f"document lengths {lengths}, batch_size={b}, block_size={t}"
        try:
            x, y = fn([d.clone() for d in docs], b, t, torch.Generator().manual_seed(count))
        except NotImplementedError:
            raise CheckFailed("✗ get_doc_batch: the exercise is not implemented yet") from None
        except Exception as err:
            raise CheckFailed(
                f"✗ get_doc_batch: raised {type(err).__name__}: {err}\n  case: {case}\n  hint: "
                "a document of length L holds max(L − block_size, 0) windows; one shorter than "
                "block_size + 1 holds none and must never be drawn") from err
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            _fail(f"expected two tensors, got {type(x).__name__}, {type(y).__name__} ({case})",
                  "return x, y")
        if x.shape != (b, t) or y.shape != (b, t):
            _fail(f"shapes x {tuple(x.shape)}, y {tuple(y.shape)}; expected both "
                  f"{(b, t)} ({case})", "stack batch_size windows of block_size tokens")
        for name, got in (("x", x), ("y", y)):
            if got.dtype != torch.long:
                _fail(f"{name} has dtype {got.dtype}; token ids must stay torch.long, as the "
                      f"documents are ({case})",
                      "an embedding looks ids up, it needs integers: slice the documents "
                      "themselves (a float buffer filled with ids turns them into floats)")
        doc = x[:, 0] // 1000 - 1  # (B,) which document each window comes from
        start = x[:, 0] % 1000  # (B,) and where in it
        expected = x[:, :1] + torch.arange(t)  # (B, T)
        if not torch.equal(x, expected) or bool((doc < 0).any() | (doc >= len(docs)).any()):
            row = int((x != expected).any(dim=1).nonzero()[0]) if not torch.equal(
                x, expected) else 0
            _fail(f"row {row} of x is not a window of consecutive tokens of one document: "
                  f"{x[row].tolist()[:10]} ({case}; document d holds 1000·(d + 1) + position)",
                  "each row is docs[d][i : i + block_size] for one document d and a start i")
        last_start = torch.tensor([c - 1 for c in counts])[doc]  # (B,) per window's document
        over = start > last_start
        if bool(over.any()):
            r = int(over.nonzero()[0])
            _fail(f"a window of document {int(doc[r])} (length {lengths[int(doc[r])]}) starts "
                  f"at {int(start[r])}, so its target runs past the end of the document or the "
                  f"document is too short for a window ({case})",
                  "a window needs block_size + 1 tokens: starts go from 0 to "
                  "len(doc) − block_size − 1, and a document shorter than block_size + 1 has none")
        if not torch.equal(y, x + 1):
            row = int((y != x + 1).any(dim=1).nonzero()[0])
            _fail(f"y is not x shifted by one token: row {row} x={x[row].tolist()[:6]} y="
                  f"{y[row].tolist()[:6]} ({case})",
                  "y is docs[d][i + 1 : i + 1 + block_size]: each position's next token")
        if many:
            seen = set(zip(doc.tolist(), start.tolist(), strict=True))
            missing = [(d, s) for d, c in enumerate(counts) for s in range(c)
                       if (d, s) not in seen]
            if missing:
                _fail(f"with {b} windows, none was (document, start) = {missing[:4]} ({case}); "
                      "every window of every document should be possible",
                      "torch.randint(high, …) excludes high: the last window of a document of "
                      "length L starts at L − block_size − 1")
            for d, c in enumerate(counts):
                p = c / total
                n_d = int((doc == d).sum())
                sd = math.sqrt(b * p * (1 - p)) + 1e-9
                if abs(n_d - b * p) > 6 * sd + 1:
                    _fail(f"document {d} (length {lengths[d]}, {c} of the {total} windows) was "
                          f"drawn {n_d} times in {b}; every window equally likely means about "
                          f"{b * p:.0f} ({case})",
                          "draw a window, not a document: a document is chosen in proportion "
                          "to its number of windows. Draw a flat index k in [0, total windows) "
                          "and find its document with the cumulative counts "
                          "(torch.searchsorted), or torch.multinomial on the counts")
        x2, _ = fn([d.clone() for d in docs], b, t, torch.Generator().manual_seed(count))
        if not torch.equal(x, x2):
            _fail(f"two calls with generators seeded alike gave different batches ({case})",
                  "draw every random number from the generator: torch.randint(…, "
                  "generator=generator), torch.multinomial(…, generator=generator)")
        count += 1
    print(f"✓ get_doc_batch: {count} case(s) have the right windows, shift, dtype and draws")
