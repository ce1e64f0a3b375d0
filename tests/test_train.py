"""The training loop: metrics, checkpoints, resume, Ctrl-C, non-finite loss, data errors."""
import csv
import json

import numpy as np
import pytest

from tinygpt import checkpoint as ckpt
from tinygpt.dataset import Dataset, read_text
from tinygpt.train import TrainOptions, train, NonFiniteLoss
from run_helpers import load_run


def small(tmp_path, **kw):
    opts = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=20,
                eval_interval=10, eval_iters=2, warmup_iters=5, out=str(tmp_path / "out"))
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


def test_bundled_shakespeare_facts():
    from tinygpt.tokenizer import CharTokenizer
    text = read_text()
    assert len(text) == 1_115_394                                # from shared/data/README.md
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65
    data = Dataset.from_ids(tok.encode_array(text), block_size=64)
    assert (len(data.train), len(data.val)) == (1_003_854, 111_540)


def test_batches_are_shifted_targets_and_seeded():
    data = Dataset.from_ids(np.arange(1000), block_size=8)
    x, y = data.batch("train", 4, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(y, x + 1)
    x2, _ = data.batch("train", 4, 8, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)


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


def test_resume_without_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no run to resume"):
        train(small(tmp_path), resume=True, progress=False, log=lambda *a: None)
