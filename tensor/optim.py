"""Optimizers written out by hand: AdamW and SGD with momentum; gradient clipping; the
warmup-then-cosine learning-rate schedule.

An optimizer only reads `p.grad` and writes `p.data` in place; it never builds a graph.
"""
from __future__ import annotations

import math

import numpy as np

from .kernels.fused import adamw_update
from .mode import is_fused


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = lr
        self.step_count = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    # state: one array per parameter and slot, plus scalars; saved as safetensors + JSON
    def state_dict(self) -> dict:
        arrays = {f"{slot}.{i}": a for slot, values in self._slots().items()
                  for i, a in enumerate(values)}
        return {"arrays": arrays, "step": self.step_count, "lr": self.lr}

    def load_state_dict(self, state: dict):
        """Restore the moments/buffers; every missing, unexpected or mis-shaped key is named in
        one error, and nothing is changed when there is one."""
        own = {f"{slot}.{i}": a for slot, values in self._slots().items()
               for i, a in enumerate(values)}
        arrays = state["arrays"]
        missing = [k for k in own if k not in arrays]
        unexpected = [k for k in arrays if k not in own]
        mismatched = [f"{k}: saved {np.shape(arrays[k])} vs parameter {own[k].shape}"
                      for k in own if k in arrays and np.shape(arrays[k]) != own[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state belongs to a "
                             f"different model (missing {missing}, unexpected {unexpected}, "
                             f"shape mismatch {mismatched})")
        for k, a in own.items():
            a[...] = arrays[k]
        self.step_count = int(state["step"])
        self.lr = float(state.get("lr", self.lr))

    def _slots(self) -> dict:
        return {}


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter).  For each parameter θ, step t:

        m = β₁ m + (1 - β₁) g              first moment (running mean of gradients)
        v = β₂ v + (1 - β₂) g²             second moment (running mean of squares)
        m̂ = m / (1 - β₁ᵗ),  v̂ = v / (1 - β₂ᵗ)     bias correction (m, v start at 0)
        θ = θ - lr · λ · θ                 decay: applied to θ directly, not through g
        θ = θ - lr · m̂ / (√v̂ + ε)

    By default only parameters with ≥ 2 dimensions (matrices, embeddings) are decayed; biases
    and layer-norm gains are not.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 decay_filter=lambda p: p.ndim >= 2):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.decay = [bool(decay_filter(p)) for p in self.params]
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]

    def _slots(self):
        return {"m": self.m, "v": self.v}

    def step(self):
        self.step_count += 1
        t, b1, b2 = self.step_count, self.beta1, self.beta2
        correction1, correction2 = 1 - b1 ** t, 1 - b2 ** t
        fused = is_fused()    # decided once per step, for every parameter alike
        for p, m, v, decay in zip(self.params, self.m, self.v, self.decay):
            if p.grad is None:
                continue
            g = p.grad
            if fused:    # the same update, one Numba pass (tensor/kernels/fused.py)
                adamw_update(p.data, g, m, v, self.lr, b1, b2, self.eps,
                             self.weight_decay if decay else 0.0, t)
                continue
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            if decay and self.weight_decay:
                p.data *= 1 - self.lr * self.weight_decay
            denom = np.sqrt(v / correction2)
            denom += self.eps
            p.data -= (self.lr / correction1) * m / denom


class SGD(Optimizer):
    """Stochastic gradient descent with momentum:  b = μ b + g;  θ = θ - lr · b."""

    def __init__(self, params, lr=0.01, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buf = [np.zeros_like(p.data) for p in self.params]

    def _slots(self):
        return {"momentum": self.buf}

    def step(self):
        self.step_count += 1
        for p, b in zip(self.params, self.buf):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                b *= self.momentum
                b += g
                g = b
            p.data -= self.lr * g


def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most max_norm.
    Returns the norm before clipping (useful to log)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


def cosine_lr(it: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warmup to `lr` over `warmup_iters`, then a half cosine down to `min_lr` at
    `decay_iters`, then flat at `min_lr`."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it >= decay_iters:
        return min_lr
    progress = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
