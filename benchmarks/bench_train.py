"""Training-step throughput at three shapes: the llmcourse GPT against a minimal nanoGPT-style
GPT written below in plain PyTorch (the same math, ``nn.Linear`` everywhere, no input checks)
and against transformers' GPT2LMHeadModel.

One training step = a batch, forward, loss, backward, gradient clipping, AdamW step (the same
optimizer groups for all, from ``configure_optimizer``). All three start from the same
weights, see the same batches and run in the same process; the measurements alternate between
them round by round, in a rotating order, so that a slow patch of a shared machine hits each.

    python benchmarks/bench_train.py                     # three shapes, 7 rounds
    python benchmarks/bench_train.py --rounds 9 --shapes nanogpt-cpu

Prints, per shape, tokens/s (median over rounds) of each and the ratios ours / nanoGPT-style and
ours / transformers (medians of the per-round ratios, with their range). Goal: ours ≥ 1.0× the
nanoGPT-style GPT at every shape, judged as ``benchmarks/rounds.py`` says: met only when every
round reaches it, NOT met when none does, otherwise undecided (noise larger than the gap).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rounds import verdict  # noqa: E402  (benchmarks/rounds.py, beside this script)
from torch import nn  # noqa: E402

from llmcourse.models.gpt import GPT, GPTConfig  # noqa: E402
from llmcourse.training.batches import get_batch  # noqa: E402
from llmcourse.training.loop import TrainConfig, configure_optimizer  # noqa: E402

# name: (n_layer, n_head, n_embd, block_size, batch_size, vocab_size)
SHAPES = {
    "nanogpt-cpu": (4, 4, 128, 64, 12, 65),  # nanoGPT's CPU recipe, characters
    "bpe-4k": (6, 4, 256, 128, 16, 4096),  # the course preset's shape, a 4096-token BPE
    "shakespeare-char": (6, 6, 384, 256, 8, 65),  # nanoGPT's Shakespeare-char model, batch 8
}
GOAL_VS_PLAIN = 1.0


# --- a minimal nanoGPT-style GPT: the reference for "plain PyTorch speed" ---------------------

class PlainAttention(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.n_head = c.n_head
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)  # 3 × (B, T, C)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for z in (q, k, v))  # (B, h, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, T, hd)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))  # (B, T, C)


class PlainMLP(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # (B, T, C)


class PlainBlock(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.attn = PlainAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.mlp = PlainMLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class PlainGPT(nn.Module):
    """GPT-2's math in the fewest lines: pre-LN blocks, tied embeddings, mean cross-entropy.
    Parameter names are the llmcourse GPT's, so its state dict loads as it is."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd), wpe=nn.Embedding(c.block_size, c.n_embd),
            h=nn.ModuleList(PlainBlock(c) for _ in range(c.n_layer)),
            ln_f=nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        t = idx.shape[1]
        tr = self.transformer
        x = tr.wte(idx) + tr.wpe(torch.arange(t, device=idx.device))  # (B, T, C)
        for block in tr.h:
            x = block(x)  # (B, T, C)
        logits = self.lm_head(tr.ln_f(x))  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


# --- the benchmark --------------------------------------------------------------------------

def make_step(model: nn.Module, kind: str, cfg: TrainConfig):
    """A closure doing one training step on (x, y); ``kind`` says how to get the loss."""
    opt = configure_optimizer(model, cfg)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        if kind == "transformers":
            logits = model(input_ids=x, labels=None).logits  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        else:
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    return step


