"""A training run never loses work: atomic checkpoints, kills at every step of a save, damaged
files, resume that keeps the plan, one writer per run, and clear errors for bad options.

The kill tests run `tinygpt train` in a real subprocess and kill it with SIGKILL, at each step
of the save sequence (the TINYGPT_TEST_KILL_AT hook in tinygpt/checkpoint.py) and between
training steps; then they check that the last complete checkpoint loads and that a resumed run
ends with exactly the weights of a run that was never interrupted.
"""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tensor.io import load_safetensors
from tinygpt import checkpoint as ckpt
from tinygpt.cli.train import train_cmd
from tinygpt.progress import Progress
from tinygpt.train import TrainOptions, resume_options, train
from run_helpers import load_run

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=12,
            eval_interval=4, eval_iters=2, warmup_iters=2, dropout=0.1)


def tiny_args(out, **kw):
    """The command line of a TINY run."""
    args = []
    for k, v in {**TINY, **kw}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return ["train", *args, "--out", str(out), "--quiet"]


def quiet(*_):
    pass


def run_tiny(out, resume=False, **kw):
    opts = TrainOptions(**{**TINY, **kw, "out": str(out)})
    return train(opts, resume=resume, progress=False, log=quiet, given=set(kw) if resume else None)


def final_weights(out):
    return load_safetensors(ckpt.list_checkpoints(out)[-1].path / ckpt.MODEL_FILE)


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def snapshot(d: Path) -> dict:
    """Every file under d with its bytes (to prove a refused command touched nothing)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted TINY run: what every interrupted-and-resumed run must end at."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_tiny(out)
    return final_weights(out)


# ----------------------------------------------------------------------------------------------
# Kills
# ----------------------------------------------------------------------------------------------
def spawn_killed(out, kill_at):
    """Run TINY in a child process and SIGKILL it: at a step of a save (kill_at "<save>:<step>",
    checkpoint.py's TINYGPT_TEST_KILL_AT), or before training step n ("iter:n", from the
    training loop's public on_iter callback)."""
    if kill_at.startswith("iter:"):
        code = ("import os, signal, sys\n"
                "from tinygpt.train import TrainOptions, train\n"
                "def kill(it, stop, model):\n"
                f"    if it == {int(kill_at[5:])}:\n"
                "        os.kill(os.getpid(), signal.SIGKILL)\n"
                f"train(TrainOptions(**{TINY!r}, out=sys.argv[1]), progress=False, on_iter=kill)\n")
        argv, env = ["-c", code, str(out)], dict(os.environ)
    else:
        argv, env = ["-m", "tinygpt.cli", *tiny_args(out)], {**os.environ, "TINYGPT_TEST_KILL_AT": kill_at}
    proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("kill_at", [f"2:{step}" for step in ckpt.SAVE_STEPS] +
                                    [f"3:{step}" for step in ("model", "rename", "prune")] +
                                    ["iter:6"])
def test_kill_anywhere_loses_nothing(tmp_path, reference, kill_at):
    out = tmp_path / "run"
    spawn_killed(out, kill_at)
    # what sample and generate load: the best and the latest complete checkpoint
    for which in ("best", "latest"):
        model, tok, config = load_run(out, which=which)
        logits, _ = model(np.array([tok.encode("ab")]))
        assert np.isfinite(logits.data).all()
    # resume from it: the debris of the killed save is cleaned, the run ends as if never killed
    lines = []
    train(TrainOptions(out=str(out)), resume=True, progress=False, log=lines.append, given=set())
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "stale temporary files"
    assert_same_weights(final_weights(out), reference)
    assert ckpt.find_checkpoint(out, "latest")[1]["iteration"] == TINY["max_iters"]


def test_kill_in_the_first_save_can_start_over(tmp_path, reference):
    out = tmp_path / "run"
    spawn_killed(out, "1:optimizer")
    with pytest.raises(ckpt.CheckpointError, match="before its first checkpoint"):
        run_tiny(out, resume=True)
    run_tiny(out)                          # nothing to lose: a fresh run may start over it
    assert_same_weights(final_weights(out), reference)


def test_timed_sigkill_then_resume(tmp_path):
    """A kill from outside at an arbitrary moment (not a hook), while training and saving."""
    import random
    out, rng = tmp_path / "run", random.Random(0)
    proc = subprocess.Popen([sys.executable, "-m", "tinygpt.cli",
                             *tiny_args(out, max_iters=60, eval_interval=2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.list_checkpoints(out) and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.4))       # somewhere in the steps and saves that follow
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_tiny(out, resume=True, max_iters=60, eval_interval=2)
    run_tiny(tmp_path / "ref", max_iters=60, eval_interval=2)
    assert_same_weights(final_weights(out), final_weights(tmp_path / "ref"))


# ----------------------------------------------------------------------------------------------
# Damaged files
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.OPTIM_FILE, ckpt.RNG_FILE,
                                  ckpt.CONFIG_FILE, ckpt.MANIFEST_FILE])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_anywhere_is_detected_and_named(tmp_path, name, where):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4, eval_interval=4)
    path = ckpt.list_checkpoints(out)[-1].path
    for c in ckpt.list_checkpoints(out)[:-1]:
        ckpt._remove_dir(c.path)                # only one checkpoint: nothing to fall back to
    f = path / name
    data = bytearray(f.read_bytes())
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x20
    f.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=name.replace(".", r"\.")):
        load_run(out, which="latest")
    with pytest.raises(ckpt.CheckpointError, match=name.replace(".", r"\.")):
        run_tiny(out, resume=True, max_iters=8)


