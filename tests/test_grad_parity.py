"""tinygpt's GPT against an independent PyTorch GPT-2, parameter by parameter (llm.c's test).

From identical weights, both models compute the logits, the loss and the gradient of every
parameter; then both take three AdamW steps with gradient clipping and the weights are compared.
Both of tinygpt's paths are checked: fused (the default) and op-by-op (`tensor.fused(False)`,
held around forward AND backward, and around the optimizer step, which has a fused kernel too).

The reference below is written for this test on torch's own building blocks (nn.Linear, which
stores its weight [out, in]; nn.LayerNorm; the tanh GELU; softmax over a masked score matrix;
F.cross_entropy). It shares no code with tinygpt. tinygpt's Linear stores [in, out] (GPT-2's
Conv1D layout), so every Linear weight is transposed on the way in and its gradient on the way
back; `swap_layout` is the one place that knows.

Error measure, per tensor: max|tinygpt - torch| / max|torch|  (a relative error against the
tensor's scale, so a tensor with small and large entries is not judged by its smallest ones),
at most 1e-4 in float32 and 1e-10 in float64, for the logits, the loss, every gradient and every
weight after the AdamW steps (see zero_key_bias_gradients for the one gradient made exact first).
Needs the optional `parity` extra; skipped without it.
"""
import math

import numpy as np
import pytest

REASON = "the parity tests need the optional `parity` extra: pip install -e '.[parity]'"
torch = pytest.importorskip("torch", reason=REASON)

import tensor  # noqa: E402
from tensor import optim  # noqa: E402
from tinygpt.model import GPT, GPTConfig  # noqa: E402

nn, Fn = torch.nn, torch.nn.functional

TOL = {np.float32: 1e-4, np.float64: 1e-10}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}

# name -> (GPTConfig fields, batch B, sequence length T). Odd sizes on purpose; T < block and
# T == block; one head and many; biases or none; one config with ignored targets (-1).
CONFIGS = {
    "bias-2layer-4head-T<block": ({"vocab_size": 61, "block_size": 16, "n_layer": 2,
                                   "n_head": 4, "n_embd": 32, "bias": True}, 2, 11),
    "nobias-1layer-2head-T=block": ({"vocab_size": 50, "block_size": 8, "n_layer": 1,
                                     "n_head": 2, "n_embd": 16, "bias": False}, 3, 8),
    "bias-3layer-1head-T=block-ignore": ({"vocab_size": 97, "block_size": 12, "n_layer": 3,
                                          "n_head": 1, "n_embd": 24, "bias": True}, 2, 12),
    "nobias-2layer-6head-T<block": ({"vocab_size": 33, "block_size": 20, "n_layer": 2,
                                     "n_head": 6, "n_embd": 24, "bias": False}, 1, 7),
}
PATHS = {"fused": True, "op-by-op": False}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # tiny matrices: threads only add overhead
    yield
    torch.set_num_threads(threads)


# ---- the reference: a small GPT-2 in PyTorch, with GPT-2's parameter names -------------------
class TorchAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)                     # 3 × (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)                     # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)                     # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)                     # (B, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(hs)             # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)          # True above the diagonal
        att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)               # (B, T, C)
        return self.c_proj(y)


class TorchMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(Fn.gelu(self.c_fc(x), approximate="tanh"))


class TorchBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)
        self.attn = TorchAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)
        self.mlp = TorchMLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.h = nn.ModuleList([TorchBlock(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))                # (B, T, C)
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T                    # tied: (B, T, vocab)
        loss = Fn.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                ignore_index=-1)
        return logits, loss


# ---- identical weights on both sides ------------------------------------------------------------
def swap_layout(reference, name, a):
    """Parameter `name`'s array in the other model's layout. nn.Linear weights are [out, in] and
    tinygpt's are [in, out], so those are transposed (the same swap in either direction);
    everything else (embeddings, LayerNorm gains, biases) is laid out alike."""
    module, _, kind = name.rpartition(".")
    if kind == "weight" and isinstance(reference.get_submodule(module), nn.Linear):
        return a.T
    return a


def make_pair(name, dtype, seed=0):
    """A tinygpt GPT with every weight drawn at random (biases and gains too: zeros and ones
    would hide a bias or gain applied in the wrong place) and a torch model holding a copy."""
    fields, _, _ = CONFIGS[name]
    cfg = GPTConfig(dropout=0.0, **fields)
    model = GPT(cfg, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    for pname, p in model.named_parameters():
        if pname.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            values = 1.0 + 0.2 * rng.standard_normal(p.shape)        # LayerNorm gains
        elif pname.endswith("bias"):
            values = 0.2 * rng.standard_normal(p.shape)
        elif pname in ("wte.weight", "wpe.weight"):
            values = 0.5 * rng.standard_normal(p.shape)
        else:                                                        # Linear [in, out]
            values = rng.standard_normal(p.shape) / math.sqrt(p.shape[0])
        p.data[...] = values.astype(dtype)

    torch.manual_seed(seed)
    reference = TorchGPT(cfg).to(TORCH_DTYPE[dtype])
    ours = dict(model.named_parameters())
    theirs = dict(reference.named_parameters())
    # every parameter on both sides, by name: none is skipped, none is extra (wte is tied: one)
    assert sorted(ours) == sorted(theirs)
    with torch.no_grad():
        for pname, p in theirs.items():
            p.copy_(torch.from_numpy(np.ascontiguousarray(
                swap_layout(reference, pname, ours[pname].data))))
    for pname, p in theirs.items():
        assert np.array_equal(swap_layout(reference, pname, p.detach().numpy()),
                              ours[pname].data), pname
    return model, reference


def batch(name, seed):
    fields, B, T = CONFIGS[name]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, fields["vocab_size"], (B, T))
    targets = rng.integers(0, fields["vocab_size"], (B, T))
    if name.endswith("ignore"):
        targets[:, ::3] = -1                                         # ignored positions
        targets[0, -1] = -1
    return idx, targets


