"""The course's Llama against ``transformers.LlamaForCausalLM`` holding the same random weights,
in both directions, on tiny configs: multi-head, grouped-query and multi-query attention, tied
and untied output layer; with padding, with a KV cache, the loss and its gradients, the
parameter count (= ``models.sizing``); deliberate bugs (each a plausible slip) are caught by
the same comparison; the state dict and config conversions refuse what they cannot express."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from model_helpers import hf_positions, perturb_llama, random_ids, random_llama

from llmcourse.models import llama_hf
from llmcourse.models.gpt import GPTConfig
from llmcourse.models.llama import Llama, LlamaConfig, parameter_count
from llmcourse.models.sizing import ModelShape, parameters
from llmcourse.nn import grouped_query
from llmcourse.nn.feedforward import SwiGLU
from llmcourse.nn.grouped_query import repeat_kv
from llmcourse.nn.norms import RMSNorm

pytestmark = pytest.mark.usefixtures("quiet_transformers", "one_thread")

ATOL = 1e-5  # absolute, on logits of size ~10 (fp32)

BASE = LlamaConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32, d_ff=48,
                   rope_theta=500.0)  # a small base: every pair turns fast (a 32-token test)
CONFIGS = {
    "mha-untied": BASE,
    "gqa-tied": replace(BASE, n_kv_head=2, tie_embeddings=True),
    "mqa-untied": replace(BASE, n_kv_head=1, rms_norm_eps=1e-6),
    "gqa-3-layers": replace(BASE, n_layer=3, n_head=6, n_kv_head=2, n_embd=48, d_ff=40,
                            rope_theta=10000.0),
}


def _hf(cfg: LlamaConfig, seed: int = 0):
    """A LlamaForCausalLM built by transformers from its own config (its own initialisation),
    then given the same kind of weights as ours (:func:`model_helpers.perturb_llama`)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    hf = LlamaForCausalLM(llama_hf.config_to_hf(cfg)).eval()
    perturb_llama(hf, seed)
    return hf


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


# ------------------------------------------------------------------ the whole model, both ways


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_oracle_ours_to_hf_logits_match(name):
    cfg = CONFIGS[name]
    ours = random_llama(cfg)
    hf = llama_hf.to_hf(ours)
    x = random_ids(cfg, 3, cfg.block_size, seed=1)
    with torch.no_grad():
        logits = ours(x)[0]
        _close(logits, hf(x).logits)
    assert logits.abs().max() > 5  # the comparison is not between near-zero numbers


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_oracle_hf_to_ours_logits_match(name):
    cfg = CONFIGS[name]
    hf = _hf(cfg, seed=3)
    ours = llama_hf.from_hf(hf).eval()
    assert ours.config == cfg
    x = random_ids(cfg, 2, 19, seed=4)
    with torch.no_grad():
        _close(ours(x)[0], hf(x).logits)


def test_hf_config_round_trips():
    for cfg in CONFIGS.values():
        assert llama_hf.config_from_hf(llama_hf.config_to_hf(cfg)) == cfg
        assert llama_hf.config_from_hf(llama_hf.config_to_hf(cfg).to_dict()) == cfg
    with_dropout = replace(BASE, dropout=0.1)
    assert llama_hf.config_to_hf(with_dropout).attention_dropout == 0.1
    assert llama_hf.config_from_hf(llama_hf.config_to_hf(with_dropout)) == with_dropout


def test_state_dict_names_and_shapes_are_transformers():
    cfg = CONFIGS["gqa-tied"]
    ours = llama_hf.to_hf_state_dict(random_llama(cfg))
    theirs = _hf(cfg).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert ours["model.layers.0.self_attn.k_proj.weight"].shape == (2 * 8, 32)  # 2 kv heads


def test_tied_model_has_one_matrix():
    model = random_llama(CONFIGS["gqa-tied"])
    assert model.lm_head.weight is model.model.embed_tokens.weight
    untied = random_llama(CONFIGS["mha-untied"])
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_oracle_parameter_count_is_hf_and_sizing(name):
    cfg = CONFIGS[name]
    ours = Llama(cfg)
    shape = ModelShape("t", n_layer=cfg.n_layer, d_model=cfg.n_embd, n_head=cfg.n_head,
                       vocab_size=cfg.vocab_size, context=cfg.block_size,
                       n_kv_head=cfg.n_kv_head, d_ff=cfg.d_ff, style="llama",
                       tie_embeddings=cfg.tie_embeddings)
    n = ours.num_parameters()
    assert n == parameter_count(cfg) == parameters(shape) == _hf(cfg).num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == n - cfg.vocab_size * cfg.n_embd


# ------------------------------------------------------------------ padding, cache, loss


def _left_padded(cfg: LlamaConfig, t: int = 12):
    ids = random_ids(cfg, 3, t, seed=5)
    mask = torch.ones(3, t, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :1] = 0
    return ids, mask


