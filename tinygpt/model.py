"""GPT-2, top to bottom, with the names of the released model.

    idx (B, T) ── wte + wpe ──> x (B, T, C)
      └─ for each block h.i:   x = x + attn(ln_1(x));   x = x + mlp(ln_2(x))
    ln_f(x) @ wteᵀ ──> logits (B, T, vocab)        (the output projection is the token table)

B = batch, T = time (tokens), C = n_embd, nh = n_head, hs = C // nh (head size).
Every Linear stores its weight [in, out], as GPT-2's Conv1D layers do, so released weights load
one to one (see tinygpt/pretrained.py).

Top to bottom, as nanoGPT's model.py: the config and the preset sizes, then the layers (LayerNorm
comes from the framework, tensor/nn.py; attention, MLP, Block are here), then GPT itself, with
GPT-2's initialisation written where each weight is made. The KV cache that generation fills
sits beside the attention that reads it. Sampling (GPT.generate) is a thin method over
tinygpt/generate.py, which holds the sampling loop; loading weights from a name, a Hugging Face
directory or a training run is `tinygpt.load` (tinygpt/loading.py), outside this file, so that
this file imports none of the modules that import it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict, fields

import numpy as np

import tensor
from tensor import functional as F
from tensor import nn


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024    # the longest context (GPT-2's n_positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True         # GPT-2 has biases in every Linear and LayerNorm

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive integer, "
                                 f"got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head "
                             f"({self.n_head}) so each head gets n_embd / n_head dimensions")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"GPTConfig: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        for f in fields(cls):           # a file may hold anything: check each value's type
            v = d.get(f.name, f.default)
            ok = (isinstance(v, bool) if f.type == "bool" else
                  isinstance(v, (int, float)) and not isinstance(v, bool) if f.type == "float"
                  else isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise ValueError(f"GPTConfig: {f.name} must be {f.type}, got {v!r}")
        return cls(**d)


# n_layer / n_head / n_embd of the released sizes, and two small ones for a laptop CPU
PRESETS = {
    "gpt2":             dict(n_layer=12, n_head=12, n_embd=768,  block_size=1024, vocab_size=50257),
    "gpt2-medium":      dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab_size=50257),
    "gpt2-large":       dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50257),
    "gpt2-xl":          dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257),
    "shakespeare-char": dict(n_layer=6,  n_head=6,  n_embd=384,  block_size=256,  dropout=0.2),
    "baby":             dict(n_layer=4,  n_head=4,  n_embd=128,  block_size=64,   dropout=0.0),
}


def scaled_init_std(n_layer: int) -> float:
    """GPT-2's scaled init, for the two projections per block that add into the residual stream
    (attn.c_proj, mlp.c_proj): 2 * n_layer of them add up along the depth, so each is drawn with
    std 0.02 / sqrt(2 * n_layer) and the residual's variance does not grow with the depth."""
    return 0.02 / math.sqrt(2 * n_layer)


# GPT-2's initialisation, written where each weight is made: every Linear and Embedding weight
# ~ N(0, 0.02²), the residual projections ~ N(0, scaled_init_std(n_layer)²), every bias 0, every
# LayerNorm gain 1 and shift 0 (tensor/nn.py). One generator (rng), drawn in construction order,
# so a seed gives the same weights every time. init=False: zeros, for weights about to be loaded.

