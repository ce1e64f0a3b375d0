"""Peak memory of the default training run, and start-up time to the first training step,
tinygpt next to PyTorch.

    python benchmarks/startup_memory.py [--max-iters 2000] [--warm-runs 3] [--threads N]
                                        [--cold-cache isolated|package] [--skip memory|startup]

(a) Peak resident memory (the kernel's high-water mark, ru_maxrss from wait4() on the child) of
    `tinygpt train --max-iters N --quiet --out <tmp>` (run as `python -m tinygpt.cli`, the code
    behind the `tinygpt` command), next to the same recipe in PyTorch, also in a child process:
    benchmarks/torch_reference.py's model and AdamW, the same batches (tinygpt's Dataset and
    seed), the same cosine learning-rate schedule and the same evaluation (eval_iters batches of
    each split every eval_interval steps). The PyTorch run writes no checkpoints (tinygpt's does,
    at each evaluation); it imports only numpy, torch and tinygpt's text/data modules.
(b) Start-up time: seconds from spawning a fresh Python process to the first training step
    (the default run's setup, its evaluation at step 0 and checkpoint, then one step), through
    tinygpt.train.train() with an on_iter hook that notes the time and ends the process at step 1.
    cold: Numba's on-disk cache is empty, so every kernel is compiled; warm: the cache is filled.
    By default the cold run gets an empty NUMBA_CACHE_DIR of its own (a temporary directory),
    so the tensor package's __pycache__, which other processes may be using, is left alone;
    the warm runs reuse that directory. --cold-cache package deletes the package's own cached
    kernels (*.nbi, *.nbc) instead; the warm runs that follow compile and write them back.
    PyTorch's time to its first step (import torch, build, evaluate, one step) is printed beside.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from train_speed import (MARK, installed, machine_line, skip_message, spread, version,
                         BENCH_DIR)

# ----- child processes ----------------------------------------------------------------------------


class _Clock:
    """Seconds since the parent spawned this process (wall clock: comparable across processes)."""

    def __init__(self):
        self.t_spawn = float(os.environ.get("BENCH_T_SPAWN", time.time()))
        self.marks = {}

    def mark(self, name):
        self.marks.setdefault(name, time.time() - self.t_spawn)


class _FirstStepDone(Exception):
    pass


def child_tinygpt_start(a, clock):
    """Run the default training until step 0 is done; print the times."""
    from tinygpt.train import TrainOptions, train
    clock.mark("imports")

    def on_iter(it, stop, model):
        clock.mark(f"step {it} starts")
        if it == 1:
            raise _FirstStepDone      # ends the run here (stop.requested would save first)

    with tempfile.TemporaryDirectory() as out:
        opts = TrainOptions(out=out, threads=a.threads)
        try:   # train()'s first log line comes once the data and the model are ready
            train(opts, progress=False, log=lambda *_: clock.mark("data + model ready"),
                  on_iter=on_iter)
        except _FirstStepDone:
            pass
    print(MARK + json.dumps(clock.marks), flush=True)


def child_torch_train(a, clock):
    """The default `tinygpt train` recipe in PyTorch; the schedule comes from the parent."""
    from types import SimpleNamespace
    import torch
    import torch_reference as ref
    from tinygpt.dataset import Dataset, read_text
    from tinygpt.tokenizer import CharTokenizer
    clock.mark("imports")

    r = json.loads(Path(a.recipe).read_text())
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = SimpleNamespace(**r["model"])
    text = read_text()
    tok = CharTokenizer.from_text(text)
    data = Dataset.from_ids(tok.encode_array(text), cfg.block_size)
    model = ref.build(cfg, seed=r["seed"])
    opt = ref.adamw(model, r["lr"][0], tuple(r["betas"]), r["weight_decay"])
    clock.mark("data + model ready")
    batch_rng = np.random.default_rng(r["seed"])
    B, T, iters = r["batch_size"], cfg.block_size, len(r["lr"])

    def estimate_loss(it):          # as tinygpt.evaluate.estimate_loss: same batches, eval mode
        model.eval()
        losses = {}
        with torch.no_grad():
            for split in ("train", "val"):
                rng = np.random.default_rng([r["seed"], it, split == "val"])
                losses[split] = float(np.mean([
                    model(*map(ref.to_torch, data.batch(split, B, T, rng)))[1].item()
                    for _ in range(r["eval_iters"])]))
        model.train()
        return losses

    losses = {}
    for it in range(iters + 1):
        if it % r["eval_interval"] == 0 or it == iters:
            losses = estimate_loss(it)
        if it == iters:
            break
        clock.mark(f"step {it} starts")
        x, y = data.batch("train", B, T, batch_rng)
        ref.train_step(model, opt, ref.to_torch(x), ref.to_torch(y), r["lr"][it],
                       r["grad_clip"])
        clock.mark(f"step {it + 1} starts")
    print(f"torch run: {iters} steps, train loss {losses['train']:.4f}, "
          f"val loss {losses['val']:.4f}", flush=True)
    print(MARK + json.dumps(clock.marks), flush=True)


# ----- the parent ---------------------------------------------------------------------------------


def spawn_env(extra: dict | None = None) -> dict:
    env = {**os.environ, **(extra or {})}
    env["BENCH_T_SPAWN"] = repr(time.time())
    return env


def run_for_peak_rss(argv: list[str], log_path: Path) -> tuple[int, float, float]:
    """Run argv to the end; return (exit code, peak RSS in MB, wall seconds) of that child."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=spawn_env())
        _, status, usage = os.wait4(proc.pid, 0)      # this child's own resource usage
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    # ru_maxrss: kilobytes on Linux, bytes on macOS
    peak = usage.ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)
    return proc.returncode, peak, wall


