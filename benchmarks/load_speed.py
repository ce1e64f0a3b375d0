"""Speed under load: `train`, `sample` and `generate` with the default threads, `--threads 1` and
`--threads 2`, on the machine as it is and with one core kept busy by another process.

    flock /tmp/tinygpt-bench.lock python benchmarks/load_speed.py [--rounds 2] [--iters 150]
        [--sample-tokens 200] [--generate-tokens 24] [--only idle|load]

What runs (each a fresh `tinygpt` process, as a user would type it; built in a temp dir first):
  train      `tinygpt train` (the baby preset) for --iters iterations into a new run directory
  sample     `tinygpt sample` --sample-tokens from a run trained for 20 iterations
  generate   `tinygpt generate` --generate-tokens from a GPT-2-124M-sized Hugging Face directory
             with random weights (GPT(GPTConfig(**PRESETS["gpt2"]), seed=0))
  gen-int8   the same with `--dtype int8`: its products are Numba kernels, whose thread pool
             follows the same setting
The figure is the command's own tokens/s (train's average over its iterations; sample's and
generate's over the new tokens), so start-up and model loading are left out. Beside each default
run: the BLAS thread counts "auto" chose in turn (TENSOR_THREADS_LOG, tensor/kernels/threads.py).

"load": a separate Python process spins on the last core (pinned with sched_setaffinity) for the
whole condition and is killed after it. "idle" is the machine as it is, with no spinner: on a
shared machine other processes may be busy, so the cores they used are measured (from
/proc/stat) and printed beside each condition.

Settings and conditions alternate within each round (the order of the settings rotates from
round to round); printed are medians over the rounds, and each setting's ratio to the best
setting of the same command under the same condition. The default's goal: >= 0.8x
the best under load, and idle within 5% of `--threads 2` (the default before "auto" threads:
BLAS owning both cores).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {"default": [], "--threads 1": ["--threads", "1"], "--threads 2": ["--threads", "2"]}
TIMEOUT = 180          # seconds; a command slower than this is reported as a timeout
SPIN = "import os\nwhile True:\n    pass\n"


def cpu_model() -> str:
    """'AMD EPYC (AVX2)'-style name of this machine's CPU, from /proc/cpuinfo."""
    name, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} ({simd})"


