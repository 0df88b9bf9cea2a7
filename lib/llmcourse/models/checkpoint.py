"""Checkpoints in Hugging Face's GPT-2 format, written atomically.

A checkpoint is a folder that ``transformers.GPT2LMHeadModel.from_pretrained(folder)`` (and
``AutoTokenizer.from_pretrained(folder)``, when a BPE tokenizer is saved) can load as it is:

    model.safetensors     the weights under GPT-2's names (``transformer.h.0.attn.c_attn.weight``…)
    config.json           a ``GPT2Config``
    vocab.json, merges.txt, tokenizer_config.json, …   the tokenizer (ByteLevelBPE), or
    char_vocab.json       a CharTokenizer (ours only; transformers has no such tokenizer)
    training_state.pt     optional: optimizer state, step, random-number states, history

**Tied weights.** The output layer shares its matrix with the token embedding, and
``safetensors`` refuses to store two names for one tensor. Like ``save_pretrained``, we store
the matrix once (as ``transformer.wte.weight``) and leave ``lm_head.weight`` out; GPT-2's config
says ``tie_word_embeddings: true`` so ``transformers`` re-ties it on load, and so do we.

**The Llama-style model** (:class:`~llmcourse.models.llama.Llama`, chapter 10) is written in
``transformers``' Llama format: ``config.json`` a ``LlamaConfig`` (``model_type`` ``"llama"``,
architectures ``LlamaForCausalLM``), the weights under its names, the embedding stored once
when the output layer is tied (``tie_word_embeddings``). ``AutoModelForCausalLM.
from_pretrained(folder)`` loads it; :func:`load_checkpoint` reads it back, and reads a
``transformers`` Llama folder too, refusing configs with features the course does not
implement (:func:`llmcourse.models.llama_hf.config_from_hf`).

**The encoder–decoder** (:class:`~llmcourse.models.seq2seq.Seq2Seq`, chapter 06) has no
``transformers`` counterpart with the same layout; its folder holds the same files, with the
course's own names and a ``config.json`` of ``model_type`` ``"llmcourse-seq2seq"`` (its
:class:`~llmcourse.models.seq2seq.Seq2SeqConfig`), and is written the same atomic way.

**Atomic.** Every file goes into a fresh temporary folder beside the target; only when all are
written and flushed to disk does the folder swap in, by two renames: old → ``.NAME.previous``,
new → ``NAME``, then the old is deleted (:func:`llmcourse.core.files.staging_folder`). A crash
or a full disk while writing leaves the old checkpoint untouched (a full disk is reported as
:class:`~llmcourse.core.files.NoSpaceError`, naming the file); a crash between the renames
leaves it under ``.NAME.previous``, from which every reader (:func:`load_checkpoint`,
:func:`is_checkpoint`, ``load_tokenizer``, ``load_gpt2``) and the next :func:`save_checkpoint`
restore it with :func:`~llmcourse.core.files.recover_folder`.

Example:
    >>> from llmcourse.models.gpt import GPT, GPTConfig
    >>> import tempfile
    >>> model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    >>> folder = save_checkpoint(tempfile.mkdtemp() + "/ckpt", model)
    >>> loaded, state = load_checkpoint(folder)
    >>> torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight), state
    (True, None)
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmcourse.core.files import recover_folder, report_full_disk, staging_folder
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.llama import Llama, LlamaConfig
from llmcourse.models.llama_hf import config_from_hf, config_to_hf, from_hf_state_dict
from llmcourse.models.llama_hf import to_hf_state_dict as llama_hf_state_dict
from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["MODEL_FILE", "CONFIG_FILE", "STATE_FILE", "save_checkpoint", "load_checkpoint",
           "is_checkpoint"]

MODEL_FILE, CONFIG_FILE, STATE_FILE = "model.safetensors", "config.json", "training_state.pt"
_TIED = "lm_head.weight"
_STORE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SEQ2SEQ_TYPE = "llmcourse-seq2seq"  # config.json's model_type for an encoder-decoder
_RESERVED = frozenset({MODEL_FILE, CONFIG_FILE, STATE_FILE})  # not to be overwritten by extras


def _check_tokenizer(tokenizer: Any, model_vocab: int) -> None:
    """Refuse a tokenizer that cannot be saved or that makes ids the model has no row for."""
    size = getattr(tokenizer, "vocab_size", None)
    if not callable(getattr(tokenizer, "save", None)) or isinstance(size, bool) or \
            not isinstance(size, int):
        raise TypeError(f"tokenizer must have save(folder) and an integer vocab_size (as "
                        f"ByteLevelBPE and CharTokenizer do), got {type(tokenizer).__name__}")
    # Fewer tokens than the model's rows is fine (GPT-2 pads its vocabulary for speed); more
    # would make ids that the embedding has no row for.
    if size > model_vocab:
        raise ValueError(f"the tokenizer has {size} tokens but the model's vocab_size is "
                         f"{model_vocab}: ids {model_vocab}..{size - 1} would have no "
                         "embedding; build the model with vocab_size >= the tokenizer's")


def _serialize(model: GPT | Llama | Seq2Seq) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors to store (each shared matrix once) and the config file's text."""
    if isinstance(model, Llama):
        tensors = llama_hf_state_dict(model)
        if model.config.tie_embeddings:
            tensors.pop(_TIED)  # = model.embed_tokens.weight, stored once (as save_pretrained)
        return tensors, config_to_hf(model.config).to_json_string()
    if isinstance(model, Seq2Seq):
        tensors = dict(model.state_dict())
        tensors.pop(_TIED)  # = tgt_embed.weight
        if model.config.share_embeddings:
            tensors.pop("tgt_embed.weight")  # = src_embed.weight
        config = {"model_type": SEQ2SEQ_TYPE, **model.config.to_dict()}
        return tensors, json.dumps(config, indent=2) + "\n"
    hf_config = model.config.to_hf()  # refuses configs GPT-2 cannot express
    hf_config.architectures = ["GPT2LMHeadModel"]
    tensors = model.to_hf_state_dict()
    tensors.pop(_TIED, None)  # tied to transformer.wte.weight: stored once
    return tensors, hf_config.to_json_string()


