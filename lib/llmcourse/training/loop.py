"""The training loop: AdamW, warmup + cosine, gradient clipping, evaluation, checkpoints.

One training step is the seed's recipe, in order:

    x, y = get_batch(...)                    data: a batch of windows and their next tokens
    logits, loss = model(x, y)               forward pass and loss (mean cross-entropy)
    optimizer.zero_grad(); loss.backward()   backward pass: d loss / d every parameter
    clip_grad_norm_(params, grad_clip)       one unlucky batch cannot take a huge step
    optimizer.step()                         update, at the learning rate of this step

Every ``eval_interval`` steps the loss is measured on *fixed* batches of the training works and
of the held-out works (the same windows each time, so the curve's wiggles are the model's, not
the sampling's), and a checkpoint is written (:mod:`llmcourse.models.checkpoint`). A run can be
stopped and resumed: the checkpoint holds the optimizer state, the step and the random-number
generators, so the resumed run takes exactly the steps the uninterrupted one would have.

``TrainConfig(dtype="bf16")`` runs the forward and backward passes under bfloat16 autocast
while the weights, gradients and optimizer state stay float32
(:mod:`llmcourse.training.precision`); the default ``"fp32"`` uses no autocast at all.

**The batch is global.** ``batch_size`` is the number of sequences behind one optimizer step,
whatever else is chosen. ``grad_accum_steps = k`` runs it as k micro-batches of
``batch_size / k`` rows, one after the other, summing their gradients before the one step:
the memory of a small batch, the update of the large one. Each micro-batch's mean loss is
weighted by its share of the batch's scored tokens, so the summed gradient is exactly the
gradient of the whole batch's mean loss:

    ∇ L = ∇ (1/N) Σₙ ℓₙ = Σᵢ (Nᵢ/N) ∇ Lᵢ        Lᵢ = mean loss of micro-batch i, Nᵢ tokens

(Nᵢ/N = 1/k for a GPT's equal windows; translation pairs have unequal lengths.) Under
``torchrun`` the batch is also split over the processes, each taking its own rows, and DDP
averages their gradients (:mod:`llmcourse.training.distributed`): the same update again.
``activation_checkpointing=True`` trades compute for memory in another way: the GPT (or the
Llama) keeps only each block's input and recomputes the rest in the backward pass
(:class:`~llmcourse.models.gpt.GPT`).

The same loop trains the Llama-style model of chapter 10 (:class:`~llmcourse.models.llama.
Llama`): it takes the GPT's inputs and returns its outputs.

The command ``python -m llmcourse.training course --out data/checkpoints/NAME`` trains the
course's own GPT-2-format checkpoint (see :mod:`llmcourse.training.cli`).

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> torch.manual_seed(0) and None
    >>> model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
    >>> stream = torch.arange(200) % 16                   # a perfectly predictable "text"
    >>> cfg = TrainConfig(max_steps=60, batch_size=4, block_size=8, learning_rate=3e-2,
    ...                   warmup_steps=5, eval_interval=30, eval_batches=2, progress=False)
    >>> history = train(model, stream, stream, cfg)
    >>> history.steps, history.val_loss[-1] < 0.5 * history.val_loss[0]
    ([0, 30, 60], True)
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from llmcourse.core.torch_modes import eval_mode
from llmcourse.models.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
from llmcourse.models.gpt import GPT
from llmcourse.models.llama import Llama
from llmcourse.models.seq2seq import Seq2Seq
from llmcourse.text.number_words import PairBatch
from llmcourse.training import distributed
from llmcourse.training.batches import batch_rows, draw_batch
from llmcourse.training.config import TrainConfig
from llmcourse.training.precision import autocast, check_master_weights

__all__ = ["TrainConfig", "History", "configure_optimizer", "lr_at", "estimate_loss",
           "evaluate_stream", "train"]


@dataclass
class History:
    """What a run measured. At each evaluation (step 0, every ``eval_interval`` steps, the
    end): ``steps``, ``train_loss`` and ``val_loss`` (mean cross-entropy in nats per token on
    the fixed evaluation batches), ``lr`` (of the next update) and ``elapsed`` (seconds of
    training so far). Every ``log_interval`` steps: ``log_steps`` and ``log_loss``, the loss of
    that step's training batch (noisier, and with dropout on)."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    log_steps: list[int] = field(default_factory=list)
    log_loss: list[float] = field(default_factory=list)


