"""bfloat16 autocast against float32 training, measured: the same model from the same weights,
on the same batches, for the same steps; the step time of each and the held-out loss after.

``TrainConfig(dtype="bf16")`` runs the forward and backward passes under bfloat16 autocast
with float32 master weights (:mod:`llmcourse.training.precision`). Two questions decide
whether that is worth it on a machine: is a step faster, and does the model learn as well?

**How it is measured.** :func:`compare_dtypes` trains one copy of the model per dtype with
:func:`~llmcourse.training.loop.train`, in chunks of ``chunk_steps`` steps taken in turns
(fp32 then bf16, then bf16 then fp32, …): each chunk stops with a checkpoint (``stop_at``)
and the next resumes from it, which the loop makes exact (the same batches and updates as one
uninterrupted run). A busy patch of a shared machine thus hits both dtypes alike. A chunk's
time is what the loop's history records: its steps plus the one evaluation that ends it (on
``eval_batches`` batches of training and of held-out windows, under the same autocast), not
the checkpoint's writing or reading. The step time of a dtype is the median over its chunks
of (chunk time / chunk steps). Their ratio is measured chunk by chunk: the two dtypes' chunk
``i`` run one right after the other, so the median over chunks of (bf16 step time / fp32 step
time) is what a shared machine, whose load can change tenfold within minutes, disturbs least
(the ratio of the two medians is kept too). The first chunks include warm-up (first
allocations, the choice of kernels), which the medians discount. After the last chunk both
models, whose weights are float32 either way, are evaluated in float32 on every token of a
held-out work.

On a CPU without bfloat16 units (AMX or AVX512-BF16, which
:func:`~llmcourse.training.precision.fast_bf16` looks for) torch emulates bfloat16 and a step
is usually slower. Even with them, small matrices can be slower in bfloat16: converting to
bfloat16 and back costs time of its own. The ratio depends on the shape; it is measured here at
the ``course-cpu`` preset's (6 layers, width 256, context 128), with a batch of 8 windows.

Example (a toy model, 4 steps in chunks of 2; the timings vary, the structure does not):

    >>> from llmcourse.models.gpt import GPTConfig
    >>> config = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8)
    >>> cfg = TrainConfig(max_steps=4, batch_size=2, block_size=8, warmup_steps=1,
    ...                   eval_interval=2, eval_batches=1, progress=False)
    >>> stream = torch.arange(400) % 16
    >>> runs = compare_dtypes(config, cfg, stream, stream, stream[:50], chunk_steps=2)
    >>> [(dt, r["chunk_steps"]) for dt, r in runs.items()]
    [('fp32', [2, 2]), ('bf16', [2, 2])]
    >>> abs(runs["bf16"]["val_nats_per_token"] - runs["fp32"]["val_nats_per_token"]) < 0.1
    True

The command (9.4 minutes measured on a 2-core CPU that two other training runs kept busy):

    python -m llmcourse.training.precision_compare --out data/results/bf16_vs_fp32.json
"""

from __future__ import annotations

import copy
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.text.bpe import EOT
from llmcourse.text.corpus import nats_per_char, token_stream
from llmcourse.training.cli import PRESETS
from llmcourse.training.config import TrainConfig
from llmcourse.training.loop import evaluate_stream, train
from llmcourse.training.precision import DTYPES, fast_bf16
from llmcourse.training.results import command_line, write_result
from llmcourse.training.scaling import course_streams, measurement_parser

__all__ = ["compare_dtypes", "setup", "summary", "main", "PRESET", "DEFAULT_STEPS",
           "DEFAULT_CHUNK_STEPS", "BATCH_SIZE", "DEFAULT_WORK"]

