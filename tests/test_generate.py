"""``llmcourse.decoding.generate`` against ``transformers``' ``GPT2LMHeadModel.generate`` on the
same
random weights: greedy and beam search token for token over a grid of settings, sampling with
the same seed, the processed next-token distribution at every step against HF's own logits
processors, cached against uncached, every one-token decode step against HF's forward,
and every invalid setting refused.

The number of settings compared with HF is the number of test ids of the ``*_matches_hf``
tests: ``pytest tests/test_generate.py -q -k matches_hf``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from model_helpers import (
    assert_same,
    assert_step_logits_match_hf,
    hf_generate,
    left_padded_prompts,
    setting_id,
    without_special_ids,
)

from llmcourse.decoding.generate import generate
from llmcourse.decoding.processors import DecodingSettings, process_logits
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.nn.linear import Linear, is_input_major

pytestmark = pytest.mark.usefixtures("quiet_transformers")

ATOL = 1e-5
CFG = GPTConfig(vocab_size=157, block_size=64, n_layer=2, n_head=4, n_embd=64)
NEW = 10  # new tokens per run


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are small: a second thread only adds synchronisation, which on a shared
    2-core machine costs more than it saves. Restored afterwards for other test files."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_gpt(cfg: GPTConfig, seed: int, logit_scale: float = 8.0) -> GPT:
    """A random GPT with random biases and LayerNorm gains (so that copying each matters) and
    embeddings scaled up so that its next-token distributions are peaked like a trained
    model's, not nearly uniform."""
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "ln_1.weight", "ln_2.weight")):
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
        model.transformer.wte.weight.mul_(logit_scale)
    return model


@pytest.fixture(scope="module")
def models(quiet_transformers):
    model = _random_gpt(CFG, seed=0)
    return model, without_special_ids(model.to_hf())


@pytest.fixture(scope="module")
def prompts():
    return left_padded_prompts(CFG.vocab_size)


@pytest.fixture(scope="module")
def eos_ids(models, prompts):
    """EOS ids the model actually produces a few tokens in, so that stopping is exercised."""
    model, _ = models
    ids, mask = prompts
    out = generate(model, ids, max_new_tokens=NEW, attention_mask=mask)
    return int(out[0, 7 + 2]), int(out[1, 7 + 4])


def _resolve_eos(eos, eos_ids):
    return {None: None, "E": eos_ids[0], "E2": list(eos_ids)}[eos]


# --- greedy ---------------------------------------------------------------------------------

GREEDY = [
    dict(padded=p, repetition_penalty=r, no_repeat_ngram_size=n, eos=e)
    for p, r, n, e in itertools.product((False, True), (1.0, 1.4, 0.7), (0, 2, 3), (None, "E"))
] + [
    dict(padded=True, eos="E2"),
    dict(padded=True, eos="E", pad_token_id=0),
    dict(padded=True, eos="E", min_new_tokens=6),
    dict(padded=False, max_new_tokens=1),
    dict(padded=True, max_new_tokens=1, eos="E"),
    dict(padded=True, no_repeat_ngram_size=1, max_new_tokens=20),
]


@pytest.mark.parametrize("setting", GREEDY, ids=[setting_id(d) for d in GREEDY])
def test_greedy_matches_hf(models, prompts, eos_ids, setting):
    model, hf = models
    s = dict(setting)
    ids, mask = prompts
    if not s.pop("padded"):
        ids, mask = ids[:, 3:], mask[:, 3:] * 0 + 1
    eos = _resolve_eos(s.pop("eos", None), eos_ids)
    pad = s.pop("pad_token_id", None)
    new = s.pop("max_new_tokens", NEW)
    ours = generate(model, ids, max_new_tokens=new, attention_mask=mask, eos_token_id=eos,
                    pad_token_id=pad, **s)
    theirs = hf_generate(hf, ids, mask, eos=eos, pad=pad, max_new_tokens=new, do_sample=False,
                         **s)
    assert_same(ours, theirs)


