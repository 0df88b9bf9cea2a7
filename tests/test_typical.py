"""Locally typical sampling (``typical_filter``, ``generate(typical_p=...)``) against
``transformers``' own ``TypicalLogitsWarper`` and ``generate``.

- the filter equals HF's warper exactly, on random scores (rounded so that ties are common,
  with ``-inf`` entries) and on hand-made adversarial rows (ties at the cut, a dominant token
  that must be dropped, one finite entry, rows of different shapes in one batch), for every
  ``min_tokens_to_keep`` HF uses;
- properties that need no oracle: the kept set holds mass ≥ τ, is a prefix of the tokens
  sorted by distance from the entropy, and is the shortest such prefix;
- the same oracle comparison rejects deliberately wrong versions (ranking by probability as
  top-p does, stopping before the crossing token, ignoring ``min_keep``, …);
- ``generate(..., do_sample=True, typical_p=...)`` gives HF's tokens for the same seed, alone
  and with other processors, with beam sampling, with EOS;
- invalid ``typical_p`` is refused with a clear message.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmcourse.decoding.generate import generate
from llmcourse.decoding.processors import DecodingSettings, process_logits, typical_filter
from llmcourse.models.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("quiet_transformers", "one_thread")

INF = float("inf")


def _hf_typical(scores: torch.Tensor, mass: float, keep: int) -> torch.Tensor:
    from transformers.generation.logits_process import TypicalLogitsWarper

    ids = torch.zeros(scores.shape[0], 1, dtype=torch.long)  # the warper ignores the text
    return TypicalLogitsWarper(mass=mass, min_tokens_to_keep=keep)(ids, scores.clone())


def _same(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Equal as filtered scores: the same entries, -inf in the same places (NaN rows alike)."""
    return ours.shape == theirs.shape and bool(
        ((ours == theirs) | (ours.isnan() & theirs.isnan())).all())


# --- the filter against HF's warper ---------------------------------------------------------

@given(seed=st.integers(0, 2**16), vocab=st.integers(1, 80), batch=st.integers(1, 4),
       mass=st.sampled_from([0.01, 0.2, 0.5, 0.75, 0.9, 0.95, 0.999]),
       keep=st.integers(1, 4), spread=st.sampled_from([0.3, 3.0, 12.0]),
       holes=st.sampled_from([0.0, 0.3, 0.9]), dtype=st.sampled_from([torch.float32,
                                                                        torch.float64]))
def test_filter_matches_hf_on_random_scores(seed, vocab, batch, mass, keep, spread, holes,
                                            dtype):
    """Scores rounded to one decimal (ties everywhere), a share of them -inf; each row keeps
    at least one finite score (an all--inf row is not a distribution)."""
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, vocab, generator=g, dtype=dtype) * spread).round(decimals=1)
    hole = torch.rand(batch, vocab, generator=g) < holes  # (B, V)
    hole[torch.arange(batch), torch.randint(0, vocab, (batch,), generator=g)] = False
    scores = scores.masked_fill(hole, -INF)
    ours = typical_filter(scores.clone(), mass, keep)
    assert _same(ours, _hf_typical(scores, mass, keep))
    assert ours.dtype == scores.dtype


def _rows() -> list[tuple[str, torch.Tensor]]:
    """Hand-made distributions where the choices are close; each (1, 8)."""
    log = lambda p: torch.tensor([p]).log()  # noqa: E731 (probabilities -> scores)
    return [
        ("one dominant token, the rest equal", torch.tensor([[4.0] + [0.0] * 7])),
        ("a token a bit more likely than seven equal ones", torch.tensor([[1.0] + [0.0] * 7])),
        ("uniform: every distance is ~0", torch.zeros(1, 8)),
        ("two equal leaders", torch.tensor([[3.0, 3.0, 1.0, 1.0, 1.0, 0.0, -1.0, -2.0]])),
        ("tie at the crossing", log([0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.03, 0.02])),
        ("symmetric distances", log([0.4, 0.15, 0.15, 0.15, 0.15, 0.0, 0.0, 0.0])),
        ("-inf holes", torch.tensor([[2.0, -INF, 1.0, -INF, 0.5, 0.5, -INF, -3.0]])),
        ("one finite score", torch.tensor([[-INF, -INF, 0.7, -INF, -INF, -INF, -INF, -INF]])),
        ("bimodal", torch.tensor([[5.0, 5.0, 5.0, -5.0, -5.0, -5.0, -5.0, -5.0]])),
        ("long geometric tail", torch.arange(8.0).neg()[None] * 0.7),
        ("very peaked", torch.tensor([[30.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0]])),
    ]


