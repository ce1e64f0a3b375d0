"""Memory of GPT-2 with compact weights: computed for the four sizes, measured for some.

    python benchmarks/quant_speed.py [--measure gpt2] [--measure gpt2-xl:int8]

Computed: tinygpt.quantize.weight_bytes(config, dtype), the bytes of the weights (the Linear
weights and wte in the dtype, plus int8's per-row float32 scales; wpe, LayerNorms and biases in
float32). Measured: a fresh process builds the model block by block (GPT(init=False) allocates
zeros that touch no memory; each block then gets random N(0, 0.02²) weights and is quantized at
once, so the float32 copy of one block at most exists at a time), runs one 16-token forward
pass and 8 greedy steps with the KV cache, and reports its resident memory (RSS) then, and its
peak RSS. The workers run with TENSOR_MALLOC_TUNE=0 (tensor/memory.py), so that freed float32
blocks go back to the system instead of staying mapped for reuse. The loader does the same
from a file (tinygpt.loading.load_model(weight_dtype=...): tensor by tensor); --memory measures
it, and the command, on a real directory.

Accuracy (--accuracy RUN:TEXT, repeatable): a model trained with tinygpt (a run directory or a
Hugging Face directory) is loaded once per dtype; printed are its perplexity on the held-out
TEXT (tinygpt.evaluate.strided_perplexity, at most --ppl-tokens tokens, stride = half the
context) and, over --prompts prompts cut from TEXT (--prompt-tokens each), how many greedy
continuations agree with float32's for their first --agree tokens, and the mean length of the
agreeing prefix.

Speed is measured side by side with transformers by generate_speed.py --dtypes.

Loading (--memory SIZE, repeatable): a SIZE-shaped Hugging Face directory with random weights is
written to a temporary directory (--tmp; gpt2-xl takes 6.2 GB of disk; deleted after), then each
row is a fresh process whose peak resident memory (VmHWM, this process's own high-water mark) is
printed, for every dtype:
  tinygpt generate    the command as a user types it: `tinygpt generate --model DIR --dtype D
                      --max-new-tokens 8 --temperature 0 PROMPT`
  load_model + 8      tinygpt.loading.load_model(DIR, weight_dtype=D), which quantizes tensor by
                      tensor as it reads (tinygpt/quantize.py: load_weights), then 8 greedy
                      tokens: what the command does once it hands --dtype to the loader.
    python benchmarks/quant_speed.py --no-memory --memory gpt2 [--memory gpt2-xl] [--tmp DIR]
        [--stored BF16]       (the weights stored in bfloat16, as some Hub checkpoints are)
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


PROMPT = "Hello, I'm a language model,"
VMHWM = """
def vmhwm():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(status[k].split()[0]) * 1024 for k in ("VmHWM", "VmRSS")}
"""
# `tinygpt generate` itself, run as the console script runs it, reporting its peak at exit.
CLI_WORKER = VMHWM + """
import atexit, json, sys
atexit.register(lambda: print("@@peak", json.dumps(vmhwm()), file=sys.stderr, flush=True))
from tinygpt.cli import main
main()
"""
# The loader quantizing as it reads, then 8 greedy tokens.
LIB_WORKER = VMHWM + """
import json, sys, time
import tensor
from tinygpt.generate import generate
from tinygpt.loading import load_model
t0 = time.perf_counter()
model, tok, _ = load_model(sys.argv[1], weight_dtype=sys.argv[2])
seconds = time.perf_counter() - t0
with tensor.no_grad():
    list(generate(model, tok.encode(sys.argv[3]), 8, temperature=0))
