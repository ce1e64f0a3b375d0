"""tinygpt/checkpoint.py: a training run never loses work. Atomic checkpoints, kills at every
step of a save, damaged files named, the best and the latest checkpoint kept and found, a
checkpoint pruned while it is read, one writer per run; damage (a missing manifest, a damaged
best, an edited config.json) said and set aside without costing a good checkpoint, a save on a
full disk, and a run whose data moved.

The kill tests run `tinygpt train` in a real subprocess and kill it with SIGKILL, at each step
of the save sequence (the TINYGPT_TEST_KILL_AT hook in tinygpt/checkpoint.py) and between
training steps (from the loop's on_iter callback); then they check that the last complete
checkpoint loads and that a resumed run ends with exactly the weights of a run that was never
interrupted.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tinygpt import checkpoint as ckpt
from tinygpt.cli.train import train_cmd
from tinygpt.train import TrainOptions, train

from helpers import reseal, load_run, TINY, assert_same_weights, final_weights, quiet, run_tiny, tiny_args, tiny_gpt


@pytest.fixture(scope="module")
def reference(tiny_run):
    """An uninterrupted TINY run: what every interrupted-and-resumed run must end at."""
    return final_weights(tiny_run(**TINY))


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
        argv = ["-m", "tinygpt.cli", *tiny_args(out)]
        env = {**os.environ, "TINYGPT_TEST_KILL_AT": kill_at}
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
# Saving and loading one checkpoint
# ----------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    model = tiny_gpt()
    tok = CharTokenizer.from_text("abcdefghijk")
    config = {"model": model.config.to_dict(), "tokenizer": tok.to_dict(), "iteration": 7}
    ckpt.save_checkpoint(tmp_path, model, config)
    loaded, tok2, cfg = load_run(tmp_path)
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(loaded(idx)[0].data, model(idx)[0].data)
    assert tok2.decode(tok2.encode("abc")) == "abc" and cfg["iteration"] == 7
    assert not list(tmp_path.glob("*.tmp*")), "no temp files left behind"


def _saved(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    model = tiny_gpt()
    config = {"model": model.config.to_dict(),
              "tokenizer": CharTokenizer.from_text("abcdefghijk").to_dict(), "iteration": 3}
    return ckpt.save_checkpoint(tmp_path, model, config)     # the checkpoint's directory


def test_a_checkpoint_without_its_manifest_is_incomplete(tmp_path):
    d = _saved(tmp_path)
    (d / "manifest.json").unlink()           # the manifest is written last: a save cut short
    with pytest.raises(ckpt.CheckpointError, match="no manifest.json"):
        load_run(d)


def test_missing_checkpoint_names_the_directory(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="nothing"):
        load_run(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------
# Damaged files
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("manifest", ["checked", "resealed"])
def test_truncated_weights_name_the_file(tmp_path, manifest):
    d = _saved(tmp_path)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    if manifest == "resealed":            # past the manifest: the file's own checks catch it
        reseal(d)
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        load_run(d)


@pytest.mark.parametrize("manifest", ["checked", "resealed"])
def test_corrupt_config_names_the_file(tmp_path, manifest):
    d = _saved(tmp_path)
    (d / "config.json").write_text("{not json")
    if manifest == "resealed":
        reseal(d)
    with pytest.raises(ckpt.CheckpointError, match="config.json"):
        load_run(d)


def test_wrong_shapes_in_checkpoint_are_named(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["n_embd"] = 12
    (d / "config.json").write_text(json.dumps(cfg))
    reseal(d)
    with pytest.raises(ckpt.CheckpointError, match="wte.weight"):
        load_run(d)


def test_mixed_iterations_are_detected(tmp_path):
    d = _saved(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["iteration"] = 99          # as if a crash left config.json from a later save
    (d / "config.json").write_text(json.dumps(cfg))
    reseal(d)
    with pytest.raises(ckpt.CheckpointError, match="different saves"):
        load_run(d)


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


def test_a_manifest_without_its_own_checksum_or_with_it_renamed_is_damaged(tmp_path):
    out, manifest = _one_checkpoint(tmp_path)
    m = json.loads(manifest.read_text())
    own = m.pop("manifest_sha256")
    manifest.write_text(json.dumps(m))
    with pytest.raises(ckpt.CheckpointError, match=r"manifest\.json is damaged"):
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


# ----------------------------------------------------------------------------------------------
# Which checkpoints a run keeps, and which one is loaded
# ----------------------------------------------------------------------------------------------
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
# One writer per run
# ----------------------------------------------------------------------------------------------
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
# Damage is said, and never costs a good checkpoint
# ----------------------------------------------------------------------------------------------
def _stopped_at_6(out):
    """TINY stopped by Ctrl-C at iteration 6: (its best checkpoint, the one Ctrl-C saved at 6,
    which has no val loss)."""
    def ctrl_c_at_6(it, stop, model):
        if it == 6:
            stop.requested = True
    train(TrainOptions(**{**TINY, "out": str(out)}), progress=False, log=quiet,
          on_iter=ctrl_c_at_6)
    best, newest = [c.path for c in ckpt.list_checkpoints(out)]
    assert newest.name == "ckpt-0000006" and best.name in ("ckpt-0000000", "ckpt-0000004")
    return best, newest


def _set_val_loss(ckpt_dir, val_loss):
    """Give a checkpoint another val loss, re-sealed (so it is a good checkpoint that prune and
    `best` rank by this value): a test's way to decide which checkpoint is the best."""
    path = ckpt_dir / ckpt.CONFIG_FILE
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "val_loss": val_loss}))
    reseal(ckpt_dir)


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _ckpt_dirs(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt-"))


@pytest.mark.parametrize("which", ["latest", "best"])
def test_a_checkpoint_without_its_manifest_is_reported_and_set_aside(tmp_path, which):
    from tinygpt.cli import main
    out = tmp_path / "run"
    best, newest = _stopped_at_6(out)
    broken, other = (newest, best) if which == "latest" else (best, newest)
    (broken / ckpt.MANIFEST_FILE).unlink()
    # loading says which checkpoint, what is wrong with it, and what is loaded instead
    warnings = []
    _, _, config = load_run(out, which=which, log=warnings.append)
    assert config["checkpoint_dir"] == str(other)
    assert len(warnings) == 1, warnings
    assert str(broken) in warnings[0] and "manifest.json" in warnings[0]
    assert f"using {other}" in warnings[0]
    r = CliRunner().invoke(main, ["sample", "--model", str(out), "--checkpoint", which,
                                  "--max-new-tokens", "2"])
    assert r.exit_code == 0 and str(broken) in r.output and "manifest.json" in r.output, r.output
    # a resume sets it aside, visibly, and no manifest-less ckpt-* stays in the run
    lines = []
    train(TrainOptions(out=str(out)), resume=True, progress=False, log=lines.append, given=set())
    assert any(str(broken) in line and "damaged" in line for line in lines), lines
    assert (out / f"damaged-{broken.name}").is_dir()
    assert all((out / name / ckpt.MANIFEST_FILE).exists() for name in _ckpt_dirs(out))
    warnings = []
    for which in ("best", "latest"):
        load_run(out, which=which, log=warnings.append)
    assert warnings == []


def test_a_damaged_best_is_set_aside_and_the_good_ones_are_kept(tmp_path):
    """The best checkpoint damaged, the latest good: a resume must keep the best good checkpoint,
    never a damaged one in its place (which every later `sample` would warn about)."""
    out = tmp_path / "run"
    best, newest = _stopped_at_6(out)
    _set_val_loss(best, 0.0)               # the best, whatever the next evaluations give
    _set_val_loss(newest, 1e-3)            # the best good one once `best` is damaged
    _flip_a_byte(best / ckpt.MODEL_FILE)
    lines = []
    train(TrainOptions(out=str(out)), resume=True, progress=False, log=lines.append, given=set())
    assert any(str(best) in line and "damaged" in line for line in lines), lines
    assert (out / f"damaged-{best.name}").is_dir()
    assert _ckpt_dirs(out) == [newest.name, f"ckpt-{TINY['max_iters']:07d}"]
    warnings = []
    _, _, config = load_run(out, which="best", log=warnings.append)
    assert warnings == [] and config["checkpoint_dir"] == str(newest)


def test_prune_chooses_the_best_among_checkpoints_that_verify(tmp_path):
    """Damage found while a run saves (not on a resume): the damaged best is set aside, and the
    best good checkpoint is kept in its place."""
    out = tmp_path / "run"
    best, newest = _stopped_at_6(out)
    _set_val_loss(best, 0.0)
    _set_val_loss(newest, 1e-3)
    _flip_a_byte(best / ckpt.OPTIM_FILE)
    new = ckpt.save_checkpoint(out, tiny_gpt(), {**json.loads((newest / ckpt.CONFIG_FILE)
                                                               .read_text()),
                                                 "iteration": 7, "val_loss": 5.0})
    assert _ckpt_dirs(out) == [newest.name, new.name]
    assert (out / f"damaged-{best.name}").is_dir()


def test_a_hand_edited_config_names_the_file_and_says_the_weights_are_intact(tmp_path):
    out, _ = _one_checkpoint(tmp_path)
    path = ckpt.list_checkpoints(out)[-1].path
    config = json.loads((path / ckpt.CONFIG_FILE).read_text())
    config["train"]["lr"] = 3e-4                        # an edit, still a valid config
    (path / ckpt.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    for run in (lambda: load_run(out, which="latest"),
                lambda: run_tiny(out, resume=True, max_iters=8)):
        with pytest.raises(ckpt.CheckpointError) as e:
            run()
        message = str(e.value)
        assert str(path / ckpt.CONFIG_FILE) in message and "edit" in message
        assert "model.safetensors" in message and "intact" in message
        assert "new run" not in message            # the weights are there: no need to start over
        assert "--resume --lr" in message          # the way to change a resumed run's options
    # a damaged weights file, by contrast: nothing is intact, a backup or a new run it is
    (path / ckpt.CONFIG_FILE).write_text(json.dumps(config))
    reseal(path)
    _flip_a_byte(path / ckpt.MODEL_FILE)
    with pytest.raises(ckpt.CheckpointError) as e:
        load_run(out, which="latest")
    message = str(e.value)
    assert str(path / ckpt.MODEL_FILE) in message and "intact" not in message
    assert "new run" in message and "backup" in message




# ----------------------------------------------------------------------------------------------
# A run still going, a full disk
# ----------------------------------------------------------------------------------------------
def test_a_fresh_train_into_a_running_run_names_the_running_process(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, max_iters=4)
    with ckpt.RunLock(out):                       # as if a `train` were still writing there
        r = CliRunner().invoke(train_cmd, tiny_args(out)[1:])
    assert r.exit_code == 1 and f"PID {os.getpid()}" in r.output, r.output
    assert "Continue it with" not in r.output     # --resume would be refused by the same lock
    # before its first checkpoint, too: a run going is not "a run stopped before its first save"
    early = tmp_path / "early"
    early.mkdir()
    (early / ckpt.METRICS_FILE).write_text("iter,train_loss,val_loss,lr,tokens_per_sec,elapsed_s\n")
    with ckpt.RunLock(early):
        r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(early)])
    assert r.exit_code == 1 and f"PID {os.getpid()}" in r.output, r.output


