"""The course's :class:`~llmcourse.models.llama.Llama` to and from ``transformers``'
``LlamaForCausalLM``: the config and the state dict, both ways.

The state dicts have the same names and shapes: the course model uses ``transformers``' names
and ``nn.Linear``'s (out, in) layout (GPT-2's ``Conv1D`` transposes have no counterpart
here), and both rotate "half against half" in RoPE (``rotate_half``: dimension i pairs with
i + head_dim/2). What a conversion must still do is *refuse*: a config that uses a feature the
course does not implement would load without an error and compute something else. Refused,
naming the feature, before any weight is read:

- RoPE scaling of any kind (``rope_parameters``/``rope_scaling`` with a ``rope_type`` other
  than ``"default"``, or extra keys such as ``factor``, ``partial_rotary_factor``);
- a sliding attention window (``sliding_window``, ``use_sliding_window``);
- biases (``attention_bias``, ``mlp_bias``);
- a head size other than hidden_size / num_attention_heads (``head_dim``);
- another activation than SiLU (``hidden_act``), another ``model_type`` than ``"llama"``.

Dropout: the course model drops embeddings, attention probabilities and each branch's output
(as the GPT does) with one rate; ``transformers``' Llama has ``attention_dropout`` only. The
rate is written there and read back from there. In eval mode neither drops anything.

Example:
    >>> from llmcourse.models.llama import Llama, LlamaConfig
    >>> cfg = LlamaConfig(vocab_size=64, block_size=16, n_layer=1, n_head=4, n_kv_head=2,
    ...                   n_embd=32, d_ff=48)
    >>> model = Llama(cfg)
    >>> sd = to_hf_state_dict(model)
    >>> sd["model.layers.0.self_attn.k_proj.weight"].shape        # 2 kv heads × 8 features
    torch.Size([16, 32])
    >>> back = from_hf_state_dict(sd, cfg)
    >>> torch.equal(back.lm_head.weight, model.lm_head.weight)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from llmcourse.models.llama import Llama, LlamaConfig

__all__ = ["config_to_hf", "config_from_hf", "to_hf_state_dict", "from_hf_state_dict",
           "to_hf", "from_hf", "TIED"]

TIED = "lm_head.weight"  # stored once, as model.embed_tokens.weight, when the config ties it
_HF_BUFFERS = (".rotary_emb.inv_freq",)  # RoPE frequencies that older checkpoints stored


def config_to_hf(config: LlamaConfig) -> Any:
    """The equivalent ``transformers.LlamaConfig`` (architectures ``LlamaForCausalLM``).

    Like the course GPT's, it names the last id, the course tokenizer's end-of-text token, as
    BOS and EOS.

    Example:
        >>> hf = config_to_hf(LlamaConfig(vocab_size=64, block_size=16, n_layer=1, n_head=4,
        ...                               n_kv_head=1, n_embd=32, d_ff=48))
        >>> hf.num_key_value_heads, hf.rope_parameters["rope_theta"], hf.tie_word_embeddings
        (1, 10000.0, False)
    """
    if not isinstance(config, LlamaConfig):
        raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
    from transformers import LlamaConfig as HFLlamaConfig  # seconds to import: interop only

    c = config
    hf = HFLlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.d_ff,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
        num_key_value_heads=c.n_kv_head, head_dim=c.head_dim, hidden_act="silu",
        max_position_embeddings=c.block_size, rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(c.rope_theta)},
        tie_word_embeddings=c.tie_embeddings, attention_bias=False, mlp_bias=False,
        attention_dropout=c.dropout, bos_token_id=c.vocab_size - 1,
        eos_token_id=c.vocab_size - 1,
    )
    hf.architectures = ["LlamaForCausalLM"]
    return hf


def _get(hf_config: Any, name: str, default: Any = None) -> Any:
    if isinstance(hf_config, Mapping):
        return hf_config.get(name, default)
    return getattr(hf_config, name, default)


def _rope_theta(hf_config: Any) -> float:
    """RoPE's base, refusing any scaling: ``rope_parameters`` (transformers 5) or the older
    ``rope_theta`` + ``rope_scaling`` fields."""
    params = _get(hf_config, "rope_parameters")
    scaling = _get(hf_config, "rope_scaling")
    for name, p in (("rope_parameters", params), ("rope_scaling", scaling)):
        if p is None:
            continue
        if not isinstance(p, Mapping):
            raise ValueError(f"unsupported {name}={p!r}: expected a dict")
        kind = p.get("rope_type", p.get("type", "default"))
        if kind != "default":
            raise ValueError(f"unsupported feature: RoPE scaling ({name} rope_type {kind!r}); "
                             "the course's RoPE rotates by the plain angles (rope_type "
                             "'default')")
        extra = sorted(set(p) - {"rope_type", "type", "rope_theta"})
        if extra:
            raise ValueError(f"unsupported feature: RoPE with {name} {extra[0]!r} (RoPE "
                             "scaling or partial rotation); the course's RoPE takes rope_theta "
                             "only")
    theta = (params or {}).get("rope_theta", _get(hf_config, "rope_theta", 10000.0))
    return float(theta)


def config_from_hf(hf_config: Any) -> LlamaConfig:
    """Read a ``transformers.LlamaConfig`` (or its ``config.json`` as a dict) into a course
    :class:`~llmcourse.models.llama.LlamaConfig`, refusing every feature the course does not
    implement (listed in the module docstring) with an error that names it.

    Example:
        >>> config_from_hf({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
        ...     "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4,
        ...     "max_position_embeddings": 16}).n_kv_head
        4
        >>> config_from_hf({"model_type": "llama", "attention_bias": True})
        Traceback (most recent call last):
        ...
        ValueError: unsupported feature: attention_bias=True (biases on q/k/v/o); ...
    """
    model_type = _get(hf_config, "model_type", "llama")
    if model_type != "llama":
        raise ValueError(f"unsupported model_type {model_type!r}: only 'llama' configs convert "
                         "(others differ in ways the course does not implement)")
    for name, what in (("attention_bias", "biases on q/k/v/o"),
                       ("mlp_bias", "biases in the MLP")):
        if _get(hf_config, name, False):
            raise ValueError(f"unsupported feature: {name}=True ({what}); the course's Llama "
                             "has no biases")
    window = _get(hf_config, "sliding_window")
    if window is not None or _get(hf_config, "use_sliding_window", False):
        raise ValueError(f"unsupported feature: sliding-window attention (sliding_window="
                         f"{window}); the course's Llama attends over the whole context")
    act = _get(hf_config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"unsupported feature: hidden_act={act!r}; the course's SwiGLU uses "
                         "SiLU")
    theta = _rope_theta(hf_config)
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "max_position_embeddings"):
        if _get(hf_config, name) is None:
            raise ValueError(f"not a usable Llama config: it has no {name}")
    try:
        hidden, heads = _get(hf_config, "hidden_size"), _get(hf_config, "num_attention_heads")
        head_dim = _get(hf_config, "head_dim")
        if head_dim is not None and head_dim * heads != hidden:
            raise ValueError(f"unsupported feature: head_dim={head_dim} with hidden_size="
                             f"{hidden} and num_attention_heads={heads}; the course's heads "
                             f"are hidden_size / num_attention_heads = {hidden / heads:g} wide")
        return LlamaConfig(
            vocab_size=_get(hf_config, "vocab_size"),
            block_size=_get(hf_config, "max_position_embeddings"),
            n_layer=_get(hf_config, "num_hidden_layers"), n_head=heads,
            n_kv_head=_get(hf_config, "num_key_value_heads"), n_embd=hidden,
            d_ff=_get(hf_config, "intermediate_size"), rope_theta=theta,
            rms_norm_eps=float(_get(hf_config, "rms_norm_eps", 1e-6)),
            tie_embeddings=bool(_get(hf_config, "tie_word_embeddings", False)),
            dropout=float(_get(hf_config, "attention_dropout", 0.0) or 0.0),
        )
    except TypeError as err:  # a field missing (None) or of the wrong type
        raise ValueError(f"not a usable Llama config: {err}") from None


def to_hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """The weights under ``LlamaForCausalLM``'s names: the same names and layouts, copied
    into contiguous tensors (``lm_head.weight`` included even when tied, as HF lists it)."""
    if not isinstance(model, Llama):
        raise TypeError(f"model must be a llmcourse Llama, got {type(model).__name__}")
    return {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}


def from_hf_state_dict(state_dict: Mapping[str, torch.Tensor], config: LlamaConfig) -> Llama:
    """Build a course Llama from a ``LlamaForCausalLM`` state dict and its config.

    Refused by name: an unknown, missing or mis-shaped tensor; a tied config whose
    ``lm_head.weight`` (when present) differs from the embedding. A tied checkpoint may leave
    ``lm_head.weight`` out (``save_pretrained`` and :func:`~llmcourse.models.checkpoint.
    save_checkpoint` store the matrix once).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got "
                        f"{type(state_dict).__name__}")
    if not isinstance(config, LlamaConfig):
        raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
    sd = {k: v for k, v in state_dict.items() if not k.endswith(_HF_BUFFERS)}
    embed = "model.embed_tokens.weight"
    if config.tie_embeddings and TIED in sd and embed in sd:
        if not torch.equal(sd[TIED], sd[embed]):
            raise ValueError("lm_head.weight differs from model.embed_tokens.weight but the "
                             "config ties them (tie_word_embeddings): refusing to drop either")
    if config.tie_embeddings and embed in sd:
        sd.setdefault(TIED, sd[embed])
    with torch.device("meta"):  # the names and shapes only, no memory, no initialisation
        expected = Llama(config).state_dict()
    unknown, missing = sorted(set(sd) - set(expected)), sorted(set(expected) - set(sd))
    if unknown:
        raise ValueError(f"not a Llama checkpoint for this config: unexpected tensor "
                         f"{unknown[0]!r} (and {len(unknown) - 1} more)")
    if missing:
        untied = " (the config does not tie it to the embedding)" if missing[0] == TIED else ""
        raise ValueError(f"checkpoint lacks tensor {missing[0]!r}{untied} (and "
                         f"{len(missing) - 1} more)")
    for name, ours in expected.items():
        theirs = sd[name]
        if not isinstance(theirs, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(theirs).__name__}, not a tensor")
        if theirs.shape != ours.shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(theirs.shape)} in the "
                             f"checkpoint but {tuple(ours.shape)} in the model (config "
                             f"{config})")
    model = Llama(config)
    model.load_state_dict(sd)  # copies into the stored layouts; a tied pair is one tensor
    return model