print("@@peak", json.dumps({**vmhwm(), "load_s": seconds}), file=sys.stderr, flush=True)
"""


def write_random_hf_dir(directory: str, size: str, stored: str = "F32") -> int:
    """A Hugging Face GPT-2 directory of SIZE's shapes, random N(0, 0.02²) weights (cycled from
    a 16 MB pool: building gpt2-xl's 1.6 billion fresh normals would take minutes), no
    vocab.json (the bundled GPT-2 tokenizer), the weights stored as F32 or BF16 (the float32
    values rounded to nearest even, as a bfloat16 checkpoint on the Hub holds them). Written a
    tensor at a time. Returns the bytes of the weights in float32."""
    from collections.abc import Mapping

    from tensor.io import atomic_write, save_safetensors
    from tensor.kernels.quantized import to_bfloat16
    from tinygpt.export import hf_config
    from tinygpt.model import GPT, GPTConfig, PRESETS
    config = GPTConfig(**PRESETS[size])
    shapes = {name: p.shape for name, p in GPT(config, init=False).named_parameters()}
    pool = np.random.default_rng(0).standard_normal(1 << 22, dtype=np.float32) * np.float32(0.02)

    def tensor(name):
        start = sum(map(ord, name)) * 7919 % pool.size             # each tensor its own phase
        return np.resize(np.roll(pool, -start), shapes[name])

    class Random(Mapping):            # save_safetensors asks for each tensor when it needs it
        def __getitem__(self, name):
            return tensor(name)

        def __iter__(self):
            return iter(shapes)

        def __len__(self):
            return len(shapes)

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(config, 50256), f)
    path = os.path.join(directory, "model.safetensors")
    if stored == "F32":
        save_safetensors(path, Random())
    else:                             # NumPy has no bfloat16: the format written out by hand
        header, offset = {}, 0
        for name, shape in shapes.items():
            n = 2 * int(np.prod(shape))
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)

        def write(f):
            f.write(len(head).to_bytes(8, "little") + head)
            for name in shapes:
                f.write(to_bfloat16(tensor(name)).astype("<u2").tobytes())
        atomic_write(path, write)
    return sum(4 * int(np.prod(s)) for s in shapes.values())


def memory_rows(size: str, tmp: str | None, stored: str) -> None:
    import shutil
    import tempfile
    from tinygpt.model import GPTConfig, PRESETS
    from tinygpt.quantize import weight_bytes
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    work = tempfile.mkdtemp(prefix=f"tinygpt-{size}-", dir=tmp)
    try:
        directory = os.path.join(work, size)
        float32 = write_random_hf_dir(directory, size, stored)
        on_disk = os.path.getsize(os.path.join(directory, "model.safetensors"))
        print(f"\nloading {size} (weights stored {stored}, random: {on_disk / 1e6:,.0f} MB on disk, "
              f"{float32 / 1e6:,.0f} MB in float32): peak resident memory of a fresh process "
              f"(VmHWM)")
        print("| model | stored | dtype | weights MB (computed) | what runs | peak MB | peak / "
              "float32 weights | RSS after the 8 tokens MB | load s |")
        print("| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |")
        for dtype in DTYPES:
            runs = {"tinygpt generate": ["-c", CLI_WORKER, "generate", "--model", directory,
                                         "--dtype", dtype, "--max-new-tokens", "8",
                                         "--temperature", "0", PROMPT],
                    "load_model + 8 tokens": ["-c", LIB_WORKER, directory, dtype, PROMPT]}
            for what, argv in runs.items():
                out = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                                     env=env, cwd=root)
                lines = [ln for ln in out.stderr.splitlines() if ln.startswith("@@peak ")]
                if out.returncode != 0 or not lines:
                    print(f"| {size} | {stored} | {dtype} | | {what} | failed: "
                          f"{out.stderr.strip().splitlines()[-1:]} | | | |", flush=True)
                    continue
                r = json.loads(lines[-1].split(" ", 1)[1])
                after = f"{r['VmRSS'] / 1e6:,.0f}" if "load_s" in r else ""   # the command's
                load = f"{r['load_s']:.1f}" if "load_s" in r else ""          # is torn down
                computed = weight_bytes(GPTConfig(**PRESETS[size]), dtype) / 1e6
                print(f"| {size} | {stored} | {dtype} | {computed:,.0f} | {what} "
                      f"| {r['VmHWM'] / 1e6:,.0f} | {r['VmHWM'] / float32:.2f} | {after} "
                      f"| {load} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def accuracy(run: str, text_file: str, n_ppl: int, n_prompts: int, prompt_len: int,
             agree: int) -> None:
    from tinygpt.dataset import read_text
    from tinygpt.generate import generate
    from tinygpt.loading import load_model
    from tinygpt.evaluate import strided_perplexity
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
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
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
    p.add_argument("--memory", dest="loading", action="append", default=[], metavar="SIZE",
                   choices=SIZES, help="peak memory of `tinygpt generate --dtype` and of the "
                   "streaming loader on a SIZE-shaped Hugging Face directory (repeatable)")
    p.add_argument("--tmp", help="where --memory writes its directory (default: the system's)")
    p.add_argument("--stored", choices=("F32", "BF16"), default="F32",
                   help="how --memory's directory stores its weights")
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
    for size in a.loading:
        memory_rows(size, a.tmp, a.stored)
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
    print("\nnote: tinygpt.loading.load_model(weight_dtype=...) loads this way, tensor by "
          "tensor; --memory SIZE measures it, and `tinygpt generate --dtype`, on a directory.")


if __name__ == "__main__":
    main()