def _one_checkpoint(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4, eval_interval=4)
    for c in ckpt.list_checkpoints(out)[:-1]:
        ckpt._remove_dir(c.path)
    return out, ckpt.list_checkpoints(out)[-1].path / ckpt.MANIFEST_FILE


def test_a_changed_checksum_in_the_manifest_blames_the_manifest(tmp_path):
    """A flipped bit that turns a hex digit of a file's SHA-256 upper-case keeps the manifest
    valid JSON; the manifest's own checksum names it, not the file whose entry it hit."""
    out, manifest = _one_checkpoint(tmp_path)
    text = manifest.read_text()
    entry = json.loads(text)["files"][ckpt.MODEL_FILE]["sha256"]
    i = next(i for i, ch in enumerate(entry) if ch in "abcdef")
    manifest.write_text(text.replace(entry, entry[:i] + entry[i].upper() + entry[i + 1:]))
    with pytest.raises(ckpt.CheckpointError, match=r"manifest\.json is damaged"):
        load_run(out, which="latest")


def test_a_manifest_without_its_own_checksum_still_loads_and_a_renamed_one_does_not(tmp_path):
    out, manifest = _one_checkpoint(tmp_path)
    m = json.loads(manifest.read_text())
    own = m.pop("manifest_sha256")
    manifest.write_text(json.dumps(m))               # as tinygpt wrote it before the field
    load_run(out, which="latest")
    manifest.write_text(json.dumps({**m, "manifest_sha256".upper(): own}))
    with pytest.raises(ckpt.CheckpointError, match=r"manifest\.json is damaged"):
        load_run(out, which="latest")


def test_a_model_file_gone_between_the_check_and_the_open_is_a_checkpoint_error(tmp_path,
                                                                              monkeypatch):
    """Pruned by a training process after the manifest was checked: the open itself fails.
    That is a CheckpointError naming the file (so load_model can look again), not a raw
    FileNotFoundError."""
    out, _ = _one_checkpoint(tmp_path)
    def gone(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))
    monkeypatch.setattr(ckpt, "open_safetensors", gone)
    for weight_dtype in ("float32", "int8"):
        with pytest.raises(ckpt.CheckpointError, match=r"checkpoint file missing: .*model\.safetensors"):
            load_run(out, which="latest", weight_dtype=weight_dtype)


