"""Chapter 07 checkers: each passes the course's solution (and an independent one) and fails
the usual mistakes. The oracles are transformers' Conv1D, GPT2LMHeadModel and
TemperatureLogitsWarper, so passing them also checks the references against code no one here
wrote."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmcourse.checks import CheckFailed, ch07
from llmcourse.models.gpt import GPT, GPTConfig

# ---------------------------------------------------------------- Conv1D → Linear


def _linear(conv, *, transpose=True, reshape=False, bias=True, swap=False):
    """A parameterised conversion, to produce the wrong versions from one place."""
    nx, nf = conv.weight.shape
    linear = nn.Linear(nf, nx) if swap else nn.Linear(nx, nf, bias=bias)
    with torch.no_grad():
        if swap:
            linear.weight.copy_(conv.weight)
            return linear
        w = conv.weight.t() if transpose else conv.weight
        if reshape:
            w = conv.weight.reshape(nf, nx)
        linear.weight.copy_(w)
        if bias:
            linear.bias.copy_(conv.bias)
    return linear


def _linear_by_assignment(conv):
    linear = nn.Linear(*conv.weight.shape)
    linear.weight = nn.Parameter(conv.weight.detach().t().contiguous())
    linear.bias = nn.Parameter(conv.bias.detach().clone())
    return linear


@pytest.mark.parametrize("fn", [ch07.conv1d_to_linear, _linear, _linear_by_assignment])
def test_check_conv1d_to_linear_passes_correct(fn, capsys):
    ch07.check_conv1d_to_linear(fn)
    assert "✓ conv1d_to_linear: 5 case(s)" in capsys.readouterr().out


def _zero_bias(conv):
    linear = _linear(conv)
    with torch.no_grad():
        linear.bias.zero_()
    return linear


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda conv: _linear(conv, transpose=False), id="no-transpose"),
    pytest.param(lambda conv: _linear(conv, reshape=True), id="reshape-not-transpose"),
    pytest.param(lambda conv: _linear(conv, bias=False), id="no-bias"),
    pytest.param(_zero_bias, id="bias-not-copied"),
    pytest.param(lambda conv: _linear(conv, swap=True), id="in-out-swapped"),
    pytest.param(lambda conv: nn.Linear(*conv.weight.shape), id="weights-not-copied"),
    pytest.param(lambda conv: conv, id="returns-the-conv1d"),
])
def test_check_conv1d_to_linear_fails_wrong(wrong):
    with pytest.raises(CheckFailed, match="hint: Conv1D computes x @ W"):
        ch07.check_conv1d_to_linear(wrong)


def test_conv1d_to_linear_square_case_needs_the_transpose():
    """The square case alone tells a transpose from a plain copy (same shape, other numbers)."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(16, 16)
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(ch07.conv1d_to_linear(conv)(x), conv(x))
        assert not torch.allclose(_linear(conv, transpose=False)(x), conv(x), atol=1e-3)


# ---------------------------------------------------------------- state dict


def _convert(sd, *, skip=(), everything=False, drop_lm_head=False):
    out = {}
    for name, t in sd.items():
        if drop_lm_head and name == "lm_head.weight":
            continue
        flip = t.dim() == 2 if everything else name.endswith(ch07.CONV1D_WEIGHTS)
        if any(name.endswith(s) for s in skip):
            flip = False
        out[name] = t.t() if flip else t
    return out


def _via_from_hf_state_dict(sd):
    """An independent route: the library's own converter (tested against HF elsewhere)."""
    cfg = ch07._STATE_CONFIGS[[c.vocab_size for c in ch07._STATE_CONFIGS].index(
        sd["transformer.wte.weight"].shape[0])]
    return GPT.from_hf_state_dict(sd, cfg).state_dict()


@pytest.mark.parametrize("fn", [ch07.hf_to_course_state_dict, _convert, _via_from_hf_state_dict])
def test_check_state_dict_conversion_passes_correct(fn, capsys):
    ch07.check_state_dict_conversion(fn)
    assert "✓ state_dict_conversion: 3 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda sd: dict(sd), id="nothing-transposed"),
    pytest.param(lambda sd: _convert(sd, skip=("attn.c_proj.weight",)), id="attn-c_proj-kept"),
    pytest.param(lambda sd: _convert(sd, skip=("mlp.c_proj.weight",)), id="mlp-c_proj-kept"),
    pytest.param(lambda sd: _convert(sd, everything=True), id="every-matrix-transposed"),
    pytest.param(lambda sd: _convert(sd, drop_lm_head=True), id="lm_head-dropped"),
    pytest.param(lambda sd: {k: v for k, v in _convert(sd).items() if ".ln_" not in k},
                 id="layernorms-dropped"),
    pytest.param(lambda sd: {k.removeprefix("transformer."): v for k, v in _convert(sd).items()},
                 id="prefix-stripped"),
    pytest.param(lambda sd: list(_convert(sd).values()), id="not-a-dict"),
])
def test_check_state_dict_conversion_fails_wrong(wrong):
    with pytest.raises(CheckFailed, match="hint: keep every name"):
        ch07.check_state_dict_conversion(wrong)