ROWS = _rows()
MASSES = (0.05, 0.2, 0.5, 0.6, 0.9, 0.95, 0.999)


@pytest.mark.parametrize("keep", [1, 2, 3, 8])
@pytest.mark.parametrize("mass", MASSES)
def test_filter_matches_hf_on_adversarial_rows(mass, keep):
    """All rows at once (one batch of very different distributions) and each row alone."""
    batch = torch.cat([row for _, row in ROWS])  # (11, 8)
    assert _same(typical_filter(batch, mass, keep), _hf_typical(batch, mass, keep))
    for name, row in ROWS:
        assert _same(typical_filter(row, mass, keep), _hf_typical(row, mass, keep)), name


def test_the_most_likely_token_can_be_dropped():
    """The point of the method, checked against HF: a token well above the rest is far from
    the entropy and goes first, where top-p would keep it first."""
    s = torch.tensor([[1.0] + [0.0] * 7])  # p ≈ (0.28, 0.10 × 7)
    for f in (typical_filter, lambda x, m, k: _hf_typical(x, m, k)):
        out = f(s, 0.5, 1)
        assert out[0, 0] == -INF and torch.isfinite(out[0, 1:]).sum() >= 5


def test_mass_one_keeps_everything_and_returns_a_copy():
    s = torch.tensor([[2.0, -INF, 0.0, 1.0]])
    out = typical_filter(s, 1.0)
    assert torch.equal(out, s) and out is not s


# --- properties, no oracle ------------------------------------------------------------------

@given(seed=st.integers(0, 2**16), vocab=st.integers(2, 60),
       mass=st.sampled_from([0.1, 0.5, 0.9, 0.99]), keep=st.integers(1, 3))
def test_kept_set_is_the_shortest_prefix_by_distance_with_enough_mass(seed, vocab, mass, keep):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(1, vocab, generator=g, dtype=torch.float64) * 3).round(decimals=1)
    out = typical_filter(scores, mass, keep)
    kept = torch.isfinite(out[0])  # (V,)
    logp = scores[0].log_softmax(-1)
    p = logp.exp()
    dist = (-logp - (-(p * logp).sum())).abs()  # (V,)
    assert bool((out[0][kept] == scores[0][kept]).all())
    assert int(kept.sum()) >= min(keep, vocab)
    assert p[kept].sum() >= mass - 1e-9, "kept mass below τ"
    if not kept.all():  # a prefix: nothing dropped is nearer to H than something kept
        assert dist[kept].max() <= dist[~kept].min()
    if int(kept.sum()) > keep:  # the shortest one: without the farthest kept, mass < τ
        farthest = dist[kept].max()
        assert p[kept & (dist < farthest)].sum() < mass + 1e-9


# --- wrong versions must fail the oracle comparison -----------------------------------------

def _wrong_by_probability(scores, mass, keep=1):
    """Ranks by probability (top-p's order) instead of by |surprisal − entropy|."""
    logp = scores.log_softmax(-1)
    return _prefix_cut(scores, -logp, mass, keep)


def _wrong_short_of_mass(scores, mass, keep=1):
    """Stops before the crossing token: kept mass < τ."""
    logp = scores.log_softmax(-1)
    ent = -(logp * logp.exp()).nansum(-1, keepdim=True)
    dist, order = torch.sort((-logp - ent).abs(), dim=-1)
    before = scores.gather(1, order).softmax(-1).cumsum(-1) >= mass  # crossing dropped too
    before[:, :keep] = False
    return scores.masked_fill(before.scatter(1, order, before), -INF)


def _wrong_no_abs(scores, mass, keep=1):
    """Signed distance: the most surprising tokens first."""
    logp = scores.log_softmax(-1)
    ent = -(logp * logp.exp()).nansum(-1, keepdim=True)
    return _prefix_cut(scores, logp + ent, mass, keep)