def test_greedy_stops_at_eos_and_pads(models, prompts, eos_ids):
    """Not only equal to HF: the row that produced EOS holds only pad ids after it."""
    model, _ = models
    ids, mask = prompts
    out = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, eos_token_id=eos_ids[0],
                   pad_token_id=3)
    row = out[0, 7:].tolist()
    first = row.index(eos_ids[0])
    assert set(row[first + 1:]) <= {3}
    assert out.shape[1] <= 7 + NEW


def test_mask_inferred_from_pad_id(models, prompts):
    """Without an attention_mask, a pad id that is not an EOS marks the padding (as in HF)."""
    model, hf = models
    ids, mask = prompts
    ours = generate(model, ids, max_new_tokens=NEW, pad_token_id=0)
    assert_same(ours, generate(model, ids, max_new_tokens=NEW, attention_mask=mask))
    assert_same(ours, hf_generate(hf, ids, None, pad=0, max_new_tokens=NEW, do_sample=False))


# --- beam search ----------------------------------------------------------------------------

BEAMS = [
    dict(num_beams=b, length_penalty=lp, early_stopping=es, padded=p, eos="E")
    for b, lp, es, p in itertools.product((2, 4), (1.0, 0.0, -0.8, 2.0), (False, True, "never"),
                                          (False, True))
] + [
    dict(num_beams=3, padded=True),
    dict(num_beams=3, padded=True, eos="E2"),
    dict(num_beams=3, padded=True, eos="E", pad_token_id=0),
    dict(num_beams=3, padded=True, eos="E", repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(num_beams=3, padded=True, eos="E", min_new_tokens=5),
    dict(num_beams=5, padded=False, max_new_tokens=1, eos="E"),
    dict(num_beams=6, padded=True, eos="E2", early_stopping=True, max_new_tokens=16),
]


@pytest.mark.parametrize("setting", BEAMS, ids=[setting_id(d) for d in BEAMS])
def test_beam_matches_hf(models, prompts, eos_ids, setting):
    model, hf = models
    s = dict(setting)
    ids, mask = prompts
    if not s.pop("padded"):
        ids, mask = ids[:, 3:], mask[:, 3:] * 0 + 1
    eos = _resolve_eos(s.pop("eos", None), eos_ids)
    pad = s.pop("pad_token_id", None)
    new = s.pop("max_new_tokens", NEW)
    ours = generate(model, ids, max_new_tokens=new, attention_mask=mask, eos_token_id=eos,
                    pad_token_id=pad, **s)
    theirs = hf_generate(hf, ids, mask, eos=eos, pad=pad, max_new_tokens=new, do_sample=False,
                         **s)
    assert_same(ours, theirs)


def test_beam_search_beats_greedy_on_log_probability(models, prompts):
    """Beam search (no EOS, no length normalisation at equal length) finds a sequence at
    least as likely as greedy's, scored by the model itself."""
    model, _ = models
    ids = prompts[0][1:, 3:]
    greedy = generate(model, ids, max_new_tokens=6)
    beam = generate(model, ids, max_new_tokens=6, num_beams=4)

    def total_logp(seq):
        logits, _ = model(seq)
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, seq[:, 1:, None])[..., 0]
        return logp[:, ids.shape[1] - 1:].sum(-1)

    with torch.no_grad():
        assert (total_logp(beam) >= total_logp(greedy) - 1e-5).all()


# --- sampling -------------------------------------------------------------------------------

FILTERS = [dict(), dict(top_k=7), dict(top_p=0.8), dict(min_p=0.15),
           dict(top_k=20, top_p=0.9, min_p=0.05)]
EXTRAS = [dict(), dict(repetition_penalty=1.3), dict(no_repeat_ngram_size=2),
          dict(eos="E", padded=False), dict(repetition_penalty=0.8, eos="E2", min_new_tokens=3)]
SAMPLING = [
    dict(temperature=t, **f, **EXTRAS[(i + j) % len(EXTRAS)])
    for i, t in enumerate((1.0, 0.6, 1.5)) for j, f in enumerate(FILTERS)
]


