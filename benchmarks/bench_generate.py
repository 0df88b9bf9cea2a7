"""Generation speed: ``llmcourse.decoding.generate`` against ``transformers``' ``generate`` on the
same weights, against the machine's memory-bandwidth bound, and with against without the KV
cache. Everything is measured in this one run, on this machine. Every step runs the model's one
forward (the one that trains and scores); its weights are stored in the layout the
matrix-vector product reads fastest (``llmcourse.nn.linear``).

    python benchmarks/bench_generate.py                 # the full table (a few minutes)
    python benchmarks/bench_generate.py --quick         # fewer tokens, for a smoke test

Why a bandwidth bound: decoding one token for one sequence multiplies a vector by every
weight matrix once. That is ~2 FLOPs per weight but 4 bytes (fp32) to read per weight, and a
CPU reads memory far slower than it multiplies, so a batch-1 step costs about

    (bytes of weights + bytes of KV cache read) / (memory read bandwidth)

which the script measures by summing a buffer much larger than the caches.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import time
from pathlib import Path

import torch

from llmcourse.decoding.generate import generate
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.nn.linear import input_major

GOAL_VS_HF, GOAL_BOUND, GOAL_CACHE = 1.25, 0.75, 5.0


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs (the one least disturbed by other work)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_bandwidth(mib: int = 512, repeats: int = 5) -> float:
    """GB/s of summing a float32 buffer of ``mib`` MiB, far larger than any cache."""
    buf = torch.ones(mib * 2**20 // 4)
    buf.sum()  # touch every page once before timing
    return buf.numel() * 4 / best_time(buf.sum, repeats) / 1e9


def layout_gemv(model: GPT, repeats: int = 5) -> list[tuple[str, float]]:
    """GB/s of the output layer's matrix-vector product, W (V, C): stored (out, in) as
    ``nn.Linear`` keeps it and (in, out) as the model stores it, both through ``F.linear``;
    then the model's own layer, which cuts the product in one slice per thread."""
    w = model.lm_head.weight.detach()
    out_in, in_out = w.contiguous(), input_major(w)
    x = torch.randn(1, w.shape[1])
    gb = w.numel() * 4 / 1e9
    ways = [("(out, in)", lambda: torch.nn.functional.linear(x, out_in)),
            ("(in, out)", lambda: torch.nn.functional.linear(x, in_out)),
            (f"(in, out) in {torch.get_num_threads()} slices, the model's layer",
             lambda: model.lm_head(x))]
    rates = []
    with torch.inference_mode():
        for name, run in ways:
            run()
            rates.append((name, gb / best_time(run, repeats)))
    return rates


def bytes_per_token(model: GPT, context: float) -> float:
    """Bytes a batch-1 decoding step reads: every weight once (the position table only one
    row) plus the keys and values of ``context`` cached positions in every layer."""
    cfg = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights -= model.transformer.wpe.weight[1:].numel() * 4
    kv = 2 * cfg.n_layer * context * cfg.n_embd * 4
    return weights + kv


def hf_copy(model: GPT):
    with contextlib.redirect_stderr(io.StringIO()):
        hf = model.to_hf()
    hf.generation_config.pad_token_id = hf.generation_config.eos_token_id
    return hf


def compare(name: str, model: GPT, hf, batch: int, new: int, prompt: int, repeats: int
            ) -> dict:
    """tokens/s of both generate functions, greedy, ``new`` tokens per sequence, EOS held
    back with min_new_tokens so that every run does the same work."""
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, model.config.vocab_size - 1, (batch, prompt), generator=g)
    eos = hf.generation_config.eos_token_id
    ours_out, theirs_out = [], []

    def ours(new=new):
        ours_out[:] = [generate(model, ids, max_new_tokens=new, min_new_tokens=new,
                                eos_token_id=eos)]

    def theirs(new=new):
        with torch.no_grad():
            theirs_out[:] = [hf.generate(ids, attention_mask=torch.ones_like(ids),
                                         max_new_tokens=new, min_new_tokens=new,
                                         do_sample=False)]

    for fn in (ours, theirs):  # warm up: first-call allocations
        fn(4)
    t_ours, t_hf = [], []
    for _ in range(repeats):  # interleaved, so that a slow spell hits both
        t_ours.append(best_time(ours, 1))
        t_hf.append(best_time(theirs, 1))
    same = torch.equal(ours_out[0], theirs_out[0])
    return dict(model=name, batch=batch, ours=batch * new / min(t_ours),
                hf=batch * new / min(t_hf), same=same)


