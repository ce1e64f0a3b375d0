"""Loading Hugging-Face-layout GPT-2 directories, the commands generate / perplexity / export.

No torch here: each test writes a Hugging Face directory by hand (HF key names, a config.json of
its own) from a random tinygpt model, and the oracle is that source model's own forward pass.
The parity with transformers itself is in tests/test_parity.py.
"""
import json
import re
import socket
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import tensor
from tensor.io import save_safetensors
from tinygpt.bpe import GPT2Tokenizer
from tinygpt.checkpoint import save_checkpoint
from tinygpt.cli import main
from tinygpt.generate import TextStream
from tinygpt.model import GPT, GPTConfig
from tinygpt import pretrained
from tinygpt.evaluate import strided_perplexity
from tinygpt.loading import load_model
from tinygpt.pretrained import PretrainedError
from run_helpers import load_run

# vocab 50257 so that the bundled GPT-2 tokenizer fits the model
SMALL = dict(vocab_size=50257, block_size=32, n_layer=2, n_head=2, n_embd=16)
PREFIX = "transformer."


def random_model(seed=0, **overrides):
    """Every parameter random (biases and LayerNorm gains too), so a swapped tensor shows."""
    model = GPT(GPTConfig(**{**SMALL, **overrides}), seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, p in model.named_parameters():
        gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
        p.data[...] = (1.0 if gain else 0.0) + (0.2 if gain else 0.1) * rng.standard_normal(p.shape)
    return model.eval()


def logits(model, ids):
    with tensor.no_grad():
        return model(np.array([ids]))[0].data[0]


def hf_config(cfg: GPTConfig) -> dict:
    """config.json as transformers' GPT2Config.save_pretrained writes it (the fields that matter)."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "activation_function": "gelu_new", "n_embd": cfg.n_embd, "n_layer": cfg.n_layer,
            "n_head": cfg.n_head, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
            "vocab_size": cfg.vocab_size, "layer_norm_epsilon": 1e-05, "resid_pdrop": 0.1,
            "embd_pdrop": 0.1, "attn_pdrop": 0.1, "bos_token_id": 50256, "eos_token_id": 50256}


def hf_tensors(model, prefix=PREFIX, buffers=True, dtype=np.float32):
    """The weights under Hugging Face's names, with the causal-mask buffers old files carry."""
    out = {prefix + name: x.astype(dtype) for name, x in model.state_dict().items()}
    if buffers:
        T = model.config.block_size
        for i in range(model.config.n_layer):
            out[f"{prefix}h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
            out[f"{prefix}h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    return out


def write_hf_dir(path, model, tensors=None, config=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or hf_config(model.config)))
    save_safetensors(path / "model.safetensors",
                     tensors if tensors is not None else hf_tensors(model))
    return path


@pytest.fixture(scope="module")
def source():
    return random_model()


@pytest.fixture(scope="module")
def ids():
    return [int(i) for i in np.random.default_rng(5).integers(0, SMALL["vocab_size"], 12)]


def load_error(path) -> str:
    with pytest.raises(PretrainedError) as e:
        load_model(path)
    return str(e.value)


# ----- loading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("buffers", [False, True])
def test_load_gives_the_source_models_logits(tmp_path, source, ids, prefix, buffers):
    d = write_hf_dir(tmp_path / "m", source, hf_tensors(source, prefix, buffers))
    model, tok = load_model(d)[:2]
    assert model.config.block_size == SMALL["block_size"] and model.config.dropout == 0
    for name, p in model.named_parameters():
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, source.state_dict()[name], err_msg=name)
    np.testing.assert_array_equal(logits(model, ids), logits(source, ids))
    assert isinstance(tok, GPT2Tokenizer) and tok.eot_token == 50256     # bundled GPT-2 ranks
    assert tok.encode("Hello world") == GPT2Tokenizer.from_tiktoken().encode("Hello world")


def test_tinygpt_load_reads_a_hugging_face_directory(tmp_path, source, ids):
    """tinygpt.load, the one public entry point (GPT.from_pretrained is gone): the source model's
    logits, the bundled GPT-2 tokenizer, eval mode, and a description naming the directory."""
    import tinygpt
    d = write_hf_dir(tmp_path / "m", source)
    model, tok, description = tinygpt.load(str(d))
    np.testing.assert_array_equal(logits(model, ids), logits(source, ids))
    assert not model.training and str(d) in description and "Hugging Face" in description
    assert tok.encode("Hello world") == GPT2Tokenizer.from_tiktoken().encode("Hello world")


def test_tied_lm_head_equal_to_wte_is_accepted(tmp_path, source, ids):
    tensors = hf_tensors(source)
    tensors["lm_head.weight"] = source.wte.weight.data.copy()
    model, _ = load_model(write_hf_dir(tmp_path / "m", source, tensors))[:2]
    np.testing.assert_array_equal(logits(model, ids), logits(source, ids))


def test_untied_lm_head_is_refused(tmp_path, source):
    tensors = hf_tensors(source)
    tensors["lm_head.weight"] = source.wte.weight.data + 1e-3
    msg = load_error(write_hf_dir(tmp_path / "m", source, tensors))
    assert "model.safetensors" in msg and "'lm_head.weight'" in msg and "untied" in msg


def test_float16_weights_become_float32(tmp_path, source, ids):
    d = write_hf_dir(tmp_path / "m", source, hf_tensors(source, dtype=np.float16))
    model, _ = load_model(d)[:2]
    rounded = random_model()                       # the oracle: the source, rounded to float16
    for name, p in rounded.named_parameters():
        p.data[...] = p.data.astype(np.float16).astype(np.float32)
    for _, p in model.named_parameters():
        assert p.dtype == np.float32
    np.testing.assert_array_equal(logits(model, ids), logits(rounded, ids))


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


def test_bfloat16_weights_become_float32(tmp_path, source, ids):
    d = write_hf_dir(tmp_path / "m", source)
    write_bf16_safetensors(d / "model.safetensors", hf_tensors(source, buffers=False))
    model, _ = load_model(d)[:2]
    rounded = random_model()                       # the oracle: float32 with a 7-bit mantissa
    for _, p in rounded.named_parameters():
        x = p.data.astype(np.float32).view(np.uint32).astype(np.uint64)
        x = ((x + 0x7FFF + ((x >> 16) & 1)) >> 16) << 16
        p.data[...] = x.astype(np.uint32).view(np.float32)
    np.testing.assert_array_equal(logits(model, ids), logits(rounded, ids))


# ----- malformed directories: each error names the file and the key ----------------------------

def test_truncated_weights_file(tmp_path, source):
    d = write_hf_dir(tmp_path / "m", source)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    msg = load_error(d)
    assert str(f) in msg and "truncated" in msg and re.search(r"key '[^']+'", msg)


def test_header_whose_offsets_lie(tmp_path, source):
    d = write_hf_dir(tmp_path / "m", source)
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


def test_wrong_shape(tmp_path, source):
    tensors = hf_tensors(source)
    key = f"{PREFIX}h.1.mlp.c_fc.weight"
    tensors[key] = np.ascontiguousarray(tensors[key].T)         # (64, 16): stored [out, in]
    msg = load_error(write_hf_dir(tmp_path / "m", source, tensors))
    assert "model.safetensors" in msg and repr(key) in msg and "[64, 16]" in msg and "[16, 64]" in msg


def test_missing_key(tmp_path, source):
    tensors = hf_tensors(source)
    del tensors[f"{PREFIX}h.1.ln_2.bias"]
    msg = load_error(write_hf_dir(tmp_path / "m", source, tensors))
    assert "model.safetensors" in msg and f"missing key '{PREFIX}h.1.ln_2.bias'" in msg


def test_more_layers_in_config_than_in_the_file(tmp_path, source):
    config = {**hf_config(source.config), "n_layer": 3}
    msg = load_error(write_hf_dir(tmp_path / "m", source, config=config))
    assert "model.safetensors" in msg and f"missing key '{PREFIX}h.2." in msg


def test_unexpected_key(tmp_path, source):
    tensors = hf_tensors(source)
    tensors[f"{PREFIX}h.0.attn.q_proj.weight"] = np.zeros((16, 16), np.float32)
    msg = load_error(write_hf_dir(tmp_path / "m", source, tensors))
    assert "model.safetensors" in msg and f"unexpected key '{PREFIX}h.0.attn.q_proj.weight'" in msg


def test_the_same_weight_twice(tmp_path, source):
    tensors = hf_tensors(source)
    tensors["wte.weight"] = tensors[f"{PREFIX}wte.weight"]
    msg = load_error(write_hf_dir(tmp_path / "m", source, tensors))
    assert "'wte.weight'" in msg and f"'{PREFIX}wte.weight'" in msg


def test_pickle_file_is_refused(tmp_path, source):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf_config(source.config)))
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read by tinygpt")
    msg = load_error(d)
    assert "pytorch_model.bin" in msg and "pickle" in msg and "model.safetensors" in msg


