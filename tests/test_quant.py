"""Int8 quantization (llmcourse.quant): the round-trip bound, the layers against the float layer
within the bound and against torch's own quantization, the quantized GPT in generate, its file,
and bad input.

Oracles no one here wrote: torch's per-channel quantize/dequantize of the same codes and scales,
``torch.ao.quantization.quantize_dynamic`` on the same layer, the float model the codes stand
for (``dequantize_model``), and exact arithmetic on rows that are multiples of their scale.
"""

from __future__ import annotations

import errno
import json
import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open
from torch import nn

import llmcourse.quant.gpt_int8 as gpt_int8
import llmcourse.quant.int8 as int8
from llmcourse.core.files import NoSpaceError
from llmcourse.decoding.generate import generate
from llmcourse.models.checkpoint import save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig, parameter_count
from llmcourse.quant import (
    Int8Embedding,
    Int8Linear,
    QuantizedGPT,
    dequantize,
    dequantize_model,
    load_quantized,
    output_error_bound,
    quantize,
    quantize_model,
    save_quantized,
    torch_dynamic_int8,
)

KERNELS = [k for k in int8.KERNELS if k != "int8" or int8._int8_engine()[0] is not None]
SMALL = GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=2, n_embd=32)


def small_gpt(seed: int = 0, config: GPTConfig = SMALL) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


# --- quantize / dequantize -----------------------------------------------------------------

matrices = st.tuples(st.integers(1, 6), st.integers(1, 12), st.integers(0, 2**31 - 1),
                     st.sampled_from([1e-30, 1e-6, 1.0, 1e3, 1e30]))


def random_matrix(shape_seed_scale: tuple) -> torch.Tensor:
    rows, cols, seed, magnitude = shape_seed_scale
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * magnitude  # (rows, cols)
    w[torch.rand(rows, cols, generator=g) < 0.2] = 0.0  # some exact zeros, maybe a zero row
    return w


@given(matrices)
def test_round_trip_error_is_at_most_half_a_step(spec):
    w = random_matrix(spec)
    q, scale = quantize(w)
    assert q.dtype == torch.int8 and q.is_contiguous() and q.shape == w.shape
    assert scale.dtype == torch.float32 and bool((scale > 0).all())
    assert int(q.abs().max()) <= 127
    err = (dequantize(q, scale) - w).abs()  # (rows, cols)
    # half a step, up to float32 rounding of w / s and of s · q (a few units in the last place)
    assert bool((err <= scale[:, None] / 2 * (1 + 1e-5)).all()), float((err / scale[:, None]).max())
    nonzero = w.abs().amax(1) > 0
    assert bool((q[nonzero].abs().amax(1) == 127).all()), "each row's largest weight maps to ±127"


@given(st.integers(1, 5), st.integers(1, 10), st.integers(-30, 30), st.integers(0, 2**31 - 1))
def test_rows_that_are_multiples_of_their_scale_come_back_exactly(rows, cols, exponent, seed):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(-127, 128, (rows, cols), generator=g)  # (rows, cols) integer codes
    n[torch.arange(rows), torch.randint(0, cols, (rows,), generator=g)] = 127 * (
        1 - 2 * torch.randint(0, 2, (rows,), generator=g))  # each row reaches ±127
    step = 2.0**exponent  # a power of two: n · step is exact in float32, and so is max/127
    w = n.float() * step
    q, scale = quantize(w)
    assert torch.equal(q.long(), n)
    assert bool((scale == step).all())
    assert torch.equal(dequantize(q, scale), w)


