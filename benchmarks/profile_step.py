"""Where a training step's time goes: tinygpt's step (forward + backward + clip + AdamW, the body
of tinygpt/train.py's loop) split into the parts one could attack.

    python benchmarks/profile_step.py [--presets baby shakespeare-char] [--iters N]

Parts, timed by wrapping the functions that do the work (the wrappers cost ~1 µs a call, which
is counted in "Python"):
  BLAS products        every np.matmul: the linear layers' products and attention's batched ones
  Numba kernels        layer norm, GELU, softmax, cross-entropy, embedding backward
  AdamW (Numba)        the optimizer's fused update, one call per parameter
  NumPy elementwise    what is left, minus Python: dropout masks, residual adds, gradient sums,
  + Python             reshapes, the graph walk. The pure-Python share is measured on its own
                       by running the same graph at near-zero sizes (head size 1, T 2, B 1), where
                       arithmetic costs nothing and what remains is dispatch.
Each part is a sum of wall time over the timed steps, so with several threads it is the time the
step waited for that part. Prints a Markdown table per preset.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

from train_speed import SETTINGS, machine_line, random_batches   # noqa: E402

SPENT = collections.defaultdict(float)        # part -> seconds
CALLS = collections.Counter()
DETAIL = collections.defaultdict(float)       # function name -> seconds


def timed(part, fn):
    name = getattr(fn, "__name__", part)
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t
            SPENT[part] += dt
            CALLS[part] += 1
            DETAIL[name] += dt
    return wrapper


def instrument():
    """Wrap the functions that do the work, each in its part (see the module docstring)."""
    import tensor.kernels as kernels
    import tensor.kernels.fused as fk
    import tensor.optim as optim
    np.matmul = timed("BLAS products", np.matmul)     # functional.py and kernels call np.matmul
    for name in ("softmax_forward", "softmax_backward"):
        setattr(kernels, name, timed("Numba kernels", getattr(kernels, name)))
    for name in ("layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward",
                 "cross_entropy_forward", "cross_entropy_backward", "embedding_backward",
                 "dropout_mask"):
        if hasattr(fk, name):
            setattr(fk, name, timed("Numba kernels", getattr(fk, name)))
    optim.adamw_update = timed("AdamW (Numba)", optim.adamw_update)


def build(cfg_kw, batch, seed=1337):
    import tensor
    from tensor import optim
    from tinygpt.model import GPT, GPTConfig
    cfg = GPTConfig(**cfg_kw)
    model = GPT(cfg, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for _, m in model.named_modules():
        if isinstance(m, tensor.nn.Dropout):
            m.generator = rng
    params = model.parameters()
    opt = optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    batches = random_batches(seed, batch, cfg.block_size, cfg.vocab_size)
    state = [0]

    def step():
        x, y = batches[state[0] % len(batches)]
        state[0] += 1
        _, loss = model(x, y)
        loss.item()
        model.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(params, 1.0)
        opt.step()
    return step


def model_flops(cfg: dict, batch: int) -> float:
    """Floating-point operations of one training step's products (forward + backward = 3 x the
    forward's): every weight matrix once per token, and attention's two (T x T) products per
    head, counted in full (the causal mask's zeros included, as BLAS computes them)."""
    C, L, T, V = cfg["n_embd"], cfg["n_layer"], cfg["block_size"], cfg["vocab_size"]
    weights = L * 12 * C * C + V * C                 # qkv 3C², proj C², MLP 8C², logits V·C
    attention = L * 2 * T * C                        # per token: q·k over T keys, a·v over T
    return 3 * 2 * batch * T * (weights + attention)


def blas_peak(threads: int) -> float:
    """Best GFLOP/s of a float32 1024 x 1024 x 1024 product on `threads` BLAS threads: what this
    machine's BLAS reaches on a product big enough to run at full speed."""
    from tensor import kernels
    kernels.set_num_threads(threads)
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    best = min(_time(lambda: a @ a) for _ in range(10))
    kernels.set_num_threads("auto")
    return 2 * 1024 ** 3 / best / 1e9


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(step, iters, warmup):
    for _ in range(warmup):
        step()
    SPENT.clear()
    CALLS.clear()
    DETAIL.clear()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t) / iters


def main():
    from tinygpt.model import PRESETS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["baby", "shakespeare-char"],
                   choices=sorted(SETTINGS))
    p.add_argument("--iters", type=int, default=None, help="timed steps (default: baby 60, "
                   "shakespeare-char 8)")
    a = p.parse_args()
    print(machine_line())
    peak1, peak2 = blas_peak(1), blas_peak(2)
    print(f"BLAS on a 1024^3 float32 product, best of 10: {peak1:.0f} GFLOP/s on 1 thread, "
          f"{peak2:.0f} on 2")
    instrument()
    for preset in a.presets:
        s = SETTINGS[preset]
        cfg = {**PRESETS[preset], "vocab_size": 65}
        iters = a.iters or (60 if preset == "baby" else 8)
        total = run(build(cfg, s["batch"]), iters, s["warmup"])
        parts = {k: v / iters for k, v in SPENT.items()}
        calls = {k: v // iters for k, v in CALLS.items()}
        detail = {k: v / iters for k, v in DETAIL.items()}
        # the same graph at near-zero sizes: what is left is Python and dispatch
        tiny = {**cfg, "n_embd": cfg["n_head"], "block_size": 2}      # head size 1
        py_total = run(build(tiny, 1), 4 * iters, 3)
        python = py_total - sum(SPENT.values()) / (4 * iters)   # the tiny run's compute
        python = max(0.0, python)
        rest = total - sum(parts.values())
        flops = model_flops(cfg, s["batch"])
        blas = parts.get("BLAS products", float("nan"))
        print(f"\n{preset} (batch {s['batch']}, block {cfg['block_size']}, dropout "
              f"{cfg['dropout']}): {total * 1e3:.1f} ms per step over {iters} steps; "
              f"{flops / 1e9:.2f} GFLOP of products per step: {flops / total / 1e9:.1f} GFLOP/s "
              f"over the whole step, {flops / blas / 1e9:.1f} GFLOP/s inside BLAS calls (the "
              f"2-thread peak above: {peak2:.0f})\n")
        print("| part | ms/step | share | calls/step |")
        print("| --- | ---: | ---: | ---: |")
        for k in ("BLAS products", "Numba kernels", "AdamW (Numba)"):
            v = parts.get(k, 0.0)
            print(f"| {k} | {v * 1e3:.1f} | {v / total:.0%} | {calls.get(k, 0)} |")
        print(f"| NumPy elementwise | {max(0.0, rest - python) * 1e3:.1f} | "
              f"{max(0.0, rest - python) / total:.0%} | |")
        print(f"| Python (graph, dispatch) | {python * 1e3:.1f} | {python / total:.0%} | |")
        print("\nby function: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in
                                             sorted(detail.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
