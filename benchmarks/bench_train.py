"""Training-step throughput: llmcourse GPT vs transformers' GPT2LMHeadModel, same everything.

One training step = get a batch, forward, loss, backward, AdamW step (the same optimizer
groups for both, from ``configure_optimizer``). Both models start from the same weights
(``GPT.to_hf``), see the same batches and run in the same process; measurements alternate
between them (ours, HF, ours, HF, …) so that a slow patch of a shared machine hits both.

    python benchmarks/bench_train.py              # both shapes, 5 rounds
    python benchmarks/bench_train.py --rounds 9 --steps 20 --shapes small

Prints tokens/s (median over rounds) for each and the ratio ours / HF (median of the per-round
ratios, and its range). Goal: ≥ 2×.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from llmcourse.models.gpt import GPT, GPTConfig  # noqa: E402
from llmcourse.training.batches import get_batch  # noqa: E402
from llmcourse.training.loop import TrainConfig, configure_optimizer  # noqa: E402

# name: (n_layer, n_head, n_embd, block_size, batch_size)
SHAPES = {
    "small": (4, 4, 128, 64, 12),  # nanoGPT's CPU recipe
    "large": (6, 6, 384, 256, 8),
}
VOCAB = 84  # characters in the Shakespeare training works (nanoGPT: 65), as in the recipes


def make_step(model: torch.nn.Module, hf: bool, cfg: TrainConfig):
    """A closure doing one training step on (x, y)."""
    opt = configure_optimizer(model, cfg)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        if hf:
            loss = model(input_ids=x, labels=None).logits  # (B, T, V)
            loss = torch.nn.functional.cross_entropy(loss.flatten(0, 1), y.flatten())
        else:
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    return step


def bench(shape: str, rounds: int, steps: int) -> float:
    n_layer, n_head, n_embd, block, batch = SHAPES[shape]
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=block, n_layer=n_layer, n_head=n_head,
                         n_embd=n_embd, dropout=0.0)).train()
    theirs = ours.to_hf().train()
    cfg = TrainConfig(batch_size=batch, block_size=block)
    data = torch.randint(0, VOCAB, (200_000,), generator=torch.Generator().manual_seed(0))
    runners = {"llmcourse": make_step(ours, False, cfg), "transformers": make_step(theirs, True,
                                                                                    cfg)}
    gen = torch.Generator().manual_seed(1)
    batches = [get_batch(data, batch, block, gen) for _ in range(steps)]

    # Same weights, same batch: the first losses agree (checks the comparison is fair).
    first = {name: run(*batches[0]) for name, run in runners.items()}
    print(f"[{shape}] {n_layer} layers, {n_head} heads, width {n_embd}, block {block}, "
          f"batch {batch}, vocab {VOCAB}; {ours.num_parameters() / 1e6:.2f}M params; "
          f"HF attention: {theirs.config._attn_implementation}; first-step loss "
          f"{first['llmcourse']:.5f} vs {first['transformers']:.5f}")
    for run in runners.values():  # warm-up
        for x, y in batches[:2]:
            run(x, y)
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        order = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in order:
            t0 = time.perf_counter()
            for x, y in batches:
                runners[name](x, y)
            speeds[name].append(steps * batch * block / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(speeds["llmcourse"], speeds["transformers"], strict=True)]
    ours_tps, hf_tps = statistics.median(speeds["llmcourse"]), statistics.median(
        speeds["transformers"])
    ratio = statistics.median(ratios)
    print(f"[{shape}] llmcourse {ours_tps:,.0f} tokens/s, transformers {hf_tps:,.0f} tokens/s: "
          f"ratio {ratio:.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}, {rounds} rounds "
          f"of {steps} steps)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for shape in args.shapes:
        bench(shape, args.rounds, args.steps if shape == "small" else max(2, args.steps // 5))


if __name__ == "__main__":
    main()
