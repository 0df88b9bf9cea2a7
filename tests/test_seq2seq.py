"""The encoder–decoder (chapter 06) against torch's own Transformer layers, with copied weights.

Oracles written by no one here: ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``,
``nn.Transformer`` and ``nn.MultiheadAttention`` (post-LN and pre-LN, padding on both sides).
Then the decoding machinery against the teacher-forced forward (cached steps, reordered rows,
greedy), the checkpoint round trip and the training loop on number-word pairs (loss falls,
resume is exact). Beam search against ``transformers``' ``generate`` is in
``test_seq2seq_marian.py``.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from llmcourse.decoding.seq2seq import Seq2SeqDecoder, translate
from llmcourse.models.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.nn.encoder_decoder import CrossAttention, DecoderBlock, EncoderBlock
from llmcourse.text.number_words import (
    PairBatch,
    encode_pairs,
    number_pairs,
    pair_tokenizer,
)
from llmcourse.training.loop import TrainConfig, train

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # torch's eval fast path turns padded batches into (prototype) nested tensors and says so
    pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning"),
]

ATOL = RTOL = 1e-5  # logits and hidden states, float32
SEEDS = [0, 1, 2]


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=RTOL)


@torch.no_grad()
def randomize(module: nn.Module, std: float = 0.3) -> nn.Module:
    """Every parameter random, biases and norms included (torch initialises biases to 0 and
    norms to 1, which would hide a bias or a norm copied to the wrong place)."""
    for name, p in module.named_parameters():
        if "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn_like(p))
        else:
            p.copy_(std * torch.randn_like(p))
    return module


def padding(lengths: list[int], s: int) -> torch.Tensor:
    """(B, S) bool, True at the padding (torch's key_padding_mask convention)."""
    return torch.arange(s)[None, :] >= torch.tensor(lengths)[:, None]


def causal_bool(t: int) -> torch.Tensor:
    """torch's attn_mask convention: (T, T) bool, True above the diagonal = may not attend
    (bool like the padding masks: torch deprecates mixing a float mask with a bool one)."""
    return torch.ones(t, t, dtype=torch.bool).triu(1)


def keep_mask(pad: torch.Tensor) -> torch.Tensor:
    """torch's key padding mask (True = padding) → ours, (B, 1, 1, S) True = attend."""
    return ~pad[:, None, None, :]


# --- 1. encoder block = nn.TransformerEncoderLayer -------------------------------------------

@torch.no_grad()
def copy_encoder_layer(ours: EncoderBlock, theirs: nn.TransformerEncoderLayer) -> None:
    ours.attn.c_attn.weight.copy_(theirs.self_attn.in_proj_weight)  # rows: q, k, v
    ours.attn.c_attn.bias.copy_(theirs.self_attn.in_proj_bias)
    for a, b in ((ours.attn.c_proj, theirs.self_attn.out_proj), (ours.mlp.c_fc, theirs.linear1),
                 (ours.mlp.c_proj, theirs.linear2), (ours.ln_1, theirs.norm1),
                 (ours.ln_2, theirs.norm2)):
        a.weight.copy_(b.weight)
        a.bias.copy_(b.bias)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block_equals_torch_encoder_layer(seed, norm_first):
    torch.manual_seed(seed)
    d, h, hidden, b, s = 24, 4, 40, 3, 7
    theirs = randomize(nn.TransformerEncoderLayer(d, h, dim_feedforward=hidden, dropout=0.0,
                                                  activation="relu", batch_first=True,
                                                  norm_first=norm_first)).eval()
    ours = EncoderBlock(d, h, hidden=hidden, norm_first=norm_first, activation="relu").eval()
    copy_encoder_layer(ours, theirs)
    x = torch.randn(b, s, d)
    pad = padding([7, 4, 1], s)  # a full row, a padded one, a single token

    # With gradients on, torch takes its plain (slow) path and computes every position: the
    # padded query rows attend to the real keys like any other, so all rows are comparable.
    y = ours(x, keep_mask(pad))
    close(y, theirs(x, src_key_padding_mask=pad))
    # Without gradients, in eval mode, torch takes its fused "fast path". Within a stack
    # (nn.TransformerEncoder, test 3) that path packs a padded batch into a nested tensor and
    # returns zeros at the padded positions, so fast-path outputs are compared at the real
    # positions only (the single layer here happens to fill them in, but that is not promised).
    with torch.no_grad():
        ref = theirs(x, src_key_padding_mask=pad)
    close(y[~pad], ref[~pad])
    # No padding at all: no mask on either side.
    close(ours(x), theirs(x))
    # The padding really is hidden: changing a padded input changes no real output.
    x2 = x.clone()
    x2[pad] = 100.0
    close(ours(x2, keep_mask(pad))[~pad], y[~pad])


# --- 2. decoder block = nn.TransformerDecoderLayer -------------------------------------------

@torch.no_grad()
def copy_decoder_layer(ours: DecoderBlock, theirs: nn.TransformerDecoderLayer) -> None:
    ours.self_attn.c_attn.weight.copy_(theirs.self_attn.in_proj_weight)
    ours.self_attn.c_attn.bias.copy_(theirs.self_attn.in_proj_bias)
    d = ours.cross_attn.n_embd
    w, bias = theirs.multihead_attn.in_proj_weight, theirs.multihead_attn.in_proj_bias
    ours.cross_attn.c_q.weight.copy_(w[:d])  # queries from the target
    ours.cross_attn.c_q.bias.copy_(bias[:d])
    ours.cross_attn.c_kv.weight.copy_(w[d:])  # keys then values from the memory
    ours.cross_attn.c_kv.bias.copy_(bias[d:])
    for a, b in ((ours.self_attn.c_proj, theirs.self_attn.out_proj),
                 (ours.cross_attn.c_proj, theirs.multihead_attn.out_proj),
                 (ours.mlp.c_fc, theirs.linear1), (ours.mlp.c_proj, theirs.linear2),
                 (ours.ln_1, theirs.norm1), (ours.ln_2, theirs.norm2), (ours.ln_3, theirs.norm3)):
        a.weight.copy_(b.weight)
        a.bias.copy_(b.bias)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_equals_torch_decoder_layer(seed, norm_first):
    torch.manual_seed(seed)
    d, h, hidden, b, t, s = 24, 4, 40, 3, 6, 9
    theirs = randomize(nn.TransformerDecoderLayer(d, h, dim_feedforward=hidden, dropout=0.0,
                                                  activation="relu", batch_first=True,
                                                  norm_first=norm_first)).eval()
    ours = DecoderBlock(d, h, hidden=hidden, norm_first=norm_first, activation="relu").eval()
    copy_decoder_layer(ours, theirs)
    x, memory = torch.randn(b, t, d), torch.randn(b, s, d)
    pad = padding([9, 5, 2], s)
    causal = causal_bool(t)
    kv = ours.cross_attn.memory_kv(memory)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            ref = theirs(x, memory, tgt_mask=causal, memory_key_padding_mask=pad)
            close(ours(x, kv, keep_mask(pad)), ref)
            close(ours(x, kv), theirs(x, memory, tgt_mask=causal))
    # Causal: position i does not depend on the target after it.
    x2 = x.clone()
    x2[:, 3:] = torch.randn(b, t - 3, d)
    close(ours(x2, kv, keep_mask(pad))[:, :3], ours(x, kv, keep_mask(pad))[:, :3])


# --- 3. the whole model = nn.Transformer ------------------------------------------------------

def torch_transformer(cfg: Seq2SeqConfig) -> nn.Transformer:
    return nn.Transformer(d_model=cfg.n_embd, nhead=cfg.n_head,
                          num_encoder_layers=cfg.n_encoder_layer,
                          num_decoder_layers=cfg.n_decoder_layer,
                          dim_feedforward=cfg.ffn_hidden, dropout=0.0, activation=cfg.activation,
                          batch_first=True, norm_first=cfg.norm_first)


def random_ids(lengths: list[int], width: int, vocab: int, first: int | None = None
               ) -> torch.Tensor:
    """(B, width) ids in [3, vocab) (not pad 0, BOS 1, EOS 2), right-padded with 0; with
    ``first``, each row starts with that id (the decoder's start token)."""
    ids = torch.randint(3, vocab, (len(lengths), width))
    if first is not None:
        ids[:, 0] = first
    return ids.masked_fill(padding(lengths, width), 0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("share", [True, False])
def test_seq2seq_equals_torch_transformer(seed, norm_first, share):
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(src_vocab_size=19, tgt_vocab_size=19 if share else 23, max_len=16,
                        n_encoder_layer=2, n_decoder_layer=3, n_head=4, n_embd=24,
                        ffn_hidden=40, norm_first=norm_first, share_embeddings=share)
    with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first"
        warnings.simplefilter("ignore", UserWarning)
        ref = randomize(torch_transformer(cfg)).eval()
    model = Seq2Seq(cfg).load_torch_transformer(ref).eval()
    assert (model.src_embed is model.tgt_embed) == share

    s, t = 9, 7
    src = random_ids([9, 6, 3, 1], s, cfg.src_vocab_size)
    tgt = random_ids([7, 2, 5, 4], t, cfg.tgt_vocab_size, first=1)  # BOS, then the target
    src_pad, tgt_pad = src == 0, tgt == 0
    logits, _ = model(src, tgt, src_mask=(~src_pad).long())

    # torch's model takes the embedded inputs: tokens·√d + the sinusoids, and its decoder
    # output times the (tied) target embedding gives the logits.
    scale = math.sqrt(cfg.n_embd)
    src_x = model.src_embed(src) * scale + model.pe[:s]
    tgt_x = model.tgt_embed(tgt) * scale + model.pe[:t]
    causal = causal_bool(t)
    # torch's plain path (grad on) and its eval fast path, whose encoder returns zeros at the
    # padded source positions (nested tensors): compared at the real target positions, which
    # never attend to those (memory_key_padding_mask) nor to the target padding (causal).
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out = ref(src_x, tgt_x, tgt_mask=causal, src_key_padding_mask=src_pad,
                      tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
            expected = out @ model.tgt_embed.weight.T  # (B, T, V)
        close(logits[~tgt_pad], expected[~tgt_pad].detach())


def test_load_torch_transformer_refuses_another_shape():
    cfg = Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=10, max_len=8, n_embd=16, n_head=2,
                        ffn_hidden=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        other = torch_transformer(replace(cfg, n_decoder_layer=3))
    with pytest.raises(ValueError, match="does not match"):
        Seq2Seq(cfg).load_torch_transformer(other)
    # Same shapes, other computations: every copy would succeed, so it must be refused.
    for ours, theirs in ((cfg, replace(cfg, norm_first=True)),
                         (replace(cfg, activation="gelu"), replace(cfg, activation="gelu"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ref = torch_transformer(theirs)
        with pytest.raises(ValueError, match="norm_first=False .* activation 'relu'"):
            Seq2Seq(ours).load_torch_transformer(ref)


def test_loss_is_cross_entropy_over_scored_positions():
    """The mean cross-entropy (label-smoothed as configured) over the positions whose target
    is not -100, by torch's F.cross_entropy on the logits."""
    model = scaled_model(replace(CFG, label_smoothing=0.1), 0)
    src = random_ids([7, 4, 2], 7, CFG.src_vocab_size)
    tgt = random_ids([6, 3, 5], 6, CFG.tgt_vocab_size, first=1)
    targets = torch.randint(3, CFG.tgt_vocab_size, tgt.shape).masked_fill(tgt == 0, -100)
    logits, loss = model(src, tgt, src_mask=(src != 0).long(), targets=targets)
    real = targets != -100
    expected = torch.nn.functional.cross_entropy(logits[real], targets[real],
                                                 label_smoothing=0.1)
    close(loss, expected)
    unsmoothed = torch.nn.functional.cross_entropy(logits[real], targets[real])
    assert not torch.isclose(loss, unsmoothed)  # the smoothing counts


# --- 4. cross-attention = nn.MultiheadAttention ----------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("t, s", [(5, 9), (8, 3), (1, 6)])
def test_cross_attention_equals_torch_multihead_attention(seed, t, s):
    torch.manual_seed(seed)
    d, h, b = 24, 4, 3
    mha = randomize(nn.MultiheadAttention(d, h, batch_first=True)).eval()
    ours = CrossAttention(d, h).eval()
    with torch.no_grad():
        ours.c_q.weight.copy_(mha.in_proj_weight[:d])
        ours.c_q.bias.copy_(mha.in_proj_bias[:d])
        ours.c_kv.weight.copy_(mha.in_proj_weight[d:])
        ours.c_kv.bias.copy_(mha.in_proj_bias[d:])
        ours.c_proj.weight.copy_(mha.out_proj.weight)
        ours.c_proj.bias.copy_(mha.out_proj.bias)
    x, memory = torch.randn(b, t, d), torch.randn(b, s, d)  # T queries, S ≠ T keys/values
    pad = padding([s, max(1, s - 2), 1], s)
    ref, ref_w = mha(x, memory, memory, key_padding_mask=pad, need_weights=True,
                     average_attn_weights=False)  # (B, T, C), (B, h, T, S)
    kv = ours.memory_kv(memory)
    assert kv[0].shape == (b, h, s, d // h)
    y, w = ours(x, kv, keep_mask(pad), need_weights=True)
    close(y, ref)
    close(w, ref_w)
    assert bool((w.masked_select(pad[:, None, None, :].expand_as(w)) == 0).all())
    close(ours(x, kv, keep_mask(pad)), ref)  # the fused kernel (need_weights=False)
    close(ours(x, kv), mha(x, memory, memory, need_weights=False)[0])


# --- 5. cached decoding = the teacher-forced forward ------------------------------------------

@torch.no_grad()
def scaled_model(cfg: Seq2SeqConfig, seed: int, std: float = 0.5) -> Seq2Seq:
    """A model whose next-token distributions are far from flat (so greedy and beam search
    make real choices, and EOS is not the first token every time)."""
    torch.manual_seed(seed)
    model = Seq2Seq(cfg)
    for name, p in model.named_parameters():
        if name.startswith("ln") or ".ln_" in name or "norm" in name:
            p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("weight")
                    else 0.1 * torch.randn_like(p))
        else:
            p.normal_(0.0, std)
    return model.eval()


CFG = Seq2SeqConfig(src_vocab_size=17, tgt_vocab_size=17, max_len=14, n_encoder_layer=2,
                    n_decoder_layer=2, n_head=2, n_embd=16, ffn_hidden=32)


@functools.cache
def trained_translator() -> tuple[Seq2Seq, PairBatch]:
    """A post-LN model without final norms (Marian's layout, for test_seq2seq_marian.py too)
    trained for 40 steps on English → German number words 0..99: half-right translations,
    so greedy and beam search disagree, lengths vary and EOS is a real choice (a model with
    random weights mostly repeats one token to the end). Returns it and every pair."""
    pairs = number_pairs(range(100))
    tok = pair_tokenizer(pairs)
    data = encode_pairs(pairs, tok)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=tok.vocab_size, tgt_vocab_size=tok.vocab_size,
                                  max_len=24, n_encoder_layer=2, n_decoder_layer=2, n_head=4,
                                  n_embd=32, ffn_hidden=64, final_norm=False))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(model, data, data, TrainConfig(max_steps=40, batch_size=32, learning_rate=1e-2,
                                             min_lr=1e-3, warmup_steps=5, eval_interval=40,
                                             eval_batches=1, progress=False))
    finally:
        torch.set_num_threads(before)
    return model.eval(), data


def sources(data: PairBatch, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """Some padded sources of ``data``, trimmed to the longest."""
    src, mask = data.src[rows], data.src_mask[rows]
    s = int(mask.sum(dim=1).max())
    return src[:, :s], mask[:, :s]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_steps_equal_uncached_and_teacher_forced(seed, norm_first):
    model = scaled_model(replace(CFG, norm_first=norm_first), seed)
    src = random_ids([8, 5, 2], 8, CFG.src_vocab_size)
    src_mask = (src != 0).long()
    tokens = random_ids([12, 12, 12], 12, CFG.tgt_vocab_size, first=1)  # (B, L)
    reorder_at, index = 5, torch.tensor([2, 0, 0])  # a beam step: rows copied and dropped
    with torch.no_grad():
        cached = Seq2SeqDecoder(model, src, src_mask, max_len=12, use_cache=True)
        plain = Seq2SeqDecoder(model, src, src_mask, max_len=12, use_cache=False)
        for n in range(1, 13):
            if n == reorder_at:
                cached.reorder(index)
                plain.reorder(index)
                src, src_mask, tokens = src[index], src_mask[index], tokens[index]
            a = cached.next_logits(tokens[:, :n])  # (B, V)
            b = plain.next_logits(tokens[:, :n])
            forced = model(src, tokens[:, :n], src_mask=src_mask)[0][:, -1]  # (B, V)
            close(a, forced)
            close(b, forced)
        assert cached.cache.length == 12


def greedy_by_forward(model: Seq2Seq, src, src_mask, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding written out with the teacher-forced forward alone (no cache, no loop
    from the library): argmax, append, and the pad id after EOS."""
    out = torch.ones(src.shape[0], 1, dtype=torch.long)  # BOS
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = model(src, out, src_mask=src_mask)[0][:, -1].argmax(-1)
            nxt = torch.where(done, model.config.pad_id, nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == 2
            if bool(done.all()):
                break
    return out


def translator(which: int | str) -> tuple[Seq2Seq, torch.Tensor, torch.Tensor, int]:
    """(model, padded sources, their mask, max_new_tokens): the trained translator on eight
    English numbers, or a random model (seed ``which``) on random ids."""
    if which == "trained":
        model, data = trained_translator()
        return (model, *sources(data, slice(3, 100, 12)), 20)
    model = scaled_model(CFG, which)
    src = random_ids([8, 6, 3, 1], 8, CFG.src_vocab_size)
    return model, src, (src != 0).long(), 12


MODELS = ["trained", 0, 1]


def test_the_trained_translator_makes_real_choices():
    """The decoding tests would prove little if every output ran to the end or stopped at
    once, or if beam search always agreed with greedy decoding."""
    model, src, src_mask, n = translator("trained")
    greedy = translate(model, src, src_mask, bos_id=1, eos_id=2, max_new_tokens=n)
    beam = translate(model, src, src_mask, bos_id=1, eos_id=2, max_new_tokens=n, num_beams=4)
    ended = (greedy == 2).any(dim=1)
    lengths = ((greedy == 2).cumsum(dim=1) == 0).sum(dim=1)
    assert bool(ended.all()) and len(set(lengths.tolist())) >= 4, greedy
    width = min(greedy.shape[1], beam.shape[1])
    assert not torch.equal(greedy[:, :width], beam[:, :width])


@pytest.mark.parametrize("which", MODELS)
def test_translate_greedy_equals_a_loop_over_forward(which):
    model, src, src_mask, n = translator(which)
    got = translate(model, src, src_mask, bos_id=1, eos_id=2, max_new_tokens=n)
    assert torch.equal(got, greedy_by_forward(model, src, src_mask, n))
    # A row translated alone (no padding) gives the same tokens as in the padded batch.
    for i in range(src.shape[0]):
        s = int(src_mask[i].sum())
        alone = translate(model, src[i:i + 1, :s], bos_id=1, eos_id=2, max_new_tokens=n)
        assert torch.equal(alone[0], got[i, :alone.shape[1]])


@pytest.mark.parametrize("which", MODELS)
@pytest.mark.parametrize("num_beams, length_penalty, early_stopping",
                         [(1, 1.0, False), (3, 1.0, False), (3, 0.5, True), (4, 2.0, "never")])
def test_translate_cached_equals_uncached(which, num_beams, length_penalty, early_stopping):
    model, src, src_mask, n = translator(which)
    kw = dict(bos_id=1, eos_id=2, max_new_tokens=n, num_beams=num_beams,
              length_penalty=length_penalty, early_stopping=early_stopping)
    cached = translate(model, src, src_mask, use_cache=True, **kw)
    plain = translate(model, src, src_mask, use_cache=False, **kw)
    assert torch.equal(cached, plain)
    assert bool((cached[:, 0] == 1).all())


# --- 7. checkpoints and the training loop -----------------------------------------------------

@pytest.mark.parametrize("share", [True, False])
def test_checkpoint_round_trip(tmp_path, share):
    cfg = replace(CFG, share_embeddings=share, tgt_vocab_size=17 if share else 21,
                  dropout=0.1, label_smoothing=0.1, norm_first=True)
    model = scaled_model(cfg, 0)
    folder = save_checkpoint(tmp_path / "ckpt", model, training_state={"step": 3})
    loaded, state = load_checkpoint(folder)
    assert state == {"step": 3}
    assert loaded.config == cfg
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The tied matrices are one tensor again, not equal copies.
    assert loaded.lm_head.weight is loaded.tgt_embed.weight
    assert (loaded.src_embed.weight is loaded.tgt_embed.weight) == share
    if not share:
        assert not torch.equal(loaded.src_embed.weight[:17], loaded.tgt_embed.weight[:17])
    src = random_ids([6, 2], 6, cfg.src_vocab_size)
    tgt = random_ids([5, 3], 5, cfg.tgt_vocab_size, first=1)
    assert torch.equal(model(src, tgt, src_mask=(src != 0).long())[0],
                       loaded(src, tgt, src_mask=(src != 0).long())[0])


@pytest.fixture(scope="module")
def pairs():
    numbers = list(range(120))
    tok = pair_tokenizer(number_pairs(range(1000)))
    return encode_pairs(number_pairs(numbers), tok), tok


def tiny_seq2seq(vocab: int, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, max_len=40,
                                 n_encoder_layer=1, n_decoder_layer=1, n_head=2, n_embd=32,
                                 ffn_hidden=64, dropout=0.1))


TRAIN = TrainConfig(max_steps=16, batch_size=16, learning_rate=3e-3, min_lr=3e-4,
                    warmup_steps=2, eval_interval=8, eval_batches=2, log_interval=1,
                    progress=False)


def test_train_loss_falls_and_resume_is_exact(pairs, tmp_path):
    data, tok = pairs
    straight_model = tiny_seq2seq(tok.vocab_size)
    straight = train(straight_model, data, data, TRAIN)
    assert straight.steps == [0, 8, 16]
    assert straight.train_loss[-1] < 0.8 * straight.train_loss[0], straight.train_loss

    folder = tmp_path / "run"
    train(tiny_seq2seq(tok.vocab_size), data, data, TRAIN, checkpoint_dir=folder, stop_at=8,
          tokenizer=tok)
    assert load_checkpoint(folder)[1]["step"] == 8
    # A new "process": other weights, other global random state (dropout draws from it).
    torch.manual_seed(12345)
    torch.rand(100)
    resumed_model = tiny_seq2seq(tok.vocab_size, seed=99)
    resumed = train(resumed_model, data, data, TRAIN, checkpoint_dir=folder, resume=True)
    assert resumed.log_loss == straight.log_loss  # every step's loss, exactly
    assert resumed.steps == straight.steps and resumed.val_loss == straight.val_loss
    for (n, a), b in zip(straight_model.state_dict().items(),
                         resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    assert resumed_model.lm_head.weight is resumed_model.tgt_embed.weight
