"""tinygpt/loading.py: one loader for a released name, a Hugging Face directory or a training
run, with one rule (tinygpt.checkpoint.is_checkpoint) to tell them apart; and tinygpt.load, the
public entry point that calls it.

Oracles: the weights files read directly with tensor.io (a run's chosen checkpoint, a Hugging
Face directory's model.safetensors) into a model of the saved config (the loader must give the
very same weights and logits), the source model of a Hugging Face directory written by hand, and
the tokenizers' own encode/decode."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tensor
from tensor.io import load_safetensors
from tinygpt import checkpoint
from tinygpt.bpe import GPT2Tokenizer
from tinygpt.model import GPT, GPTConfig
from tinygpt.tokenizer import CharTokenizer
from tinygpt.loading import load_model

from helpers import TINY_GPT2, edit_configs, logits, write_hf_dir, write_hf_dir_by_hand


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = GPT(GPTConfig(**{**TINY_GPT2, "block_size": 16, "n_layer": 1}), seed=1)
    return write_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-gpt2", model)


# ----- load_model ------------------------------------------------------------------------------

def read_directly(ckpt_dir, dtype=np.float32):
    """The oracle: a checkpoint's config.json and model.safetensors read with tensor.io alone."""
    config = json.loads((Path(ckpt_dir) / "config.json").read_text())
    model = GPT(GPTConfig.from_dict(config["model"]), dtype=dtype, init=False)
    model.load_state_dict(load_safetensors(Path(ckpt_dir) / "model.safetensors"))
    return model.eval(), CharTokenizer.from_dict(config["tokenizer"]), config


def test_a_training_run_loads_its_best_checkpoint_as_written(trained_run):
    model, tok, description = load_model(trained_run)
    best, config = checkpoint.find_checkpoint(trained_run, "best")
    want, want_tok, saved = read_directly(best.path)
    assert saved["val_loss"] == min(c.val_loss for c in checkpoint.list_checkpoints(trained_run))
    assert not model.training
    assert description == f"{best.describe()}, the best checkpoint"
    assert tok.to_dict() == want_tok.to_dict()
    for name, x in want.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], x, err_msg=name)
    ids = tok.encode("ROMEO:")
    np.testing.assert_array_equal(logits(model, ids), logits(want, ids))


def test_which_is_passed_on_and_checked(trained_run):
    model, _, description = load_model(trained_run, which="latest")
    latest = checkpoint.list_checkpoints(trained_run)[-1]
    assert description == f"{latest.describe()}, the latest checkpoint"
    want, _, _ = read_directly(latest.path)
    for name, x in want.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], x, err_msg=name)
    with pytest.raises(ValueError, match="which"):
        load_model(trained_run, which="newest")


def test_a_hugging_face_directory_loads_as_written(hf_dir):
    model, tok, description = load_model(hf_dir)
    hf = json.loads((hf_dir / "config.json").read_text())
    want = GPT(GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"],
                         n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"]),
               init=False)
    want.load_state_dict(load_safetensors(hf_dir / "model.safetensors"))
    assert not model.training and str(hf_dir) in description
    ids = tok.encode("Hello there")
    np.testing.assert_array_equal(logits(model, ids), logits(want.eval(), ids))


def test_one_rule_decides_what_a_directory_is(trained_run, monkeypatch):
    """The loader asks tinygpt.checkpoint.is_checkpoint and nothing else: told that the run is
    not a run, it reads it as a Hugging Face directory (and refuses it)."""
    from tinygpt import loading
    monkeypatch.setattr(checkpoint, "is_checkpoint", lambda path: False)
    with pytest.raises(loading.LoadError):
        loading.load_model(trained_run)


def test_the_old_rules_are_gone():
    import tinygpt.inspect
    import tinygpt.pretrained
    assert not hasattr(tinygpt.pretrained, "is_training_checkpoint")
    assert not hasattr(tinygpt.inspect, "load_any")


# ----- what it refuses -------------------------------------------------------------------------

def test_a_run_whose_tokenizer_disagrees_with_the_weights_is_refused(trained_run, copy_run):
    from tinygpt.loading import LoadError, load_model
    bad = copy_run(trained_run, "bad")

    def trim(d):
        d["tokenizer"]["chars"] = d["tokenizer"]["chars"][:20]
    edit_configs(bad, trim)
    with pytest.raises(LoadError) as e:
        load_model(bad)
    assert "config.json" in str(e.value)


def test_a_character_vocabulary_smaller_than_the_weights_is_refused(trained_run, tmp_path):
    """A Hugging Face directory written by `tinygpt export`, with its char vocabulary cut."""
    from tinygpt.export import export_hf
    from tinygpt.loading import LoadError, load_model
    export_hf(trained_run, tmp_path / "hf")
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


# ----- tinygpt.load ----------------------------------------------------------------------------

def test_tinygpt_load_reads_a_training_run(tiny_run):
    import tinygpt
    from tinygpt import checkpoint as ckpt
    out = tiny_run(max_iters=4, eval_interval=4, eval_iters=1)
    idx = np.array([[1, 2, 3, 4]])
    for which in ("best", "latest"):
        model, tok, description = tinygpt.load(out, which=which)
        chosen, _ = ckpt.find_checkpoint(out, which)
        want, want_tok, _ = read_directly(chosen.path)            # the files, read directly
        assert not model.training and description == f"{chosen.describe()}, the {which} checkpoint"
        for name, x in want.state_dict().items():
            np.testing.assert_array_equal(model.state_dict()[name], x, err_msg=name)
        with tensor.no_grad():
            np.testing.assert_array_equal(model(idx)[0].data, want(idx)[0].data)
        assert tok.encode("ROMEO:") == want_tok.encode("ROMEO:")
        assert tok.decode(tok.encode("ROMEO:")) == "ROMEO:"


