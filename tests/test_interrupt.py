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
    assert best(out) == best(reference_dir)


def best(out):
    """The best checkpoint's iteration and losses, as `sample` and `export` would choose it."""
    config = load_run(out, which="best")[2]
    return config["iteration"], config["val_loss"], config["best_val_loss"]


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


CLOSE = [("step", 3), ("backward", 5), ("update", 2), ("eval", 6), ("save", 4), ("json", 3)]


@pytest.mark.parametrize("where, nth", CLOSE, ids=[f"{w}-{n}" for w, n in CLOSE])
def test_two_presses_5_ms_apart_lose_nothing(tmp_path, reference_run, where, nth):
    """The same, with the second press so close that a tiny run is still saving or training
    when it comes (0.05 s apart, a tiny run has often exited by then)."""
    out = tmp_path / "run"
    proc = press_during(out, where, nth, gap=0.005)
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


# ----- in this process: a signal at an exact point, so the outcome is exact too -----------------
def _signal_inside(monkeypatch, owner, name, nth, when=lambda *a, **k: True):
    """Send this process SIGINT from inside the n-th call of owner.name (where `when` holds):
    the handler runs at the next bytecode, inside that call."""
    import signal
    original, calls = getattr(owner, name), [0]

    def wrapper(*a, **k):
        if when(*a, **k):
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), signal.SIGINT)
        return original(*a, **k)
    monkeypatch.setattr(owner, name, wrapper)


def test_a_press_inside_a_step_drops_exactly_that_step(tmp_path, monkeypatch, reference_run):
    """A press in the forward of step 6 (iteration 5) drops it: the checkpoint is iteration 5,
    with the random streams as before that step, and the resume ends on the reference. A loop
    that only stopped at the next step boundary would save iteration 6."""
    import signal
    from helpers import run_tiny
    from tinygpt.model import GPT
    before = signal.getsignal(signal.SIGINT)
    _signal_inside(monkeypatch, GPT, "forward", 6, lambda self, *a, **k: self.training)
    lines = []
    result = train(TrainOptions(**{**TINY, "out": str(tmp_path / "run")}), progress=False,
                   log=lines.append)
    assert result.interrupted and result.iterations == 5
    assert "interrupted: checkpoint saved at iteration 5" in "\n".join(lines)
    assert signal.getsignal(signal.SIGINT) is before        # the handler is put back
    monkeypatch.undo()
    run_tiny(tmp_path / "run", resume=True)
    assert_same_weights(final_weights(tmp_path / "run"), final_weights(reference_run))
    assert evaluations(tmp_path / "run") == evaluations(reference_run)


def test_a_press_inside_an_evaluation_drops_it_and_the_resume_does_it(tmp_path, monkeypatch,
                                                                      reference_run):
    """A press in the evaluation at iteration 4 saves iteration 4 without it (no metrics row, no
    val_loss); the resume evaluates 4 again, and the best checkpoint is the reference's."""
    from helpers import run_tiny
    from tinygpt.model import GPT
    _signal_inside(monkeypatch, GPT, "forward", 6, lambda self, *a, **k: not self.training)
    out = tmp_path / "run"
    result = train(TrainOptions(**{**TINY, "out": str(out)}), progress=False, log=lambda *a: None)
    assert result.interrupted and result.iterations == 4
    assert [r[0] for r in evaluations(out)] == ["0"]
    assert load_run(out, which="latest")[2]["val_loss"] is None
    monkeypatch.undo()
    run_tiny(out, resume=True)
    assert_same_weights(final_weights(out), final_weights(reference_run))
    assert evaluations(out) == evaluations(reference_run)
    assert best(out) == best(reference_run)


def test_presses_one_two_three():
    """The handler itself: the first press asks to stop (and abandons discardable work), the
    second changes nothing, the third stops at once."""
    from tinygpt.train import Discarded, _Stop
    stop = _Stop()
    with pytest.raises(Discarded), stop.discardable():
        stop._handle(2, None)
    assert stop.requested and stop.presses == 1
    stop._handle(2, None)                                  # not discardable: only counted
    assert stop.presses == 2
    with pytest.raises(KeyboardInterrupt):
        stop._handle(2, None)
    with pytest.raises(Discarded), stop.discardable():     # asked before: skipped at once
        raise AssertionError("the work should not start")
    with stop.discardable(enabled=False):                  # under MPI: never abandoned
        pass


def test_a_third_press_inside_a_save_keeps_the_last_complete_checkpoint(tmp_path, monkeypatch,
                                                                        reference_run):
    """KeyboardInterrupt (the third press) while the second checkpoint is being written: the
    save leaves no debris, the run says which checkpoint stands, and the resume ends on the
    reference."""
    from helpers import run_tiny
    from tinygpt import checkpoint as ckpt
    real, calls = ckpt.save_safetensors, []

    def third_press(path, *a, **k):
        calls.append(path)
        if len(calls) == 4:                   # the optimizer file of the second save
            raise KeyboardInterrupt
        return real(path, *a, **k)
    monkeypatch.setattr(ckpt, "save_safetensors", third_press)
    out, lines = tmp_path / "run", []
    result = train(TrainOptions(**{**TINY, "out": str(out)}), progress=False, log=lines.append)
    assert result.interrupted and result.iterations == 0
    assert any("stopped at once at iteration 4; the last complete checkpoint (iteration 0)"
               in line for line in lines)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    run_tiny(out, resume=True)
    assert_same_weights(final_weights(out), final_weights(reference_run))
    assert best(out) == best(reference_run)
