"""tensor: a small, readable deep-learning framework over NumPy, with Numba kernels.

    import tensor
    x = tensor.randn(3, 4, requires_grad=True)
    loss = (x @ x.T).sum()
    loss.backward()          # x.grad now holds dLoss/dx

The Tensor and the graph walk are in `tensor/tensor.py`; every op and its backward in
`tensor/functional.py`; the Numba kernels in `tensor/kernels/`; `tensor.nn` and `tensor.optim`
build layers and optimizers on top.  Nothing here knows about GPT.
"""
import os as _os

# Before NumPy loads OpenBLAS: after each parallel product OpenBLAS's idle threads spin for
# 2^28 cycles (about 0.1 s) by default, holding a core that Numba's threads (the quantized
# kernels) then wait for. 2^24 cycles (about 6 ms) keeps them awake between the back-to-back
# products of a training step and asleep soon after: the measurements are in
# benchmarks/README.md ("OpenBLAS's spin"). Only an OpenBLAS loaded after this line reads it:
# import tensor (or tinygpt, which sets the same) before numpy, or set the variable yourself.
# (tinygpt/__init__.py repeats it, because `import tinygpt` stays cheap.)
OPENBLAS_THREAD_TIMEOUT = "24"
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", OPENBLAS_THREAD_TIMEOUT)

from .memory import tune_malloc as _tune_malloc, malloc_tuned
_tune_malloc()     # keep freed memory for the next step: no page faults (tensor/memory.py)

from .tensor import (Tensor, tensor, zeros, ones, randn, arange, manual_seed,
                     default_generator, full, eye, full_like, zeros_like, ones_like)
from .mode import no_grad, enable_grad, is_grad_enabled, fused, is_fused
from . import functional
from .functional import (add, sub, mul, div, truediv, floor_divide, neg, pow, maximum, minimum,
                         exp, log, sqrt, rsqrt, tanh, sin, cos, abs, clip, clamp, cast,
                         lt, le, gt, ge, eq, ne, logical_and, logical_or, logical_not,
                         where, masked_fill,
                         sum, mean, max, min, argmax, argmin, var, std, logsumexp, prod, cumsum,
                         reshape, permute, transpose, flip, squeeze, unsqueeze, flatten,
                         expand, broadcast_to, repeat, getitem,
                         gather, embedding, concatenate, cat, stack, split, pad, tril, triu,
                         matmul, linear,
                         relu, gelu, sigmoid, silu, leaky_relu, elu,
                         layer_norm,
                         softmax, log_softmax, cross_entropy, nll_loss,
                         dropout,
                         attention, scaled_dot_product_attention,
                         unbroadcast)
from .gradcheck import gradcheck, GradcheckError
from . import nn, optim, graph
from .graph import to_dot, draw_graph

# The differentiable ops, by name, in the families of tensor/functional.py: the gradient tests
# check that each one of these has a test.
OPS = ("add", "sub", "mul", "div", "floor_divide", "neg", "pow", "maximum",  # arithmetic
       "minimum",
       "exp", "log", "sqrt", "rsqrt", "tanh", "sin", "cos", "abs", "clip",      # functions
       "cast",
       "where", "masked_fill",                                                  # masks
       "sum", "mean", "max", "min", "var", "std", "logsumexp", "prod",          # reductions
       "cumsum",
       "reshape", "permute", "transpose", "flip", "squeeze", "unsqueeze",       # shape and
       "flatten", "expand", "repeat", "getitem", "gather", "embedding",         # indexing
       "concatenate", "stack", "split", "pad", "tril", "triu",
       "matmul", "linear",                                                      # linear algebra
       "relu", "gelu", "sigmoid", "silu", "leaky_relu", "elu",                  # activations
       "layer_norm",                                                            # normalization
       "softmax", "log_softmax", "cross_entropy", "nll_loss",                   # softmax, losses
       "dropout",
       "attention", "scaled_dot_product_attention")

# Ops without a gradient (their results are booleans or indices), and the creation helpers.
NON_DIFFERENTIABLE = ("lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or",
                      "logical_not", "argmax", "argmin")
CREATION = ("tensor", "zeros", "ones", "full", "eye", "zeros_like", "ones_like", "full_like",
            "randn", "arange")

__version__ = "0.1.0"
