"""GPT-2-style against Llama-style at the same size and the same training budget: one run of
the course's training command for each, collected into one small committed JSON that chapter
10 reads.

The two presets (:data:`llmcourse.training.cli.PRESETS`) share everything but the block:
``course-cpu`` is the GPT-2 block (LayerNorm, GELU MLP, learned positions, biases) and
``llama-cpu`` the Llama block (RMSNorm, SwiGLU MLP, RoPE, grouped-query attention, no biases),
with the same number of layers, width, context, tokenizer and :class:`TrainConfig`, and
parameter counts within 0.3% of each other. The runs (both at once on a 2-core CPU, one thread
each, so that their tokens per second compare the two models under the same conditions):

    OMP_NUM_THREADS=1 python -m llmcourse.training course-cpu \\
        --out data/cache/side_by_side/course-cpu \\
        --work-dir data/cache/side_by_side/work-course-cpu --max-steps 500 --dtype bf16 \\
        --no-progress
    OMP_NUM_THREADS=1 python -m llmcourse.training llama-cpu \\
        --out data/cache/side_by_side/llama-cpu \\
        --work-dir data/cache/side_by_side/work-llama-cpu --max-steps 500 --dtype bf16 \\
        --no-progress

then the collection (reads each folder's ``results.json`` and ``README.md``, writes the JSON
atomically):

    python -m llmcourse.training.side_by_side --gpt data/cache/side_by_side/course-cpu \\
        --llama data/cache/side_by_side/llama-cpu --out data/results/side_by_side.json

Each model's entry: its preset and command, parameters, the budget (steps × batch × context
tokens, dtype), wall time and tokens per second of training, the held-out loss over every
token of the held-out works (nats per token and per character) and the validation curve.

Example (the two presets really are the same size):
    >>> from llmcourse.training.cli import PRESETS
    >>> gpt, llama = (PRESETS[p].build(4096).num_parameters() for p in ("course-cpu", "llama-cpu"))
    >>> gpt, llama, round(abs(gpt - llama) / gpt, 4)
    (5820416, 5807360, 0.0022)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmcourse.training.cli import PRESETS
from llmcourse.training.results import command_line, write_result

__all__ = ["MODELS", "collect_run", "collect", "main"]

MODELS = {"gpt": "course-cpu", "llama": "llama-cpu"}  # the JSON's keys and their presets
_LAUNCHER = "python -m llmcourse.training "


def _command(readme: str, folder: Path) -> str:
    """The training command, as the run wrote it into its README."""
    for line in readme.splitlines():
        if _LAUNCHER.strip() in line and "--out" in line:
            return line.strip()
    raise ValueError(f"{folder / 'README.md'} names no training command (a line with "
                     f"'{_LAUNCHER.strip()} ... --out'); is it a folder written by the course's "
                     "training command?")


def collect_run(folder: str | Path, preset: str) -> dict[str, Any]:
    """One run's entry: what the training command wrote into ``folder`` (its results.json and
    README.md), checked against ``preset``.

    Raises:
        ValueError: a missing file, a run of another preset, or a run that did not finish.
    """
    folder = Path(folder)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    for name in ("results.json", "README.md", "config.json"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} has no {name}: expected the --out folder of a finished "
                             "run of `python -m llmcourse.training`")
    results = json.loads((folder / "results.json").read_text())
    command = _command((folder / "README.md").read_text(), folder)
    words = command.split()
    if preset not in words:
        raise ValueError(f"{folder} was trained with `{command}`, not the {preset!r} preset")
    history = results["history"]
    steps = history["steps"][-1]
    plan = PRESETS[preset].train
    max_steps = int(words[words.index("--max-steps") + 1]) if "--max-steps" in words \
        else plan.max_steps
    if steps != max_steps:
        raise ValueError(f"{folder}: the run stopped at step {steps} of {max_steps}; collect "
                         "finished runs only (same budget for both models)")
    tokens = steps * plan.batch_size * plan.block_size
    wall = 60 * results["wall_min"]
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    model = PRESETS[preset].build(vocab_size)  # the preset's model, for its parameter count
    return {
        "preset": preset, "command": command, "model": asdict(model.config),
        "parameters": model.num_parameters(), "steps": steps,
        "batch_size": plan.batch_size, "block_size": plan.block_size, "tokens": tokens,
        "dtype": results["dtype"], "device": results["device"],
        "wall_seconds": wall, "tokens_per_second": tokens / wall,
        "val_nats_per_token": results["val_nats_per_token"],
        "val_nats_per_char": results["val_nats_per_char"],
        "val_tokens": results["val_tokens"], "val_chars": results["val_chars"],
        "curve": {"steps": history["steps"], "val_loss": history["val_loss"]},
    }


def collect(gpt_folder: str | Path, llama_folder: str | Path, command: str) -> dict[str, Any]:
    """Both runs, checked to share the budget and the held-out text.

    Raises:
        ValueError: runs with different steps, tokens, dtype or held-out text.
    """
    runs = {"gpt": collect_run(gpt_folder, MODELS["gpt"]),
            "llama": collect_run(llama_folder, MODELS["llama"])}
    for key in ("steps", "tokens", "dtype", "val_tokens", "val_chars"):
        if runs["gpt"][key] != runs["llama"][key]:
            raise ValueError(f"the two runs differ in {key}: {runs['gpt'][key]!r} (GPT) vs "
                             f"{runs['llama'][key]!r} (Llama); a side-by-side needs the same "
                             "budget and the same held-out text")
    return {"command": command,
            "note": "both runs at once on a 2-core CPU, one thread each (OMP_NUM_THREADS=1), on "
                    "a machine shared with other work: tokens/s compare the two models under "
                    "the same conditions, not the machine's best",
            **runs}


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcourse.training.side_by_side --gpt DIR --llama DIR --out FILE``."""
    parser = argparse.ArgumentParser(prog="python -m llmcourse.training.side_by_side",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--gpt", required=True, help="--out folder of the course-cpu run")
    parser.add_argument("--llama", required=True, help="--out folder of the llama-cpu run")
    parser.add_argument("--out", required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    command = command_line(__name__, argv)
    try:
        result = collect(args.gpt, args.llama, command)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_result(args.out, result)
    for key in MODELS:
        r = result[key]
        print(f"{r['preset']:11} {r['parameters']:>10,} parameters  {r['val_nats_per_char']:.4f} "
              f"nats/char  {r['tokens_per_second']:,.0f} tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
