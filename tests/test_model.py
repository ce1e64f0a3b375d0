"""tinygpt/model.py: gradients, names, causality, learning, what model.py imports."""
import math
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

import tensor
from tensor import functional as F
from tensor import nn
import tinygpt
from tinygpt.model import GPT, GPTConfig, PRESETS

from helpers import tiny_gpt


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernels", "op-by-op"])
def test_whole_gpt_gradcheck_float64(fused):
    # Every parameter of a 2-layer, 2-head, 8-dim GPT, at T=5, against finite differences,
    # through the fused kernels and through the op-by-op NumPy path.
    model = tiny_gpt(np.float64)
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
    model = tiny_gpt()
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


def _set_dropout_stream(model, seed):
    rng = np.random.default_rng(seed)
    for _, m in model.named_modules():
        if isinstance(m, nn.Dropout):
            m.generator = rng


def test_fused_and_op_by_op_models_agree_with_dropout():
    # with dropout the fused attention draws its mask from the same stream, in the same order,
    # as the op-by-op path's attn_dropout: the same seed gives the same training step (float64)
    model = tiny_gpt(np.float64, dropout=0.3)
    idx = np.random.default_rng(0).integers(0, 11, size=(3, 8))
    results = {}
    for fused in (True, False):
        _set_dropout_stream(model, 5)
        model.zero_grad()
        with tensor.fused(fused):
            logits, loss = model(idx, idx)
            loss.backward()
        results[fused] = (loss.item(), {n: p.grad.copy() for n, p in model.named_parameters()})
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-12)
    for n in results[True][1]:
        np.testing.assert_allclose(results[True][1][n], results[False][1][n], rtol=1e-9,
                                   atol=1e-12, err_msg=n)
    # and dropout does something: another stream gives another loss
    _set_dropout_stream(model, 6)
    assert model(idx, idx)[1].item() != pytest.approx(results[True][0], rel=1e-6)
    # eval mode: no mask at all, fused and op-by-op alike
    model.eval()
    with tensor.fused(True):
        a = model(idx, idx)[1].item()
    with tensor.fused(False):
        b = model(idx, idx)[1].item()
    assert a == pytest.approx(b, rel=1e-12)


def test_parameter_names_follow_gpt2():
    names = [n for n, _ in tiny_gpt(n_layer=1).named_parameters()]
    assert names == ["wte.weight", "wpe.weight",
                     "h.0.ln_1.weight", "h.0.ln_1.bias",
                     "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias",
                     "h.0.attn.c_proj.weight", "h.0.attn.c_proj.bias",
                     "h.0.ln_2.weight", "h.0.ln_2.bias",
                     "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias",
                     "h.0.mlp.c_proj.weight", "h.0.mlp.c_proj.bias",
                     "ln_f.weight", "ln_f.bias"]
    sd = tiny_gpt(n_layer=1).state_dict()
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


