"""tensor/memory.py: importing tensor keeps freed memory for reuse (glibc only).

The check is the kernel's own count of minor page faults (getrusage), not a timing. Each round
does what a training step does: many arrays of about a megabyte live at once (activations),
then all freed. With the tuning the next round reuses the same pages; with glibc's defaults the
freed top of the heap goes back to the kernel and every page faults again.
"""
import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

PROBE = """
import resource, numpy as np
import tensor
def faults_per_round(rounds=20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        live = [np.ones(384 * 1024, dtype=np.float32) for _ in range(30)]   # 30 x 1.5 MB
        del live
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds
faults_per_round(5)                                       # the first rounds may grow the heap
print(tensor.malloc_tuned(), faults_per_round())
"""


def run_probe(tune: str):
    env = dict(os.environ, TENSOR_MALLOC_TUNE=tune)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "GLIBC_TUNABLES"):     # glibc's own settings would blur the comparison
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not GLIBC, reason="the malloc thresholds exist only in glibc")
def test_import_keeps_freed_memory_so_a_new_array_causes_no_page_faults():
    tuned, faults = run_probe("1")
    assert tuned
    assert faults < 50, f"{faults} page faults per round of 45 MB with the tuning on"


@pytest.mark.skipif(not GLIBC, reason="the malloc thresholds exist only in glibc")
def test_tensor_malloc_tune_0_leaves_malloc_alone():
    tuned, faults = run_probe("0")
    assert not tuned
    # glibc's default: the freed 45 MB is trimmed, so a round faults on most of its 11,520 pages
    assert faults > 5000, f"only {faults} page faults per round of 45 MB with glibc's defaults"


def test_tune_malloc_is_a_no_op_where_it_cannot_apply(monkeypatch):
    from tensor import memory
    monkeypatch.setenv("TENSOR_MALLOC_TUNE", "0")
    assert memory.tune_malloc() is False
    monkeypatch.setenv("TENSOR_MALLOC_TUNE", "1")
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("", ""))
    assert memory.tune_malloc() is False


def test_the_benchmark_gives_pytorch_the_same_thresholds():
    """benchmarks/train_speed.py --torch-malloc spells the thresholds as environment variables
    (its parent process must not import tensor); they must stay those of tensor/memory.py."""
    import importlib.util
    from pathlib import Path
    from tensor import memory
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("train_speed_bench", path)
    bench = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(bench)          # it puts benchmarks/ on sys.path: undo that
    finally:
        sys.path[:] = saved
    assert bench.TUNED_MALLOC_ENV == {"MALLOC_MMAP_THRESHOLD_": str(memory.MMAP_THRESHOLD),
                                      "MALLOC_TRIM_THRESHOLD_": str(memory.TRIM_THRESHOLD)}
