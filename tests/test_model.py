"""GPT-2 model: gradients, names, causality, learning, checkpoints."""
import json

import numpy as np
import pytest

import tensor
from tinygpt.model import GPT, GPTConfig, PRESETS
from tinygpt import checkpoint as ckpt


def tiny(dtype=np.float32, **kw):
    cfg = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg), seed=0, dtype=dtype)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernels", "op-by-op"])
def test_whole_gpt_gradcheck_float64(fused):
    # Every parameter of a 2-layer, 2-head, 8-dim GPT, at T=5, against finite differences,
    # through the fused kernels and through the op-by-op NumPy path.
    model = tiny(np.float64)
    rng = np.random.default_rng(1)
    # move off the symmetric init (zero biases, unit gains) so every path carries signal
    for p in model.parameters():
        p.data += 0.1 * rng.standard_normal(p.shape)
    idx = rng.integers(0, 11, size=(2, 5))
    targets = rng.integers(0, 11, size=(2, 5))
    params = model.parameters()
    assert all(p.dtype == np.float64 for p in params)
    with tensor.fused(fused):
        tensor.gradcheck(lambda *ps: model(idx, targets)[1], *params)
        tensor.gradcheck(lambda *ps: model(idx)[0], *params)    # the logits, random upstream grads


def test_fused_and_op_by_op_models_agree():
    model = tiny()
    idx = np.random.default_rng(0).integers(0, 11, size=(3, 8))
    with tensor.fused(True):
        a, la = model(idx, idx)
        la.backward()
        ga = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    with tensor.fused(False):
        b, lb = model(idx, idx)
        lb.backward()
    np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        np.testing.assert_allclose(ga[n], p.grad, rtol=1e-4, atol=1e-6, err_msg=n)


def test_parameter_names_follow_gpt2():
    names = [n for n, _ in tiny(n_layer=1).named_parameters()]
    assert names == ["wte.weight", "wpe.weight",
                     "h.0.ln_1.weight", "h.0.ln_1.bias",
                     "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias",
                     "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias",
                     "h.0.ln_2.weight", "h.0.ln_2.bias",
                     "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias",
                     "h.0.mlp.c_proj.weight", "h.0.mlp.c_proj.bias",
                     "ln_f.weight", "ln_f.bias"]
    sd = tiny(n_layer=1).state_dict()
    assert sd["h.0.attn.c_attn.weight"].shape == (8, 24)      # Conv1D layout [in, out]
    assert sd["h.0.mlp.c_fc.weight"].shape == (8, 32)         # 4x wider


def test_init_statistics():
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=128), seed=0)
    sd = model.state_dict()
    assert abs(sd["wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    assert abs(sd["h.0.mlp.c_proj.weight"].std() - 0.02 / np.sqrt(2 * 4)) < 0.001
    assert not sd["h.0.attn.c_attn.bias"].any()
    assert (sd["ln_f.weight"] == 1).all()


def test_logits_are_causal():
    model = tiny()
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    changed = idx.copy()
    changed[0, 4] = 9
    a, b = model(idx)[0].data, model(changed)[0].data
    np.testing.assert_array_equal(a[:, :4], b[:, :4])          # earlier positions can't see it
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-6


def test_output_projection_is_tied_to_wte():
    model = tiny()
    idx = np.array([[3, 1, 4]])
    logits = model(idx)[0].data
    # recompute the last step by hand: ln_f output @ wte.T
    model.wte.weight.data[7] += 1.0
    assert not np.allclose(model(idx)[0].data[..., 7], logits[..., 7])


def test_block_size_is_enforced_with_clear_error():
    with pytest.raises(ValueError, match="block_size is 8"):
        tiny()(np.zeros((1, 9), dtype=np.int64))


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="unknown fields"):
        GPTConfig.from_dict({"n_layers": 3})
    assert PRESETS["baby"]["n_embd"] == 128


def test_tiny_model_overfits_a_short_string():
    from tinygpt.tokenizer import CharTokenizer
    text = "to be or not to be, that is the question. "
    tok = CharTokenizer.from_text(text)
    ids = np.array(tok.encode(text * 3))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2,
                          n_embd=32), seed=0)
    opt = tensor.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x = np.stack([ids[i:i + 32] for i in range(0, 64, 8)])
    y = np.stack([ids[i + 1:i + 33] for i in range(0, 64, 8)])
    for _ in range(300):
        _, loss = model(x, y)
        model.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_checkpoint_round_trip(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    model = tiny()
    tok = CharTokenizer.from_text("abcdefghijk")
    config = {"model": model.config.to_dict(), "tokenizer": tok.to_dict(), "iteration": 7}
    ckpt.save_checkpoint(tmp_path, model, config)
    loaded, tok2, cfg = ckpt.load_model(tmp_path)
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(loaded(idx)[0].data, model(idx)[0].data)
    assert tok2.decode(tok2.encode("abc")) == "abc" and cfg["iteration"] == 7
    assert not list(tmp_path.glob("*.tmp*")), "no temp files left behind"


def _saved(tmp_path):
    from tinygpt.tokenizer import CharTokenizer
    model = tiny()
    config = {"model": model.config.to_dict(),
              "tokenizer": CharTokenizer.from_text("abcdefghijk").to_dict(), "iteration": 3}
    return ckpt.save_checkpoint(tmp_path, model, config)     # the checkpoint's directory


def _without_manifest(d):
    """As an older tinygpt wrote it: no manifest, so only the files' own checks remain."""
    (d / "manifest.json").unlink()
    return d


def test_missing_checkpoint_names_the_directory(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="nothing"):
        ckpt.load_model(tmp_path / "nothing")


@pytest.mark.parametrize("manifest", [True, False])
def test_truncated_weights_name_the_file(tmp_path, manifest):
    d = _saved(tmp_path) if manifest else _without_manifest(_saved(tmp_path))
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.load_model(d)


@pytest.mark.parametrize("manifest", [True, False])
def test_corrupt_config_names_the_file(tmp_path, manifest):
    d = _saved(tmp_path) if manifest else _without_manifest(_saved(tmp_path))
    (d / "config.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="config.json"):
        ckpt.load_model(d)


def test_wrong_shapes_in_checkpoint_are_named(tmp_path):
    d = _without_manifest(_saved(tmp_path))
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["n_embd"] = 12
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="wte.weight"):
        ckpt.load_model(d)


def test_mixed_iterations_are_detected(tmp_path):
    d = _without_manifest(_saved(tmp_path))
    cfg = json.loads((d / "config.json").read_text())
    cfg["iteration"] = 99          # as if a crash left config.json from a later save
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ckpt.CheckpointError, match="different saves"):
        ckpt.load_model(d)
