"""Ctrl-C, pressed twice (or three times) in quick succession, at many moments of a real run.

Each test runs `tinygpt train` in a child process and sends it real SIGINTs from a thread of
that process, at a chosen moment: inside a training step (its forward, its backward), inside
the weight update, inside an evaluation, inside a save, or a random time after a save. After
the child exits, the last complete checkpoint must load, `--resume` must continue, and the
resumed run must end bit for bit where an uninterrupted run ends, with the same evaluations in
metrics.csv. The oracle is that uninterrupted run (the `reference` fixtures).
"""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import TINY, assert_same_weights, final_weights, load_run, tiny_args
from tinygpt.train import TrainOptions, train

# The child: hook one function so that its n-th call (where the condition holds) starts a
# thread that sends `presses` SIGINTs `gap` seconds apart to this process, then run the CLI.
CHILD = r"""
import faulthandler, os, random, signal, sys, threading, time
faulthandler.dump_traceback_later(120, exit=True)     # a hang shows where, then fails the test
where, nth, presses, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
import tensor, tinygpt.checkpoint, tinygpt.model
from tensor import optim

def press(delay=0.0):
    def go():
        time.sleep(delay)
        for k in range(presses):
            if k:
                time.sleep(gap)
            os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=go, daemon=True).start()

calls = [0]
def hook(owner, name, when=lambda *a, **k: True, after=False):
    original = getattr(owner, name)
    def wrapper(*a, **k):
        hit = False
        if when(*a, **k):
            calls[0] += 1
            hit = calls[0] == nth
        if hit and not after:
            press()
        out = original(*a, **k)
        if hit and after:            # a random moment after the n-th save, seeded by nth
            press(random.Random(nth).uniform(0.0, 0.25))
        return out
    setattr(owner, name, wrapper)

if where == "step":
    hook(tinygpt.model.GPT, "forward", lambda self, *a, **k: self.training)
elif where == "backward":
    hook(tensor.Tensor, "backward")
elif where == "update":
    hook(optim.AdamW, "step")
elif where == "eval":
    hook(tinygpt.model.GPT, "forward", lambda self, *a, **k: not self.training)
elif where == "save":
    hook(tinygpt.checkpoint, "save_safetensors")
elif where == "json":                 # rng.json, config.json, manifest.json of a save
    hook(tinygpt.checkpoint, "atomic_write_json")
elif where == "after-save":
    hook(tinygpt.checkpoint, "save_checkpoint", after=True)
from tinygpt.cli import main
main(sys.argv[5:], prog_name="tinygpt")
"""

LONG = dict(TINY, max_iters=40, eval_interval=8)     # for presses at random moments


def press_during(out, where, nth, presses=2, gap=0.05, **options):
    args = tiny_args(out, **options)
    proc = subprocess.run([sys.executable, "-c", CHILD, where, str(nth), str(presses), str(gap),
                           *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc


def evaluations(out):
    with open(out / "metrics.csv", newline="", encoding="utf-8") as f:
        return [(r["iter"], r["train_loss"], r["val_loss"]) for r in csv.DictReader(f)]


def check_resumes_to(out, proc, reference_dir):
    # the child stopped cleanly: exit 130 and the resume command, or (a press that came
    # after the last save) a finished run; never a traceback
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode in (0, 130), (proc.returncode, proc.stdout, proc.stderr[-3000:])
    if proc.returncode == 130:
        assert f"tinygpt train --resume --out {out}" in proc.stdout + proc.stderr
    model, tok, _ = load_run(out, which="latest")          # the last complete checkpoint loads
    logits, _ = model(np.array([tok.encode("ab")]))
    assert np.isfinite(logits.data).all()
    train(TrainOptions(out=str(out)), resume=True, progress=False, log=lambda *a: None,
          given=set())
    assert_same_weights(final_weights(out), final_weights(reference_dir))
    assert evaluations(out) == evaluations(reference_dir)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    from helpers import run_tiny
    return run_tiny(tmp_path_factory.mktemp("ref") / "run")


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    from helpers import run_tiny
    return run_tiny(tmp_path_factory.mktemp("ref") / "run", **LONG)


# TINY: 12 steps, evaluated (4 forwards) and saved (2 safetensors, 3 JSON files) at 0, 4, 8, 12
MOMENTS = [("step", 1), ("step", 3), ("step", 6), ("step", 11), ("backward", 5),
           ("backward", 9), ("update", 2), ("update", 8), ("eval", 1), ("eval", 3),
           ("eval", 6), ("eval", 10), ("save", 1), ("save", 2), ("save", 4), ("save", 5),
           ("json", 2), ("json", 3), ("json", 6)]


@pytest.mark.parametrize("where, nth", MOMENTS, ids=[f"{w}-{n}" for w, n in MOMENTS])
def test_two_presses_lose_nothing(tmp_path, reference_run, where, nth):
    out = tmp_path / "run"
    proc = press_during(out, where, nth)
    check_resumes_to(out, proc, reference_run)


@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_two_presses_at_a_random_moment_lose_nothing(tmp_path, long_reference, nth):
    out = tmp_path / "run"
    proc = press_during(out, "after-save", nth, **LONG)
    check_resumes_to(out, proc, long_reference)


@pytest.mark.parametrize("where, nth", [("step", 6), ("save", 2), ("save", 4), ("eval", 6)])
def test_a_third_press_stops_at_once_and_the_last_checkpoint_survives(tmp_path, reference_run,
                                                                       where, nth):
    out = tmp_path / "run"
    proc = press_during(out, where, nth, presses=3, gap=0.0)
    if "no checkpoint was complete yet: start the run again" in proc.stdout:
        # stopped inside the first save: nothing to resume, and the same command starts over
        assert proc.returncode == 130 and "Traceback" not in proc.stderr
        from helpers import run_tiny
        run_tiny(out)
        assert_same_weights(final_weights(out), final_weights(reference_run))
        return
    check_resumes_to(out, proc, reference_run)


def test_a_press_inside_a_step_does_not_wait_for_the_step(tmp_path):
    """With --grad-accum 10**20 a step never ends: Ctrl-C must still stop the run (the step is
    dropped) and keep the checkpoint of iteration 0, without drawing 10**20 micro-batches."""
    out = tmp_path / "run"
    proc = press_during(out, "step", 3, grad_accum=10**20, max_iters=2)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "interrupted: checkpoint saved at iteration 0" in proc.stdout
    assert load_run(out, which="latest")[2]["iteration"] == 0


def test_a_press_while_the_command_starts_exits_quietly():
    """Ctrl-C while Python still imports the commands (the first half second) printed a
    KeyboardInterrupt traceback from inside an import. The `tinygpt` entry point catches it:
    exit 130, one word, no traceback. The child presses while `tinygpt.cli` is being imported."""
    code = ("import builtins, os, signal, sys, time\n"
            "real = builtins.__import__\n"
            "def importing(name, *a, **k):\n"
            "    if name == 'tinygpt.cli':\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "        time.sleep(2)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = importing\n"
            "from tinygpt.__main__ import run\n"
            "sys.argv = ['tinygpt', '--help']\n"
            "run()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert proc.stderr.strip() == "interrupted" and proc.stdout == ""