def _sampling_args(setting, prompts, eos_ids):
    s = dict(setting)
    ids, mask = prompts
    if not s.pop("padded", True):
        ids, mask = ids[:, 3:], mask[:, 3:] * 0 + 1
    s["eos_token_id"] = _resolve_eos(s.pop("eos", None), eos_ids)
    return ids, mask, s


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("setting", SAMPLING, ids=[setting_id(d) for d in SAMPLING])
def test_sampling_matches_hf(models, prompts, eos_ids, setting, seed):
    """Same seed, same draws: HF samples with torch.multinomial on the global RNG; we draw
    from a torch.Generator seeded alike."""
    model, hf = models
    ids, mask, s = _sampling_args(setting, prompts, eos_ids)
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                    generator=torch.Generator().manual_seed(seed), **s)
    eos = s.pop("eos_token_id")
    torch.manual_seed(seed)
    theirs = hf_generate(hf, ids, mask, eos=eos, max_new_tokens=NEW, do_sample=True, **s)
    assert_same(ours, theirs)


def _hf_processors(hf, settings: DecodingSettings, ids, mask):
    """HF's own processor list for these settings, built the way HF's generate builds it."""
    from transformers import GenerationConfig

    gc = GenerationConfig(
        do_sample=settings.do_sample, temperature=settings.temperature,
        top_k=settings.top_k or 0, top_p=settings.top_p or 1.0, min_p=settings.min_p,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        min_new_tokens=settings.min_new_tokens, num_beams=settings.num_beams,
        eos_token_id=list(settings.eos_token_id) or None, pad_token_id=settings.pad_token_id,
        bos_token_id=None, max_new_tokens=settings.max_new_tokens,
    )
    gc, _ = hf._prepare_generation_config(gc)
    hf._prepare_special_tokens(gc, True, device="cpu")
    padded = mask is not None and not bool(mask.all())
    return hf._get_logits_processor(
        gc, input_ids_seq_length=ids.shape[1], encoder_input_ids=ids, device="cpu",
        model_kwargs={"attention_mask": mask if padded else None},
    )


@pytest.mark.parametrize("setting", SAMPLING, ids=[setting_id(d) for d in SAMPLING])
def test_processed_distribution_matches_hf(models, prompts, eos_ids, setting):
    """At every step of a sampled sequence, our processed distribution equals the one HF's
    logits processors make from the same logits and text: same support, probabilities
    within 1e-5."""
    model, hf = models
    ids, mask, s = _sampling_args(setting, prompts, eos_ids)
    out = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                   generator=torch.Generator().manual_seed(7), **s)
    settings = DecodingSettings(max_new_tokens=NEW, do_sample=True, vocab_size=CFG.vocab_size,
                                **s)
    processors = _hf_processors(hf, settings, ids, mask)
    full = torch.cat([mask, torch.ones(mask.shape[0], out.shape[1] - ids.shape[1],
                                       dtype=mask.dtype)], 1)
    pos = (full.cumsum(-1) - 1).masked_fill(full == 0, 0)
    with torch.no_grad():
        logits = hf(out, attention_mask=full, position_ids=pos).logits  # (B, L, V)
    t = ids.shape[1]
    padding = None if bool(mask.all()) else mask == 0
    for step in range(out.shape[1] - t):
        text, raw = out[:, :t + step], logits[:, t + step - 1].float()
        ours = process_logits(raw.clone(), text, settings, prompt_length=t, padding=padding)
        theirs = processors(text, raw.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), f"support differs, step {step}"
        torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), atol=ATOL, rtol=0)


def test_hf_processor_order_is_ours(models, prompts):
    """The order transformers applies the processors in is the order process_logits uses."""
    _, hf = models
    ids, mask = prompts
    settings = DecodingSettings(max_new_tokens=4, do_sample=True, temperature=0.7, top_k=5,
                                top_p=0.9, min_p=0.1, repetition_penalty=1.2,
                                no_repeat_ngram_size=2)
    names = [type(p).__name__ for p in _hf_processors(hf, settings, ids, mask)]
    assert names == ["RepetitionPenaltyLogitsProcessor", "NoRepeatNGramLogitsProcessor",
                     "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper",
                     "MinPLogitsWarper"]


BEAM_SAMPLING = [dict(num_beams=3, temperature=0.8, eos="E"), dict(num_beams=2, top_k=10)]


