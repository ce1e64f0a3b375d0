"""`mpiexec -n 2 tinygpt train` against one process with --grad-accum 2: the same micro-batches
in the same order, so the same losses and weights to float tolerance (tinygpt/distributed.py)."""
import subprocess
import sys

import numpy as np
import pytest

from tensor.io import load_safetensors
from tinygpt import checkpoint as ckpt

from helpers import find_mpiexec, run_in_group

pytest.importorskip("mpi4py", reason='mpi4py is not installed: pip install -e ".[mpi]"')

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--max-iters", "24", "--eval-interval", "8", "--eval-iters", "4",
        "--warmup-iters", "2", "--dropout", "0", "--quiet"]


def run(cmd, timeout=300):
    out = run_in_group(cmd, timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def rows(out):
    lines = (out / "metrics.csv").read_text().splitlines()[1:]
    return np.array([[float(v) for v in line.split(",")[:4]] for line in lines])


def test_two_ranks_train_like_one_process_with_grad_accum_2(tmp_path):
    tinygpt = [sys.executable, "-m", "tinygpt.cli", "train"]
    run([find_mpiexec(), "-n", "2", *tinygpt, *TINY, "--threads", "1",
         "--out", str(tmp_path / "mpi")])
    run([*tinygpt, *TINY, "--grad-accum", "2", "--out", str(tmp_path / "one")])
    a, b = rows(tmp_path / "mpi"), rows(tmp_path / "one")
    assert a.shape == b.shape == (4, 4)                 # one row per evaluation, rank 0 alone
    np.testing.assert_allclose(a, b, rtol=1e-5)         # iter, train loss, val loss, lr
    wa = load_safetensors(ckpt.list_checkpoints(tmp_path / "mpi")[-1].path / "model.safetensors")
    wb = load_safetensors(ckpt.list_checkpoints(tmp_path / "one")[-1].path / "model.safetensors")
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5, err_msg=k)
    config = ckpt.find_checkpoint(tmp_path / "mpi", "latest")[1]
    assert config["world_size"] == 2


def test_resume_needs_the_same_number_of_ranks(tmp_path):
    tinygpt = [sys.executable, "-m", "tinygpt.cli", "train"]
    out = str(tmp_path / "mpi")
    run([find_mpiexec(), "-n", "2", *tinygpt, *TINY, "--threads", "1", "--max-iters", "8",
         "--out", out])
    run([find_mpiexec(), "-n", "2", *tinygpt, "--resume", "--out", out, "--max-iters", "16",
         "--quiet"])
    assert ckpt.find_checkpoint(out, "latest")[1]["iteration"] == 16
    proc = subprocess.run([*tinygpt, "--resume", "--out", out, "--max-iters", "24"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "same number" in proc.stderr


def test_resume_over_mpi_continues_every_ranks_dropout_stream(tmp_path):
    # with dropout each rank draws its own masks; a run stopped and resumed must end with the
    # same weights as one that never stopped (before, ranks > 0 drew a new stream on resume)
    tinygpt = [sys.executable, "-m", "tinygpt.cli", "train"]
    mpi = [find_mpiexec(), "-n", "2"]
    args = [*TINY, "--dropout", "0.1", "--threads", "1", "--lr-decay-iters", "16"]  # one schedule
    run([*mpi, *tinygpt, *args, "--max-iters", "16", "--out", str(tmp_path / "straight")])
    run([*mpi, *tinygpt, *args, "--max-iters", "8", "--out", str(tmp_path / "stopped")])
    run([*mpi, *tinygpt, "--resume", "--out", str(tmp_path / "stopped"), "--max-iters", "16",
         "--quiet"])
    wa = load_safetensors(ckpt.list_checkpoints(tmp_path / "straight")[-1].path
                          / "model.safetensors")
    wb = load_safetensors(ckpt.list_checkpoints(tmp_path / "stopped")[-1].path
                          / "model.safetensors")
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