def test_missing_config(tmp_path, source):
    d = write_hf_dir(tmp_path / "m", source)
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
def test_unsupported_config(tmp_path, source, field, value, words):
    config = {**hf_config(source.config), field: value}
    msg = load_error(write_hf_dir(tmp_path / "m", source, config=config))
    assert "config.json" in msg and field in msg and words in msg


def test_vocab_without_merges(tmp_path, source):
    d = write_hf_dir(tmp_path / "m", source)
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
                                                         tmp_path, source, ids):
    """Files already cached load with no network call, even without HF_HUB_OFFLINE."""
    d = write_hf_dir(tmp_path / "snapshot", source)             # no vocab.json: bundled ranks

    def fake(repo, filename, local_files_only=False, **kwargs):
        assert repo == "openai-community/gpt2-medium" and local_files_only
        return str(d / filename)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(empty_hub_cache, "hf_hub_download", fake)
    model, _ = load_model("gpt2-medium")[:2]
    np.testing.assert_array_equal(logits(model, ids), logits(source, ids))


# ----- perplexity over strided windows ----------------------------------------------------------

def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def perplexity_oracle(model, ids, stride):
    """Windows ids[k*stride : k*stride + T] predict their tokens k*stride+1 .. k*stride+T-1.
    Token i is scored by the first window that predicts it: the smallest k with
    k*stride + T - 1 >= i, if k*stride < i (else no window gives it context); its context is
    ids[k*stride : i]."""
    T, nll = model.config.block_size, []
    for i in range(1, len(ids)):
        k = max(0, -(-(i - T + 1) // stride))                        # ceil((i - T + 1) / stride)
        if k * stride >= i:
            continue
        context = ids[k * stride:i]
        assert 1 <= len(context) <= T - 1
        nll.append(-log_softmax(logits(model, context)[-1])[ids[i]])
    return float(np.exp(np.mean(nll))), len(nll)


@pytest.fixture(scope="module")
def small_vocab():
    return random_model(seed=2, vocab_size=97)


@pytest.mark.parametrize("n, stride", [(20, 16), (75, 32), (75, 8), (75, 5), (33, 1), (64, 31),
                                       (70, 32), (65, 32)])
def test_strided_perplexity(small_vocab, n, stride):
    ids = [int(i) for i in np.random.default_rng(n).integers(0, 97, n)]
    seen = []
    ppl, scored, _ = strided_perplexity(small_vocab, ids, stride,
                                        lambda done, total: seen.append((done, total)))
    want, count = perplexity_oracle(small_vocab, ids, stride)
    assert scored == count
    assert count == (n - 1 if stride < SMALL["block_size"] else n - 1 - (n - 1) // stride)
    assert seen[-1] == (count, count) and seen == sorted(seen)
    assert ppl == pytest.approx(want, rel=1e-5)


def test_strided_perplexity_refuses_a_bad_stride(source):
    with pytest.raises(ValueError, match="stride"):
        strided_perplexity(source, [1, 2, 3], stride=SMALL["block_size"] + 1)


# ----- the commands -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, source):
    return write_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-gpt2", source)


def greedy(model, ids, n, stop):
    ids, out = list(ids), []
    for _ in range(n):
        nxt = int(np.argmax(logits(model, ids[-model.config.block_size:])[-1]))
        if nxt == stop:
            break
        ids.append(nxt)
        out.append(nxt)
    return out


def test_generate_command_streams_the_greedy_continuation(hf_dir, source):
    tok = GPT2Tokenizer.from_tiktoken()
    prompt = "Hello, I'm a language model,"
    result = CliRunner().invoke(main, ["generate", "--model", str(hf_dir), "--temperature", "0",
                                       "--max-new-tokens", "40", prompt])
    assert result.exit_code == 0, result.output
    want = tok.decode(greedy(source, tok.encode(prompt), 40, tok.eot_token))
    assert result.stdout == prompt + want + "\n"     # 40 tokens: past block_size 32 too
    assert "tokens/s" in result.stderr


def test_generate_command_with_a_seed_is_repeatable(hf_dir):
    args = ["generate", "--model", str(hf_dir), "--max-new-tokens", "10", "--seed", "3", "Hi"]
    a, b = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
    assert a.exit_code == 0 and a.stdout == b.stdout
    two = CliRunner().invoke(main, args + ["--num-samples", "2"])
    first, second = two.stdout.split("-" * 40 + "\n")
    assert first == a.stdout and second.startswith("Hi") and second != first   # seeds 3 and 4


def test_commands_accept_a_training_checkpoint(tmp_path, source):
    out = write_checkpoint(tmp_path / "out", source, {"type": "gpt2"})
    tok = GPT2Tokenizer.from_tiktoken()
    result = CliRunner().invoke(main, ["generate", "--model", str(out), "--temperature", "0",
                                       "--max-new-tokens", "6", "Hi"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hi" + tok.decode(greedy(source, tok.encode("Hi"), 6, tok.eot_token)) + "\n"


def test_generate_command_reports_a_bad_model_cleanly(tmp_path):
    result = CliRunner().invoke(main, ["generate", "--model", str(tmp_path), "Hi"])
    assert result.exit_code == 1 and "config.json" in result.output and "Traceback" not in result.output


def test_text_stream_never_splits_a_character():
    tok = GPT2Tokenizer.from_tiktoken()
    text = "héllo 世界 🎉 naïve — ok"
    ids = tok.encode(text)
    # the test needs tokens that end inside a character (else it proves nothing)
    assert any(_cuts_a_character(tok.decode_bytes([i])) for i in ids)
    stream = TextStream(tok)
    pieces = [stream.feed(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def _cuts_a_character(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_text_stream_flushes_an_unfinished_character():
    tok = GPT2Tokenizer.from_tiktoken()
    lead = next(i for i in range(256) if tok.decode_bytes([i]) == b"\xc3")   # é's first byte
    stream = TextStream(tok)
    assert stream.feed(lead) == ""                              # held back: half a character
    assert stream.flush() == "\ufffd"                           # the end: shown as unfinished


def test_perplexity_command(tmp_path, hf_dir, source):
    tok = GPT2Tokenizer.from_tiktoken()
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 4
    f = tmp_path / "text.txt"
    f.write_text(text, encoding="utf-8")
    ids = tok.encode(text)
    assert len(ids) > 40
    result = CliRunner().invoke(main, ["perplexity", "--model", str(hf_dir), str(f),
                                       "--stride", "8", "--max-tokens", "40"])
    assert result.exit_code == 0, result.output
    got = float(re.search(r"perplexity ([0-9.]+)", result.stdout).group(1))
    want, count = perplexity_oracle(source, ids[:40], 8)        # two windows: 0-32, 8-40
    assert count == 39 and got == pytest.approx(want, rel=1e-4)
    assert "over 39 tokens" in result.stdout and "tokens/s" in result.stdout
    assert "scored [" in result.stderr and "39/39" in result.stderr   # the progress display


def test_perplexity_command_errors(tmp_path, hf_dir):
    f = tmp_path / "one.txt"
    f.write_text("a", encoding="utf-8")
    result = CliRunner().invoke(main, ["perplexity", "--model", str(hf_dir), str(f)])
    assert result.exit_code == 1 and "at least 2" in result.output
    result = CliRunner().invoke(main, ["perplexity", "--model", str(hf_dir), str(f),
                                       "--stride", "33"])
    assert result.exit_code == 1 and "--stride 33" in result.output


# ----- export -----------------------------------------------------------------------------------

def write_checkpoint(out, model, tokenizer: dict):
    save_checkpoint(out, model, {"model": model.config.to_dict(), "tokenizer": tokenizer,
                                 "iteration": 0})
    return out


def export(out, to, *extra):
    return CliRunner().invoke(main, ["export", "--model", str(out), "--to", str(to), *extra])


def test_export_round_trip_bpe(tmp_path, monkeypatch, source, ids):
    out = write_checkpoint(tmp_path / "out", source, {"type": "gpt2"})
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu_new"
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["tie_word_embeddings"] is True
    assert (config["n_positions"], config["eos_token_id"]) == (32, 50256)
    bundled = GPT2Tokenizer.from_tiktoken()
    monkeypatch.setattr(GPT2Tokenizer, "from_tiktoken", None)   # vocab.json + merges.txt only
    model, tok = load_model(tmp_path / "hf")[:2]
    np.testing.assert_array_equal(logits(model, ids), logits(source, ids))
    text = "Round trip: ünïcödé 🎉 <|endoftext|>"
    assert tok.encode(text) == bundled.encode(text)


def test_export_of_a_model_without_biases(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("abcdefgh ")
    model = random_model(seed=3, bias=False, vocab_size=tok.vocab_size)
    out = write_checkpoint(tmp_path / "out", model, tok.to_dict())
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 0, result.output
    loaded, _ = load_model(tmp_path / "hf")[:2]                 # zero biases: the same function
    ids = tok.encode("bad cafe")
    np.testing.assert_allclose(logits(loaded, ids), logits(model, ids), rtol=0, atol=1e-6)


def test_export_round_trip_char_model(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    tok = CharTokenizer.from_text("hello world, héllo wörld\n")
    model = random_model(seed=4, vocab_size=tok.vocab_size)
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


def test_export_refuses_to_clobber(tmp_path, source):
    out = write_checkpoint(tmp_path / "out", source, {"type": "gpt2"})
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    result = export(out, tmp_path / "hf")
    assert result.exit_code == 1 and "not empty" in result.output and "--overwrite" in result.output
    result = export(out, out)
    assert result.exit_code == 1 and "checkpoint directory itself" in result.output
    assert load_run(out)[2]["iteration"] == 0                       # the run: untouched
    (tmp_path / "hf" / "tinygpt_char_vocab.json").write_text("{}")    # from an earlier export
    result = export(out, tmp_path / "hf", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "hf" / "tinygpt_char_vocab.json").exists()   # stale: removed
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine"       # not ours: kept
    assert load_model(tmp_path / "hf")[:2][0].config == source.config


def test_export_of_a_missing_checkpoint(tmp_path):
    result = export(tmp_path / "nothing", tmp_path / "hf")
    assert result.exit_code == 1 and "tinygpt train" in result.output
