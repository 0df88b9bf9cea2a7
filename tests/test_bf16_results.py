"""bf16 autocast against float32 (llmcourse.training.precision_compare): the committed
measurement is what its command says (same model, same steps in the same chunks, the median
step times, their ratio and the loss gap recomputed from what it records, the held-out work's
tokens and characters recounted); the chunked training equals one uninterrupted run of the
course's loop; the command runs end to end on a toy budget and refuses bad input."""

from __future__ import annotations

import json
import math
import shlex
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.text.bpe import EOT
from llmcourse.text.corpus import VALIDATION_WORKS, token_stream
from llmcourse.training import precision_compare as pc
from llmcourse.training import scaling
from llmcourse.training.loop import TrainConfig, evaluate_stream, train

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "bf16_vs_fp32.json"
TOKENIZER = ROOT / "data" / "checkpoints" / "shakespeare-gpt"


def check_result(r: dict[str, Any]) -> None:
    """Everything a result must satisfy whatever its steps and machine."""
    args = shlex.split(r["command"])
    assert args[:3] == ["python", "-m", "llmcourse.training.precision_compare"]
    opts = dict(zip(args[3::2], args[4::2], strict=True))
    steps = int(opts.get("--steps", pc.DEFAULT_STEPS))
    chunk = int(opts.get("--chunk-steps", pc.DEFAULT_CHUNK_STEPS))
    assert r["chunk_steps"] == chunk
    assert r["held_out"]["works"] == [opts.get("--work", pc.DEFAULT_WORK)]
    model_cfg, cfg = pc.setup(r["model"]["vocab_size"], steps, chunk)
    assert r["preset"] == pc.PRESET
    assert r["model"] == asdict(model_cfg)
    assert r["parameters"] == GPT(model_cfg).num_parameters()
    assert r["train"] == {k: v for k, v in asdict(cfg).items()
                          if k not in ("device", "progress", "dtype")}
    assert isinstance(r["machine"]["fast_bf16"], bool) and r["machine"]["why"]

    runs = r["runs"]
    assert list(runs) == ["fp32", "bf16"]
    fp32, bf16 = runs["fp32"], runs["bf16"]
    # the same steps, in the same chunks
    expected_chunks = [chunk] * (steps // chunk) + ([steps % chunk] if steps % chunk else [])
    assert fp32["chunk_steps"] == bf16["chunk_steps"] == expected_chunks
    assert sum(fp32["chunk_steps"]) == r["train"]["max_steps"] == steps
    assert fp32["eval_tokens"] == bf16["eval_tokens"] == r["held_out"]["tokens"]
    for run in (fp32, bf16):
        assert all(s > 0 for s in run["chunk_seconds"])
        assert run["step_seconds"] == pytest.approx(
            [s / n for s, n in zip(run["chunk_seconds"], run["chunk_steps"], strict=True)])
        assert run["median_step_seconds"] == pytest.approx(statistics.median(run["step_seconds"]))
        assert math.isfinite(run["val_nats_per_token"])
        assert 0 < run["val_nats_per_token"] < math.log(r["model"]["vocab_size"])
        assert run["val_nats_per_char"] == pytest.approx(
            run["val_nats_per_token"] * r["held_out"]["tokens"] / r["held_out"]["chars"],
            rel=1e-12)
        assert run["curve"]["steps"] == [0, *[sum(run["chunk_steps"][:i + 1])
                                              for i in range(len(run["chunk_steps"]))]]
        assert len(run["curve"]["val_nats_per_token"]) == len(run["curve"]["steps"])
    for run in (fp32, bf16):
        assert run["min_step_seconds"] == min(run["step_seconds"])
    ratio = statistics.median(b / f for f, b in zip(fp32["step_seconds"], bf16["step_seconds"],
                                                    strict=True))
    assert r["step_time_ratio_bf16_over_fp32"] == pytest.approx(ratio, rel=1e-12)
    assert r["speedup_bf16"] == pytest.approx(1 / ratio, rel=1e-12)
    assert r["ratio_of_median_step_times"] == pytest.approx(
        bf16["median_step_seconds"] / fp32["median_step_seconds"], rel=1e-12)
    gap = (bf16["val_nats_per_char"] - fp32["val_nats_per_char"]) / fp32["val_nats_per_char"]
    assert r["relative_gap_nats_per_char"] == pytest.approx(gap, rel=1e-12)


def test_committed_result_is_consistent():
    r = json.loads(RESULT.read_text())
    assert r["command"] in pc.__doc__, "the docstring must show the command that was run"
    args = shlex.split(r["command"])
    assert dict(zip(args[3::2], args[4::2], strict=True))["--out"] == \
        "data/results/bf16_vs_fp32.json"
    assert r["tokenizer"] == TOKENIZER.name
    assert r["held_out"]["works"][0] in VALIDATION_WORKS
    check_result(r)


def test_committed_held_out_counts_are_the_corpus():
    r = json.loads(RESULT.read_text())
    tokenizer, _, _, val_works = scaling.course_streams(TOKENIZER)
    work = r["held_out"]["works"][0]
    ids = token_stream({work: val_works[work]}, tokenizer, EOT)
    assert r["held_out"]["tokens"] == ids.numel() - 1
    assert r["held_out"]["chars"] == len(val_works[work])
    assert r["model"]["vocab_size"] == tokenizer.vocab_size


def _toy() -> tuple[GPTConfig, TrainConfig, torch.Tensor]:
    config = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16)
    cfg = TrainConfig(max_steps=7, batch_size=4, block_size=16, learning_rate=3e-3,
                      warmup_steps=2, eval_interval=7, eval_batches=1, progress=False)
    stream = torch.randint(0, 32, (3000,), generator=torch.Generator().manual_seed(0))
    return config, cfg, stream


