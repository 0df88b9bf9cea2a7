"""Bad input to the encoder–decoder fails early, at the entry point, with a ValueError or
TypeError whose message names the argument and what was expected (issue 9, "Bad input").

The model is built with two *different* vocabularies (``share_embeddings=False``: 11 source
ids, 7 target ids), so a test can tell which vocabulary a check used. A refused call must leave
everything as it was: the decoder's cache, the model's weights and its train/eval mode, and a
checkpoint folder.
"""

from __future__ import annotations

import re

import pytest
import torch

from llmcourse.decoding.seq2seq import translate
from llmcourse.models.checkpoint import save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.text.chars import CharTokenizer
from llmcourse.text.number_words import PairBatch
from llmcourse.training.loop import TrainConfig, train

E = re.escape

CFG = Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=7, max_len=8, n_encoder_layer=1,
                    n_decoder_layer=2, n_head=2, n_embd=8, ffn_hidden=16,
                    share_embeddings=False)
torch.manual_seed(0)
MODEL = Seq2Seq(CFG).eval()
SRC = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 4]])  # ids ≥ 7 exist only in the source vocab
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
TGT = torch.tensor([[1, 3, 4], [1, 5, 6]])  # BOS, then the target so far
TARGETS = torch.tensor([[3, 4, 2], [5, 6, 2]])


def _forward(src=SRC, tgt=TGT, src_mask=MASK, targets=TARGETS):
    return MODEL(src, tgt, src_mask=src_mask, targets=targets)


def _raises(exc: type[Exception], *fragments: str):
    """pytest.raises matching every fragment of the message, in order."""
    return pytest.raises(exc, match=".*".join(E(f) for f in fragments))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_good_call_works():
    """The reference batch is valid; every case below changes one thing in it."""
    logits, loss = _forward()
    assert logits.shape == (2, 3, 7) and loss.ndim == 0 and torch.isfinite(loss)
    # source ids 7..10 are fine for the source side, whose vocabulary is larger
    assert int(SRC.max()) >= CFG.tgt_vocab_size


# --- vocabularies ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, fragments", [
    (11, ("src holds token id 11", "[0, 11)")),
    (-1, ("src holds token id -1", "[0, 11)")),
])
def test_source_ids_outside_the_source_vocabulary(bad, fragments):
    src = SRC.clone()
    src[1, 2] = bad
    with _raises(ValueError, *fragments):
        _forward(src=src)


@pytest.mark.parametrize("bad", [7, 10, -3])
def test_target_ids_outside_the_target_vocabulary(bad):
    tgt = TGT.clone()
    tgt[0, 2] = bad  # 7 and 10 are source ids, not target ids
    with _raises(ValueError, f"tgt holds token id {bad}", "[0, 7)"):
        _forward(tgt=tgt)


@pytest.mark.parametrize("bad", [7, -5])
def test_targets_outside_the_target_vocabulary(bad):
    targets = TARGETS.clone()
    targets[1, 0] = bad
    with _raises(ValueError, f"targets hold id {bad}", "[0, 7)", "-100"):
        _forward(targets=targets)


def _tokenizer(n: int) -> CharTokenizer:
    return CharTokenizer([chr(ord("a") + i) for i in range(n)])


def _pairs(n: int = 4) -> PairBatch:
    src = SRC[:1].repeat(n, 1)
    return PairBatch(src, (src != 0).long(), TGT[:1].repeat(n, 1), TARGETS[:1].repeat(n, 1))


def test_tokenizer_bigger_than_the_target_vocabulary_refused_by_train(tmp_path):
    model, cfg = Seq2Seq(CFG), TrainConfig(max_steps=2, batch_size=2, warmup_steps=0,
                                           eval_interval=1, eval_batches=1, progress=False)
    before = _state(model)
    with _raises(ValueError, "tokenizer has 9 tokens", "vocab_size=7"):
        train(model, _pairs(), _pairs(), cfg, tokenizer=_tokenizer(9),
              checkpoint_dir=tmp_path / "run")
    assert _same_state(model, before) and not (tmp_path / "run").exists()