def test_a_damaged_latest_falls_back_to_the_previous_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    def ctrl_c_at_6(it, stop, model):
        if it == 6:
            stop.requested = True
    train(TrainOptions(**{**TINY, "out": str(out)}), progress=False, log=quiet,
          on_iter=ctrl_c_at_6)
    ckpts = ckpt.list_checkpoints(out)
    assert [c.iteration for c in ckpts][-1] == 6 and len(ckpts) == 2   # the best and Ctrl-C's
    newest = ckpts[-1].path
    f = newest / ckpt.MODEL_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    warnings = []
    _, _, config = load_run(out, which="latest", log=warnings.append)
    assert str(newest / ckpt.MODEL_FILE) in warnings[0] and "damaged" in warnings[0]
    assert config["checkpoint_dir"] == str(ckpts[-2].path)
    lines = []
    train(TrainOptions(out=str(out)), resume=True, progress=False, log=lines.append, given=set())
    assert any("damaged" in line for line in lines)
    assert (out / f"damaged-{newest.name}").is_dir()       # set aside, not deleted
    assert ckpt.find_checkpoint(out, "latest")[1]["iteration"] == TINY["max_iters"]


def test_best_and_latest_are_both_kept_and_chosen(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=12, eval_interval=4)
    rows = [r.split(",") for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    best_iter = min(rows, key=lambda r: float(r[2]))[0]
    _, _, best = load_run(out, which="best")
    _, _, latest = load_run(out, which="latest")
    assert best["iteration"] == int(best_iter) and latest["iteration"] == 12
    assert "best" in best["source"] and "latest" in latest["source"]
    names = {p.name for p in out.iterdir() if p.name.startswith("ckpt-")}
    assert names == {f"ckpt-{best['iteration']:07d}", "ckpt-0000012"}


@pytest.mark.parametrize("when", ["verify", "read"])
def test_a_checkpoint_pruned_while_it_is_read_is_not_an_error(tmp_path, monkeypatch, when):
    # `sample` reads the latest checkpoint while `train` saves a newer one and prunes it: the
    # reader looks again and loads the new latest, with no "damaged" warning
    out = tmp_path / "run"
    run_tiny(out, max_iters=8, eval_interval=4)
    first = ckpt.find_checkpoint(out, "latest")[0]
    name = {"verify": "verify", "read": "_open_checked"}[when]      # the check, the read
    real = getattr(ckpt, name)
    def racing(path, *args):
        monkeypatch.setattr(ckpt, name, real)                      # once
        run_tiny(out, resume=True, max_iters=12)                   # saves ckpt 12, and
        if first.path.exists():                                    # prunes 8 unless it is the
            ckpt._remove_dir(first.path)                           # best: then as prune would
        return real(path, *args)
    monkeypatch.setattr(ckpt, name, racing)
    lines = []
    _, _, config = load_run(out, which="latest", log=lines.append)
    assert config["iteration"] == 12 and lines == []


# ----------------------------------------------------------------------------------------------
# Fresh runs never overwrite; one writer per run
# ----------------------------------------------------------------------------------------------
def test_a_fresh_run_refuses_an_existing_run_and_touches_nothing(tmp_path):
    out = tmp_path / "keep"
    run_tiny(out, max_iters=4)
    before = snapshot(out)
    r = CliRunner().invoke(train_cmd, tiny_args(out)[1:] + ["--max-iters", "5"])
    assert r.exit_code == 1 and "--resume" in r.output and "--overwrite" in r.output
    assert snapshot(out) == before


@pytest.mark.parametrize("content", ["hf", "other"])
def test_a_fresh_run_refuses_any_non_empty_directory(tmp_path, content):
    out = tmp_path / "dir"
    out.mkdir()
    (out / ("config.json" if content == "hf" else "notes.txt")).write_text("{}")
    before = snapshot(out)
    r = CliRunner().invoke(train_cmd, tiny_args(out)[1:])
    assert r.exit_code == 1 and "already holds" in r.output
    assert snapshot(out) == before


def test_overwrite_replaces_the_run_only_after_the_model_is_built(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4)
    before = snapshot(out)
    r = CliRunner().invoke(train_cmd, tiny_args(out, block_size=100_000)[1:] + ["--overwrite"])
    assert r.exit_code == 1 and "GiB" in r.output                    # refused: memory
    assert snapshot(out) == before                                   # metrics.csv untouched
    (out / "notes.txt").write_text("mine")
    r = CliRunner().invoke(train_cmd, tiny_args(out, max_iters=8)[1:] + ["--overwrite"])
    assert r.exit_code == 0, r.output
    assert ckpt.find_checkpoint(out, "latest")[1]["iteration"] == 8
    assert (out / "notes.txt").read_text() == "mine"                 # not ours: left alone


def test_threads_are_this_process_s_own_on_resume():
    # a run started with --threads 2 resumes on "auto" (None) unless --threads is given again,
    # and neither is reported as a change of plan
    saved = asdict(TrainOptions(threads=2, max_iters=8))
    opts, changes = resume_options(saved, TrainOptions(out="o", max_iters=8), set())
    assert opts.threads is None and changes == []
    opts, changes = resume_options(saved, TrainOptions(out="o", threads=1), {"threads"})
    assert opts.threads == 1 and changes == []


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4)
    with ckpt.RunLock(out):
        r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--max-iters", "8"])
    assert r.exit_code == 1 and f"PID {os.getpid()}" in r.output
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--max-iters", "8",
                                       "--quiet"])
    assert r.exit_code == 0, r.output                                # the lock was released


