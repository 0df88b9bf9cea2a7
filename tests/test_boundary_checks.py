"""Boundary defects fixed in issue #7, one test (or a few) each, with torch or transformers as
the witness of what would happen without the check:

- ``generate`` on a right-padded batch whose pad id is also EOS (it would continue after the
  padding);
- a loss or a score with nothing to score (torch returns NaN without a word);
- an attention mask holding NaN, or of the wrong shape, given to ``CausalSelfAttention`` or
  ``Block``;
- a feed-forward hidden size of 0 or below;
- ``KVCache.advance`` out of range;
- an inf in the input of ``scaled_dot_product_attention`` or ``layer_norm``;
- and the shared helpers that replaced the copies: ``eval_mode``, ``check_padding_mask``,
  ``position_ids_from_mask``.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from llmcourse.core.torch_modes import eval_mode
from llmcourse.core.validate import check_padding_mask
from llmcourse.decoding.generate import generate
from llmcourse.decoding.metrics import mean_log_likelihood
from llmcourse.models.gpt import GPT, GPTConfig, position_ids_from_mask
from llmcourse.nn.attention import scaled_dot_product_attention
from llmcourse.nn.block import Block, CausalSelfAttention
from llmcourse.nn.feedforward import FeedForward
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.norms import LayerNorm, layer_norm

E = re.escape
CFG = GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)
EOS = CFG.vocab_size - 1


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


# --- generate and right padding ---------------------------------------------------------------

def test_right_padding_with_pad_equal_to_eos_warns(model):
    """Row 1 is right-padded with EOS (= pad): generation would continue after the padding,
    which transformers only mentions in a log line. Here it is a UserWarning naming the fix."""
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, EOS, EOS]])
    with pytest.warns(UserWarning, match=r"right-padded: row 1 ends with pad_token_id=49.*LEFT"
                      ) as record:
        out = generate(model, ids, max_new_tokens=2, eos_token_id=EOS)
    assert len([w for w in record if "right-padded" in str(w.message)]) == 1
    assert out.shape[0] == 2 and torch.equal(out[:, :4], ids)  # warned, not refused


def test_left_padding_and_explicit_masks_do_not_warn(model):
    left = torch.tensor([[5, 6, 7, 8], [EOS, EOS, 5, 6]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    right = torch.tensor([[5, 6, 7, 8], [5, 6, 7, EOS]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [
            generate(model, left, max_new_tokens=2, eos_token_id=EOS, attention_mask=mask),
            generate(model, left, max_new_tokens=2, eos_token_id=EOS),  # leading EOS = start
            # A trailing EOS the caller declares real with a mask of ones: no warning.
            generate(model, right, max_new_tokens=2, eos_token_id=EOS,
                     attention_mask=torch.ones_like(right)),
            # Every row ends the same way (e.g. all prompts are a lone start token): no padding.
            generate(model, torch.full((3, 1), EOS), max_new_tokens=2, eos_token_id=EOS),
        ]
    padding_warnings = [str(w.message) for w in caught if "padded" in str(w.message)]
    assert padding_warnings == []
    assert [o.shape[0] for o in outs] == [2, 2, 2, 3]


def test_right_padding_in_a_mask_is_refused(model):
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with pytest.raises(ValueError, match="padding must be on the LEFT"):
        generate(model, ids, max_new_tokens=2, attention_mask=mask)
    # With pad != EOS the mask is inferred from the pad id, and refused just the same.
    with pytest.raises(ValueError, match="inferred from pad_token_id=0: padding must be on"):
        generate(model, ids, max_new_tokens=2, eos_token_id=EOS, pad_token_id=0)


def test_generate_docstring_documents_left_padding():
    assert "LEFT" in generate.__doc__ and "padding_side" in generate.__doc__


# --- nothing to score ---------------------------------------------------------------------------

def test_loss_with_every_target_ignored_is_refused(model):
    idx = torch.randint(0, CFG.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    ignored = torch.full_like(idx, -100)
    with torch.no_grad():
        logits, _ = model(idx)
    # The witness: torch's cross-entropy over no scored target is 0 / 0.
    assert torch.isnan(F.cross_entropy(logits.flatten(0, 1), ignored.flatten(), ignore_index=-100))
    with pytest.raises(ValueError, match=E("targets score no position: all 12 are -100")):
        model(idx, ignored)
    # One scored target is enough.
    one = ignored.clone()
    one[0, 3] = 7
    _, loss = model(idx, one)
    assert torch.isfinite(loss)


def test_empty_sequence_is_refused(model):
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert torch.isnan(F.cross_entropy(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError, match=E("idx holds no token (shape (2, 0))")):
        model(empty, empty)
    with pytest.raises(ValueError, match=E("idx holds no token (shape (0, 3))")):
        model(torch.zeros(0, 3, dtype=torch.long))


def test_mean_log_likelihood_with_nothing_to_score_is_refused(model):
    ids = torch.tensor([[5, 6, 7, 8]])
    with pytest.raises(ValueError, match=E("text 0 has no token to score")):
        mean_log_likelihood(model, ids, start=2, attention_mask=torch.tensor([[1, 1, 0, 0]]))
    with pytest.raises(ValueError, match=E("input_ids has 1 token(s) per text; scoring needs "
                                           "at least 2")):
        mean_log_likelihood(model, ids[:, :1])


# --- attention masks given to CausalSelfAttention and Block --------------------------------------

@pytest.mark.parametrize("module", [CausalSelfAttention(8, 2), Block(8, 2)],
                         ids=["CausalSelfAttention", "Block"])
def test_mask_with_nan_is_refused(module):
    x = torch.randn(1, 3, 8)
    mask = torch.zeros(3, 3)
    mask[0, 1] = float("nan")
    # The witness: torch's kernel turns the NaN into NaN outputs without a word.
    q = torch.randn(1, 2, 3, 4)
    assert torch.isnan(F.scaled_dot_product_attention(q, q, q, attn_mask=mask)).any()
    with pytest.raises(ValueError, match=E("mask of shape (3, 3) contains NaN")):
        module(x, mask)


@pytest.mark.parametrize("module", [CausalSelfAttention(8, 2), Block(8, 2)],
                         ids=["CausalSelfAttention", "Block"])
def test_mask_of_the_wrong_shape_or_dtype_is_refused(module):
    x = torch.randn(2, 3, 8)
    q = torch.randn(2, 2, 3, 4)
    with pytest.raises(RuntimeError):  # the witness: torch's own, internal error
        F.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=E("mask of shape (3, 4) does not broadcast to the "
                                           "attention scores' shape (2, 2, 3, 3)")):
        module(x, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be bool .* or float"):
        module(x, torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor, got list"):
        module(x, [[True]])


def test_mask_with_cache_is_checked_against_every_key():
    """With 2 cached positions and 1 new token, the mask covers 3 keys: (1, 2) is refused and
    the cache is left as it was."""
    attn = CausalSelfAttention(8, 2).eval()
    cache = KVCache(n_layer=1, batch_size=1, n_head=2, max_len=4, head_dim=4)
    attn(torch.randn(1, 2, 8), cache=cache)
    cache.advance(2)
    with pytest.raises(ValueError, match=E("(1, 2, 1, 3)")):
        attn(torch.randn(1, 1, 8), torch.ones(1, 2, dtype=torch.bool), cache=cache)
    assert cache.length == 2


def test_a_good_mask_gives_torchs_result():
    """The oracle: a padding mask through the module equals torch's kernel on the same q, k, v."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(8, 2).eval()
    x = torch.randn(2, 4, 8)
    keys = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.bool)
    mask = torch.ones(4, 4, dtype=torch.bool).tril() & keys[:, None, None, :]  # (2, 1, 4, 4)
    mask = mask | torch.eye(4, dtype=torch.bool)  # a padding query sees itself
    q, k, v = attn.c_attn(x).split(8, dim=2)
    q, k, v = (z.view(2, 4, 2, 4).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(2, 4, 8)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), attn.c_proj(y), atol=1e-6, rtol=0)