def configure_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter, 2019) with weight decay on the matrices only.

    Decay pulls weights toward 0. That regularizes the matrices of the linear layers and the
    embeddings (every parameter with ≥ 2 dims), but biases and LayerNorm gains/shifts are
    offsets and scales, where pulling toward 0 only hurts: they get ``weight_decay=0``. A tied
    matrix (embedding = output layer) appears once.
    """
    decay, no_decay = [], []
    for p in model.parameters():  # parameters() yields a shared tensor once
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.device(cfg.device).type == "cuda"  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=fused or None)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then cosine decay.

        warmup, s < W:   η(s) = η_max · (s + 1) / W
        then, s ≥ W:     η(s) = η_min + ½ (η_max − η_min) (1 + cos(π (s − W) / (S − W)))
        after the end:   η(s) = η_min                            (S = max_steps)

    Warmup lets Adam's moment estimates settle before large steps; the cosine spends most
    steps at a high rate and anneals at the end (Loshchilov & Hutter, 2017).

    Example:
        >>> cfg = TrainConfig(max_steps=100, learning_rate=1.0, min_lr=0.0, warmup_steps=10)
        >>> [round(lr_at(s, cfg), 3) for s in (0, 9, 10, 55, 100)]
        [0.1, 1.0, 1.0, 0.5, 0.0]
    """
    w, s_max = cfg.warmup_steps, cfg.max_steps
    if step < w:
        return cfg.learning_rate * (step + 1) / w
    if step >= s_max:
        return cfg.min_lr
    progress = (step - w) / (s_max - w)  # in [0, 1)
    return cfg.min_lr + 0.5 * (cfg.learning_rate - cfg.min_lr) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def estimate_loss(model: nn.Module, stream: torch.Tensor | PairBatch, *, batch_size: int,
                  block_size: int, n_batches: int, seed: int) -> float:
    """Mean loss on ``n_batches`` random windows (or translation pairs) drawn with a generator
    seeded by ``seed``: the same batches at every call, so successive estimates differ only by
    the model."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with eval_mode(model):  # dropout off; the mode comes back even if a batch fails
        for _ in range(n_batches):
            args, kwargs = draw_batch(stream, batch_size, block_size, gen)
            total += model(*args, **kwargs)[1].item()
    return total / n_batches


@torch.no_grad()
def evaluate_stream(model: GPT | Llama, stream: torch.Tensor, *, block_size: int,
                    batch_size: int = 16) -> tuple[float, int]:
    """Loss over a whole stream, every token predicted once: ``(mean nats per token, number of
    tokens predicted)``. The stream is cut into consecutive windows of ``block_size`` (each
    window starts with no context, as generation from a prompt of one token does).

    Example:
        >>> from llmcourse.models.gpt import GPT, GPTConfig
        >>> model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8))
        >>> loss, n = evaluate_stream(model, torch.arange(20) % 16, block_size=8)
        >>> n, abs(loss - math.log(16)) < 1.0          # 19 predictions, near-uniform at first
        (19, True)
    """
    if not isinstance(stream, torch.Tensor) or stream.dim() != 1 or stream.is_floating_point():
        raise TypeError(f"stream must be a 1-D integer tensor of token ids, got "
                        f"{_describe(stream)}")
    for name, v in (("block_size", block_size), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
        if v <= 0:
            raise ValueError(f"{name} must be a positive integer (windows of block_size tokens, "
                             f"batch_size windows at a time), got {v!r}")
    if block_size > model.config.block_size:
        raise ValueError(f"block_size={block_size} is above the model's context "
                         f"block_size={model.config.block_size}")
    n_pred = stream.numel() - 1
    if n_pred < 1:
        raise ValueError(f"stream has {stream.numel()} tokens; need at least 2")
    total = torch.zeros((), dtype=torch.float64)
    n_full = n_pred // block_size
    with eval_mode(model):
        for i in range(0, n_full, batch_size):
            starts = torch.arange(i, min(i + batch_size, n_full)) * block_size  # (b,)
            idx = (starts[:, None] + torch.arange(block_size + 1)).to(stream.device)  # (b, T+1)
            w = stream[idx]  # (b, T+1)
            logits = model(w[:, :-1])[0]  # (b, T, V)
            total += F.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten(),
                                     reduction="sum").double().cpu()
        rest = stream[n_full * block_size:]  # (r + 1,) the tail, shorter than a window
        if rest.numel() > 1:
            logits = model(rest[None, :-1])[0]  # (1, r, V)
            total += F.cross_entropy(logits[0].float(), rest[1:], reduction="sum").double().cpu()
    return total.item() / n_pred, n_pred


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return type(x).__name__


def _check_pairs(name: str, pairs: PairBatch, model: Seq2Seq) -> None:
    c = model.config
    for part, ids, vocab in (("src", pairs.src, c.src_vocab_size),
                             ("tgt_in", pairs.tgt_in, c.tgt_vocab_size)):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise ValueError(f"{name}.{part} holds token ids in [{lo}, {hi}], outside the "
                             f"model's vocabulary [0, {vocab})")
        if ids.shape[1] > c.max_len:
            raise ValueError(f"{name}.{part} is {ids.shape[1]} tokens long, above the model's "
                             f"max_len={c.max_len}")


def _check_stream(name: str, stream: object, cfg: TrainConfig, vocab_size: int) -> None:
    if not isinstance(stream, torch.Tensor) or stream.dim() != 1 or stream.is_floating_point():
        raise TypeError(f"{name} must be a 1-D integer tensor of token ids")
    need = cfg.batch_size * cfg.block_size + 1
    if stream.numel() < need:
        raise ValueError(f"{name} has {stream.numel()} tokens, shorter than one batch: "
                         f"batch_size × block_size + 1 = {cfg.batch_size} × {cfg.block_size} "
                         f"+ 1 = {need}")
    lo, hi = int(stream.min()), int(stream.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} holds token ids in [{lo}, {hi}], outside the model's "
                         f"vocabulary [0, {vocab_size})")


def _to(data: torch.Tensor | PairBatch, device: torch.device) -> torch.Tensor | PairBatch:
    if isinstance(data, PairBatch):
        return PairBatch(*(t.to(device) for t in (data.src, data.src_mask, data.tgt_in,
                                                   data.targets)))
    return data.to(device)


def _own_rng(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}  # dropout draws from it
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _rng_state(batch_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The generators to restore on resume: the batches' (the same on every rank) and, per
    rank, torch's own (rank 0's at the top level, as a single process stores it)."""
    ranks = distributed.gather(_own_rng(device))  # a collective: every rank calls it
    state: dict[str, Any] = {"batches": batch_gen.get_state(), **ranks[0]}
    if len(ranks) > 1:
        state["ranks"] = ranks
    return state