def test_tokenizer_bigger_than_the_target_vocabulary_refused_by_save_checkpoint(tmp_path):
    with _raises(ValueError, "tokenizer has 8 tokens", "vocab_size is 7"):
        save_checkpoint(tmp_path / "ckpt", MODEL, tokenizer=_tokenizer(8))
    assert not (tmp_path / "ckpt").exists()
    save_checkpoint(tmp_path / "ok", MODEL, tokenizer=_tokenizer(7))  # as big is fine


def test_train_refuses_a_token_stream_for_a_seq2seq():
    model = Seq2Seq(CFG)
    before = _state(model)
    cfg = TrainConfig(max_steps=1, batch_size=2, block_size=4, warmup_steps=0,
                      progress=False)
    stream = torch.arange(100) % 7
    with _raises(TypeError, "train_stream must be a PairBatch", "got Tensor"):
        train(model, stream, stream, cfg)
    with _raises(TypeError, "val_stream must be a PairBatch", "got Tensor"):
        train(model, _pairs(), stream, cfg)
    assert _same_state(model, before)


def test_train_refuses_pairs_outside_the_model():
    model = Seq2Seq(CFG)
    cfg = TrainConfig(max_steps=1, batch_size=2, warmup_steps=0, progress=False)
    bad = _pairs()
    bad.tgt_in[0, 1] = 9  # a source-vocabulary id on the target side
    with _raises(ValueError, "train_stream.tgt_in", "[0, 7)"):
        train(model, bad, _pairs(), cfg)


# --- padding -----------------------------------------------------------------------------------

def test_padding_id_inside_the_content():
    src = SRC.clone()
    src[1, 1] = CFG.pad_id  # row 1 is all tokens by its mask
    with _raises(ValueError, "src[1, 1] is pad_id=0", "src_mask marks it as a token"):
        _forward(src=src)


def test_mask_says_padding_where_the_id_is_not_pad():
    mask = MASK.clone()
    mask[1, 3] = 0  # src[1, 3] = 4, a real token
    with _raises(ValueError, "src_mask marks src[1, 3] as padding", "holds id 4",
                 "not pad_id=0"):
        _forward(src_mask=mask)


def test_padded_source_without_a_mask():
    with _raises(ValueError, "src holds pad_id=0 (row 0)", "no src_mask", "pass src_mask"):
        _forward(src_mask=None)
    # an unpadded source needs no mask
    logits, _ = _forward(src=SRC[1:], tgt=TGT[1:], targets=TARGETS[1:], src_mask=None)
    assert logits.shape == (1, 3, 7)


@pytest.mark.parametrize("shape", [(2, 3), (1, 4), (2, 4, 1), (4,)])
def test_src_mask_of_the_wrong_shape(shape):
    with _raises(ValueError, "src_mask must be (B, S) like src = (2, 4)", f"got {shape}"):
        _forward(src_mask=torch.ones(shape, dtype=torch.long))


@pytest.mark.parametrize("values", [[1, 1, 2, 0], [1, 1, 1, -1], [1.0, 0.5, 1.0, 0.0]])
def test_src_mask_with_values_other_than_0_and_1(values):
    mask = MASK.clone().to(torch.tensor(values).dtype)
    mask[0] = torch.tensor(values)
    with _raises(ValueError, "src_mask must hold only 1", "and 0"):
        _forward(src_mask=mask)


def test_src_mask_of_bools_and_floats_is_accepted():
    ref, _ = _forward()
    for mask in (MASK.bool(), MASK.float()):
        assert torch.equal(_forward(src_mask=mask)[0], ref)


def test_src_mask_not_a_tensor():
    with _raises(TypeError, "src_mask must be a torch.Tensor", "got list"):
        _forward(src_mask=MASK.tolist())


# --- empty and too long ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 0), (0, 4), (0, 0)])
def test_empty_source(shape):
    with _raises(ValueError, "src is empty", f"shape {shape}"):
        MODEL.encode(torch.zeros(shape, dtype=torch.long))


def test_source_row_all_padding():
    src, mask = SRC.clone(), MASK.clone()
    src[1], mask[1] = 0, 0
    with _raises(ValueError, "source row 1 is all padding"):
        _forward(src=src, src_mask=mask)


def test_empty_target():
    with _raises(ValueError, "tgt is empty", "(2, 0)", "start token"):
        _forward(tgt=TGT[:, :0], targets=None)