def test_a_save_on_a_full_disk_cleans_up_and_says_what_it_needs(tmp_path, monkeypatch):
    import errno
    import shutil
    out = tmp_path / "run"
    run_tiny(out, max_iters=4, eval_interval=4)
    before = {c.path.name for c in ckpt.list_checkpoints(out)}
    need = sum(f.stat().st_size for f in ckpt.list_checkpoints(out)[-1].path.iterdir())
    real = ckpt.save_safetensors
    def full_disk(path, tensors, metadata=None):
        if path.name == ckpt.OPTIM_FILE:          # the model is written, then the disk is full
            with open(path, "wb") as f:
                f.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, tensors, metadata)
    monkeypatch.setattr(ckpt, "save_safetensors", full_disk)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ckpt.shutil, "disk_usage",
                        lambda p: usage._replace(free=12_345))
    with pytest.raises(ckpt.CheckpointError) as e:
        run_tiny(out, resume=True, max_iters=8)
    message = str(e.value)
    assert str(out) in message and "12,345 bytes free" in message
    stated = int(message.split("needs about ")[1].split(" bytes")[0].replace(",", ""))
    assert need <= stated <= need + 65536
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "a .partial was left"
    assert {c.path.name for c in ckpt.list_checkpoints(out)} == before
    load_run(out, which="latest")                 # the last checkpoint is as it was


