"""Memory of GPT-2 with compact weights: computed for the four sizes, measured for some.

    python benchmarks/quant_speed.py [--measure gpt2] [--measure gpt2-xl:int8]

Computed: tinygpt.quantize.weight_bytes(config, dtype), the bytes of the weights (the Linear
weights and wte in the dtype, plus int8's per-row float32 scales; wpe, LayerNorms and biases in
float32). Measured: a fresh process builds the model block by block (GPT(init=False) allocates
zeros that touch no memory; each block then gets random N(0, 0.02²) weights and is quantized at
once, so the float32 copy of one block at most exists at a time), runs one 16-token forward
pass and 8 greedy steps with the KV cache, and reports its resident memory (RSS) then, and its
peak RSS. The workers run with TENSOR_MALLOC_TUNE=0 (tensor/memory.py), so that freed float32
blocks go back to the system instead of staying mapped for reuse. That peak is what
`tinygpt generate --dtype` would need if it loaded and quantized tensor by tensor; today's loader
(tinygpt/loading.py) builds the float32 model first, so its peak is the float32 size (see the
note printed below).

Accuracy (--accuracy RUN:TEXT, repeatable): a model trained with tinygpt (a run directory or a
Hugging Face directory) is loaded once per dtype; printed are its perplexity on the held-out
TEXT (tinygpt.pretrained.strided_perplexity, at most --ppl-tokens tokens, stride = half the
context) and, over --prompts prompts cut from TEXT (--prompt-tokens each), how many greedy
continuations agree with float32's for their first --agree tokens, and the mean length of the
agreeing prefix.

Speed is measured side by side with transformers by generate_speed.py --dtypes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
DTYPES = ("float32", "bfloat16", "int8")


def measure(size: str, dtype: str) -> dict:
    """In this process: build, quantize block by block, generate; RSS in MB."""
    import resource
    import time

    import tensor
    from tensor import nn
    from tensor.quant import QuantEmbedding, QuantLinear
    from tinygpt.generate import generate
    from tinygpt.model import GPT, GPTConfig, PRESETS

    t0 = time.perf_counter()
    model = GPT(GPTConfig(**PRESETS[size]), init=False)           # zeros: no pages touched
    rng = np.random.default_rng(0)

    def fill(w):                                                    # N(0, 0.02²), in place
        w.data[...] = rng.standard_normal(w.shape, dtype=np.float32) * np.float32(0.02)

    layers = [(parent, cname) for _, parent in model.named_modules()   # names only: holding
              for cname in list(parent._modules)]                      # a layer keeps its floats
    for parent, cname in layers:
        child = parent._modules[cname]
        if isinstance(child, nn.Linear):
            fill(child.weight)
            if dtype != "float32":
                setattr(parent, cname, QuantLinear(child, dtype))    # the float32 copy is freed
        elif isinstance(child, nn.Embedding):
            fill(child.weight)
            if dtype != "float32" and child is model.wte:
                setattr(parent, cname, QuantEmbedding(child, dtype))
        del child
    model.weight_dtype = dtype
    build = time.perf_counter() - t0
    prompt = [int(i) for i in rng.integers(0, 50257, 16)]
    with tensor.no_grad():
        list(generate(model, prompt, 8, temperature=0))
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6   # KiB
    return {"rss_mb": rss, "peak_mb": peak, "build_s": build}


def accuracy(run: str, text_file: str, n_ppl: int, n_prompts: int, prompt_len: int,
             agree: int) -> None:
    from tinygpt.dataset import read_text
    from tinygpt.generate import generate
    from tinygpt.loading import load_model
    from tinygpt.pretrained import strided_perplexity
    from tinygpt.quantize import quantize_gpt

    text = read_text(text_file)
    ppl, greedy = {}, {}
    for dtype in DTYPES:
        model, tok, _ = load_model(run)
        quantize_gpt(model, dtype)
        ids = tok.encode(text)
        starts = np.random.default_rng(0).integers(0, len(ids) - prompt_len, n_prompts)
        ppl[dtype] = strided_perplexity(model, ids[:n_ppl], max(1, model.config.block_size // 2))[0]
        greedy[dtype] = [list(generate(model, ids[s:s + prompt_len], agree, temperature=0,
                                       vocab_size=tok.vocab_size)) for s in starts]
    print(f"\naccuracy: {run} on {text_file} ({min(n_ppl, len(ids)):,} tokens scored; "
          f"{n_prompts} prompts of {prompt_len} tokens, {agree} greedy tokens each)")
    print("| dtype | perplexity | vs float32 | prompts whose first "
          f"{agree} greedy tokens equal float32's | mean agreeing prefix |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for dtype in DTYPES:
        same = [next((i for i, (a, b) in enumerate(zip(g, f)) if a != b), len(g))
                for g, f in zip(greedy[dtype], greedy["float32"])]
        full = sum(n == agree for n in same)
        print(f"| {dtype} | {ppl[dtype]:.4f} | {100 * (ppl[dtype] / ppl['float32'] - 1):+.3f}% "
              f"| {full}/{n_prompts} ({100 * full / n_prompts:.0f}%) | {np.mean(same):.1f} |",
              flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--measure", action="append", default=None,
                   help="SIZE or SIZE:DTYPE to measure in a fresh process (repeatable; default: "
                        "gpt2 at every dtype)")
    p.add_argument("--accuracy", action="append", default=[], metavar="RUN:TEXT",
                   help="perplexity and greedy agreement of a trained model on a held-out text")
    p.add_argument("--ppl-tokens", type=int, default=20000)
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--agree", type=int, default=32)
    p.add_argument("--no-memory", action="store_true", help="skip the memory tables")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        size, dtype = a.worker.split(":")
        print(json.dumps(measure(size, dtype)))
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_speed import machine_line
    from tinygpt.model import GPTConfig, PRESETS
    from tinygpt.quantize import weight_bytes
    print(machine_line())
    for item in a.accuracy:
        run, text_file = item.rsplit(":", 1)
        accuracy(run, text_file, a.ppl_tokens, a.prompts, a.prompt_tokens, a.agree)
    if a.no_memory:
        return
    print("| model | parameters | float32 MB | bfloat16 MB | int8 MB | int8 / float32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for size in SIZES:
        cfg = GPTConfig(**PRESETS[size])
        mb = {d: weight_bytes(cfg, d) / 1e6 for d in DTYPES}
        print(f"| {size} | {weight_bytes(cfg, 'float32') // 4:,} | {mb['float32']:,.0f} | "
              f"{mb['bfloat16']:,.0f} | {mb['int8']:,.0f} | {mb['int8'] / mb['float32']:.2f} |")
    wanted = a.measure or [f"gpt2:{d}" for d in DTYPES]
    print("\nmeasured (a fresh process per row, TENSOR_MALLOC_TUNE=0: build block by block, "
          "quantize, 16-token prompt + 8 greedy tokens):")
    print("| model | dtype | weights MB (computed) | RSS MB after generating | peak RSS MB | "
          "build s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for item in wanted:
        size, dtype = (item.split(":") + ["int8"])[:2] if ":" in item else (item, None)
        for d in ([dtype] if dtype else DTYPES):
            out = subprocess.run([sys.executable, __file__, "--worker", f"{size}:{d}"],
                                 capture_output=True, text=True,
                                 env={**os.environ, "TENSOR_MALLOC_TUNE": "0"})
            if out.returncode != 0:
                print(f"| {size} | {d} | failed: {out.stderr.strip().splitlines()[-1:]} |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            cfg = GPTConfig(**PRESETS[size])
            print(f"| {size} | {d} | {weight_bytes(cfg, d) / 1e6:,.0f} | {r['rss_mb']:,.0f} | "
                  f"{r['peak_mb']:,.0f} | {r['build_s']:.1f} |", flush=True)
    print("\nnote: `tinygpt generate --dtype` loads the float32 model and then quantizes it, so "
          "its peak is the float32 size; the peaks above are what loading tensor by tensor "
          "would reach.")


if __name__ == "__main__":
    main()
