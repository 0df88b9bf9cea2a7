"""Loss against compute (llmcourse.training.scaling): the committed measurement is what its
command says (configs, parameters counted by building each GPT, FLOPs recomputed with
models.sizing and tied to torch's FlopCounterMode, the held-out works' tokens and characters
recounted), its curves are well formed; the command runs end to end on a tiny budget and
refuses a bad one."""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.models import sizing
from llmcourse.models.gpt import GPT
from llmcourse.text.corpus import VALIDATION_WORKS
from llmcourse.training import scaling

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "scaling.json"
TOKENIZER = ROOT / "data" / "checkpoints" / "shakespeare-gpt"


def check_result(r: dict[str, Any], sizes: tuple[tuple[int, int, int], ...]) -> None:
    """Everything a result must satisfy whatever its budget and sizes."""
    args = shlex.split(r["command"])
    assert args[:3] == ["python", "-m", "llmcourse.training.scaling"]
    opts = dict(zip(args[3::2], args[4::2], strict=True))
    tokens = int(opts.get("--tokens", scaling.DEFAULT_TOKENS))
    cfg = scaling.train_setup(tokens)
    assert r["train"] == {k: v for k, v in asdict(cfg).items() if k not in ("device", "progress")}
    assert r["tokens_per_step"] == cfg.batch_size * cfg.block_size
    assert r["sizes"] == [list(s) for s in sizes]
    held = r["held_out"]
    assert held["works"] == sorted(VALIDATION_WORKS)
    runs = r["runs"]
    assert [run["model"]["n_layer"] for run in runs] == [s[0] for s in sizes]
    assert {run["tokens"] for run in runs} == {tokens}, "every model sees the same tokens"
    for size, run in zip(sizes, runs, strict=True):
        config = scaling.model_config(size, run["model"]["vocab_size"])
        assert run["model"] == asdict(config)
        model = GPT(config)
        assert run["parameters"] == model.num_parameters()
        assert run["non_embedding_parameters"] == model.num_parameters(exclude_embeddings=True)
        assert run["tokens_per_parameter"] == pytest.approx(tokens / run["parameters"])
        shape = scaling.shape_of(config)
        assert run["training_flops"] == sizing.training_flops(shape, tokens,
                                                              context=cfg.block_size)
        assert run["flops_6nd_non_embedding"] == 6 * run["non_embedding_parameters"] * tokens
        for key in ("val_nats_per_token", "val_nats_per_char"):
            assert math.isfinite(run[key]) and run[key] > 0, (run["name"], key)
        assert run["val_nats_per_char"] == pytest.approx(
            run["val_nats_per_token"] * held["tokens"] / held["chars"], rel=1e-12)
        # below a uniform guess over the vocabulary
        assert run["val_nats_per_token"] < math.log(config.vocab_size)

        curve = run["curve"]
        n = len(curve["steps"])
        assert all(len(v) == n for v in curve.values()), "curve lists of unequal length"
        assert curve["steps"][0] == 0 and curve["steps"][-1] == cfg.max_steps
        assert all(a < b for a, b in pairwise(curve["steps"])), "steps not rising"
        assert all(s % cfg.eval_interval == 0 for s in curve["steps"][:-1])
        assert curve["tokens"] == [s * r["tokens_per_step"] for s in curve["steps"]]
        per_token = scaling.flops_per_token(config, cfg.block_size)
        assert curve["flops"] == [per_token * t for t in curve["tokens"]]
        assert curve["flops"][-1] == run["training_flops"]
        for key in ("train_nats_per_token", "val_nats_per_token", "val_nats_per_char"):
            assert all(math.isfinite(v) and v > 0 for v in curve[key]), (run["name"], key)
        assert curve["val_nats_per_char"] == pytest.approx(
            [v * held["tokens"] / held["chars"] for v in curve["val_nats_per_token"]],
            rel=1e-12)
    # the sizes grow, and so does the compute of the same tokens
    for a, b in pairwise(runs):
        assert a["non_embedding_parameters"] < b["non_embedding_parameters"]
        assert a["training_flops"] < b["training_flops"]
    frontier = scaling.compute_frontier(runs)
    assert frontier and all(a["loss"] > b["loss"] and a["flops"] < b["flops"]
                            for a, b in pairwise(frontier))


