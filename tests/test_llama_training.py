"""The course's training loop and command on the Llama-style model: it learns, resumes exactly,
trains under bf16 autocast and with activation checkpointing; the ``llama-cpu`` preset has
course-cpu's size, context, tokenizer and training run; ``python -m llmcourse.training`` trains a
Llama-style preset end to end into a folder ``transformers`` loads."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from llmcourse.models.checkpoint import load_checkpoint
from llmcourse.models.gpt import GPT
from llmcourse.models.gpt import parameter_count as gpt_parameter_count
from llmcourse.models.llama import Llama, LlamaConfig, parameter_count
from llmcourse.models.sizing import parameters
from llmcourse.training.loop import TrainConfig, evaluate_stream, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = LlamaConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_kv_head=1, n_embd=16,
                   d_ff=32, dropout=0.1, tie_embeddings=True)
CFG = TrainConfig(max_steps=16, batch_size=4, block_size=16, learning_rate=1e-2, min_lr=1e-3,
                  warmup_steps=3, eval_interval=4, eval_batches=2, log_interval=1,
                  progress=False)


def tiny_model(seed: int = 0, config: LlamaConfig = TINY) -> Llama:
    torch.manual_seed(seed)
    return Llama(config)


@pytest.fixture(scope="module")
def stream():
    g = torch.Generator().manual_seed(0)
    base = torch.arange(4000) % 40  # mostly i -> i+1 (mod 40), with noise
    noise = torch.randint(0, 40, (4000,), generator=g)
    return torch.where(torch.rand(4000, generator=g) < 0.8, base, noise)


def test_train_learns(stream):
    model = tiny_model()
    history = train(model, stream, stream, replace(CFG, max_steps=60, eval_interval=30))
    assert history.val_loss[-1] < 0.7 * history.val_loss[0]  # from ln 40 = 3.69
    loss, n = evaluate_stream(model, stream[:200], block_size=16)
    assert n == 199 and loss < history.val_loss[0]


def test_resume_continues_the_same_trajectory(stream, tmp_path):
    """2N steps straight == N steps, checkpoint (the Llama format), fresh state, N more."""
    cfg = replace(CFG, eval_interval=8)
    straight_model = tiny_model()
    straight = train(straight_model, stream, stream, cfg)
    folder = tmp_path / "run"
    train(tiny_model(), stream, stream, cfg, checkpoint_dir=folder, stop_at=8)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    torch.manual_seed(12345)
    resumed_model = tiny_model(seed=99)
    resumed = train(resumed_model, stream, stream, cfg, checkpoint_dir=folder, resume=True)
    assert resumed.log_loss == straight.log_loss
    for (n, a), b in zip(straight_model.state_dict().items(),
                         resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n


def test_resume_refuses_another_shape(stream, tmp_path):
    train(tiny_model(), stream, stream, replace(CFG, max_steps=4), checkpoint_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="differs from this model's"):
        train(tiny_model(config=replace(TINY, n_kv_head=2)), stream, stream, CFG,
              checkpoint_dir=tmp_path / "c", resume=True)


def test_bf16_autocast_and_activation_checkpointing_train(stream):
    model = tiny_model()
    history = train(model, stream, stream, replace(CFG, dtype="bf16", max_steps=8,
                                                   activation_checkpointing=True))
    assert all(torch.isfinite(torch.tensor(history.log_loss)))
    assert model.activation_checkpointing is False  # the run's setting, put back afterwards
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_train_refuses_a_context_above_the_models(stream):
    with pytest.raises(ValueError, match="block_size=32 is above the model's context"):
        train(tiny_model(), stream, stream, replace(CFG, block_size=32))


# ---------------------------------------------------------------- the preset and the command


def test_llama_cpu_preset_is_course_cpu_with_llamas_block():
    from llmcourse.training.cli import PRESETS

    gpt, llama = PRESETS["course-cpu"], PRESETS["llama-cpu"]
    assert llama.train == gpt.train and llama.vocab_size == gpt.vocab_size
    assert llama.model.block_size == gpt.model.block_size == 128
    assert (llama.model.n_layer, llama.model.n_embd) == (gpt.model.n_layer, gpt.model.n_embd)
    assert llama.model.dropout == gpt.model.dropout
    with torch.device("meta"):
        built = llama.build(llama.vocab_size)
        built_gpt = gpt.build(gpt.vocab_size)
    assert isinstance(built, Llama) and isinstance(built_gpt, GPT)
    n = built.num_parameters()
    n_gpt = built_gpt.num_parameters()
    assert n == parameter_count(built.config) == parameters(built.config.to_shape()) == 5_807_360
    assert n_gpt == gpt_parameter_count(built_gpt.config) == 5_820_416
    assert abs(n / n_gpt - 1) < 0.005  # the same size within half a percent


def test_cli_trains_a_llama_preset_end_to_end(tmp_path, capsys, monkeypatch, quiet_transformers):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from llmcourse.text.load import load_tokenizer
    from llmcourse.training import cli

    tiny = cli.PRESETS["tiny"]
    monkeypatch.setitem(cli.PRESETS, "llama-tiny", replace(
        tiny, model=LlamaConfig(vocab_size=tiny.vocab_size, block_size=32, n_layer=2, n_head=2,
                                n_kv_head=1, n_embd=32, d_ff=64, tie_embeddings=True)))
    out = tmp_path / "out"
    assert cli.main(["llama-tiny", "--out", str(out), "--work-dir", str(tmp_path / "work"),
                     "--max-steps", "4", "--no-progress"]) == 0
    assert "nats/char" in capsys.readouterr().out
    readme = (out / "README.md").read_text()
    assert "Llama-format" in readme and "LlamaForCausalLM.from_pretrained" in readme
    model, _ = load_checkpoint(out)
    assert isinstance(model, Llama)
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(hf, LlamaForCausalLM)
    x = torch.tensor([load_tokenizer(out).encode("HAMLET. To be")])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x)[0], atol=1e-5, rtol=1e-5)