# ----------------------------------------------------------------------------------------------
# The same data at a new path
# ----------------------------------------------------------------------------------------------
def test_a_moved_dataset_resumes_with_data_at_its_new_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    text = "abcdefgh " * 400
    (tmp_path / "a" / "text.txt").write_text(text)
    out = tmp_path / "run"
    run_tiny(out, max_iters=4, data=tmp_path / "a" / "text.txt")
    (tmp_path / "a" / "text.txt").rename(tmp_path / "b" / "text.txt")
    # the stored path is gone: say that --data gives the new one
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--max-iters", "8"])
    assert r.exit_code == 1 and "--data NEW_PATH" in r.output and "moved" in r.output, r.output
    # other bytes at the new path: refused, saying that they are not the run's data
    (tmp_path / "c.txt").write_text(text.replace("h", "H"))
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--max-iters", "8",
                                       "--data", str(tmp_path / "c.txt")])
    assert r.exit_code == 1 and "SHA-256" in r.output and "cannot change" not in r.output
    # the same bytes at the new path: the same run, continued, the new path recorded
    r = CliRunner().invoke(train_cmd, ["--resume", "--out", str(out), "--max-iters", "8",
                                       "--data", str(tmp_path / "b" / "text.txt"), "--quiet"])
    assert r.exit_code == 0, r.output
    config = ckpt.find_checkpoint(out, "latest")[1]
    assert config["iteration"] == 8 and config["train"]["data"] == str(tmp_path / "b" / "text.txt")
    run_tiny(tmp_path / "ref", max_iters=8, lr_decay_iters=4,     # the decay the run began with
             data=tmp_path / "b" / "text.txt")
    assert_same_weights(final_weights(out), final_weights(tmp_path / "ref"))