def test_source_longer_than_max_len():
    src = torch.full((1, 9), 5)
    with _raises(ValueError, "src has 9 tokens", "max_len=8"):
        MODEL.encode(src)
    MODEL.encode(src[:, :8])  # 8 fits


def test_target_longer_than_max_len():
    tgt = torch.full((2, 9), 3)
    with _raises(ValueError, "tgt has 9 new tokens after 0 cached", "max_len=8"):
        _forward(tgt=tgt, targets=None)


def test_translate_longer_than_max_len():
    with _raises(ValueError, "max_new_tokens=8", "9", "max_len=8"):
        translate(MODEL, SRC, MASK, bos_id=1, eos_id=2, max_new_tokens=8)
    out = translate(MODEL, SRC, MASK, bos_id=1, eos_id=2, max_new_tokens=7)  # 1 + 7 fits
    assert out.shape[0] == 2 and out.shape[1] <= 8


# --- types, ranks, shapes ----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["src", "tgt", "targets"])
def test_float_ids(which):
    kw = dict(src=SRC, tgt=TGT, targets=TARGETS)
    kw[which] = kw[which].float()
    with _raises(TypeError, f"{which} must hold integer token ids", "float32"):
        _forward(**kw)


@pytest.mark.parametrize("which", ["src", "tgt"])
def test_ids_not_a_tensor(which):
    kw = dict(src=SRC, tgt=TGT, targets=None)
    kw[which] = kw[which].tolist()
    with _raises(TypeError, f"{which} must be a torch.Tensor", "got list"):
        _forward(**kw)


@pytest.mark.parametrize("which", ["src", "tgt"])
def test_ids_of_the_wrong_rank(which):
    kw = dict(src=SRC[1], tgt=TGT, targets=None, src_mask=None) if which == "src" else \
        dict(tgt=TGT[0], targets=None)
    with _raises(ValueError, f"{which} must have shape (batch, time)"):
        _forward(**kw)


def test_targets_of_another_shape_than_tgt():
    with _raises(ValueError, "targets must have the shape of tgt (2, 3)", "got (2, 2)"):
        _forward(targets=TARGETS[:, :2])


def test_targets_all_ignored():
    with _raises(ValueError, "targets score no position (all -100)"):
        _forward(targets=torch.full_like(TARGETS, -100))
    partly = TARGETS.clone()
    partly[0] = -100  # some ignored is fine
    assert torch.isfinite(_forward(targets=partly)[1])


@pytest.mark.parametrize("b_tgt", [1, 3])
def test_batch_sizes_of_src_and_tgt_differ(b_tgt):
    tgt = TGT[:1].repeat(b_tgt, 1)
    with _raises(ValueError, "src has 2 sequences but tgt has", str(b_tgt)):
        _forward(tgt=tgt, targets=None)
    with _raises(ValueError, "targets must have the shape of tgt"):
        _forward(tgt=tgt)  # targets (2, 3) no longer match tgt


# --- decode (the generation step) and its cache ------------------------------------------------

def _memory(src=SRC, mask=MASK):
    memory, mmask = MODEL.encode(src, mask)
    return MODEL.memory_kv(memory), mmask


def test_decode_refuses_a_memory_instead_of_its_keys_and_values():
    memory, mmask = MODEL.encode(SRC, MASK)
    with _raises(TypeError, "memory_kv must be", "Seq2Seq.memory_kv", "got Tensor"):
        MODEL.decode(TGT, memory, mmask)


def test_decode_refuses_keys_and_values_of_another_batch():
    kv, mmask = _memory()
    with _raises(ValueError, "memory_kv must hold 2 layers", "for 1 sequences"):
        MODEL.decode(TGT[:1], kv, None)
    with _raises(ValueError, "memory_kv must hold 2 layers"):
        MODEL.decode(TGT, kv[:1], mmask)


def test_decode_refuses_a_memory_mask_of_another_source():
    kv, mmask = _memory()
    with _raises(ValueError, "memory_mask must be", "(2, 1, 1, 4)", "got (1, 1, 1, 4)"):
        MODEL.decode(TGT, kv, mmask[:1])
    with _raises(ValueError, "memory_mask must be", "Seq2Seq.encode"):
        MODEL.decode(TGT, kv, MASK)  # the (B, S) src_mask, not the (B, 1, 1, S) memory mask


