"""tinygpt/train.py: the training loop (metrics, checkpoints, Ctrl-C, non-finite loss), its data
(files, prepared directories, errors), fresh runs that never overwrite, resume that keeps the plan,
the learning-rate schedule, gradient accumulation, and fine-tuning (--init-from).

The kills of a training run, damaged checkpoints and the run lock are in test_checkpoint.py;
training over MPI in test_train_mpi.py."""
import csv
import json
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

import tensor
from tinygpt import checkpoint as ckpt
from tinygpt.cli.train import train_cmd
from tinygpt.model import GPT, GPTConfig
from tinygpt.train import NonFiniteLoss, TrainOptions, resume_options, train
from tinygpt.loading import load_model

from helpers import (load_run, RUN, TINY, TINY_GPT2, assert_same_weights, final_weights, quiet, run_tiny,
                     tiny_args, write_hf_dir)


def small(tmp_path, **kw):
    opts = dict(RUN, warmup_iters=5, out=str(tmp_path / "out"))
    opts.update(kw)
    return TrainOptions(**opts)


def rows(out):
    with open(f"{out}/metrics.csv") as f:
        return list(csv.DictReader(f))


def latest(out):
    """The directory of the run's latest checkpoint."""
    return ckpt.list_checkpoints(out)[-1].path


def config(out):
    return json.loads((latest(out) / "config.json").read_text())


def weights(out):
    from tensor.io import load_safetensors
    return load_safetensors(latest(out) / "model.safetensors")


def snapshot(d) -> dict:
    """Every file under d with its bytes (to prove a refused command touched nothing)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------
def test_train_writes_metrics_and_checkpoint(tmp_path):
    opts = small(tmp_path)
    result = train(opts, progress=False, log=lambda *a: None)
    out = opts.out
    r = rows(out)
    assert [int(row["iter"]) for row in r] == [0, 10, 20]
    assert list(r[0]) == ["iter", "train_loss", "val_loss", "lr", "tokens_per_sec", "elapsed_s"]
    assert float(r[-1]["val_loss"]) < float(r[0]["val_loss"])         # it learned something
    assert result.best_val_loss == pytest.approx(min(float(row["val_loss"]) for row in r), abs=1e-6)
    cfg = config(out)
    assert cfg["iteration"] == 20 and cfg["model"]["n_embd"] == 16
    assert cfg["tokenizer"]["type"] == "char"
    model, tok, _ = load_run(out)
    assert model.config.vocab_size == 65


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_equals_uninterrupted(tmp_path, dropout):
    full = small(tmp_path / "a", max_iters=30, dropout=dropout)
    train(full, progress=False, log=lambda *a: None)

    part = small(tmp_path / "b", max_iters=30, dropout=dropout)
    def ctrl_c_at_17(it, stop, model):
        if it == 17:
            stop.requested = True          # what the SIGINT handler does
    result = train(part, progress=False, log=lambda *a: None, on_iter=ctrl_c_at_17)
    assert result.interrupted and result.iterations == 17
    assert config(part.out)["iteration"] == 17
    train(small(tmp_path / "b", max_iters=30), resume=True, progress=False, log=lambda *a: None)

    a, b = weights(full.out), weights(part.out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ra, rb = rows(full.out), rows(part.out)
    assert [(r["iter"], r["train_loss"], r["val_loss"]) for r in ra] == \
           [(r["iter"], r["train_loss"], r["val_loss"]) for r in rb]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    opts = small(tmp_path, max_iters=30)
    def poison(it, stop, model):
        if it == 15:      # what an exploding update would leave behind
            model.wte.weight.data[:] = np.nan
    with pytest.raises(NonFiniteLoss, match="iteration 15"):
        train(opts, progress=False, log=lambda *a: None, on_iter=poison)
    assert config(opts.out)["iteration"] == 10                      # the last good save
    w = weights(opts.out)
    assert all(np.isfinite(v).all() for v in w.values())


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
# Data: text files, prepared directories (`tinygpt prepare`, or nanoGPT's layout)
# ----------------------------------------------------------------------------------------------
def test_text_too_short_is_a_clear_error(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("only a few characters")
    with pytest.raises(ValueError, match="too short"):
        train(small(tmp_path, data=str(f)), progress=False, log=lambda *a: None)


def test_custom_data_file(tmp_path):
    f = tmp_path / "abc.txt"
    f.write_text("abcabcabd" * 200)
    opts = small(tmp_path, data=str(f), max_iters=10)
    train(opts, progress=False, log=lambda *a: None)
    _, tok, _ = load_run(opts.out)
    assert tok.vocab_size == 4


def test_non_utf8_data_is_a_clear_error(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("café".encode("latin-1") * 100)
    with pytest.raises(ValueError, match="not UTF-8"):
        train(small(tmp_path, data=str(f)), progress=False, log=lambda *a: None)


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


# ----------------------------------------------------------------------------------------------
# Fresh runs never overwrite
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


# ----------------------------------------------------------------------------------------------
# Resume keeps the plan
# ----------------------------------------------------------------------------------------------
def test_resume_without_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no run to resume"):
        train(small(tmp_path), resume=True, progress=False, log=lambda *a: None)


def test_threads_are_this_process_s_own_on_resume():
    # a run started with --threads 2 resumes on "auto" (None) unless --threads is given again,
    # and neither is reported as a change of plan
    saved = asdict(TrainOptions(threads=2, max_iters=8))
    opts, changes = resume_options(saved, TrainOptions(out="o", max_iters=8), set())
    assert opts.threads is None and changes == []
    opts, changes = resume_options(saved, TrainOptions(out="o", threads=1), {"threads"})
    assert opts.threads == 1 and changes == []


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


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule
# ----------------------------------------------------------------------------------------------
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
    micro = list(micro_batches(np.random.default_rng(7), lambda r: data.batch("train", B, 8, r),
                               G))
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
# Fine-tuning (`tinygpt train --init-from`): from a Hugging Face GPT-2 directory or a training
# run, with the weights' own architecture and tokenizer; the export loads in transformers
# ----------------------------------------------------------------------------------------------
FINETUNE_TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
                 "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny GPT-2 in the Hugging Face layout (config.json + model.safetensors; the bundled
    GPT-2 tokenizer fits its 50257-row vocabulary)."""
    model = GPT(GPTConfig(**TINY_GPT2), seed=0)
    cfg = model.config
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "activation_function": "gelu_new", "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
              "n_head": cfg.n_head, "n_positions": cfg.block_size, "vocab_size": cfg.vocab_size,
              "layer_norm_epsilon": 1e-05}
    return write_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-gpt2", model,
                        tensors=dict(model.state_dict()), config=config)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("data") / "citizens.txt"
    f.write_text(FINETUNE_TEXT)
    return f


