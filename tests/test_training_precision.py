"""llmcourse.training.precision and the loop's dtype: bfloat16 autocast trains, keeps float32
master weights and lands where float32 does; a half-precision model is refused before any step
changes it; the command's --dtype; the bf16 speed check."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.training import cli
from llmcourse.training.loop import TrainConfig, train
from llmcourse.training.precision import autocast, check_master_weights, fast_bf16

TINY = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
CFG = TrainConfig(max_steps=60, batch_size=8, block_size=16, learning_rate=1e-2, min_lr=1e-3,
                  warmup_steps=5, eval_interval=30, eval_batches=4, log_interval=1,
                  progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stream():
    g = torch.Generator().manual_seed(0)
    base = torch.arange(4000) % 40  # mostly i -> i+1 (mod 40), with noise
    noise = torch.randint(0, 40, (4000,), generator=g)
    return torch.where(torch.rand(4000, generator=g) < 0.8, base, noise)


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY)


@pytest.fixture(scope="module")
def runs(stream):
    """The same tiny run in float32 and in bfloat16 autocast, from the same weights, with a
    record of the dtypes the bf16 run's forward passes computed in."""
    out = {}
    for dtype in ("fp32", "bf16"):
        model = tiny_model()
        seen = []
        hook = model.lm_head.register_forward_hook(
            lambda module, args, output, seen=seen: seen.append(output.dtype))
        history = train(model, stream, stream, replace(CFG, dtype=dtype))
        hook.remove()
        out[dtype] = model, history, seen
    return out


def test_bf16_computes_in_bfloat16_and_fp32_does_not(runs):
    assert set(runs["bf16"][2]) == {torch.bfloat16}
    assert set(runs["fp32"][2]) == {torch.float32}


def test_bf16_keeps_float32_master_weights(runs):
    model, _, _ = runs["bf16"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # The weights moved by more than bfloat16's resolution would keep: they were updated in
    # float32 (a weight stored in bfloat16 has at most 8 significant bits).
    w = model.transformer.h[0].attn.c_attn.weight.detach()
    assert not torch.equal(w, w.bfloat16().float())


def test_bf16_reaches_the_loss_of_fp32(runs):
    _, fp32, _ = runs["fp32"]
    _, bf16, _ = runs["bf16"]
    assert bf16.val_loss[-1] < bf16.val_loss[0] - 1.0  # it learned
    assert bf16.val_loss[-1] == pytest.approx(fp32.val_loss[-1], rel=0.02)
    assert bf16.log_loss != fp32.log_loss  # and it did run in another precision


def test_fp32_is_unchanged_by_the_dtype_option(stream):
    """The default is float32 with no autocast: the same run twice is bit for bit equal, and
    equal to one with dtype="fp32" spelled out."""
    a, b = tiny_model(), tiny_model()
    ha = train(a, stream, stream, replace(CFG, max_steps=8, eval_interval=4))
    hb = train(b, stream, stream, replace(CFG, max_steps=8, eval_interval=4, dtype="fp32"))
    assert ha.log_loss == hb.log_loss and ha.val_loss == hb.val_loss
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_refused_before_any_step(stream, half):
    model = tiny_model().to(half)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(TypeError, match=rf"parameters are {half}.*model\.float\(\).*"
                                        r"TrainConfig\(dtype='bf16'\)"):
        train(model, stream, stream, CFG)
    for n, p in model.named_parameters():
        assert p.dtype == half and torch.equal(p, before[n]), n  # not corrupted, not converted


def test_a_float16_model_would_turn_into_nan():
    """Why the refusal: one plain AdamW step on a float16 GPT fills it with NaN on a CPU."""
    model = tiny_model().half()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    model(x, x)[1].backward()
    opt.step()
    assert any(p.isnan().any() for p in model.parameters())
    with pytest.raises(TypeError, match="float16"):
        check_master_weights(model)


def test_autocast_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="dtype must be one of 'fp32', 'bf16', got 'fp16'"):
        autocast("fp16", "cpu")


def test_fast_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr("llmcourse.training.precision._cpu_flags",
                        lambda: {"avx2", "avx512f", "amx_bf16", "amx_tile"})
    fast, why = fast_bf16("cpu")
    assert fast and "amx_bf16" in why
    monkeypatch.setattr("llmcourse.training.precision._cpu_flags", lambda: {"avx2", "fma"})
    fast, why = fast_bf16("cpu")
    assert not fast and "emulated" in why


def test_command_passes_dtype_to_the_loop(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_train(model, train_ids, val_ids, cfg, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(3)  # stop before any training: only the config matters here

    monkeypatch.setattr(cli, "train", fake_train)
    monkeypatch.setattr(cli, "fast_bf16", lambda device: (False, "no bf16 units"))
    with pytest.raises(SystemExit):
        cli.main(["tiny", "--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w"),
                  "--dtype", "bf16", "--no-progress"])
    assert seen["cfg"].dtype == "bf16"
    assert "--dtype bf16 on a device without fast bfloat16 (no bf16 units)" in \
        capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["tiny", "--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w"),
                  "--no-progress"])
    assert seen["cfg"].dtype == "fp32"
    with pytest.raises(SystemExit) as bad:
        cli.main(["tiny", "--out", str(tmp_path / "o"), "--dtype", "fp16"])
    assert bad.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
