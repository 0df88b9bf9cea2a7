"""A GPT with int8 weights: quantize it, save it, load it, and torch's own version to compare.

:func:`quantize_model` turns a course :class:`~llmcourse.models.gpt.GPT` into a
:class:`QuantizedGPT`: every linear layer (attention, MLP, output) becomes an
:class:`~llmcourse.quant.int8.Int8Linear`, the two embedding tables become
:class:`~llmcourse.quant.int8.Int8Embedding` (int8 rows with one scale each); LayerNorms and
biases (0.1% of GPT-2's weights) stay float32. It is the same model class with the same
forward, so training-style scoring, :func:`llmcourse.decoding.generate.generate` and the KV
cache work unchanged.

**The tied embedding.** The output layer's weight IS the token embedding (V, C), and its
output channels are the vocabulary's rows, so one set of codes and per-row scales serves both:
the output layer multiplies by it, the lookup reads T rows of it. Keeping a float copy for the
lookup would store the largest matrix twice (GPT-2 small: 154 MB of float32 next to 39 MB of
int8), and the file would shrink 2.2× instead of 4×. The position table is quantized the same
way, per row: for GPT-2 small that takes the file from 3.90× to 3.97× smaller than float32,
and it moved the course checkpoint's held-out loss by under 0.01% (1.37064 → 1.37069
nats/char, measured when this was written: the same model with the table float and int8,
evaluated as ``tests/test_course_checkpoint.py`` does).

**The file** (:func:`save_quantized`, :func:`load_quantized`): a folder with
``model.safetensors`` (int8 codes, float32 scales, the float rest; the tied matrix once) and
``config.json`` (``model_type`` ``"llmcourse-gpt-int8"``), written atomically like every
checkpoint of the course and read back with no pickle.

**The peer.** :func:`torch_dynamic_int8` applies ``torch.ao.quantization.quantize_dynamic``
(per-tensor weight scales by default, 7-bit activations) to a copy of the same GPT.

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    >>> small = quantize_model(model)
    >>> small.lm_head.weight.dtype, small.lm_head.weight is small.transformer.wte.weight
    (torch.int8, True)
    >>> small(torch.tensor([[1, 2, 3]]))[0].shape
    torch.Size([1, 3, 64])
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from llmcourse.core.files import recover_folder, report_full_disk, staging_folder
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.nn.kv_cache import KVCache
from llmcourse.quant.int8 import QMAX, Int8Embedding, Int8Linear, quantize, resolve_kernel

__all__ = ["MODEL_TYPE", "QuantizedGPT", "quantize_model", "dequantize_model", "save_quantized",
           "load_quantized", "torch_dynamic_int8"]

MODEL_TYPE = "llmcourse-gpt-int8"
MODEL_FILE, CONFIG_FILE = "model.safetensors", "config.json"
_TIED = ("lm_head.weight", "lm_head.scale")  # = transformer.wte.weight / .scale: stored once
_EMBEDDINGS = ("transformer.wte", "transformer.wpe")


class QuantizedGPT(GPT):
    """A :class:`~llmcourse.models.gpt.GPT` whose linear layers and embeddings hold int8
    weights (made by :func:`quantize_model` or :func:`load_quantized`, not by calling the
    class). Same forward; no training (the int8 weights are buffers, not parameters).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("make a QuantizedGPT with quantize_model(gpt) or load_quantized(folder)")

    @property
    def kernel(self) -> str:
        """The matmul kernel of the linear layers (see :mod:`llmcourse.quant.int8`)."""
        return self.lm_head.kernel

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty float32 cache: the activations are float (the embedding is int8)."""
        c = self.config
        p = self.transformer.ln_f.weight
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.block_size,
                       c.n_embd // c.n_head, dtype=p.dtype, device=p.device)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Weights of the model, int8 ones included (the tied matrix once), as for the GPT."""
        n = sum(p.numel() for p in self.parameters())
        n += sum(m.weight.numel() for name, m in self.named_modules()
                 if isinstance(m, (Int8Linear, Int8Embedding)) and name != "lm_head"
                 and not (exclude_embeddings and name in _EMBEDDINGS))
        n += sum(m.bias.numel() for m in self.modules()
                 if isinstance(m, Int8Linear) and m.bias is not None)
        return n

    def to_hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Refused: GPT-2's format holds float weights. ``dequantize_model`` first."""
        raise TypeError("a QuantizedGPT has int8 weights, which GPT-2's checkpoint format cannot "
                        "hold: save it with llmcourse.quant.save_quantized, or convert it with "
                        "dequantize_model() first")


def _is_quantized(model: nn.Module) -> bool:
    return isinstance(model, QuantizedGPT) or any(
        isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules())


