"""The encoder–decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017), the
model that translates: an encoder reads the whole source sentence, a decoder writes the
target one token at a time, looking at the encoder's output through cross-attention.

    memory = Encoder(Embed(src)·√d + PE)                      (B, S, C)  read once
    logits = Decoder(Embed(tgt)·√d + PE, memory) Wᵀ            (B, T, V)  one token at a time

- Positions are the paper's fixed sinusoids (§3.5), added to the embeddings scaled by √d
  (§3.4), so both sides can be as long as ``max_len``.
- The output layer reuses the target embedding (§3.4); with ``share_embeddings`` the source
  uses the same matrix too (one vocabulary for both languages, as the paper's shared BPE).
- ``norm_first=False`` (the default) is the paper's post-LN; ``True`` is pre-LN. With
  ``final_norm`` (the default) the encoder and the decoder end with a LayerNorm, as
  ``nn.Transformer`` has in both arrangements; tests check the whole model against
  ``nn.Transformer`` with copied weights.

Conventions, as in ``transformers``: ``src_mask`` (B, S) is 1 for real tokens and 0 for
padding; ``targets`` hold the next target token of every position, -100 where nothing is to be
scored (the padding after EOS). The target needs no mask: padding goes on the right, after
EOS, and causal attention never looks right.

Example:
    >>> cfg = Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, max_len=16, n_embd=32,
    ...                     n_head=4, ffn_hidden=64)
    >>> model = Seq2Seq(cfg)
    >>> src = torch.tensor([[5, 6, 7, 0]]); src_mask = torch.tensor([[1, 1, 1, 0]])
    >>> tgt = torch.tensor([[1, 8, 9]])                     # BOS, then the target so far
    >>> logits, loss = model(src, tgt, src_mask=src_mask, targets=torch.tensor([[8, 9, 2]]))
    >>> logits.shape, loss.shape
    (torch.Size([1, 3, 20]), torch.Size([]))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.core.validate import check_padding_mask, check_tensor, check_token_ids
from llmcourse.nn.encoder_decoder import DecoderBlock, EncoderBlock, MemoryKV
from llmcourse.nn.feedforward import ACTIVATIONS
from llmcourse.nn.kv_cache import KVCache
from llmcourse.nn.linear import Linear
from llmcourse.nn.norms import LayerNorm
from llmcourse.nn.positional import sinusoidal_positions

__all__ = ["Seq2SeqConfig", "Seq2Seq"]


@dataclass(frozen=True)
class Seq2SeqConfig:
    """The shape of an encoder–decoder Transformer. Checked when built."""

    src_vocab_size: int
    tgt_vocab_size: int
    max_len: int = 64  # the longest source and the longest target (positions)
    n_encoder_layer: int = 2
    n_decoder_layer: int = 2
    n_head: int = 4
    n_embd: int = 128  # d_model
    ffn_hidden: int = 512  # d_ff (the paper: 2048 for d_model = 512, i.e. 4×)
    dropout: float = 0.0
    norm_first: bool = False  # False: post-LN as in the paper; True: pre-LN
    final_norm: bool = True  # a LayerNorm after the encoder and after the decoder
    share_embeddings: bool = True  # one embedding for source and target (one vocabulary)
    activation: str = "relu"  # the paper's ReLU, or GPT-2's "gelu"
    label_smoothing: float = 0.0  # the paper trains with 0.1 (§5.4)
    pad_id: int = 0
    bias: bool = True
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "max_len", "n_encoder_layer",
                     "n_decoder_layer", "n_head", "n_embd", "ffn_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Seq2SeqConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads "
                             "of an even size")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(f"share_embeddings=True needs one vocabulary, got src_vocab_size="
                             f"{self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in ("dropout", "label_smoothing"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 <= value < 1.0:
                raise ValueError(f"Seq2SeqConfig.{name} must be in [0, 1), got {value!r}")
        vocab = min(self.src_vocab_size, self.tgt_vocab_size)
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) \
                or not 0 <= self.pad_id < vocab:
            raise ValueError(f"pad_id must be an id of both vocabularies, in [0, {vocab}), got "
                             f"{self.pad_id!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields, for a JSON config file."""
        return asdict(self)


