"""The KV cache: storing, reading back, reordering, and attention over cached keys equal to
attention over the whole sequence at once."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.nn.block import Block, CausalSelfAttention
from llmcourse.nn.kv_cache import KVCache

ATOL = 1e-5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(chunks=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 1000))
def test_cache_returns_the_concatenation_of_what_was_stored(chunks, seed):
    n_layer, b, h, hd = 2, 2, 3, 4
    cache = KVCache(n_layer, b, h, sum(chunks), hd)
    g = _gen(seed)
    seen_k = [[] for _ in range(n_layer)]
    seen_v = [[] for _ in range(n_layer)]
    for t in chunks:
        for layer in range(n_layer):
            k, v = torch.randn(b, h, t, hd, generator=g), torch.randn(b, h, t, hd, generator=g)
            seen_k[layer].append(k)
            seen_v[layer].append(v)
            k_all, v_all = cache.update(layer, k, v)
            torch.testing.assert_close(k_all, torch.cat(seen_k[layer], dim=2), atol=0, rtol=0)
            torch.testing.assert_close(v_all, torch.cat(seen_v[layer], dim=2), atol=0, rtol=0)
        cache.advance(t)
    assert cache.length == sum(chunks)


def test_cache_overflow_is_refused_and_leaves_the_cache_unchanged():
    cache = KVCache(1, 1, 1, 3, 2)
    cache.update(0, torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
    cache.advance(2)
    before = cache.k.clone()
    with pytest.raises(ValueError, match=r"2 cached \+ 2 new > max_len 3"):
        cache.update(0, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert torch.equal(cache.k, before) and cache.length == 2


def test_cache_reorder_selects_sequences():
    cache = KVCache(2, 3, 1, 4, 2)
    k = torch.arange(3.0)[:, None, None, None].expand(3, 1, 2, 2).contiguous()  # seq i holds i
    for layer in range(2):
        cache.update(layer, k, -k)
    cache.advance(2)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.batch_size == 3
    assert cache.k[:, :, 0, 0, 0].tolist() == [[2.0, 2.0, 0.0]] * 2
    assert cache.v[:, :, 0, 0, 0].tolist() == [[-2.0, -2.0, -0.0]] * 2


@given(t=st.integers(2, 8), split=st.integers(1, 7), seed=st.integers(0, 1000))
def test_attention_with_cache_equals_full_attention(t, split, seed):
    # A prompt of `split` tokens, then one token at a time, as in generation.
    split = min(split, t - 1)
    torch.manual_seed(seed)
    attn = CausalSelfAttention(8, 2).eval()
    x = torch.randn(2, t, 8, generator=_gen(seed))
    cache = KVCache(1, 2, 2, t, 4)
    outs = []
    with torch.no_grad():
        full = attn(x)
        outs.append(attn(x[:, :split], cache=cache))
        cache.advance(split)
        for i in range(split, t):
            outs.append(attn(x[:, i:i + 1], cache=cache))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=ATOL, rtol=1e-5)


def test_block_stack_with_cache_equals_full_forward():
    torch.manual_seed(1)
    blocks = [Block(8, 2).eval(), Block(8, 2, norm_first=False).eval()]
    x = torch.randn(1, 6, 8, generator=_gen(1))
    cache = KVCache(2, 1, 2, 6, 4)

    def run(y, c=None):
        for i, block in enumerate(blocks):
            y = block(y, cache=c, layer=i)
        return y

    with torch.no_grad():
        full = run(x)
        a = run(x[:, :4], cache)
        cache.advance(4)
        b = run(x[:, 4:], cache)
        cache.advance(2)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=ATOL, rtol=1e-5)


def test_gpt_token_by_token_with_cache_equals_full_forward():
    torch.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=50, block_size=12, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 50, (2, 9), generator=_gen(2))
    cache = model.new_cache(batch_size=2)
    with torch.no_grad():
        full, _ = model(idx)
        steps = [model(idx[:, :3], cache=cache)[0]]
        steps += [model(idx[:, i:i + 1], cache=cache)[0] for i in range(3, 9)]
    assert cache.length == 9
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=1e-5)


def test_gpt_cache_batch_mismatch_is_refused():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4))
    with pytest.raises(ValueError, match="cache holds 3 sequences but idx has 1"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=model.new_cache(batch_size=3))


@pytest.mark.parametrize("other", [
    dict(n_layer=2, n_head=1, n_embd=4),  # one layer too many
    dict(n_layer=1, n_head=2, n_embd=4),  # two heads of 2 features, not one of 4
    dict(n_layer=1, n_head=1, n_embd=8),  # wider heads
], ids=["layers", "heads", "head_dim"])
def test_gpt_refuses_a_cache_made_for_another_model(other):
    # Checked where the input enters, before any layer writes into the cache.
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4))
    cache = GPT(GPTConfig(vocab_size=10, block_size=8, **other)).new_cache(batch_size=1)
    with pytest.raises(ValueError, match=r"cache holds \(n_layer, batch, heads, head_dim\) = "
                                         r".*but this model and idx need \(1, 1, 1, 4\)"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    assert cache.length == 0