@pytest.mark.parametrize("setting", BEAM_SAMPLING, ids=[setting_id(d) for d in BEAM_SAMPLING])
def test_beam_sampling_matches_hf(models, prompts, eos_ids, setting):
    model, hf = models
    ids, mask, s = _sampling_args(setting, prompts, eos_ids)
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                    generator=torch.Generator().manual_seed(3), **s)
    eos = s.pop("eos_token_id")
    torch.manual_seed(3)
    assert_same(ours, hf_generate(hf, ids, mask, eos=eos, max_new_tokens=NEW, do_sample=True,
                                  **s))


def test_global_rng_when_no_generator(models, prompts):
    """generator=None draws from torch's global RNG, like HF: seeding it repeats the draw."""
    model, _ = models
    ids, mask = prompts
    torch.manual_seed(11)
    a = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True)
    torch.manual_seed(11)
    b = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True)
    c = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                 generator=torch.Generator().manual_seed(11))
    assert_same(a, b)
    assert_same(a, c)


# --- the cache ------------------------------------------------------------------------------

CACHE_CASES = [dict(), dict(num_beams=3, eos="E"), dict(do_sample=True, top_p=0.9),
               dict(repetition_penalty=1.3, no_repeat_ngram_size=2, eos="E2")]


@pytest.mark.parametrize("setting", CACHE_CASES, ids=[setting_id(d) for d in CACHE_CASES])
def test_cached_equals_uncached(models, prompts, eos_ids, setting):
    model, _ = models
    ids, mask, s = _sampling_args(setting, prompts, eos_ids)
    runs = [generate(model, ids, max_new_tokens=NEW, attention_mask=mask, use_cache=c,
                     generator=torch.Generator().manual_seed(5), **s) for c in (True, False)]
    assert_same(*runs)


def test_decode_step_logits_match_hf(models, prompts):
    model, hf = models
    assert_step_logits_match_hf(model, hf, *prompts, steps=6)
    assert_step_logits_match_hf(model, hf, prompts[0][:, 3:], None, steps=6)


def test_decode_step_leaves_weights_alone(models, prompts):
    """Generating changes no parameter, neither its values nor its layout."""
    model, _ = models
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    generate(model, prompts[0], attention_mask=prompts[1], max_new_tokens=3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1], k


def test_weights_changed_after_generate_are_used(prompts):
    """A weight updated in place after a generate call is picked up by the next call."""
    model = _random_gpt(CFG, seed=4)
    ids = prompts[0][:, 3:]
    first = generate(model, ids, max_new_tokens=4)
    with torch.no_grad():
        model.lm_head.weight[first[:, -1]] -= 100.0  # make the last chosen tokens unlikely
    second = generate(model, ids, max_new_tokens=4)
    assert not torch.equal(first, second)
    assert torch.equal(second, generate(model, ids, max_new_tokens=4, use_cache=False))


@given(out=st.integers(1, 70), inp=st.integers(1, 40), rows=st.integers(1, 20),
       rank3=st.booleans(), bias=st.booleans(), threads=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_input_major_linear_equals_f_linear(out, inp, rows, rank3, bias, threads, seed):
    """The re-stored weights (input-major where out >= in), with the thread-sliced product for
    a few rows, compute torch's F.linear on a contiguous copy of the same weights: any shape
    (cut evenly by the thread count or not), 2-D or 3-D input, with or without bias, any
    number of threads; gradients too."""
    torch.manual_seed(seed)
    layer = Linear(inp, out, bias=bias)
    if min(out, inp) > 1:  # a row or column vector is stored the same either way
        assert is_input_major(layer.weight) == (out >= inp)
    ref = torch.nn.Linear(inp, out, bias=bias)
    ref.load_state_dict(layer.state_dict())
    assert ref.weight.is_contiguous()
    x = torch.randn(2, -(-rows // 2), inp) if rank3 else torch.randn(rows, inp)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = layer(x)
        torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)
        y.square().sum().backward()
    finally:
        torch.set_num_threads(before)
    ref(x).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)


def test_post_ln_model_generates_through_its_forward():
    """A post-LN GPT decodes through the same forward; the cache gives the uncached tokens."""
    cfg = GPTConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, n_embd=16,
                    norm_first=False)
    model = _random_gpt(cfg, seed=2)
    ids = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(0))
    assert_same(generate(model, ids, max_new_tokens=6),
                generate(model, ids, max_new_tokens=6, use_cache=False))