def test_committed_result_is_consistent():
    r = json.loads(RESULT.read_text())
    assert r["command"] in scaling.__doc__, "the docstring must show the command that was run"
    opts = dict(zip(shlex.split(r["command"])[3::2], shlex.split(r["command"])[4::2],
                    strict=True))
    assert opts["--out"] == "data/results/scaling.json"
    assert r["tokenizer"] == TOKENIZER.name
    check_result(r, scaling.SIZES)


def test_committed_held_out_counts_are_the_corpus():
    r = json.loads(RESULT.read_text())
    tokenizer, _, val_ids, val_works = scaling.course_streams(TOKENIZER)
    assert r["held_out"]["tokens"] == val_ids.numel() - 1  # every token predicted once
    assert r["held_out"]["chars"] == sum(len(t) for t in val_works.values())
    assert {run["model"]["vocab_size"] for run in r["runs"]} == {tokenizer.vocab_size}


def test_recorded_flops_agree_with_torchs_counter():
    """FlopCounterMode over a training step of the smallest model: it counts the attention's
    whole T × T square (what an unfused attention computes before masking), the recorded
    FLOPs its causal half."""
    r = json.loads(RESULT.read_text())
    run = r["runs"][0]
    config = scaling.model_config(tuple(r["sizes"][0]), run["model"]["vocab_size"])
    t = config.block_size
    model = GPT(config)
    x = torch.randint(config.vocab_size, (2, t))  # (B, T)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, x)[1].backward()
    masked_half = 3 * 2 * config.n_layer * t * config.n_embd  # per token, forward + backward
    per_token = run["training_flops"] // run["tokens"]
    assert counter.get_total_flops() == 2 * t * (per_token + masked_half)


def test_frontier_is_the_lower_envelope():
    runs = [{"name": "a", "curve": {"flops": [0, 1, 3, 5], "val_nats_per_char": [9, 4, 3, 2.9]}},
            {"name": "b", "curve": {"flops": [0, 2, 4, 6], "val_nats_per_char": [9, 5, 2.5, 2]}}]
    got = scaling.compute_frontier(runs)
    assert [(p["flops"], p["loss"], p["model"]) for p in got] == [
        (1, 4, "a"), (3, 3, "a"), (4, 2.5, "b"), (6, 2, "b")]
    with pytest.raises(ValueError):  # a curve whose lists disagree in length
        scaling.compute_frontier([{"name": "c", "curve": {"flops": [0, 1],
                                                          "val_nats_per_char": [1.0]}}])


def short_works(monkeypatch: pytest.MonkeyPatch, chars: int = 3000) -> None:
    """Every work of the corpus cut to its first ``chars`` characters (a fast run)."""
    works = scaling.load_works()
    monkeypatch.setattr(scaling, "load_works", lambda: {k: v[:chars] for k, v in works.items()})


def test_main_runs_end_to_end_on_a_tiny_budget(tmp_path, monkeypatch):
    sizes = ((1, 1, 8), (1, 2, 16))
    monkeypatch.setattr(scaling, "SIZES", sizes)
    short_works(monkeypatch)
    out = tmp_path / "results" / "scaling.json"
    tokens = 2 * scaling.BATCH_SIZE * scaling.BLOCK_SIZE
    threads = torch.get_num_threads()
    try:
        assert scaling.main(["--tokens", str(tokens), "--tokenizer", str(TOKENIZER),
                             "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # main sets it for the whole process
    r = json.loads(out.read_text())
    assert r["threads"] == 1 and r["train"]["max_steps"] == 2
    check_result(r, sizes)
    assert [p.name for p in out.parent.iterdir()] == ["scaling.json"], "a temporary file is left"


@pytest.mark.parametrize("tokens", ["0", "-1024", "1000"])
def test_a_bad_budget_is_refused_before_anything_runs(tokens, tmp_path, capsys):
    out = tmp_path / "scaling.json"
    with pytest.raises(SystemExit) as err:
        scaling.main(["--tokens", tokens, "--out", str(out)])
    assert err.value.code == 2
    assert "token budget must be a positive multiple of 1024" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="token budget"):
        scaling.train_setup(int(tokens))


def test_bad_threads_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        scaling.main(["--threads", "0", "--out", str(tmp_path / "x.json")])
    assert "--threads: must be a positive integer" in capsys.readouterr().err
