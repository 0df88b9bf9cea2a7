"""The committed GPT-2-style vs Llama-style comparison (data/results/side_by_side.json) is
what its two runs and the presets say, and the collector refuses runs that do not compare."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmcourse.text.corpus import nats_per_char
from llmcourse.training import side_by_side
from llmcourse.training.cli import PRESETS

RESULT = Path(__file__).resolve().parents[1] / "data" / "results" / "side_by_side.json"


@pytest.fixture(scope="module")
def result() -> dict:
    return json.loads(RESULT.read_text())


def test_the_collection_command_is_the_documented_one(result):
    assert result["command"] == ("python -m llmcourse.training.side_by_side --gpt "
                                 "data/cache/side_by_side/course-cpu --llama "
                                 "data/cache/side_by_side/llama-cpu --out "
                                 "data/results/side_by_side.json")
    assert result["command"].replace(" ", "") in side_by_side.__doc__.replace("\\\n", "") \
        .replace(" ", "").replace("\n", "")


@pytest.mark.parametrize("key", ["gpt", "llama"])
def test_each_run_is_its_preset_at_the_recorded_budget(result, key):
    run = result[key]
    preset = side_by_side.MODELS[key]
    assert run["preset"] == preset
    words = run["command"].split()
    assert words[:4] == ["python", "-m", "llmcourse.training", preset]
    assert words[words.index("--max-steps") + 1] == str(run["steps"])
    assert words[words.index("--dtype") + 1] == run["dtype"]
    plan = PRESETS[preset].train
    assert (run["batch_size"], run["block_size"]) == (plan.batch_size, plan.block_size)
    assert run["tokens"] == run["steps"] * plan.batch_size * plan.block_size
    assert run["parameters"] == PRESETS[preset].build(run["model"]["vocab_size"]) \
        .num_parameters()
    assert run["tokens_per_second"] == pytest.approx(run["tokens"] / run["wall_seconds"])
    assert math.isfinite(run["val_nats_per_char"]) and run["val_nats_per_char"] > 0
    # per character = per token × tokens / characters, on every token of the held-out works
    assert run["val_nats_per_char"] == pytest.approx(
        nats_per_char(run["val_nats_per_token"], run["val_tokens"], run["val_chars"]))
    assert run["curve"]["steps"][-1] == run["steps"]


def test_the_two_runs_share_the_budget_and_the_held_out_text(result):
    gpt, llama = result["gpt"], result["llama"]
    for key in ("steps", "tokens", "dtype", "val_tokens", "val_chars", "batch_size",
                "block_size"):
        assert gpt[key] == llama[key], key
    assert abs(gpt["parameters"] - llama["parameters"]) / gpt["parameters"] < 0.01
    assert llama["model"]["n_kv_head"] < llama["model"]["n_head"]  # grouped-query attention


def _fake_run(folder: Path, preset: str, steps: int = 10, max_steps: int = 10,
              chars: int = 300) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"vocab_size": 4096}))
    (folder / "README.md").write_text(
        f"# x\n\n```\npython -m llmcourse.training {preset} --out {folder.name} "
        f"--max-steps {max_steps} --dtype fp32\n```\n")
    (folder / "results.json").write_text(json.dumps({
        "val_nats_per_token": 4.0, "val_tokens": 100, "val_chars": chars,
        "val_nats_per_char": 4.0 * 100 / chars, "wall_min": 1.0, "device": "cpu",
        "dtype": "fp32", "history": {"steps": [0, steps], "val_loss": [8.0, 4.0]}}))
    return folder


def test_collect_writes_both_runs(tmp_path):
    gpt = _fake_run(tmp_path / "g", "course-cpu")
    llama = _fake_run(tmp_path / "l", "llama-cpu")
    out = tmp_path / "r.json"
    assert side_by_side.main(["--gpt", str(gpt), "--llama", str(llama), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["gpt"]["tokens"] == 10 * 32 * 128
    assert written["llama"]["tokens_per_second"] == pytest.approx(10 * 32 * 128 / 60)


@pytest.mark.parametrize("problem, llama_kwargs, message", [
    ("unfinished", dict(steps=5), "stopped at step 5 of 10"),
    ("other text", dict(chars=301), "differ in val_chars"),
    ("other budget", dict(steps=20, max_steps=20), "differ in steps"),
])
def test_collect_refuses_runs_that_do_not_compare(tmp_path, capsys, problem, llama_kwargs,
                                                  message):
    gpt = _fake_run(tmp_path / "g", "course-cpu")
    llama = _fake_run(tmp_path / "l", "llama-cpu", **llama_kwargs)
    out = tmp_path / "r.json"
    assert side_by_side.main(["--gpt", str(gpt), "--llama", str(llama), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written half-way


def test_collect_refuses_a_swapped_or_missing_folder(tmp_path):
    gpt = _fake_run(tmp_path / "g", "course-cpu")
    with pytest.raises(ValueError, match="not the 'llama-cpu' preset"):
        side_by_side.collect_run(gpt, "llama-cpu")
    with pytest.raises(ValueError, match="has no results.json"):
        side_by_side.collect_run(tmp_path / "nowhere", "course-cpu")
