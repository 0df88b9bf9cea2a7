"""models/sizing.py: the arithmetic against what torch and transformers really build and count.

Oracles: the bytes of the course's KVCache tensors; numel over a GPT, a GPT2LMHeadModel and a
LlamaForCausalLM built on the meta device (shapes, no memory); the state torch.optim.AdamW
really keeps; torch.utils.flop_counter.FlopCounterMode over the course GPT and transformers'
Llama. FlopCounterMode counts matrix products only (mm, addmm, bmm, and the attention when
scaled_dot_product_attention runs its "math" version, which computes the whole T × T square);
the formulas count the same products, so forward passes agree to the FLOP.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llmcourse.models import sizing
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.sizing import PUBLISHED, ModelShape
from llmcourse.nn.kv_cache import KVCache

GPT2_SIZES = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]


def _random_gpt_shape(rng: random.Random) -> ModelShape:
    n_head = rng.choice([1, 2, 3, 4])
    return ModelShape("random", n_layer=rng.randint(1, 3), d_model=n_head * rng.choice([8, 16]),
                      n_head=n_head, vocab_size=rng.randint(11, 97),
                      context=rng.choice([8, 16, 24]))


def _random_llama_shape(rng: random.Random) -> ModelShape:
    n_kv = rng.choice([1, 2])
    n_head = n_kv * rng.choice([1, 2, 4])
    return ModelShape("random-llama", n_layer=rng.randint(1, 3),
                      d_model=n_head * rng.choice([4, 8]), n_head=n_head,
                      vocab_size=rng.randint(11, 97), context=16, n_kv_head=n_kv,
                      d_ff=rng.choice([24, 40, 56]), style="llama")


def _hf_llama(shape: ModelShape):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=shape.vocab_size, hidden_size=shape.d_model,
                      intermediate_size=shape.ff, num_attention_heads=shape.n_head,
                      num_key_value_heads=shape.kv_heads, num_hidden_layers=shape.n_layer,
                      max_position_embeddings=shape.context, tie_word_embeddings=shape.tied)
    return LlamaForCausalLM(cfg)


# ------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("name", GPT2_SIZES + ["gpt3-175b"])
def test_gpt2_style_counts_equal_the_models_built_on_meta(name):
    from transformers import GPT2LMHeadModel

    shape = PUBLISHED[name]
    with torch.device("meta"):  # shapes only: GPT-3's 175B parameters cost nothing
        ours = GPT(shape.to_gpt_config())
        n_ours = sum(p.numel() for p in ours.parameters())  # the tied matrix listed once
        n_hf = GPT2LMHeadModel(shape.to_gpt_config().to_hf()).num_parameters() \
            if name != "gpt3-175b" else n_ours
    assert sizing.parameters(shape) == n_ours == n_hf


@pytest.mark.parametrize("name", ["llama2-7b", "llama2-70b"])
def test_llama_counts_equal_transformers_llama_on_meta(name):
    shape = PUBLISHED[name]
    with torch.device("meta"):
        model = _hf_llama(shape)
    assert sizing.parameters(shape) == sum(p.numel() for p in model.parameters())
    assert model.model.layers[0].self_attn.k_proj.weight.shape[0] == shape.kv_heads * 128


def test_random_llama_shapes_with_gqa_equal_transformers():
    rng = random.Random(9)
    for _ in range(6):
        shape = _random_llama_shape(rng)
        with torch.device("meta"):
            model = _hf_llama(shape)
        assert sizing.parameters(shape) == sum(p.numel() for p in model.parameters()), shape


def test_random_llama_shapes_with_a_tied_output_layer_equal_transformers():
    rng = random.Random(10)
    for _ in range(4):
        shape = replace(_random_llama_shape(rng), tie_embeddings=True)
        with torch.device("meta"):
            model = _hf_llama(shape)
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert sizing.parameters(shape) == sum(p.numel() for p in model.parameters()), shape
        untied = replace(shape, tie_embeddings=False)
        assert sizing.parameters(untied) - sizing.parameters(shape) == shape.vocab_size * \
            shape.d_model
        assert sizing.matmul_parameters(untied) == sizing.matmul_parameters(shape)


def test_tied_is_each_styles_own_unless_said():
    s = PUBLISHED["llama2-7b"]
    assert not s.tied and PUBLISHED["gpt2"].tied and replace(s, tie_embeddings=True).tied
    with pytest.raises(ValueError, match="tied output layer"):
        replace(PUBLISHED["gpt2"], tie_embeddings=False)
    with pytest.raises(TypeError, match="tie_embeddings must be True, False or None"):
        replace(s, tie_embeddings=1)


@pytest.mark.parametrize("name", sorted(sizing.PAPER_PARAMETERS))
def test_counts_are_within_the_stated_gap_of_the_papers(name):
    paper, tolerance = sizing.PAPER_PARAMETERS[name]
    ours = sizing.parameters(PUBLISHED[name])
    assert abs(ours - paper) / paper <= tolerance, (name, ours, paper)


def test_gpt2_counts_are_the_names_in_use():
    names = {"gpt2": 124e6, "gpt2-medium": 355e6, "gpt2-large": 774e6, "gpt2-xl": 1558e6}
    for name, n in names.items():
        assert round(sizing.parameters(PUBLISHED[name]) / 1e6) == round(n / 1e6), name


def test_matmul_parameters_are_the_matrices_a_token_meets():
    rng = random.Random(1)
    for _ in range(4):
        shape = _random_gpt_shape(rng)
        with torch.device("meta"):
            model = GPT(shape.to_gpt_config())
        mats = sum(p.numel() for n, p in model.named_parameters()
                   if p.ndim == 2 and n != "transformer.wpe.weight")  # wte is the output layer
        assert sizing.matmul_parameters(shape) == mats


def test_gpt2_style_shape_refuses_what_the_course_gpt_cannot_be():
    with pytest.raises(ValueError, match="n_kv_head = n_head"):
        ModelShape("x", n_layer=1, d_model=8, n_head=2, vocab_size=5, context=4, n_kv_head=1)
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        ModelShape("x", n_layer=1, d_model=12, n_head=3, vocab_size=5, context=4, n_kv_head=2,
                   style="llama")
    with pytest.raises(ValueError, match="divisible"):
        ModelShape("x", n_layer=1, d_model=10, n_head=3, vocab_size=5, context=4)
    with pytest.raises(ValueError, match="positive integer"):
        ModelShape("x", n_layer=0, d_model=8, n_head=2, vocab_size=5, context=4)
    with pytest.raises(ValueError, match="only 'gpt2'-style"):
        PUBLISHED["llama2-7b"].to_gpt_config()


# ------------------------------------------------------------------------ bytes


@pytest.mark.parametrize("dtype, torch_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                ("fp16", torch.float16), ("int8", torch.int8)])
def test_weight_bytes_are_the_bytes_of_a_tensor_of_that_dtype(dtype, torch_dtype):
    for n in (1, 7, 1000, 12345):
        assert sizing.weight_bytes(n, dtype) == torch.empty(n, dtype=torch_dtype).nbytes


def test_int4_packs_two_numbers_a_byte():
    assert [sizing.weight_bytes(n, "int4") for n in (1, 2, 3, 8)] == [1, 1, 2, 4]


def test_weight_bytes_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype 'int3'.*fp32"):
        sizing.weight_bytes(10, "int3")
    with pytest.raises(ValueError, match="positive integer"):
        sizing.weight_bytes(0, "fp32")


def test_fp32_training_state_is_what_adamw_keeps():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, loss = model(torch.randint(50, (2, 8)), torch.randint(50, (2, 8)))
    loss.backward()
    opt.step()
    params = list(model.parameters())
    kept = sum(p.nbytes + p.grad.nbytes for p in params) + sum(
        t.nbytes for p in params for k, t in opt.state[p].items() if k != "step")
    n = model.num_parameters()
    assert kept == sizing.training_state_bytes(n, "fp32") == 16 * n


def test_training_recipes_add_up():
    totals = {r: sum(sizing.training_bytes_per_parameter(r).values())
              for r in sizing.TRAINING_RECIPES}
    assert totals == {"fp32": 16, "autocast": 16, "mixed": 16, "bf16": 8}
    parts = sizing.training_bytes_per_parameter("fp32")
    parts["weights"] = 0  # a copy: the table itself is untouched
    assert sizing.training_bytes_per_parameter("fp32")["weights"] == 4
    with pytest.raises(ValueError, match="unknown recipe"):
        sizing.training_state_bytes(10, "fp8")


# ------------------------------------------------------------------------ KV cache


@pytest.mark.parametrize("dtype, nbytes", [(torch.float32, 4), (torch.bfloat16, 2),
                                           (torch.float16, 2)])
def test_kv_formula_is_the_bytes_of_the_course_cache(dtype, nbytes):
    rng = random.Random(str(dtype))
    for _ in range(8):
        n_layer, batch, n_head = rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 4)
        max_len, head_dim = rng.randint(1, 40), rng.choice([2, 8, 16])
        cache = KVCache(n_layer, batch, n_head, max_len, head_dim, dtype=dtype)
        expected = cache.k.nbytes + cache.v.nbytes
        assert sizing.kv_cache_bytes(n_layer, n_head, head_dim, max_len, batch, nbytes) \
            == expected
        assert sizing.kv_cache_bytes_per_token(n_layer, n_head, head_dim, nbytes) * max_len \
            * batch == expected


def test_kv_formula_is_the_bytes_of_a_gpt_cache():
    cfg = GPTConfig(vocab_size=30, block_size=20, n_layer=3, n_head=2, n_embd=24)
    cache = GPT(cfg).new_cache(batch_size=2)
    assert sizing.kv_cache_bytes(3, 2, 12, 20, 2, 4) == cache.k.nbytes + cache.v.nbytes


def test_gqa_shrinks_the_cache_by_the_group_size():
    s = PUBLISHED["llama2-70b"]
    full = sizing.kv_cache_bytes(s.n_layer, s.n_head, s.head_dim, s.context, 1, 2)
    grouped = sizing.kv_cache_bytes(s.n_layer, s.kv_heads, s.head_dim, s.context, 1, 2)
    assert full == 8 * grouped


def test_kv_refuses_bad_sizes():
    with pytest.raises(ValueError, match="n_kv_head must be a positive integer"):
        sizing.kv_cache_bytes(2, 0, 8, 10)
    with pytest.raises(ValueError, match="bytes_per_value must be positive"):
        sizing.kv_cache_bytes_per_token(2, 2, 8, 0)


# ------------------------------------------------------------------------ FLOPs


def _counted(model, x, *, backward=False) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        if backward:
            out = model(x, x)[1] if isinstance(model, GPT) else model(x, labels=x).loss
            out.backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()


def test_forward_flops_equal_the_counter_on_the_course_gpt():
    rng = random.Random(2)
    for _ in range(4):
        shape = _random_gpt_shape(rng)
        model = GPT(shape.to_gpt_config()).eval()
        t = rng.randint(1, shape.context)
        x = torch.randint(shape.vocab_size, (2, t))  # (B, T)
        expected = 2 * t * sizing.forward_flops_per_token(shape, t, full_square=True)
        assert _counted(model, x) == expected, shape


def test_training_flops_are_three_forward_passes_on_the_counter():
    shape = ModelShape("s", n_layer=2, d_model=32, n_head=2, vocab_size=40, context=16)
    model = GPT(shape.to_gpt_config())
    x = torch.randint(40, (3, 16))
    counted = _counted(model, x, backward=True)
    assert counted == sizing.training_flops(shape, 3 * 16, full_square=True)


def test_flops_equal_the_counter_on_transformers_llama_with_gqa():
    rng = random.Random(3)
    for _ in range(3):
        shape = _random_llama_shape(rng)
        model = _hf_llama(shape).eval()
        x = torch.randint(shape.vocab_size, (1, shape.context))
        expected = shape.context * sizing.forward_flops_per_token(shape, full_square=True)
        assert _counted(model, x) == expected, shape
    counted = _counted(model.train(), x, backward=True)
    assert counted == sizing.training_flops(shape, shape.context, full_square=True)


def test_causal_attention_term_is_half_the_square():
    s = PUBLISHED["gpt2"]
    half = sizing.forward_flops_per_token(s) - 2 * sizing.matmul_parameters(s)
    full = sizing.forward_flops_per_token(s, full_square=True) - 2 * sizing.matmul_parameters(s)
    assert full == 2 * half == 4 * s.n_layer * s.context * s.d_model


def test_two_n_and_six_n_for_large_models():
    s = PUBLISHED["gpt3-175b"]
    n = sizing.parameters(s)
    ratio = sizing.forward_flops_per_token(s) / (2 * n)
    assert 1.0 < ratio < 1.05  # the attention term adds a few percent at a 2048 context
    assert sizing.training_flops(s, 300 * 10**9) / (6 * n * 300e9) == pytest.approx(ratio)
    # Brown et al. 2020 (Table D.1) give 3.14e23 FLOPs for 300B tokens: 6N·D is 3.14e23 too.
    assert f"{6 * n * 300e9:.3g}" == "3.14e+23"