def test_square_attn_c_proj_loads_but_gives_wrong_logits():
    """Why the checker compares logits and not just loading: a square weight left untransposed
    loads without complaint."""
    from transformers import GPT2LMHeadModel

    cfg = GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(1)
    hf = GPT2LMHeadModel(cfg.to_hf()).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(40, (1, 8))
    model = GPT(cfg).eval()
    model.load_state_dict(_convert(hf.state_dict(), skip=("attn.c_proj.weight",)))
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0], hf(ids).logits, atol=1e-3)
        model.load_state_dict(ch07.hf_to_course_state_dict(hf.state_dict()))
        torch.testing.assert_close(model(ids)[0], hf(ids).logits, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- top-k next tokens


def _top_k(logits, k, temperature, *, position=-1, mul=False, renorm=False, dim=-1,
           ascending=False, log=False, after=False):
    z = logits[:, position, :]
    if not after:
        z = z * temperature if mul else z / temperature
    probs = torch.softmax(z, dim=dim) if dim == -1 else torch.softmax(logits / temperature,
                                                                       dim=1)[:, -1, :]
    if after:
        probs = probs ** (1 / temperature)
    if log:
        probs = probs.log()
    values, ids = torch.topk(probs, k, dim=-1, largest=not ascending)
    if renorm:
        values = values / values.sum(-1, keepdim=True)
    return values, ids


def _top_k_by_sort(logits, k, temperature):
    probs = torch.softmax(logits[:, -1] / temperature, dim=-1)
    values, ids = probs.sort(dim=-1, descending=True)
    return values[:, :k], ids[:, :k]


@pytest.mark.parametrize("fn", [ch07.next_token_top_k, _top_k, _top_k_by_sort])
def test_check_next_token_top_k_passes_correct(fn, capsys):
    ch07.check_next_token_top_k(fn)
    assert "✓ next_token_top_k: 7 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    pytest.param(lambda z, k, t: _top_k(z, k, t, position=0), id="first-position"),
    pytest.param(lambda z, k, t: _top_k(z, k, 1.0), id="temperature-ignored"),
    pytest.param(lambda z, k, t: _top_k(z, k, t, mul=True), id="temperature-multiplies"),
    pytest.param(lambda z, k, t: _top_k(z, k, t, after=True), id="temperature-after-softmax"),
    pytest.param(lambda z, k, t: _top_k(z, k, t, renorm=True), id="renormalised-over-k"),
    pytest.param(lambda z, k, t: _top_k(z, k, t, dim=1), id="softmax-over-positions"),
    pytest.param(lambda z, k, t: _top_k(z, k, t, ascending=True), id="least-likely"),
    pytest.param(lambda z, k, t: _top_k(z, k, t, log=True), id="log-probs"),
    pytest.param(lambda z, k, t: torch.topk(z[:, -1] / t, k), id="logits-not-probs"),
    pytest.param(lambda z, k, t: tuple(x.tolist() for x in _top_k(z, k, t)), id="lists"),
])
def test_check_next_token_top_k_fails_wrong(wrong):
    with pytest.raises(CheckFailed, match="hint: take the LAST position"):
        ch07.check_next_token_top_k(wrong)


# ---------------------------------------------------------------- all checkers


CHECKERS = [ch07.check_conv1d_to_linear, ch07.check_state_dict_conversion,
            ch07.check_next_token_top_k]


@pytest.mark.parametrize("check", CHECKERS)
def test_checkers_reject_a_non_function(check):
    with pytest.raises(TypeError, match="pass the function itself"):
        check(42)


@pytest.mark.parametrize("check", CHECKERS)
def test_checkers_report_an_unfinished_exercise(check):
    def todo(*args):
        raise NotImplementedError("exercise")

    with pytest.raises(CheckFailed, match="not implemented yet"):
        check(todo)


def test_checkers_do_not_touch_global_rng():
    """The learner's solutions build nn.Linear and GPT layers (random init): the checkers must
    leave the notebook's random stream where it was all the same."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ch07.check_conv1d_to_linear(_linear)
    ch07.check_state_dict_conversion(ch07.hf_to_course_state_dict)
    ch07.check_next_token_top_k(ch07.next_token_top_k)
    assert torch.equal(torch.rand(3), expected)