@pytest.mark.parametrize("name", ["gqa-tied", "mqa-untied"])
def test_oracle_padded_batch_matches_hf_on_real_positions(name):
    cfg = CONFIGS[name]
    ours = random_llama(cfg)
    hf = llama_hf.to_hf(ours)
    ids, mask = _left_padded(cfg)
    pos = hf_positions(mask)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, position_ids=pos)[0]
        b = hf(ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    _close(a[real], b[real])
    # And a left-padded row equals the same row alone, unpadded (positions count real tokens).
    with torch.no_grad():
        alone = ours(ids[:1, 4:])[0]
    _close(a[0, 4:], alone[0])


@pytest.mark.parametrize("name", ["mha-untied", "gqa-tied", "mqa-untied"])
def test_cache_prefix_then_steps_equals_uncached_and_hf(name):
    cfg = CONFIGS[name]
    ours = random_llama(cfg)
    hf = llama_hf.to_hf(ours)
    x = random_ids(cfg, 2, 20, seed=6)
    cache = ours.new_cache(2)
    assert cache.k.shape == (cfg.n_layer, 2, cfg.n_kv_head, cfg.block_size, cfg.head_dim)
    with torch.no_grad():
        parts = [ours(x[:, :11], cache=cache)[0]]
        parts += [ours(x[:, i:i + 1], cache=cache)[0] for i in range(11, 17)]
        parts.append(ours(x[:, 17:], cache=cache)[0])  # several new tokens over a cache
        full = ours(x)[0]
        _close(torch.cat(parts, 1), full)
        _close(full, hf(x).logits)
    assert cache.length == 20


def test_cache_with_left_padding_matches_hf():
    cfg = CONFIGS["gqa-tied"]
    ours = random_llama(cfg)
    hf = llama_hf.to_hf(ours)
    ids, mask = _left_padded(cfg)
    full_mask = torch.cat([mask, torch.ones(3, 3, dtype=torch.long)], 1)
    more = random_ids(cfg, 3, 3, seed=7)
    pos = hf_positions(full_mask)
    cache = ours.new_cache(3)
    with torch.no_grad():
        ours(ids, attention_mask=mask, position_ids=pos[:, :12], cache=cache)
        step = ours(more, attention_mask=full_mask, position_ids=pos[:, 12:], cache=cache)[0]
        theirs = hf(torch.cat([ids, more], 1), attention_mask=full_mask, position_ids=pos).logits
    _close(step, theirs[:, 12:])


def test_oracle_loss_and_gradients_match_hf():
    cfg = CONFIGS["gqa-tied"]
    ours = random_llama(cfg).train()
    hf = llama_hf.to_hf(ours).train()
    x = random_ids(cfg, 2, 16, seed=8)
    targets = x[:, 1:].clone()
    targets[0, :3] = -100
    _, loss = ours(x[:, :-1], targets)
    labels = x.clone()
    labels[0, 1:4] = -100  # HF shifts labels by one itself
    theirs = hf(x, labels=labels).loss
    _close(loss, theirs, atol=1e-6)
    loss.backward()
    theirs.backward()
    grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        _close(p.grad, grads[name].grad, atol=1e-5)


def test_last_only_is_the_last_position():
    cfg = CONFIGS["mqa-untied"]
    model = random_llama(cfg)
    x = random_ids(cfg, 2, 9, seed=1)
    with torch.no_grad():
        _close(model(x, last_only=True)[0], model(x)[0][:, -1:])


def test_activation_checkpointing_gives_the_same_gradients():
    cfg = replace(CONFIGS["gqa-tied"], dropout=0.0)
    model = random_llama(cfg).train()
    x = random_ids(cfg, 2, 16, seed=1)
    model(x, x)[1].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing = True
    model(x, x)[1].backward()
    for n, p in model.named_parameters():
        _close(p.grad, plain[n], atol=1e-6)


def test_rope_gives_relative_positions_only():
    """Shifting every position by the same offset leaves the logits unchanged: RoPE scores
    depend on offsets only (a learned absolute table would not)."""
    cfg = CONFIGS["gqa-tied"]
    model = random_llama(cfg)
    x = random_ids(cfg, 1, 10, seed=1)
    with torch.no_grad():
        at0 = model(x)[0]
        at7 = model(x, position_ids=torch.arange(7, 17)[None])[0]
    _close(at0, at7, atol=1e-4)  # cos/sin of larger angles round differently


# ------------------------------------------------------------------ deliberate bugs are caught


class _SDPAWith:
    """A stand-in for ``torch.nn.functional`` in the attention module whose attention expands
    the key/value heads with ``expand`` itself instead of ``enable_gqa``."""

    def __init__(self, expand):
        self.expand = expand

    def scaled_dot_product_attention(self, q, k, v, enable_gqa=False, **kwargs):
        if enable_gqa:
            n_rep = q.shape[1] // k.shape[1]
            k, v = self.expand(k, n_rep), self.expand(v, n_rep)
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def _interleaved_rope(x, cos, sin):
    """RoPE on adjacent pairs (2i, 2i+1), the paper's and Meta's original layout, with the
    same angles: right in itself, wrong for transformers' (and the course's) weights."""
    half = x.shape[-1] // 2
    c = cos[..., :half].repeat_interleave(2, -1)
    s = sin[..., :half].repeat_interleave(2, -1)
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)
    return x * c + rotated * s