# ----------------------------------------------------------------------------------------------
# Resume keeps the plan
# ----------------------------------------------------------------------------------------------
def test_resume_keeps_the_saved_plan(tmp_path):
    out = tmp_path / "run"
    def ctrl_c_at_5(it, stop, model):
        if it == 5:
            stop.requested = True
    train(TrainOptions(**{**TINY, "max_iters": 30, "out": str(out)}), progress=False, log=quiet,
          on_iter=ctrl_c_at_5)
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "toward iteration 30" in r.output
    config = ckpt.find_checkpoint(out, "latest")[1]
    assert config["iteration"] == 30 and config["train"]["max_iters"] == 30


def test_resume_applies_a_changed_lr_and_refuses_a_changed_architecture(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4)
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--n-layer", "2"])
    assert r.exit_code == 1 and "--n-layer 2" in r.output and "the run has 1" in r.output
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--batch-size", "8"])
    assert r.exit_code == 1 and "--batch-size" in r.output
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--n-layer", "1",
                                       "--lr", "5e-4", "--max-iters", "8", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "--lr 0.001 -> 0.0005" in r.output and "--max-iters 4 -> 8" in r.output
    config = ckpt.find_checkpoint(out, "latest")[1]
    assert config["train"]["lr"] == 5e-4 and config["iteration"] == 8
    assert config["resumes"][-1]["changed"][:2] == ["--lr 0.001 -> 0.0005",
                                                     "--max-iters 4 -> 8"]


def test_resume_to_an_earlier_iteration_is_an_error(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=8)
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--max-iters", "4"])
    assert r.exit_code == 1 and "iteration 8" in r.output and "--max-iters 4" in r.output


def test_data_is_stored_absolute_and_checked_on_resume(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "text.txt").write_text("abcdefgh " * 400)
    monkeypatch.chdir(tmp_path / "a")
    out = tmp_path / "run"
    run_tiny(out, max_iters=4, data="text.txt")
    monkeypatch.chdir(tmp_path)                                      # resume from elsewhere
    run_tiny(out, resume=True, max_iters=8)
    assert ckpt.find_checkpoint(out, "latest")[1]["train"]["data"] == \
        str(tmp_path / "a" / "text.txt")
    (tmp_path / "a" / "text.txt").write_text("abcdefgX " * 400)
    with pytest.raises(ValueError, match="changed since this run started"):
        run_tiny(out, resume=True, max_iters=12)


def test_nan_advice_can_be_followed(tmp_path):
    """The non-finite-loss error says to resume with a lower --lr: that must work."""
    from tinygpt.train import NonFiniteLoss
    out = tmp_path / "run"
    def poison(it, stop, model):
        if it == 6:
            model.wte.weight.data[:] = np.nan
    with pytest.raises(NonFiniteLoss, match="--resume") as e:
        train(TrainOptions(**{**TINY, "out": str(out)}), progress=False, log=quiet, on_iter=poison)
    assert "--lr" in str(e.value)
    run_tiny(out, resume=True, lr=3e-4)
    config = ckpt.find_checkpoint(out, "latest")[1]
    assert config["iteration"] == TINY["max_iters"] and config["train"]["lr"] == 3e-4


