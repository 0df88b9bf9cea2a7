"""Generation speed: ``llmcourse.decoding.generate`` against ``transformers``' ``generate`` on the
same weights, against the machine's memory-bandwidth bound, and with against without the KV
cache. Everything is measured in this one run, on this machine. Every step runs the model's one
forward (the one that trains and scores); its weights are stored in the layout the
matrix-vector product reads fastest (``llmcourse.nn.linear``).

    python benchmarks/bench_generate.py                 # the full table (a few minutes)
    python benchmarks/bench_generate.py --quick         # fewer tokens, for a smoke test
    python benchmarks/bench_generate.py --llama-only    # the Llama-style model's part only

The Llama-style model (``llmcourse.models.llama``, chapter 10) is measured on a 124M-class
shape with random weights: batch-1 greedy decoding against ``transformers``'
``LlamaForCausalLM.generate`` on the same weights, in interleaved rounds compared by the median
of the per-round ratios; then grouped-query attention (n_kv_head = n_head / 4) against full
multi-head attention at 512 tokens of context: the bytes the KV cache holds per token, and the
decoding speed after a 512-token prompt.

Every goal (GPT-2 shape: >= 1.25x transformers, >= 75% of the bandwidth bound, KV-cache
speed-up >= 5x; Llama-style: >= 1.25x transformers) is judged on interleaved rounds: met only
when every round reaches it, NOT met when none does, and undecided when noise decides.

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
import statistics
import time
from pathlib import Path

import torch
from rounds import verdict  # benchmarks/rounds.py, beside this script

from llmcourse.decoding.decoder import Decoder
from llmcourse.decoding.generate import generate
from llmcourse.models.gpt import GPT, GPTConfig
from llmcourse.models.llama import Llama, LlamaConfig
from llmcourse.nn.linear import input_major

GOAL_VS_HF, GOAL_BOUND, GOAL_CACHE = 1.25, 0.75, 5.0
GOAL_LLAMA_VS_HF = 1.25

# The Llama-style model's shape: GPT-2 124M's depth, width and heads, with Llama's own
# vocabulary of 32,000 SentencePiece tokens (Touvron et al. 2023) and its untied output layer,
# so that the output layer has the size a Llama of this class has (GPT-2's 50,257 would
# measure GPT-2's tokenizer, not the block). 134.2M parameters either way below: the
# multi-head model has SwiGLU width 2048; the grouped-query one (3 kv heads for 12 query heads)
# spends the 2 * 768 * (768 - 192) = 884,736 parameters per layer that its smaller k and v
# projections free on SwiGLU width 2432 (3 * 768 * 384 = 884,736), so both read the same
# weights per token and differ in the KV cache only.
LLAMA_SHAPE = dict(vocab_size=32000, block_size=1024, n_layer=12, n_head=12, n_embd=768)
LLAMA_MHA = LlamaConfig(**LLAMA_SHAPE, n_kv_head=12, d_ff=2048)
LLAMA_GQA = LlamaConfig(**LLAMA_SHAPE, n_kv_head=3, d_ff=2432)


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


def compare(name: str, model: GPT | Llama, hf, batch: int, new: int, prompt: int,
            rounds: int, per_token: float) -> dict:
    """tokens/s of both generate functions, greedy, ``new`` tokens per sequence, EOS held
    back with min_new_tokens so that every run does the same work: one run of each per round,
    the order alternating from round to round. At batch 1 each round also measures the read
    bandwidth, so that the fraction of the bound (bandwidth / ``per_token`` bytes) compares a
    run with the machine as it was just after it."""
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
    t_ours, t_hf, bounds, of_bound = [], [], [], []
    for r in range(rounds):  # interleaved, so that a slow spell hits both
        for fn, times in ((ours, t_ours), (theirs, t_hf))[:: 1 if r % 2 == 0 else -1]:
            times.append(best_time(fn, 1))
        if batch == 1:  # the bandwidth right after this round's runs
            bounds.append(read_bandwidth(repeats=3) * 1e9 / per_token)
            of_bound.append(new / t_ours[-1] / bounds[-1])
    same = torch.equal(ours_out[0], theirs_out[0])
    return dict(model=name, batch=batch, ours=batch * new / statistics.median(t_ours),
                hf=batch * new / statistics.median(t_hf),
                ratios=[h / o for o, h in zip(t_ours, t_hf, strict=True)],
                bounds=bounds, of_bound=of_bound, same=same)


def cache_speedup(model: GPT, context: int, new: int, rounds: int) -> list[float]:
    """Per round, tokens/s generating the last ``new`` tokens of a ``context``-token text
    with the KV cache over tokens/s recomputing the whole text at every step (the two runs
    alternating which goes first)."""
    ids = torch.randint(0, model.config.vocab_size, (1, context - new),
                        generator=torch.Generator().manual_seed(0))
    runs = [lambda use_cache=use_cache: generate(model, ids, max_new_tokens=new,
                                                 use_cache=use_cache)
            for use_cache in (True, False)]
    for run in runs:
        run()
    ratios = []
    for r in range(rounds):
        times = {}
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            times[i] = best_time(runs[i], 1)
        ratios.append(times[1] / times[0])
    return ratios


def llama_bytes_per_token(model: Llama, context: float) -> float:
    """Bytes a batch-1 decoding step of the Llama reads: every weight once (the untied token
    embedding only one row) plus the keys and values of ``context`` cached positions: 2 ·
    n_layer · n_kv_head · head_dim numbers per position."""
    cfg = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if not cfg.tie_embeddings:
        weights -= model.model.embed_tokens.weight[1:].numel() * 4
    kv = 2 * cfg.n_layer * context * cfg.n_kv_head * cfg.head_dim * 4
    return weights + kv


def llama_hf_copy(model: Llama):
    from llmcourse.models.llama_hf import to_hf

    with contextlib.redirect_stderr(io.StringIO()):
        hf = to_hf(model)
    hf.generation_config.pad_token_id = hf.generation_config.eos_token_id
    return hf



def cache_bytes_per_token(model: Llama) -> int:
    """Bytes of the course's KV cache per cached token of one sequence, read off the cache
    itself (``cache.k.nbytes + cache.v.nbytes``, over its max_len positions)."""
    cache = model.new_cache(1, 8)
    return (cache.k.nbytes + cache.v.nbytes) // 8


def decode_after_prompt(models: dict[str, Llama], context: int, new: int, rounds: int
                        ) -> dict[str, list[float]]:
    """Seconds of ``new`` batch-1 greedy decoding steps after a ``context``-token prompt, for
    each model per round: the course's generation engine
    (:class:`~llmcourse.decoding.decoder.Decoder`, the model's forward with its KV cache),
    prefill untimed, each step attending over ``context`` and more cached positions. The
    models' steps alternate one by one (the first model changing from round to round), so
    that a busy spell of the machine falls on all of them alike."""
    vocab = next(iter(models.values())).config.vocab_size
    prompt = torch.randint(0, vocab, (1, context), generator=torch.Generator().manual_seed(2))
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 warms up and is not kept
            order = list(models) if r % 2 == 0 else list(models)[::-1]
            decoders = {name: Decoder(models[name], 1, context, max_len=context + new)
                        for name in order}
            text = {name: prompt for name in order}  # (1, L) each
            nxt = {name: decoders[name].next_logits(prompt).argmax(-1, keepdim=True)
                   for name in order}  # (1, 1) each: the prefill
            spent = dict.fromkeys(order, 0.0)
            for _ in range(new):
                for name in order:
                    start = time.perf_counter()
                    text[name] = torch.cat([text[name], nxt[name]], dim=1)  # (1, L + 1)
                    nxt[name] = decoders[name].next_logits(text[name]).argmax(
                        -1, keepdim=True)  # (1, 1)
                    spent[name] += time.perf_counter() - start
            if r:
                for name in order:
                    times[name].append(spent[name])
    return times


def llama_part(args) -> list[tuple[str, str]]:
    """Prints the Llama-style model's measurements; returns its goals as (what, verdict)."""
    quick = args.quick
    new = 32 if quick else args.new_tokens
    rounds = 2 if quick else args.llama_rounds
    prompt, context, steps = 16, 512, (16 if quick else 64)
    torch.manual_seed(0)
    models = {"MHA": Llama(LLAMA_MHA).eval(), "GQA": Llama(LLAMA_GQA).eval()}
    counts = {name: m.num_parameters() for name, m in models.items()}
    c = LLAMA_MHA
    print(f"\nLlama-style model, random weights: {c.n_layer} layers, width {c.n_embd}, "
          f"{c.n_head} query heads, vocabulary {c.vocab_size:,}, untied output layer")
    for name, m in models.items():
        c = m.config
        print(f"  {name}: n_kv_head {c.n_kv_head}, SwiGLU width {c.d_ff}, "
              f"{counts[name]:,} parameters")

    gqa = models["GQA"]
    hf = llama_hf_copy(gqa)
    read = llama_bytes_per_token(gqa, prompt + new / 2)
    r = compare("GQA", gqa, hf, 1, new, prompt, rounds, read)
    del hf
    print(f"\n(a) GQA model, batch 1, greedy, prompt {prompt} tokens, {new} new tokens, "
          f"{rounds} interleaved rounds (medians): llmcourse {r['ours']:.1f} tokens/s, "
          f"transformers {r['hf']:.1f} tokens/s; ratio per round "
          + ", ".join(f"{x:.2f}x" for x in r["ratios"])
          + f" (median {statistics.median(r['ratios']):.2f}x); bandwidth bound "
          f"{statistics.median(r['bounds']):.1f} tokens/s ({read / 1e6:.1f} MB read per "
          f"token): llmcourse at {statistics.median(r['of_bound']):.0%} of it (per round "
          + ", ".join(f"{x:.0%}" for x in r["of_bound"]) + "); same tokens: "
          f"{'yes' if r['same'] else 'NO'}")

    per_token = {name: cache_bytes_per_token(m) for name, m in models.items()}
    times = decode_after_prompt(models, context, steps, rounds)
    rate = {name: steps / statistics.median(t) for name, t in times.items()}
    ratios = [m / g for m, g in zip(times["MHA"], times["GQA"], strict=True)]
    predicted = (llama_bytes_per_token(models["MHA"], context + steps / 2)
                 / llama_bytes_per_token(gqa, context + steps / 2))
    print(f"\n(b) GQA vs MHA at {context} tokens of context: {steps} greedy decoding steps "
          f"after a {context}-token prompt (prefill not timed), the two models' steps alternating, "
          f"{rounds} rounds")
    head = f"{'attention':9s} {'n_kv_head':>9s} {'KV cache/token':>15s} " \
           f"{'KV cache at ' + str(context):>16s} {'tokens/s':>9s}"
    print(head)
    print("-" * len(head))
    for name, m in models.items():
        print(f"{name:9s} {m.config.n_kv_head:9d} {per_token[name]:>9,d} bytes "
              f"{per_token[name] * context / 2**20:>12.1f} MiB {rate[name]:9.1f}")
    print(f"GQA/MHA: KV cache {per_token['GQA'] / per_token['MHA']:.2f}x the bytes; tokens/s "
          f"ratio per round " + ", ".join(f"{x:.2f}x" for x in ratios)
          + f" (median {statistics.median(ratios):.2f}x); the bandwidth model (bytes read "
          f"per step, weights equal) predicts {predicted:.2f}x")
    return [(f"Llama batch 1 >= {GOAL_LLAMA_VS_HF}x transformers",
             verdict(r["ratios"], GOAL_LLAMA_VS_HF))]


def course_model() -> tuple[str, GPT] | None:
    from llmcourse.course.gpt2 import course_checkpoint
    from llmcourse.models.checkpoint import load_checkpoint

    try:
        folder = course_checkpoint()
    except ValueError:
        return None
    model, _ = load_checkpoint(folder)
    return f"course checkpoint ({Path(folder).name})", model


def gpt2_part(args) -> list[tuple[str, str]]:
    """Prints the GPT-2 tables; returns their goals as (what, verdict)."""
    new, rounds = (32, 2) if args.quick else (args.new_tokens, args.rounds)
    prompt = 16
    torch.manual_seed(0)
    models = [("GPT-2 124M shape, random", GPT(GPTConfig()).eval())]
    found = course_model()
    if found is not None:
        models.append(found)
    else:
        print("course checkpoint: not found under data/checkpoints/ (row skipped)")

    rows, per_token = [], {}
    for name, model in models:
        rates = ", ".join(f"{gbs:.1f} GB/s stored {way}" for way, gbs in layout_gemv(model))
        print(f"{name}: output layer {tuple(model.lm_head.weight.shape)} x vector: {rates}")
        hf = hf_copy(model)
        steps = min(new, model.config.block_size - prompt)  # a short context caps the run
        per_token[name] = bytes_per_token(model, prompt + steps / 2)
        for batch in (1, 8):
            rows.append(compare(name, model, hf, batch, steps, prompt, rounds, per_token[name])
                        | {"new": steps})
        del hf

    print(f"\ngreedy, prompt {prompt} tokens, {new} new tokens per sequence (fewer where the "
          f"context is shorter: column new), {rounds} interleaved rounds (medians); tokens/s "
          f"counts every sequence of the batch; of bound = tokens/s over bandwidth / bytes "
          f"read per token, the bandwidth re-measured in each round (" + ", ".join(
              f"{name}: {per_token[name] / 1e6:.1f} MB" for name, _ in models) + ")")
    head = f"{'model':34s} {'batch':>5s} {'new':>4s} {'llmcourse':>10s} {'transformers':>13s} " \
           f"{'ratio':>6s} {'bound b=1':>10s} {'of bound':>9s}  same tokens"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r["batch"] == 1:  # medians of the rounds' bounds and of the rounds' fractions
            bound = f"{statistics.median(r['bounds']):10.1f}"
            of_bound = f"{statistics.median(r['of_bound']):8.0%}"
        else:
            bound, of_bound = " " * 10, " " * 8
        print(f"{r['model']:34s} {r['batch']:5d} {r['new']:4d} {r['ours']:10.1f} {r['hf']:13.1f} "
              f"{statistics.median(r['ratios']):5.2f}x {bound} {of_bound:>9s}  "
              f"{'yes' if r['same'] else 'NO'}")

    context, steps = 512, (8 if args.quick else 16)
    speedups = cache_speedup(models[0][1], context, steps, rounds)
    print(f"\nKV cache, {models[0][0]}, the last {steps} tokens of {context} tokens of "
          f"context, with the cache over without, per round: "
          + ", ".join(f"{x:.1f}x" for x in speedups))

    first = [r for r in rows if r["batch"] == 1 and r["model"] == models[0][0]][0]
    print(f"{models[0][0]}, batch 1, per round: ratio to transformers "
          + ", ".join(f"{x:.2f}x" for x in first["ratios"]) + "; of the bandwidth bound "
          + ", ".join(f"{x:.0%}" for x in first["of_bound"]))
    return [
        (f"batch 1 >= {GOAL_VS_HF}x transformers", verdict(first["ratios"], GOAL_VS_HF)),
        (f"batch 1 >= {GOAL_BOUND:.0%} of the bandwidth bound",
         verdict(first["of_bound"], GOAL_BOUND, unit="{:.0%}")),
        (f"cache speed-up >= {GOAL_CACHE}x", verdict(speedups, GOAL_CACHE)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the GPT-2 measurements")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--llama-rounds", type=int, default=5,
                        help="interleaved rounds of the Llama-style model's measurements")
    parser.add_argument("--llama-only", action="store_true",
                        help="only the Llama-style model's part")
    parser.add_argument("--quick", action="store_true",
                        help="32 new tokens, two rounds (the Llama part: two rounds, 16 "
                             "decoding steps at 512 tokens of context)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers
    transformers.logging.set_verbosity_error()

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads; torch "
          f"{torch.__version__}, transformers {transformers.__version__}")
    bandwidth = read_bandwidth()
    print(f"memory read bandwidth: {bandwidth:.1f} GB/s (sum of a 512 MiB float32 buffer, "
          f"best of 5)")
    gpt_goals = [] if args.llama_only else gpt2_part(args)
    llama_goals = llama_part(args)
    print()
    for title, goals in (("GPT-2 124M shape", gpt_goals), ("Llama-style 134M", llama_goals)):
        if goals:
            print(f"goals ({title}): " + "; ".join(f"{what}: {ok}" for what, ok in goals))


if __name__ == "__main__":
    main()
