"""Training speed, tinygpt against the same GPT-2 in PyTorch: one step = forward + backward +
gradient clipping + AdamW update, on the `baby` preset (batch 12, block 64) and on
`shakespeare-char` (batch 8, block 256, dropout 0.2), with random token batches (the same ones
on both sides) and the same thread count.

    python benchmarks/train_speed.py [--presets baby shakespeare-char] [--threads N]
                                     [--iters N] [--rounds 3] [--paths fused unfused]

Each side runs in its own worker process, as a user would run it: importing torch and Numba into
one process would put two OpenMP runtimes and three thread pools side by side, and the numbers
would then describe that mix. The parent drives the workers in rounds (tinygpt, torch, tinygpt,
torch, ...) so background load falls on both sides alike; each round starts with two untimed
steps, as the other side's threads may still be spinning. Prints one Markdown table row per
measurement: the median ms per step over all timed steps, the spread (25th-75th percentile),
tokens/s (batch x block / median), and the speed ratio tinygpt/torch (>1: tinygpt is faster).

The helpers at the top (machine description, worker processes) are shared with
generate_speed.py and startup_memory.py. This module imports neither tensor nor torch at the
top, so those scripts' child processes load only what their side needs.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

# ----- shared by the benchmark scripts ------------------------------------------------------------

PARITY_HINT = "pip install -e '.[parity]'"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))      # the cores this process may run on
    except AttributeError:                       # not Linux
        return os.cpu_count() or 1


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):     # a broken or half-removed installation
        return False


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"machine: {cpu_model()}, {cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {version('numpy')}, numba {version('numba')}, torch {version('torch')}, "
            f"transformers {version('transformers')}; load average {load:.2f} at start")


def skip_message(what: str, module: str) -> str:
    return f"{what}: skipped, {module} is not installed ({PARITY_HINT})"


MARK = "@@bench "      # prefixes the worker's answers; any other output is the libraries' own


class Worker:
    """One side of a benchmark in its own process, `python <argv>`. The parent sends a JSON
    request per line on the worker's stdin; the worker answers with one JSON line on stdout,
    prefixed with MARK. The first answer ("ready") comes once it has set up and warmed up."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self.argv = argv
        # As the tinygpt command does before NumPy loads (tensor/__init__.py): the worker's
        # script imports NumPy first, so the setting travels in its environment.
        from tensor import OPENBLAS_THREAD_TIMEOUT
        env = dict(os.environ if env is None else env)
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            sys.stderr.write(line)               # a library's own print: pass it on
        code = self.proc.wait()
        raise RuntimeError(f"benchmark worker `{' '.join(self.argv)}` exited with code {code} "
                           f"before answering; its error is printed above")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()              # the worker's loop ends at end of input
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def answer(obj: dict):
    """Worker side: send one answer to the parent."""
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(ready: dict, handle):
    """Worker side: say ready, then answer each request until the parent closes stdin."""
    answer(ready)
    for line in sys.stdin:
        if line.strip():
            answer(handle(json.loads(line)))


