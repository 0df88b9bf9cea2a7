"""llmcourse.training.loop and llmcourse.models.checkpoint: optimizer groups, the schedule against
torch's own
schedulers, the loop, exact resume, Hugging Face checkpoints, atomic saves, bad configs, the
command line."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import warnings
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError, safe_open

import llmcourse.models.checkpoint as ckpt_mod
from llmcourse.core.files import NoSpaceError
from llmcourse.models.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig, parameter_count
from llmcourse.text.bpe import EOT, ByteLevelBPE
from llmcourse.text.load import load_tokenizer
from llmcourse.training.loop import (
    History,
    TrainConfig,
    configure_optimizer,
    estimate_loss,
    evaluate_stream,
    lr_at,
    train,
)

TINY = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1)
CFG = TrainConfig(max_steps=16, batch_size=4, block_size=16, learning_rate=1e-2, min_lr=1e-3,
                  warmup_steps=3, eval_interval=4, eval_batches=2, log_interval=1,
                  progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, config: GPTConfig = TINY) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


@pytest.fixture(scope="module")
def stream():
    g = torch.Generator().manual_seed(0)
    # A learnable pattern with noise: mostly i -> i+1 (mod 40).
    base = torch.arange(4000) % 40
    noise = torch.randint(0, 40, (4000,), generator=g)
    return torch.where(torch.rand(4000, generator=g) < 0.8, base, noise)


# ---------------------------------------------------------------- optimizer


def test_weight_decay_only_on_matrices():
    model = tiny_model()
    opt = configure_optimizer(model, CFG)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == CFG.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(n.endswith("weight") and "ln" not in n for n in decayed)
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert all(n.endswith("bias") or ".ln_" in n for n in kept)
    assert "transformer.h.1.ln_2.weight" in kept and "transformer.h.0.mlp.c_fc.bias" in kept
    # Every parameter exactly once (the tied embedding / output matrix too).
    all_params = decay["params"] + no_decay["params"]
    assert len({id(p) for p in all_params}) == len(all_params)
    assert sum(p.numel() for p in all_params) == model.num_parameters()


def test_decay_shrinks_matrices_and_leaves_the_rest():
    """With zero gradients, AdamW's update is the decay alone: p ← p (1 − lr·wd)."""
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = configure_optimizer(model, replace(CFG, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for g in opt.param_groups:
        g["lr"] = 0.1
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if p.dim() >= 2 else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor, msg=n)


# ---------------------------------------------------------------- schedule vs torch


def torch_schedule(cfg: TrainConfig) -> list[float]:
    """The same schedule composed from torch's schedulers, which no one here wrote."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=cfg.learning_rate)
    w, s = cfg.warmup_steps, cfg.max_steps
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s - w, eta_min=cfg.min_lr)
    if w == 0:
        sched = cosine
    else:
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / w, end_factor=1.0,
                                                 total_iters=w - 1)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cosine], milestones=[w])
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's deprecation chatter
        for _ in range(s):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


@pytest.mark.parametrize("warmup", [0, 2, 10, 100])
def test_lr_schedule_matches_torch_schedulers(warmup):
    cfg = TrainConfig(max_steps=200, learning_rate=6e-4, min_lr=6e-5, warmup_steps=warmup)
    ours = [lr_at(s, cfg) for s in range(cfg.max_steps)]
    assert ours == pytest.approx(torch_schedule(cfg), rel=1e-6, abs=1e-12)


@settings(max_examples=15)
@given(steps=st.integers(5, 300), warm_frac=st.floats(0, 0.5), lr=st.floats(1e-5, 1.0),
       min_frac=st.floats(0, 1))
def test_lr_schedule_matches_torch_property(steps, warm_frac, lr, min_frac):
    warmup = int(warm_frac * steps)
    warmup = 0 if warmup == 1 else warmup  # LinearLR cannot express a 1-step warmup
    cfg = TrainConfig(max_steps=steps, learning_rate=lr, min_lr=lr * min_frac,
                      warmup_steps=warmup)
    ours = [lr_at(s, cfg) for s in range(steps)]
    assert ours == pytest.approx(torch_schedule(cfg), rel=1e-6, abs=1e-12)


def test_lr_schedule_shape():
    cfg = TrainConfig(max_steps=100, learning_rate=1.0, min_lr=0.1, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and max(lrs) == 1.0 == lrs[9] == lrs[10]
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))  # never rises again
    assert lrs[55] == pytest.approx(0.55) and lrs[100:] == [0.1] * 20


# ---------------------------------------------------------------- the loop


def test_training_learns_and_records_history(stream):
    cfg = replace(CFG, max_steps=40, eval_interval=20)
    history = train(tiny_model(), stream, stream, cfg)
    assert isinstance(history, History)
    assert history.steps == [0, 20, 40]
    assert len(history.train_loss) == len(history.val_loss) == len(history.lr) == 3
    assert history.val_loss[0] == pytest.approx(math.log(40), abs=0.3)  # untrained ≈ uniform
    assert history.val_loss[-1] < history.val_loss[0] - 0.7
    assert history.log_steps == list(range(1, 41)) and len(history.log_loss) == 40
    assert history.lr == [lr_at(s, cfg) for s in (0, 20, 40)]
    assert history.elapsed == sorted(history.elapsed)


def test_gradient_clipping_is_applied(stream, monkeypatch):
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        norm = real(params, max_norm, *a, **k)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        seen.append((max_norm, norm.item(), after.item()))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(tiny_model(), stream, stream, replace(CFG, max_steps=5, grad_clip=0.05))
    assert len(seen) == 5 and all(m == 0.05 for m, _, _ in seen)
    assert all(after <= 0.05 * 1.001 for _, before, after in seen if before > 0.05)
    seen.clear()
    train(tiny_model(), stream, stream, replace(CFG, max_steps=5, grad_clip=0.0))
    assert seen == []


def test_estimate_loss_uses_fixed_batches(stream):
    model = tiny_model().train()
    kw = dict(batch_size=4, block_size=16, n_batches=3)
    a = estimate_loss(model, stream, seed=5, **kw)
    b = estimate_loss(model, stream, seed=5, **kw)
    c = estimate_loss(model, stream, seed=6, **kw)
    assert a == b and a != c
    assert model.training  # mode restored


def test_evaluate_stream_predicts_every_token_once(stream):
    model = tiny_model().eval()
    part = stream[:70]  # 69 predictions: 4 windows of 16, then a tail of 5
    loss, n = evaluate_stream(model, part, block_size=16, batch_size=3)
    assert n == 69
    total = 0.0
    for lo in range(0, 69, 16):
        hi = min(lo + 16, 69)
        x, y = part[lo:hi][None], part[lo + 1:hi + 1][None]
        total += model(x, y)[1].item() * y.numel()
    assert loss == pytest.approx(total / 69, rel=1e-5)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"block_size": 16, "batch_size": 0}, ValueError,
     "batch_size must be a positive integer .*got 0"),
    ({"block_size": 0}, ValueError, "block_size must be a positive integer .*got 0"),
    ({"block_size": -4}, ValueError, "block_size must be a positive integer .*got -4"),
    ({"block_size": 16, "batch_size": 2.0}, TypeError, "batch_size must be an int, got float"),
    ({"block_size": "16"}, TypeError, "block_size must be an int, got str '16'"),
    ({"block_size": 32}, ValueError, "block_size=32 is above the model's context block_size=16"),
])
def test_evaluate_stream_refuses_bad_sizes(stream, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        evaluate_stream(tiny_model(), stream[:100], **kwargs)


def test_evaluate_stream_refuses_a_stream_that_is_not_token_ids():
    with pytest.raises(TypeError, match=r"1-D integer tensor of token ids, got shape \(2, 50\)"):
        evaluate_stream(tiny_model(), torch.zeros(2, 50, dtype=torch.long), block_size=16)
    with pytest.raises(TypeError, match="1-D integer tensor of token ids, got list"):
        evaluate_stream(tiny_model(), [1, 2, 3], block_size=16)


def test_resume_continues_the_same_trajectory(stream, tmp_path):
    """2N steps straight == N steps, checkpoint, fresh state, N more (dropout on)."""
    cfg = replace(CFG, eval_interval=8)
    straight_model = tiny_model()
    straight = train(straight_model, stream, stream, cfg)

    folder = tmp_path / "run"
    train(tiny_model(), stream, stream, cfg, checkpoint_dir=folder, stop_at=8)
    assert load_checkpoint(folder)[1]["step"] == 8
    # A new "process": different weights and different global random state.
    torch.manual_seed(12345)
    torch.rand(100)
    resumed_model = tiny_model(seed=99)
    resumed = train(resumed_model, stream, stream, cfg, checkpoint_dir=folder, resume=True)

    assert resumed.log_loss == straight.log_loss  # every step's loss, exactly
    assert resumed.steps == straight.steps and resumed.val_loss == straight.val_loss
    for (n, a), b in zip(straight_model.state_dict().items(),
                         resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_resume_refuses_a_folder_without_a_checkpoint(stream, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        train(tiny_model(), stream, stream, CFG, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        train(tiny_model(), stream, stream, CFG, resume=True)


def test_resume_refuses_another_model_shape(stream, tmp_path):
    train(tiny_model(), stream, stream, replace(CFG, max_steps=4), checkpoint_dir=tmp_path / "c")
    other = tiny_model(config=replace(TINY, n_embd=24))
    with pytest.raises(ValueError, match="differs from this model's"):
        train(other, stream, stream, CFG, checkpoint_dir=tmp_path / "c", resume=True)


# ---------------------------------------------------------------- bad configs


@pytest.mark.parametrize("field, value, match", [
    ("batch_size", 0, "batch_size must be a positive integer, got 0"),
    ("block_size", 0, "block_size must be a positive integer, got 0"),
    ("learning_rate", 0.0, "learning_rate must be > 0"),
    ("learning_rate", -1e-3, "learning_rate must be > 0"),
    ("max_steps", 0, "max_steps must be a positive integer"),
    ("min_lr", 1.0, "min_lr must be in"),
    ("warmup_steps", 100, "warmup_steps must be an integer in"),
    ("grad_clip", -1.0, "grad_clip must be >= 0"),
    ("beta2", 1.0, "beta2 must be in"),
    ("dtype", "int8", "dtype must be one of 'fp32', 'bf16'"),
    ("dtype", "bfloat16", "dtype must be one of 'fp32', 'bf16'"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("learning_rate", math.nan, "learning_rate must be a finite number"),
    ("grad_clip", math.inf, "grad_clip must be a finite number"),
    ("max_minutes", 0.0, "max_minutes must be > 0 or None"),
    ("device", "gpu", "device 'gpu' is not a torch device"),
])
def test_bad_config_is_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        replace(CFG, **{field: value})


@pytest.mark.parametrize("field, value, expected", [
    ("learning_rate", "1e-3", "float"),  # a string from a command line or a config file
    ("weight_decay", "0.1", "float"),
    ("grad_clip", None, "float"),
    ("min_lr", [1e-4], "float"),
    ("beta2", True, "float"),
    ("max_minutes", "10", "float"),
    ("max_steps", 100.0, "int"),
    ("batch_size", "8", "int"),
    ("block_size", 16.5, "int"),
    ("warmup_steps", None, "int"),
    ("eval_interval", True, "int"),
    ("seed", "1337", "int"),
])
def test_config_fields_of_the_wrong_type_are_named(field, value, expected):
    with pytest.raises(TypeError, match=rf"TrainConfig\.{field} must be an? {expected}.*, got "
                                        rf"{type(value).__name__} {re.escape(repr(value))}"):
        replace(CFG, **{field: value})


def test_config_accepts_ints_for_floats_and_numpy_numbers():
    np = pytest.importorskip("numpy")
    cfg = replace(CFG, learning_rate=1, min_lr=0, grad_clip=np.float64(0.5),
                  max_steps=np.int64(16))
    assert lr_at(0, cfg) == pytest.approx(1 / 3)


def test_context_above_the_models_is_refused(stream):
    with pytest.raises(ValueError, match="block_size=32 is above the model's context "
                                         "block_size=16"):
        train(tiny_model(), stream, stream, replace(CFG, block_size=32))


@pytest.mark.parametrize("which", ["train_stream", "val_stream"])
def test_corpus_shorter_than_one_batch_is_refused(stream, which):
    short = stream[:64]  # one batch needs 4 × 16 + 1 = 65 tokens
    args = {"train_stream": stream, "val_stream": stream} | {which: short}
    with pytest.raises(ValueError, match=rf"{which} has 64 tokens, shorter than one batch.*= 65"):
        train(tiny_model(), args["train_stream"], args["val_stream"], CFG)


def test_token_ids_outside_the_vocabulary_are_refused(stream):
    with pytest.raises(ValueError, match=r"outside the model's vocabulary \[0, 40\)"):
        train(tiny_model(), stream + 1, stream, CFG)


def test_wrong_types_are_refused(stream):
    with pytest.raises(TypeError, match="TrainConfig"):
        train(tiny_model(), stream, stream, {"max_steps": 3})
    with pytest.raises(TypeError, match="1-D integer tensor"):
        train(tiny_model(), stream.float(), stream, CFG)


# ---------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def bpe():
    text = "To be, or not to be, that is the question. " * 30
    return ByteLevelBPE.train(text, vocab_size=300, special_tokens=(EOT,))


def bpe_model(bpe, seed=0):
    return tiny_model(seed, replace(TINY, vocab_size=bpe.vocab_size, dropout=0.0))


def test_checkpoint_loads_in_transformers_with_equal_logits(bpe, tmp_path, quiet_transformers):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = bpe_model(bpe).eval()
    save_checkpoint(tmp_path / "ck", model, tokenizer=bpe)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "ck").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "ck")
    text = "To be, or not to be: that is"
    ids = bpe.encode(text)
    assert hf_tok(text)["input_ids"] == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x)[0], atol=1e-5, rtol=1e-5)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # re-tied


def test_checkpoint_stores_the_tied_matrix_once(bpe, tmp_path):
    save_checkpoint(tmp_path / "ck", bpe_model(bpe))
    with safe_open(tmp_path / "ck" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "pt"}
    assert "lm_head.weight" not in keys and "transformer.wte.weight" in keys
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"] is True


def test_checkpoint_roundtrip_in_llmcourse(bpe, tmp_path):
    model = tiny_model(3, replace(TINY, vocab_size=bpe.vocab_size))
    save_checkpoint(tmp_path / "ck", model, tokenizer=bpe, training_state={"step": 7})
    loaded, state = load_checkpoint(tmp_path / "ck")
    tok = load_tokenizer(tmp_path / "ck")
    assert loaded.config == model.config  # dropout included
    for (n, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert isinstance(tok, ByteLevelBPE) and tok.encode("To be") == bpe.encode("To be")
    assert state == {"step": 7}


def test_half_precision_checkpoint_is_smaller_and_loads_in_both(bpe, tmp_path,
                                                               quiet_transformers):
    from transformers import GPT2LMHeadModel

    model = bpe_model(bpe).eval()
    save_checkpoint(tmp_path / "f32", model)
    save_checkpoint(tmp_path / "f16", model, dtype=torch.float16)
    size = {k: (tmp_path / k / "model.safetensors").stat().st_size for k in ("f32", "f16")}
    assert size["f16"] < 0.55 * size["f32"]
    ours = load_checkpoint(tmp_path / "f16")[0]
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "f16", dtype=torch.float32).eval()
    x = torch.tensor([bpe.encode("that is the question")])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x)[0], model(x)[0], atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="must store float32"):
        save_checkpoint(tmp_path / "x", model, dtype=torch.float16, training_state={})


def test_failed_save_leaves_the_previous_checkpoint_intact(bpe, tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    old = bpe_model(bpe, seed=1)
    save_checkpoint(folder, old, tokenizer=bpe, training_state={"step": 1})

    def crash(*args, **kwargs):  # the crash comes after model.safetensors was written
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(folder, bpe_model(bpe, seed=2), tokenizer=bpe,
                        training_state={"step": 2})
    monkeypatch.undo()
    model, state = load_checkpoint(folder)
    assert state == {"step": 1}
    assert torch.equal(model.transformer.wte.weight, old.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folder left


def test_crash_between_the_renames_is_recovered(bpe, tmp_path):
    folder = tmp_path / "ck"
    save_checkpoint(folder, bpe_model(bpe, seed=1), training_state={"step": 1})
    # The state a kill leaves after "old → .ck.previous" and before "new → ck", with the new
    # one half-written in its temp folder.
    os.replace(folder, tmp_path / ".ck.previous")
    (tmp_path / ".ck.tmp-abc").mkdir()
    (tmp_path / ".ck.tmp-abc" / "model.safetensors").write_bytes(b"half")
    assert load_checkpoint(folder)[1] == {"step": 1}
    save_checkpoint(folder, bpe_model(bpe, seed=2), training_state={"step": 2})
    assert load_checkpoint(folder)[1] == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_tokenizer_larger_than_the_model_is_refused(bpe, tmp_path):
    small = tiny_model(config=replace(TINY, vocab_size=64))
    with pytest.raises(ValueError, match=rf"the tokenizer has {bpe.vocab_size} tokens but the "
                                         r"model's vocab_size is 64"):
        save_checkpoint(tmp_path / "ck", small, tokenizer=bpe)
    assert not (tmp_path / "ck").exists()
    # Fewer tokens than the model has rows is fine: GPT-2 pads its vocabulary.
    big = tiny_model(config=replace(TINY, vocab_size=bpe.vocab_size + 20))
    save_checkpoint(tmp_path / "ck", big, tokenizer=bpe)
    assert load_tokenizer(tmp_path / "ck").vocab_size == bpe.vocab_size
    with pytest.raises(TypeError, match="tokenizer must have save"):
        save_checkpoint(tmp_path / "ck", big, tokenizer="gpt2")


def test_extra_files_cannot_replace_the_checkpoints_own(bpe, tmp_path):
    with pytest.raises(ValueError, match="extra file name 'config.json' must be a plain file"):
        save_checkpoint(tmp_path / "ck", bpe_model(bpe), extra_files={"config.json": "{}"})
    with pytest.raises(ValueError, match="extra file name '../x' must be a plain file"):
        save_checkpoint(tmp_path / "ck", bpe_model(bpe), extra_files={"../x": "x"})
    assert not (tmp_path / "ck").exists()


# What a full disk raises, as seen on a full tmpfs (torch 2.13, safetensors 0.7, Python).
TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
SAFETENSORS_FULL = SafetensorError("Error while serializing: I/O error: No space left on device "
                                   "(os error 28)")
PYTHON_FULL = OSError(errno.ENOSPC, "No space left on device")


def _disk_fills(error):
    def write(obj, path, *args, **kwargs):  # a part of the file, then the disk is full
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise error
    return write


@pytest.mark.parametrize("target, writer, error, file", [
    ("torch", "save", TORCH_FULL, "training_state.pt"),
    ("ckpt", "save_file", SAFETENSORS_FULL, "model.safetensors"),
    ("torch", "save", PYTHON_FULL, "training_state.pt"),
])
def test_full_disk_names_the_file_and_keeps_the_previous_checkpoint(
        bpe, tmp_path, monkeypatch, target, writer, error, file):
    folder = tmp_path / "ck"
    old = bpe_model(bpe, seed=1)
    save_checkpoint(folder, old, tokenizer=bpe, training_state={"step": 1})
    module = ckpt_mod.torch if target == "torch" else ckpt_mod
    monkeypatch.setattr(module, writer, _disk_fills(error))
    with pytest.raises(NoSpaceError, match=rf"no space left writing ck/{file}; the previous "
                                           "checkpoint is intact") as caught:
        save_checkpoint(folder, bpe_model(bpe, seed=2), tokenizer=bpe,
                        training_state={"step": 2})
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    monkeypatch.undo()
    model, state = load_checkpoint(folder)
    assert state == {"step": 1}
    assert torch.equal(model.transformer.wte.weight, old.transformer.wte.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folder left


def test_full_disk_on_a_first_save_says_nothing_was_written(bpe, tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_mod.torch, "save", _disk_fills(TORCH_FULL))
    with pytest.raises(NoSpaceError, match="writing ck/training_state.pt; no checkpoint was "
                                           "written"):
        save_checkpoint(tmp_path / "ck", bpe_model(bpe), training_state={"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_flushing_names_the_folder(bpe, tmp_path, monkeypatch):
    """Delayed allocation: the writes succeed and the flush to disk finds no room."""
    save_checkpoint(tmp_path / "ck", bpe_model(bpe, seed=1), training_state={"step": 1})

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(NoSpaceError, match="writing .*ck; the previous checkpoint is intact"):
        save_checkpoint(tmp_path / "ck", bpe_model(bpe, seed=2), training_state={"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "ck")[1] == {"step": 1}


def test_full_disk_during_training_stops_with_the_last_checkpoint(stream, tmp_path,
                                                                  monkeypatch):
    """The state of step 8 cannot be written: the run stops saying so; step 4's is intact."""
    real_save, calls = torch.save, []

    def save(obj, path, *args, **kwargs):
        calls.append(obj["step"])
        if obj["step"] == 8:
            raise TORCH_FULL
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    with pytest.raises(NoSpaceError, match="no space left writing run/training_state.pt; the "
                                           "previous checkpoint is intact"):
        train(tiny_model(), stream, stream, CFG, checkpoint_dir=tmp_path / "run")
    monkeypatch.undo()
    assert calls == [4, 8]
    assert load_checkpoint(tmp_path / "run")[1]["step"] == 4


def test_load_refuses_what_is_not_a_checkpoint(bpe, tmp_path):
    with pytest.raises(ValueError, match="no such checkpoint folder"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a checkpoint: it lacks model.safetensors and "
                                         "config.json"):
        load_checkpoint(tmp_path / "empty")
    save_checkpoint(tmp_path / "ck", bpe_model(bpe))
    cfg_path = tmp_path / "ck" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(cfg | {"model_type": "bert"}))
    with pytest.raises(ValueError, match="expected a GPT-2 or Llama config"):
        load_checkpoint(tmp_path / "ck")
    cfg_path.write_text(json.dumps(cfg | {"model_type": "llama"}))  # GPT-2's fields
    with pytest.raises(ValueError, match="not a usable Llama config: it has no hidden_size"):
        load_checkpoint(tmp_path / "ck")
    cfg_path.write_text(json.dumps(cfg))
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="unreadable safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_training_state_is_loaded_without_pickle(bpe, tmp_path):
    import argparse

    save_checkpoint(tmp_path / "ck", bpe_model(bpe))
    # An arbitrary Python object: torch.load(weights_only=True) refuses to unpickle it.
    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "ck" / "training_state.pt")
    with pytest.raises(ValueError, match="unreadable training state"):
        load_checkpoint(tmp_path / "ck")


