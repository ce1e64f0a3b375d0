"""Layers built only from `tensor` ops: Module, Parameter, Linear, Embedding, LayerNorm, Dropout,
GELU, ModuleList, Sequential.

A Module finds its parameters by looking at its attributes: every Parameter and every sub-Module
assigned to `self` is registered under its attribute name, so `named_parameters()` yields dotted
names such as `h.0.attn.c_attn.weight`.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import functional as F
from .mode import is_fused
from .tensor import Tensor, DEFAULT_DTYPE


class Parameter(Tensor):
    """A Tensor that is a trainable weight: it always requires gradients."""
    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class: subclasses set attributes in __init__ and compute in forward()."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before setting "
                               f"attributes in __init__")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only reached when normal lookup fails: the usual cause is a missing super().__init__()
        if name in ("_parameters", "_modules", "training"):
            raise AttributeError(f"{type(self).__name__}: its __init__ did not call "
                                 f"super().__init__(); add that call as its first line")
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __call__(self, *args, **kwargs):
        self._parameters    # noqa: B018  (fails clearly if super().__init__() was skipped)
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # -- walking the tree -----------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}{name}.")

    def named_parameters(self):
        """(dotted name, Parameter) for every parameter, each shared parameter once."""
        seen = set()
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield prefix + name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # -- saving and loading ---------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Dotted parameter names -> arrays (the live arrays, not copies)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copy arrays into the parameters. With strict=True every missing, unexpected or
        wrongly shaped key is named in one error, and nothing is changed."""
        own = dict(self.named_parameters())
        state = {k: (v.data if isinstance(v, Tensor) else v) for k, v in state.items()}
        missing, unexpected = self.check_state_shapes(
            {k: tuple(np.shape(v)) for k, v in state.items()}, strict)
        for k, p in own.items():
            if k in state:
                p.data[...] = np.asarray(state[k], dtype=p.dtype)
        return missing, unexpected

    def check_state_shapes(self, shapes: dict, strict: bool = True):
        """load_state_dict's checks on {name: shape} alone (a file's header, before its arrays
        are read): returns (missing, unexpected) names, or raises KeyError naming them all."""
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in shapes]
        unexpected = [k for k in shapes if k not in own]
        mismatched = [f"{k}: checkpoint {tuple(shapes[k])} vs model {own[k].shape}"
                      for k in own if k in shapes and tuple(shapes[k]) != own[k].shape]
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise KeyError(f"load_state_dict into {type(self).__name__}: " + " | ".join(problems)
                           + ". Does the checkpoint come from a model with the same config?")
        return missing, unexpected


def _normal(shape, std, dtype, generator, init):
    """N(0, std²) weights; with init=False zeros instead, for weights about to be overwritten by
    loaded ones (np.zeros costs no time or memory until the pages are written)."""
    if not init:
        return np.zeros(shape, dtype=dtype)
    rng = generator if generator is not None else np.random.default_rng()
    out = rng.standard_normal(shape, dtype=dtype)     # drawn in the weight's dtype: no copy
    out *= std
    return out


class Linear(Module):
    """out = x @ weight + bias, weight of shape (in_features, out_features).

    The weight is stored [in, out] (as GPT-2's released Conv1D layers are), so the forward
    product needs no transpose."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype=DEFAULT_DTYPE, generator=None, std: float | None = None, init: bool = True):
        super().__init__()
        std = 1.0 / math.sqrt(in_features) if std is None else std
        self.weight = Parameter(_normal((in_features, out_features), std, dtype, generator, init))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        if is_fused():      # one node for x @ W + b (tensor.functional.linear)
            return F.linear(x, self.weight, self.bias)
        out = F.matmul(x, self.weight)
        return F.add(out, self.bias) if self.bias is not None else out


class Embedding(Module):
    """A lookup table: row i of `weight` is the vector for id i."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=DEFAULT_DTYPE,
                 generator=None, std: float = 1.0, init: bool = True):
        super().__init__()
        self.weight = Parameter(_normal((num_embeddings, embedding_dim), std, dtype, generator,
                                        init))

    def forward(self, idx):
        return F.embedding(idx, self.weight)


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    def __init__(self, p: float = 0.5, generator: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.generator = generator

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.generator)


class GELU(Module):
    """GELU as a layer. approximate="tanh" (the default, as tensor.functional.gelu's: GPT-2's
    form) or "none" (the exact erf form, the default of PyTorch's nn.GELU)."""

    def __init__(self, approximate: str = "tanh"):
        super().__init__()
        if approximate not in ("tanh", "none"):
            raise ValueError(f"GELU: approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)


class ModuleList(Module):
    """A list of modules registered as `0`, `1`, … (so names read `h.0.attn…`)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Calls its modules one after another."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