def test_chunked_training_equals_one_uninterrupted_run():
    """Alternating chunks resumed from checkpoints take exactly the steps of one run."""
    config, cfg, stream = _toy()
    runs = pc.compare_dtypes(config, cfg, stream, stream, stream[:500], chunk_steps=3)
    assert runs["fp32"]["chunk_steps"] == runs["bf16"]["chunk_steps"] == [3, 3, 1]
    torch.manual_seed(cfg.seed)
    model = GPT(config)
    train(model, stream, stream, cfg)
    loss, n = evaluate_stream(model, stream[:500], block_size=cfg.block_size)
    assert runs["fp32"]["eval_tokens"] == n
    assert runs["fp32"]["val_nats_per_token"] == pytest.approx(loss, abs=1e-6)
    # bf16 rounds the products, so it follows another path, but a close one
    assert runs["bf16"]["val_nats_per_token"] != runs["fp32"]["val_nats_per_token"]
    assert runs["bf16"]["val_nats_per_token"] == pytest.approx(loss, rel=0.05)


def test_summary_pairs_the_chunks():
    """A busy patch (chunk 0: fp32 slowed 4x, bf16 2x) moves the median of the per-chunk
    ratios less than it moves the ratio of the medians."""
    fp32 = {"step_seconds": [8.0, 2.0, 2.0, 2.1], "median_step_seconds": 2.05,
            "val_nats_per_char": 2.0}
    bf16 = {"step_seconds": [3.0, 1.5, 1.6, 6.0], "median_step_seconds": 2.3,
            "val_nats_per_char": 2.2}
    s = pc.summary(fp32, bf16, key="val_nats_per_char")
    assert s["step_time_ratio"] == pytest.approx((0.75 + 0.8) / 2)  # ratios .375 .75 .8 2.86
    assert s["speedup"] == pytest.approx(1 / s["step_time_ratio"])
    assert s["ratio_of_medians"] == pytest.approx(2.3 / 2.05)
    assert s["relative_gap"] == pytest.approx(0.1)
    with pytest.raises(ValueError):  # chunks that do not pair up
        pc.summary(fp32, {**bf16, "step_seconds": [1.0]})


def test_main_runs_end_to_end_on_a_toy_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "PRESET", "tiny")  # a 2-layer, width-32 model
    works = scaling.load_works()
    monkeypatch.setattr(scaling, "load_works", lambda: {k: v[:3000] for k, v in works.items()})
    out = tmp_path / "out" / "bf16_vs_fp32.json"
    threads = torch.get_num_threads()
    try:
        assert pc.main(["--steps", "3", "--chunk-steps", "2", "--work", "sonnets",
                        "--tokenizer", str(TOKENIZER), "--threads", "1",
                        "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # main sets it for the whole process
    r = json.loads(out.read_text())
    assert r["machine"]["threads"] == 1 and r["held_out"]["chars"] == 3000
    check_result(r)
    assert [p.name for p in out.parent.iterdir()] == ["bf16_vs_fp32.json"]


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "steps must be a positive integer"),
    (["--chunk-steps", "-2"], "chunk_steps must be a positive integer"),
    (["--threads", "0"], "--threads: must be a positive integer"),
])
def test_bad_arguments_are_refused_before_anything_runs(argv, message, tmp_path, capsys):
    out = tmp_path / "x.json"
    with pytest.raises(SystemExit) as err:
        pc.main([*argv, "--out", str(out)])
    assert err.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_an_unknown_held_out_work_is_refused(tmp_path, capsys, monkeypatch):
    works = scaling.load_works()
    monkeypatch.setattr(scaling, "load_works", lambda: {k: v[:3000] for k, v in works.items()})
    with pytest.raises(SystemExit):
        pc.main(["--work", "king_lear", "--tokenizer", str(TOKENIZER),
                 "--out", str(tmp_path / "x.json")])
    assert "is not a held-out work" in capsys.readouterr().err


def test_compare_dtypes_bad_input():
    config, cfg, stream = _toy()
    for dtypes in (("fp32", "fp16"), ("fp32", "fp32"), (), "bf16"):
        with pytest.raises(ValueError, match="dtype"):
            pc.compare_dtypes(config, cfg, stream, stream, stream, chunk_steps=2,
                              dtypes=dtypes)
    with pytest.raises(ValueError, match="chunk_steps"):
        pc.compare_dtypes(config, cfg, stream, stream, stream, chunk_steps=0)
