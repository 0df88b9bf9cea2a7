"""``llmcourse.course.gpt2.load_gpt2``: a folder written by ``transformers``' own
``save_pretrained``
loads with equal logits; offline (``HF_HUB_OFFLINE=1`` or a hub that does not answer) it says
so in one line and loads the fallback checkpoint, quickly; the online path with the download
stood in for; bad names and damaged checkpoints are refused by name. No test touches the
network."""

from __future__ import annotations

import json
import shutil
import socket
import time

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file, save_file

import llmcourse.course.gpt2 as gpt2
from llmcourse.core import files
from llmcourse.course.gpt2 import course_checkpoint, hub_reachable, load_gpt2
from llmcourse.models.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.llama import Llama, LlamaConfig
from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.text.bpe import ByteLevelBPE
from llmcourse.text.load import load_tokenizer

pytestmark = pytest.mark.usefixtures("quiet_transformers")

TEXT = "To be, or not to be, that is the question. " * 20


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, quiet_transformers):
    """A small GPT-2 checkpoint as transformers writes it, with a BPE tokenizer beside it."""
    tok = ByteLevelBPE.train(TEXT, vocab_size=300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2,
                          n_embd=32)).eval()
    hf = model.to_hf()
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-gpt2"
    hf.save_pretrained(folder)
    tok.save(folder)
    return folder, hf, tok


def _logits_equal(model: GPT, hf, vocab: int) -> None:
    ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], hf(ids).logits, atol=1e-5, rtol=0)


def test_local_folder_loads_with_equal_logits(checkpoint):
    folder, hf, tok = checkpoint
    model, tokenizer = load_gpt2(folder)
    assert isinstance(model, GPT) and not model.training
    _logits_equal(model, hf, tok.vocab_size)
    ids = tokenizer.encode("that is the question")
    assert ids == tok.encode("that is the question")
    assert tokenizer.decode(ids) == "that is the question"


def test_offline_env_falls_back_with_one_line(checkpoint, monkeypatch, capsys):
    folder, hf, tok = checkpoint
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv(gpt2.FALLBACK_ENV, str(folder))
    monkeypatch.setattr(socket, "create_connection", _never_called)
    start = time.perf_counter()
    model, tokenizer = load_gpt2("gpt2")
    assert time.perf_counter() - start < 10  # loading a tiny checkpoint; no network wait
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == ("GPT-2 weights are not reachable (HF_HUB_OFFLINE=1): using the course "
                        "checkpoint tiny-gpt2 instead")
    _logits_equal(model, hf, tok.vocab_size)
    assert tokenizer.decode(tokenizer.encode(TEXT[:40])) == TEXT[:40]


def _hang(*args, **kwargs):
    """A name lookup that never returns (within the test), then fails as a real one would."""
    time.sleep(30)
    raise OSError("timed out")


def _never_called(*args, **kwargs):
    raise AssertionError("the network must not be tried when HF_HUB_OFFLINE=1")


def test_unreachable_hub_is_detected_quickly(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def hang(*args, **kwargs):  # a name lookup that never returns
        time.sleep(30)
        raise OSError("timed out")  # as the real call would; the thread then ends quietly

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    online, reason = hub_reachable(timeout=0.3)
    assert not online and "no answer" in reason
    assert time.perf_counter() - start < 1.5

    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert hub_reachable(timeout=0.3) == (False, "offline: OSError: Network is unreachable")


def test_no_network_falls_back(checkpoint, monkeypatch, capsys):
    folder, _, _ = checkpoint
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", _hang)
    start = time.perf_counter()
    load_gpt2("gpt2-medium", fallback=folder, timeout=0.3)
    assert time.perf_counter() - start < 10
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no answer from huggingface.co within 0.3 s" in out


def test_online_path_converts_the_hub_model(checkpoint, monkeypatch, capsys):
    """With the hub "reachable", the download is transformers' from_pretrained (stood in for
    by the local model) and the tokenizer files come from hf_hub_download."""
    import transformers

    folder, hf, tok = checkpoint
    asked = []
    monkeypatch.setattr(gpt2, "hub_reachable", lambda timeout: (True, ""))
    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained",
                        classmethod(lambda cls, name: asked.append(name) or hf))
    monkeypatch.setattr(gpt2, "hf_hub_download", lambda repo, filename: str(folder / filename))
    model, tokenizer = load_gpt2("openai-community/gpt2")
    assert asked == ["openai-community/gpt2"]
    assert capsys.readouterr().out == ""
    _logits_equal(model, hf, tok.vocab_size)
    assert tokenizer.encode("to be") == tok.encode("to be")