# ----------------------------------------------------------------------------------------------
# Bad options: one line, the option named, nothing written
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, code, needle", [
    (["--lr", "inf"], 2, "--lr"),
    (["--lr", "nan"], 2, "--lr"),
    (["--weight-decay", "nan"], 2, "--weight-decay"),
    (["--grad-clip", "nan"], 2, "--grad-clip"),
    (["--dropout", "nan"], 2, "--dropout"),
    (["--seed", "-1"], 2, "--seed"),
    (["--block-size", "100000"], 1, "--block-size"),
    (["--batch-size", "100000"], 1, "--batch-size"),
    (["--n-embd", "30", "--n-head", "4"], 1, "--n-embd"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, code, needle):
    out = tmp_path / "run"
    r = CliRunner().invoke(train_cmd, ["--out", str(out), "--max-iters", "3", *args])
    assert r.exit_code == code, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_unwritable_out_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(train_cmd, ["--out", "/dev/null/x", "--max-iters", "3"])
    assert r.exit_code == 1 and "/dev/null" in r.output and "Traceback" not in r.output


def test_empty_data_names_the_file(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("")
    r = CliRunner().invoke(train_cmd, ["--out", str(tmp_path / "run"), "--data", str(f)])
    assert r.exit_code == 1 and "empty.txt" in r.output and "empty" in r.output


def test_quiet_still_prints_the_evaluations(tmp_path):
    r = CliRunner().invoke(train_cmd, tiny_args(tmp_path / "run", max_iters=4)[1:])
    assert r.exit_code == 0 and "iter 4: train loss" in r.output


# ----------------------------------------------------------------------------------------------
# The progress display
# ----------------------------------------------------------------------------------------------
def test_progress_line_fits_an_80_column_terminal():
    bar = Progress(20_000, desc="train", unit="tok", scale=768)
    bar.done = 12_345
    bar._samples = [(0.0, 12_000), (1.0, 12_345)]            # 345 it/s = 264,960 tok/s
    line = bar.line({"loss": "1.9821", "lr": "4.2e-04"}, width=79)
    assert len(line) <= 79 and "264,960 tok/s" in line and "ETA 0:22" in line


def test_progress_rate_is_current_not_average():
    bar = Progress(1000, window=5.0)
    bar._samples = [(0.0, 0)]
    for t, done in [(10.0, 100), (20.0, 200), (21.0, 400), (22.0, 600)]:   # it sped up
        bar._samples.append((t, done))
        while len(bar._samples) > 2 and t - bar._samples[0][0] > bar.window:
            bar._samples.pop(0)
    assert bar.count_rate() == pytest.approx(200.0)         # not 600 / 22


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    import io
    stream = io.StringIO()
    bar = Progress(3, desc="x", stream=stream, every=0.0)
    for i in (1, 2, 3):
        bar.update(i)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue() and lines[-1].startswith("x [")


# ----------------------------------------------------------------------------------------------
# Gradient accumulation
# ----------------------------------------------------------------------------------------------
def test_grad_accum_sums_micro_batches_into_one_larger_batch():
    """G micro-batches of B, each backward of loss / G, give the gradient of one batch of G·B
    (the same sequences): float64, to 1e-12."""
    from tinygpt.dataset import Dataset
    from tinygpt.distributed import micro_batches
    from tinygpt.model import GPT, GPTConfig
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
    model = GPT(cfg, dtype=np.float64, seed=3)
    data = Dataset.from_ids(np.random.default_rng(1).integers(0, 11, 500), block_size=8)
    G, B = 3, 2
    micro = micro_batches(np.random.default_rng(7), lambda r: data.batch("train", B, 8, r), G)
    model.zero_grad()
    for x, y in micro:
        (model(x, y)[1] * (1.0 / G)).backward()
    accumulated = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    x = np.concatenate([m[0] for m in micro])
    y = np.concatenate([m[1] for m in micro])
    model(x, y)[1].backward()
    for n, p in model.named_parameters():
        np.testing.assert_allclose(accumulated[n], p.grad, rtol=1e-12, atol=1e-15, err_msg=n)
    # and the loop draws exactly those micro-batches: one batch of G·B from the same seed
    big = data.batch("train", G * B, 8, np.random.default_rng(7))
    np.testing.assert_array_equal(big[0], x)


def test_grad_accum_trains_and_is_fixed_on_resume(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4, grad_accum=2)
    assert ckpt.find_checkpoint(out, "latest")[1]["train"]["grad_accum"] == 2
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--grad-accum", "3"])
    assert r.exit_code == 1 and "--grad-accum" in r.output


# ----------------------------------------------------------------------------------------------
# Prepared data directories (`tinygpt prepare`, or nanoGPT's layout)
# ----------------------------------------------------------------------------------------------
def test_a_prepared_directory_trains_exactly_like_its_text(tmp_path):
    from tinygpt.dataset import SHAKESPEARE, prepare
    prepare(SHAKESPEARE, tmp_path / "data", tokenizer="char")
    run_tiny(tmp_path / "text", max_iters=8, dropout=0.0)
    run_tiny(tmp_path / "prepared", max_iters=8, dropout=0.0, data=str(tmp_path / "data"))
    assert_same_weights(final_weights(tmp_path / "text"), final_weights(tmp_path / "prepared"))
    config = ckpt.find_checkpoint(tmp_path / "prepared", "latest")[1]
    assert config["train"]["data"] == str((tmp_path / "data").resolve())
    # the data may not change under a run
    (tmp_path / "data" / "val.bin").write_bytes((tmp_path / "data" / "val.bin").read_bytes()[:-2])
    with pytest.raises(ValueError):
        run_tiny(tmp_path / "prepared", resume=True, max_iters=12)


def test_a_prepared_directory_decides_the_tokenizer(tmp_path):
    from tinygpt.dataset import SHAKESPEARE, prepare
    prepare(SHAKESPEARE, tmp_path / "data", tokenizer="char")
    r = CliRunner().invoke(train_cmd, ["--data", str(tmp_path / "data"), "--tokenizer", "gpt2",
                                       "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "--tokenizer gpt2 disagrees" in r.output


def test_a_nanogpt_directory_trains_as_gpt2_ids(tmp_path):
    """nanoGPT's prepare.py writes train.bin/val.bin as uint16 GPT-2 ids and no meta.json."""
    d = tmp_path / "nanogpt"
    d.mkdir()
    ids = np.random.default_rng(0).integers(0, 50257, 4000)
    np.array(ids[:3600], dtype=np.uint16).tofile(d / "train.bin")
    np.array(ids[3600:], dtype=np.uint16).tofile(d / "val.bin")
    lines = []
    opts = TrainOptions(**{**TINY, "max_iters": 2, "eval_interval": 2, "data": str(d),
                           "out": str(tmp_path / "run")})
    train(opts, progress=False, log=lines.append)
    config = ckpt.find_checkpoint(tmp_path / "run", "latest")[1]
    assert config["tokenizer"]["type"] == "gpt2" and config["model"]["vocab_size"] == 50257
    assert any("GPT-2" in line for line in lines)          # the assumption is said out loud


def test_a_chosen_lr_is_never_exceeded_by_the_schedule(tmp_path):
    """--lr below the default --min-lr (1e-4): the floor follows the peak, the rate never rises."""
    out = tmp_path / "run"
    r = CliRunner().invoke(train_cmd, tiny_args(out, lr=3e-5, max_iters=8, eval_interval=1)[1:])
    assert r.exit_code == 0, r.output
    lrs = [float(line.split(",")[3]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert max(lrs) <= 3e-5 and ckpt.find_checkpoint(out, "latest")[1]["train"]["min_lr"] == 3e-6
    r = CliRunner().invoke(train_cmd, ["--lr", "1e-4", "--min-lr", "1e-3",
                                       "--out", str(tmp_path / "other")])
    assert r.exit_code == 1 and "--min-lr 0.001 is above --lr 0.0001" in r.output
