"""The reference side of the benchmarks: the same GPT-2 in PyTorch (same shapes, same math:
biases, tanh GELU, pre-LayerNorm, tied output projection, GPT-2's init), and the same training
recipe.  Needs the `parity` extra: pip install -e ".[parity]"."""
from __future__ import annotations

import math

import numpy as np


def require_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def build(cfg, seed: int = 0):
    """A PyTorch GPT-2 matching tinygpt.model.GPT for the GPTConfig `cfg`."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            C = cfg.n_embd
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, cfg.n_head, C // cfg.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=cfg.dropout if self.training else 0.0)
            x = x + self.drop(self.attn_proj(y.transpose(1, 2).reshape(B, T, C)))
            h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
            return x + self.drop(self.mlp_proj(h))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.drop = nn.Dropout(cfg.dropout)
            self.h = nn.ModuleList([Block() for _ in range(cfg.n_layer)])
            self.ln_f = nn.LayerNorm(cfg.n_embd)
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                elif "ln" in name:
                    nn.init.ones_(p)
                elif name.endswith("proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))
                else:
                    nn.init.normal_(p, 0.0, 0.02)

        def forward(self, idx, targets=None):
            T = idx.shape[1]
            x = self.drop(self.wte(idx) + self.wpe(torch.arange(T)))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            loss = None if targets is None else F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.view(-1))
            return logits, loss

    torch.manual_seed(seed)
    return GPT()


def adamw(model, lr, betas, weight_decay):
    import torch
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)


def train_step(model, opt, x, y, lr, grad_clip):
    import torch
    for group in opt.param_groups:
        group["lr"] = lr
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def to_torch(a: np.ndarray):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a))
