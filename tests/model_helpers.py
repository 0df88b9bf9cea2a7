"""Set-up shared by the tests that compare the course's language models with ``transformers``
(tests/test_model.py and tests/test_generate.py for the GPT, tests/test_llama.py and
tests/test_llama_generate.py for the Llama): random token ids, a Llama with random weights at
a trained model's scale, left-padded prompts, ``transformers``' positions for a padded batch,
``transformers``' ``generate`` with only the settings a test passes, and the comparisons of
generated tokens and of every decode step's logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llmcourse.decoding.decoder import Decoder
from llmcourse.models.llama import Llama, LlamaConfig


def random_ids(cfg: Any, b: int, t: int, seed: int) -> torch.Tensor:
    """(b, t) token ids drawn uniformly from ``cfg.vocab_size`` with a seeded generator."""
    return torch.randint(0, cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def hf_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as ``transformers`` computes them for a padded batch (1 at padding)."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


def perturb_llama(model: nn.Module, seed: int, lm_head_gain: float = 3.0) -> None:
    """Weights at the scale of a trained model's rather than of an initialisation, for ours or
    ``transformers``' ``LlamaForCausalLM`` (same names): every matrix with unit gain (std
    1/√fan_in), so that each block changes the residual stream as much as the embedding does
    and a wrong detail anywhere shows in the logits; embeddings of std 1 and an output layer
    of gain ``lm_head_gain`` (logits of ~10 at 3: peaked next-token distributions); random
    norm gains, so that copying each matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # lm_head (when untied) and the blocks' matrices
                gain = lm_head_gain if name == "lm_head.weight" else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * gain / p.shape[1] ** 0.5)


def random_llama(cfg: LlamaConfig, seed: int = 0, lm_head_gain: float = 3.0) -> Llama:
    """A course Llama in eval mode with :func:`perturb_llama`'s weights."""
    torch.manual_seed(seed)
    model = Llama(cfg).eval()
    perturb_llama(model, seed, lm_head_gain)
    return model


def without_special_ids(hf: Any) -> Any:
    """``hf`` with no BOS/EOS/pad id in its generation config: its ``generate`` then uses only
    the ids a test passes, as ours does (a GPT-2 config names vocab_size-1 as BOS and EOS)."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(hf.generation_config, name, None)
    return hf


def left_padded_prompts(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts (3, 7) of 4, 7 and 6 tokens (ids ≥ 1), left-padded with pad id 0, and
    their attention mask."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab_size, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :3] = 0
    mask[2, :1] = 0
    return ids.masked_fill(mask == 0, 0), mask


def hf_generate(hf: Any, ids: torch.Tensor, mask: torch.Tensor | None, *, eos: Any = None,
                pad: int | None = None, top_k: int | None = None, top_p: float | None = None,
                **kw: Any) -> torch.Tensor:
    """``transformers``' ``generate`` with our defaults: no top-k or top-p filter unless
    given, no BOS, the EOS and pad ids given only."""
    from transformers import GenerationConfig  # seconds to import: only where a test compares

    gc = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=None,
                          top_k=0 if top_k is None else top_k,
                          top_p=1.0 if top_p is None else top_p, **kw)
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, generation_config=gc)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """The same token ids, shape first, printing both on a difference."""
    assert ours.shape == theirs.shape, f"shape {tuple(ours.shape)} vs HF {tuple(theirs.shape)}"
    assert torch.equal(ours, theirs), f"\nours {ours.tolist()}\nHF   {theirs.tolist()}"


def setting_id(d: dict) -> str:
    """A test id for a dict of settings: ``key=value-key=value``."""
    return "-".join(f"{k}={v}" for k, v in d.items())


def assert_step_logits_match_hf(model: nn.Module, hf: Any, ids: torch.Tensor,
                                mask: torch.Tensor | None, steps: int,
                                atol: float = 1e-5) -> Decoder:
    """The decoder's logits at every step (prefill, then one token at a time over the cache)
    against ``hf``'s forward on the whole text; returns the decoder (for its cache)."""
    b, t = ids.shape
    decoder = Decoder(model, b, t, max_len=t + steps, attention_mask=mask)
    text = ids
    full = mask if mask is not None else torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(steps):
            ours = decoder.next_logits(text)  # (B, V)
            pos = (full.cumsum(-1) - 1).masked_fill(full == 0, 0)  # (B, L)
            theirs = hf(text, attention_mask=full, position_ids=pos).logits[:, -1]  # (B, V)
            torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)
            text = torch.cat([text, ours.argmax(-1, keepdim=True)], 1)  # (B, L + 1)
            full = torch.cat([full, torch.ones(b, 1, dtype=full.dtype)], 1)  # (B, L + 1)
    return decoder