def test_codes_and_values_match_torch_per_channel_quantization():
    torch.manual_seed(0)
    w = torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different size
    q, scale = quantize(w)
    zero = torch.zeros(64, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.quantize_per_channel(w, scale.double(), zero, 0, torch.qint8)
        from_codes = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
    # torch multiplies by 1/s where we divide by s: they may differ only at a tie (x.5)
    diff = theirs.int_repr().long() - q.long()
    ties = ((w / scale[:, None]).abs().frac() - 0.5).abs() < 1e-4
    assert bool((diff[~ties] == 0).all()) and int(diff.abs().max()) <= 1
    assert torch.equal(from_codes.dequantize(), dequantize(q, scale))


# --- the layers ------------------------------------------------------------------------------

def linear_and_inputs(seed: int, n_in: int, n_out: int) -> tuple[nn.Linear, list[torch.Tensor]]:
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    xs = [torch.randn(1, n_in), torch.randn(3, 5, n_in) * 4, torch.rand(2, n_in),
          torch.randn(1, n_in) * torch.logspace(-2, 2, n_in)]  # last: activations with outliers
    return layer, xs


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", [(48, 80), (96, 32), (64, 64)])
def test_int8_linear_is_within_its_error_bound_of_the_float_layer(kernel, shape):
    layer, xs = linear_and_inputs(sum(shape), *shape)
    q8 = Int8Linear.from_float(layer, kernel=kernel)
    assert q8.weight.dtype == torch.int8 and q8.kernel == kernel
    for x in xs:
        with torch.no_grad():
            expected, got = layer(x), q8(x)
        assert got.shape == expected.shape and got.dtype == torch.float32
        bound = output_error_bound(x, q8.weight, q8.scale, kernel=kernel)
        err = (got - expected).abs()
        assert bool((err <= bound).all()), f"error {float((err / bound).max()):.2f}x the bound"
        # and the int8 layer is not trivially inside a loose bound: it is close in absolute
        assert float(err.max()) < 0.05 * float(expected.abs().max()) + 1e-3


def test_bf16_kernel_takes_codes_that_start_anywhere_in_memory():
    """torch's _weight_int8pack_mm reads with aligned loads: codes read from a file (at any
    offset) once crashed the process; the layer copies misaligned codes first."""
    layer, xs = linear_and_inputs(2, 64, 48)
    q, scale = quantize(layer.weight)
    shifted = torch.empty(q.numel() + 1, dtype=torch.int8)[1:].view_as(q)  # odd address
    shifted.copy_(q)
    assert shifted.data_ptr() % 16 != 0
    aligned = Int8Linear(q, scale, layer.bias.detach(), kernel="bf16")
    moved = Int8Linear(shifted, scale, layer.bias.detach(), kernel="bf16")
    assert torch.equal(moved(xs[1]), aligned(xs[1]))


def test_the_bound_is_tight_enough_to_catch_a_wrong_scale():
    layer, xs = linear_and_inputs(1, 64, 64)
    q, scale = quantize(layer.weight)
    wrong = Int8Linear(q, scale * 1.03, layer.bias.detach(), kernel="dequant")  # 3% too large
    x = xs[0]
    bound = output_error_bound(x, q, scale, kernel="dequant")
    assert bool(((wrong(x) - layer(x)).abs() > bound).any())


@pytest.mark.skipif("int8" not in KERNELS, reason="no quantized int8 engine in this torch")
def test_int8_linear_agrees_with_torch_quantize_dynamic_on_the_same_layer():
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layer, xs = linear_and_inputs(3, 80, 56)
    ours = Int8Linear.from_float(layer, kernel="int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantize_dynamic(nn.Sequential(layer), {nn.Linear: per_channel_dynamic_qconfig},
                                  dtype=torch.qint8)[0]
        t_weight = theirs.weight()
        t_q, t_scale = t_weight.int_repr(), t_weight.q_per_channel_scales().float()
    for x in xs:
        with torch.no_grad():
            a, b = ours(x), theirs(x)
        # both are within their own bound of the float layer (torch: 7-bit activations)
        span = float(x.max().clamp(min=0) - x.min().clamp(max=0))
        theirs_bound = (output_error_bound(x, t_q, t_scale, kernel="dequant")
                        + span / 127 * dequantize(t_q, t_scale).abs().sum(-1))
        assert bool(((a - b).abs() <= output_error_bound(x, ours.weight, ours.scale,
                                                          kernel="int8") + theirs_bound).all())


def test_int8_embedding_reads_the_dequantized_rows():
    table = torch.randn(20, 6)
    emb = Int8Embedding(*quantize(table))
    idx = torch.tensor([[0, 19, 7], [7, 7, 1]])
    assert torch.equal(emb(idx), dequantize(emb.weight, emb.scale)[idx])
    assert bool(((emb(idx) - table[idx]).abs() <= emb.scale[idx, None] / 2 * (1 + 1e-5)).all())


# --- the quantized GPT -----------------------------------------------------------------------

def test_quantize_model_replaces_every_linear_layer_and_ties_the_embedding():
    model = small_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_model(model)
    assert isinstance(q, QuantizedGPT) and isinstance(q, GPT)
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    linears = [m for m in q.modules() if isinstance(m, Int8Linear)]
    assert len(linears) == 4 * SMALL.n_layer + 1
    assert q.lm_head.weight is q.transformer.wte.weight
    assert q.lm_head.scale is q.transformer.wte.scale
    assert q.num_parameters() == model.num_parameters()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "model changed"


@pytest.mark.parametrize("kernel", KERNELS)
def test_quantized_model_computes_what_its_codes_stand_for(kernel):
    """The int8 model against the float GPT holding Ŵ = s·q (built by dequantize_model): the
    same numbers through the course's own float forward."""
    q = quantize_model(small_gpt(1), kernel=kernel)
    reference = dequantize_model(q)
    idx = torch.randint(0, SMALL.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, ref = q(idx)[0], reference(idx)[0]
    tol = {"dequant": 1e-5, "int8": 0.05, "bf16": 0.05}[kernel]  # activations rounded: see bound
    assert float((got - ref).abs().max()) <= tol * float(ref.abs().max()) + 1e-5


def test_quantized_model_is_close_to_the_float_model():
    model = small_gpt(2)
    q = quantize_model(model)
    idx = torch.randint(0, SMALL.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, loss = model(idx, idx)
        q_logits, q_loss = q(idx, idx)
    assert float((q_logits - logits).abs().max()) < 0.02 * float(logits.abs().max())
    assert abs(q_loss.item() - loss.item()) < 0.01 * loss.item()


def test_generate_is_the_same_for_a_model_quantized_twice_and_after_save_and_load(tmp_path):
    model = small_gpt(3)
    a, b = quantize_model(model), quantize_model(model)
    prompt = torch.tensor([[5, 17, 2, 40], [1, 1, 60, 3]])
    out_a = generate(a, prompt, max_new_tokens=20)
    assert torch.equal(out_a, generate(b, prompt, max_new_tokens=20))
    loaded = load_quantized(save_quantized(tmp_path / "int8", a))
    assert torch.equal(out_a, generate(loaded, prompt, max_new_tokens=20))
    # the KV cache changes nothing: recomputing the whole text each step gives the same tokens
    assert torch.equal(out_a, generate(a, prompt, max_new_tokens=20, use_cache=False))
    bf16 = quantize_model(model, kernel="bf16")
    assert torch.equal(generate(bf16, prompt, max_new_tokens=20), generate(
        load_quantized(tmp_path / "int8", kernel="bf16"), prompt, max_new_tokens=20))
    sampled = [generate(m, prompt, max_new_tokens=12, do_sample=True, top_k=10,
                        generator=torch.Generator().manual_seed(4)) for m in (a, loaded)]
    assert torch.equal(*sampled)


def test_torch_dynamic_int8_peer_runs_in_generate():
    model = small_gpt(4)
    peer = torch_dynamic_int8(model)
    assert peer.lm_head._get_name() == "DynamicQuantizedLinear"
    assert isinstance(model.lm_head, nn.Linear), "the float model is not changed"
    out = generate(peer, torch.tensor([[1, 2, 3]]), max_new_tokens=5)
    assert out.shape == (1, 8)


# --- the file --------------------------------------------------------------------------------

def int8_file_bytes(c: GPTConfig) -> int:
    """Bytes of the tensors save_quantized writes: 1 per weight of the linear layers and the
    embeddings, 4 per scale (one per row), 4 per bias and LayerNorm weight."""
    width, layers = c.n_embd, c.n_layer
    codes = (c.vocab_size + c.block_size) * width + layers * 12 * width * width
    scales = c.vocab_size + c.block_size + layers * 9 * width  # rows: 3C + C + 4C + C
    floats = layers * 13 * width + 2 * width  # biases 9C, two LayerNorms 4C; ln_f
    assert codes + floats == parameter_count(c)
    return codes + 4 * (scales + floats)


def test_saved_file_is_int8_and_about_four_times_smaller(tmp_path):
    config = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=128)
    model = small_gpt(5, config)
    q = quantize_model(model)
    save_checkpoint(tmp_path / "fp32", model)
    folder = save_quantized(tmp_path / "int8", q)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert "lm_head.weight" not in dtypes, "the tied matrix is stored once"
    assert {k for k, d in dtypes.items() if d == torch.int8} == {
        k for k in dtypes if k.endswith(".weight") and not k.split(".")[-2].startswith("ln")}
    fp32_bytes = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    int8_bytes = (folder / "model.safetensors").stat().st_size
    header = 20_000  # safetensors' JSON header (names, shapes, offsets): a few kB
    assert 0 <= fp32_bytes - 4 * model.num_parameters() < header
    assert 0 <= int8_bytes - int8_file_bytes(config) < header
    assert fp32_bytes / int8_bytes >= 3.7  # small model: LayerNorms and biases weigh more
    # GPT-2 small (124M), by the same count: the 4x of the issue
    gpt2 = GPTConfig()
    assert 4 * parameter_count(gpt2) / int8_file_bytes(gpt2) >= 3.9
    config_json = json.loads((folder / "config.json").read_text())
    assert config_json["model_type"] == "llmcourse-gpt-int8"


def test_save_is_atomic_a_full_disk_leaves_the_previous_folder(tmp_path, monkeypatch):
    first = quantize_model(small_gpt(6))
    folder = save_quantized(tmp_path / "int8", first)
    before = (folder / "model.safetensors").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gpt_int8, "save_file", full_disk)
    with pytest.raises(NoSpaceError, match="model.safetensors"):
        save_quantized(folder, quantize_model(small_gpt(7)))
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]