def bench(shape: str, rounds: int, steps: int) -> dict[str, Any]:
    """tokens/s of the three models at ``shape``; returns the median ratios."""
    n_layer, n_head, n_embd, block, batch, vocab = SHAPES[shape]
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.0)
    ours = GPT(config).train()
    plain = PlainGPT(config).train()
    plain.load_state_dict(ours.state_dict())
    theirs = ours.to_hf().train()
    cfg = TrainConfig(batch_size=batch, block_size=block)
    data = torch.randint(0, vocab, (200_000,), generator=torch.Generator().manual_seed(0))
    models = {"llmcourse": ours, "nanoGPT-style": plain, "transformers": theirs}
    runners = {name: make_step(m, name, cfg) for name, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    batches = [get_batch(data, batch, block, gen) for _ in range(steps)]

    # Same weights, same batch: the first losses agree (checks the comparison is fair).
    first = {name: run(*batches[0]) for name, run in runners.items()}
    assert max(first.values()) - min(first.values()) < 1e-4 * max(1.0, math.log(vocab)), first
    print(f"[{shape}] {n_layer} layers, {n_head} heads, width {n_embd}, context {block}, "
          f"batch {batch}, vocab {vocab}; {ours.num_parameters() / 1e6:.2f}M params; HF "
          f"attention: {theirs.config._attn_implementation}; first-step loss " + ", ".join(
              f"{name} {loss:.5f}" for name, loss in first.items()))
    for run in runners.values():  # warm-up
        for x, y in batches[:2]:
            run(x, y)
    names = list(runners)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % 3:] + names[:r % 3]:  # rotate who goes first
            t0 = time.perf_counter()
            for x, y in batches:
                runners[name](x, y)
            speeds[name].append(steps * batch * block / (time.perf_counter() - t0))
    ratios = {}
    for other in ("nanoGPT-style", "transformers"):
        per_round = [a / b for a, b in zip(speeds["llmcourse"], speeds[other], strict=True)]
        ratios[other] = statistics.median(per_round)
        ratios[other + " range"] = (min(per_round), max(per_round))
        ratios[other + " rounds"] = per_round
    tps = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"[{shape}] tokens/s: " + ", ".join(f"{n} {v:,.0f}" for n, v in tps.items()) +
          f"; llmcourse / nanoGPT-style {ratios['nanoGPT-style']:.3f}x (rounds "
          f"{ratios['nanoGPT-style range'][0]:.2f}-{ratios['nanoGPT-style range'][1]:.2f}), "
          f"llmcourse / transformers {ratios['transformers']:.3f}x (rounds "
          f"{ratios['transformers range'][0]:.2f}-{ratios['transformers range'][1]:.2f}); "
          f"{rounds} rounds of {steps} steps")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 vs fp32 comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    for shape in args.shapes:
        steps = args.steps if SHAPES[shape][2] <= 128 else max(2, args.steps // 2)
        results[shape] = bench(shape, args.rounds, steps)
    if not args.no_bf16:
        bench_bf16()
    print(f"goal (fp32 training step, llmcourse >= {GOAL_VS_PLAIN}x the nanoGPT-style GPT, "
          "judged per shape on the interleaved rounds: met only when every round reaches it):")
    verdicts = {shape: verdict(r["nanoGPT-style rounds"], GOAL_VS_PLAIN)
                for shape, r in results.items()}
    for shape, text in verdicts.items():
        print(f"  {shape}: {text}")
    words = {text.split(" (")[0].split(":")[0] for text in verdicts.values()}
    overall = ("met" if words == {"met"} else "NOT met" if "NOT met" in words
               else "undecided (noise decides at some shape)")
    print(f"goal at every shape: {overall}")


def bench_bf16(steps: int = 150, chunk_steps: int = 10) -> float:
    """bf16 autocast (float32 master weights) against float32 at the 6L/4H/256 shape of the
    ``course-cpu`` preset, on characters of the Shakespeare training works, measured by
    :func:`llmcourse.training.precision_compare.compare_dtypes`: one model per dtype from the
    same weights, trained on the same batches in alternating chunks of ``chunk_steps`` steps
    (``train`` with ``dtype="bf16"`` vs ``"fp32"``); the median step time of each, then the
    held-out loss of both after the same ``steps`` (evaluated in float32 on the first 20,000
    characters of the held-out works). Returns the speed-up (fp32 step time / bf16's).

    Chapter 09's committed numbers (BPE tokens, the same shape) come from
    ``python -m llmcourse.training.precision_compare --out data/results/bf16_vs_fp32.json``.
    """
    # Imported here, not at the top: the rest of this file needs none of it.
    from llmcourse.text.chars import CharTokenizer
    from llmcourse.text.corpus import load_works, split_works, token_stream
    from llmcourse.training.precision import fast_bf16
    from llmcourse.training.precision_compare import compare_dtypes, summary

    fast, why = fast_bf16("cpu")
    print(f"[bf16] {why}" + ("" if fast else " -- expect no speed-up"))
    train_works, val_works = split_works(load_works())
    tok = CharTokenizer.from_text("\n\n".join(train_works.values()))
    train_ids = token_stream(train_works, tok, "\n\n")  # (N_train,)
    val_ids = token_stream(val_works, tok, "\n\n")[:20_001]  # (20001,)
    n_layer, n_head, n_embd, block, batch = 6, 4, 256, 128, 8
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=block, n_layer=n_layer,
                       n_head=n_head, n_embd=n_embd, dropout=0.0)
    cfg = TrainConfig(max_steps=steps, batch_size=batch, block_size=block,
                      learning_rate=1e-3, min_lr=1e-4, warmup_steps=steps // 10,
                      eval_interval=chunk_steps, eval_batches=1, progress=False)
    runs = compare_dtypes(config, cfg, train_ids, val_ids, val_ids, chunk_steps=chunk_steps)
    s = summary(runs["fp32"], runs["bf16"])
    per_chunk = [a / b for a, b in zip(runs["fp32"]["step_seconds"],
                                       runs["bf16"]["step_seconds"], strict=True)]
    print(f"[bf16] {n_layer} layers, {n_head} heads, width {n_embd}, block {block}, batch "
          f"{batch}, vocab {tok.vocab_size}: step {runs['fp32']['median_step_seconds'] * 1e3:.0f}"
          f" ms fp32, {runs['bf16']['median_step_seconds'] * 1e3:.0f} ms bf16; bf16/fp32 step "
          f"time {s['step_time_ratio']:.3f} ({s['speedup']:.2f}x faster; per chunk "
          f"{min(per_chunk):.2f}-{max(per_chunk):.2f}x, {len(per_chunk)} chunks of "
          f"{chunk_steps} steps)")
    loss = {dt: run["val_nats_per_token"] for dt, run in runs.items()}
    gap = s["relative_gap"]
    print(f"[bf16] held-out loss after {steps} steps: fp32 {loss['fp32']:.4f}, bf16 "
          f"{loss['bf16']:.4f} nats/char ({gap:+.2%}; " +
          ("within 1%)" if abs(gap) < 0.01 else "MORE than 1% apart)"))
    return s["speedup"]


if __name__ == "__main__":
    main()