def test_failed_download_falls_back(checkpoint, monkeypatch, capsys):
    import transformers

    folder, _, _ = checkpoint

    def fail(cls, name):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")

    monkeypatch.setattr(gpt2, "hub_reachable", lambda timeout: (True, ""))
    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", classmethod(fail))
    load_gpt2("gpt2", fallback=folder)
    line = capsys.readouterr().out.strip()
    assert line.startswith("GPT-2 weights are not reachable (download failed: OSError: We "
                           "couldn't connect")
    assert "\n" not in line


def test_unknown_name_refused():
    with pytest.raises(ValueError, match="neither a folder nor a GPT-2 hub name"):
        load_gpt2("gpt3")
    with pytest.raises(TypeError):
        load_gpt2(124)


def _copy(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    return bad


def test_mismatched_tensor_refused_by_name_and_shapes(checkpoint, tmp_path):
    folder, _, _ = checkpoint
    bad = _copy(folder, tmp_path)
    tensors = load_file(bad / "model.safetensors")
    name = "transformer.h.1.mlp.c_fc.weight"
    tensors[name] = torch.zeros(32, 100)  # GPT-2 stores it (in, out) = (32, 128)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight.*\(100, 32\).*"
                                         r"\(128, 32\)"):
        load_gpt2(bad)


