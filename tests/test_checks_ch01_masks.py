"""Chapter 01's transfer exercises: a sliding-window causal mask and ALiBi's biases.

The references are checked against code no one here wrote (``transformers``' sliding-window
mask function and BLOOM's ALiBi tensor), then each checker must pass them and reject the
plausible wrong versions below with a message that helps.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from checker_helpers import assert_check_fails as fails
from hypothesis import given, settings
from hypothesis import strategies as st

from llmcourse.checks import ch01

# ---------------------------------------------------------------- sliding window: references


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 12), window=st.integers(1, 15))
def test_sliding_window_reference_matches_transformers(t, window):
    from transformers.masking_utils import sliding_window_causal_mask_function

    allowed = sliding_window_causal_mask_function(window)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]  # (T, 1), (1, T)
    want = allowed(torch.tensor(0), torch.tensor(0), i, j)  # (T, T), batch 0, head 0
    assert torch.equal(ch01.sliding_window_mask(t, window), want)


def test_sliding_window_of_t_or_more_is_the_causal_mask():
    from llmcourse.nn.attention import causal_mask

    for t in (1, 4, 7):
        for window in (t, t + 3):
            assert torch.equal(ch01.sliding_window_mask(t, window), causal_mask(t))
    assert torch.equal(ch01.sliding_window_mask(5, 1), torch.eye(5, dtype=torch.bool))


@pytest.mark.parametrize(("t", "window"), [(0, 2), (3, 0), (2.0, 1), (3, True)])
def test_sliding_window_reference_refuses_bad_sizes(t, window):
    with pytest.raises(ValueError, match="must be a positive int"):
        ch01.sliding_window_mask(t, window)


# ---------------------------------------------------------------- sliding window: checker


def test_sliding_window_solution_and_a_loop_pass(capsys):
    def loops(t, window):
        mask = torch.zeros(t, t, dtype=torch.bool)
        for i in range(t):
            for j in range(max(0, i - window + 1), i + 1):
                mask[i, j] = True
        return mask

    ch01.check_sliding_window_mask(ch01.sliding_window_mask)
    ch01.check_sliding_window_mask(loops)
    assert capsys.readouterr().out.count("✓ sliding_window_mask: 9 case(s)") == 2


def _window(keep):
    def fn(t, window):
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        return keep(i, j, window)

    return fn


@pytest.mark.parametrize("wrong", [
    _window(lambda i, j, w: (j <= i) & (i - j <= w)),  # one key too many
    _window(lambda i, j, w: (j <= i) & (i - j < w - 1)),  # one key too few
    _window(lambda i, j, w: (j < i) & (i - j <= w)),  # the query left out of its own window
    _window(lambda i, j, w: (i - j).abs() < w),  # no causal part: sees w - 1 tokens ahead
    _window(lambda i, j, w: (j >= i) & (j - i < w)),  # the window on the rows: looks ahead
    _window(lambda i, j, w: (j <= i) & (i - j >= w)),  # inverted: True where forbidden
], ids=["window-plus-one", "window-minus-one", "self-excluded", "no-causal",
        "rows-not-columns", "inverted"])
def test_sliding_window_wrong_versions_fail(wrong):
    fails(ch01.check_sliding_window_mask, wrong, "✗ sliding_window_mask", "differs",
          "expected:", "got:", "hint: row i is the query")


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.uint8])
def test_sliding_window_of_another_dtype_fails(dtype):
    fails(ch01.check_sliding_window_mask,
          lambda t, w: ch01.sliding_window_mask(t, w).to(dtype),
          f"dtype {dtype} != expected torch.bool", "hint:", "dtype torch.bool")


def test_sliding_window_float_mask_of_zeros_and_minus_inf_fails():
    # An additive mask is a fine thing to build, but not what this exercise asks for.
    def additive(t, w):
        keep = ch01.sliding_window_mask(t, w)
        return torch.zeros(t, t).masked_fill(~keep, float("-inf"))

    fails(ch01.check_sliding_window_mask, additive, "dtype torch.float32 != expected torch.bool")


# ---------------------------------------------------------------- ALiBi: references


def test_alibi_slopes_follow_the_paper_for_eight_heads():
    # Press et al. (2022), section 3: for 8 heads the slopes are 1/2, 1/4, ..., 1/256.
    assert ch01.alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]


@pytest.mark.parametrize("n_head", [1, 2, 4, 8, 16, 32])
def test_alibi_slopes_match_bloom(n_head):
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    torch.testing.assert_close(ch01.alibi_slopes(n_head),
                               _get_alibi_slopes(n_head, torch.device("cpu")).float())


@pytest.mark.parametrize(("n_head", "t"), [(4, 6), (8, 9), (16, 3)])
def test_alibi_bias_gives_blooms_attention_weights(n_head, t):
    # BLOOM adds m·j (one number per key); ours is -m·(i - j). They differ by m·i, the same for
    # every key of a row, which the softmax ignores: equal weights under the causal mask.
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    bloom = build_alibi_tensor(torch.ones(1, t, dtype=torch.long), n_head, torch.float32)
    bloom = bloom.view(n_head, 1, t)  # (h, 1, T): m_h · j
    causal = torch.ones(t, t, dtype=torch.bool).tril()  # (T, T)
    q, k = torch.randn(n_head, t, 8), torch.randn(n_head, t, 8)
    scores = q @ k.transpose(-2, -1) / math.sqrt(8)  # (h, T, T)
    want = torch.softmax((scores + bloom).masked_fill(~causal, float("-inf")), dim=-1)
    got = torch.softmax(scores + ch01.alibi_bias(n_head, t), dim=-1)
    torch.testing.assert_close(got, want)


def test_alibi_bias_in_torch_attention_equals_the_biased_softmax():
    q, k, v = torch.randn(2, 8, 5, 4), torch.randn(2, 8, 5, 4), torch.randn(2, 8, 5, 3)
    bias = ch01.alibi_bias(8, 5)  # (h, T, T), broadcasts over the batch
    want = torch.softmax(q @ k.transpose(-2, -1) / 2.0 + bias, dim=-1) @ v
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=bias), want)


@pytest.mark.parametrize("n_head", [0, 3, 6, -2, 2.0])
def test_alibi_reference_refuses_head_counts_that_are_not_powers_of_two(n_head):
    with pytest.raises(ValueError, match="power of two"):
        ch01.alibi_bias(n_head, 4)


# ---------------------------------------------------------------- ALiBi: checker


def _alibi(slope_of=lambda h, n: 2.0 ** (-8.0 * h / n), heads_from: int = 1, sign: float = -1.0,
           on_rows: bool = False, causal: bool = True, dtype=torch.float32):
    """A learner's ALiBi; the keyword arguments plant one mistake at a time."""

    def fn(n_head, t):
        h = torch.arange(heads_from, heads_from + n_head, dtype=torch.float32)
        slopes = slope_of(h, n_head)  # (n_head,)
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        if on_rows:
            i, j = j, i
        bias = sign * slopes[:, None, None] * (i - j).float()  # (n_head, T, T)
        if causal:
            bias = bias.masked_fill(j > i, float("-inf"))
        return bias.to(dtype)

    return fn


