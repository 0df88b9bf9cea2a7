"""Training-step throughput of the encoder–decoder: the course's ``Seq2Seq`` against torch's
``nn.Transformer`` of the same shape doing the same math, in one run.

The peer is written below in plain PyTorch around a batch-first ``nn.Transformer``: post-LN,
ReLU, one embedding for both languages scaled by √d plus the paper's sinusoidal positions, the
output layer tied to that embedding, the source padding mask (``src_key_padding_mask`` and
``memory_key_padding_mask``) and the causal target mask (``tgt_is_causal``, torch's fast
path), mean cross-entropy over the scored target positions. Both models start from the same
weights (``Seq2Seq.load_torch_transformer`` plus the embedding), and the script first checks
that they give the same loss on the same batch, so that the comparison is of the same math.

One training step = forward, loss, backward, gradient clipping, AdamW step (the optimizer
groups of the course's training loop, ``configure_optimizer``), in fp32 on the CPU with torch's
default number of threads. The batches are real, padded translation batches of the chapter's
task (``llmcourse.text.number_words``: English number words → German, characters), drawn as
the training loop draws them (``draw_batch``: trimmed to the batch's longest source and
target); both models see the same batches in the same order. Measurements alternate between
the two round by round, alternating which goes first, after a warm-up; tokens/s are medians over the
rounds, the ratio is the median of the per-round ratios. A token is a source or target token
that is not padding.

    python benchmarks/bench_seq2seq.py                   # both shapes, 11 rounds
    python benchmarks/bench_seq2seq.py --quick           # 5 rounds: a smoke test
    python benchmarks/bench_seq2seq.py --threads 1 --shapes chapter06

Measured on a 2-core machine that other processes were using too: 51 s with ``--threads 1``,
150-185 s with torch's two threads. With the cores shared, torch's threads wait on each other,
the per-round ratios swing widely and the medians move between runs; ``--threads 1`` gives
steadier ratios.

Shapes: ``chapter06`` is notebook 06's model (d 64, 4 heads, 2+2 layers, d_ff 256, batch 64 of
the numbers 0..9999, padded to ~46 source and ~40 target positions); ``wide`` is a bigger one
(d 256, 8 heads, 3+3 layers, d_ff 1024, batch 32 of numbers below a million, padded to ~70
and ~62). Goal: ours ≥ 0.9× ``nn.Transformer`` at every shape; the last line
says whether it is met.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from llmcourse.models.seq2seq import Seq2Seq, Seq2SeqConfig
from llmcourse.nn.positional import sinusoidal_positions
from llmcourse.text.number_words import encode_pairs, number_pairs, pair_tokenizer
from llmcourse.training.batches import draw_batch
from llmcourse.training.loop import TrainConfig, configure_optimizer

# name: (n_embd, n_head, encoder layers, decoder layers, d_ff, batch, numbers drawn from)
SHAPES = {
    "chapter06": (64, 4, 2, 2, 256, 64, "0..9999"),
    "wide": (256, 8, 3, 3, 1024, 32, "below 1e6"),
}
GOAL = 0.9
LOSS_TOL = 1e-4

Batch = tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]


class TorchSeq2Seq(nn.Module):
    """The same model around ``nn.Transformer``: the peer whose speed is "plain PyTorch"."""

    def __init__(self, c: Seq2SeqConfig) -> None:
        super().__init__()
        self.d, self.pad_id = c.n_embd, c.pad_id
        self.embed = nn.Embedding(c.tgt_vocab_size, c.n_embd)
        self.register_buffer("pe", sinusoidal_positions(c.max_len, c.n_embd), persistent=False)
        self.transformer = nn.Transformer(
            d_model=c.n_embd, nhead=c.n_head, num_encoder_layers=c.n_encoder_layer,
            num_decoder_layers=c.n_decoder_layer, dim_feedforward=c.ffn_hidden,
            dropout=c.dropout, activation="relu", layer_norm_eps=c.layer_norm_epsilon,
            batch_first=True, norm_first=c.norm_first, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.tgt_vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied, as the paper (§3.4)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, *, src_mask: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = src.shape[1], tgt.shape[1]
        x = self.embed(src) * math.sqrt(self.d) + self.pe[:s]  # (B, S, C)
        y = self.embed(tgt) * math.sqrt(self.d) + self.pe[:t]  # (B, T, C)
        pad = src_mask == 0  # (B, S) True = padding, torch's convention
        causal = nn.Transformer.generate_square_subsequent_mask(t, device=tgt.device)  # (T, T)
        h = self.transformer(x, y, tgt_mask=causal, tgt_is_causal=True,
                             src_key_padding_mask=pad, memory_key_padding_mask=pad)  # (B, T, C)
        logits = self.lm_head(h)  # (B, T, V)
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
                                       ignore_index=-100)


def make_data(shape: str, steps: int) -> tuple[list[Batch], int]:
    """``steps`` padded batches of the shape's pairs, and the vocabulary size."""
    batch, numbers = SHAPES[shape][5], SHAPES[shape][6]
    if numbers == "0..9999":
        nums = list(range(10_000))
    else:
        rng = random.Random(0)
        nums = [rng.randrange(1_000_000) for _ in range(4_000)]
    pairs = number_pairs(nums)
    tok = pair_tokenizer(pairs)
    data = encode_pairs(pairs, tok)
    gen = torch.Generator().manual_seed(1)
    return [draw_batch(data, batch, 0, gen) for _ in range(steps)], tok.vocab_size