def rel_err(ours, theirs):
    """max|ours - theirs| / max|theirs|; exact equality is required of an all-zero reference."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.abs(theirs).max()
    diff = np.abs(ours - theirs).max()
    if scale == 0:
        return 0.0 if diff == 0 else math.inf
    return diff / scale


def tinygpt_step(model, idx, targets, fused):
    """Forward and backward, both under the same fused setting."""
    model.zero_grad()
    with tensor.fused(fused):
        logits, loss = model(idx, targets)
        loss.backward()
    return logits.data, float(loss.data)


def torch_step(reference, idx, targets):
    reference.zero_grad(set_to_none=True)
    logits, loss = reference(torch.from_numpy(idx), torch.from_numpy(targets))
    loss.backward()
    return logits.detach().numpy(), loss.item()


# ---- logits, loss, every gradient ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CONFIGS)
def test_logits_loss_and_every_gradient_match_torch(name, path, dtype):
    model, reference = make_pair(name, dtype)
    idx, targets = batch(name, seed=10)
    logits, loss = tinygpt_step(model, idx, targets, PATHS[path])
    want_logits, want_loss = torch_step(reference, idx, targets)

    errors = {"logits": rel_err(logits, want_logits), "loss": rel_err(loss, want_loss)}
    theirs = dict(reference.named_parameters())
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname}: tinygpt computed no gradient"
        assert theirs[pname].grad is not None, f"{pname}: torch computed no gradient"
        want = swap_layout(reference, pname, theirs[pname].grad.numpy())
        errors[f"grad {pname}"] = rel_err(p.grad, want)
    assert len(errors) == 2 + len(theirs)
    worst = max(errors, key=errors.get)
    print(f"\n{name} {path} {np.dtype(dtype).name}: worst {worst} {errors[worst]:.2e}")
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= TOL[dtype]}
    assert not bad, f"relative error above {TOL[dtype]:.0e}: {bad}"


# ---- three AdamW steps with a clip that binds ------------------------------------------------
LR, BETAS, EPS, WEIGHT_DECAY = 1e-2, (0.9, 0.99), 1e-8, 0.1


def zero_key_bias_gradients(model, reference, dtype):
    """Set the key part of each c_attn bias gradient to its exact value, 0, on both sides.

    A key bias adds q·b_k to every score of a query's row, and softmax ignores a constant added
    to a row, so dLoss/db_k = 0 exactly. Computed, it is rounding noise (about 1e-8 in float32,
    1e-17 in float64), and the two models' noise differs. AdamW divides m̂ by √v̂ + eps with
    eps = 1e-8, the size of that noise, so it turns noise into a step of up to lr with either
    sign: compared as is, the key biases would differ by about 1e-2 of their size after three
    float32 steps although both models are right. So: check it is noise, then make it exact."""
    C = model.config.n_embd
    theirs = dict(reference.named_parameters())
    for pname, p in model.named_parameters():
        if pname.endswith("attn.c_attn.bias"):
            for g in (p.grad, theirs[pname].grad.numpy()):           # the torch view is shared
                assert np.abs(g[C:2 * C]).max() <= TOL[dtype] * np.abs(g).max(), pname
                g[C:2 * C] = 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["bias-2layer-4head-T<block", "nobias-1layer-2head-T=block"])
def test_weights_after_three_clipped_adamw_steps_match_torch(name, path, dtype):
    model, reference = make_pair(name, dtype)
    fused = PATHS[path]
    params = model.parameters()
    # tinygpt's grouping (tensor/optim.py, as tinygpt/train.py uses it): weight decay on
    # parameters with >= 2 dimensions (embeddings, Linear weights), none on biases and gains
    ours = optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    decayed = [p for p in reference.parameters() if p.dim() >= 2]
    rest = [p for p in reference.parameters() if p.dim() < 2]
    assert sum(ours.decay) == len(decayed) and len(rest) > 0, "decay groups differ from torch's"
    theirs = torch.optim.AdamW([{"params": decayed, "weight_decay": WEIGHT_DECAY},
                                {"params": rest, "weight_decay": 0.0}],
                               lr=LR, betas=BETAS, eps=EPS)

    max_norm = None
    for step in range(3):
        idx, targets = batch(name, seed=20 + step)
        tinygpt_step(model, idx, targets, fused)
        torch_step(reference, idx, targets)
        zero_key_bias_gradients(model, reference, dtype)
        if max_norm is None:      # 0.3 × the first gradient norm: the clip binds
            max_norm = 0.3 * math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2))
                                           for p in params))
        with tensor.fused(fused):
            norm = optim.clip_grad_norm_(params, max_norm)
            ours.step()
        want_norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm).item()
        theirs.step()
        assert norm > max_norm and want_norm > max_norm, "the clip must bind on every step"
        assert rel_err(norm, want_norm) <= TOL[dtype], \
            f"step {step}: gradient norm {norm} vs torch {want_norm}"

    named = dict(reference.named_parameters())
    errors = {pname: rel_err(p.data, swap_layout(reference, pname, named[pname].detach().numpy()))
              for pname, p in model.named_parameters()}
    assert len(errors) == len(named)
    worst = max(errors, key=errors.get)
    print(f"\nadamw {name} {path} {np.dtype(dtype).name}: worst {worst} {errors[worst]:.2e}")
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e <= TOL[dtype]}
    assert not bad, f"relative error above {TOL[dtype]:.0e} after 3 steps: {bad}"
