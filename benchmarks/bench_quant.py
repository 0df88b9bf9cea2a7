"""Int8 quantization, measured: the course's int8 GPT (``llmcourse.quant``) against the float32
course GPT and against torch's own dynamic int8 quantization (``quantize_dynamic``, the peer),
all in this one run, on this machine.

    python benchmarks/bench_quant.py            # everything (several minutes on 2 cores)
    python benchmarks/bench_quant.py --quick    # fewer tokens, one held-out work
    python benchmarks/bench_quant.py --threads 1   # on a machine shared with other work

What is measured:

1. the matmul of one token (batch 1) for each weight matrix of GPT-2 small, per kernel: the
   model's float32 layer, ours (``int8``: int8 × int8 on the CPU's integer dot-product units;
   ``bf16``: torch's weight-only ``_weight_int8pack_mm``), torch's ``DynamicQuantizedLinear``,
   and ``_weight_int8pack_mm`` fed float32 (its scalar path). Each layer type is timed over all
   12 blocks in turn, so that the weights come from memory, not from the cache;
2. greedy decoding, batch 1, on the GPT-2 124M shape (random weights: speed does not depend
   on them), tokens/s: the four models interleaved, each going first in turn, medians;
3. the file of each model (the float and int8 ones as safetensors; torch's with
   ``torch.save``, the only way it saves);
4. on the course checkpoint (``data/checkpoints/``), held-out nats per character for each
   model, by the evaluation of ``tests/test_course_checkpoint.py``: every token of the four
   held-out works predicted once, windows of the model's context (``--quick``: one work, the
   Sonnets, the same for every model), and the share of 64 greedy tokens equal to float32's.

The last line says whether the goals of issue 10 are met: file ≥ 3.9× smaller than float32;
held-out nats/char within 2% of float32; decoding ≥ 1.8× float32's tokens/s; and at least
torch's tokens/s at equal or better held-out loss.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from llmcourse.decoding.generate import generate
from llmcourse.models.checkpoint import load_checkpoint, save_checkpoint
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.quant import int8 as q8
from llmcourse.quant import load_quantized, quantize_model, save_quantized, torch_dynamic_int8

GOAL_SIZE, GOAL_LOSS, GOAL_SPEED = 3.9, 0.02, 1.8
warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.ao's notice


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth(mib: int = 512) -> float:
    """GB/s of summing a float32 buffer far larger than the caches (median of 5)."""
    buf = torch.ones(mib * 2**20 // 4)
    return buf.numel() * 4 / median_time(buf.sum, 5) / 1e9


def machine_line() -> str:
    try:
        flags = torch._C._cpu._get_cpu_capability()
        has = [f for f in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if flags.get(f)]
    except AttributeError:
        has = ["(flags unknown)"]
    engine, reduce_range = q8._int8_engine()
    return (f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"CPU features {', '.join(has) or 'none of avx512_vnni/avx_vnni/avx512_bf16/amx'}; "
            f"torch {torch.__version__}, quantized engine {engine}, activations of the int8 "
            f"kernel in {7 if reduce_range else 8} bits")


def kernel_table(models: dict[str, torch.nn.Module], repeats: int) -> None:
    """Batch-1 matmul time per weight matrix of GPT-2 small, per kernel."""
    fp32, ours = models["float32 (course)"], models["int8 (ours)"]
    peer = models["torch quantize_dynamic"]
    bf16 = models["int8 (ours), bf16 kernel"]
    shapes = [("attn.c_attn", "h.{}.attn.c_attn"), ("attn.c_proj", "h.{}.attn.c_proj"),
              ("mlp.c_fc", "h.{}.mlp.c_fc"), ("mlp.c_proj", "h.{}.mlp.c_proj"),
              ("lm_head", "lm_head")]
    names = ["float32 layer", "ours int8", "ours bf16", "torch dynamic", "int8pack, fp32 in"]
    print(f"\nbatch-1 matmul, µs per layer (median of {repeats}; in brackets GB/s of weights "
          "read: 4 bytes per weight for float32, 1 for int8)")
    print(f"{'layer (in x out)':26s}" + "".join(f"{n:>20s}" for n in names))
    for label, path in shapes:
        paths = [path] if path == "lm_head" else [path.format(i) for i in range(12)]

        def layers(model, paths=paths):
            return [model.get_submodule(p if p == "lm_head" else f"transformer.{p}")
                    for p in paths]

        f_layers = layers(fp32)
        n_in, n_out = f_layers[0].in_features, f_layers[0].out_features
        x = torch.randn(1, n_in)
        packs = [(m.weight, m.scale) for m in layers(ours)]
        ways = [(f_layers, 4), (layers(ours), 1), (layers(bf16), 1), (layers(peer), 1)]
        row = []
        with torch.inference_mode():
            for mods, width in ways:
                t = median_time(lambda mods=mods, x=x: [m(x) for m in mods], repeats) / len(mods)
                row.append(f"{t * 1e6:9.0f} ({n_in * n_out * width / t / 1e9:5.1f})")
            t = median_time(lambda x=x, packs=packs: [torch._weight_int8pack_mm(x, w, s)
                                                      for w, s in packs],
                            max(1, repeats // 4)) / len(packs)
            row.append(f"{t * 1e6:9.0f} ({n_in * n_out / t / 1e9:5.1f})")
        print(f"{label + f' ({n_in}x{n_out})':26s}" + "".join(f"{r:>20s}" for r in row))


def decode_speed(models: dict[str, torch.nn.Module], new: int, rounds: int
                 ) -> tuple[dict[str, float], list[float]]:
    """Greedy tokens/s at batch 1: every model once per round, the order rotating from round
    to round (so that no model always follows the same one), medians; and ours / torch's
    tokens/s round by round (a slow spell of the machine hits both runs of a round)."""
    ids = torch.randint(0, 50000, (1, 16), generator=torch.Generator().manual_seed(0))
    eos = GPTConfig().vocab_size - 1
    run = lambda m, n: generate(m, ids, max_new_tokens=n, min_new_tokens=n, eos_token_id=eos)
    for model in models.values():
        run(model, 4)  # warm up: first-call allocations, packing
    times: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:  # each goes first in turn
            model = models[name]
            start = time.perf_counter()
            run(model, new)
            times[name].append(time.perf_counter() - start)
    paired = [p / o for o, p in zip(times["int8 (ours)"], times["torch quantize_dynamic"],
                                    strict=True)]
    return {name: new / statistics.median(t) for name, t in times.items()}, paired


def file_sizes(fp32: GPT, ours, peer, folder: Path) -> dict[str, int]:
    save_checkpoint(folder / "fp32", fp32)
    save_quantized(folder / "int8", ours)
    torch.save(peer.state_dict(), folder / "torch_dynamic.pt")
    return {"float32 (course)": (folder / "fp32" / "model.safetensors").stat().st_size,
            "int8 (ours)": (folder / "int8" / "model.safetensors").stat().st_size,
            "torch quantize_dynamic": (folder / "torch_dynamic.pt").stat().st_size}


def held_out(models: dict[str, torch.nn.Module], quick: bool) -> tuple[dict[str, float], str]:
    """nats/char of each model on the held-out works (tests/test_course_checkpoint.py's way)."""
    from llmcourse.course.gpt2 import course_checkpoint
    from llmcourse.text.bpe import EOT
    from llmcourse.text.corpus import load_works, nats_per_char, split_works, token_stream
    from llmcourse.text.load import load_tokenizer
    from llmcourse.training.loop import evaluate_stream

    tokenizer = load_tokenizer(course_checkpoint())
    _, val_works = split_works(load_works())
    if quick:
        val_works = {"sonnets": val_works["sonnets"]}
    stream = token_stream(val_works, tokenizer, EOT)  # (N,)
    chars = sum(len(t) for t in val_works.values())
    out = {}
    for name, model in models.items():
        with torch.no_grad():
            loss, n_pred = evaluate_stream(model, stream, block_size=model.config.block_size,
                                           batch_size=32)
        out[name] = nats_per_char(loss, n_pred, chars)
    what = f"{', '.join(val_works)}: {stream.numel():,} tokens, {chars:,} characters"
    return out, what


def greedy_agreement(models: dict[str, torch.nn.Module], new: int = 64) -> dict[str, float]:
    """Share of greedy tokens equal to float32's, over 8 prompts of the held-out stream."""
    g = torch.Generator().manual_seed(1)
    vocab = next(iter(models.values())).config.vocab_size
    prompts = torch.randint(0, vocab - 1, (8, 8), generator=g)
    outs = {n: generate(m, prompts, max_new_tokens=new)[:, 8:] for n, m in models.items()}
    ref = outs["float32 (course)"]
    return {n: float((o == ref).float().mean()) for n, o in outs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="16 new tokens, 4 rounds, the Sonnets only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    new, rounds, repeats = (16, 4, 5) if args.quick else (64, 12, 20)
    print(machine_line())
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy >= 0.5 * (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        print(f"warning: this machine is busy (load average {busy:.1f} on {os.cpu_count()} "
              f"cores): with {torch.get_num_threads()} threads each parallel step waits for "
              "its slowest thread, and the timings mostly measure the other work; run with "
              "--threads 1")
    bandwidth = read_bandwidth()

    torch.manual_seed(0)
    fp32 = GPT(GPTConfig()).eval()
    start = time.perf_counter()
    ours = quantize_model(fp32)
    took = time.perf_counter() - start
    peer = torch_dynamic_int8(fp32)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = file_sizes(fp32, ours, peer, Path(tmp))
        bf16 = load_quantized(Path(tmp) / "int8", kernel="bf16")
    models = {"float32 (course)": fp32, "int8 (ours)": ours, "torch quantize_dynamic": peer,
              "int8 (ours), bf16 kernel": bf16}
    print(f"GPT-2 124M shape, random weights: quantize_model took {took:.1f} s; memory read "
          f"bandwidth {bandwidth:.1f} GB/s, so reading the weights once bounds batch-1 decoding "
          f"at {bandwidth * 1e9 / sizes['float32 (course)']:.0f} tokens/s in float32, "
          f"{bandwidth * 1e9 / sizes['int8 (ours)']:.0f} in int8")

    kernel_table(models, repeats)
    speed, paired = decode_speed(models, new, rounds)

    folder_models: dict[str, torch.nn.Module] = {}
    try:
        from llmcourse.course.gpt2 import course_checkpoint
        course, _ = load_checkpoint(course_checkpoint())
        folder_models = {"float32 (course)": course, "int8 (ours)": quantize_model(course),
                         "torch quantize_dynamic": torch_dynamic_int8(course)}
        if not args.quick:
            folder_models["int8 (ours), bf16 kernel"] = quantize_model(course, kernel="bf16")
        nats, what = held_out(folder_models, args.quick)
        agree = greedy_agreement(folder_models)
    except ValueError as err:  # no course checkpoint: say so, keep the rest
        print(f"course checkpoint: {err}")
        nats, what, agree = {}, "", {}

    print(f"\n{'model':26s} {'file MB':>8s} {'smaller':>8s} {'tokens/s':>9s} {'x fp32':>7s} "
          f"{'nats/char':>10s} {'vs fp32':>8s} {'greedy = fp32':>14s}")
    base = nats.get("float32 (course)")
    for name in models:
        size = sizes.get(name)
        cols = [f"{size / 1e6:8.1f}" if size else f"{'':8s}",
                f"{sizes['float32 (course)'] / size:7.2f}x" if size else f"{'':8s}",
                f"{speed[name]:9.1f}", f"{speed[name] / speed['float32 (course)']:6.2f}x",
                f"{nats[name]:10.4f}" if name in nats else f"{'':10s}",
                f"{100 * (nats[name] / base - 1):+7.3f}%" if name in nats else f"{'':8s}",
                f"{agree[name]:13.1%}" if name in agree else ""]
        print(f"{name:26s} " + " ".join(cols))
    print(f"(file and tokens/s: GPT-2 124M shape; greedy batch 1, prompt 16, {new} new tokens, "
          f"median of {rounds} interleaved rounds. nats/char: course checkpoint on {what or '-'};"
          " greedy = fp32: share of 8 × 64 greedy tokens equal to float32's)")

    print(f"ours / torch's tokens/s round by round: {min(paired):.2f}x to {max(paired):.2f}x "
          f"(median {statistics.median(paired):.2f}x): the same int8 x int8 kernel reading the "
          f"same int8 bytes (torch's {q8._int8_engine()[0]} engine; ours fed with our codes "
          "and per-channel scales)")
    ours_n, peer_n = nats.get("int8 (ours)"), nats.get("torch quantize_dynamic")
    checks = [
        (f"file >= {GOAL_SIZE}x smaller than fp32",
         sizes["float32 (course)"] / sizes["int8 (ours)"] >= GOAL_SIZE),
        (f"nats/char within {GOAL_LOSS:.0%} of fp32",
         base is not None and ours_n <= base * (1 + GOAL_LOSS)),
        (f"tokens/s >= {GOAL_SPEED}x fp32",
         speed["int8 (ours)"] >= GOAL_SPEED * speed["float32 (course)"]),
        (f"tokens/s >= torch's ({speed['int8 (ours)'] / speed['torch quantize_dynamic']:.2f}x) "
         "at equal or better loss",
         speed["int8 (ours)"] >= speed["torch quantize_dynamic"]
         and ours_n is not None and ours_n <= peer_n),
    ]
    print(f"\ngoals ({os.path.basename(__file__)}): " + "; ".join(
        f"{what}: {'met' if ok else 'NOT met'}" for what, ok in checks))


if __name__ == "__main__":
    main()
