"""Chapter 03 checkers: each passes correct versions (the course's and independent ones) and
fails the usual mistakes with a message that says what differs. The checkers' oracles are
torch's own functions and layers, so passing them also checks the course's references against
code no one here wrote."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_check_fails
from torch import nn

from llmcourse.checks import CheckFailed, ch03
from llmcourse.models.gpt import GPT, GPTConfig, parameter_count
from llmcourse.nn.block import Block

# ---------------------------------------------------------------- RMSNorm


def _rms(x, w, eps, *, centre=False, eps_outside=False, dim=-1, p=2):
    """A parameterised RMSNorm, to produce the wrong versions from one place."""
    if centre:
        x = x - x.mean(dim=dim, keepdim=True)
    ms = x.abs().pow(p).mean(dim=dim, keepdim=True)
    denom = ms.sqrt() + eps if eps_outside else (ms + eps).sqrt()
    return x / denom * w


@pytest.mark.parametrize("fn", [
    _rms,
    lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,
    lambda x, w, eps: nn.functional.rms_norm(x, w.shape, w, eps),
])
def test_check_rms_norm_passes_correct(fn, capsys):
    ch03.check_rms_norm(fn)
    assert "✓ rms_norm: 6 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, fragment", [
    pytest.param(lambda x, w, eps: _rms(x, w, eps, centre=True), "values differ",
                 id="mean-subtracted"),
    pytest.param(lambda x, w, eps: _rms(x, w, eps, eps_outside=True), "values differ",
                 id="eps-outside-sqrt"),
    pytest.param(lambda x, w, eps: _rms(x, w, 0.0), "values differ", id="no-eps"),
    pytest.param(lambda x, w, eps: _rms(x, w, 1e-5), "values differ", id="eps-hard-coded"),
    pytest.param(lambda x, w, eps: _rms(x, w, eps, dim=0), "values differ", id="wrong-axis"),
    pytest.param(lambda x, w, eps: _rms(x, 1.0, eps), "values differ", id="no-weight"),
    pytest.param(lambda x, w, eps: _rms(x, w, eps, p=1), "values differ", id="mean-abs"),
    pytest.param(lambda x, w, eps: x / (x.pow(2).sum(-1, keepdim=True) + eps).sqrt() * w,
                 "values differ", id="sum-not-mean"),
    pytest.param(lambda x, w, eps: x / (x.pow(2).mean(-1, keepdim=True) + eps) * w,
                 "values differ", id="no-sqrt"),
    pytest.param(lambda x, w, eps: F.layer_norm(x, w.shape, w, None, eps), "values differ",
                 id="layer-norm"),
    pytest.param(lambda x, w, eps: _rms(x.float(), w.float(), eps), "dtype torch.float32",
                 id="computed-in-float32"),
    pytest.param(lambda x, w, eps: _rms(x.double(), w.double(), eps), "dtype torch.float64",
                 id="returned-float64"),
])
def test_check_rms_norm_fails_wrong(wrong, fragment):
    assert_check_fails(ch03.check_rms_norm, wrong, "✗ rms_norm", fragment,
                       "hint: over the last axis")


def test_check_rms_norm_not_implemented():
    def todo(x, w, eps):
        raise NotImplementedError("exercise")

    with pytest.raises(CheckFailed, match="not implemented yet"):
        ch03.check_rms_norm(todo)


# ---------------------------------------------------------------- post-LN block


def _post_ln(x, ln_1, attn, ln_2, mlp):
    h = ln_1(x + attn(x))
    return ln_2(h + mlp(h))


def _pre_ln(x, ln_1, attn, ln_2, mlp):
    h = x + attn(ln_1(x))
    return h + mlp(ln_2(h))


def _norm_before_sublayer(x, ln_1, attn, ln_2, mlp):  # post-LN's norms moved in front
    h = ln_1(x) + attn(ln_1(x))
    return ln_2(h) + mlp(ln_2(h))


def _sandwich(x, ln_1, attn, ln_2, mlp):  # the sublayer's output normalised, not the sum
    h = x + ln_1(attn(x))
    return h + ln_2(mlp(h))


@pytest.mark.parametrize("fn", [
    _post_ln,
    lambda x, ln_1, attn, ln_2, mlp: (lambda h: ln_2(h + mlp(h)))(ln_1(x + attn(x))),
])
def test_check_post_ln_block_passes_correct(fn, capsys):
    ch03.check_post_ln_block(fn)
    assert "✓ post_ln_block: 4 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(_pre_ln, id="pre-LN"),
    pytest.param(_norm_before_sublayer, id="norm-before-sublayer"),
    pytest.param(_sandwich, id="norm-on-sublayer-output"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: ln_2(mlp(ln_1(attn(x)))), id="no-residuals"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: (lambda h: ln_2(mlp(h)))(ln_1(x + attn(x))),
                 id="no-second-residual"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: (lambda h: h + mlp(h))(ln_1(x + attn(x))),
                 id="no-second-norm"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: _post_ln(x, ln_1, attn, ln_1, mlp),
                 id="ln_1-twice"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: _post_ln(x, ln_2, attn, ln_1, mlp),
                 id="norms-swapped"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: _post_ln(x, ln_1, mlp, ln_2, attn),
                 id="mlp-before-attention"),
    pytest.param(lambda x, ln_1, attn, ln_2, mlp: _post_ln(ln_1(x), ln_1, attn, ln_2, mlp),
                 id="extra-norm-in-front"),
])
def test_check_post_ln_block_fails_wrong(wrong):
    assert_check_fails(ch03.check_post_ln_block, wrong, "✗ post_ln_block", "values differ",
                       "hint: post-LN")


def test_post_ln_block_solution_equals_course_block():
    """The exercise's solution, fed the sublayers of llmcourse's post-LN Block, is that Block's
    forward; so the chapter's Block(norm_first=False) passes the same oracle."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    post = Block(32, 4, norm_first=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(_post_ln(x, post.ln_1, post.attn, post.ln_2, post.mlp),
                                   post(x))


