"""Data-parallel training with PyTorch's DDP: the course's loop and command under ``torchrun``
on 2 CPU processes (gloo).

- after N steps on 2 processes (each from other random weights, each on its half of every
  batch, with gradient accumulation on top) the weights equal those of one process training
  on the whole batch (≤ 1e-5), for the GPT and for the encoder-decoder;
- the checkpoint is written once per evaluation, by rank 0, and a resumed launch equals the
  uninterrupted one;
- a rank that dies (SIGKILL) or hangs ends the run with an error, never a hang; ranks that
  disagree on the run stop with an error that names the difference; a batch the processes
  cannot share is refused before anything runs;
- ``python -m llmcourse.training`` itself runs under ``torchrun``.

Every launch has a timeout, so that a broken run fails this test rather than hanging it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llmcourse.models.checkpoint import load_checkpoint
from llmcourse.training import cli, distributed

sys.path.insert(0, str(Path(__file__).parent))
from ddp_driver import (  # noqa: E402  (the launched script; it holds the runs' settings)
    CFG,
    PAIR_CFG,
    STOP,
    gpt,
    pair_data,
    seq2seq,
    stream,
)
from training_helpers import assert_same_weights, train_keeping_optimizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("ddp_driver.py")
# torchrun under its module name; --standalone picks a free port (two runs never collide).
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Launch 2 processes; the result and its wall time. Never waits beyond ``timeout``."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)
    return done, time.perf_counter() - t0


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Two launches: the runs of ``ddp_driver.py train``, then the resume of the interrupted
    one in a fresh launch. Their folder, with what rank 0 saved."""
    out = tmp_path_factory.mktemp("ddp")
    for mode in ("train", "resume"):
        done, _ = torchrun(str(DRIVER), str(out), mode)
        assert done.returncode == 0, output(done)[-3000:]
    return out


def test_two_processes_equal_one_process_on_the_whole_batch(launched):
    """2 ranks × 2 micro-batches of 2 rows = one process on batches of 8: the same weights.
    The ranks started from other weights than rank 0's (seeds 100, 101): DDP broadcast
    rank 0's, which the one-process run also starts from."""
    ddp_state, ddp_log = torch.load(launched / "train.pt")["gpt"]
    data = stream()
    one = gpt(seed=100)
    history, optimizer = train_keeping_optimizer(one, data, data,
                                                 replace(CFG, grad_accum_steps=1))
    assert_same_weights(one, optimizer, ddp_state, atol=1e-5)
    assert ddp_log == pytest.approx(history.log_loss, abs=1e-5)  # the whole batch's loss
    # The few entries left out above (all their gradients within 1e-6 of 0, so AdamW's step
    # there is rounding noise over eps) change no output: the models compute the same logits.
    ddp = gpt(seed=0)
    ddp.load_state_dict(ddp_state)
    x = data[:64].view(4, 16)
    with torch.no_grad():
        torch.testing.assert_close(ddp.eval()(x)[0], one.eval()(x)[0], atol=1e-5, rtol=0)
    # and the test can fail: the weights of a rank that did not receive rank 0's differ.
    other = gpt(seed=101).state_dict()
    assert (other["transformer.wte.weight"] - ddp_state["transformer.wte.weight"]).abs().max() \
        > 1e-2


def test_two_processes_train_the_encoder_decoder_as_one(launched):
    """Translation pairs have unequal lengths: each half of the batch is weighted by its
    share of the scored tokens, so the averaged gradient is still the whole batch's."""
    ddp_state, ddp_log = torch.load(launched / "train.pt")["seq2seq"]
    pairs, vocab = pair_data()
    one = seq2seq(vocab, seed=300)
    history, optimizer = train_keeping_optimizer(one, pairs, pairs, PAIR_CFG)
    assert_same_weights(one, optimizer, ddp_state, atol=1e-5)
    assert ddp_log == pytest.approx(history.log_loss, abs=1e-5)


def test_the_checkpoint_is_written_once_by_rank_0(launched):
    saves = (launched / "saves.log").read_text().split("\n")[:-1]
    # (rank, run, step) of every write: rank 0 only, once per evaluation, the resumed run
    # writing its own.
    assert saves == ["0 full 2", "0 full 4", f"0 part {STOP}", "0 part 4"]
    ddp_state = torch.load(launched / "train.pt")["gpt"][0]
    model, state = load_checkpoint(launched / "full")
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]["ranks"]) == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ddp_state[name]), name
    # written atomically: nothing but the checkpoints is left in the folder
    assert sorted(p.name for p in launched.iterdir() if p.is_dir()) == ["full", "part"]


def test_resume_in_a_new_launch_equals_the_uninterrupted_run(launched):
    straight_state, straight_log = torch.load(launched / "train.pt")["gpt"]
    resumed_state, resumed_log = torch.load(launched / "resume.pt")["gpt"]
    assert resumed_log == straight_log  # every step's loss, exactly
    for name, tensor in straight_state.items():
        assert torch.equal(resumed_state[name], tensor), name


