"""tinygpt/loading.py: one loader for a released name, a Hugging Face directory or a training
run, with one rule (tinygpt.checkpoint.is_checkpoint) to tell them apart; and the library
helpers every command shares (TextStream, encode_prompt) living outside the CLI modules.

Oracles: the weights files read directly with tensor.io (a run's chosen checkpoint, a Hugging
Face directory's model.safetensors) into a model of the saved config (the loader must give the
very same weights and logits), and the tokenizers' own encode/decode."""
import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tensor.io import load_safetensors, save_safetensors
from tinygpt import checkpoint
from tinygpt.bpe import GPT2Tokenizer
from tinygpt.export import hf_config, hf_tensors
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer
from tinygpt.train import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]


def train_run(out, data=None, **overrides):
    """A real training run, made only through tinygpt.train.train (never by hand)."""
    opts = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, max_iters=20,
                eval_interval=10, eval_iters=2, out=str(out))
    opts.update(overrides)
    if data is not None:
        opts["data"] = str(data)
    train(TrainOptions(**opts), log=lambda *a, **k: None, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("run") / "out")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    path.mkdir()
    model = GPT(GPTConfig(vocab_size=50257, block_size=16, n_layer=1, n_head=2, n_embd=16), seed=1)
    save_safetensors(path / "model.safetensors", hf_tensors(model))
    (path / "config.json").write_text(json.dumps(hf_config(model.config, 50256)))
    return path


def logits(model, ids):
    out, _ = model(np.array([ids]))
    return out.data[0]


def read_directly(ckpt_dir, dtype=np.float32):
    """The oracle: a checkpoint's config.json and model.safetensors read with tensor.io alone."""
    config = json.loads((Path(ckpt_dir) / "config.json").read_text())
    model = GPT(GPTConfig.from_dict(config["model"]), dtype=dtype, init=False)
    model.load_state_dict(load_safetensors(Path(ckpt_dir) / "model.safetensors"))
    return model.eval(), CharTokenizer.from_dict(config["tokenizer"]), config


def test_a_training_run_loads_its_best_checkpoint_as_written(run_dir):
    from tinygpt.loading import load_model
    model, tok, description = load_model(run_dir)
    best, config = checkpoint.find_checkpoint(run_dir, "best")
    want, want_tok, saved = read_directly(best.path)
    assert saved["val_loss"] == min(c.val_loss for c in checkpoint.list_checkpoints(run_dir))
    assert not model.training
    assert description == f"{best.describe()}, the best checkpoint"
    assert tok.to_dict() == want_tok.to_dict()
    for name, x in want.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], x, err_msg=name)
    ids = tok.encode("ROMEO:")
    np.testing.assert_array_equal(logits(model, ids), logits(want, ids))


def test_which_is_passed_on_and_checked(run_dir):
    from tinygpt.loading import load_model
    model, _, description = load_model(run_dir, which="latest")
    latest = checkpoint.list_checkpoints(run_dir)[-1]
    assert description == f"{latest.describe()}, the latest checkpoint"
    want, _, _ = read_directly(latest.path)
    for name, x in want.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], x, err_msg=name)
    with pytest.raises(ValueError, match="which"):
        load_model(run_dir, which="newest")


def test_a_hugging_face_directory_loads_as_written(hf_dir):
    from tinygpt.loading import load_model
    model, tok, description = load_model(hf_dir)
    hf = json.loads((hf_dir / "config.json").read_text())
    want = GPT(GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"],
                         n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"]),
               init=False)
    want.load_state_dict(load_safetensors(hf_dir / "model.safetensors"))
    assert not model.training and str(hf_dir) in description
    ids = tok.encode("Hello there")
    np.testing.assert_array_equal(logits(model, ids), logits(want.eval(), ids))


def test_one_rule_decides_what_a_directory_is(run_dir, monkeypatch):
    """The loader asks tinygpt.checkpoint.is_checkpoint and nothing else: told that the run is
    not a run, it reads it as a Hugging Face directory (and refuses it)."""
    from tinygpt import loading
    monkeypatch.setattr(checkpoint, "is_checkpoint", lambda path: False)
    with pytest.raises(loading.LoadError):
        loading.load_model(run_dir)


def test_the_old_rules_are_gone():
    import tinygpt.inspect
    import tinygpt.pretrained
    assert not hasattr(tinygpt.pretrained, "is_training_checkpoint")
    assert not hasattr(tinygpt.inspect, "load_any")


def _imports(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_library_code_and_examples_do_not_import_the_command_line():
    offenders = []
    files = [p for p in (ROOT / "tinygpt").glob("*.py") if not p.name.startswith("cli")]
    files += list((ROOT / "examples").glob("*.py"))
    for path in files:
        for name in _imports(path):
            if name.split(".")[-1].startswith("cli"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_text_stream_and_encode_prompt_live_in_the_library():
    from tinygpt.generate import TextStream, encode_prompt   # noqa: F401
    import tinygpt.cli.generate
    assert not hasattr(tinygpt.cli.generate, "TextStream")


def test_an_empty_prompt_is_a_new_document_for_bpe_and_a_newline_for_characters():
    from tinygpt.generate import encode_prompt, prompt_text
    bpe = GPT2Tokenizer.from_tiktoken()
    assert encode_prompt(bpe, "") == [bpe.eot_token]
    assert prompt_text(bpe, "") == ""
    chars = CharTokenizer.from_text("ab\ncd")
    assert prompt_text(chars, "") == "\n"
    assert encode_prompt(chars, "") == chars.encode("\n")
    assert encode_prompt(chars, "ba") == chars.encode("ba")
    no_newline = CharTokenizer.from_text("abcd")
    with pytest.raises(ValueError, match="prompt"):
        encode_prompt(no_newline, "")


def edit_configs(run, edit):
    """Change every config.json of a copied run that holds a tokenizer (wherever the checkpoint
    layout puts them)."""
    for path in run.rglob("config.json"):
        d = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "tokenizer" in d:
            edit(d)
            path.write_text(json.dumps(d), encoding="utf-8")


def test_a_run_whose_tokenizer_disagrees_with_the_weights_is_refused(run_dir, tmp_path):
    from tinygpt.loading import LoadError, load_model
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)

    def trim(d):
        d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    edit_configs(bad, trim)
    with pytest.raises(LoadError) as e:
        load_model(bad)
    assert "config.json" in str(e.value)


def test_a_character_vocabulary_smaller_than_the_weights_is_refused(run_dir, tmp_path):
    """A Hugging Face directory written by `tinygpt export`, with its char vocabulary cut."""
    from tinygpt.export import export_hf
    from tinygpt.loading import LoadError, load_model
    export_hf(run_dir, tmp_path / "hf")
    path = tmp_path / "hf" / "tinygpt_char_vocab.json"
    d = json.loads(path.read_text(encoding="utf-8"))
    d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(LoadError) as e:
        load_model(tmp_path / "hf")
    assert "tinygpt_char_vocab.json" in str(e.value) and "20" in str(e.value)


def test_a_bad_hugging_face_config_field_names_the_file_key_and_value(hf_dir, tmp_path):
    from tinygpt.loading import LoadError, load_model
    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["n_embd"] = "sixteen"
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(LoadError) as e:
        load_model(bad)
    message = str(e.value)
    assert str(bad / "config.json") in message and "n_embd" in message and "'sixteen'" in message