def cache_speedup(model: GPT, context: int, new: int, repeats: int) -> tuple[float, float]:
    """tokens/s generating the last ``new`` tokens of a ``context``-token text, with the KV
    cache and recomputing the whole text at every step."""
    ids = torch.randint(0, model.config.vocab_size, (1, context - new),
                        generator=torch.Generator().manual_seed(0))
    rates = []
    for use_cache in (True, False):
        run = lambda use_cache=use_cache: generate(model, ids, max_new_tokens=new,
                                                   use_cache=use_cache)
        run()
        rates.append(new / best_time(run, repeats))
    return rates[0], rates[1]


def course_model() -> tuple[str, GPT] | None:
    from llmcourse.course.gpt2 import course_checkpoint
    from llmcourse.models.checkpoint import load_checkpoint

    try:
        folder = course_checkpoint()
    except ValueError:
        return None
    model, _ = load_checkpoint(folder)
    return f"course checkpoint ({Path(folder).name})", model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--quick", action="store_true", help="32 new tokens, one repeat")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    new, repeats = (32, 1) if args.quick else (args.new_tokens, args.repeats)
    prompt = 16
    import transformers
    transformers.logging.set_verbosity_error()

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads; torch "
          f"{torch.__version__}, transformers {transformers.__version__}")
    bandwidth = read_bandwidth()
    print(f"memory read bandwidth: {bandwidth:.1f} GB/s (sum of a 512 MiB float32 buffer, "
          f"best of 5)")

    torch.manual_seed(0)
    models = [("GPT-2 124M shape, random", GPT(GPTConfig()).eval())]
    found = course_model()
    if found is not None:
        models.append(found)
    else:
        print("course checkpoint: not found under data/checkpoints/ (row skipped)")

    rows, bounds, per_token = [], {}, {}
    for name, model in models:
        rates = ", ".join(f"{gbs:.1f} GB/s stored {way}" for way, gbs in layout_gemv(model))
        print(f"{name}: output layer {tuple(model.lm_head.weight.shape)} x vector: {rates}")
        hf = hf_copy(model)
        steps = min(new, model.config.block_size - prompt)  # a short context caps the run
        per_token[name] = bytes_per_token(model, prompt + steps / 2)
        bounds[name] = bandwidth * 1e9 / per_token[name]
        for batch in (1, 8):
            rows.append(compare(name, model, hf, batch, steps, prompt, repeats) | {"new": steps})
        del hf

    print(f"\ngreedy, prompt {prompt} tokens, {new} new tokens per sequence (fewer where the "
          f"context is shorter: column new), best of "
          f"{repeats}; tokens/s counts every sequence of the batch; bound b=1 = bandwidth / "
          f"bytes read per token (" + ", ".join(
              f"{name}: {per_token[name] / 1e6:.1f} MB" for name, _ in models) + ")")
    head = f"{'model':34s} {'batch':>5s} {'new':>4s} {'llmcourse':>10s} {'transformers':>13s} " \
           f"{'ratio':>6s} {'bound b=1':>10s} {'of bound':>9s}  same tokens"
    print(head)
    print("-" * len(head))
    for r in rows:
        bound = bounds[r["model"]]
        of_bound = f"{r['ours'] / bound:8.0%}" if r["batch"] == 1 else f"{'':8s}"
        print(f"{r['model']:34s} {r['batch']:5d} {r['new']:4d} {r['ours']:10.1f} {r['hf']:13.1f} "
              f"{r['ours'] / r['hf']:5.2f}x {bound:10.1f} {of_bound:>9s}  "
              f"{'yes' if r['same'] else 'NO'}")

    context, steps = 512, (8 if args.quick else 16)
    cached, uncached = cache_speedup(models[0][1], context, steps, 1)
    print(f"\nKV cache, {models[0][0]}, the last {steps} tokens of {context} tokens of "
          f"context: {cached:.1f} tokens/s with the cache, {uncached:.2f} without -> "
          f"{cached / uncached:.1f}x")

    first = [r for r in rows if r["batch"] == 1 and r["model"] == models[0][0]][0]
    checks = [
        (f"batch 1 >= {GOAL_VS_HF}x transformers", first["ours"] / first["hf"] >= GOAL_VS_HF),
        (f"batch 1 >= {GOAL_BOUND:.0%} of the bandwidth bound",
         first["ours"] / bounds[first["model"]] >= GOAL_BOUND),
        (f"cache speed-up >= {GOAL_CACHE}x", cached / uncached >= GOAL_CACHE),
    ]
    print("\ngoals (GPT-2 124M shape): " + "; ".join(
        f"{what}: {'met' if ok else 'NOT met'}" for what, ok in checks))


if __name__ == "__main__":
    main()