def test_a_refused_decode_leaves_the_cache_as_it_was():
    kv, mmask = _memory()
    cache = MODEL.new_cache(2)
    first = MODEL.decode(TGT[:, :1], kv, mmask, cache=cache)  # (2, 1, 7)
    k, v = cache.k.clone(), cache.v.clone()
    too_long = torch.full((2, CFG.max_len), 3)  # 1 cached + 8 new > 8
    bad_id = TGT[:, 1:].clone()
    bad_id[0, 0] = 7
    refused = [
        (ValueError, lambda: MODEL.decode(too_long, kv, mmask, cache=cache),
         "tgt has 8 new tokens after 1 cached"),
        (ValueError, lambda: MODEL.decode(bad_id, kv, mmask, cache=cache), "tgt holds"),
        (TypeError, lambda: MODEL.decode(TGT[:, 1:].float(), kv, mmask, cache=cache), "tgt"),
        (ValueError, lambda: MODEL.decode(TGT[:1, 1:], kv, mmask, cache=cache),
         "cache holds 2 sequences"),
        (ValueError, lambda: MODEL.decode(TGT[:, 1:], kv, mmask[:1], cache=cache),
         "memory_mask must be"),
        (ValueError, lambda: MODEL.decode(TGT[:, 1:], kv, mmask, cache=MODEL.new_cache(1)),
         "cache holds 1 sequences"),
    ]
    for exc, call, fragment in refused:
        with _raises(exc, fragment):
            call()
        assert cache.length == 1
        assert torch.equal(cache.k, k) and torch.equal(cache.v, v)
    # the cache still works: the next step equals the uncached decoder's second position
    step = MODEL.decode(TGT[:, 1:2], kv, mmask, cache=cache)  # (2, 1, 7)
    full = MODEL.decode(TGT[:, :2], kv, mmask)  # (2, 2, 7)
    torch.testing.assert_close(first[:, 0], full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[:, 0], full[:, 1], atol=1e-5, rtol=1e-5)


def test_decode_refuses_a_cache_of_another_shape():
    kv, mmask = _memory()
    gpt_cache = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=3, n_head=2, n_embd=8))
    cache = Seq2Seq(Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=7, max_len=8,
                                  n_decoder_layer=3, n_head=2, n_embd=8, ffn_hidden=16,
                                  share_embeddings=False)).new_cache(2)
    with _raises(ValueError, "cache", "2 layers"):
        MODEL.decode(TGT, kv, mmask, cache=cache)
    with _raises(TypeError, "cache must be a KVCache", "got GPT"):
        MODEL.decode(TGT, kv, mmask, cache=gpt_cache)


# --- translate ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [("bos_id", 7), ("bos_id", -1), ("eos_id", 7),
                                         ("eos_id", 10), ("bos_id", True), ("eos_id", 2.0)])
def test_translate_with_ids_outside_the_target_vocabulary(name, value):
    kw = dict(bos_id=1, eos_id=2)
    kw[name] = value
    with _raises(ValueError, f"{name} must be an id of the target vocabulary [0, 7)",
                 f"got {value!r}"):
        translate(MODEL, SRC, MASK, max_new_tokens=3, **kw)


@pytest.mark.parametrize("num_beams", [0, -1, 1.5])
def test_translate_num_beams(num_beams):
    with _raises(ValueError, "num_beams must be an integer >= 1"):
        translate(MODEL, SRC, MASK, bos_id=1, eos_id=2, max_new_tokens=3, num_beams=num_beams)


@pytest.mark.parametrize("max_new_tokens", [0, -1, 2.0])
def test_translate_max_new_tokens(max_new_tokens):
    with _raises(ValueError, "max_new_tokens must be an integer >= 1"):
        translate(MODEL, SRC, MASK, bos_id=1, eos_id=2, max_new_tokens=max_new_tokens)