def finetune(out, hf_dir, text_file, *extra):
    return CliRunner().invoke(train_cmd, [
        "--init-from", str(hf_dir), "--data", str(text_file), "--out", str(out),
        "--batch-size", "4", "--block-size", "16", "--max-iters", "30", "--eval-interval", "10",
        "--eval-iters", "4", "--lr", "3e-3", "--warmup-iters", "2", "--quiet", *extra])


def test_finetune_lowers_val_loss_and_records_where_it_started(tmp_path, hf_dir, text_file):
    out = tmp_path / "run"
    r = finetune(out, hf_dir, text_file)
    assert r.exit_code == 0, r.output
    assert "context cropped from 32 to 16" in r.output and "starting from" in r.output
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert float(rows[-1][2]) < float(rows[0][2]) - 0.5                  # val loss fell
    config = ckpt.find_checkpoint(out, "latest")[1]
    assert config["train"]["init_from"] == str(hf_dir.resolve())
    assert config["tokenizer"]["type"] != "char" and config["model"]["block_size"] == 16
    assert config["model"]["n_embd"] == 16 and config["model"]["dropout"] == 0.0


def test_finetuned_export_matches_transformers(tmp_path, hf_dir, text_file):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tinygpt.export import export_hf
    out = tmp_path / "run"
    assert finetune(out, hf_dir, text_file).exit_code == 0
    export_hf(out, tmp_path / "hf-out")
    ours, tok, _ = load_model(out)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf-out")).eval()
    ids = tok.encode("First Citizen:\nSpeak")
    with tensor.no_grad():
        a = ours(np.array([ids]))[0].data[0]
    with torch.no_grad():
        b = theirs(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # and transformers' AutoTokenizer reads the exported tokenizer as ours encodes
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf-out"))
    text = "First Citizen:\nSpeak<|endoftext|>"
    assert theirs_tok(text)["input_ids"] == tok.encode(text, allowed_special="all")
    assert theirs_tok.model_max_length == 16 and theirs_tok.eos_token_id == tok.eot_token


def test_finetune_a_training_run(tmp_path, text_file):
    """--init-from a run: its char tokenizer and architecture carry over."""
    first = tmp_path / "first"
    r = CliRunner().invoke(train_cmd, ["--out", str(first), "--data", str(text_file),
                                       "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
                                       "--block-size", "16", "--batch-size", "4",
                                       "--max-iters", "10", "--eval-interval", "10",
                                       "--eval-iters", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    second = tmp_path / "second"
    r = CliRunner().invoke(train_cmd, ["--init-from", str(first), "--out", str(second),
                                       "--data", str(text_file), "--batch-size", "4",
                                       "--max-iters", "10", "--eval-interval", "10",
                                       "--eval-iters", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    a = ckpt.find_checkpoint(first, "latest")[1]
    b = ckpt.find_checkpoint(second, "latest")[1]
    assert a["tokenizer"] == b["tokenizer"] and a["model"] == b["model"]


@pytest.mark.parametrize("extra, needle", [
    (["--n-layer", "3"], "--n-layer"),
    (["--preset", "baby"], "--preset"),
    (["--tokenizer", "char"], "--tokenizer char disagrees"),
    (["--block-size", "64"], "longer than the context"),
])
def test_finetune_refuses_what_the_weights_decide(tmp_path, hf_dir, text_file, extra, needle):
    out = tmp_path / "run"
    r = finetune(out, hf_dir, text_file, *extra)
    assert r.exit_code == 1 and needle in r.output, r.output
    assert not out.exists()


def test_finetune_from_nothing_is_a_clear_error(tmp_path, text_file):
    r = CliRunner().invoke(train_cmd, ["--init-from", str(tmp_path / "missing"),
                                       "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "--init-from" in r.output and "Traceback" not in r.output


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_go_on(tmp_path, monkeypatch):
    """The second save meets ENOSPC: the error names the space a checkpoint needs and the resume
    command, the first checkpoint stays complete, no .partial is left, and the run resumes."""
    import errno
    from tinygpt import checkpoint as ckpt
    from helpers import run_tiny
    real, calls = ckpt.save_safetensors, []

    def full_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:                  # the model file of the second save
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(ckpt, "save_safetensors", full_disk)
    out = tmp_path / "run"
    with pytest.raises(ckpt.CheckpointError) as e:
        run_tiny(out)
    message = str(e.value)
    assert "No space left on device" in message and "A checkpoint needs about" in message
    assert "iteration 0" in message and f"tinygpt train --resume --out {out}" in message
    assert [c.iteration for c in ckpt.list_checkpoints(out)] == [0]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(ckpt, "save_safetensors", real)
    run_tiny(out, resume=True)
    assert ckpt.list_checkpoints(out)[-1].iteration == 12


def test_resume_messages_name_the_runs_values(tmp_path):
    """A refused change names the value the run has (the preset's, not "None"), and the change
    line reads as a sentence: no comma before the note on the learning-rate decay."""
    from helpers import run_tiny
    out = run_tiny(tmp_path / "run", max_iters=4)
    with pytest.raises(ValueError) as e:
        train(TrainOptions(out=str(out), bias=False), resume=True, progress=False,
              log=lambda *a: None, given={"bias"})
    assert "None" not in str(e.value) and "--bias False (the run has True)" in str(e.value)
    lines = []
    train(TrainOptions(out=str(out), max_iters=8), resume=True, progress=False,
          log=lines.append, given={"max_iters"})
    changed = [line for line in lines if line.startswith("changed on resume")]
    assert changed == ["changed on resume: --max-iters 4 -> 8 (the learning-rate decay still "
                       "ends at iteration 4; --lr-decay-iters changes that)"]


def test_weight_decay_that_destroys_the_weights_is_refused_up_front(tmp_path):
    """lr x weight decay >= 1 multiplies every weight by 1 - lr*wd <= 0 each step (it ended in a
    NaN whose advice was a lower --lr): refused before anything is written, naming the option."""
    for wd in (1e308, 1000.0):
        with pytest.raises(ValueError, match=r"--weight-decay .* with --lr 0\.001"):
            train(TrainOptions(out=str(tmp_path / "run"), weight_decay=wd), progress=False,
                  log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_a_warmup_longer_than_the_run_is_noted(tmp_path):
    from helpers import TINY
    lines = []
    train(TrainOptions(**{**TINY, "out": str(tmp_path / "run"),
                          "warmup_iters": 50}), progress=False, log=lines.append)
    assert any("--warmup-iters 50 is longer than the run (--max-iters 12)" in line
               for line in lines)


def test_memory_refusal_names_what_is_too_big(monkeypatch):
    """A huge --n-layer grows the parameters and the activations both: the refusal gives each
    share (from the parameter count, an independent formula) and names the model options too,
    not only --batch-size and --block-size."""
    from tinygpt import train as t
    from tinygpt.model import GPTConfig
    from tinygpt.params import count_parameters
    monkeypatch.setattr(t, "available_memory", lambda: 2**30)
    big = GPTConfig(vocab_size=65, block_size=64, n_layer=10_000, n_head=4, n_embd=128)
    with pytest.raises(ValueError) as e:
        t.check_memory(big, 12)
    message = str(e.value)
    assert f"{count_parameters(big) / 1e6:,.1f}M parameters" in message
    assert f"{16 * count_parameters(big) / 2**30:,.1f} GiB" in message
    assert "--n-layer, --n-embd" in message and "--batch-size, --block-size" in message


def test_threads_above_the_usable_cores_is_refused(tmp_path):
    """On 2 cores --threads 3 trained 10x slower; --threads 1e20 was accepted. The limit is
    the affinity mask (an independent reading of it here), and nothing is written."""
    import os
    from click.testing import CliRunner
    from tinygpt.cli import main
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for n in (cores + 1, 10**20):
        result = CliRunner().invoke(main, ["train", "--threads", str(n), "--max-iters", "1",
                                           "--out", str(tmp_path / "run")])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"--threads {n}: this process may use {cores} core" in result.output
    assert not (tmp_path / "run").exists()
