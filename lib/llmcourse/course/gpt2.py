"""GPT-2 in the course's own code: load OpenAI's weights (or the course checkpoint) into
:class:`llmcourse.models.gpt.GPT`.

``load_gpt2(name_or_path)`` returns ``(model, tokenizer)``:

- a folder in Hugging Face's GPT-2 format (``config.json`` + ``model.safetensors`` + the
  tokenizer's ``vocab.json``/``merges.txt``) loads from disk, online or not;
- a hub name (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``) downloads the real weights
  through ``transformers`` when the Hugging Face hub can be reached;
- when it cannot (``HF_HUB_OFFLINE=1``, or no answer within 1.5 s), one printed line says so
  and the course's own GPT-2-format checkpoint is loaded instead. Nothing waits on the network
  for longer than that.

The conversion itself (GPT-2's Conv1D weights are stored transposed, the output layer is tied
to the token embedding) lives in :meth:`GPT.from_hf_state_dict` / :meth:`GPT.to_hf_state_dict`;
a checkpoint that does not fit the config is refused naming the first tensor that differs.

Example:
    >>> model, tok = load_gpt2("gpt2")          # doctest: +SKIP
    GPT-2 weights are not reachable (HF_HUB_OFFLINE=1): using the course checkpoint
    data/checkpoints/shakespeare-gpt instead
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import huggingface_hub.constants
from huggingface_hub import hf_hub_download

from llmcourse.core.files import REPO_ROOT, recover_folder, shown
from llmcourse.models.checkpoint import load_checkpoint
from llmcourse.models.gpt import GPT
from llmcourse.text.bpe import ByteLevelBPE
from llmcourse.text.load import load_tokenizer

__all__ = ["HUB_NAMES", "load_gpt2", "hub_reachable", "course_checkpoint"]

HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_HOST, HUB_PORT = "huggingface.co", 443
FALLBACK_ENV = "LLMCOURSE_FALLBACK_CHECKPOINT"

def hub_reachable(timeout: float = 1.5) -> tuple[bool, str]:
    """Whether the Hugging Face hub answers, and if not, why (for the message).

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to 1 means offline without trying:
    ``huggingface_hub``'s own switch, read when it was first imported, decides.
    Otherwise a TCP connection to huggingface.co:443 is tried in a background thread, since
    a name lookup with no network can block far longer than any socket timeout.
    """
    if huggingface_hub.constants.is_offline_mode():
        return False, "HF_HUB_OFFLINE=1"
    result: list[str] = []

    def attempt() -> None:
        try:
            socket.create_connection((HUB_HOST, HUB_PORT), timeout=timeout).close()
            result.append("")
        except OSError as err:
            result.append(f"{type(err).__name__}: {err}".strip())

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout + 0.2)
    if not result:
        return False, f"no answer from {HUB_HOST} within {timeout:g} s"
    return (True, "") if not result[0] else (False, f"offline: {result[0]}")


def course_checkpoint(fallback: str | os.PathLike | None = None) -> Path:
    """The course's own GPT-2-format checkpoint folder.

    Looked up in this order: the ``fallback`` argument, the ``LLMCOURSE_FALLBACK_CHECKPOINT``
    environment variable, then the one GPT-2-format folder under ``data/checkpoints/`` (its
    ``config.json`` says ``"model_type": "gpt2"``). Folders of other models beside it (a
    Llama-style or encoder-decoder checkpoint of chapters 06 and 10) are not candidates; a
    ``config.json`` that cannot be read, or names no model_type, counts as a candidate, so
    that loading it says what is wrong with it.
    """
    chosen = fallback if fallback is not None else os.environ.get(FALLBACK_ENV) or None
    if chosen is not None:
        folder = recover_folder(chosen)
        if not (folder / "config.json").is_file():
            raise ValueError(f"fallback checkpoint {folder} has no config.json; expected a "
                             "folder in Hugging Face GPT-2 format")
        return folder
    root = REPO_ROOT / "data" / "checkpoints"
    for backup in root.glob(".*.previous"):  # a save killed between its renames left these
        recover_folder(root / backup.name.removeprefix(".").removesuffix(".previous"))
    # Dot-folders are a save's temporary or backup folders, never a checkpoint to use.
    found = sorted(p for p in root.glob("[!.]*") if _model_type(p) in ("gpt2", None)) \
        if root.is_dir() else []
    if len(found) != 1:
        what = "no checkpoint" if not found else f"{len(found)} checkpoints " \
            f"({', '.join(p.name for p in found)})"
        raise ValueError(
            f"cannot fall back to the course checkpoint: found {what} under "
            f"data/checkpoints/, expected exactly one GPT-2-format folder (config.json "
            f"model_type 'gpt2'). Train it with the course's training command, or pass "
            f"fallback= / set {FALLBACK_ENV}"
        )
    return found[0]


def _model_type(folder: Path) -> str | None:
    """The ``model_type`` a checkpoint folder's config.json names; "" when the folder has no
    config.json; None when the file cannot be read as a JSON object or names no model_type
    (a candidate all the same: loading it then says what is wrong)."""
    config = folder / "config.json"
    if not config.is_file():
        return ""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    kind = data.get("model_type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind else None


def _load_folder(folder: Path) -> tuple[GPT, Any]:
    model, _ = load_checkpoint(folder)  # a GPT, or a Llama or Seq2Seq from its config.json
    if not isinstance(model, GPT):
        kind = {"Llama": "a Llama-style model (config.json model_type 'llama')",
                "Seq2Seq": "an encoder-decoder (config.json model_type 'llmcourse-seq2seq')"
                }.get(type(model).__name__, type(model).__name__)
        raise ValueError(f"{shown(folder)} holds {kind}, not GPT-2: load_gpt2 loads a "
                         "GPT-2-format checkpoint (config.json model_type 'gpt2') into the "
                         "course GPT; read this folder with "
                         "llmcourse.models.checkpoint.load_checkpoint")
    tokenizer = load_tokenizer(folder)
    if tokenizer is None:
        tokenizer = _hf_tokenizer(folder)
    return model, tokenizer


def _hf_tokenizer(source: str | Path) -> Any:
    """transformers' tokenizer for ``source``, or None when there is none to load."""
    try:
        from transformers import AutoTokenizer  # heavy (seconds): only when it is needed

        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, ImportError):
        return None


