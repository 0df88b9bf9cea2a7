"""Loss against compute: tiny GPTs of increasing size, each trained on the same tokens.

Training a model of N parameters on D tokens costs C ≈ 6·N·D FLOPs (two per weight per token
forward, four backward; :func:`llmcourse.models.sizing.training_flops` adds the attention
term). A fixed budget C can buy a large model that sees few tokens or a small one that sees
many. Hoffmann et al. (2022), "Training compute-optimal large language models", trained over
400 models from 70M to 16B parameters and found that, at a fixed compute budget, there is a
best model size, and that it and the number of tokens should grow in equal proportion with
the budget: about 20 training tokens per parameter for their models (their Table 3; their
Chinchilla, 70B parameters on 1.4T tokens, beat the 280B Gopher trained with the same
compute). Kaplan et al. (2020) had advised bigger models on fewer tokens; much of the
difference comes from Kaplan counting non-embedding parameters and working at small scale
(Pearce & Song 2024, "Reconciling Kaplan and Chinchilla scaling laws").

**The measurement.** :data:`SIZES` lists four GPTs (the course's architecture, its byte-level
BPE tokenizer of 4,096 tokens, Shakespeare split by work as everywhere in the course), from
about 25 thousand to about 0.8 million non-embedding parameters. Each is trained from the same
seed on the same batches, the same number of tokens, with the same schedule (warmup, cosine
decay to a tenth of the peak learning rate; :func:`train_setup`). Recorded for each: its
config, parameters (all of them and without the token and position embeddings), tokens seen,
training FLOPs, the loss over every token of the held-out works at the end (in nats per
character, which does not depend on the tokenizer), and the validation curve: the loss every
eighth of the run against the tokens and FLOPs spent so far. Drawn against FLOPs, the curves'
lower envelope (:func:`compute_frontier`) is the best loss this family reached for each amount
of compute: the compute frontier.

**What it does not show.** Four models, one seed and under a million tokens cannot fit Hoffmann
et al.'s constants (their smallest model is about fifty times the largest here, 1.3M
parameters, for which 20 tokens per parameter would mean 27M tokens; here the models see 0.6 to
5 tokens per parameter), and nothing says that the optimum at this scale sits at 20 tokens per
parameter. The points inside a curve are not the losses of shorter runs: a run planned for
fewer tokens would have finished its learning-rate decay there and done better, which is why
Hoffmann et al. train each size with several schedule lengths (their section 3.1). Only the
curves' end points are fully trained runs. At this scale the output layer (4,096 × width) costs
more FLOPs than the blocks of the smallest models, which is why FLOPs are counted with it (N in
6·N·D counts the weights every token meets, the output layer included). The JSON records
whatever the losses are; if a larger model is not better at this budget, it shows that.

Example (the FLOPs of the largest model on one batch of 16 windows of 64 tokens):

    >>> config = model_config(SIZES[-1], vocab_size=4096)
    >>> config.n_layer, config.n_embd
    (4, 128)
    >>> flops_per_token(config, BLOCK_SIZE) * BATCH_SIZE * BLOCK_SIZE == training_flops(
    ...     shape_of(config), BATCH_SIZE * BLOCK_SIZE, context=BLOCK_SIZE)
    True

The command (11.5 minutes measured on a 2-core CPU shared with other work):

    python -m llmcourse.training.scaling --out data/results/scaling.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.sizing import ModelShape, forward_flops_per_token, training_flops
from llmcourse.text.bpe import EOT
from llmcourse.text.corpus import load_works, nats_per_char, split_works, token_stream
from llmcourse.text.load import load_tokenizer
from llmcourse.training.cli import PRESETS
from llmcourse.training.config import TrainConfig
from llmcourse.training.loop import evaluate_stream, train
from llmcourse.training.results import command_line, module_name, write_result

__all__ = ["SIZES", "DEFAULT_TOKENS", "BATCH_SIZE", "BLOCK_SIZE", "EVALS", "model_config",
           "shape_of", "flops_per_token", "train_setup", "course_streams", "compute_frontier",
           "measurement_parser", "main"]

# (n_layer, n_head, n_embd): non-embedding parameters 25k, 100k, 336k, 793k.
SIZES: tuple[tuple[int, int, int], ...] = ((2, 2, 32), (2, 2, 64), (3, 3, 96), (4, 4, 128))
BATCH_SIZE = 16  # windows per step
BLOCK_SIZE = 64  # tokens per window
DEFAULT_TOKENS = 800 * BATCH_SIZE * BLOCK_SIZE  # 819,200 training tokens, 800 steps
EVALS = 8  # validation points after step 0
EVAL_BATCHES = 4  # 4 × 16 windows of 64 held-out tokens at each point
DEFAULT_TOKENIZER = "data/checkpoints/shakespeare-gpt"  # the course's BPE tokenizer


def model_config(size: tuple[int, int, int], vocab_size: int) -> GPTConfig:
    """The :class:`GPTConfig` of a size ``(n_layer, n_head, n_embd)`` of :data:`SIZES`, with
    a context of :data:`BLOCK_SIZE` tokens and no dropout.

    Example:
        >>> model = GPT(model_config(SIZES[0], 4096))
        >>> model.num_parameters(exclude_embeddings=True)  # 2·(12·32² + 13·32) + 2·32
        25472
    """
    n_layer, n_head, n_embd = size
    return GPTConfig(vocab_size=vocab_size, block_size=BLOCK_SIZE, n_layer=n_layer,
                     n_head=n_head, n_embd=n_embd, dropout=0.0)


def shape_of(config: GPTConfig) -> ModelShape:
    """The :class:`~llmcourse.models.sizing.ModelShape` of a course GPT (for its FLOPs).

    Example:
        >>> shape_of(model_config(SIZES[1], 4096)).to_gpt_config() == model_config(SIZES[1], 4096)
        True
    """
    return ModelShape(f"gpt-{config.n_layer}x{config.n_embd}", n_layer=config.n_layer,
                      d_model=config.n_embd, n_head=config.n_head,
                      vocab_size=config.vocab_size, context=config.block_size)


def flops_per_token(config: GPTConfig, context: int) -> int:
    """Training FLOPs per token in windows of ``context`` tokens: three forward passes, each
    2 · (the weights a token meets) + 2 · n_layer · context · n_embd for the attention
    (:func:`~llmcourse.models.sizing.forward_flops_per_token`).

    Example:
        >>> flops_per_token(model_config(SIZES[0], 4096), 64)  # 3·(2·(24·32² + 4096·32) + 4·64·32)
        958464
    """
    return 3 * forward_flops_per_token(shape_of(config), context)


def train_setup(tokens: int) -> TrainConfig:
    """The schedule every size trains with for a budget of ``tokens`` training tokens:
    the ``tiny`` preset's learning rates (3e-3 falling to 3e-4), :data:`BATCH_SIZE` windows
    of :data:`BLOCK_SIZE` tokens a step, warmup over the first 5% of the steps, and an
    evaluation every eighth of the run on :data:`EVAL_BATCHES` fixed batches.

    Example:
        >>> cfg = train_setup(DEFAULT_TOKENS)
        >>> cfg.max_steps, cfg.warmup_steps, cfg.eval_interval
        (800, 40, 100)
        >>> train_setup(1000)
        Traceback (most recent call last):
        ...
        ValueError: the token budget must be a positive multiple of 1024 (16 windows of 64 ...
    """
    per_step = BATCH_SIZE * BLOCK_SIZE
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0 \
            or tokens % per_step:
        raise ValueError(f"the token budget must be a positive multiple of {per_step} "
                         f"({BATCH_SIZE} windows of {BLOCK_SIZE} tokens a step), got {tokens!r}")
    steps = tokens // per_step
    return replace(PRESETS["tiny"].train, max_steps=steps, batch_size=BATCH_SIZE,
                   block_size=BLOCK_SIZE, warmup_steps=steps // 20,
                   eval_interval=max(1, steps // EVALS), eval_batches=EVAL_BATCHES,
                   log_interval=steps, progress=False)


def course_streams(tokenizer_dir: str | Path) -> tuple[Any, torch.Tensor, torch.Tensor,
                                                       dict[str, str]]:
    """``(tokenizer, train_ids, val_ids, val_works)``: the course's tokenizer saved in
    ``tokenizer_dir`` and the training and held-out works encoded with it, works joined by
    ``<|endoftext|>``."""
    tokenizer = load_tokenizer(tokenizer_dir)
    if tokenizer is None:
        raise ValueError(f"{tokenizer_dir} holds no tokenizer")
    train_works, val_works = split_works(load_works())
    train_ids = token_stream(train_works, tokenizer, EOT)  # (N_train,)
    val_ids = token_stream(val_works, tokenizer, EOT)  # (N_val,)
    return tokenizer, train_ids, val_ids, val_works


def compute_frontier(runs: Sequence[dict[str, Any]], key: str = "val_nats_per_char"
                     ) -> list[dict[str, Any]]:
    """The lower envelope of the runs' curves against FLOPs: going up in compute, each point
    that beats every point of any run at no more compute, as ``{"flops", "loss", "model"}``.

    Example:
        >>> small = {"name": "small", "curve": {"flops": [0, 1, 2], "val": [5, 3, 2.5]}}
        >>> large = {"name": "large", "curve": {"flops": [0, 2, 4], "val": [5, 2.8, 2]}}
        >>> [(p["flops"], p["loss"], p["model"]) for p in compute_frontier([small, large], "val")]
        [(1, 3, 'small'), (2, 2.5, 'small'), (4, 2, 'large')]
    """
    points = sorted((f, loss, run["name"]) for run in runs
                    for f, loss in zip(run["curve"]["flops"], run["curve"][key], strict=True)
                    if f > 0)
    frontier: list[dict[str, Any]] = []
    for f, loss, name in points:
        if not frontier or loss < frontier[-1]["loss"]:
            frontier.append({"flops": f, "loss": loss, "model": name})
    return frontier


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def measurement_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The command line that the measurement commands of this package share: ``--tokenizer``
    (the course's by default), ``--threads`` (torch's choice by default) and ``--out`` (the
    JSON file to write); each adds its own options.

    Example:
        >>> args = measurement_parser("m", "Doc.").parse_args(["--out", "r.json"])
        >>> args.tokenizer, args.threads, args.out
        ('data/checkpoints/shakespeare-gpt', None, 'r.json')
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module_name(module)}",
                                     description=doc.split("\n\n")[0])
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                        help="the folder holding the tokenizer (default: the course's)")
    parser.add_argument("--threads", type=_positive_int,
                        help="torch threads (default: torch's choice)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    return parser


def _run(size: tuple[int, int, int], vocab_size: int, cfg: TrainConfig,
         train_ids: torch.Tensor, val_ids: torch.Tensor, val_chars: int) -> dict[str, Any]:
    """Train one size and measure it; see the module docstring."""
    t0 = time.perf_counter()
    config = model_config(size, vocab_size)
    torch.manual_seed(cfg.seed)  # the same initialization recipe for every size
    model = GPT(config)
    history = train(model, train_ids, val_ids, cfg)  # the same batches: train() seeds them
    loss, n_pred = evaluate_stream(model, val_ids, block_size=cfg.block_size, batch_size=64)
    per_token = flops_per_token(config, cfg.block_size)
    tokens_per_step = cfg.batch_size * cfg.block_size
    tokens = cfg.max_steps * tokens_per_step
    seen = [s * tokens_per_step for s in history.steps]
    return {
        "name": f"L{config.n_layer}-d{config.n_embd}",
        "model": asdict(config),
        "parameters": model.num_parameters(),
        "non_embedding_parameters": model.num_parameters(exclude_embeddings=True),
        "tokens": tokens,
        "tokens_per_parameter": tokens / model.num_parameters(),
        "training_flops": training_flops(shape_of(config), tokens, context=cfg.block_size),
        "flops_6nd_non_embedding": 6 * model.num_parameters(exclude_embeddings=True) * tokens,
        "val_nats_per_token": loss,
        "val_nats_per_char": nats_per_char(loss, n_pred, val_chars),
        "seconds": round(time.perf_counter() - t0, 1),
        "curve": {
            "steps": history.steps,
            "tokens": seen,
            "flops": [per_token * t for t in seen],
            "train_nats_per_token": history.train_loss,
            "val_nats_per_token": history.val_loss,
            "val_nats_per_char": [nats_per_char(v, n_pred, val_chars)
                                  for v in history.val_loss],
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; see the module docstring."""
    parser = measurement_parser(__name__, __doc__)
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS,
                        help=f"training tokens per model (default {DEFAULT_TOKENS:,})")
    args = parser.parse_args(argv)
    command = command_line(__name__, argv)
    try:
        cfg = train_setup(args.tokens)
    except ValueError as err:
        parser.error(str(err))
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    tokenizer, train_ids, val_ids, val_works = course_streams(args.tokenizer)
    val_chars = sum(len(t) for t in val_works.values())
    runs = []
    for size in SIZES:
        runs.append(_run(size, tokenizer.vocab_size, cfg, train_ids, val_ids, val_chars))
        r = runs[-1]
        print(f"{r['name']}: {r['non_embedding_parameters']:,} non-embedding parameters, "
              f"{r['training_flops']:.3g} FLOPs, {r['val_nats_per_char']:.4f} nats/char "
              f"({r['seconds']:.0f} s)", flush=True)
    result = {
        "command": command,
        "tokenizer": Path(args.tokenizer).name,
        "sizes": [list(s) for s in SIZES],
        "tokens_per_step": cfg.batch_size * cfg.block_size,
        "train": {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress")},
        "held_out": {"works": sorted(val_works), "tokens": val_ids.numel() - 1,
                     "chars": val_chars,
                     "note": "val_nats_per_token/char: every token of the held-out works, "
                             "windows of block_size; the curves: eval_batches fixed batches "
                             "of held-out windows, per char at the works' tokens per char"},
        "flops_note": "training_flops: 3 forward passes of 2 FLOPs per weight a token meets "
                      "(blocks and output layer) plus the causal attention term "
                      "(llmcourse.models.sizing.training_flops, context block_size); "
                      "flops_6nd_non_embedding: 6 N D with N without the embeddings",
        "runs": runs,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