def _wrong_entropy_in_bits(scores, mass, keep=1):
    """Surprisal in nats, entropy in bits."""
    logp = scores.log_softmax(-1)
    ent = -(logp * logp.exp()).nansum(-1, keepdim=True) / math.log(2)
    return _prefix_cut(scores, (-logp - ent).abs(), mass, keep)


def _wrong_plain_sum(scores, mass, keep=1):
    """sum instead of nansum: a -inf score makes the entropy NaN."""
    logp = scores.log_softmax(-1)
    ent = -(logp * logp.exp()).sum(-1, keepdim=True)
    return _prefix_cut(scores, (-logp - ent).abs(), mass, keep)


def _wrong_ignores_min_keep(scores, mass, keep=1):
    return typical_filter(scores, mass, 1)


def _wrong_cut_by_position(scores, mass, keep=1):
    """Cuts right after the crossing token by position: a tie with it is dropped."""
    logp = scores.log_softmax(-1)
    ent = -(logp * logp.exp()).nansum(-1, keepdim=True)
    dist, order = torch.sort((-logp - ent).abs(), dim=-1)
    cum = scores.gather(1, order).softmax(-1).cumsum(-1)
    n = (cum < mass).sum(-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
    drop = torch.arange(scores.shape[-1])[None] > n
    drop[:, :keep] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -INF)


