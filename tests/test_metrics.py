"""``llmcourse.decoding.metrics``: n-gram measures against independent counts and properties; the
mean
log-likelihood against ``transformers``' own loss on the same weights."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from llmcourse.decoding.metrics import distinct_n, mean_log_likelihood, ngrams, repetition_rate
from llmcourse.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("quiet_transformers")

texts = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=30), min_size=1, max_size=4)


def _counts(texts: list[list[int]], n: int) -> list[Counter]:
    """n-gram counts per text, built with string keys (a different route from the module)."""
    return [Counter(",".join(map(str, t[i:i + n])) for i in range(len(t) - n + 1)) for t in texts]


@given(texts=texts, n=st.integers(1, 4))
def test_repetition_rate_against_counter(texts, n):
    counts = _counts(texts, n)
    total = sum(sum(c.values()) for c in counts)
    if total == 0:
        with pytest.raises(ValueError, match="no text"):
            repetition_rate(texts, n)
        return
    repeats = sum(v - 1 for c in counts for v in c.values())  # every copy after the first
    assert repetition_rate(texts, n) == pytest.approx(repeats / total)


@given(texts=texts, n=st.integers(1, 4))
def test_distinct_n_against_counter(texts, n):
    counts = _counts(texts, n)
    total = sum(sum(c.values()) for c in counts)
    if total == 0:
        with pytest.raises(ValueError, match="no text"):
            distinct_n(texts, n)
        return
    pooled = Counter()
    for c in counts:
        pooled.update(c)
    assert distinct_n(texts, n) == pytest.approx(len(pooled) / total)


@given(length=st.integers(2, 40), n=st.integers(1, 4))
def test_extremes(length, n):
    assume(length >= n)  # a sequence shorter than n has no n-gram: not this test's case
    constant, unique = [7] * length, list(range(length))
    windows = length - n + 1
    assert repetition_rate(constant, n) == pytest.approx((windows - 1) / windows)
    assert distinct_n(constant, n) == pytest.approx(1 / windows)
    assert repetition_rate(unique, n) == 0.0
    assert distinct_n(unique, n) == 1.0


def test_input_forms_agree():
    rows = [[1, 2, 1, 2, 3], [4, 1, 2, 1, 2]]
    forms = [rows, torch.tensor(rows), [torch.tensor(r) for r in rows]]
    assert len({repetition_rate(f, 2) for f in forms}) == 1
    assert len({distinct_n(f, 2) for f in forms}) == 1
    assert repetition_rate(torch.tensor(rows[0]), 2) == repetition_rate(rows[0], 2) == 0.25


def test_ngrams():
    assert ngrams([1, 2, 3], 2) == [(1, 2), (2, 3)]
    assert ngrams([1], 2) == []


@pytest.mark.parametrize("bad,err", [(([1, 2], 0), ValueError), (([1, 2], True), ValueError),
                                     (("abc", 1), TypeError), ((torch.ones(3), 1), ValueError),
                                     (([[1, 2], "ab"], 1), TypeError),
                                     (([1.5, 2.0], 1), TypeError)])
def test_bad_input(bad, err):
    for fn in (repetition_rate, distinct_n):
        with pytest.raises(err):
            fn(*bad)


@pytest.fixture(scope="module")
def models(quiet_transformers):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(5)
    return model, model.to_hf()


def _hf_mean_ll(hf, ids, mask, start):
    """-(HF's mean cross-entropy) over the same tokens, one row at a time."""
    out = []
    for i in range(ids.shape[0]):
        row, m = ids[i:i + 1], mask[i:i + 1]
        labels = row.masked_fill(m == 0, -100)
        labels[:, :start] = -100
        first_real = int(m[0].nonzero()[0])
        labels[:, first_real] = -100  # no real context before it
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out.append(-hf(row, attention_mask=m, position_ids=pos, labels=labels).loss)
    return torch.stack(out)


@pytest.mark.parametrize("start", [1, 4, 9])
def test_mean_log_likelihood_matches_hf_loss(models, start):
    model, hf = models
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, -2:] = 0  # padding after an EOS
    ours = mean_log_likelihood(model, ids, start=start, attention_mask=mask)
    torch.testing.assert_close(ours, _hf_mean_ll(hf, ids, mask, start), atol=1e-5, rtol=0)
    plain = mean_log_likelihood(model, ids, start=start)
    torch.testing.assert_close(plain, _hf_mean_ll(hf, ids, torch.ones_like(ids), start),
                               atol=1e-5, rtol=0)


def test_mean_log_likelihood_prefers_the_models_own_choice(models):
    """The greedy continuation is at least as likely, token by token, as any other one."""
    model, _ = models
    ids = torch.randint(0, 97, (1, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        best = model(ids)[0][0, -1].argmax()
    greedy = torch.cat([ids, best.view(1, 1)], 1)
    others = torch.cat([ids.expand(97, 5), torch.arange(97)[:, None]], 1)
    top = mean_log_likelihood(model, greedy, start=5)
    assert (mean_log_likelihood(model, others, start=5) <= top + 1e-6).all()


def test_mean_log_likelihood_bad_input(models):
    model, _ = models
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="start"):
        mean_log_likelihood(model, ids, start=3)
    with pytest.raises(ValueError, match="attention_mask"):
        mean_log_likelihood(model, ids, attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="no token to score"):
        mean_log_likelihood(model, ids, attention_mask=torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="vocabulary"):
        mean_log_likelihood(model, torch.tensor([[1, 500]]))