def test_config_that_does_not_fit_refused(checkpoint, tmp_path):
    folder, _, _ = checkpoint
    bad = _copy(folder, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["n_embd"] = 64
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tensor '.*' has shape .* in the checkpoint but"):
        load_gpt2(bad)


def test_unknown_tensor_and_other_models_refused(checkpoint, tmp_path):
    folder, _, _ = checkpoint
    bad = _copy(folder, tmp_path)
    tensors = load_file(bad / "model.safetensors")
    tensors["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="transformer.h.0.attn.rotary.weight"):
        load_gpt2(bad)
    config = json.loads((bad / "config.json").read_text())
    config["model_type"] = "llama"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="llama"):
        load_gpt2(bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors"):
        load_gpt2(bad)


def test_valid_folders_of_other_models_refused(checkpoint, tmp_path, monkeypatch):
    """A Llama folder written by transformers' own save_pretrained, and the course's
    encoder-decoder, are valid checkpoints (load_checkpoint reads them) but not GPT-2:
    load_gpt2 says what it found and what it expects, directly and as the fallback."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder, _, tok = checkpoint
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32))
    llama_folder = tmp_path / "tiny-llama"
    llama.save_pretrained(llama_folder)
    tok.save(llama_folder)
    assert type(load_checkpoint(llama_folder)[0]).__name__ == "Llama"  # a usable folder
    expected = r"tiny-llama holds a Llama-style model \(config.json model_type 'llama'\), " \
               r"not GPT-2: load_gpt2 loads a GPT-2-format checkpoint \(config.json " \
               r"model_type 'gpt2'\).*load_checkpoint"
    with pytest.raises(ValueError, match=expected):
        load_gpt2(llama_folder)
    monkeypatch.setattr(gpt2, "hub_reachable", lambda timeout: (False, "offline"))
    with pytest.raises(ValueError, match=expected):
        load_gpt2("gpt2", fallback=llama_folder)

    seq2seq_folder = save_checkpoint(tmp_path / "tiny-seq2seq", Seq2Seq(Seq2SeqConfig(
        src_vocab_size=20, tgt_vocab_size=20, n_head=2, n_embd=16, ffn_hidden=32)))
    with pytest.raises(ValueError, match=r"tiny-seq2seq holds an encoder-decoder .*"
                                         r"'llmcourse-seq2seq'\), not GPT-2"):
        load_gpt2(seq2seq_folder)
    assert isinstance(load_gpt2(folder)[0], GPT)  # the GPT-2 folder beside them still loads


def test_course_checkpoint_discovery(checkpoint, tmp_path, monkeypatch):
    folder, _, _ = checkpoint
    monkeypatch.delenv(gpt2.FALLBACK_ENV, raising=False)
    monkeypatch.setattr(gpt2, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(files, "REPO_ROOT", tmp_path)
    with pytest.raises(ValueError, match="found no checkpoint under data/checkpoints/"):
        course_checkpoint()
    root = tmp_path / "data" / "checkpoints"
    shutil.copytree(folder, root / "shakespeare")
    (root / "notes").mkdir()  # a folder without config.json is not a checkpoint
    assert course_checkpoint() == root / "shakespeare"
    assert files.shown(course_checkpoint()) == "data/checkpoints/shakespeare"
    llama = save_checkpoint(root / "llama", Llama(LlamaConfig(
        vocab_size=20, block_size=8, n_layer=1, n_head=2, n_kv_head=1, n_embd=8)))
    seq2seq = save_checkpoint(root / "translation", Seq2Seq(Seq2SeqConfig(
        src_vocab_size=20, tgt_vocab_size=20, n_head=2, n_embd=16, ffn_hidden=32)))
    assert course_checkpoint() == root / "shakespeare"  # other models' folders: no candidates
    assert (llama / "config.json").is_file() and (seq2seq / "config.json").is_file()
    shutil.copytree(folder, root / "another")
    with pytest.raises(ValueError, match="2 checkpoints"):
        course_checkpoint()
    assert course_checkpoint(folder) == folder  # an explicit fallback wins
    monkeypatch.setenv(gpt2.FALLBACK_ENV, str(root / "another"))
    assert course_checkpoint() == root / "another"
    with pytest.raises(ValueError, match="no config.json"):
        course_checkpoint(tmp_path)
    monkeypatch.delenv(gpt2.FALLBACK_ENV)
    shutil.rmtree(root / "another")
    (root / "shakespeare" / "config.json").write_text("{")  # unreadable: still a candidate,
    assert course_checkpoint() == root / "shakespeare"    # so that loading it says why
    (root / "shakespeare" / "config.json").write_text('{"model_typ": "gpt2"}')  # misspelt
    assert course_checkpoint() == root / "shakespeare"


def _interrupt_swap(folder):
    """What a save killed between its two renames leaves: the old checkpoint under
    ``.NAME.previous`` and the new one, complete or not, in a temporary folder."""
    backup = files.backup_of(folder)
    folder.rename(backup)
    partial = folder.with_name(f".{folder.name}.tmp-x1y2")
    partial.mkdir(exist_ok=True)
    (partial / "config.json").write_text("{")  # half written
    return backup


@pytest.mark.parametrize("reader", ["load_gpt2", "load_checkpoint", "load_tokenizer"])
def test_every_loader_recovers_an_interrupted_save(checkpoint, tmp_path, reader):
    folder, hf, tok = checkpoint
    ck = _copy(folder, tmp_path)
    backup = _interrupt_swap(ck)
    if reader == "load_gpt2":
        model, loaded_tok = load_gpt2(ck)
        _logits_equal(model, hf, tok.vocab_size)
    elif reader == "load_checkpoint":
        _logits_equal(load_checkpoint(ck)[0], hf, tok.vocab_size)
    else:
        assert load_tokenizer(ck).encode("To be") == tok.encode("To be")
    assert ck.is_dir() and not backup.exists()


def test_course_checkpoint_recovers_an_interrupted_save(checkpoint, tmp_path, monkeypatch):
    folder, hf, tok = checkpoint
    monkeypatch.delenv(gpt2.FALLBACK_ENV, raising=False)
    monkeypatch.setattr(gpt2, "REPO_ROOT", tmp_path)
    root = tmp_path / "data" / "checkpoints"
    root.mkdir(parents=True)
    shutil.copytree(folder, root / "shakespeare")
    _interrupt_swap(root / "shakespeare")
    # Neither the backup nor the half-written temporary folder counts as a second checkpoint.
    assert course_checkpoint() == root / "shakespeare"
    assert sorted(p.name for p in root.iterdir()) == [".shakespeare.tmp-x1y2", "shakespeare"]
    # An explicit fallback folder is recovered too.
    _interrupt_swap(root / "shakespeare")
    assert course_checkpoint(root / "shakespeare") == root / "shakespeare"
    _logits_equal(load_gpt2(root / "shakespeare")[0], hf, tok.vocab_size)
