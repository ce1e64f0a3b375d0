"""tinygpt/export.py: a training run written as a Hugging Face GPT-2 directory (`tinygpt
export`), read back by tinygpt's Hugging Face loader with the same logits and tokenizer; what the
export refuses to overwrite.

Oracles: the exported model's own forward pass, and the bundled GPT-2 tokenizer. That
transformers loads an export is in test_parity.py (and, for a fine-tuned run, test_train.py)."""
import json

import numpy as np
from click.testing import CliRunner

from tinygpt.bpe import GPT2Tokenizer
from tinygpt.cli import main
from tinygpt.loading import load_model

from helpers import TINY_GPT2, load_run, logits, random_model, write_checkpoint


def export(out, to, *extra):
    return CliRunner().invoke(main, ["export", "--model", str(out), "--to", str(to), *extra])


def test_export_round_trip_bpe(tmp_path, monkeypatch, hf_source, hf_ids):
    out = write_checkpoint(tmp_path / "out", hf_source, {"type": "gpt2"})
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["tie_word_embeddings"] is True
    assert (config["n_positions"], config["eos_token_id"]) == (32, 50256)
    bundled = GPT2Tokenizer.from_tiktoken()
    monkeypatch.setattr(GPT2Tokenizer, "from_tiktoken", None)   # vocab.json + merges.txt only
    model, tok = load_model(tmp_path / "hf")[:2]
    np.testing.assert_array_equal(logits(model, hf_ids), logits(hf_source, hf_ids))
    text = "Round trip: ünïcödé 🎉 <|endoftext|>"
    assert tok.encode(text) == bundled.encode(text)


def test_export_of_a_model_without_biases(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("abcdefgh ")
    model = random_model({**TINY_GPT2, "bias": False, "vocab_size": tok.vocab_size}, seed=3,
                         gain_std=0.2)
    out = write_checkpoint(tmp_path / "out", model, tok.to_dict())
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    loaded, _ = load_model(tmp_path / "hf")[:2]                 # zero biases: the same function
    ids = tok.encode("bad cafe")
    np.testing.assert_allclose(logits(loaded, ids), logits(model, ids), rtol=0, atol=1e-6)


def test_export_round_trip_char_model(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("hello world, héllo wörld\n")
    model = random_model({**TINY_GPT2, "vocab_size": tok.vocab_size}, seed=4, gain_std=0.2)
    out = write_checkpoint(tmp_path / "out", model, tok.to_dict())
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    assert "transformers" in result.output and "cannot" in result.output
    assert not (tmp_path / "hf" / "vocab.json").exists()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] is None
    loaded, loaded_tok = load_model(tmp_path / "hf")[:2]
    ids = tok.encode("hello wörld")
    assert loaded_tok.encode("hello wörld") == ids
    np.testing.assert_array_equal(logits(loaded, ids), logits(model, ids))
    result = CliRunner().invoke(main, ["generate", "--model", str(tmp_path / "hf"),
                                       "--max-new-tokens", "5", "--seed", "0", "hello"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("hello") and len(result.stdout) == len("hello") + 5 + 1


def test_export_refuses_to_clobber(tmp_path, hf_source):
    out = write_checkpoint(tmp_path / "out", hf_source, {"type": "gpt2"})
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 1 and "not empty" in result.output and "--overwrite" in result.output
    result = export(out, out)
    assert result.exit_code == 1 and "checkpoint directory itself" in result.output
    assert load_run(out)[2]["iteration"] == 0                         # the run: untouched
    (tmp_path / "hf" / "tinygpt_char_vocab.json").write_text("{}")    # from an earlier export
    result = export(out, tmp_path / "hf", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "hf" / "tinygpt_char_vocab.json").exists()   # stale: removed
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine"       # not ours: kept
    assert load_model(tmp_path / "hf")[:2][0].config == hf_source.config


def test_export_of_a_missing_checkpoint(tmp_path):
    result = export(tmp_path / "nothing", tmp_path / "hf")
    assert result.exit_code == 1 and "tinygpt train" in result.output


def test_export_of_a_character_model_notes_what_its_vocabulary_file_is(trained_run, tmp_path):
    result = export(trained_run, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "tinygpt_char_vocab.json" in notes[0]
    assert "AutoTokenizer cannot load a character vocabulary" in notes[0]
    assert f"tinygpt generate --model {tmp_path / 'hf'}" in notes[0]