def _prefix_cut(scores, key, mass, keep):
    """Keep the shortest prefix of tokens sorted by ``key`` (ascending) with mass ≥ τ."""
    key_sorted, order = torch.sort(key, dim=-1)
    cum = scores.gather(1, order).softmax(-1).cumsum(-1)
    n = (cum < mass).sum(-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
    drop = key_sorted > key_sorted.gather(1, n)
    drop[:, :keep] = False
    return scores.masked_fill(drop.scatter(1, order, drop), -INF)


def _disagreements(fn) -> list[str]:
    bad = []
    for mass in MASSES:
        for keep in (1, 3):
            for name, row in ROWS:
                try:
                    if not _same(fn(row.clone(), mass, keep), _hf_typical(row, mass, keep)):
                        bad.append(f"{name}, τ={mass}, keep={keep}")
                except Exception as e:  # a crash is a disagreement too
                    bad.append(f"{name}: {type(e).__name__}")
    return bad


def test_the_oracle_comparison_passes_ours():
    assert _disagreements(typical_filter) == []


@pytest.mark.parametrize("wrong", [_wrong_by_probability, _wrong_short_of_mass, _wrong_no_abs,
                                   _wrong_entropy_in_bits, _wrong_plain_sum,
                                   _wrong_ignores_min_keep, _wrong_cut_by_position],
                         ids=lambda f: f.__name__)
def test_the_oracle_comparison_rejects_wrong_versions(wrong):
    assert _disagreements(wrong), f"{wrong.__name__} agreed with HF on every row"


# --- generate against HF's generate ---------------------------------------------------------

CFG = GPTConfig(vocab_size=157, block_size=64, n_layer=2, n_head=4, n_embd=64)
NEW = 12


def _random_gpt(cfg: GPTConfig, seed: int, logit_scale: float) -> GPT:
    """A random GPT whose embeddings are scaled up so that its next-token distributions are
    peaked (some steps with one dominant token, where typical sampling may drop it)."""
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
        model.transformer.wte.weight.mul_(logit_scale)
    return model


@pytest.fixture(scope="module")
def models():
    out = {}
    for scale in (3.0, 10.0):
        model = _random_gpt(CFG, seed=0, logit_scale=scale)
        hf = model.to_hf()
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(hf.generation_config, name, None)
        out[scale] = model, hf
    return out


@pytest.fixture(scope="module")
def prompts():
    """Three prompts, the first two left-padded with pad id 0, and their mask."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, CFG.vocab_size, (3, 6), generator=g)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = 0
    mask[1, :1] = 0
    return ids.masked_fill(mask == 0, 0), mask


def _hf_generate(hf, ids, mask, **kw):
    from transformers import GenerationConfig

    gc = GenerationConfig(bos_token_id=None, top_k=kw.pop("top_k", 0),
                          top_p=kw.pop("top_p", 1.0), **kw)
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, generation_config=gc)


SAMPLING = [
    dict(typical_p=0.2), dict(typical_p=0.5), dict(typical_p=0.9), dict(typical_p=0.95),
    dict(typical_p=0.9, temperature=0.7), dict(typical_p=0.6, temperature=1.4),
    dict(typical_p=0.8, top_k=20, top_p=0.95, min_p=0.02),
    dict(typical_p=0.9, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(typical_p=0.7, eos=True, min_new_tokens=2),
    dict(typical_p=0.5, num_beams=2), dict(typical_p=0.9, num_beams=3, eos=True),
]


def _id(d: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in d.items())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale", [3.0, 10.0])
@pytest.mark.parametrize("setting", SAMPLING, ids=[_id(d) for d in SAMPLING])
def test_generate_with_typical_p_matches_hf(models, prompts, setting, scale, seed):
    """Same seed, same draws: HF samples with torch.multinomial on the global RNG, we with a
    torch.Generator seeded alike; the same tokens mean the same filtered distributions."""
    model, hf = models[scale]
    ids, mask = prompts
    s = dict(setting)
    if s.pop("eos", False):  # a token this run draws early in row 0, so that row stops
        s["eos_token_id"] = int(generate(model, ids, max_new_tokens=4, attention_mask=mask,
                                         do_sample=True, generator=torch.Generator().manual_seed(
                                             seed), **s)[0, -1])
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                    generator=torch.Generator().manual_seed(seed), **s)
    torch.manual_seed(seed)
    theirs = _hf_generate(hf, ids, mask, max_new_tokens=NEW, do_sample=True, **s)
    assert ours.shape == theirs.shape, f"{tuple(ours.shape)} vs HF {tuple(theirs.shape)}"
    assert torch.equal(ours, theirs), f"\nours {ours.tolist()}\nHF   {theirs.tolist()}"


def test_typical_p_changes_the_text_and_one_is_off(models, prompts):
    """Not vacuous: on the peaked model typical_p=0.2 writes other tokens than plain sampling
    with the same seed, and typical_p=1 writes exactly plain sampling's."""
    model, _ = models[10.0]
    ids, mask = prompts
    run = lambda **kw: generate(model, ids, max_new_tokens=NEW, attention_mask=mask,  # noqa
                                do_sample=True, generator=torch.Generator().manual_seed(0), **kw)
    plain = run()
    assert not torch.equal(run(typical_p=0.2), plain)
    assert torch.equal(run(typical_p=1.0), plain)


def test_hf_applies_typical_after_min_p_as_we_do(models, prompts):
    """transformers' own processor list, as its generate builds it: typical comes last of the
    sampling filters, after min-p, the order of process_logits."""
    from transformers import GenerationConfig

    _, hf = models[3.0]
    ids, mask = prompts
    gc = GenerationConfig(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1,
                          typical_p=0.8, bos_token_id=None, max_new_tokens=2)
    gc, _ = hf._prepare_generation_config(gc)
    hf._prepare_special_tokens(gc, True, device="cpu")
    procs = hf._get_logits_processor(gc, input_ids_seq_length=ids.shape[1],
                                     encoder_input_ids=ids, device="cpu",
                                     model_kwargs={"attention_mask": mask})
    names = [type(p).__name__ for p in procs]
    assert names == ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
                     "MinPLogitsWarper", "TypicalLogitsWarper"]
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(3, CFG.vocab_size, generator=g) * 4  # (3, V)
    ours = process_logits(scores.clone(), ids, DecodingSettings(
        max_new_tokens=2, do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1,
        typical_p=0.8), prompt_length=ids.shape[1])
    assert _same(ours, procs(ids, scores.clone()))


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, float("nan"), "0.9", True])
def test_invalid_typical_p_is_refused(models, value):
    model, _ = models[3.0]
    with pytest.raises(ValueError, match=r"typical_p must be in \(0, 1\]"):
        generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=True,
                 typical_p=value)


@pytest.mark.parametrize("mass,keep,needle", [(0.0, 1, "mass"), (1.2, 1, "mass"),
                                              (0.5, 0, "min_keep"), (0.5, 1.0, "min_keep")])
def test_filter_refuses_bad_arguments(mass, keep, needle):
    with pytest.raises(ValueError, match=needle):
        typical_filter(torch.zeros(1, 4), mass, keep)