def save_checkpoint(
    folder: str | os.PathLike,
    model: GPT | Llama | Seq2Seq,
    *,
    tokenizer: Any = None,
    training_state: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    extra_files: Mapping[str, bytes | str] | None = None,
) -> Path:
    """Write ``model`` (and optionally its tokenizer, training state and extra files such as a
    README) as a Hugging Face checkpoint (GPT-2's or Llama's format) in ``folder``, replacing
    it atomically.

    Args:
        folder: the checkpoint folder; its parent is created if needed.
        model: a course :class:`~llmcourse.models.gpt.GPT` (pre-LN with biases, as GPT-2),
            :class:`~llmcourse.models.llama.Llama` or :class:`~llmcourse.models.seq2seq.Seq2Seq`.
        tokenizer: anything with ``save(folder)`` (ByteLevelBPE, CharTokenizer), or None.
        training_state: a dict of tensors, numbers, strings, lists and dicts, saved with
            ``torch.save`` and read back with ``torch.load(weights_only=True)``.
        dtype: how the weights are stored: float32 (exact), or float16/bfloat16 to halve the
            file. Resuming needs exact weights, so ``training_state`` requires float32.
        extra_files: ``{file name: content}`` written into the same folder.

    Returns:
        The folder.
    """
    if not isinstance(model, (GPT, Llama, Seq2Seq)):
        raise TypeError(f"model must be a llmcourse GPT, Llama or Seq2Seq, got "
                        f"{type(model).__name__}")
    if dtype not in _STORE_DTYPES:
        raise ValueError(f"dtype must be one of {_STORE_DTYPES}, got {dtype}")
    if training_state is not None and dtype != torch.float32:
        raise ValueError("a checkpoint with training_state must store float32 weights, so that "
                         f"resuming continues exactly; got dtype={dtype}")
    if tokenizer is not None:
        vocab = min(model.config.src_vocab_size, model.config.tgt_vocab_size) \
            if isinstance(model, Seq2Seq) else \
            model.config.vocab_size
        _check_tokenizer(tokenizer, vocab)
    for name in extra_files or {}:
        if not isinstance(name, str) or Path(name).name != name or name.startswith(".") \
                or name in _RESERVED:
            raise ValueError(f"extra file name {name!r} must be a plain file name other than "
                             f"{', '.join(sorted(_RESERVED))}")
    tensors, config_text = _serialize(model)
    folder = recover_folder(folder)
    intact = "the previous checkpoint is intact" if folder.is_dir() else \
        "no checkpoint was written"

    # Everything goes into a temporary folder that replaces `folder` only when complete.
    with staging_folder(folder, intact) as tmp:

        def write(name: str, writer: Callable[[Path], object]) -> None:
            with report_full_disk(folder / name, intact):  # names the file, not the temp one
                writer(tmp / name)

        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
        write(MODEL_FILE, lambda path: save_file(tensors, path, metadata={"format": "pt"}))
        write(CONFIG_FILE, lambda path: path.write_text(config_text, encoding="utf-8"))
        if tokenizer is not None:
            tokenizer.save(tmp)  # several files: a full disk names the folder
        if training_state is not None:
            write(STATE_FILE, lambda path: torch.save(dict(training_state), path))
        for name, content in (extra_files or {}).items():
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            write(name, lambda path, data=data: path.write_bytes(data))
    return folder


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a model (``model.safetensors`` and ``config.json``)."""
    folder = recover_folder(folder)
    return (folder / MODEL_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def _read_config(path: Path) -> GPTConfig | LlamaConfig | Seq2SeqConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if isinstance(raw, dict) and raw.get("model_type") == SEQ2SEQ_TYPE:
        raw.pop("model_type")
        try:
            return Seq2SeqConfig(**raw)
        except TypeError as err:
            raise ValueError(f"{path}: not a Seq2SeqConfig ({err})") from None
    if isinstance(raw, dict) and raw.get("model_type") == "llama":
        try:
            return config_from_hf(raw)  # refuses what the course does not implement
        except ValueError as err:
            raise ValueError(f"{path}: a config of model_type 'llama' that the course cannot "
                             f"use: {err}") from None
    if not isinstance(raw, dict) or raw.get("model_type") != "gpt2":
        got = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: expected a GPT-2 or Llama config (model_type 'gpt2' or "
                         f"'llama'), got {got!r}")
    try:
        config = GPTConfig.from_hf(types.SimpleNamespace(**raw))
    except AttributeError as err:
        raise ValueError(f"{path}: GPT-2 config lacks a field ({err})") from None
    return replace(config, dropout=float(raw.get("resid_pdrop", 0.0)))




def load_checkpoint(folder: str | os.PathLike, *, device: str | torch.device = "cpu"
                    ) -> tuple[GPT | Llama | Seq2Seq, dict[str, Any] | None]:
    """Read a checkpoint written by :func:`save_checkpoint` (or by ``save_pretrained`` of a
    ``GPT2LMHeadModel`` of the course's shape, or of a ``LlamaForCausalLM`` without the
    features the course leaves out).

    The tokenizer is read separately, by :func:`llmcourse.text.load.load_tokenizer`.

    Returns:
        ``(model, training_state)``: a float32 GPT (or Llama, or Seq2Seq) in eval mode on
        ``device``;
        the training state dict, or None when the folder has none.
    """
    folder = recover_folder(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such checkpoint folder")
    missing = [n for n in (MODEL_FILE, CONFIG_FILE) if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a checkpoint: it lacks {' and '.join(missing)} "
                         f"(a checkpoint holds {MODEL_FILE} + {CONFIG_FILE}, optionally a "
                         f"tokenizer and {STATE_FILE})")
    config = _read_config(folder / CONFIG_FILE)
    try:
        tensors = load_file(folder / MODEL_FILE)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{folder / MODEL_FILE}: unreadable safetensors file ({err})") from None
    tensors = {k: v.float() for k, v in tensors.items()}
    if isinstance(config, Seq2SeqConfig):
        model = Seq2Seq(config)
        if "src_embed.weight" in tensors:  # the shared matrices were stored once
            if config.share_embeddings:
                tensors["tgt_embed.weight"] = tensors["src_embed.weight"]
            if "tgt_embed.weight" in tensors:
                tensors[_TIED] = tensors["tgt_embed.weight"]
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ValueError(f"{folder / MODEL_FILE} does not fit {config}: missing "
                             f"{missing[:3]}, unexpected {unexpected[:3]}")
        model = model.to(device).eval()
    elif isinstance(config, LlamaConfig):
        try:
            model = from_hf_state_dict(tensors, config).to(device).eval()
        except ValueError as err:
            raise ValueError(f"{folder / MODEL_FILE}: {err}") from None
    else:
        model = GPT.from_hf_state_dict(tensors, config).to(device).eval()
    state = None
    if (folder / STATE_FILE).is_file():
        try:
            state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several kinds for a damaged or unsafe file
            raise ValueError(f"{folder / STATE_FILE}: unreadable training state ({err})"
                             ) from None
    return model, state