# --- feed-forward hidden size --------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [-3, 0, 2.5, True])
def test_feed_forward_hidden_size_must_be_positive(hidden):
    with pytest.raises(ValueError, match=E(f"hidden must be a positive integer, got {hidden!r}")):
        FeedForward(8, hidden=hidden)


def test_feed_forward_hidden_size_default_and_given():
    assert FeedForward(8).c_fc.out_features == 32  # 4·C when not given
    assert FeedForward(8, hidden=12).c_fc.out_features == 12
    with pytest.raises(ValueError, match="n_embd must be a positive integer, got 0"):
        FeedForward(0)


# --- KV cache advance ----------------------------------------------------------------------------

@pytest.mark.parametrize("t, room", [(-3, 4), (100, 4), (5, 4), (2.0, 4), (True, 4), (3, 1)])
def test_cache_advance_out_of_range_is_refused(t, room):
    cache = KVCache(n_layer=1, batch_size=1, n_head=2, max_len=4, head_dim=4)
    cache.advance(4 - room)
    with pytest.raises(ValueError, match=E(f"advance(t) needs an integer t in [0, {room}]")):
        cache.advance(t)
    assert cache.length == 4 - room  # unchanged


def test_cache_advance_within_range():
    cache = KVCache(n_layer=1, batch_size=1, n_head=2, max_len=4, head_dim=4)
    cache.advance(0)
    cache.advance(4)
    assert cache.length == 4


