"""tinygpt/pretrained.py: loading Hugging-Face-layout GPT-2 directories, and released names
through huggingface_hub (never the network here).

No torch here: each test writes a Hugging Face directory by hand (HF key names, a config.json of
its own: helpers.write_hf_dir_by_hand) from a random tinygpt model (conftest's hf_source), and the
oracle is that source model's own forward pass. The parity with transformers itself is in
tests/test_parity.py; the commands on these directories are in test_cli.py, export in
test_export.py, strided perplexity in test_evaluate.py.
"""
import json
import re
import socket
import sys

import numpy as np
import pytest

from tinygpt.bpe import GPT2Tokenizer
from tinygpt import pretrained
from tinygpt.loading import load_model

from helpers import (PREFIX, TINY_GPT2, hf_config_by_hand, hf_tensors_by_hand, load_error, logits,
                     random_model, write_hf_dir_by_hand)


# ----- loading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("buffers", [False, True])
def test_load_gives_the_source_models_logits(tmp_path, hf_source, hf_ids, prefix, buffers):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source, hf_tensors_by_hand(hf_source, prefix, buffers))
    model, tok = load_model(d)[:2]
    assert model.config.block_size == TINY_GPT2["block_size"] and model.config.dropout == 0
    for name, p in model.named_parameters():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, hf_source.state_dict()[name], err_msg=name)
    np.testing.assert_array_equal(logits(model, hf_ids), logits(hf_source, hf_ids))
    assert isinstance(tok, GPT2Tokenizer) and tok.eot_token == 50256     # bundled GPT-2 ranks
    assert tok.encode("Hello world") == GPT2Tokenizer.from_tiktoken().encode("Hello world")


def test_tied_lm_head_equal_to_wte_is_accepted(tmp_path, hf_source, hf_ids):
    tensors = hf_tensors_by_hand(hf_source)
    tensors["lm_head.weight"] = hf_source.wte.weight.data.copy()
    model, _ = load_model(write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors))[:2]
    np.testing.assert_array_equal(logits(model, hf_ids), logits(hf_source, hf_ids))


def test_untied_lm_head_is_refused(tmp_path, hf_source):
    tensors = hf_tensors_by_hand(hf_source)
    tensors["lm_head.weight"] = hf_source.wte.weight.data + 1e-3
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors))
    assert "model.safetensors" in msg and "'lm_head.weight'" in msg and "untied" in msg


def test_float16_weights_become_float32(tmp_path, hf_source, hf_ids):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source, hf_tensors_by_hand(hf_source, dtype=np.float16))
    model, _ = load_model(d)[:2]
    rounded = random_model(TINY_GPT2, gain_std=0.2)   # the oracle: the source, rounded to float16
    for name, p in rounded.named_parameters():
        p.data[...] = p.data.astype(np.float16).astype(np.float32)
    for _, p in model.named_parameters():
        assert p.dtype == np.float32
    np.testing.assert_array_equal(logits(model, hf_ids), logits(rounded, hf_ids))


def write_bf16_safetensors(path, tensors):
    """A BF16 safetensors file written by hand (NumPy has no bfloat16): the top 16 bits of each
    float32, rounded to nearest even, stored little-endian."""
    header, blobs, offset = {}, [], 0
    for name, x in tensors.items():
        bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")   # round to nearest even
        blob = bits.tobytes()
        header[name] = {"dtype": "BF16", "shape": list(x.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_bfloat16_weights_become_float32(tmp_path, hf_source, hf_ids):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source)
    write_bf16_safetensors(d / "model.safetensors", hf_tensors_by_hand(hf_source, buffers=False))
    model, _ = load_model(d)[:2]
    rounded = random_model(TINY_GPT2, gain_std=0.2)   # the oracle: float32 with a 7-bit mantissa
    for _, p in rounded.named_parameters():
        x = p.data.astype(np.float32).view(np.uint32).astype(np.uint64)
        x = ((x + 0x7FFF + ((x >> 16) & 1)) >> 16) << 16
        p.data[...] = x.astype(np.uint32).view(np.float32)
    np.testing.assert_array_equal(logits(model, hf_ids), logits(rounded, hf_ids))


# ----- malformed directories: each error names the file and the key ----------------------------

def test_truncated_weights_file(tmp_path, hf_source):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    msg = load_error(d)
    assert str(f) in msg and "truncated" in msg and re.search(r"key '[^']+'", msg)


def test_header_whose_offsets_lie(tmp_path, hf_source):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source)
    f = d / "model.safetensors"
    raw = f.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    key = f"{PREFIX}h.0.ln_1.bias"
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin + 4, end + 4]   # a hole before it, an overlap after
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    f.write_bytes(len(head).to_bytes(8, "little") + head + raw[8 + n:])
    msg = load_error(d)
    assert str(f) in msg and repr(key) in msg and "data section" in msg


def test_wrong_shape(tmp_path, hf_source):
    tensors = hf_tensors_by_hand(hf_source)
    key = f"{PREFIX}h.1.mlp.c_fc.weight"
    tensors[key] = np.ascontiguousarray(tensors[key].T)         # (64, 16): stored [out, in]
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors))
    assert "model.safetensors" in msg and repr(key) in msg and "[64, 16]" in msg and "[16, 64]" in msg


def test_missing_key(tmp_path, hf_source):
    tensors = hf_tensors_by_hand(hf_source)
    del tensors[f"{PREFIX}h.1.ln_2.bias"]
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors))
    assert "model.safetensors" in msg and f"missing key '{PREFIX}h.1.ln_2.bias'" in msg


def test_more_layers_in_config_than_in_the_file(tmp_path, hf_source):
    config = {**hf_config_by_hand(hf_source.config), "n_layer": 3}
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, config=config))
    assert "config.json: n_layer is 3" in msg and "model.safetensors holds 2 blocks" in msg