def _twin(model: GPT, linear: dict[str, tuple], embedding: dict[str, tuple], kernel: str
          ) -> QuantizedGPT:
    """A copy of ``model`` in which each named linear layer / embedding is replaced by its int8
    version built from ``(q, scale, bias)`` / ``(q, scale)``; the float modules being replaced
    are never copied (``deepcopy``'s memo maps them to their replacements)."""
    modules = dict(model.named_modules())
    memo: dict[int, Any] = {}
    for name, (q, scale) in embedding.items():
        memo[id(modules[name])] = Int8Embedding(q, scale)
    for name, (q, scale, bias) in linear.items():
        memo[id(modules[name])] = Int8Linear(q, scale, bias, kernel=kernel)
    twin = copy.deepcopy(model, memo)
    twin.__class__ = QuantizedGPT  # the same object layout: GPT's forward, QuantizedGPT's extras
    return twin.eval()


def quantize_model(model: GPT, *, kernel: str = "auto") -> QuantizedGPT:
    """An int8 copy of ``model``: every linear layer and both embeddings quantized per output
    channel (per row), see :mod:`llmcourse.quant.int8`. ``model`` is not changed.

    Args:
        model: a course GPT with float weights, on the CPU for the ``"int8"`` kernel.
        kernel: ``"auto"``, ``"int8"``, ``"bf16"`` or ``"dequant"`` for the linear layers.

    Raises:
        TypeError: not a course GPT.
        ValueError: the model is already quantized; a weight holds NaN or inf (naming it);
            a kernel this machine cannot run (naming ``kernel``). Nothing is built then.

    Example:
        >>> from llmcourse.models.gpt import GPT, GPTConfig
        >>> q = quantize_model(GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1,
        ...                                  n_embd=4)))
        >>> quantize_model(q)
        Traceback (most recent call last):
        ...
        ValueError: model is already quantized (it holds int8 weights); quantize the float GPT ...
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a llmcourse GPT, got {type(model).__name__}")
    if _is_quantized(model):
        raise ValueError("model is already quantized (it holds int8 weights); quantize the "
                         "float GPT it came from instead (rounding twice would add error)")
    device = model.transformer.wte.weight.device
    kernel = resolve_kernel(kernel, device)
    linear, embedding = {}, {}
    for name, module in model.named_modules():
        if (isinstance(module, nn.Linear) and name != "lm_head") or name in _EMBEDDINGS:
            try:
                q, scale = quantize(module.weight)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{name}.weight: {err}") from None
            if name in _EMBEDDINGS:
                embedding[name] = (q, scale)
            else:
                bias = None if module.bias is None else module.bias.detach().clone()
                linear[name] = (q, scale, bias)
    # The output layer multiplies by the token embedding's very codes: the same two tensors
    # (tied, stored once).
    linear["lm_head"] = (*embedding["transformer.wte"], None)
    return _twin(model, linear, embedding, kernel)


def dequantize_model(model: QuantizedGPT) -> GPT:
    """A float32 GPT holding Ŵ = scale · q for every quantized weight (the int8 model's
    exact numbers, e.g. for ``to_hf``). ``model`` is not changed.

    Example:
        >>> from llmcourse.models.gpt import GPT, GPTConfig
        >>> q = quantize_model(GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1,
        ...                                  n_embd=4)))
        >>> type(dequantize_model(q)).__name__
        'GPT'
    """
    if not isinstance(model, QuantizedGPT):
        raise TypeError(f"model must be a QuantizedGPT, got {type(model).__name__}")
    fp32 = GPT(model.config)  # then copied into: its layers keep their fast layouts
    state = {}
    for name, tensor in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if name.endswith(".scale"):
            continue
        if name.endswith(".weight") and tensor.dtype == torch.int8:
            tensor = tensor.float() * model.state_dict()[f"{module}.scale"][:, None]
        state[name] = tensor.clone()
    fp32.load_state_dict(state, strict=True)
    return fp32.to(model.transformer.ln_f.weight.device).eval()


def save_quantized(folder: str | os.PathLike, model: QuantizedGPT, *,
                   tokenizer: Any = None) -> Path:
    """Write ``model`` (and optionally its tokenizer) into ``folder``, replacing it atomically
    (a crash or a full disk leaves the previous folder as it was).

    Returns:
        The folder.

    Example:
        >>> import tempfile
        >>> from llmcourse.models.gpt import GPT, GPTConfig
        >>> q = quantize_model(GPT(GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2,
        ...                                  n_embd=16)))
        >>> folder = save_quantized(tempfile.mkdtemp() + "/int8", q)
        >>> torch.equal(load_quantized(folder).lm_head.weight, q.lm_head.weight)
        True
    """
    if not isinstance(model, QuantizedGPT):
        raise TypeError(f"model must be a QuantizedGPT (from quantize_model), got "
                        f"{type(model).__name__}; save a float GPT with save_checkpoint")
    if tokenizer is not None and not callable(getattr(tokenizer, "save", None)):
        raise TypeError(f"tokenizer must have save(folder), got {type(tokenizer).__name__}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
               if k not in _TIED}
    config = {"model_type": MODEL_TYPE, "format_version": 1,
              "quantization": {"weights": "int8, one symmetric scale per output channel",
                               "qmax": QMAX, "float": "LayerNorms, biases"},
              "config": model.config.to_dict()}
    folder = recover_folder(folder)
    intact = "the previous folder is intact" if folder.is_dir() else "nothing was written"
    with staging_folder(folder, intact) as tmp:
        with report_full_disk(folder / MODEL_FILE, intact):
            save_file(tensors, tmp / MODEL_FILE, metadata={"format": "pt"})
        with report_full_disk(folder / CONFIG_FILE, intact):
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp)
    return folder


def load_quantized(folder: str | os.PathLike, *, kernel: str = "auto") -> QuantizedGPT:
    """Read a folder written by :func:`save_quantized` (safetensors and JSON: no pickle).

    Raises:
        ValueError: no such folder, a missing or unreadable file, a folder that is not an int8
            GPT (a float checkpoint is read by ``load_checkpoint``), or tensors that do not
            fit the config (naming the first one).
    """
    folder = recover_folder(folder)
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder.name}: not an int8 GPT folder, it lacks {name}")
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{folder.name}/{CONFIG_FILE}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        got = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{folder.name}/{CONFIG_FILE}: model_type is {got!r}, not "
                         f"{MODEL_TYPE!r}; a float checkpoint loads with load_checkpoint")
    if raw.get("format_version") != 1:
        raise ValueError(f"{folder.name}/{CONFIG_FILE}: format_version "
                         f"{raw.get('format_version')!r}; this code reads version 1")
    try:
        config = GPTConfig(**raw["config"])
        tensors = load_file(folder / MODEL_FILE)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{folder.name}/{CONFIG_FILE}: not a GPTConfig ({err})") from None
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{folder.name}/{MODEL_FILE}: unreadable ({err})") from None
    with torch.device("meta"):
        skeleton = GPT(config)
    shapes = {name: skeleton.get_submodule(name).weight.shape for name, m in
              skeleton.named_modules() if isinstance(m, nn.Linear) or name in _EMBEDDINGS}
    fake = lambda shape: (torch.empty(shape, dtype=torch.int8, device="meta"),  # noqa: E731
                          torch.ones(shape[0], device="meta"))
    linear = {n: (*fake(s), skeleton.get_submodule(n).bias) for n, s in shapes.items()
              if n not in _EMBEDDINGS}
    model = _twin(skeleton, linear, {n: fake(shapes[n]) for n in _EMBEDDINGS},
                  resolve_kernel(kernel))
    for name in _TIED:
        tensors[name] = tensors.get(name.replace("lm_head", "transformer.wte"))
    expected = model.state_dict()
    for name, ref in expected.items():
        got = tensors.get(name)
        if not isinstance(got, torch.Tensor) or got.shape != ref.shape or got.dtype != ref.dtype:
            what = "missing" if got is None else f"{got.dtype} {tuple(got.shape)}"
            raise ValueError(f"{folder.name}/{MODEL_FILE}: tensor {name!r} is {what}, expected "
                             f"{ref.dtype} {tuple(ref.shape)} for {config}")
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise ValueError(f"{folder.name}/{MODEL_FILE}: unexpected tensor {unknown[0]!r}")
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def torch_dynamic_int8(model: GPT, *, per_channel: bool = False) -> GPT:
    """torch's own int8: ``torch.ao.quantization.quantize_dynamic`` on a copy of ``model``.

    ``quantize_dynamic`` swaps modules whose type is exactly ``nn.Linear``, so the copy holds
    plain ``nn.Linear`` layers with the same weights; each becomes a
    ``DynamicQuantizedLinear`` (its int8 weights packed for fbgemm/qnnpack, one scale for the
    whole matrix unless ``per_channel``; activations quantized per call to 7 bits). The token
    embedding stays float32 for the lookup (the output layer gets its own int8 copy).

    Example:
        >>> from llmcourse.models.gpt import GPT, GPTConfig
        >>> peer = torch_dynamic_int8(GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1,
        ...                                         n_head=2, n_embd=8)))
        >>> peer.lm_head._get_name()
        'DynamicQuantizedLinear'
    """
    if not isinstance(model, GPT) or _is_quantized(model):
        raise TypeError(f"model must be a float llmcourse GPT, got {type(model).__name__}")
    memo: dict[int, Any] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            plain = nn.Linear(module.in_features, module.out_features,
                              bias=module.bias is not None, device="meta")
            plain.weight = nn.Parameter(module.weight.detach().contiguous().clone())
            if module.bias is not None:
                plain.bias = nn.Parameter(module.bias.detach().clone())
            memo[id(module)] = plain
    twin = copy.deepcopy(model, memo).eval()
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():  # torch marks its eager quantization API as deprecated
        warnings.simplefilter("ignore")
        return quantize_dynamic(twin, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