def test_tinygpt_load_reads_a_hugging_face_directory(tmp_path, hf_source, hf_ids):
    """tinygpt.load, the one public entry point (GPT.from_pretrained is gone): the source model's
    logits, the bundled GPT-2 tokenizer, eval mode, and a description naming the directory."""
    import tinygpt
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source)
    model, tok, description = tinygpt.load(str(d))
    np.testing.assert_array_equal(logits(model, hf_ids), logits(hf_source, hf_ids))
    assert not model.training and str(d) in description and "Hugging Face" in description
    assert tok.encode("Hello world") == GPT2Tokenizer.from_tiktoken().encode("Hello world")


# ----- what cannot be loaded: a one-line LoadError, before anything big is allocated -----------

def _with(tensors, name, index, value):
    out = {k: v.copy() for k, v in tensors.items()}        # never the source model's arrays
    out[name][index] = value
    return out


@pytest.mark.parametrize("name, index, value", [
    ("h.0.mlp.c_fc.weight", (2, 5), np.nan),     # a Linear: quantized by bfloat16 and int8
    ("wte.weight", (40000, 3), -np.inf),          # the table, read in blocks of rows
    ("ln_f.weight", (7,), np.inf),                # a LayerNorm: float32 at every dtype
])
@pytest.mark.parametrize("weight_dtype", ["float32", "bfloat16", "int8"])
def test_a_non_finite_weight_is_refused_at_load(tmp_path, hf_source, name, index, value,
                                                weight_dtype):
    from helpers import hf_tensors_by_hand
    from tinygpt.pretrained import PretrainedError
    tensors = _with(hf_tensors_by_hand(hf_source), "transformer." + name, index, value)
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors)
    with pytest.raises(PretrainedError) as e:
        load_model(d, weight_dtype=weight_dtype)
    where = "[" + ", ".join(map(str, index)) + "]"
    assert f"model.safetensors: {name} holds {value} at {where}" in str(e.value)


def test_a_checkpoint_with_a_non_finite_weight_is_refused_at_load(tmp_path, hf_source):
    from helpers import write_checkpoint
    from tinygpt.checkpoint import CheckpointError
    model = GPT(hf_source.config, init=False)
    model.load_state_dict(_with(hf_source.state_dict(), "h.1.attn.c_proj.weight", (0, 1), np.nan))
    run = write_checkpoint(tmp_path / "run", model, {"type": "gpt2"})
    for weight_dtype in ("float32", "int8"):
        with pytest.raises(CheckpointError, match=r"model\.safetensors: h\.1\.attn\.c_proj\.weight "
                                                  r"holds nan at \[0, 1\]"):
            load_model(run, weight_dtype=weight_dtype)


def test_an_unreadable_weights_file_is_a_load_error(tmp_path, hf_source, monkeypatch):
    import builtins

    import tensor.io
    from tinygpt.loading import LoadError
    d = write_hf_dir(tmp_path / "m", hf_source)
    weights = str(d / "model.safetensors")

    def denied(path, *args, **kwargs):           # what chmod 000 does to a user who is not root
        if str(path) == weights:
            raise PermissionError(13, "Permission denied", weights)
        return builtins.open(path, *args, **kwargs)
    monkeypatch.setattr(tensor.io, "open", denied, raising=False)
    with pytest.raises(LoadError, match=f"cannot read {weights}: Permission denied"):
        load_model(d)
    monkeypatch.undo()
    (d / "model.safetensors").unlink()
    (d / "model.safetensors").mkdir()              # a directory where the file should be
    with pytest.raises(LoadError, match=f"cannot read {weights}: Is a directory"):
        load_model(d)


@pytest.mark.parametrize("field, value, says", [
    ("vocab_size", 10**9, "wte.weight of shape [50257, 16] (50,257 rows)"),
    ("n_layer", 10**12, "holds 2 blocks"),
    ("n_positions", 4096, "wpe.weight of shape [32, 16] (32 rows)"),
])
def test_a_config_that_disagrees_with_the_weights_header(tmp_path, hf_source, field, value, says):
    from helpers import hf_config_by_hand
    from tinygpt.pretrained import PretrainedError
    config = {**hf_config_by_hand(hf_source.config), field: value}
    if field == "n_positions":
        config["n_ctx"] = value
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source, config=config)
    with pytest.raises(PretrainedError) as e:
        load_model(d)
    assert f"config.json: {field} is {value:,}, but" in str(e.value) and says in str(e.value)


def test_weights_that_do_not_fit_in_memory_are_refused_before_the_model_is_built(tmp_path,
                                                                                  hf_source,
                                                                                  monkeypatch):
    import tinygpt.model
    import tinygpt.train
    from tinygpt.pretrained import PretrainedError
    d = write_hf_dir(tmp_path / "m", hf_source)
    float32_bytes = 4 * sum(p.size for _, p in hf_source.named_parameters())    # the oracle
    monkeypatch.setattr(tinygpt.train, "available_memory", lambda: float32_bytes - 1)
    built = []
    monkeypatch.setattr(tinygpt.model.GPT, "__init__",
                        lambda self, *a, **k: built.append(1) or 1 / 0)
    with pytest.raises(PretrainedError, match=r"config.json: n_layer 2, n_embd 16, vocab_size "
                                              r"50257 .* in float32, but .* is available"):
        load_model(d)
    assert not built