BUGS = {
    "kv heads repeated (a,b,a,b), not interleaved (a,a,b,b)": (
        grouped_query, "F", _SDPAWith(lambda k, n: k.repeat(1, n, 1, 1))),
    "RoPE on interleaved pairs instead of halves": (
        grouped_query, "rope_rotate", _interleaved_rope),
    "RMSNorm subtracting the mean (a LayerNorm without bias)": (
        RMSNorm, "forward",
        lambda self, x: F.layer_norm(x, self.weight.shape, self.weight, None, self.eps)),
    "SiLU on the up branch instead of the gate": (
        SwiGLU, "forward",
        lambda self, x: self.down_proj(self.gate_proj(x) * F.silu(self.up_proj(x)))),
    "no RoPE at all": (grouped_query, "rope_rotate", lambda x, cos, sin: x),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_deliberate_bug_fails_the_oracle(bug, monkeypatch):
    cfg = CONFIGS["gqa-tied"]
    ours = random_llama(cfg)
    hf = llama_hf.to_hf(ours)
    x = random_ids(cfg, 2, 24, seed=1)
    with torch.no_grad():
        theirs = hf(x).logits
        _close(ours(x)[0], theirs)  # right before the bug goes in
        monkeypatch.setattr(*BUGS[bug])
        wrong = ours(x)[0]
    assert (wrong - theirs).abs().max() > 1.0, bug  # logits of ~10: far beyond rounding


def test_the_harness_of_the_kv_bug_passes_the_right_expansion(monkeypatch):
    """The stand-in attention with repeat_kv (interleaved) gives HF's logits: only the
    expansion differs between the right and the wrong version above."""
    cfg = CONFIGS["gqa-tied"]
    ours = random_llama(cfg)
    x = random_ids(cfg, 2, 24, seed=1)
    with torch.no_grad():
        theirs = llama_hf.to_hf(ours)(x).logits
        monkeypatch.setattr(grouped_query, "F", _SDPAWith(repeat_kv))
        _close(ours(x)[0], theirs)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("fields, error, match", [
    (dict(n_head=4, n_kv_head=3), ValueError, "n_head=4 must be a multiple of n_kv_head=3"),
    (dict(n_head=4, n_kv_head=8), ValueError, "n_head=4 must be a multiple of n_kv_head=8"),
    (dict(n_embd=12, n_head=4), ValueError, "head size .* = 3 is odd; RoPE rotates pairs"),
    (dict(n_embd=30, n_head=4), ValueError, "n_embd=30 must be divisible by n_head=4"),
    (dict(n_kv_head=0), ValueError, "n_kv_head must be a positive integer"),
    (dict(d_ff=0), ValueError, "d_ff must be a positive integer"),
    (dict(rope_theta=0.5), ValueError, "rope_theta must be a number > 1"),
    (dict(rope_theta=float("nan")), ValueError, "rope_theta must be a number > 1"),
    (dict(rms_norm_eps=0.0), ValueError, "rms_norm_eps must be a small positive number"),
    (dict(dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\)"),
    (dict(tie_embeddings="yes"), TypeError, "tie_embeddings must be True or False"),
])
def test_config_refuses(fields, error, match):
    with pytest.raises(error, match=match):
        replace(BASE, **fields)


def test_model_refuses_another_config():
    with pytest.raises(TypeError, match="config must be a LlamaConfig, got GPTConfig"):
        Llama(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))


@pytest.fixture(scope="module")
def small():
    return random_llama(CONFIGS["gqa-tied"])


@pytest.mark.parametrize("call, error, match", [
    (lambda m: m(torch.tensor([[1, 97]])), ValueError, "outside"),
    (lambda m: m(torch.tensor([[1.0, 2.0]])), TypeError, "integer"),
    (lambda m: m(torch.zeros(1, 0, dtype=torch.long)), ValueError, "holds no token"),
    (lambda m: m(torch.zeros(1, 33, dtype=torch.long)), ValueError,
     "33 tokens .* longer than the model's context block_size=32"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)),
     ValueError, "targets must have the shape of idx"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), -100)),
     ValueError, "targets score no position"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3)),
     ValueError, "attention_mask"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), position_ids=torch.arange(30, 34)[None]),
     ValueError, r"position_ids must lie in \[0, block_size=32\)"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), cache=m.new_cache(2)), ValueError,
     "cache holds"),
    (lambda m: m(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long),
                 last_only=True), ValueError, "last_only=True"),
])
def test_forward_refuses(small, call, error, match):
    with pytest.raises(error, match=match):
        call(small)


