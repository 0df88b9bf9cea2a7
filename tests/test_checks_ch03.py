"""Chapter 03 checkers: each passes the course's solution (and an independent one) and fails the
usual mistakes. The checkers' oracles are torch and transformers, so passing them also checks
the course's references against code no one here wrote."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmcourse.checks import CheckFailed, ch03
from llmcourse.models.gpt import GPT, GPTConfig, parameter_count
from llmcourse.nn.block import Block
from llmcourse.nn.norms import layer_norm

# ---------------------------------------------------------------- layer_norm


def _ln(x, w, b, eps, *, unbiased=False, eps_outside=False, dim=-1):
    """A parameterised LayerNorm, to produce the wrong versions from one place."""
    mean = x.mean(dim=dim, keepdim=True)
    var = x.var(dim=dim, keepdim=True, unbiased=unbiased)
    denom = var.sqrt() + eps if eps_outside else (var + eps).sqrt()
    return (x - mean) / denom * w + b


@pytest.mark.parametrize("fn", [
    layer_norm,
    lambda x, w, b, eps: F.layer_norm(x, w.shape, w, b, eps),
    _ln,
])
def test_check_layer_norm_passes_correct(fn, capsys):
    ch03.check_layer_norm(fn)
    assert "✓ layer_norm: 6 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda x, w, b, eps: _ln(x, w, b, eps, unbiased=True), id="unbiased-variance"),
    pytest.param(lambda x, w, b, eps: _ln(x, w, b, eps, eps_outside=True), id="eps-outside-sqrt"),
    pytest.param(lambda x, w, b, eps: _ln(x, w, b, 0.0), id="no-eps"),
    pytest.param(lambda x, w, b, eps: _ln(x, w, b, 1e-5), id="eps-hard-coded"),
    pytest.param(lambda x, w, b, eps: _ln(x, w, b, eps, dim=0), id="wrong-axis"),
    pytest.param(lambda x, w, b, eps: _ln(x, w, 0.0, eps), id="no-bias"),
    pytest.param(lambda x, w, b, eps: _ln(x, 1.0, b, eps), id="no-weight"),
    pytest.param(lambda x, w, b, eps: _ln(x, w, b, eps) * w, id="weight-twice"),
    pytest.param(lambda x, w, b, eps: (x - x.mean(-1, keepdim=True)) * w + b, id="mean-only"),
])
def test_check_layer_norm_fails_wrong(wrong):
    with pytest.raises(CheckFailed, match="hint: over the last axis"):
        ch03.check_layer_norm(wrong)


def test_check_layer_norm_not_implemented():
    def todo(x, w, b, eps):
        raise NotImplementedError("exercise")

    with pytest.raises(CheckFailed, match="not implemented yet"):
        ch03.check_layer_norm(todo)


# ---------------------------------------------------------------- pre-LN block


def _post_ln(x, ln_1, attn, ln_2, mlp):
    h = ln_1(x + attn(x))
    return ln_2(h + mlp(h))


def _residual_from_normalised(x, ln_1, attn, ln_2, mlp):
    h = ln_1(x)
    h = h + attn(h)
    g = ln_2(h)
    return g + mlp(g)


def _parallel(x, ln_1, attn, ln_2, mlp):  # GPT-J's arrangement, not GPT-2's
    return x + attn(ln_1(x)) + mlp(ln_2(x))


@pytest.mark.parametrize("fn", [
    ch03.pre_ln_block,
    lambda x, ln_1, attn, ln_2, mlp: (lambda h: h + mlp(ln_2(h)))(x + attn(ln_1(x))),
])
def test_check_pre_ln_block_passes_correct(fn, capsys):
    ch03.check_pre_ln_block(fn)
    assert "✓ pre_ln_block: 4 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(_post_ln, id="post-LN"),
    pytest.param(_residual_from_normalised, id="residual-from-normalised"),
    pytest.param(_parallel, id="parallel"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: mlp(ln_2(attn(ln_1(x)))), id="no-residuals"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: (lambda h: mlp(ln_2(h)))(x + attn(ln_1(x))),
                 id="no-second-residual"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: ch03.pre_ln_block(x, ln_1, attn, ln_1, mlp),
                 id="ln_1-twice"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: ch03.pre_ln_block(x, ln_2, attn, ln_1, mlp),
                 id="norms-swapped"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: ln_2(ch03.pre_ln_block(x, ln_1, attn, ln_2, mlp)),
                 id="extra-final-norm"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: (lambda h: h + attn(ln_2(h)))(x + mlp(ln_1(x))),
                 id="mlp-before-attention"),
])
def test_check_pre_ln_block_fails_wrong(wrong):
    with pytest.raises(CheckFailed, match="hint: pre-LN"):
        ch03.check_pre_ln_block(wrong)


def test_pre_ln_block_reference_equals_course_block():
    """The chapter's solution, fed the sublayers of llmcourse's Block, is that Block's forward
    (pre-LN); the post-LN Block is something else."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    pre = Block(32, 4, norm_first=True).eval()
    with torch.no_grad():
        got = ch03.pre_ln_block(x, pre.ln_1, pre.attn, pre.ln_2, pre.mlp)
        torch.testing.assert_close(got, pre(x))
        post = Block(32, 4, norm_first=False).eval()
        post.load_state_dict(pre.state_dict())
        assert not torch.allclose(post(x), got, atol=1e-3)