# ---------------------------------------------------------------- the command


def test_course_preset_fits_the_size_budget():
    from llmcourse.training.cli import PRESETS

    for name in ("course", "course-cpu"):
        preset = PRESETS[name]
        bytes_per = 4 if preset.store_dtype == "float32" else 2
        cfg = replace(preset.model, vocab_size=preset.vocab_size)
        assert parameter_count(cfg) * bytes_per < 24.5e6, name  # + tokenizer, README, PNG


def test_cli_tiny_end_to_end(tmp_path, capsys, quiet_transformers):
    from transformers import GPT2LMHeadModel

    from llmcourse.training.cli import main

    out, work = tmp_path / "out", tmp_path / "work"
    assert main(["tiny", "--out", str(out), "--work-dir", str(work), "--max-steps", "6",
                 "--no-progress"]) == 0
    assert "nats/char" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "vocab.json", "merges.txt", "README.md",
            "loss_curve.png", "results.json"} <= names
    assert "training_state.pt" not in names and (work / "training_state.pt").is_file()
    readme = (out / "README.md").read_text()
    assert "python -m llmcourse.training tiny --out" in readme and "nats/char" in readme
    results = json.loads((out / "results.json").read_text())
    assert 0 < results["val_nats_per_char"] < 10
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    model, _ = load_checkpoint(out)
    tok = load_tokenizer(out)
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    x = torch.tensor([tok.encode("HAMLET. To be")])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x)[0], atol=1e-5, rtol=1e-5)