def test_unexpected_key(tmp_path, hf_source):
    tensors = hf_tensors_by_hand(hf_source)
    tensors[f"{PREFIX}h.0.attn.q_proj.weight"] = np.zeros((16, 16), np.float32)
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors))
    assert "model.safetensors" in msg and f"unexpected key '{PREFIX}h.0.attn.q_proj.weight'" in msg


def test_the_same_weight_twice(tmp_path, hf_source):
    tensors = hf_tensors_by_hand(hf_source)
    tensors["wte.weight"] = tensors[f"{PREFIX}wte.weight"]
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, tensors))
    assert "'wte.weight'" in msg and f"'{PREFIX}wte.weight'" in msg


def test_pickle_file_is_refused(tmp_path, hf_source):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf_config_by_hand(hf_source.config)))
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read by tinygpt")
    msg = load_error(d)
    assert "pytorch_model.bin" in msg and "pickle" in msg and "model.safetensors" in msg


def test_missing_config(tmp_path, hf_source):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source)
    (d / "config.json").unlink()
    msg = load_error(d)
    assert str(d / "config.json") in msg and "missing" in msg


@pytest.mark.parametrize("field, value, words", [
    ("layer_norm_epsilon", 1e-6, "1e-5"),
    ("activation_function", "gelu", "tanh GELU"),
    ("model_type", "llama", "GPT-2"),
    ("n_inner", 100, "4 * n_embd"),
    ("n_head", 3, "divisible"),
])
def test_unsupported_config(tmp_path, hf_source, field, value, words):
    config = {**hf_config_by_hand(hf_source.config), field: value}
    msg = load_error(write_hf_dir_by_hand(tmp_path / "m", hf_source, config=config))
    assert "config.json" in msg and field in msg and words in msg


def test_vocab_without_merges(tmp_path, hf_source):
    d = write_hf_dir_by_hand(tmp_path / "m", hf_source)
    (d / "vocab.json").write_text("{}")
    msg = load_error(d)
    assert "vocab.json" in msg and "merges.txt" in msg


def test_not_a_directory_nor_a_name(tmp_path):
    msg = load_error(tmp_path / "nowhere")
    assert "nowhere" in msg and "gpt2-medium" in msg


# ----- names: huggingface_hub missing or offline (never the network) ---------------------------

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name", ["gpt2", "openai-community/gpt2-xl"])
def test_name_without_huggingface_hub(monkeypatch, no_network, name):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)        # import fails
    msg = load_error(name)
    assert "pip install 'tinygpt[hub]'" in msg and "--model DIR" in msg


@pytest.fixture
def empty_hub_cache(monkeypatch, tmp_path):
    hub = pytest.importorskip("huggingface_hub", reason="the optional `hub` extra is not installed")
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return hub


def test_name_offline_with_an_empty_cache(monkeypatch, no_network, empty_hub_cache):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = load_error("openai-community/gpt2")
    assert "config.json" in msg and "not in the Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE" in msg


def test_name_when_the_hub_cannot_be_reached(monkeypatch, no_network, empty_hub_cache):
    """Not offline by setting: huggingface_hub tries the network, fails, and (after retries that
    we skip here) raises LocalEntryNotFoundError, as observed with huggingface_hub 2.x."""
    from huggingface_hub.utils import LocalEntryNotFoundError
    real = empty_hub_cache.hf_hub_download
    calls = []

    def fake(repo, filename, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            return real(repo, filename, local_files_only=True, **kwargs)   # the (empty) cache
        raise LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(empty_hub_cache, "hf_hub_download", fake)
    monkeypatch.setattr(pretrained, "_hub_reachable", lambda endpoint: True)   # it seemed so
    msg = load_error("gpt2")
    assert calls == [True, False]                   # the cache first, then the network
    assert "could not be reached" in msg and "--model DIR" in msg


def test_no_route_to_the_hub_fails_at_once_without_retries(monkeypatch, empty_hub_cache):
    # a machine with no network: the connection probe fails, so huggingface_hub's network path
    # (5 retries, ~25 s) is never entered
    calls = []
    real = empty_hub_cache.hf_hub_download

    def fake(repo, filename, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        return real(repo, filename, local_files_only=True, **kwargs)

    def no_route(*args, **kwargs):
        raise OSError("Network is unreachable")
    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr(empty_hub_cache, "hf_hub_download", fake)
    msg = load_error("gpt2")
    assert calls == [True] and "could not be reached" in msg
    assert pretrained._hub_reachable("https://huggingface.co") is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")        # behind a proxy: no verdict
    assert pretrained._hub_reachable("https://huggingface.co") is True


def test_name_served_from_the_cache_without_the_network(monkeypatch, no_network, empty_hub_cache,
                                                         tmp_path, hf_source, hf_ids):
    """Files already cached load with no network call, even without HF_HUB_OFFLINE."""
    d = write_hf_dir_by_hand(tmp_path / "snapshot", hf_source)             # no vocab.json: bundled ranks

    def fake(repo, filename, local_files_only=False, **kwargs):
        assert repo == "openai-community/gpt2-medium" and local_files_only
        return str(d / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(empty_hub_cache, "hf_hub_download", fake)
    model, _ = load_model("gpt2-medium")[:2]
    np.testing.assert_array_equal(logits(model, hf_ids), logits(hf_source, hf_ids))


def test_offline_advice_names_the_option_of_the_running_command(tmp_path, monkeypatch):
    from tinygpt.loading import load_model
    from tinygpt.pretrained import PretrainedError
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(PretrainedError) as e:
        load_model("gpt2", option="--init-from")
    assert "--init-from DIR" in str(e.value) and "--model" not in str(e.value)