def to_hf(model: Llama) -> Any:
    """An equivalent ``transformers.LlamaForCausalLM`` holding copies of ``model``'s weights,
    in eval mode.

    Example:
        >>> from llmcourse.models.llama import Llama, LlamaConfig
        >>> model = Llama(LlamaConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2,
        ...                           n_embd=8, d_ff=16)).eval()
        >>> hf, x = to_hf(model), torch.randint(0, 32, (1, 5))
        >>> torch.allclose(hf(x).logits, model(x)[0], atol=1e-6)
        True
    """
    from transformers import LlamaForCausalLM  # seconds to import: interop only

    sd = to_hf_state_dict(model)
    hf = LlamaForCausalLM(config_to_hf(model.config))
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"HF model did not take the weights: missing {missing}, unexpected "
                         f"{unexpected}")
    return hf.eval()


def from_hf(hf_model: Any) -> Llama:
    """Copy a ``transformers.LlamaForCausalLM`` into a course Llama (config checked first).

    Example:
        >>> from transformers import LlamaConfig as HFConfig, LlamaForCausalLM
        >>> hf = LlamaForCausalLM(HFConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
        ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        ...     max_position_embeddings=8))
        >>> from_hf(hf).config.n_kv_head
        1
    """
    config = config_from_hf(hf_model.config)
    return from_hf_state_dict(hf_model.state_dict(), config)