def test_alibi_solution_and_helper_pass(capsys):
    ch01.check_alibi_bias(ch01.alibi_bias)
    ch01.check_alibi_bias(_alibi())  # the wrong versions below differ from it in one place
    assert capsys.readouterr().out.count("✓ alibi_bias: 8 case(s)") == 2


@pytest.mark.parametrize(("wrong", "says"), [
    (_alibi(sign=1.0), "values differ"),  # a bonus for distance instead of a penalty
    (_alibi(slope_of=lambda h, n: 2.0 ** (-h / n)), "values differ"),  # 2^(-h/n)
    (_alibi(slope_of=lambda h, n: 2.0 ** (-8.0 * h / n), heads_from=0), "values differ"),
    (_alibi(slope_of=lambda h, n: 2.0 ** (-8.0 * (n + 1 - h) / n)), "values differ"),  # reversed
    (_alibi(slope_of=lambda h, n: 1.0 / (h + 1)), "values differ"),  # harmonic, not geometric
    (_alibi(on_rows=True), "something masked or filtered that should be kept"),
    (_alibi(causal=False), "something kept that should be masked"),
], ids=["wrong-sign", "slope-2^(-h/n)", "heads-from-0", "slopes-reversed", "harmonic-slopes",
        "rows-not-columns", "no-causal-minus-inf"])
def test_alibi_wrong_versions_fail(wrong, says):
    fails(ch01.check_alibi_bias, wrong, "✗ alibi_bias", says, "expected:", "got:",
          "hint: entry [h, i, j] = -m_h * (i - j)")


def test_alibi_bloom_style_bias_fails_as_a_bias():
    # m·j gives the same attention weights (see above) but is not the bias this exercise asks.
    def bloom_style(n_head, t):
        j = torch.arange(t, dtype=torch.float32)
        bias = ch01.alibi_slopes(n_head)[:, None, None] * j  # (h, 1, T)
        return bias.expand(n_head, t, t).masked_fill(~torch.ones(t, t).tril().bool(),
                                                     float("-inf"))

    fails(ch01.check_alibi_bias, bloom_style, "values differ")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_alibi_of_another_dtype_fails(dtype):
    fails(ch01.check_alibi_bias, _alibi(dtype=dtype), f"dtype {dtype} != expected torch.float32")


def test_alibi_boolean_mask_instead_of_a_bias_fails():
    fails(ch01.check_alibi_bias, lambda n, t: torch.ones(n, t, t, dtype=torch.bool).tril(),
          "dtype torch.bool != expected torch.float32")
