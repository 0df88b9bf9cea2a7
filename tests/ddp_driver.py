"""Run by tests/test_distributed.py under ``torchrun`` (not a test module itself).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_driver.py \\
        OUT_DIR MODE [TIMEOUT_S]

Trains the tiny models of :mod:`tests.test_distributed` with the course's loop, each rank
starting from *different* random weights (DDP must hand rank 0's to every rank), and records
every checkpoint write (rank, step) in ``OUT_DIR/saves.log``. Rank 0 saves the final weights
and histories to ``OUT_DIR/MODE.pt``. MODE:

- ``train``: the GPT for all steps (checkpoints in ``OUT_DIR/full``), the GPT stopped after
  ``STOP`` steps (``OUT_DIR/part``), the Seq2Seq for all steps;
- ``resume``: the GPT resumed from ``OUT_DIR/part`` in a fresh launch;
- ``kill``: rank 1 dies by SIGKILL (as from the out-of-memory killer) at step 3;
- ``hang``: rank 1 stops answering at step 3 (sleeps), beyond the process group's timeout;
- ``mismatch``: rank 1 is given another ``max_steps`` than rank 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

import llmcourse.training.loop as loop
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.text.number_words import PairBatch, encode_pairs, number_pairs, pair_tokenizer
from llmcourse.training import distributed
from llmcourse.training.loop import TrainConfig

# The runs, shared with the tests (which train the same in one process to compare). Dropout
# is off: one process and two draw different dropout masks (each rank has its own stream).
STOP = 2  # the interrupted run's last step
CFG = TrainConfig(max_steps=4, batch_size=8, block_size=16, learning_rate=1e-2, min_lr=1e-3,
                  warmup_steps=1, eval_interval=2, eval_batches=1, log_interval=1,
                  grad_accum_steps=2, progress=False)
PAIR_CFG = TrainConfig(max_steps=3, batch_size=8, learning_rate=3e-3, min_lr=3e-4,
                       warmup_steps=1, eval_interval=3, eval_batches=1, log_interval=1,
                       progress=False)


def stream() -> torch.Tensor:
    """4000 tokens of 0..39, mostly i -> i+1."""
    g = torch.Generator().manual_seed(0)
    base = torch.arange(4000) % 40
    noise = torch.randint(0, 40, (4000,), generator=g)
    return torch.where(torch.rand(4000, generator=g) < 0.8, base, noise)  # (4000,)


def gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16))


def pair_data() -> tuple[PairBatch, int]:
    """Number-word pairs of unequal lengths, and the vocabulary size."""
    tok = pair_tokenizer(number_pairs(range(200)))
    return encode_pairs(number_pairs(range(60)), tok), tok.vocab_size


def seq2seq(vocab: int, seed: int) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, max_len=40,
                                 n_encoder_layer=1, n_decoder_layer=1, n_head=2, n_embd=16,
                                 ffn_hidden=32))

@record  # the failing rank's error goes into torchrun's report, as the command's does
def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    distributed.init_from_env("cpu", timeout)
    rank, world = distributed.world()
    print(f"rank {rank} of {world}: pid {os.getpid()}", flush=True)

    real_save = loop.save_checkpoint

    def spy(folder, model, **kwargs):  # every write of a checkpoint, by whom
        with open(out / "saves.log", "a") as f:
            f.write(f"{rank} {Path(folder).name} {kwargs['training_state']['step']}\n")
        return real_save(folder, model, **kwargs)

    loop.save_checkpoint = spy
    if mode in ("kill", "hang") and rank == 1:
        real_lr_at = loop.lr_at

        def fail_at_step_3(step, cfg):  # after the checkpoint of step 2
            if step == 3:
                print(f"rank 1 fails on purpose at step 3 ({mode})", flush=True)
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(300)  # alive, but answering no one
            return real_lr_at(step, cfg)

        loop.lr_at = fail_at_step_3

    data = stream()
    results = {}
    if mode == "train":
        model = gpt(seed=100 + rank)  # different weights on every rank
        h = loop.train(model, data, data, CFG, checkpoint_dir=out / "full")
        results["gpt"] = (model.state_dict(), h.log_loss)
        loop.train(gpt(seed=100 + rank), data, data, CFG, checkpoint_dir=out / "part",
                   stop_at=STOP)
        pairs, vocab = pair_data()
        model = seq2seq(vocab, seed=300 + rank)
        h = loop.train(model, pairs, pairs, PAIR_CFG)
        results["seq2seq"] = (model.state_dict(), h.log_loss)
    elif mode == "resume":
        model = gpt(seed=400 + rank)
        h = loop.train(model, data, data, CFG, checkpoint_dir=out / "part", resume=True)
        results["gpt"] = (model.state_dict(), h.log_loss)
    elif mode in ("kill", "hang"):
        loop.train(gpt(seed=rank), data, data, replace(CFG, max_steps=50),
                   checkpoint_dir=out / "failing")
    elif mode == "mismatch":
        cfg = CFG if rank == 0 else replace(CFG, max_steps=CFG.max_steps + 1)
        loop.train(gpt(seed=rank), data, data, cfg, checkpoint_dir=out / "mismatch")
    if rank == 0:
        torch.save(results, out / f"{mode}.pt")
        (out / f"{mode}.done").write_text(json.dumps({"world": world}))
    distributed.shutdown()


if __name__ == "__main__":
    main()
