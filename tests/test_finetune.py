"""Fine-tuning (`tinygpt train --init-from`): from a Hugging Face GPT-2 directory or a training
run, with the weights' own architecture and tokenizer; the export loads in transformers."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import tensor
from tensor.io import save_safetensors
from tinygpt import checkpoint as ckpt
from tinygpt.cli.train import train_cmd
from tinygpt.model import GPT, GPTConfig

SMALL = dict(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=16)
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny GPT-2 in the Hugging Face layout (config.json + model.safetensors; the bundled
    GPT-2 tokenizer fits its 50257-row vocabulary)."""
    d = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    d.mkdir()
    model = GPT(GPTConfig(**SMALL), seed=0)
    cfg = model.config
    (d / "config.json").write_text(json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "activation_function": "gelu_new", "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
        "n_head": cfg.n_head, "n_positions": cfg.block_size, "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": 1e-05}))
    save_safetensors(d / "model.safetensors", dict(model.state_dict()))
    return d


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("data") / "citizens.txt"
    f.write_text(TEXT)
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
    rows = [l.split(",") for l in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert float(rows[-1][2]) < float(rows[0][2]) - 0.5                  # val loss fell
    config = ckpt.find_checkpoint(out, "latest")[1]
    assert config["train"]["init_from"] == str(hf_dir.resolve())
    assert config["tokenizer"]["type"] != "char" and config["model"]["block_size"] == 16
    assert config["model"]["n_embd"] == 16 and config["model"]["dropout"] == 0.0


def test_finetuned_export_matches_transformers(tmp_path, hf_dir, text_file):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tinygpt.export import export_hf
    from tinygpt.loading import load_model
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