class _OldPath:
    """The model as tinygpt built it before the weights were named by keyword: every nn.Linear
    and nn.Embedding given (..., dtype, rng, std, init) positionally, in the same order, and the
    same forward pass (GELU in its tanh form, F.gelu's default then). The oracle for "not a bit
    has changed"."""

    def __init__(self, cfg, seed, dtype=np.float32):
        rng, C, L = np.random.default_rng(seed), cfg.n_embd, cfg.n_layer
        proj_std = 0.02 / math.sqrt(2 * L)
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, C, dtype, rng, 0.02, True)
        self.wpe = nn.Embedding(cfg.block_size, C, dtype, rng, 0.02, True)
        nn.Dropout(cfg.dropout, rng)
        self.h = []
        for _ in range(L):
            blk = {"ln_1": nn.LayerNorm(C, eps=1e-5, bias=cfg.bias, dtype=dtype)}
            blk["c_attn"] = nn.Linear(C, 3 * C, cfg.bias, dtype, rng, 0.02, True)
            blk["attn_proj"] = nn.Linear(C, C, cfg.bias, dtype, rng, proj_std, True)
            nn.Dropout(cfg.dropout, rng), nn.Dropout(cfg.dropout, rng)
            blk["ln_2"] = nn.LayerNorm(C, eps=1e-5, bias=cfg.bias, dtype=dtype)
            blk["c_fc"] = nn.Linear(C, 4 * C, cfg.bias, dtype, rng, 0.02, True)
            blk["mlp_proj"] = nn.Linear(4 * C, C, cfg.bias, dtype, rng, proj_std, True)
            self.h.append(blk)
        self.ln_f = nn.LayerNorm(C, eps=1e-5, bias=cfg.bias, dtype=dtype)

    def state_dict(self):
        out = {"wte.weight": self.wte.weight.data, "wpe.weight": self.wpe.weight.data}
        names = {"ln_1": "ln_1", "c_attn": "attn.c_attn", "attn_proj": "attn.c_proj",
                 "ln_2": "ln_2", "c_fc": "mlp.c_fc", "mlp_proj": "mlp.c_proj"}
        for i, blk in enumerate(self.h):
            for key, name in names.items():
                for pname, p in blk[key].named_parameters():
                    out[f"h.{i}.{name}.{pname}"] = p.data
        out.update({f"ln_f.{n}": p.data for n, p in self.ln_f.named_parameters()})
        return out

    def logits(self, idx):
        B, T = idx.shape
        nh, hs = self.cfg.n_head, self.cfg.n_embd // self.cfg.n_head
        x = self.wte(idx) + self.wpe(np.arange(T))
        for blk in self.h:
            qkv = blk["c_attn"](blk["ln_1"](x))
            if tensor.is_fused():
                y = F.attention(qkv, nh)
            else:
                q, k, v = (t.reshape(B, T, nh, hs).transpose(1, 2) for t in F.split(qkv, 3, -1))
                att = F.softmax(q @ k.transpose(-2, -1), axis=-1, scale=1.0 / math.sqrt(hs),
                                causal=True)
                y = (att @ v).transpose(1, 2).reshape(B, T, -1)
            x = x + blk["attn_proj"](y)
            x = x + blk["mlp_proj"](F.gelu(blk["c_fc"](blk["ln_2"](x)), approximate="tanh"))
        return self.ln_f(x) @ self.wte.weight.T


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernels", "op-by-op"])
def test_weights_and_logits_are_bit_for_bit_those_of_the_old_positional_init(fused):
    cfg = GPTConfig(vocab_size=53, block_size=16, n_layer=3, n_head=2, n_embd=16)
    old, new = _OldPath(cfg, seed=3), GPT(cfg, seed=3)
    want = old.state_dict()
    got = new.state_dict()
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    idx = np.random.default_rng(0).integers(0, 53, (2, 12))
    with tensor.no_grad(), tensor.fused(fused):
        np.testing.assert_array_equal(new(idx)[0].data, old.logits(idx).data)


def _fresh_python(code: str):
    """Run code in a new interpreter (so no module is imported yet); fail with its stderr."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(Path(__file__).resolve().parents[1]), timeout=120)
    assert done.returncode == 0, done.stderr


def test_model_py_does_not_import_pretrained_loading_or_checkpoints():
    """pretrained.py imports model.py, so model.py must not import it back, not even inside a
    function (the lazy import GPT.from_pretrained had): read every import statement in the file,
    then import the module in a fresh interpreter."""
    import ast
    tree = ast.parse((Path(tinygpt.__file__).parent / "model.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[-1] in ("pretrained", "loading", "checkpoint")]
    _fresh_python("import sys, tinygpt.model\n"
                  "bad = [m for m in ('tinygpt.pretrained', 'tinygpt.loading', "
                  "'tinygpt.checkpoint') if m in sys.modules]\n"
                  "assert not bad, f'import tinygpt.model pulled in {bad}'")


def test_import_tinygpt_is_cheap_and_load_imports_the_loader_on_call():
    _fresh_python("import sys, tinygpt\n"
                  "bad = [m for m in sys.modules\n"
                  "       if m.startswith(('tinygpt.', 'numpy', 'tensor'))]\n"
                  "assert not bad, f'import tinygpt pulled in {bad}'\n"
                  "assert callable(tinygpt.load)")


def test_gpt_has_no_from_pretrained_any_more():
    """tinygpt.load is the one entry point; a classmethod would need model.py to import
    pretrained.py, which imports model.py."""
    assert not hasattr(GPT, "from_pretrained")


def test_logits_are_causal():
    model = tiny_gpt()
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    changed = idx.copy()
    changed[0, 4] = 9
    a, b = model(idx)[0].data, model(changed)[0].data
    np.testing.assert_array_equal(a[:, :4], b[:, :4])          # earlier positions can't see it
    assert np.abs(a[:, 4:] - b[:, 4:]).max() > 1e-6


def test_output_projection_is_tied_to_wte():
    model = tiny_gpt()
    idx = np.array([[3, 1, 4]])
    logits = model(idx)[0].data
    # recompute the last step by hand: ln_f output @ wte.T
    model.wte.weight.data[7] += 1.0
    assert not np.allclose(model(idx)[0].data[..., 7], logits[..., 7])


def test_block_size_is_enforced_with_clear_error():
    with pytest.raises(ValueError, match="block_size is 8"):
        tiny_gpt()(np.zeros((1, 9), dtype=np.int64))


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