def test_forward_refuses_a_cache_of_all_query_heads(small):
    """A cache sized for n_head heads (as a GPT's) is not this model's n_kv_head-head cache."""
    from llmcourse.nn.kv_cache import KVCache

    cache = KVCache(2, 1, 4, 32, 8)
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 8\), but this model and idx need "
                                         r"\(2, 1, 2, 8\); make it with new_cache"):
        small(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    assert cache.length == 0


def test_a_full_cache_is_refused_before_anything_is_written(small):
    cache = small.new_cache(1, max_len=4)
    with torch.no_grad():
        small(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="KV cache is full"):
            small(torch.zeros(1, 2, dtype=torch.long), cache=cache)


# ------------------------------------------------------------------ conversion refusals


def _hf_config(**fields):
    cfg = llama_hf.config_to_hf(BASE).to_dict()
    cfg.update(fields)
    return cfg


@pytest.mark.parametrize("fields, match", [
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
     "RoPE scaling .*'linear'"),
    (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}),
     "RoPE scaling .*'llama3'"),
    (dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                           "partial_rotary_factor": 0.5}), "'partial_rotary_factor'"),
    (dict(rope_parameters=None, rope_theta=1e4, rope_scaling={"type": "dynamic", "factor": 2.0}),
     "RoPE scaling .*rope_scaling.*'dynamic'"),
    (dict(sliding_window=16), "sliding-window attention"),
    (dict(use_sliding_window=True, sliding_window=None), "sliding-window attention"),
    (dict(attention_bias=True), "attention_bias=True"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(head_dim=16), "head_dim=16"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(model_type="mistral"), "model_type 'mistral'"),
    (dict(num_hidden_layers=None), "not a usable Llama config"),
])
def test_config_from_hf_refuses_features_the_course_lacks(fields, match):
    with pytest.raises(ValueError, match=match):
        llama_hf.config_from_hf(_hf_config(**fields))


def test_older_config_fields_are_read():
    """transformers 4's config.json: rope_theta at the top level and rope_scaling null."""
    raw = _hf_config(rope_parameters=None, rope_theta=500.0, rope_scaling=None)
    assert llama_hf.config_from_hf(raw) == BASE


def test_from_hf_refuses_a_transformers_model_with_scaled_rope():
    from transformers import LlamaForCausalLM

    hf_cfg = llama_hf.config_to_hf(BASE)
    hf_cfg.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}
    with pytest.raises(ValueError, match="RoPE scaling"):
        llama_hf.from_hf(LlamaForCausalLM(hf_cfg))


@pytest.fixture(scope="module")
def hf_state():
    return llama_hf.to_hf_state_dict(random_llama(BASE))


def test_state_dict_refusals(hf_state):
    sd = dict(hf_state)
    sd.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(ValueError, match="lacks tensor 'model.layers.1.mlp.up_proj.weight'"):
        llama_hf.from_hf_state_dict(sd, BASE)
    sd = dict(hf_state, **{"model.layers.0.self_attn.q_proj.bias": torch.zeros(32)})
    with pytest.raises(ValueError, match="unexpected tensor 'model.layers.0.self_attn.q_proj"):
        llama_hf.from_hf_state_dict(sd, BASE)
    with pytest.raises(ValueError, match=r"k_proj.weight' has shape \(32, 32\) in the checkpoint"
                                         r" but \(16, 32\)"):
        llama_hf.from_hf_state_dict(hf_state, replace(BASE, n_kv_head=2))
    sd = dict(hf_state)
    sd.pop("lm_head.weight")
    with pytest.raises(ValueError, match="lacks tensor 'lm_head.weight' .*does not tie"):
        llama_hf.from_hf_state_dict(sd, BASE)
    with pytest.raises(ValueError, match="differs from model.embed_tokens.weight"):
        llama_hf.from_hf_state_dict(hf_state, replace(BASE, tie_embeddings=True))
    with pytest.raises(TypeError, match="mapping"):
        llama_hf.from_hf_state_dict([1, 2], BASE)


def test_state_dict_ignores_old_rope_buffers_and_fills_a_tied_head(hf_state):
    tied = replace(BASE, tie_embeddings=True)
    sd = {k: v for k, v in hf_state.items() if k != "lm_head.weight"}
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    model = llama_hf.from_hf_state_dict(sd, tied)
    assert torch.equal(model.lm_head.weight, hf_state["model.embed_tokens.weight"])