def test_prefix_is_never_recomputed(models, prompts):
    """With the cache the model's forward runs on the prompt once, then on one new token per
    step (the one forward path: no second copy of the model). Without it, every step runs
    the whole text again."""
    model, _ = models
    ids, mask = prompts
    seen = []
    forward = model.forward

    def counting(idx, *args, **kwargs):
        seen.append(idx.shape[1])
        return forward(idx, *args, **kwargs)

    model.forward = counting
    try:
        generate(model, ids, attention_mask=mask, max_new_tokens=5)
        assert seen == [7, 1, 1, 1, 1]
        seen.clear()
        generate(model, ids, attention_mask=mask, max_new_tokens=5, use_cache=False)
        assert seen == [7, 8, 9, 10, 11]
    finally:
        del model.forward


def test_last_only_is_the_last_row_of_the_full_logits(models, prompts):
    model, _ = models
    ids, mask = prompts
    with torch.no_grad():
        full, _ = model(ids, attention_mask=mask)
        last, _ = model(ids, attention_mask=mask, last_only=True)
    assert last.shape == (3, 1, CFG.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="last_only"):
        model(ids, targets=ids, last_only=True)


# --- GPT-2 124M shape -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2_small(quiet_transformers):
    torch.manual_seed(0)
    model = GPT(GPTConfig()).eval()  # GPT-2 124M's shape, random weights
    return model, without_special_ids(model.to_hf())


def test_gpt2_124m_shape_greedy_and_beam_match_hf(gpt2_small):
    model, hf = gpt2_small
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50257, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    assert_step_logits_match_hf(model, hf, ids, mask, steps=3)
    for kw in (dict(), dict(num_beams=2)):
        ours = generate(model, ids, attention_mask=mask, max_new_tokens=5, **kw)
        assert_same(ours, hf_generate(hf, ids, mask, max_new_tokens=5, do_sample=False, **kw))


# --- properties and invalid settings --------------------------------------------------------

# Random prompts may end with the EOS id in some rows: generate warns that this looks like
# right padding (tests/test_boundary_checks.py checks the warning), which is not the point here.
@pytest.mark.filterwarnings("ignore:input_ids looks right-padded")
@given(b=st.integers(1, 3), t=st.integers(1, 6), new=st.integers(1, 6),
       beams=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_output_starts_with_prompt(b, t, new, beams, seed):
    model = _PROPERTY_MODEL
    ids = torch.randint(0, 40, (b, t), generator=torch.Generator().manual_seed(seed))
    out = generate(model, ids, max_new_tokens=new, num_beams=beams, eos_token_id=0)
    assert torch.equal(out[:, :t], ids)
    assert t < out.shape[1] <= t + new
    assert out.dtype == torch.long


_PROPERTY_MODEL = _random_gpt(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2,
                                        n_embd=16), seed=3)

BAD = [
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(min_p=-0.1), "min_p"),
    (dict(min_p=1.1), "min_p"),
    (dict(num_beams=0), "num_beams"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(eos_token_id=40), "eos_token_id"),
    (dict(eos_token_id=3.0), "eos_token_id"),
    (dict(eos_token_id=[1, "2"]), "eos_token_id"),
    (dict(pad_token_id=-2), "pad_token_id"),
    (dict(max_new_tokens=12), "block_size=16"),
    (dict(attention_mask=torch.tensor([[1, 1, 1, 0, 0]])), "LEFT"),
    (dict(attention_mask=torch.tensor([[1, 1, 1]])), "shape"),
    (dict(attention_mask=torch.tensor([[0, 2, 1, 1, 1]])), r"only 1 \(real token\) and 0"),
]


@pytest.mark.parametrize("kwargs,needle", BAD, ids=[n + "-" + str(i) for i, (_, n) in
                                                    enumerate(BAD)])