# --- inf at the entry of the functional helpers -------------------------------------------------

def _with(value: float, *shape: int) -> torch.Tensor:
    x = torch.randn(*shape)
    x.view(-1)[1] = value
    return x


@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_attention_refuses_inf(which, value):
    args = {"q": torch.randn(2, 3, 4), "k": torch.randn(2, 5, 4), "v": torch.randn(2, 5, 4)}
    args[which] = _with(value, *args[which].shape)
    # The witness: torch's kernel gives NaN or inf without a word.
    out = F.scaled_dot_product_attention(args["q"], args["k"], args["v"])
    assert not torch.isfinite(out).all()
    with pytest.raises(ValueError, match=E(f"{which} contains inf (shape "
                                           f"{tuple(args[which].shape)}); expected finite")):
        scaled_dot_product_attention(args["q"], args["k"], args["v"])


def test_layer_norm_refuses_inf():
    x = _with(float("inf"), 2, 8)
    assert torch.isnan(F.layer_norm(x, (8,))).any()  # the witness
    with pytest.raises(ValueError, match=E("x contains inf (shape (2, 8))")):
        layer_norm(x, None, None)
    with pytest.raises(ValueError, match=E("weight contains inf (shape (8,))")):
        layer_norm(torch.randn(2, 8), _with(float("inf"), 8), None)
    with pytest.raises(ValueError, match=E("x contains NaN (shape (2, 8))")):
        layer_norm(_with(float("nan"), 2, 8), None, None)


def test_modules_check_types_and_shapes_without_scanning_values():
    """The modules inside the model check only what is O(1): dtype and shape."""
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        LayerNorm(8)(torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=E("expected the LayerNorm's dim = 8")):
        LayerNorm(8)(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=E("x must have shape (batch, time, n_embd)")):
        Block(8, 2)(torch.zeros(3, 8))
    with pytest.raises(ValueError, match=E("expected n_embd = 8")):
        CausalSelfAttention(8, 2)(torch.zeros(1, 3, 6))


# --- the shared helpers -------------------------------------------------------------------------

def test_eval_mode_restores_modes_even_on_error():
    model = GPT(CFG).train()
    model.transformer.h[0].eval()  # mixed modes come back exactly as they were
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        with eval_mode("model"):
            pass


def test_generate_and_scoring_restore_training_mode_on_error(model):
    model.train()
    try:
        with pytest.raises(ValueError):
            generate(model, torch.tensor([[1, 2]]), max_new_tokens=1, top_p=2.0)
        assert model.training
        with pytest.raises(ValueError):
            mean_log_likelihood(model, torch.tensor([[1, 2, 3]]), start=9)
        assert model.training
    finally:
        model.eval()


def test_padding_mask_check_accepts_what_transformers_accepts():
    for mask in (torch.tensor([[0, 1]]), torch.tensor([[False, True]]), torch.tensor([[0.0, 1.0]])):
        assert check_padding_mask("m", mask, (1, 2)).tolist() == [[False, True]]
    with pytest.raises(ValueError, match=E("m must hold only 1 (real token) and 0 (padding), got "
                                           "values [0.5]")):
        check_padding_mask("m", torch.tensor([[0.5, 1.0]]), (1, 2))
    with pytest.raises(ValueError, match=E("m must be (B, T) = (1, 3), got (1, 2)")):
        check_padding_mask("m", torch.tensor([[0, 1]]), (1, 3))


def test_positions_from_mask_follow_transformers(model):
    """transformers' rule for GPT-2 generation: cumsum(mask) - 1 on the real tokens."""
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    pos = position_ids_from_mask(mask)
    hf = mask.cumsum(-1) - 1
    real = mask.bool()
    assert torch.equal(pos[real], hf[real])
    assert (pos[~real] == 0).all() and pos.dtype == torch.long
