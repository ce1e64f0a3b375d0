"""Numba kernels against NumPy at the GPT shapes of tinygpt's default model, side by side.

    python benchmarks/kernels.py [--repeats N] [--owner blas|numba|both] [--threads N]

(--threads 1: what "auto" threads give BLAS with another process busy on a 2-core machine.)

For each thread owner (tensor/kernels/threads.py) prints one line per measurement: GFLOP/s of the
Numba matmul kernel and of np.matmul, their ratio, and the path `matmul` dispatches to; then
softmax forward + backward in microseconds. Both sides run in the same process, alternately,
after a warm-up; each number is the best of N runs (the least disturbed one). A last line per
owner counts the products where the Numba kernel beat np.matmul and where `matmul` sent them.
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numba  # noqa: E402

from tensor import kernels as K  # noqa: E402

# (name, shape of A, shape of B): the forward products of one transformer block at the default
# size (batch 12 x 64 tokens = 768 rows, C = 128, 4 heads of 32, so 48 attention matrices)
PRODUCTS = [
    ("qkv    x@W", (768, 128), (128, 384)),
    ("fc     x@W", (768, 128), (128, 512)),
    ("proj2  x@W", (768, 512), (512, 128)),
    ("att    q@kT", (48, 64, 32), (48, 32, 64)),
    ("att    p@v", (48, 64, 64), (48, 64, 32)),
]


from train_speed import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def best_pair(f, g, repeats):
    """Best wall time of f and of g (seconds), run alternately `repeats` times after a warm-up."""
    for _ in range(3):
        f(), g()
    tf = tg = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        tf = min(tf, time.perf_counter() - t)
        t = time.perf_counter()
        g()
        tg = min(tg, time.perf_counter() - t)
    return tf, tg


def fmt(shape):
    return "x".join(map(str, shape))


def bench_matmul(rng, repeats):
    """Prints one line per product; returns [(numba/numpy speed ratio, matmul's path), ...]."""
    found = []
    for name, sa, sb in PRODUCTS:
        a = rng.standard_normal(sa).astype(np.float32)
        b = rng.standard_normal(sb).astype(np.float32)
        g = rng.standard_normal(sa[:-1] + sb[-1:]).astype(np.float32)
        cases = [("fwd", a, b, f"{fmt(sa)} @ {fmt(sb)}"),
                 ("dA=g@BT", g, b.swapaxes(-1, -2), f"{fmt(g.shape)} @ {fmt(sb)}T"),
                 ("dB=AT@g", a.swapaxes(-1, -2), g, f"{fmt(sa)}T @ {fmt(g.shape)}")]
        for kind, x, y, text in cases:
            flops = 2 * np.prod(x.shape) * y.shape[-1]
            t_numba, t_numpy = best_pair(lambda: K.matmul_numba(x, y), lambda: np.matmul(x, y),
                                         repeats)
            print(f"matmul {name:<12} {kind:<8} {text:<26} numba {flops / t_numba / 1e9:6.1f} "
                  f"GFLOP/s  numpy {flops / t_numpy / 1e9:6.1f} GFLOP/s  numba/numpy "
                  f"{t_numpy / t_numba:4.2f}  matmul->{K.matmul_path(x, y)}", flush=True)
            found.append((t_numpy / t_numba, K.matmul_path(x, y)))
    return found


def dispatch_summary(found, owner, blas_threads, numba_threads):
    """One line: where the Numba kernel beat np.matmul, and where `matmul` sent the products."""
    wins = [r for r, _ in found if r > 1.0]
    to_numba = [r for r, path in found if path == "numba"]
    wrong = sum((r > 1.0) != (path == "numba") for r, path in found)
    print(f"dispatch, owner={owner!r} (BLAS {blas_threads} thr., Numba {numba_threads} thr.): "
          f"the Numba kernel is faster in {len(wins)} of {len(found)} products (numba/numpy "
          f"{min(r for r, _ in found):.2f}-{max(r for r, _ in found):.2f}); matmul sends "
          f"{len(to_numba)} to Numba; {wrong} sent to the slower side", flush=True)


def bench_softmax(rng, repeats, dtype=np.float32):
    x = rng.standard_normal((48, 64, 64)).astype(dtype)
    g = rng.standard_normal((48, 64, 64)).astype(dtype)
    scale = 1 / np.sqrt(32)
    y = K.softmax_forward(x, scale, causal=True)
    rows = [("forward ", lambda: K.softmax_forward(x, scale, True),
             lambda: K.softmax_forward_ref(x, scale, True)),
            ("backward", lambda: K.softmax_backward(y, g, scale),
             lambda: K.softmax_backward_ref(y, g, scale))]
    total_numba = total_numpy = 0.0
    for kind, f_numba, f_numpy in rows:
        t_numba, t_numpy = best_pair(f_numba, f_numpy, repeats)
        total_numba, total_numpy = total_numba + t_numba, total_numpy + t_numpy
        print(f"softmax 48x64x64 causal scale {kind}  numba {t_numba * 1e6:7.1f} us  numpy "
              f"{t_numpy * 1e6:7.1f} us  numpy/numba {t_numpy / t_numba:4.2f}", flush=True)
    print(f"softmax 48x64x64 causal scale fwd+bwd   numba {total_numba * 1e6:7.1f} us  numpy "
          f"{total_numpy * 1e6:7.1f} us  numpy/numba {total_numpy / total_numba:4.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per side (best kept)")
    parser.add_argument("--owner", choices=("blas", "numba", "both"), default="both",
                        help="thread owner(s) to measure (tensor/kernels/threads.py)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    args = parser.parse_args()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    threads = args.threads or cores
    blas = K.blas_info()
    print(f"machine: {cpu_model()}, {cores} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}")
    print(f"BLAS: {blas['library']} (core type {blas['corename']}, OPENBLAS_CORETYPE="
          f"{blas['OPENBLAS_CORETYPE']}); load average {os.getloadavg()[0]:.2f} at start")
    rng = np.random.default_rng(0)
    for owner in (("blas", "numba") if args.owner == "both" else (args.owner,)):
        K.set_num_threads(threads, owner=owner)
        numba_threads = min(threads, numba.config.NUMBA_NUM_THREADS) if owner == "numba" else 1
        blas_threads = K.blas_info()["threads"]
        print(f"threads: set_num_threads({threads}, owner={owner!r}) -> BLAS {blas_threads} "
              f"thread(s), Numba kernels {numba_threads} thread(s); float32, best of "
              f"{args.repeats}")
        found = bench_matmul(rng, args.repeats)
        bench_softmax(rng, args.repeats)
        dispatch_summary(found, owner, blas_threads, numba_threads)


if __name__ == "__main__":
    main()
