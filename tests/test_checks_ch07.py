"""Chapter 07 checkers: each passes the course's solution (and an independent one) and fails
the usual mistakes. The oracles are transformers' Conv1D, GPT2LMHeadModel and
TemperatureLogitsWarper, so passing them also checks the references against code no one here
wrote."""

from __future__ import annotations

import pytest
import torch
from checker_helpers import assert_check_fails
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


# ---------------------------------------------------------------- OpenAI's layout


def _from_openai(variables, *, transpose=True, squeeze=True, skip=(), reshape=False,
                 lm_head=True, swap_g_b=False, prefix="transformer.", cast=None):
    """A parameterised converter, to produce the wrong versions from one place."""
    leaf_names = {"w": "weight", "g": "weight", "b": "bias"}
    out = {}
    for name, t in variables.items():
        _, *scope, leaf = name.split("/")
        if leaf in ("wte", "wpe"):
            key = f"{prefix}{leaf}.weight"
        else:
            if swap_g_b and scope[-1].startswith("ln_"):
                leaf = {"g": "b", "b": "g"}[leaf]
            scope = [f"h.{s[1:]}" if s[0] == "h" and s[1:].isdigit() else s for s in scope]
            key = prefix + ".".join(scope) + "." + leaf_names[leaf]
        if name.endswith("/w"):
            t = t[0] if squeeze else t
            if reshape:
                t = t.reshape(t.shape[-1], t.shape[-2])
            elif transpose and not name.endswith(skip):
                t = t.transpose(-2, -1)
        out[key] = t if cast is None else t.to(cast)
    if lm_head:
        out["lm_head.weight"] = out[f"{prefix}wte.weight"]
    return out


def _via_hf(variables):
    """An independent route: rebuild HF's names and Conv1D layout, then the library's own
    converter (tested against transformers elsewhere)."""
    hf_sd = {}
    for name, t in variables.items():
        parts = name.split("/")[1:]
        if parts[-1] in ("wte", "wpe"):
            hf_sd[f"transformer.{parts[-1]}.weight"] = t
            continue
        scope = [f"h.{p[1:]}" if p[0] == "h" and p[1:].isdigit() else p for p in parts[:-1]]
        leaf = {"w": "weight", "g": "weight", "b": "bias"}[parts[-1]]
        hf_sd["transformer." + ".".join(scope) + "." + leaf] = t[0] if parts[-1] == "w" else t
    n_layer = 1 + max(int(k.split(".")[2]) for k in hf_sd if k.startswith("transformer.h."))
    wte, wpe = hf_sd["transformer.wte.weight"], hf_sd["transformer.wpe.weight"]
    cfg = GPTConfig(vocab_size=wte.shape[0], block_size=wpe.shape[0], n_layer=n_layer,
                    n_head=1, n_embd=wte.shape[1])  # heads do not change the tensors
    return {k: v.to(wte.dtype) for k, v in GPT.from_hf_state_dict(
        {k: v.float() for k, v in hf_sd.items()}, cfg).state_dict().items()}


@pytest.mark.parametrize("fn", [ch07.openai_to_course_state_dict, _from_openai, _via_hf])
def test_check_openai_to_course_passes_correct(fn, capsys):
    ch07.check_openai_to_course(fn)
    assert "✓ openai_to_course: 3 case(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("wrong", "says"), [
    pytest.param(lambda v: _from_openai(v, transpose=False),
                 "nn.Linear stores (out, in)", id="no-transpose"),
    pytest.param(lambda v: _from_openai(v, squeeze=False),
                 "drop the kernel's leading width-1 axis", id="not-squeezed"),
    pytest.param(lambda v: _from_openai(v, skip=("attn/c_proj/w",)),
                 "values differ", id="square-attn-c_proj-untransposed"),
    pytest.param(lambda v: _from_openai(v, skip=("mlp/c_proj/w",)),
                 "nn.Linear stores (out, in)", id="mlp-c_proj-untransposed"),
    pytest.param(lambda v: _from_openai(v, reshape=True), "values differ",
                 id="reshape-not-transpose"),
    pytest.param(lambda v: _from_openai(v, lm_head=False),
                 "GPT-2 ties it to the token embedding", id="tied-lm_head-dropped"),
    pytest.param(lambda v: _from_openai(v, swap_g_b=True), "values differ",
                 id="layernorm-g-b-swapped"),
    pytest.param(lambda v: _from_openai(v, prefix=""), "lacks 'transformer.wte.weight'",
                 id="prefix-missing"),
    pytest.param(lambda v: _from_openai(v, cast=torch.float32),
                 "torch.float32 but the checkpoint's tensors are torch.float16",
                 id="half-checkpoint-upcast"),
    pytest.param(lambda v: _from_openai(v, cast=torch.float16),
                 "torch.float16 but the checkpoint's tensors are torch.float32",
                 id="downcast-to-half"),
    pytest.param(lambda v: {k: v.tolist() for k, v in _from_openai(v).items()},
                 "is a list, not a tensor", id="lists"),
    pytest.param(lambda v: list(_from_openai(v).values()), "expected a dict",
                 id="not-a-dict"),
])
def test_check_openai_to_course_fails_wrong(wrong, says):
    message = assert_check_fails(ch07.check_openai_to_course, wrong,
                                 "hint: model/ → transformer.", says)
    assert "✗ openai_to_course" in message


def test_square_c_proj_untransposed_has_the_right_shape_and_wrong_logits():
    """Why the checker compares logits and not only shapes: the square attn.c_proj kernel, left
    untransposed, has the shape the model expects."""
    from transformers import GPT2LMHeadModel

    cfg = GPTConfig(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(1)
    hf = GPT2LMHeadModel(cfg.to_hf()).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.3 * torch.randn_like(p))
    variables = ch07._openai_layout(hf.state_dict(), cfg.n_layer)
    ids = torch.randint(40, (1, 8))
    model = GPT(cfg).eval()
    model.load_state_dict(_from_openai(variables, skip=("attn/c_proj/w",)))
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0], hf(ids).logits, atol=1e-3)
        model.load_state_dict(ch07.openai_to_course_state_dict(variables))
        torch.testing.assert_close(model(ids)[0], hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_openai_layout_matches_openai_model_py_shapes():
    """The variables the checker hands out have the names and shapes of OpenAI's src/model.py:
    conv1d kernels [1, nx, nf], norms g and b, wte (V, C) and wpe (T, C), no output layer."""
    cfg = GPTConfig(vocab_size=30, block_size=5, n_layer=2, n_head=2, n_embd=8)
    variables = ch07._Case(cfg, torch.float32, torch.Generator().manual_seed(0)).variables
    c = cfg.n_embd
    assert variables["model/wte"].shape == (30, c) and variables["model/wpe"].shape == (5, c)
    assert variables["model/h1/attn/c_attn/w"].shape == (1, c, 3 * c)
    assert variables["model/h1/mlp/c_fc/w"].shape == (1, c, 4 * c)
    assert variables["model/h1/mlp/c_proj/w"].shape == (1, 4 * c, c)
    assert variables["model/h0/ln_2/g"].shape == (c,) and "model/ln_f/b" in variables
    assert len(variables) == 2 + 2 * 12 + 2
    assert not any("lm_head" in k or "/h2/" in k for k in variables)


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


CHECKERS = [ch07.check_conv1d_to_linear, ch07.check_openai_to_course,
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
    ch07.check_openai_to_course(ch07.openai_to_course_state_dict)
    ch07.check_next_token_top_k(ch07.next_token_top_k)
    assert torch.equal(torch.rand(3), expected)