def _load_hub(name: str) -> tuple[GPT, Any]:
    # transformers takes seconds to import: only when the hub is used.
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(name)
    model = GPT.from_hf(hf).eval()
    del hf
    vocab = hf_hub_download(name, "vocab.json")
    hf_hub_download(name, "merges.txt")
    tokenizer = ByteLevelBPE.load(Path(vocab).parent)
    return model, tokenizer


def load_gpt2(name_or_path: str | os.PathLike = "gpt2", *,
              fallback: str | os.PathLike | None = None,
              timeout: float = 1.5) -> tuple[GPT, Any]:
    """Load GPT-2 weights into the course's :class:`GPT`, and its tokenizer.

    Args:
        name_or_path: a folder in Hugging Face GPT-2 format, or one of :data:`HUB_NAMES`
            (``openai-community/`` prefix allowed).
        fallback: the checkpoint folder to use when the hub is out of reach; default: see
            :func:`course_checkpoint`.
        timeout: seconds to wait for the hub before falling back.

    Returns:
        ``(model, tokenizer)``: the model in eval mode; the tokenizer has ``encode`` and
        ``decode`` (the course's ByteLevelBPE; transformers' when ours cannot load it).

    Raises:
        ValueError: an unknown name, a folder that is not a GPT-2 checkpoint, or a checkpoint
            whose tensors do not fit its config (naming the first such tensor and its shapes).
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    path = recover_folder(name_or_path)  # as every reader of a checkpoint folder does
    if path.is_dir():
        return _load_folder(path)
    name = str(name_or_path)
    short = name.removeprefix("openai-community/")
    if short not in HUB_NAMES:
        raise ValueError(f"{name!r} is neither a folder nor a GPT-2 hub name; expected a "
                         f"checkpoint folder or one of {', '.join(HUB_NAMES)}")
    online, reason = hub_reachable(timeout)
    if online:
        try:
            return _load_hub(name)
        except Exception as err:  # any download/parse failure: fall back, and say why
            first = (str(err).splitlines() or [""])[0][:120]
            reason = f"download failed: {type(err).__name__}: {first}"
    folder = course_checkpoint(fallback)
    print(f"GPT-2 weights are not reachable ({reason}): using the course checkpoint "
          f"{shown(folder)} instead", flush=True)
    return _load_folder(folder)