def background_load(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes over `seconds` (this one sleeps meanwhile)."""
    from tensor.kernels import threads
    before = threads._cpu_sample()
    time.sleep(seconds)
    after = threads._cpu_sample()
    return threads.others_busy_cores(before, after) if before and after else float("nan")


def start_spinner() -> subprocess.Popen:
    """Another process keeping one core busy: the last core this process may use."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {max(os.sched_getaffinity(0))})
    time.sleep(0.5)                 # let it start spinning before anything is measured
    return proc


def stop_spinner(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def tokens_per_second(output: str) -> float:
    """The last 'N tok/s' (train's progress line) or 'N tokens/s' (sample, generate) printed."""
    found = re.findall(r"([\d,]+(?:\.\d+)?) tok(?:ens)?/s", output)
    if not found:
        raise RuntimeError(f"no tokens/s in the command's output:\n{output[-2000:]}")
    return float(found[-1].replace(",", ""))


def run(argv: list[str], cwd: Path) -> tuple[float, str]:
    """(tokens/s, the BLAS thread counts "auto" chose in turn, e.g. "1,2") of one `tinygpt ...`
    command; tokens/s is 0.0 if it timed out."""
    cmd = [sys.executable, "-m", "tinygpt.cli", *argv]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TENSOR_THREADS_LOG="1")
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return 0.0, "?"
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    chosen = ",".join(re.findall(r"BLAS threads -> (\d+)", done.stderr))
    return tokens_per_second(done.stdout + done.stderr), chosen


def build(tmp: Path) -> None:
    """A run trained for 20 iterations (for sample) and a GPT-2-124M-sized HF directory."""
    from tensor.io import save_safetensors
    from tinygpt.model import GPT, GPTConfig, PRESETS
    run(["train", "--max-iters", "20", "--eval-interval", "20", "--eval-iters", "1",
         "--out", "run"], tmp)
    hf = tmp / "gpt2-random"
    hf.mkdir()
    model = GPT(GPTConfig(**PRESETS["gpt2"]), seed=0)
    cfg = model.config
    (hf / "config.json").write_text(json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "activation_function": "gelu_new", "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "n_positions": cfg.block_size, "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": 1e-05}))
    save_safetensors(hf / "model.safetensors", dict(model.state_dict()))


def commands(args, tmp: Path):
    """name -> a function giving the argv of one run (train needs a new directory each time)."""
    count = iter(range(10**6))
    return {
        "train": lambda: ["train", "--max-iters", str(args.iters), "--eval-interval",
                          str(args.iters), "--eval-iters", "1", "--out", f"t{next(count)}"],
        "sample": lambda: ["sample", "--model", "run", "--max-new-tokens",
                           str(args.sample_tokens), "--seed", "0"],
        "generate": lambda: ["generate", "--model", "gpt2-random", "--max-new-tokens",
                             str(args.generate_tokens), "--seed", "0", "--prompt",
                             "The quick brown fox", "--no-stop-at-eot"],
        "gen-int8": lambda: ["generate", "--model", "gpt2-random", "--max-new-tokens",
                             str(args.generate_tokens), "--seed", "0", "--prompt",
                             "The quick brown fox", "--no-stop-at-eot", "--dtype", "int8"],
    }


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=150, help="train iterations per run")
    parser.add_argument("--sample-tokens", type=int, default=200)
    parser.add_argument("--generate-tokens", type=int, default=24)
    parser.add_argument("--only", choices=("idle", "load"), help="measure one condition only")
    args = parser.parse_args()

    import numpy
    from tensor.kernels import blas_info
    info = blas_info()
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; numpy "
          f"{numpy.__version__}, BLAS {info['library']} ({info['corename']}, "
          f"{info['threading_layer'] or 'threading layer unknown'}) driven via {info['via']}")
    conditions = [args.only] if args.only else ["idle", "load"]
    tmp = Path(tempfile.mkdtemp(prefix="tinygpt-load-"))
    results = {}            # (condition, command, setting) -> [tokens/s, ...]
    background = {c: [] for c in conditions}
    try:
        build(tmp)
        cmds = commands(args, tmp)
        names = list(SETTINGS)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for condition in conditions:
                background[condition].append(background_load())
                spinner = start_spinner() if condition == "load" else None
                try:
                    for command, argv in cmds.items():
                        for setting in order:
                            tps, chosen = run(argv() + SETTINGS[setting], tmp)
                            results.setdefault((condition, command, setting), []).append(tps)
                            auto = f"  (auto: BLAS {chosen} thr.)" if chosen else ""
                            print(f"  round {r + 1} {condition:4} {command:8} {setting:11} "
                                  f"{tps:10,.1f} tokens/s{auto}", flush=True)
                finally:
                    if spinner is not None:
                        stop_spinner(spinner)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmedians of {args.rounds} rounds; tokens/s (ratio to the best setting); "
          f"'load' = one core spun by another process; {cpu_model()}")
    for condition in conditions:
        busy = ", ".join(f"{b:.2f}" for b in background[condition])
        print(f"{condition}: other processes kept {busy} cores busy before the spinner (per round)")
        for command in cmds:
            medians = {s: statistics.median(results[(condition, command, s)]) for s in SETTINGS}
            best = max(medians.values()) or 1.0
            cells = "   ".join(f"{s} {v:9,.1f} ({v / best:.2f}x)" for s, v in medians.items())
            print(f"  {condition:4} {command:8} {cells}")
    if "idle" in conditions:
        for command in cmds:
            ratio = (statistics.median(results[("idle", command, "default")])
                     / statistics.median(results[("idle", command, "--threads 2")]))
            print(f"idle {command:8}: default / --threads 2 (the old default) = {ratio:.2f}x")


if __name__ == "__main__":
    main()