def spread(values) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile."""
    p25, p50, p75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(p50), float(p25), float(p75)


def alternate(workers: dict, rounds: int, request: dict) -> dict:
    """Run `request` on every worker in turn, `rounds` times; returns {name: [answers]}."""
    results = {name: [] for name in workers}
    for r in range(rounds):
        for name, (worker, extra) in workers.items():
            results[name].append(worker.ask(**request, **extra))
            print(f"  round {r + 1}/{rounds}: {name} done", file=sys.stderr, flush=True)
    return results


# ----- this benchmark -----------------------------------------------------------------------------

# batch size, timed steps per round, warm-up steps: per preset
SETTINGS = {"baby": dict(batch=12, iters=50, warmup=5),
            "shakespeare-char": dict(batch=8, iters=10, warmup=3)}
VOCAB = 65            # tiny Shakespeare's characters
POOL = 8              # distinct random batches, cycled
REWARM = 2            # untimed steps at the start of each round


# What tensor/memory.py sets with mallopt, as glibc's environment variables for another process
# (spelled out here because this parent process does not import tensor; tests/test_memory.py
# checks that the two agree)
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20),
                    "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


def random_batches(seed: int, batch: int, block: int, vocab: int):
    """POOL (x, y) pairs of int64 token ids (B, T); y is x shifted left by one token."""
    ids = np.random.default_rng(seed).integers(0, vocab, size=(POOL, batch, block + 1))
    return [(np.ascontiguousarray(b[:, :-1]), np.ascontiguousarray(b[:, 1:])) for b in ids]


def tinygpt_worker(a):
    import numba
    import tensor
    from tensor import kernels, optim
    from tinygpt.model import GPT, GPTConfig

    cfg, recipe = GPTConfig.from_dict(json.loads(a.config)), json.loads(a.recipe)
    if a.owner:
        kernels.set_num_threads(a.threads, owner=a.owner)
    else:
        kernels.set_num_threads(a.threads)
    default_fused = tensor.is_fused()       # as the environment (TENSOR_FUSED) left it
    model = GPT(cfg, seed=a.seed)
    dropout_rng = np.random.default_rng(a.seed + 1)      # one stream for all, as in train.py
    for _, m in model.named_modules():
        if isinstance(m, tensor.nn.Dropout):
            m.generator = dropout_rng
    params = model.parameters()
    opt = optim.AdamW(params, lr=recipe["lr"], betas=tuple(recipe["betas"]),
                      weight_decay=recipe["weight_decay"])
    batches = random_batches(a.seed, a.batch, cfg.block_size, cfg.vocab_size)
    count = [0]

    def step():     # the body of tinygpt/train.py's loop
        x, y = batches[count[0] % POOL]
        count[0] += 1
        _, loss = model(x, y)
        loss.item()
        model.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(params, recipe["grad_clip"])
        opt.step()

    def timed(mode, iters, rewarm):
        with tensor.fused(mode == "fused"):
            return time_steps(step, iters, rewarm)

    for mode in a.paths:                    # warm-up: Numba compiles (or loads its cache)
        timed(mode, 0, a.warmup)
    blas = kernels.blas_info()
    serve({"owner": kernels.get_thread_owner(), "threads": kernels.get_num_threads(),
           "blas_threads": blas["threads"], "blas": blas["library"], "corename": blas["corename"],
           "numba_threads": numba.get_num_threads(), "numba_layer": _numba_layer(numba),
           "default_fused": default_fused, "params": model.num_parameters()},
          lambda req: {"times": timed(req["mode"], req["iters"], req["rewarm"])})


def time_steps(step, iters, rewarm):
    """Run `rewarm` untimed steps (the other side's threads may still be spinning), then time
    `iters` steps one by one; returns the seconds of each."""
    for _ in range(rewarm):
        step()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def _numba_layer(numba):
    try:
        return numba.threading_layer()
    except ValueError:          # no parallel region has run yet
        return "not started"


def torch_worker(a):
    from types import SimpleNamespace
    import torch
    import torch_reference as ref

    cfg, recipe = SimpleNamespace(**json.loads(a.config)), json.loads(a.recipe)
    torch.set_num_threads(a.threads)
    model = ref.build(cfg, seed=a.seed)           # training mode: dropout as the preset says
    if a.compile:       # what a speed-minded PyTorch user tries next; compiles in the warm-up
        model = torch.compile(model)
    opt = ref.adamw(model, recipe["lr"], tuple(recipe["betas"]), recipe["weight_decay"])
    batches = [(ref.to_torch(x), ref.to_torch(y))
               for x, y in random_batches(a.seed, a.batch, cfg.block_size, cfg.vocab_size)]
    count = [0]

    def step():
        x, y = batches[count[0] % POOL]
        count[0] += 1
        ref.train_step(model, opt, x, y, recipe["lr"], recipe["grad_clip"])

    def timed(iters, rewarm):
        return time_steps(step, iters, rewarm)

    t0 = time.perf_counter()
    timed(0, a.warmup)
    serve({"threads": torch.get_num_threads(), "version": torch.__version__,
           "params": sum(p.numel() for p in model.parameters()),
           "warmup_s": time.perf_counter() - t0},
          lambda req: {"times": timed(req["iters"], req["rewarm"])})


def bench_preset(name, a, recipe, print_row):
    from tinygpt.model import GPTConfig, PRESETS

    s = SETTINGS[name]
    iters = a.iters or s["iters"]
    warmup = s["warmup"] if a.warmup is None else a.warmup
    cfg = GPTConfig(vocab_size=VOCAB, **{k: v for k, v in PRESETS[name].items()
                                         if k != "vocab_size"})
    common = ["--preset", name, "--config", json.dumps(cfg.to_dict()), "--recipe",
              json.dumps(recipe), "--batch", str(s["batch"]), "--threads", str(a.threads),
              "--warmup", str(warmup), "--seed", str(a.seed)]
    workers = {}
    try:
        if a.side in ("both", "tinygpt"):
            own = ["--owner", a.owner] if a.owner else []
            w = Worker([__file__, "--worker", "tinygpt", *common, *own, "--paths", *a.paths])
            info = w.info
            print(f"tinygpt worker ({name}): threads {info['threads']}, owner {info['owner']!r} "
                  f"-> BLAS {info['blas_threads']} ({info['blas']}, core {info['corename']}), "
                  f"Numba {info['numba_threads']} (layer {info['numba_layer']}); "
                  f"TENSOR_FUSED={os.environ.get('TENSOR_FUSED', 'unset')} -> is_fused() "
                  f"{info['default_fused']}; {info['params']:,} parameters", flush=True)
            for mode in a.paths:
                workers[f"tinygpt {mode}"] = (w, {"mode": mode})
        if a.side in ("both", "torch"):
            if installed("torch"):
                w = Worker([__file__, "--worker", "torch", *common])
                print(f"torch worker ({name}): torch {w.info['version']}, "
                      f"{w.info['threads']} threads; {w.info['params']:,} parameters", flush=True)
                workers["torch"] = (w, {})
                if a.side == "both" and w.info["params"] != info["params"]:
                    print(f"warning: the two models differ: {info['params']:,} parameters in "
                          f"tinygpt, {w.info['params']:,} in torch", flush=True)
                if a.torch_compile:
                    w = Worker([__file__, "--worker", "torch", *common, "--compile"])
                    print(f"torch.compile worker ({name}): compiled and warmed up in "
                          f"{w.info['warmup_s']:.0f} s", flush=True)
                    workers["torch compiled"] = (w, {})
                if a.torch_malloc:   # PyTorch given the malloc thresholds tinygpt sets itself
                    env = dict(os.environ, **TUNED_MALLOC_ENV)
                    w = Worker([__file__, "--worker", "torch", *common], env=env)
                    workers["torch tuned malloc"] = (w, {})
            else:
                print(skip_message(f"train {name}: the PyTorch side", "torch"), flush=True)
        results = alternate(workers, a.rounds, {"iters": iters, "rewarm": REWARM})
    finally:
        for w in {id(w): w for w, _ in workers.values()}.values():
            w.close()

    tokens = s["batch"] * cfg.block_size
    median = {k: spread([t for ans in v for t in ans["times"]]) for k, v in results.items()}
    label = (f"train {name} (B {s['batch']}, T {cfg.block_size}, dropout {cfg.dropout:g}, "
             f"{a.threads} thr)")
    for side, (p50, p25, p75) in median.items():
        side_name = {"tinygpt fused": "tinygpt (fused)", "tinygpt unfused": "tinygpt (op-by-op)",
                     "torch": f"PyTorch {version('torch')}",
                     "torch compiled": f"PyTorch {version('torch')}, torch.compile",
                     "torch tuned malloc": f"PyTorch {version('torch')}, tinygpt's malloc "
                                           f"thresholds"}[side]
        ratio = f"{median['torch'][0] / p50:.2f}x" if "torch" in median else "n/a"
        print_row(f"| {label} | {side_name} | {p50 * 1e3:.1f} | {p25 * 1e3:.1f}-{p75 * 1e3:.1f} "
                  f"| {tokens / p50:,.0f} | {ratio} | {iters * a.rounds} |")


def main():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--presets", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--threads", type=int, default=cpu_count(),
                   help="threads for both sides (default: all cores)")
    p.add_argument("--owner", choices=("blas", "numba"), default=None,
                   help="tinygpt's thread owner (default: set_num_threads' default)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed steps per round and side (default: baby 50, shakespeare-char 10)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps at start-up (default: baby 5, shakespeare-char 3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of tinygpt then torch")
    p.add_argument("--paths", nargs="+", choices=("fused", "unfused"),
                   default=["fused", "unfused"],
                   help="tinygpt's paths: fused kernels and/or op-by-op (tensor.fused(False))")
    p.add_argument("--side", choices=("both", "tinygpt", "torch"), default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-malloc", action="store_true",
                   help="also time PyTorch with the glibc malloc thresholds that importing "
                        "tensor sets (tensor/memory.py), through MALLOC_*_ environment variables")
    p.add_argument("--torch-compile", action="store_true",
                   help="also time PyTorch with torch.compile(model) (inductor; compiling takes "
                        "a minute or more in the warm-up, needs a C++ compiler)")
    # worker-process arguments (set by the parent, not by hand)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=("tinygpt", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    for name in ("threads", "rounds"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if (a.iters is not None and a.iters < 1) or (a.warmup is not None and a.warmup < 0):
        p.error("--iters must be at least 1 and --warmup at least 0")
    if a.worker == "tinygpt":
        return tinygpt_worker(a)
    if a.worker == "torch":
        return torch_worker(a)

    from tinygpt.train import TrainOptions
    o = TrainOptions()      # the default recipe's optimizer settings, at a constant lr
    recipe = {"lr": o.lr, "betas": [o.beta1, o.beta2], "weight_decay": o.weight_decay,
              "grad_clip": o.grad_clip}
    print(machine_line())
    print(f"step: forward + backward + clip_grad_norm({o.grad_clip}) + AdamW(lr {o.lr}, betas "
          f"({o.beta1}, {o.beta2}), weight decay {o.weight_decay}); random batches of {VOCAB} "
          f"token ids, the same on both sides; {a.rounds} round(s) alternating the sides; each "
          f"side in its own process with {a.threads} threads", flush=True)
    header = ["| benchmark | side | ms/step (median) | p25-p75 ms | tokens/s | speed vs torch "
              "| steps |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    rows = []
    for name in a.presets:
        first = len(rows)
        bench_preset(name, a, recipe, rows.append)
        print("\n".join(header + rows[first:]), flush=True)      # this preset's rows
    if len(a.presets) > 1:
        print("\nall presets:\n" + "\n".join(header + rows))


if __name__ == "__main__":
    main()