def torch_recipe(max_iters: int, path: Path):
    """The default TrainOptions as data for the torch child: model shape, lr per step, ..."""
    from tensor import optim
    from tinygpt.dataset import read_text
    from tinygpt.tokenizer import CharTokenizer
    from tinygpt.train import TrainOptions
    o = TrainOptions(max_iters=max_iters)
    cfg = o.model_config(CharTokenizer.from_text(read_text()).vocab_size)
    lr = [optim.cosine_lr(it, o.lr, o.min_lr, o.warmup_iters, o.max_iters)
          for it in range(max_iters)]
    path.write_text(json.dumps({"model": cfg.to_dict(), "lr": lr, "seed": o.seed,
                                "batch_size": o.batch_size, "betas": [o.beta1, o.beta2],
                                "weight_decay": o.weight_decay, "grad_clip": o.grad_clip,
                                "eval_interval": o.eval_interval, "eval_iters": o.eval_iters}))
    return o


def bench_memory(a, tmp: Path):
    o = torch_recipe(a.max_iters, tmp / "recipe.json")
    note = "" if a.max_iters == 2000 else " (SHORTENED from the default 2000)"
    print(f"(a) peak resident memory, {a.max_iters} training steps{note}, eval every "
          f"{o.eval_interval} steps on {o.eval_iters} batches per split; threads "
          f"{a.threads or 'default'}", flush=True)
    threads = ["--threads", str(a.threads)] if a.threads else []
    runs = {"tinygpt": [sys.executable, "-m", "tinygpt.cli", "train", "--max-iters",
                        str(a.max_iters), "--quiet", "--out", str(tmp / "out"), *threads]}
    if installed("torch"):
        runs["torch"] = [sys.executable, __file__, "--child", "torch-train", "--recipe",
                         str(tmp / "recipe.json"), *threads]
    else:
        print(skip_message("memory, the PyTorch side", "torch"))
    peaks = {}
    for side, argv in runs.items():
        print(f"  running {side}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        code, peaks[side], wall = run_for_peak_rss(argv, tmp / f"{side}.log")
        lines = (tmp / f"{side}.log").read_text().splitlines()
        last = next((l for l in reversed(lines) if l and not l.startswith(MARK)), "")
        if code != 0:
            raise SystemExit(f"the {side} run failed (exit code {code}); its output:\n"
                             + "\n".join(lines[-20:]))
        print(f"  {side} run: {wall:.0f} s wall; last line: {last}", flush=True)
    print("| benchmark | side | peak RSS MB | vs PyTorch |")
    print("| --- | --- | ---: | ---: |")
    names = {"tinygpt": "tinygpt train", "torch": f"PyTorch {version('torch')}"}
    for side, mb in peaks.items():
        ratio = f"{mb / peaks['torch']:.2f}x" if "torch" in peaks else "n/a"
        print(f"| peak memory, default run, {a.max_iters} steps{note} | {names[side]} "
              f"| {mb:.0f} | {ratio} |", flush=True)


def timed_child(argv: list[str], extra_env: dict | None = None) -> dict:
    """Run a start-up child; return its marks (seconds since spawn)."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          env=spawn_env(extra_env))
    marks = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
    if proc.returncode != 0 or not marks:
        raise SystemExit(f"start-up child `{' '.join(argv)}` failed (exit code "
                         f"{proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(marks[-1][len(MARK):])


def clear_package_cache() -> int:
    """Delete the tensor package's cached Numba kernels; returns how many files went."""
    import importlib.util
    root = Path(importlib.util.find_spec("tensor").origin).parent
    files = [f for f in root.rglob("__pycache__/*") if f.suffix in (".nbi", ".nbc")]
    for f in files:
        f.unlink(missing_ok=True)
    return len(files)


def startup_row(label, marks):
    return (f"| {label} | {marks['imports']:.2f} | {marks['data + model ready']:.2f} "
            f"| {marks['step 0 starts']:.2f} | {marks['step 1 starts']:.2f} |")


def bench_startup(a, tmp: Path):
    threads = ["--threads", str(a.threads)] if a.threads else []
    child = [__file__, "--child", "tinygpt-start", *threads]
    if a.cold_cache == "isolated":
        cache = {"NUMBA_CACHE_DIR": str(tmp / "numba-cache")}
        how = f"empty NUMBA_CACHE_DIR ({tmp / 'numba-cache'}), then filled by the cold run"
    else:
        if os.environ.get("NUMBA_CACHE_DIR"):
            raise SystemExit("--cold-cache package: NUMBA_CACHE_DIR is set, so Numba does not "
                             "use the package's __pycache__; unset it or use --cold-cache isolated")
        cache = {}
        n = clear_package_cache()
        how = f"deleted the tensor package's {n} cached kernel files; the cold run rewrites them"
    print(f"\n(b) start-up to the first training step, seconds since the process was spawned; "
          f"Numba cache: {how}", flush=True)
    print("  cold run", file=sys.stderr, flush=True)
    cold = timed_child(child, cache)
    warm = []
    for i in range(a.warm_runs):
        print(f"  warm run {i + 1}/{a.warm_runs}", file=sys.stderr, flush=True)
        warm.append(timed_child(child, cache))
    torch_marks = None
    if installed("torch"):
        torch_recipe(1, tmp / "recipe-1.json")
        print("  PyTorch run", file=sys.stderr, flush=True)
        torch_marks = timed_child([__file__, "--child", "torch-train", "--recipe",
                                   str(tmp / "recipe-1.json"), *threads])
    print("| start-up | imports done s | data + model ready s | step 0 starts s "
          "(after the eval at 0) | step 0 done s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(startup_row("tinygpt, cold Numba cache (compiles every kernel)", cold))
    for i, m in enumerate(warm):
        print(startup_row(f"tinygpt, warm Numba cache, run {i + 1}", m))
    if len(warm) > 1:
        median = {k: spread([m[k] for m in warm])[0] for k in warm[0]}
        print(startup_row(f"tinygpt, warm Numba cache, median of {len(warm)}", median))
    if torch_marks is not None:
        print(startup_row(f"PyTorch {version('torch')} (import torch, build, eval, one step)",
                          torch_marks))
    else:
        print(skip_message("start-up, the PyTorch side", "torch"))
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--max-iters", type=int, default=2000,
                   help="steps of the memory runs (the default run is 2000)")
    p.add_argument("--warm-runs", type=int, default=3, help="warm start-up runs")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both sides (default: each side's own default)")
    p.add_argument("--cold-cache", choices=("isolated", "package"), default="isolated",
                   help="how the cold run gets an empty Numba cache (see the top of this file)")
    p.add_argument("--skip", choices=("memory", "startup"), default=None)
    p.add_argument("--child", choices=("tinygpt-start", "torch-train"), help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.max_iters < 1 or a.warm_runs < 0 or (a.threads is not None and a.threads < 1):
        p.error("--max-iters and --threads must be at least 1, --warm-runs at least 0")
    if a.child:
        clock = _Clock()
        sys.path.insert(0, str(BENCH_DIR))
        return (child_tinygpt_start if a.child == "tinygpt-start" else child_torch_train)(a, clock)
    if not hasattr(os, "wait4"):
        raise SystemExit("startup_memory.py needs os.wait4 (Linux or macOS)")

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="tinygpt-bench-") as d:
        if a.skip != "memory":
            bench_memory(a, Path(d))
        if a.skip != "startup":
            bench_startup(a, Path(d))


if __name__ == "__main__":
    main()
