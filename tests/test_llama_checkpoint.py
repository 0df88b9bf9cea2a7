"""The course's Llama in ``transformers``' Llama format on disk: a folder written by
``save_checkpoint`` loads with ``AutoModelForCausalLM.from_pretrained`` and gives the same
logits; ``load_checkpoint`` reads it back exactly, and reads a folder ``save_pretrained`` wrote;
tied matrices are stored once; no pickle; configs with features the course does not implement
are refused by name, with nothing loaded."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from llmcourse.models import llama_hf
from llmcourse.models.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.models.llama import Llama, LlamaConfig

pytestmark = pytest.mark.usefixtures("quiet_transformers", "one_thread")

CFG = LlamaConfig(vocab_size=61, block_size=24, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                  d_ff=40, rms_norm_eps=1e-6, rope_theta=300.0, dropout=0.1)


def _model(cfg: LlamaConfig, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every tensor different from a fresh model's, at a trained scale
        for p in model.parameters():
            fan_in = p.shape[1] if p.dim() == 2 else 1
            p.copy_((torch.randn(p.shape, generator=g) / fan_in ** 0.5) if p.dim() == 2
                    else 1.0 + 0.2 * torch.randn(p.shape, generator=g))
    return model


def _ids(b: int = 2, t: int = 20) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (b, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tied", [False, True])
def test_saved_folder_loads_in_transformers_with_the_same_logits(tmp_path, tied):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = _model(replace(CFG, tie_embeddings=tied))
    folder = save_checkpoint(tmp_path / "ck", model)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    with safe_open(folder / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert ("lm_head.weight" in names) is not tied  # a tied matrix is stored once
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert isinstance(hf, LlamaForCausalLM)
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) is tied
    x = _ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("tied", [False, True])
def test_load_checkpoint_reads_it_back_exactly(tmp_path, tied):
    model = _model(replace(CFG, tie_embeddings=tied))
    state = {"step": 3, "note": "x"}
    save_checkpoint(tmp_path / "ck", model, training_state=state)
    loaded, got = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, Llama) and not loaded.training
    assert loaded.config == model.config and got == state
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) is tied


def test_load_checkpoint_reads_a_transformers_folder(tmp_path):
    hf = llama_hf.to_hf(_model(CFG))
    hf.save_pretrained(tmp_path / "hf")
    loaded, state = load_checkpoint(tmp_path / "hf")
    assert state is None and loaded.config == CFG
    x = _ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], hf(x).logits, atol=1e-5, rtol=0)


def test_half_precision_storage(tmp_path):
    model = _model(CFG)
    save_checkpoint(tmp_path / "ck", model, dtype=torch.bfloat16)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a.bfloat16().float(), atol=0, rtol=0, msg=name)


@pytest.mark.parametrize("fields, match", [
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 300.0}),
     "RoPE scaling"),
    (dict(attention_bias=True), "attention_bias=True"),
    (dict(sliding_window=8), "sliding-window attention"),
    (dict(head_dim=4), "head_dim=4"),
])
def test_a_folder_with_an_unsupported_feature_is_refused(tmp_path, fields, match):
    folder = save_checkpoint(tmp_path / "ck", _model(CFG))
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"config.json: .*{match}"):
        load_checkpoint(folder)


def test_weights_of_another_shape_are_refused(tmp_path):
    folder = save_checkpoint(tmp_path / "ck", _model(CFG))
    config = json.loads((folder / "config.json").read_text())
    config["num_key_value_heads"] = 4  # the file holds 2 kv heads' projections
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'model.layers.0.self_attn."
                                         r"k_proj.weight' has shape \(16, 32\)"):
        load_checkpoint(folder)


def test_hf_config_of_the_saved_folder_is_the_config(tmp_path):
    from transformers import AutoConfig

    folder = save_checkpoint(tmp_path / "ck", _model(CFG))
    assert llama_hf.config_from_hf(AutoConfig.from_pretrained(folder)) == CFG