# ---------------------------------------------------------------- parameter count


def _count(cfg, *, tied=True, ln=True, ln_f=True, biases=True, wpe=True, mlp=8):
    v, t, c, n = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    per_block = (4 + mlp) * c * c + (9 * c if biases else 0) + (4 * c if ln else 0)
    return (v * c + (0 if tied else v * c) + (t * c if wpe else 0) + n * per_block
            + (2 * c if ln_f else 0))


@pytest.mark.parametrize("fn", [parameter_count, _count])
def test_check_parameter_count_passes_correct(fn, capsys):
    ch03.check_parameter_count(fn)
    assert "✓ parameter_count: 6 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda cfg: _count(cfg, tied=False), id="untied-lm-head"),
    pytest.param(lambda cfg: _count(cfg, ln=False), id="no-layernorm-params"),
    pytest.param(lambda cfg: _count(cfg, ln_f=False), id="no-final-layernorm"),
    pytest.param(lambda cfg: _count(cfg, biases=False), id="no-biases"),
    pytest.param(lambda cfg: _count(cfg, wpe=False), id="no-position-embeddings"),
    pytest.param(lambda cfg: _count(cfg, mlp=4), id="mlp-4C2"),
    pytest.param(lambda cfg: float(_count(cfg)) + 0.5, id="not-an-integer"),
])
def test_check_parameter_count_fails_wrong(wrong):
    with pytest.raises(CheckFailed, match="hint: count wte once"):
        ch03.check_parameter_count(wrong)


def test_parameter_count_oracle_matches_built_models():
    """The checker's oracle (HF on the meta device) equals our GPT built for real."""
    cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32)
    assert ch03._hf_num_parameters(cfg) == GPT(cfg).num_parameters()
    assert ch03._hf_num_parameters(GPTConfig()) == 124_439_808  # GPT-2 small, published


# ---------------------------------------------------------------- all checkers


@pytest.mark.parametrize("check", [ch03.check_layer_norm, ch03.check_pre_ln_block,
                                   ch03.check_parameter_count])
def test_checkers_reject_a_non_function(check):
    with pytest.raises(TypeError, match="pass the function itself"):
        check(42)


def test_checkers_do_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch03.check_layer_norm(layer_norm)
    ch03.check_pre_ln_block(ch03.pre_ln_block)
    assert torch.equal(torch.rand(3), expected)
