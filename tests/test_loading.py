"""tinygpt/loading.py: one loader for a released name, a Hugging Face directory or a training
run, with one rule (tinygpt.checkpoint.is_checkpoint) to tell them apart; and tinygpt.load, the
public entry point that calls it.

Oracles: tinygpt.checkpoint.load_model and tinygpt.pretrained.load_pretrained themselves (the
loader must give the very same weights), the source model of a Hugging Face directory written by
hand, and the tokenizers' own encode/decode."""
import json
import shutil

import numpy as np
import pytest

import tensor
from tinygpt import checkpoint
from tinygpt.bpe import GPT2Tokenizer
from tinygpt.model import GPT, GPTConfig

from helpers import TINY_GPT2, edit_configs, logits, write_hf_dir, write_hf_dir_by_hand


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    model = GPT(GPTConfig(**{**TINY_GPT2, "block_size": 16, "n_layer": 1}), seed=1)
    return write_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-gpt2", model)


# ----- load_model ------------------------------------------------------------------------------

def test_a_training_run_loads_as_the_checkpoint_module_loads_it(trained_run):
    from tinygpt.loading import load_model
    model, tok, description = load_model(trained_run)
    want, want_tok, config = checkpoint.load_model(trained_run, which="best")
    assert not model.training
    assert description == config["source"]
    assert tok.to_dict() == want_tok.to_dict()
    ids = tok.encode("ROMEO:")
    np.testing.assert_array_equal(logits(model, ids), logits(want.eval(), ids))


def test_which_is_passed_on_and_checked(trained_run):
    from tinygpt.loading import load_model
    _, _, description = load_model(trained_run, which="latest")
    assert description == checkpoint.load_model(trained_run, which="latest")[2]["source"]
    with pytest.raises(ValueError, match="which"):
        load_model(trained_run, which="newest")


def test_a_hugging_face_directory_loads_as_load_pretrained_loads_it(hf_dir):
    from tinygpt.loading import load_model
    from tinygpt.pretrained import load_pretrained
    model, tok, description = load_model(hf_dir)
    want, _ = load_pretrained(hf_dir)
    assert not model.training and str(hf_dir) in description
    ids = tok.encode("Hello there")
    np.testing.assert_array_equal(logits(model, ids), logits(want, ids))


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
        want, want_tok, config = ckpt.load_model(out, which=which)   # the checkpoint module
        assert not model.training and description == config["source"]
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