class CausalSelfAttention(nn.Module):
    """Each token builds a query, a key and a value; it attends to itself and earlier tokens."""

    def __init__(self, cfg: GPTConfig, rng, dtype, init=True):
        super().__init__()
        self.n_head, self.n_embd = cfg.n_head, cfg.n_embd
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias, dtype=dtype,
                                generator=rng, std=0.02, init=init)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias, dtype=dtype,
                                generator=rng, std=scaled_init_std(cfg.n_layer), init=init)
        self.attn_dropout = nn.Dropout(cfg.dropout, rng)
        self.resid_dropout = nn.Dropout(cfg.dropout, rng)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        qkv = self.c_attn(x)                                        # (B, T, 3C)
        if tensor.is_fused() and cache is None:
            # all of the lines below in one op (tensor.functional.attention)
            drop = self.attn_dropout
            y = F.attention(qkv, nh, drop.p if drop.training else 0.0, drop.generator)
            return self.resid_dropout(self.c_proj(y))
        q, k, v = F.split(qkv, 3, axis=-1)                          # 3 × (B, T, C)
        q = q.reshape(B, T, nh, hs).transpose(1, 2)                 # (B, nh, T, hs)
        k = k.reshape(B, T, nh, hs).transpose(1, 2)                 # (B, nh, T, hs)
        v = v.reshape(B, T, nh, hs).transpose(1, 2)                 # (B, nh, T, hs)
        if cache is not None:   # generation: prepend the keys and values of earlier tokens
            k, v = cache.extend(k, v)                               # (B, nh, Tk, hs)
        att = q @ k.transpose(-2, -1)                               # (B, nh, T, Tk)
        att = F.softmax(att, axis=-1, scale=1.0 / math.sqrt(hs), causal=True)
        att = self.attn_dropout(att)
        y = att @ v                                                 # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)                      # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class KVCache:
    """Keys and values of the tokens seen so far, one pair per layer, for fast generation.
    GPT.forward(idx, cache=...) hands each block's new k, v to extend() and attends over what
    it returns; it needs nothing else from the cache but .length (the tokens held).

    Each layer's keys and values live in a buffer with room to spare along the time axis; a new
    token's k and v are written after the old ones and the layer sees a view of the filled part.
    When the buffer is full it is replaced by one twice as long, so on average each token's
    key and value are copied less than once more. The views handed out are read-only: the cache
    is the only writer."""

    def __init__(self, n_layer: int):
        self.layers = [None] * n_layer      # per layer: [keys, values, filled]; (B, nh, cap, hs)
        self.layer = 0                      # which layer the next extend() belongs to

    @property
    def length(self) -> int:
        return 0 if self.layers[0] is None else self.layers[0][2]

    def extend(self, k, v):
        """Append k, v (B, nh, T, hs) to this layer's cache; return all keys and values so far,
        (B, nh, Tk, hs) each."""
        entry = self.layers[self.layer]
        B, nh, T, hs = k.shape
        if entry is not None:
            held = entry[0].shape[:2] + (entry[2],) + entry[0].shape[3:]    # (B, nh, T, hs)
            if not (k.shape == v.shape and (B, nh, hs) == held[:2] + held[3:]
                    and k.dtype == v.dtype == entry[0].dtype):
                raise ValueError(f"KVCache.extend: layer {self.layer} holds keys of shape "
                                 f"{held} and dtype {entry[0].dtype}; got k {k.shape} {k.dtype}, "
                                 f"v {v.shape} {v.dtype}. Use a new KVCache for another batch "
                                 f"or model.")
        n = 0 if entry is None else entry[2]
        if entry is None or n + T > entry[0].shape[2]:             # no room: a bigger buffer
            cap = max(2 * n, n + T, 16)
            keys = np.empty((B, nh, cap, hs), dtype=k.dtype)
            values = np.empty((B, nh, cap, hs), dtype=v.dtype)
            if entry is not None:
                keys[:, :, :n], values[:, :, :n] = entry[0][:, :, :n], entry[1][:, :, :n]
            entry = self.layers[self.layer] = [keys, values, n]
        entry[0][:, :, n:n + T] = k.data                           # (B, nh, T, hs) after the old
        entry[1][:, :, n:n + T] = v.data
        entry[2] = n + T
        self.layer = (self.layer + 1) % len(self.layers)
        if n == 0:       # nothing cached before: the inputs themselves (their graph is kept)
            return k, v
        keys, values = entry[0][:, :, :n + T], entry[1][:, :, :n + T]   # views, (B, nh, Tk, hs)
        keys.flags.writeable = values.flags.writeable = False
        return tensor.Tensor(keys), tensor.Tensor(values)