def _resume(folder: Path, model: GPT | Llama | Seq2Seq, optimizer: torch.optim.Optimizer,
            batch_gen: torch.Generator, device: torch.device) -> tuple[int, History]:
    """Load a training checkpoint into ``model``, ``optimizer`` and the generators."""
    if not is_checkpoint(folder):
        raise ValueError(f"resume=True but {folder} holds no checkpoint to resume from")
    saved, state = load_checkpoint(folder)
    if state is None:
        raise ValueError(f"{folder} holds a model but no training state to resume from")
    if saved.config != model.config:
        raise ValueError(f"the checkpoint's model config {saved.config} differs from this "
                         f"model's {model.config}")
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    batch_gen.set_state(rng["batches"])
    rank, _ = distributed.world()
    ranks = rng.get("ranks", [rng])  # a single process stored its own at the top level
    if rank < len(ranks):
        own = ranks[rank]
        torch.set_rng_state(own["torch"])
        if device.type == "cuda" and "cuda" in own:
            torch.cuda.set_rng_state(own["cuda"], device)
    else:  # more processes than the run that saved: a fresh dropout stream for this one
        torch.manual_seed(_dropout_seed(rank, int(state["step"])))
    return int(state["step"]), History(**state["history"])


def _dropout_seed(rank: int, step: int) -> int:
    return 1_000_003 * rank + step  # any seed that differs between ranks


def _run_description(model: GPT | Llama | Seq2Seq, cfg: TrainConfig, train_stream: torch.Tensor |
                     PairBatch, val_stream: torch.Tensor | PairBatch, start: int
                     ) -> dict[str, Any]:
    """What every rank of a data-parallel run must agree on (its device and progress bar
    may differ)."""
    def tensors(data: torch.Tensor | PairBatch) -> tuple[torch.Tensor, ...]:
        return (data.src, data.src_mask, data.tgt_in, data.targets) \
            if isinstance(data, PairBatch) else (data,)

    train_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress")}
    return {"train_config": train_cfg, "model": type(model).__name__,
            "model_config": asdict(model.config), "start_step": start,
            "train_data": distributed.fingerprint(*tensors(train_stream)),
            "val_data": distributed.fingerprint(*tensors(val_stream))}


