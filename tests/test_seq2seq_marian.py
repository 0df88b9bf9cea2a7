"""The encoder–decoder and its beam search against ``transformers``' MarianMTModel, an
independent implementation of the 2017 post-LN Transformer, with the same weights.

Marian is our model with ``norm_first=False``, ``final_norm=False`` (no LayerNorm after either
stack), ReLU, embeddings scaled by √d, and one embedding matrix for the source, the target and
the output layer, with two differences, both checked here in its code
(``transformers/models/marian/modeling_marian.py``):

- **The sinusoid layout.** ``MarianSinusoidalPositionalEmbedding`` puts every sine in the first
  half of the dimensions and every cosine in the second half; the paper (and
  :func:`llmcourse.nn.positional.sinusoidal_positions`) interleave them, sine at 2i, cosine at
  2i+1. The frequencies are the same, so the two models are one model up to a permutation of
  the hidden dimensions, ``marian_dim[j] = ours_dim[perm[j]]`` with
  ``perm = (0, 2, 4, …, 1, 3, 5, …)``. Permuting every tensor that reads or writes the
  residual stream (embedding columns; input columns of q/k/v and fc1; output rows and biases of
  out_proj and fc2; LayerNorm gains and shifts) maps one onto the other exactly: attention
  scores, ReLU and LayerNorm do not care about the order of the dimensions, and the logits are
  ``h · E`` summed over all of them. The heads' space (q/k/v outputs) is not permuted.
- **final_logits_bias**, a buffer of zeros added to the logits: left at zero.

Positions start at 0 on both sides (and at the cache length when decoding), attention scales
by head_dim^-0.5, and LayerNorm's epsilon is 1e-5, as ours.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import transformers
from test_seq2seq import trained_translator
from torch import nn
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

from llmcourse.decoding.seq2seq import translate
from llmcourse.models.seq2seq import Seq2Seq
from llmcourse.nn.positional import sinusoidal_positions

pytestmark = pytest.mark.usefixtures("one_thread", "quiet_transformers")

PAD, BOS, EOS = 0, 1, 2  # the number-word tokenizer's special ids


def interleave_to_halves(d: int) -> torch.Tensor:
    """perm with marian_dim[j] = ours_dim[perm[j]]: the sines (even dims), then the cosines."""
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


def marian_config(model: Seq2Seq) -> transformers.MarianConfig:
    c = model.config
    return transformers.MarianConfig(
        vocab_size=c.tgt_vocab_size, d_model=c.n_embd, encoder_layers=c.n_encoder_layer,
        decoder_layers=c.n_decoder_layer, encoder_attention_heads=c.n_head,
        decoder_attention_heads=c.n_head, encoder_ffn_dim=c.ffn_hidden,
        decoder_ffn_dim=c.ffn_hidden, activation_function="relu", scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        max_position_embeddings=c.max_len, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=BOS, bos_token_id=None,
        forced_eos_token_id=None,  # Marian's default (0) would force an EOS at max_length
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )


@torch.no_grad()
def to_marian(model: Seq2Seq) -> transformers.MarianMTModel:
    """A MarianMTModel computing what ``model`` computes, its hidden dimensions permuted."""
    c = model.config
    assert not c.norm_first and not c.final_norm and c.activation == "relu" and \
        c.share_embeddings and c.bias
    d, p = c.n_embd, interleave_to_halves(c.n_embd)
    marian = transformers.MarianMTModel(marian_config(model)).eval()

    def reads(theirs: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """A projection out of the residual stream: permute its input columns."""
        theirs.weight.copy_(weight[:, p])
        theirs.bias.copy_(bias)

    def writes(theirs: nn.Linear, ours: nn.Linear) -> None:
        """A projection into the residual stream: permute its output rows."""
        theirs.weight.copy_(ours.weight[p])
        theirs.bias.copy_(ours.bias[p])

    def norm(theirs: nn.LayerNorm, ours: nn.Module) -> None:
        theirs.weight.copy_(ours.weight[p])
        theirs.bias.copy_(ours.bias[p])

    def attention(theirs: nn.Module, w_q, b_q, w_kv, b_kv, out: nn.Linear) -> None:
        reads(theirs.q_proj, w_q, b_q)
        reads(theirs.k_proj, w_kv[:d], b_kv[:d])
        reads(theirs.v_proj, w_kv[d:], b_kv[d:])
        writes(theirs.out_proj, out)

    def ffn(theirs: nn.Module, ours: nn.Module) -> None:
        reads(theirs.fc1, ours.mlp.c_fc.weight, ours.mlp.c_fc.bias)
        writes(theirs.fc2, ours.mlp.c_proj)

    marian.model.shared.weight.copy_(model.src_embed.weight[:, p])  # = decoder's = lm_head
    for theirs, ours in zip(marian.model.encoder.layers, model.encoder, strict=True):
        w, b = ours.attn.c_attn.weight, ours.attn.c_attn.bias
        attention(theirs.self_attn, w[:d], b[:d], w[d:], b[d:], ours.attn.c_proj)
        norm(theirs.self_attn_layer_norm, ours.ln_1)
        ffn(theirs, ours)
        norm(theirs.final_layer_norm, ours.ln_2)
    for theirs, ours in zip(marian.model.decoder.layers, model.decoder, strict=True):
        w, b = ours.self_attn.c_attn.weight, ours.self_attn.c_attn.bias
        attention(theirs.self_attn, w[:d], b[:d], w[d:], b[d:], ours.self_attn.c_proj)
        norm(theirs.self_attn_layer_norm, ours.ln_1)
        x = ours.cross_attn
        attention(theirs.encoder_attn, x.c_q.weight, x.c_q.bias, x.c_kv.weight, x.c_kv.bias,
                  x.c_proj)
        norm(theirs.encoder_attn_layer_norm, ours.ln_2)
        ffn(theirs, ours)
        norm(theirs.final_layer_norm, ours.ln_3)
    assert marian.lm_head.weight is marian.model.shared.weight
    assert not bool(marian.final_logits_bias.any())
    return marian


@pytest.fixture(scope="module")
def pair():
    model, data = trained_translator()
    return model, to_marian(model), data


def test_marian_sinusoids_are_ours_with_sines_first():
    """The layout claim itself, on Marian's own table (computed in float64 there)."""
    emb = MarianSinusoidalPositionalEmbedding(50, 32)
    table = emb.create_weight()  # (50, 32)
    ours = sinusoidal_positions(50, 32)
    torch.testing.assert_close(table, ours[:, interleave_to_halves(32)], atol=2e-6, rtol=0)
    assert not torch.allclose(table, ours, atol=0.1)  # unpermuted they differ