class MLP(nn.Module):
    """Widen 4×, GELU, project back."""

    def __init__(self, cfg: GPTConfig, rng, dtype, init=True):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias, dtype=dtype,
                              generator=rng, std=0.02, init=init)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias, dtype=dtype,
                                generator=rng, std=scaled_init_std(cfg.n_layer), init=init)
        self.dropout = nn.Dropout(cfg.dropout, rng)

    def forward(self, x):
        # GPT-2's GELU is the tanh approximation (Hugging Face calls it "gelu_new")
        h = F.gelu(self.c_fc(x), approximate="tanh")                # (B, T, 4C)
        return self.dropout(self.c_proj(h))                         # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, rng, dtype, init=True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias, dtype=dtype)
        self.attn = CausalSelfAttention(cfg, rng, dtype, init)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=1e-5, bias=cfg.bias, dtype=dtype)
        self.mlp = MLP(cfg, rng, dtype, init)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)                      # (B, T, C)
        x = x + self.mlp(self.ln_2(x))                              # (B, T, C)
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, seed: int | None = None, dtype=np.float32,
                 init: bool = True):
        """init=False: zeros instead of random weights (fast), for weights about to be loaded."""
        super().__init__()
        self.config = config
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd, dtype=dtype, generator=rng,
                                std=0.02, init=init)                    # token table
        self.wpe = nn.Embedding(config.block_size, config.n_embd, dtype=dtype, generator=rng,
                                std=0.02, init=init)                    # position table
        self.drop = nn.Dropout(config.dropout, rng)
        self.h = nn.ModuleList([Block(config, rng, dtype, init) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias, dtype=dtype)
        # no lm_head: the logits reuse wte.weight (weight tying, as in GPT-2)

    @classmethod
    def from_preset(cls, name: str, seed: int | None = None, **overrides) -> "GPT":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(GPTConfig(**{**PRESETS[name], **overrides}), seed=seed)

    # No GPT.from_pretrained: it would make this file import tinygpt/pretrained.py, which
    # imports this file. `tinygpt.load(name_or_dir)` returns (model, tokenizer, description) for
    # a released name, a Hugging Face directory or a training run.

    def forward(self, idx, targets=None, cache: KVCache | None = None, last_only: bool = False):
        """idx: (B, T) token ids. Returns (logits, loss); loss is None without targets.
        cache: any object with .length (tokens held) and .extend(k, v) (see KVCache
        above); with one, idx holds only the new tokens and their positions
        continue after the cache. last_only: compute logits for the last position only."""
        idx = np.asarray(idx.data if isinstance(idx, tensor.Tensor) else idx)
        if idx.ndim == 1:
            idx = idx[None, :]                                      # (1, T)
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"GPT.forward: {start + T} positions but the model's block_size is "
                             f"{self.config.block_size}; crop the context to its last "
                             f"{self.config.block_size} tokens")
        pos = np.arange(start, start + T)                           # (T,)
        x = self.wte(idx) + self.wpe(pos)                           # (B, T, C) + (T, C)
        x = self.drop(x)
        for block in self.h:
            x = block(x, cache)                                     # (B, T, C)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:, :]                                        # (B, 1, C)
        logits = x @ self.wte.weight.T                              # (B, T, vocab)
        loss = None
        if targets is not None:
            targets = np.asarray(targets.data if isinstance(targets, tensor.Tensor) else targets)
            loss = F.cross_entropy(logits, targets, ignore_index=-1)
        return logits, loss

    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop_token: int | None = None) -> np.ndarray:
        """Continue idx by up to max_new_tokens sampled tokens and return the whole sequences,
        prompt included, as nanoGPT's GPT.generate does: (B, T) ids in, (B, T + new) out; or
        (T,) in, (T + new,) out. temperature 0 is greedy; top_k / top_p keep only the likeliest
        tokens (tinygpt/generate.py: sample_next).

        Built on tinygpt.generate.generate, which streams the new ids of one sequence with a KV
        cache. The B rows are generated one after another, not batched; they share one random
        stream seeded by seed, so row 0 gets exactly what generate(model, idx[0], ..., seed=seed)
        yields and two equal rows get two different samples.
        stop_token: a row ends once it samples this id. Rows that end early are padded with it,
        and the array is as long as the row that went on longest (one row: no padding)."""
        ids = np.asarray(idx.data if isinstance(idx, tensor.Tensor) else idx)
        if ids.ndim not in (1, 2):
            raise ValueError(f"GPT.generate: idx must be (T,) or (B, T) token ids, got shape "
                             f"{ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"GPT.generate: idx must hold integer token ids, got {ids.dtype}")
        rows = ids[None, :] if ids.ndim == 1 else ids               # (B, T)
        from .generate import generate as generate_ids     # one row's new ids, streamed
        rng = np.random.default_rng(seed)                           # one stream for every row
        new = [list(generate_ids(self, row, max_new_tokens, temperature, top_k, top_p, seed=rng,
                                 stop_token=stop_token)) for row in rows]
        n = max((len(t) for t in new), default=max_new_tokens)
        new = [t + [stop_token] * (n - len(t)) for t in new]        # only stopped rows are short
        out = np.concatenate([rows, np.array(new, dtype=rows.dtype).reshape(len(rows), n)],
                             axis=1)                                # (B, T + n)
        return out if ids.ndim == 2 else out[0]

    def crop_block_size(self, block_size: int) -> None:
        """Shorten the context (e.g. to fine-tune GPT-2 on 256 tokens instead of 1024): keep the
        first block_size rows of the position table. Nothing else depends on the length."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"crop_block_size: {block_size} is not in 1..{self.config.block_size}"
                             f" (a context can only be shortened)")
        self.wpe.weight.data = self.wpe.weight.data[:block_size].copy()      # (block_size, C)
        self.config = GPTConfig(**{**self.config.to_dict(), "block_size": block_size})

    def set_dropout(self, p: float) -> None:
        """Every dropout layer to probability p (e.g. 0 to fine-tune, as nanoGPT does)."""
        self.config = GPTConfig(**{**self.config.to_dict(), "dropout": p})
        for _, m in self.named_modules():
            if isinstance(m, nn.Dropout):
                m.p = p

    def num_parameters(self, non_embedding: bool = False) -> int:
        n = super().num_parameters()
        return n - self.wpe.weight.size if non_embedding else n
