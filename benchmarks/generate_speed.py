"""Generation speed, tinygpt against transformers: GPT-2 124M's shape with random weights, a
16-token prompt, 64 new tokens, greedy, with the key/value cache, the same thread count.

    python benchmarks/generate_speed.py [--threads N] [--rounds 3] [--runs 1] [--new-tokens 64]
    python benchmarks/generate_speed.py --dtypes float32,bfloat16,int8 --batches 1,8

--dtypes: one tinygpt worker per weight dtype (tinygpt/quantize.py: bfloat16 or int8 weights,
float32 activations), each beside the same transformers float32 reference. --batches: each
tinygpt worker also decodes B copies of the prompt together (tinygpt.generate.generate_batch,
one batched KV cache); its tokens/s counts all B rows, and "vs batch 1" divides it by the same
dtype's single-stream tokens/s (goal: >= 3x at B = 8). Each tinygpt worker also reports its
weight bytes and its resident memory (RSS) after the model is built and quantized, and its
peak RSS (which includes the float32 model it was quantized from).

tinygpt: `tinygpt.generate.generate(model, prompt, 64, temperature=0)` on GPT(GPTConfig(), seed=0).
transformers: `GPT2LMHeadModel(GPT2Config())` (random init, eval mode, torch.no_grad) and
`model.generate(ids, max_new_tokens=64, do_sample=False, use_cache=True)`.
The two models have different random weights, so their tokens are not compared; only time is.
GPT-2's end-of-text token is switched off on the transformers side, so it never stops early.

Each side runs in its own worker process (see train_speed.py for why), warms up with one full
generation, and the parent then alternates the sides in rounds. Printed per side, as medians over
all runs: tokens/s = new tokens / wall time of the whole call (prompt pass included), the time to
the first new token (the 16-token prompt pass, plus one sampling step), and the mean time per
later token (one cached decode step each).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from train_speed import (Worker, alternate, cpu_count, installed, machine_line, serve,
                         skip_message, spread, version)

PROMPT_LEN = 16
VOCAB = 50257


def prompt_ids(seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).integers(0, VOCAB, PROMPT_LEN)]


def rss_mb() -> tuple[float, float]:
    """(resident memory now, peak resident memory) of this process, in MB (Linux)."""
    import resource
    with open("/proc/self/statm") as f:
        now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return now / 1e6, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6   # KiB


def tinygpt_worker(a):
    import numba
    import tensor
    from tensor import kernels
    from tinygpt.generate import generate, generate_batch
    from tinygpt.model import GPT, GPTConfig
    from tinygpt.quantize import quantize_gpt, weight_nbytes

    if a.owner:
        kernels.set_num_threads(a.threads, owner=a.owner)
    else:
        kernels.set_num_threads(a.threads)
    t = time.perf_counter()
    model = GPT(GPTConfig(), seed=0)               # GPT-2 124M, random weights
    quantize_gpt(model, a.dtype)                   # float32: unchanged
    build = time.perf_counter() - t
    prompt = prompt_ids(a.seed)

    def run(n_new, batch):
        t0 = time.perf_counter()
        first, count = None, 0
        steps = (generate(model, prompt, n_new, temperature=0) if batch == 1 else
                 generate_batch(model, [prompt] * batch, n_new, temperature=0))
        for step in steps:                         # greedy, KV cache
            count += 1 if batch == 1 else sum(t is not None for t in step)
            if first is None:
                first = time.perf_counter() - t0
        return {"total": time.perf_counter() - t0, "first": first, "new": count}

    for batch in a.batches:                        # warm-up: Numba, allocator, page faults
        run(a.new_tokens, batch)
    blas = kernels.blas_info()
    now, peak = rss_mb()
    serve({"threads": kernels.get_num_threads(), "owner": kernels.get_thread_owner(),
           "blas_threads": blas["threads"], "numba_threads": numba.get_num_threads(),
           "fused": tensor.is_fused(), "params": model.num_parameters(), "build_s": build,
           "weight_mb": weight_nbytes(model) / 1e6, "rss_mb": now, "peak_rss_mb": peak},
          lambda req: {"runs": [run(req["new"], req.get("batch", 1))
                                for _ in range(req["runs"])]})


def transformers_worker(a):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        """generate() calls put() with the prompt, then once per new token: note the times."""

        def __init__(self):
            self.puts = []

        def put(self, value):
            self.puts.append(time.perf_counter())

        def end(self):
            pass

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t = time.perf_counter()
    model = GPT2LMHeadModel(GPT2Config()).eval()   # GPT-2 124M, random weights
    build = time.perf_counter() - t
    model.generation_config.eos_token_id = None    # random weights may pick end-of-text
    model.generation_config.pad_token_id = 50256   # (GPT-2's); silences the warning
    ids = torch.tensor([prompt_ids(a.seed)])

    def run(n_new):
        clock = Clock()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n_new, do_sample=False, use_cache=True,
                                 streamer=clock)
        total = time.perf_counter() - t0
        first = clock.puts[1] - t0 if len(clock.puts) > 1 else None   # puts[0]: the prompt
        return {"total": total, "first": first, "new": int(out.shape[1] - ids.shape[1])}

    run(a.new_tokens)
    serve({"threads": torch.get_num_threads(), "version": torch.__version__,
           "params": sum(p.numel() for p in model.parameters()), "build_s": build,
           "attn": getattr(model.config, "_attn_implementation", "?")},
          lambda req: {"runs": [run(req["new"]) for _ in range(req["runs"])]})


def main():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--threads", type=int, default=cpu_count(),
                   help="threads for both sides (default: all cores)")
    p.add_argument("--owner", choices=("blas", "numba"), default=None,
                   help="tinygpt's thread owner (default: set_num_threads' default)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="rounds of tinygpt then transformers")
    p.add_argument("--runs", type=int, default=1, help="generations per side and round")
    p.add_argument("--side", choices=("both", "tinygpt", "transformers"), default="both")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompt")
    p.add_argument("--dtypes", default="float32",
                   help="comma-separated tinygpt weight dtypes: float32, bfloat16, int8")
    p.add_argument("--batches", default="1",
                   help="comma-separated numbers of sequences decoded together (tinygpt)")
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)   # one worker's
    p.add_argument("--worker", choices=("tinygpt", "transformers"), help=argparse.SUPPRESS)
    a = p.parse_args()
    a.batches = sorted({int(b) for b in a.batches.split(",")})
    dtypes = [d.strip() for d in a.dtypes.split(",")]
    if any(d not in ("float32", "bfloat16", "int8") for d in dtypes) or min(a.batches) < 1:
        p.error("--dtypes takes float32, bfloat16, int8; --batches positive integers")
    if min(a.threads, a.new_tokens, a.rounds, a.runs) < 1:
        p.error("--threads, --new-tokens, --rounds and --runs must be at least 1")
    if a.worker == "tinygpt":
        return tinygpt_worker(a)
    if a.worker == "transformers":
        return transformers_worker(a)

    print(machine_line())
    print(f"generate: GPT-2 124M shape, random weights, {PROMPT_LEN}-token random prompt, "
          f"{a.new_tokens} new tokens, greedy, KV cache; {a.rounds} round(s) x {a.runs} run(s) "
          f"per side, alternating; each side in its own process with {a.threads} threads",
          flush=True)
    own = ["--owner", a.owner] if a.owner else []
    common = ["--threads", str(a.threads), "--new-tokens", str(a.new_tokens), "--seed",
              str(a.seed)]
    workers = {}
    try:
        for dtype in (dtypes if a.side in ("both", "tinygpt") else []):
            batches = ",".join(map(str, a.batches))
            w = Worker([__file__, "--worker", "tinygpt", *common, *own, "--dtype", dtype,
                        "--batches", batches])
            i = w.info
            print(f"tinygpt {dtype} worker: threads {i['threads']}, owner {i['owner']!r} -> "
                  f"BLAS {i['blas_threads']}, Numba {i['numba_threads']}; is_fused() "
                  f"{i['fused']} (TENSOR_FUSED={os.environ.get('TENSOR_FUSED', 'unset')}); "
                  f"{i['params']:,} float parameters, random init + quantize {i['build_s']:.1f} s; "
                  f"weights {i['weight_mb']:,.0f} MB, RSS {i['rss_mb']:,.0f} MB now, "
                  f"{i['peak_rss_mb']:,.0f} MB peak", flush=True)
            for batch in a.batches:
                name = f"tinygpt {dtype}" + (f" x{batch}" if batch > 1 else "")
                workers[name] = (w, {"batch": batch})
        if a.side in ("both", "transformers"):
            if installed("torch") and installed("transformers"):
                w = Worker([__file__, "--worker", "transformers", *common])
                i = w.info
                print(f"transformers worker: torch {i['version']}, {i['threads']} threads, "
                      f"attention {i['attn']}; {i['params']:,} parameters, random init "
                      f"{i['build_s']:.1f} s", flush=True)
                workers["transformers"] = (w, {})
            else:
                print(skip_message("the transformers side", "torch or transformers"))
        results = alternate(workers, a.rounds, {"runs": a.runs, "new": a.new_tokens})
    finally:
        for w in {id(w): w for w, _ in workers.values()}.values():
            w.close()

    stats = {}
    for side, answers in results.items():
        runs = [r for ans in answers for r in ans["runs"]]
        want = a.new_tokens * (int(side.split(" x")[1]) if " x" in side else 1)
        if any(r["new"] != want for r in runs):
            print(f"warning: {side} produced {[r['new'] for r in runs]} new tokens, "
                  f"not {want} each; tokens/s uses the actual count")
        total, t25, t75 = spread([r["total"] / r["new"] for r in runs])     # s per token
        first = spread([r["first"] for r in runs])[0]
        later = spread([(r["total"] - r["first"]) / max(1, r["new"] - 1) for r in runs])[0]
        stats[side] = (1 / total, 1 / t75, 1 / t25, first, later, len(runs))
    print("| benchmark | side | tokens/s (median) | p25-p75 tokens/s | first token ms "
          "| ms per later step | speed vs transformers | vs batch 1 | runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for side, (tps, lo, hi, first, later, n) in stats.items():
        ratio = (f"{tps / stats['transformers'][0]:.2f}x" if "transformers" in stats else "n/a")
        single = side.split(" x")[0] if " x" in side else None
        vs_one = (f"{tps / stats[single][0]:.2f}x" if single in stats else "")
        name = (f"transformers {version('transformers')} float32" if side == "transformers"
                else side)
        later_step = later * (int(side.split(" x")[1]) if " x" in side else 1)
        print(f"| generate GPT-2 124M ({PROMPT_LEN} + {a.new_tokens} tokens, greedy, "
              f"{a.threads} thr) | {name} | {tps:.1f} | {lo:.1f}-{hi:.1f} "
              f"| {first * 1e3:.0f} | {later_step * 1e3:.1f} | {ratio} | {vs_one} | {n} |")


if __name__ == "__main__":
    main()