def test_translate_refuses_another_model():
    gpt = GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with _raises(TypeError, "model must be a llmcourse Seq2Seq", "got GPT"):
        translate(gpt, SRC, MASK, bos_id=1, eos_id=2, max_new_tokens=3)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_translate_checks_the_source_like_the_model(num_beams):
    kw = dict(bos_id=1, eos_id=2, max_new_tokens=3, num_beams=num_beams)
    with _raises(ValueError, "src holds pad_id=0", "pass src_mask"):
        translate(MODEL, SRC, **kw)
    with _raises(ValueError, "src_mask must be (B, S) like src = (2, 4)"):
        translate(MODEL, SRC, MASK[:1], **kw)
    with _raises(ValueError, "src is empty"):
        translate(MODEL, SRC[:0], MASK[:0], **kw)
    with _raises(TypeError, "src must hold integer token ids"):
        translate(MODEL, SRC.float(), MASK, **kw)
    with _raises(TypeError, "src must be a torch.Tensor"):
        translate(MODEL, SRC.tolist(), MASK, **kw)


def test_a_refused_translate_leaves_the_model_as_it_was():
    model = Seq2Seq(CFG).train()
    before = _state(model)
    for kw in (dict(src_mask=None), dict(src_mask=MASK, bos_id=9), dict(src_mask=MASK[:1]),
               dict(src_mask=MASK, max_new_tokens=8)):
        with pytest.raises(ValueError):
            translate(model, SRC, **{"bos_id": 1, "eos_id": 2, "max_new_tokens": 3, **kw})
        assert model.training and all(m.training for m in model.modules())
        assert _same_state(model, before)


# --- the config --------------------------------------------------------------------------------

def _config(**kw) -> Seq2SeqConfig:
    base = dict(src_vocab_size=11, tgt_vocab_size=11, max_len=8, n_head=2, n_embd=8,
                ffn_hidden=16)
    return Seq2SeqConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, exc, fragments", [
    (dict(n_embd=12, n_head=4), ValueError, ("n_embd=12", "n_head=4", "even size")),  # 3
    (dict(n_embd=10, n_head=4), ValueError, ("n_embd=10", "n_head=4", "heads")),  # 2.5
    (dict(tgt_vocab_size=7), ValueError,
     ("share_embeddings=True needs one vocabulary", "src_vocab_size=11", "tgt_vocab_size=7")),
    (dict(activation="tanh"), ValueError, ("activation must be one of", "'tanh'")),
    (dict(activation=None), ValueError, ("activation must be one of", "None")),
    (dict(pad_id=11), ValueError, ("pad_id must be an id of both vocabularies", "[0, 11)")),
    (dict(pad_id=7, tgt_vocab_size=7, share_embeddings=False), ValueError,
     ("pad_id must be an id of both vocabularies", "[0, 7)", "got 7")),
    (dict(pad_id=-1), ValueError, ("pad_id", "got -1")),
    (dict(pad_id=True), ValueError, ("pad_id", "got True")),
    (dict(label_smoothing=1.0), ValueError, ("label_smoothing must be in [0, 1)", "got 1.0")),
    (dict(label_smoothing=-0.1), ValueError, ("label_smoothing must be in [0, 1)",)),
    (dict(label_smoothing="0.1"), ValueError, ("label_smoothing must be in [0, 1)", "'0.1'")),
    (dict(dropout=1.0), ValueError, ("dropout must be in [0, 1)",)),
    (dict(n_head=0), ValueError, ("n_head must be a positive integer", "got 0")),
    (dict(max_len=8.0), ValueError, ("max_len must be a positive integer", "got 8.0")),
    (dict(src_vocab_size=True), ValueError, ("src_vocab_size must be a positive integer",)),
])
def test_config_refuses(kw, exc, fragments):
    with _raises(exc, *fragments):
        _config(**kw)


@pytest.mark.parametrize("kw", [dict(label_smoothing=0.0), dict(label_smoothing=0.1),
                                dict(label_smoothing=0), dict(pad_id=10),
                                dict(tgt_vocab_size=7, share_embeddings=False, pad_id=6),
                                dict(activation="gelu")])
def test_config_accepts(kw):
    assert isinstance(_config(**kw), Seq2SeqConfig)


def test_model_refuses_a_gpt_config():
    with _raises(TypeError, "config must be a Seq2SeqConfig", "got GPTConfig"):
        Seq2Seq(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8))