def make_step(model: nn.Module, cfg: TrainConfig) -> Callable[[Batch], float]:
    """A closure doing one training step on a batch; returns its loss."""
    opt = configure_optimizer(model, cfg)

    def step(b: Batch) -> float:
        args, kwargs = b
        _, loss = model(*args, **kwargs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    return step


def n_tokens(b: Batch) -> int:
    """Source and target tokens that are not padding."""
    return int(b[1]["src_mask"].sum()) + int((b[1]["targets"] != -100).sum())


def bench(shape: str, rounds: int, steps: int) -> float:
    """tokens/s of both models at ``shape``; returns the median per-round ratio ours / torch."""
    n_embd, n_head, n_enc, n_dec, ffn, batch, numbers = SHAPES[shape]
    batches, vocab = make_data(shape, steps)
    max_len = max(max(a[0].shape[1], a[1].shape[1]) for a, _ in batches)
    config = Seq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, max_len=max_len,
                           n_encoder_layer=n_enc, n_decoder_layer=n_dec, n_head=n_head,
                           n_embd=n_embd, ffn_hidden=ffn, dropout=0.0)
    torch.manual_seed(0)
    theirs = TorchSeq2Seq(config).train()
    ours = Seq2Seq(config).load_torch_transformer(theirs.transformer).train()
    with torch.no_grad():  # the course's initialisation, N(0, 1/d); tied to the output layer
        theirs.embed.weight.copy_(ours.src_embed.weight)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())

    # Same weights, same batch: the same loss (the comparison is of the same math).
    with torch.no_grad():
        first = {name: m(*batches[0][0], **batches[0][1])[1].item()
                 for name, m in (("llmcourse", ours), ("nn.Transformer", theirs))}
    gap = abs(first["llmcourse"] - first["nn.Transformer"])
    if gap > LOSS_TOL:
        raise SystemExit(f"[{shape}] the two models disagree on the first batch: {first}")

    cfg = TrainConfig()  # AdamW settings and clipping of the course's loop
    runners = {"llmcourse": make_step(ours, cfg), "nn.Transformer": make_step(theirs, cfg)}
    tokens = sum(n_tokens(b) for b in batches)
    src_len = statistics.mean(a[0].shape[1] for a, _ in batches)
    tgt_len = statistics.mean(a[1].shape[1] for a, _ in batches)
    print(f"[{shape}] d {n_embd}, {n_head} heads, {n_enc}+{n_dec} layers, d_ff {ffn}, vocab "
          f"{vocab}, batch {batch} of numbers {numbers} (padded lengths: source "
          f"{src_len:.0f}, target {tgt_len:.0f}; {tokens / steps:,.0f} tokens a batch); "
          f"{ours.num_parameters() / 1e6:.2f}M params; first-batch loss "
          f"{first['llmcourse']:.6f} vs {first['nn.Transformer']:.6f} (|diff| {gap:.1e})")
    warm = min(2, steps)
    for run in runners.values():  # warm-up: first-call allocations, kernel choices
        for b in batches[:warm]:
            run(b)
    names = list(runners)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    last: dict[str, float] = {}
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:  # alternate who goes first
            t0 = time.perf_counter()
            for b in batches:
                last[name] = runners[name](b)
            speeds[name].append(tokens / (time.perf_counter() - t0))
    per_round = [a / b for a, b in zip(speeds["llmcourse"], speeds["nn.Transformer"],
                                       strict=True)]
    ratio = statistics.median(per_round)
    tps = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"[{shape}] tokens/s: llmcourse {tps['llmcourse']:,.0f}, nn.Transformer "
          f"{tps['nn.Transformer']:,.0f}; llmcourse / nn.Transformer {ratio:.3f}x (rounds "
          f"{min(per_round):.2f}-{max(per_round):.2f}); {rounds} rounds of {steps} steps; "
          f"loss after the same {warm + rounds * steps} steps: {last['llmcourse']:.5f} vs "
          f"{last['nn.Transformer']:.5f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=2, help="steps a round (chapter06; "
                        "wide, several times the work a step, takes half, at least 1)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 11")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 5, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")
    results = {}
    for shape in args.shapes:
        steps = args.steps if SHAPES[shape][0] <= 64 else max(1, args.steps // 2)
        results[shape] = bench(shape, args.rounds, steps)
    met = all(r >= GOAL for r in results.values())
    print(f"goals met: {'yes' if met else 'no'} (training step tokens/s, llmcourse >= {GOAL}x "
          "nn.Transformer at every shape: " +
          ", ".join(f"{s} {r:.2f}x" for s, r in results.items()) + ")")


if __name__ == "__main__":
    main()