def test_invalid_settings_raise(kwargs, needle):
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=needle):
        generate(_PROPERTY_MODEL, torch.tensor([[1, 2, 3, 4, 5]]), **kwargs)


def test_prompt_too_long_names_the_numbers():
    with pytest.raises(ValueError, match=r"prompt of 5 tokens \+ max_new_tokens=12 = 17 .* "
                                         r"block_size=16"):
        generate(_PROPERTY_MODEL, torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=12)


def test_bad_types_raise():
    with pytest.raises(TypeError):
        generate(_PROPERTY_MODEL, [[1, 2, 3]], max_new_tokens=2)
    with pytest.raises(TypeError):
        generate(_PROPERTY_MODEL, torch.tensor([[1.0, 2.0]]), max_new_tokens=2)
    with pytest.raises(TypeError, match="generator"):
        generate(_PROPERTY_MODEL, torch.tensor([[1, 2]]), max_new_tokens=2, generator=3)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(_PROPERTY_MODEL, torch.tensor([[1, 99]]), max_new_tokens=2)


def test_training_mode_restored():
    model = _PROPERTY_MODEL.train()
    generate(model, torch.tensor([[1, 2]]), max_new_tokens=2)
    assert model.training
    model.eval()


@given(seed=st.integers(0, 2**16), vocab=st.integers(2, 60), batch=st.integers(1, 3),
       temperature=st.sampled_from([0.3, 1.0, 2.5]), top_k=st.sampled_from([None, 1, 3, 100]),
       top_p=st.sampled_from([None, 0.05, 0.5, 0.95, 1.0]),
       min_p=st.sampled_from([None, 0.0, 0.2, 1.0]),
       penalty=st.sampled_from([1.0, 0.5, 1.7]), ngram=st.integers(0, 3),
       beams=st.sampled_from([1, 2]))
def test_processors_match_hf_warpers_on_random_scores(seed, vocab, batch, temperature, top_k,
                                                      top_p, min_p, penalty, ngram, beams):
    """process_logits against HF's processors built one by one, on random scores and texts
    (ties included: the scores are rounded to make them common)."""
    from transformers.generation import logits_process as lp

    g = torch.Generator().manual_seed(seed)
    scores = (torch.randn(batch, vocab, generator=g) * 3).round(decimals=1)  # (B, V)
    text = torch.randint(0, vocab, (batch, 8), generator=g)  # (B, L)
    s = DecodingSettings(max_new_tokens=1, do_sample=True, temperature=temperature,
                         top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=penalty,
                         no_repeat_ngram_size=ngram, num_beams=beams)
    keep = 2 if beams > 1 else 1
    theirs = []
    if penalty != 1.0:
        theirs.append(lp.RepetitionPenaltyLogitsProcessor(penalty))
    if ngram:
        theirs.append(lp.NoRepeatNGramLogitsProcessor(ngram))
    if temperature != 1.0:
        theirs.append(lp.TemperatureLogitsWarper(temperature))
    if top_k is not None:
        theirs.append(lp.TopKLogitsWarper(top_k, min_tokens_to_keep=keep))
    if top_p is not None and top_p < 1.0:
        theirs.append(lp.TopPLogitsWarper(top_p, min_tokens_to_keep=keep))
    if min_p is not None:
        theirs.append(lp.MinPLogitsWarper(min_p, min_tokens_to_keep=keep))
    expected = lp.LogitsProcessorList(theirs)(text, scores.clone())
    got = process_logits(scores.clone(), text, s, prompt_length=8)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    # A row can lose every token (n-grams ban the whole vocabulary): NaN in both.
    torch.testing.assert_close(got.softmax(-1), expected.softmax(-1), atol=ATOL, rtol=0,
                               equal_nan=True)


def test_sampling_with_every_token_banned_raises_clearly():
    model = _random_gpt(GPTConfig(vocab_size=3, block_size=16, n_layer=1, n_head=1, n_embd=8),
                        seed=0)
    with pytest.raises(ValueError, match="every token"):
        generate(model, torch.tensor([[0, 1, 2]]), max_new_tokens=2, do_sample=True,
                 no_repeat_ngram_size=1)