@pytest.mark.parametrize("rows", [slice(0, 100, 7), slice(90, 100), slice(5, 6)])
def test_logits_equal_marian(pair, rows):
    model, marian, data = pair
    src, src_mask = data.src[rows], data.src_mask[rows]
    s, t = int(src_mask.sum(1).max()), int((data.targets[rows] != -100).sum(1).max())
    src, src_mask, tgt = src[:, :s], src_mask[:, :s], data.tgt_in[rows, :t]
    real = data.targets[rows, :t] != -100  # target positions before the padding
    targets = data.targets[rows, :t].contiguous()  # the target then EOS, -100 after it
    with torch.no_grad():
        ours, loss = model(src, tgt, src_mask=src_mask, targets=targets)
        out = marian(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                     decoder_attention_mask=real.long(), labels=targets)
    torch.testing.assert_close(ours[real], out.logits[real], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=1e-5)  # -100 ignored by both


@pytest.mark.parametrize("seed", [0, 1])
def test_logits_equal_marian_with_random_weights(seed):
    """Away from the trained weights too: every parameter random, the norms included."""
    model = trained_translator()[0]
    model = type(model)(model.config).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if p.dim() == 1 else 0.0))
    marian = to_marian(model)
    src = torch.randint(3, model.config.src_vocab_size, (3, 9))
    src[1, 5:] = PAD
    tgt = torch.randint(3, model.config.tgt_vocab_size, (3, 11))
    tgt[:, 0] = BOS
    mask = (src != PAD).long()
    with torch.no_grad():
        ours = model(src, tgt, src_mask=mask)[0]
        theirs = marian(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-5)


GRID = list(itertools.product([1, 2, 4], [1.0, 0.5, 2.0], [False, True]))


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", GRID)
def test_translate_equals_marian_generate(pair, num_beams, length_penalty, early_stopping):
    model, marian, data = pair
    src, src_mask = data.src[1:100:9], data.src_mask[1:100:9]  # 11 numbers, padded
    s = int(src_mask.sum(1).max())
    src, src_mask = src[:, :s], src_mask[:, :s]
    kw = dict(num_beams=num_beams, length_penalty=length_penalty,
              early_stopping=early_stopping)
    ours = translate(model, src, src_mask, bos_id=BOS, eos_id=EOS, max_new_tokens=20, **kw)
    with torch.no_grad():
        theirs = marian.generate(input_ids=src, attention_mask=src_mask, max_new_tokens=20,
                                 do_sample=False, **kw)
    # Both fill a row that ended early the same way: greedy with the pad id, beam search
    # with `pad_token_id or eos_token_id` (transformers' rule, which ours copies: a pad id of
    # 0 counts as unset, so EOS fills), so the outputs compare as they are.
    assert torch.equal(ours, theirs), (ours, theirs)