def test_post_ln_checker_oracle_is_the_torch_layer_forward():
    """The oracle runs the whole layer; the learner gets its sublayers: the two agree for the
    right answer on a fresh layer (not only on the checker's own cases)."""
    gen = torch.Generator().manual_seed(5)
    layer = ch03._torch_layer(16, 2, gen)
    x = torch.randn(2, 7, 16, generator=gen)
    mask = nn.Transformer.generate_square_subsequent_mask(7)
    with torch.no_grad():
        ours = _post_ln(x, layer.norm1, ch03._CausalSelfAttention(layer.self_attn), layer.norm2,
                        ch03._FeedForward(layer))
        torch.testing.assert_close(ours, layer(x, src_mask=mask, is_causal=True))


# ---------------------------------------------------------------- parameter count


def _count(cfg, tied, *, ln_f=True, wpe=True, untied_twice=False, ln_beta_always=False,
           ln_gamma=True, mlp=8):
    v, t, c, n = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_layer
    ln = (2 * c if (cfg.bias or ln_beta_always) else c) if ln_gamma else (
        c if cfg.bias else 0)
    per_block = (4 + mlp) * c * c + (9 * c if cfg.bias else 0) + 2 * ln
    head = v * c if (not tied or untied_twice) else 0
    return v * c + (t * c if wpe else 0) + n * per_block + (ln if ln_f else 0) + head


def test_count_helper_is_the_library_formula():
    for cfg, _ in ch03._COUNT_CASES:
        assert _count(cfg, True) == parameter_count(cfg)


@pytest.mark.parametrize("fn", [_count, ch03.torch_parameter_count])
def test_check_parameter_count_passes_correct(fn, capsys):
    ch03.check_parameter_count(fn)
    assert "✓ parameter_count: 7 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, fragment", [
    pytest.param(lambda cfg, tied: _count(cfg, tied, untied_twice=True),
                 "the tied output layer counted as a second matrix",
                 id="tied-matrix-counted-twice"),
    pytest.param(lambda cfg, tied: _count(cfg, True),
                 "the untied output layer's own V·C matrix left out", id="untied-head-forgotten"),
    pytest.param(lambda cfg, tied: _count(cfg, tied, ln_f=False), "the final LayerNorm?",
                 id="no-final-layernorm"),
    pytest.param(lambda cfg, tied: _count(cfg, tied, wpe=False), "the position embeddings?",
                 id="no-position-embeddings"),
    pytest.param(lambda cfg, tied: _count(cfg, tied, ln_beta_always=True),
                 "per block and 1·C in the final LayerNorm more",
                 id="layernorm-beta-without-biases"),
    pytest.param(lambda cfg, tied: _count(cfg, tied, ln_gamma=False),
                 "per block and 1·C in the final LayerNorm fewer",
                 id="layernorm-gamma-dropped"),
    pytest.param(lambda cfg, tied: _count(cfg, tied, mlp=4), "values differ", id="mlp-4C2"),
    pytest.param(lambda cfg, tied: parameter_count(cfg), "values differ", id="ignores-tied"),
    pytest.param(lambda cfg, tied: float(_count(cfg, tied)), "expected an int, got float",
                 id="returns-float"),
    pytest.param(lambda cfg, tied: _count(cfg, tied) / 1, "expected an int, got float",
                 id="true-division"),
])
def test_check_parameter_count_fails_wrong(wrong, fragment):
    assert_check_fails(ch03.check_parameter_count, wrong, "✗ parameter_count", fragment,
                       "per block 12·C² weights")


def _untie(model: GPT) -> GPT:
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    return model


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_torch_count_equals_the_course_gpt(bias, tied):
    """The checker's oracle (torch's layers on the meta device) equals the course's GPT built
    for real, with and without biases, tied or not."""
    cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=bias)
    model = GPT(cfg) if tied else _untie(GPT(cfg))
    assert ch03.torch_parameter_count(cfg, tied) == model.num_parameters()


def test_torch_count_equals_transformers():
    """... and Hugging Face's GPT-2, tied and untied (no biases is not a GPT-2 option)."""
    from transformers import GPT2LMHeadModel

    cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=32)
    for tied in (True, False):
        hf_cfg = cfg.to_hf()
        hf_cfg.tie_word_embeddings = tied
        hf = GPT2LMHeadModel(hf_cfg)
        assert ch03.torch_parameter_count(cfg, tied) == hf.num_parameters()
    assert ch03.torch_parameter_count(GPTConfig(), True) == 124_439_808  # published
    assert ch03.torch_parameter_count(GPTConfig(), False) == 124_439_808 + 50257 * 768


# ---------------------------------------------------------------- all checkers


@pytest.mark.parametrize("check", [ch03.check_rms_norm, ch03.check_post_ln_block,
                                   ch03.check_parameter_count])
def test_checkers_reject_a_non_function(check):
    with pytest.raises(TypeError, match="pass the function itself"):
        check(42)


def test_checkers_do_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch03.check_rms_norm(_rms)
    ch03.check_post_ln_block(_post_ln)
    ch03.check_parameter_count(_count)
    assert torch.equal(torch.rand(3), expected)