def test_load_refuses_what_is_not_an_int8_gpt(tmp_path):
    model = small_gpt(8)
    save_checkpoint(tmp_path / "fp32", model)
    with pytest.raises(ValueError, match="load_checkpoint"):
        load_quantized(tmp_path / "fp32")
    with pytest.raises(ValueError, match="lacks config.json"):
        load_quantized(tmp_path / "nowhere")
    folder = save_quantized(tmp_path / "int8", quantize_model(model))
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    name = "transformer.h.0.mlp.c_fc.weight"
    tensors[name] = tensors[name].float()
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ValueError, match=f"{name}.*torch.float32.*expected torch.int8"):
        load_quantized(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_quantized(folder)


# --- bad input -------------------------------------------------------------------------------

def test_quantize_refuses_bad_weights_naming_them():
    with pytest.raises(TypeError, match="weight must be float32.*integer"):
        quantize(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"weight .*float64.*\.float\(\)"):
        quantize(torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight contains NaN"):
        quantize(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="weight contains inf"):
        quantize(torch.tensor([[1.0, math.inf]]))
    with pytest.raises(ValueError, match="2-D"):
        quantize(torch.ones(3))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        quantize([[1.0]])
    with pytest.raises(TypeError, match="scale must be a float32 tensor of shape"):
        dequantize(torch.ones(2, 2, dtype=torch.int8), torch.ones(3))


def test_quantize_model_refuses_a_quantized_model_and_nan_weights_changing_nothing():
    model = small_gpt(9)
    q = quantize_model(model)
    snapshot = {k: v.clone() for k, v in q.state_dict().items()}
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(q)
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in snapshot.items())
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[3, 4] = math.nan
    with pytest.raises(ValueError, match=r"h\.1\.mlp\.c_fc\.weight: weight contains NaN"):
        quantize_model(model)
    with pytest.raises(TypeError, match="model must be a llmcourse GPT"):
        quantize_model(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="quantize_model"):
        QuantizedGPT(SMALL)


def test_int8_linear_refuses_bad_activations_naming_x():
    layer = Int8Linear.from_float(nn.Linear(8, 4), kernel="dequant")
    with pytest.raises(TypeError, match="x must be float32.*float64"):
        layer(torch.ones(1, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be float32.*int64"):
        layer(torch.ones(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., 8\)"):
        layer(torch.ones(1, 7))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        layer([1.0] * 8)


def test_a_kernel_the_machine_cannot_run_is_refused_naming_it(monkeypatch):
    with pytest.raises(ValueError, match="kernel must be 'auto' or one of"):
        quantize_model(small_gpt(), kernel="int4")
    monkeypatch.setattr(int8, "_int8_engine", lambda: (None, True))  # a torch with no engine
    with pytest.raises(ValueError, match="kernel='int8' needs torch's quantized int8 engine"):
        quantize_model(small_gpt(), kernel="int8")
    assert quantize_model(small_gpt(), kernel="auto").kernel == "dequant"  # auto falls back


def test_a_quantized_model_cannot_be_saved_as_a_float_checkpoint(tmp_path):
    q = quantize_model(small_gpt(10))
    with pytest.raises(TypeError, match="save_quantized"):
        save_checkpoint(tmp_path / "ckpt", q)
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(TypeError, match="QuantizedGPT"):
        save_quantized(tmp_path / "x", small_gpt(10))
