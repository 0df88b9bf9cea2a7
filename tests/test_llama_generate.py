"""``llmcourse.decoding.generate`` on the course's Llama against ``transformers``' ``generate``
on ``LlamaForCausalLM`` with the same weights, token for token: greedy, beam search and sampling
with a seed, padded and unpadded prompts, grouped-query and multi-query attention; the cached
loop against the uncached one; every decode step's logits against HF's forward. The same
``generate`` and ``beam_search`` serve the GPT (tests/test_generate.py): one loop."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from model_helpers import (
    assert_same,
    assert_step_logits_match_hf,
    hf_generate,
    left_padded_prompts,
    random_llama,
    setting_id,
    without_special_ids,
)

from llmcourse.decoding.generate import generate
from llmcourse.models import llama_hf
from llmcourse.models.llama import LlamaConfig

pytestmark = pytest.mark.usefixtures("quiet_transformers", "one_thread")

CFG = LlamaConfig(vocab_size=131, block_size=48, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                  d_ff=48, rope_theta=500.0)
NEW = 10


LM_HEAD_GAIN = 2.0  # logits a little less peaked than in tests/test_llama.py


@pytest.fixture(scope="module")
def models(quiet_transformers):
    model = random_llama(CFG, seed=0, lm_head_gain=LM_HEAD_GAIN)
    return model, without_special_ids(llama_hf.to_hf(model))


@pytest.fixture(scope="module")
def mqa_models(quiet_transformers):
    model = random_llama(replace(CFG, n_kv_head=1, tie_embeddings=True), seed=2,
                         lm_head_gain=LM_HEAD_GAIN)
    return model, without_special_ids(llama_hf.to_hf(model))


@pytest.fixture(scope="module")
def prompts():
    return left_padded_prompts(CFG.vocab_size)


@pytest.fixture(scope="module")
def eos_id(models, prompts):
    """An id the model produces a few tokens in, so that stopping is exercised."""
    ids, mask = prompts
    out = generate(models[0], ids, attention_mask=mask, max_new_tokens=NEW)
    return int(out[1, 7 + 3])


def _case(prompts, padded: bool):
    ids, mask = prompts
    return (ids, mask) if padded else (ids[:, 3:], torch.ones_like(ids[:, 3:]))


GREEDY = [dict(padded=p, repetition_penalty=r, no_repeat_ngram_size=n, eos=e)
          for p, r, n, e in itertools.product((False, True), (1.0, 1.3), (0, 2), (False, True))]


@pytest.mark.parametrize("setting", GREEDY, ids=[setting_id(d) for d in GREEDY])
def test_greedy_matches_hf(models, prompts, eos_id, setting):
    model, hf = models
    s = dict(setting)
    ids, mask = _case(prompts, s.pop("padded"))
    eos = eos_id if s.pop("eos") else None
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, eos_token_id=eos, **s)
    assert_same(ours, hf_generate(hf, ids, mask, eos=eos, max_new_tokens=NEW,
                                  do_sample=False, **s))


def test_greedy_with_multi_query_attention_matches_hf(mqa_models, prompts):
    model, hf = mqa_models
    for padded in (False, True):
        ids, mask = _case(prompts, padded)
        ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask)
        assert_same(ours, hf_generate(hf, ids, mask, max_new_tokens=NEW, do_sample=False))


BEAMS = [dict(num_beams=b, length_penalty=lp, early_stopping=es, padded=p)
         for b, lp, es, p in [(2, 1.0, False, False), (3, 0.0, True, True), (4, 2.0, "never", True),
                              (3, -0.5, False, True)]]


@pytest.mark.parametrize("setting", BEAMS, ids=[setting_id(d) for d in BEAMS])
def test_beam_matches_hf(models, prompts, eos_id, setting):
    model, hf = models
    s = dict(setting)
    ids, mask = _case(prompts, s.pop("padded"))
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, eos_token_id=eos_id,
                    **s)
    assert_same(ours, hf_generate(hf, ids, mask, eos=eos_id, max_new_tokens=NEW,
                                  do_sample=False, **s))


SAMPLING = [dict(), dict(temperature=0.7, top_k=10), dict(top_p=0.8, repetition_penalty=1.2),
            dict(temperature=1.4, min_p=0.05, eos=True)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("setting", SAMPLING, ids=[setting_id(d) or "plain" for d in SAMPLING])
def test_sampling_with_a_seed_matches_hf(models, prompts, eos_id, setting, seed):
    """Same seed, same draws: HF draws with torch.multinomial from the global generator; we
    from a torch.Generator seeded alike."""
    model, hf = models
    s = dict(setting)
    eos = eos_id if s.pop("eos", False) else None
    ids, mask = prompts
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                    eos_token_id=eos, generator=torch.Generator().manual_seed(seed), **s)
    torch.manual_seed(seed)
    assert_same(ours, hf_generate(hf, ids, mask, eos=eos, max_new_tokens=NEW, do_sample=True,
                                  **s))


def test_beam_sampling_matches_hf(models, prompts):
    model, hf = models
    ids, mask = prompts
    ours = generate(model, ids, max_new_tokens=NEW, attention_mask=mask, do_sample=True,
                    num_beams=3, temperature=0.8, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(3)
    assert_same(ours, hf_generate(hf, ids, mask, max_new_tokens=NEW, do_sample=True,
                                  num_beams=3, temperature=0.8))


CACHE_CASES = [dict(), dict(num_beams=3), dict(do_sample=True, top_p=0.9),
               dict(repetition_penalty=1.3, no_repeat_ngram_size=2)]


@pytest.mark.parametrize("setting", CACHE_CASES,
                         ids=[setting_id(d) or "greedy" for d in CACHE_CASES])
def test_cached_equals_uncached(models, prompts, setting):
    model, _ = models
    ids, mask = prompts
    runs = [generate(model, ids, max_new_tokens=NEW, attention_mask=mask, use_cache=c,
                     generator=torch.Generator().manual_seed(5), **setting) for c in (True, False)]
    assert_same(*runs)


@pytest.mark.parametrize("padded", [False, True])
def test_every_decode_step_matches_hf_forward(models, prompts, padded):
    """The decoder's logits at every step (prefill, then one token at a time over a cache of
    n_kv_head heads) against HF's forward over the whole text."""
    model, hf = models
    ids, mask = _case(prompts, padded)
    decoder = assert_step_logits_match_hf(model, hf, ids, mask if padded else None, steps=6)
    assert decoder.cache.k.shape[2] == CFG.n_kv_head


def test_generate_refuses_too_long_a_request(models):
    with pytest.raises(ValueError, match="longer than the model's context block_size=48"):
        generate(models[0], torch.zeros(1, 40, dtype=torch.long), max_new_tokens=9)