PRESET = "course-cpu"  # the model's shape and learning rates
BATCH_SIZE = 8  # windows of 128 tokens a step (the preset's 32 would take 4× as long)
DEFAULT_STEPS = 48
DEFAULT_CHUNK_STEPS = 4
DEFAULT_WORK = "twelfth_night"  # the held-out work evaluated at the end (40,126 tokens)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def compare_dtypes(model_config: GPTConfig, cfg: TrainConfig, train_ids: torch.Tensor,
                   val_ids: torch.Tensor, eval_ids: torch.Tensor, *, chunk_steps: int,
                   dtypes: Sequence[str] = ("fp32", "bf16"),
                   work_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Train a GPT of ``model_config`` for ``cfg.max_steps`` steps once per dtype, from the
    same initial weights (seeded by ``cfg.seed``) on the same batches, in alternating chunks
    of ``chunk_steps`` steps; then evaluate each on every token of ``eval_ids`` in float32.

    Args:
        train_ids, val_ids: (N,) token streams for :func:`~llmcourse.training.loop.train`
            (``val_ids`` for the evaluation that ends each chunk).
        eval_ids: (M,) the stream measured at the end (:func:`evaluate_stream`).
        work_dir: where the chunks' checkpoints go (default: a temporary folder, deleted).

    Returns:
        ``{dtype: {"chunk_steps", "chunk_seconds", "step_seconds" (per chunk, in the order
        the chunks ran), "median_step_seconds", "min_step_seconds", "val_nats_per_token",
        "eval_tokens", "curve": {"steps", "val_nats_per_token"}}}``, in the order of
        ``dtypes``.

    Raises:
        ValueError: a non-positive ``chunk_steps``, an unknown or repeated dtype.
    """
    _check_count("chunk_steps", chunk_steps)
    if isinstance(dtypes, str) or len(set(dtypes)) != len(dtypes) or not dtypes:
        raise ValueError(f"dtypes must be distinct names among {sorted(DTYPES)}, got {dtypes!r}")
    for dt in dtypes:
        if dt not in DTYPES:
            raise ValueError(f"unknown dtype {dt!r}; expected one of {sorted(DTYPES)}")
    cfg = replace(cfg, eval_interval=chunk_steps)  # evaluate (and checkpoint) at chunk ends
    ends = [*range(chunk_steps, cfg.max_steps, chunk_steps), cfg.max_steps]
    torch.manual_seed(cfg.seed)
    first = GPT(model_config)
    models = {dt: copy.deepcopy(first) for dt in dtypes}  # the same initial weights
    runs: dict[str, dict[str, Any]] = {dt: {"chunk_steps": [], "chunk_seconds": []}
                                       for dt in dtypes}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(work_dir) if work_dir is not None else Path(tmp)
        for i, end in enumerate(ends):
            start = ends[i - 1] if i else 0
            for dt in (dtypes if i % 2 == 0 else dtypes[::-1]):  # take turns going first
                history = train(models[dt], train_ids, val_ids, replace(cfg, dtype=dt),
                                checkpoint_dir=folder / dt, resume=i > 0, stop_at=end)
                runs[dt]["chunk_steps"].append(end - start)
                runs[dt]["chunk_seconds"].append(history.elapsed[-1] - history.elapsed[-2])
                runs[dt]["curve"] = {"steps": history.steps,
                                     "val_nats_per_token": history.val_loss}
    for dt, run in runs.items():
        model = models[dt]
        if any(p.dtype != torch.float32 for p in model.parameters()):  # master weights
            raise RuntimeError(f"the {dt} run left parameters that are not float32")
        run["step_seconds"] = [s / n for s, n in zip(run["chunk_seconds"], run["chunk_steps"],
                                                     strict=True)]
        run["median_step_seconds"] = statistics.median(run["step_seconds"])
        run["min_step_seconds"] = min(run["step_seconds"])
        loss, n_pred = evaluate_stream(model, eval_ids, block_size=cfg.block_size)
        run["val_nats_per_token"], run["eval_tokens"] = loss, n_pred
        runs[dt] = {k: run[k] for k in ("chunk_steps", "chunk_seconds", "step_seconds",
                                        "median_step_seconds", "min_step_seconds",
                                        "val_nats_per_token", "eval_tokens", "curve")}
    return runs


def summary(fp32: dict[str, Any], bf16: dict[str, Any], key: str = "val_nats_per_token"
            ) -> dict[str, float]:
    """The comparisons of two runs of :func:`compare_dtypes`: ``step_time_ratio``, the median
    over chunks of bf16's step time over fp32's in the same chunk (below 1: bf16 is faster),
    ``speedup`` (its inverse), ``ratio_of_medians`` (bf16's median step time over fp32's) and
    ``relative_gap``, (bf16 − fp32) / fp32 of ``key`` (above 0: bf16 ended worse).

    Example:
        >>> fp32 = {"step_seconds": [4.0, 1.0, 1.0], "median_step_seconds": 1.0,
        ...         "val_nats_per_token": 5.0}
        >>> bf16 = {"step_seconds": [2.0, 0.8, 0.8], "median_step_seconds": 0.8,
        ...         "val_nats_per_token": 5.5}
        >>> summary(fp32, bf16)
        {'step_time_ratio': 0.8, 'speedup': 1.25, 'ratio_of_medians': 0.8, 'relative_gap': 0.1}
    """
    per_chunk = [b / f for f, b in zip(fp32["step_seconds"], bf16["step_seconds"], strict=True)]
    ratio = statistics.median(per_chunk)
    return {"step_time_ratio": ratio, "speedup": 1 / ratio,
            "ratio_of_medians": bf16["median_step_seconds"] / fp32["median_step_seconds"],
            "relative_gap": (bf16[key] - fp32[key]) / fp32[key]}


def setup(vocab_size: int, steps: int, chunk_steps: int) -> tuple[GPTConfig, TrainConfig]:
    """The model and training config of the measurement: the :data:`PRESET`'s shape (no
    dropout, so that the two runs differ only in their arithmetic) and learning rates,
    :data:`BATCH_SIZE` windows a step, ``steps`` steps with a tenth of them of warmup, one
    batch of evaluation at each chunk's end.

    Example:
        >>> model, cfg = setup(4096, 48, 4)
        >>> model.n_layer, model.n_embd, cfg.block_size, cfg.warmup_steps, cfg.eval_interval
        (6, 256, 128, 4, 4)
    """
    _check_count("steps", steps)
    _check_count("chunk_steps", chunk_steps)
    preset = PRESETS[PRESET]
    model = replace(preset.model, vocab_size=vocab_size, dropout=0.0)
    cfg = replace(preset.train, max_steps=steps, batch_size=BATCH_SIZE,
                  warmup_steps=steps // 10, eval_interval=chunk_steps, eval_batches=1,
                  log_interval=chunk_steps, progress=False)
    return model, cfg


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; see the module docstring."""
    parser = measurement_parser(__name__, __doc__)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--chunk-steps", type=int, default=DEFAULT_CHUNK_STEPS)
    parser.add_argument("--work", default=DEFAULT_WORK, help="the held-out work to evaluate")
    args = parser.parse_args(argv)
    command = command_line(__name__, argv)
    try:
        model_cfg, cfg = setup(4096, args.steps, args.chunk_steps)  # vocabulary set below
    except ValueError as err:
        parser.error(str(err))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tokenizer, train_ids, val_ids, val_works = course_streams(args.tokenizer)
    if args.work not in val_works:
        parser.error(f"--work {args.work!r} is not a held-out work; choose one of "
                     f"{sorted(val_works)}")
    model_cfg = replace(model_cfg, vocab_size=tokenizer.vocab_size)
    eval_ids = token_stream({args.work: val_works[args.work]}, tokenizer, EOT)  # (M,)
    chars = len(val_works[args.work])

    fast, why = fast_bf16("cpu")
    print(f"{why}", flush=True)
    runs = compare_dtypes(model_cfg, cfg, train_ids, val_ids, eval_ids,
                          chunk_steps=args.chunk_steps)
    for dt, run in runs.items():
        run["val_nats_per_char"] = nats_per_char(run["val_nats_per_token"], run["eval_tokens"],
                                                 chars)
        print(f"{dt}: {run['median_step_seconds']:.3f} s a step, "
              f"{run['val_nats_per_char']:.4f} nats/char after {cfg.max_steps} steps")
    compared = summary(runs["fp32"], runs["bf16"], key="val_nats_per_char")
    print(f"bf16/fp32 step time {compared['step_time_ratio']:.3f} (median over chunks; ratio "
          f"of the medians {compared['ratio_of_medians']:.3f}), held-out loss "
          f"{compared['relative_gap']:+.2%}")
    result = {
        "command": command,
        "tokenizer": Path(args.tokenizer).name,
        "preset": PRESET,
        "model": asdict(model_cfg),
        "parameters": GPT(model_cfg).num_parameters(),
        "train": {k: v for k, v in asdict(cfg).items()
                  if k not in ("device", "progress", "dtype")},
        "chunk_steps": args.chunk_steps,
        "machine": {"device": "cpu", "fast_bf16": fast, "why": why,
                    "threads": torch.get_num_threads()},
        "held_out": {"works": [args.work], "tokens": runs["fp32"]["eval_tokens"],
                     "chars": chars, "note": "every token of the work, windows of block_size, "
                                             "evaluated in float32"},
        "timing_note": "a chunk's seconds: its steps and the one-batch evaluation that ends "
                       "it; step_seconds = chunk_seconds / chunk_steps; the step time ratio: "
                       "the median over chunks of bf16's step_seconds over fp32's in the same "
                       "chunk (run one after the other)",
        "runs": runs,
        "step_time_ratio_bf16_over_fp32": compared["step_time_ratio"],
        "speedup_bf16": compared["speedup"],
        "ratio_of_median_step_times": compared["ratio_of_medians"],
        "relative_gap_nats_per_char": compared["relative_gap"],
        "torch": torch.__version__,
    }
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