def _micro_batches(args: tuple[torch.Tensor, ...], kwargs: dict[str, Any], rank: int,
                   world: int, cfg: TrainConfig) -> list[tuple[tuple, dict, float]]:
    """This rank's micro-batches of a global batch, each with its loss weight: its share of
    the batch's scored tokens, times the number of ranks (DDP averages over them)."""
    rows = cfg.batch_size // (world * cfg.grad_accum_steps)
    pairs = "src_mask" in kwargs
    # A stream's windows are all scored; pairs have padding (-100) in their targets.
    total = int((kwargs["targets"] != -100).sum()) if pairs else cfg.batch_size
    out = []
    for i in range(cfg.grad_accum_steps):
        lo = (rank * cfg.grad_accum_steps + i) * rows
        m_args, m_kwargs = batch_rows(args, kwargs, lo, lo + rows)
        scored = int((m_kwargs["targets"] != -100).sum()) if pairs else rows
        out.append((m_args, m_kwargs, world * scored / total))
    return out


def train(
    model: GPT | Llama | Seq2Seq,
    train_stream: torch.Tensor | PairBatch,
    val_stream: torch.Tensor | PairBatch,
    cfg: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    tokenizer: Any = None,
    stop_at: int | None = None,
) -> History:
    """Train ``model`` on random windows of ``train_stream``; evaluate on ``val_stream``.

    The same loop trains an encoder–decoder (:class:`~llmcourse.models.seq2seq.Seq2Seq`): give
    it :class:`~llmcourse.text.number_words.PairBatch` es instead of streams; each step then
    draws ``batch_size`` translation pairs (``block_size`` is unused).

    A fresh run seeds torch's global generator with ``cfg.seed`` (dropout draws from it) and
    draws batches from its own generator seeded the same way. With ``checkpoint_dir``, a
    checkpoint (with ``tokenizer``, if given) is written at every evaluation; ``resume=True``
    continues from it. ``stop_at`` ends the run after that step as an interruption would
    (checkpoint written), without changing the schedule, which still runs to ``max_steps``.

    Under ``torchrun`` (a process group of two or more ranks, see
    :mod:`llmcourse.training.distributed`), the model is wrapped in DDP: each rank trains on
    its rows of every global batch, rank 0 writes the checkpoints (the others wait), and the
    ranks first check that they run the same config on the same data. The result equals the
    single-process run's, up to the rounding of the summed gradients.

    Returns:
        The :class:`History`, including what was measured before a resume.

    Raises:
        TypeError: a model with float16/bfloat16 parameters (checked before any step: train a
            float32 model, with ``dtype="bf16"`` for speed), or arguments of the wrong type.
        ValueError: streams shorter than a batch or with ids outside the vocabulary, a context
            above the model's, a tokenizer larger than the model's vocabulary, activation
            checkpointing for a Seq2Seq; distributed: a batch that the
            processes × micro-batches do not split evenly, ranks that disagree on the run.
        NoSpaceError: the disk filled up while writing a checkpoint; the previous one is intact.
    """
    if not isinstance(model, (GPT, Llama, Seq2Seq)):
        raise TypeError(f"model must be a llmcourse GPT, Llama or Seq2Seq, got "
                        f"{type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if isinstance(model, Seq2Seq):
        for name, s in (("train_stream", train_stream), ("val_stream", val_stream)):
            if not isinstance(s, PairBatch):
                raise TypeError(f"an encoder-decoder trains on translation pairs: {name} must "
                                f"be a PairBatch (encode_pairs), got {type(s).__name__}")
            _check_pairs(name, s, model)
        # one pair tokenizer serves both sides: it must fit the smaller vocabulary
        vocab_size = min(model.config.src_vocab_size, model.config.tgt_vocab_size)
    else:
        if cfg.block_size > model.config.block_size:
            raise ValueError(f"TrainConfig.block_size={cfg.block_size} is above the model's "
                             f"context block_size={model.config.block_size}")
        for name, s in (("train_stream", train_stream), ("val_stream", val_stream)):
            _check_stream(name, s, cfg, model.config.vocab_size)
        vocab_size = model.config.vocab_size
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir to resume from")
    if cfg.activation_checkpointing and not isinstance(model, (GPT, Llama)):
        raise ValueError("activation_checkpointing is implemented in the GPT's and the "
                         f"Llama's forward only; got a {type(model).__name__}")
    rank, world = distributed.world()
    distributed.split_batch(cfg.batch_size, cfg.grad_accum_steps, world)  # or a clear error
    check_master_weights(model)  # before anything touches the model
    if tokenizer is not None and tokenizer.vocab_size > vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the "
                         f"model's vocab_size={vocab_size}")

    device = torch.device(cfg.device)
    model.to(device)
    optimizer = configure_optimizer(model, cfg)
    batch_gen = torch.Generator().manual_seed(cfg.seed)  # the same batches on every rank
    history, start = History(), 0
    if resume:
        # Rank 0 reads first: a reader repairs a save that a crash interrupted
        # (recover_folder), and two ranks repairing at once would collide.
        if rank > 0:
            distributed.barrier()
        start, history = _resume(Path(checkpoint_dir), model, optimizer, batch_gen, device)
        if rank == 0:
            distributed.barrier()
    else:  # dropout's generator; rank 0's is a single process's
        torch.manual_seed(cfg.seed if rank == 0 else _dropout_seed(rank, 0))
    distributed.check_same_run(_run_description(model, cfg, train_stream, val_stream, start))
    train_stream, val_stream = _to(train_stream, device), _to(val_stream, device)
    net = distributed.wrap(model, device)  # DDP when distributed: rank 0's weights everywhere
    forward = torch.compile(net) if cfg.compile else net
    t0 = time.perf_counter() - (history.elapsed[-1] if history.elapsed else 0.0)

    def evaluate_and_save(step: int) -> None:
        # Every rank evaluates (the same batches and weights give the same numbers), so that
        # every rank's history is the one rank 0 saves.
        kw = dict(batch_size=cfg.batch_size, block_size=cfg.block_size,
                  n_batches=cfg.eval_batches)
        with autocast(cfg.dtype, device):
            history.train_loss.append(estimate_loss(model, train_stream, seed=cfg.seed + 1, **kw))
            history.val_loss.append(estimate_loss(model, val_stream, seed=cfg.seed + 2, **kw))
        history.steps.append(step)
        history.lr.append(lr_at(step, cfg))
        history.elapsed.append(time.perf_counter() - t0)
        bar.set_postfix(train=f"{history.train_loss[-1]:.3f}", val=f"{history.val_loss[-1]:.3f}")
        if checkpoint_dir is not None and step > 0:
            state = {"step": step, "optimizer": optimizer.state_dict(),
                     "rng": _rng_state(batch_gen, device), "history": asdict(history),
                     "train_config": asdict(cfg), "world_size": world, "format_version": 1}
            if rank == 0:  # written once, atomically (save_checkpoint), while the others wait
                save_checkpoint(checkpoint_dir, model, tokenizer=tokenizer, training_state=state)
            distributed.barrier()

    def train_step(step: int) -> torch.Tensor:
        """One optimizer step on one global batch; returns this rank's share of its loss."""
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        # The global batch (every rank draws the same), then this rank's micro-batches.
        args, kwargs = draw_batch(train_stream, cfg.batch_size, cfg.block_size, batch_gen)
        optimizer.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)  # () the batch's mean loss, this rank's part
        micro = _micro_batches(args, kwargs, rank, world, cfg)
        for i, (m_args, m_kwargs, weight) in enumerate(micro):
            # DDP averages the gradients across ranks after the last micro-batch only.
            last = i == len(micro) - 1
            with contextlib.nullcontext() if last or net is model else net.no_sync():
                with autocast(cfg.dtype, device):  # fp32: no autocast at all
                    _, loss = forward(*m_args, **m_kwargs)
                (loss if weight == 1 else loss * weight).backward()
            step_loss += loss.detach().float() * (weight / world)
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return step_loss

    bar = tqdm(total=cfg.max_steps, initial=start, disable=not cfg.progress or rank > 0,
               unit="step", mininterval=1.0)  # a notebook receives one message per refresh
    recompute = model.activation_checkpointing if isinstance(model, (GPT, Llama)) else False
    try:
        with distributed.explain_failures():  # a rank that died or hangs, said in words
            if start == 0:
                evaluate_and_save(0)
            model.train()
            if cfg.activation_checkpointing:
                model.activation_checkpointing = True
            for step in range(start, cfg.max_steps):
                step_loss = train_step(step)
                done = step + 1
                bar.update()
                if done % cfg.log_interval == 0:
                    history.log_steps.append(done)
                    history.log_loss.append(distributed.all_sum(step_loss).item())
                out_of_time = (cfg.max_minutes is not None
                               and time.perf_counter() - t0 > 60 * cfg.max_minutes)
                if cfg.max_minutes is not None:  # each rank's clock differs: rank 0 decides
                    out_of_time = distributed.rank0_decides(out_of_time, device)
                stopping = out_of_time or done == stop_at
                if done % cfg.eval_interval == 0 or done == cfg.max_steps or stopping:
                    evaluate_and_save(done)
                if stopping:
                    break
    finally:
        if isinstance(model, (GPT, Llama)):
            model.activation_checkpointing = recompute
        bar.close()
    return history