class Seq2Seq(nn.Module):
    """Encoder–decoder Transformer; one forward for training and scoring, and the same
    :meth:`encode`/:meth:`decode` steps (with a :class:`KVCache`) for generation."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        block = dict(hidden=c.ffn_hidden, bias=c.bias, dropout=c.dropout,
                     norm_first=c.norm_first, activation=c.activation, eps=c.layer_norm_epsilon)
        self.src_embed = nn.Embedding(c.src_vocab_size, c.n_embd)
        self.tgt_embed = self.src_embed if c.share_embeddings else \
            nn.Embedding(c.tgt_vocab_size, c.n_embd)
        self.register_buffer("pe", sinusoidal_positions(c.max_len, c.n_embd), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(c.n_embd, c.n_head, **block)
                                     for _ in range(c.n_encoder_layer))
        self.decoder = nn.ModuleList(DecoderBlock(c.n_embd, c.n_head, **block)
                                     for _ in range(c.n_decoder_layer))
        norm = lambda: LayerNorm(c.n_embd, bias=c.bias, eps=c.layer_norm_epsilon)  # noqa: E731
        self.encoder_norm = norm() if c.final_norm else nn.Identity()
        self.decoder_norm = norm() if c.final_norm else nn.Identity()
        self.lm_head = Linear(c.n_embd, c.tgt_vocab_size, bias=False)
        self.lm_head.weight = self.tgt_embed.weight  # the paper's tying (§3.4)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform matrices (as ``nn.Transformer``), zero biases, embeddings N(0, 1/d):
        scaled by √d they enter with unit variance, like the sinusoids."""
        for name, p in self.named_parameters():
            if "embed" in name:
                nn.init.normal_(p, mean=0.0, std=self.config.n_embd ** -0.5)
            elif p.dim() == 2:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def num_parameters(self) -> int:
        """Number of distinct parameters (a shared matrix once)."""
        return sum(p.numel() for p in self.parameters())

    # --- the two halves ---------------------------------------------------------------------

    def _embed(self, embed: nn.Embedding, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        t = ids.shape[1]
        x = embed(ids) * math.sqrt(self.config.n_embd)  # (B, T, C)  §3.4
        return self.drop(x + self.pe[start:start + t])  # (B, T, C)  §3.5

    def memory_mask(self, src: torch.Tensor, src_mask: torch.Tensor | None
                    ) -> torch.Tensor | None:
        """Check ``src`` (B, S) and its padding mask; return the (B, 1, 1, S) bool mask, True =
        attend (None when nothing is padded: torch's fast path)."""
        c = self.config
        check_token_ids("src", src, c.src_vocab_size)
        b, s = src.shape
        if b == 0 or s == 0:
            raise ValueError(f"src is empty (shape {tuple(src.shape)}); give at least one "
                             "source sequence of at least one token")
        if s > c.max_len:
            raise ValueError(f"src has {s} tokens, longer than the model's max_len={c.max_len}")
        is_pad = src == c.pad_id  # (B, S)
        if src_mask is None:
            if bool(is_pad.any()):
                row = int(is_pad.any(dim=1).nonzero()[0])
                raise ValueError(f"src holds pad_id={c.pad_id} (row {row}) but no src_mask was "
                                 "given: pass src_mask (B, S), 1 for tokens and 0 for padding, "
                                 "so the encoder and the cross-attention ignore the padding")
            return None
        keep = check_padding_mask("src_mask", src_mask, (b, s), "(B, S) like src")
        keep = keep.to(src.device)
        if bool((keep & is_pad).any()):
            r, j = (keep & is_pad).nonzero()[0].tolist()
            raise ValueError(f"src[{r}, {j}] is pad_id={c.pad_id} but src_mask marks it as a "
                             "token: a padding id inside the content (use another id, or mark "
                             "it 0 in src_mask)")
        if bool((~keep & ~is_pad).any()):
            r, j = (~keep & ~is_pad).nonzero()[0].tolist()
            raise ValueError(f"src_mask marks src[{r}, {j}] as padding but it holds id "
                             f"{int(src[r, j])}, not pad_id={c.pad_id}")
        empty = ~keep.any(dim=1)  # (B,)
        if bool(empty.any()):
            raise ValueError(f"source row {int(empty.nonzero()[0])} is all padding: an empty "
                             "source has nothing to translate")
        if bool(keep.all()):
            return None
        return keep[:, None, None, :]  # (B, 1, 1, S)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Read the source: ``(memory (B, S, C), memory mask (B, 1, 1, S) or None)``."""
        mask = self.memory_mask(src, src_mask)
        x = self._embed(self.src_embed, src.long())  # (B, S, C)
        for block in self.encoder:
            x = block(x, mask)  # (B, S, C)
        return self.encoder_norm(x), mask

    def memory_kv(self, memory: torch.Tensor) -> list[MemoryKV]:
        """Every decoder layer's keys and values of ``memory``, computed once per source."""
        return [block.cross_attn.memory_kv(memory) for block in self.decoder]

    def decode(self, tgt: torch.Tensor, memory_kv: list[MemoryKV],
               memory_mask: torch.Tensor | None = None, *, cache: KVCache | None = None,
               last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V) of the next target token at every position of ``tgt`` (B, T).

        With ``cache``, ``tgt`` holds only the tokens not cached yet (their keys/values are
        appended); ``last_only`` returns the last position's logits only, (B, 1, V).
        """
        c = self.config
        check_token_ids("tgt", tgt, c.tgt_vocab_size)
        b, t = tgt.shape
        if b == 0 or t == 0:
            raise ValueError(f"tgt is empty (shape {tuple(tgt.shape)}); the decoder needs at "
                             "least the start token")
        past = 0
        if cache is not None:
            if not isinstance(cache, KVCache):
                raise TypeError(f"cache must be a KVCache (Seq2Seq.new_cache) or None, got "
                                f"{type(cache).__name__}")
            past = cache.length
            if cache.k.shape[0] != c.n_decoder_layer or cache.batch_size != b:
                raise ValueError(f"cache holds {cache.batch_size} sequences of "
                                 f"{cache.k.shape[0]} layers, but tgt has {b} sequences and the "
                                 f"decoder {c.n_decoder_layer} layers: use "
                                 f"Seq2Seq.new_cache({b})")
        if past + t > c.max_len:
            raise ValueError(f"tgt has {t} new tokens after {past} cached: {past + t} target "
                             f"tokens, longer than the model's max_len={c.max_len}")
        if not isinstance(memory_kv, (list, tuple)):
            raise TypeError("memory_kv must be the per-layer keys/values that "
                            f"Seq2Seq.memory_kv(memory) returns, got {type(memory_kv).__name__}")
        if len(memory_kv) != c.n_decoder_layer or memory_kv[0][0].shape[0] != b:
            raise ValueError(f"memory_kv must hold {c.n_decoder_layer} layers' keys/values for "
                             f"{b} sequences (Seq2Seq.memory_kv)")
        if memory_mask is not None:
            want = (b, 1, 1, memory_kv[0][0].shape[2])  # (B, 1, 1, S)
            if not isinstance(memory_mask, torch.Tensor) or memory_mask.dtype != torch.bool \
                    or tuple(memory_mask.shape) != want:
                got = f"{tuple(memory_mask.shape)} {memory_mask.dtype}" \
                    if isinstance(memory_mask, torch.Tensor) else type(memory_mask).__name__
                raise ValueError(f"memory_mask must be None or the bool mask Seq2Seq.encode "
                                 f"returns, (B, 1, 1, S) = {want}, got {got}")
        y = self._embed(self.tgt_embed, tgt.long(), past)  # (B, T, C)
        for i, block in enumerate(self.decoder):
            y = block(y, memory_kv[i], memory_mask, cache=cache, layer=i)  # (B, T, C)
        if cache is not None:
            cache.advance(t)
        if last_only:
            y = y[:, -1:]  # (B, 1, C)
        return self.lm_head(self.decoder_norm(y))  # (B, T, V)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` for the decoder's self-attention."""
        c = self.config
        p = self.lm_head.weight
        return KVCache(c.n_decoder_layer, batch_size, c.n_head, max_len or c.max_len,
                       c.n_embd // c.n_head, dtype=p.dtype, device=p.device)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, *,
                src_mask: torch.Tensor | None = None, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits (B, T, V) of every target position, and the mean
        cross-entropy (label-smoothed if configured) when ``targets`` (B, T) are given.

        ``tgt`` is the target shifted right (start token first); ``targets`` is the target
        itself (EOS last), -100 where nothing is scored.
        """
        check_token_ids("tgt", tgt, self.config.tgt_vocab_size)
        if targets is not None:
            targets = self._check_targets(targets, tgt)
        memory, mask = self.encode(src, src_mask)  # (B, S, C)
        if tgt.shape[0] != src.shape[0]:
            raise ValueError(f"src has {src.shape[0]} sequences but tgt has {tgt.shape[0]}")
        logits = self.decode(tgt, self.memory_kv(memory), mask)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100,
                                   label_smoothing=self.config.label_smoothing)
        return logits, loss

    def _check_targets(self, targets: object, tgt: object) -> torch.Tensor:
        check_tensor("targets", targets)
        check_tensor("tgt", tgt)
        if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"targets must hold integer token ids, got {targets.dtype}")
        if targets.shape != tgt.shape:
            raise ValueError(f"targets must have the shape of tgt {tuple(tgt.shape)}, got "
                             f"{tuple(targets.shape)}")
        scored = targets != -100
        v = self.config.tgt_vocab_size
        bad = scored & ((targets < 0) | (targets >= v))
        if bool(bad.any()):
            raise ValueError(f"targets hold id {int(targets[bad][0])}, outside the target "
                             f"vocabulary [0, {v}) (and not -100, 'ignore')")
        if not bool(scored.any()):
            raise ValueError("targets score no position (all -100): the mean loss is undefined")
        return targets.long()

    # --- torch's nn.Transformer, with copied weights -------------------------------------------

    @torch.no_grad()
    def load_torch_transformer(self, ref: nn.Transformer) -> Seq2Seq:
        """Copy the weights of a batch-first ``nn.Transformer`` of the same shape (the test
        oracle: its layers are torch's, written by no one here)."""
        c = self.config
        enc, dec = ref.encoder.layers, ref.decoder.layers
        if (len(enc), len(dec)) != (c.n_encoder_layer, c.n_decoder_layer) or \
                ref.d_model != c.n_embd or ref.nhead != c.n_head:
            raise ValueError(f"nn.Transformer of shape (encoder {len(enc)}, decoder {len(dec)} "
                             f"layers, d_model {ref.d_model}, nhead {ref.nhead}) does not match "
                             f"{c}")
        if not c.final_norm:
            raise ValueError("nn.Transformer ends both halves with a LayerNorm: build the "
                             "model with final_norm=True")
        # Not shapes, so no copy would fail: a mismatch would silently give another model.
        if c.activation != "relu" or any(layer.norm_first != c.norm_first
                                         or layer.activation is not F.relu
                                         for layer in (*enc, *dec)):
            raise ValueError(f"nn.Transformer's layers need norm_first={c.norm_first} (as this "
                             "model) and both need activation 'relu' (torch's 'gelu' is the "
                             "exact GELU, this model's the tanh approximation)")
        for ours, theirs in zip(self.encoder, enc, strict=True):
            ours.attn.c_attn.weight.copy_(theirs.self_attn.in_proj_weight)
            ours.attn.c_attn.bias.copy_(theirs.self_attn.in_proj_bias)
            _copy_linear(ours.attn.c_proj, theirs.self_attn.out_proj)
            _copy_ffn_norms(ours, theirs, ("ln_1", "ln_2"))
        for ours, theirs in zip(self.decoder, dec, strict=True):
            ours.self_attn.c_attn.weight.copy_(theirs.self_attn.in_proj_weight)
            ours.self_attn.c_attn.bias.copy_(theirs.self_attn.in_proj_bias)
            _copy_linear(ours.self_attn.c_proj, theirs.self_attn.out_proj)
            wq, wk, wv = theirs.multihead_attn.in_proj_weight.chunk(3)
            bq, bk, bv = theirs.multihead_attn.in_proj_bias.chunk(3)
            ours.cross_attn.c_q.weight.copy_(wq)
            ours.cross_attn.c_q.bias.copy_(bq)
            ours.cross_attn.c_kv.weight.copy_(torch.cat([wk, wv]))
            ours.cross_attn.c_kv.bias.copy_(torch.cat([bk, bv]))
            _copy_linear(ours.cross_attn.c_proj, theirs.multihead_attn.out_proj)
            _copy_ffn_norms(ours, theirs, ("ln_1", "ln_2", "ln_3"))
        for ours, theirs in ((self.encoder_norm, ref.encoder.norm),
                             (self.decoder_norm, ref.decoder.norm)):
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        return self


def _copy_linear(ours: nn.Linear, theirs: nn.Linear) -> None:
    ours.weight.copy_(theirs.weight)
    ours.bias.copy_(theirs.bias)


def _copy_ffn_norms(ours: nn.Module, theirs: nn.Module, norms: tuple[str, ...]) -> None:
    """torch's linear1/linear2 → c_fc/c_proj; its norm1, norm2(, norm3) → ln_1, ln_2(, ln_3)."""
    _copy_linear(ours.mlp.c_fc, theirs.linear1)
    _copy_linear(ours.mlp.c_proj, theirs.linear2)
    for i, name in enumerate(norms, start=1):
        _copy_linear(getattr(ours, name), getattr(theirs, f"norm{i}"))