@pytest.mark.parametrize("mode, timeout_s, why", [
    ("kill", 60, r"Signal 9 \(SIGKILL\)"),  # torchrun notices the dead process at once
    ("hang", 5, r"rank 0 of 2: a collective operation with the other processes failed"),
])
def test_a_rank_that_fails_ends_the_run_with_a_clear_message(tmp_path, mode, timeout_s, why):
    done, seconds = torchrun(str(DRIVER), str(tmp_path), mode, str(timeout_s), timeout=120)
    text = output(done)
    assert done.returncode != 0, text[-3000:]
    assert "rank 1 fails on purpose at step 3" in text
    assert "Root Cause (first observed failure)" in text  # torchrun's report
    assert re.search(why, text), text[-3000:]
    assert seconds < 90  # ended, not hung (a stuck rank sleeps 300 s)
    # the checkpoint of the last evaluation before the failure is whole, ready to resume
    assert load_checkpoint(tmp_path / "failing")[1]["step"] == 2


def test_ranks_that_disagree_on_the_run_stop_with_a_clear_error(tmp_path):
    done, _ = torchrun(str(DRIVER), str(tmp_path), "mismatch")
    text = output(done)
    assert done.returncode != 0
    assert ("ValueError: the processes disagree on the run: rank 0 vs rank 1: "
            "train_config.max_steps: 4 vs 5") in text, text[-3000:]
    assert not (tmp_path / "mismatch").exists()  # nothing written


def test_the_training_command_runs_under_torchrun(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    done, _ = torchrun("-m", "llmcourse.training", "tiny", "--out", str(out), "--work-dir",
                       str(work), "--max-steps", "2", "--no-progress", "--dist-timeout", "60")
    text = output(done)
    assert done.returncode == 0, text[-3000:]
    assert "data parallel: 2 processes (gloo), each 1 × 4 of the 8 sequences of a step" in text
    assert text.count("held-out:") == 1  # rank 0 alone reports
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == 2
    readme = (out / "README.md").read_text()
    assert "torchrun --standalone --nproc_per_node=2 -m llmcourse.training tiny" in readme
    model, _ = load_checkpoint(out)
    assert model.config.n_layer == 2
    assert load_checkpoint(work)[1]["world_size"] == 2


# ---------------------------------------------------------------- without torchrun


@pytest.mark.parametrize("batch, accum, world, match", [
    (8, 1, 16, "16 processes but the batch holds only 8 sequences: every process needs at "
               "least one"),
    (12, 1, 5, r"batch_size=12 does not split evenly into 5 processes × 1 micro-batches "
               r"\(grad_accum_steps\) = 5 equal parts.*among \[1, 2, 3, 4, 6, 12\]"),
    (12, 2, 4, r"into 4 processes × 2 micro-batches .* = 8 equal parts.*among \[1, 2, 3, 6\]"),
    (0, 1, 1, "batch_size must be a positive integer, got 0"),
])
def test_a_batch_the_processes_cannot_share_is_refused(batch, accum, world, match):
    with pytest.raises(ValueError, match=match):
        distributed.split_batch(batch, accum, world)


def test_split_batch_sizes():
    assert distributed.split_batch(32, 4, 2) == 4
    assert distributed.split_batch(8, 1, 8) == 1


@pytest.mark.parametrize("flags, match", [
    (["--batch-size", "3"], "batch_size=3 does not split evenly into 2 processes"),
    (["--batch-size", "1"], "2 processes but the batch holds only 1 sequence:"),
    (["--batch-size", "8", "--grad-accum-steps", "8"], r"2 processes × 8 micro-batches"),
    (["--dist-timeout", "0"], "--dist-timeout must be a positive number of seconds"),
])
def test_the_command_refuses_a_bad_split_before_any_work(tmp_path, monkeypatch, capsys,
                                                          flags, match):
    """What torchrun --nproc_per_node=2 gives each process: WORLD_SIZE=2. The command stops
    before joining the others, reading the corpus or writing anything."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(cli, "load_works", lambda: pytest.fail("read the corpus"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["tiny", "--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w"),
                  *flags])
    assert stopped.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_one_process_is_not_distributed():
    assert distributed.world() == (0, 1) and not distributed.is_distributed()
    assert distributed.gather("x") == ["x"]
    distributed.check_same_run({"anything": 1})  # alone, nothing to disagree with
    layer = torch.nn.Linear(2, 2)
    assert distributed.wrap(layer, "cpu") is layer


def test_fingerprint_tells_data_apart():
    a = torch.arange(100)
    assert distributed.fingerprint(a) == distributed.fingerprint(a.clone())
    assert distributed.fingerprint(a) != distributed.fingerprint(a.flip(0))
    assert distributed.fingerprint(a) != distributed.fingerprint(a.int())  # dtype counts
    assert distributed.fingerprint(a) != distributed.fingerprint(a.view(10, 10))  # shape too


def test_differences_are_named_by_field():
    a = {"train_config": {"max_steps": 4, "seed": 1}, "train_data": "ab"}
    b = {"train_config": {"max_steps": 5, "seed": 1}, "train_data": "cd"}
    assert distributed._differences(a, b) == ["train_config.max_steps: 4 vs 5",
                                              "train_data: 'ab' vs 'cd'"]
