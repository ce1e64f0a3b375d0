"""tensor: a small, readable deep-learning framework over NumPy, with Numba kernels.

    import tensor
    x = tensor.randn(3, 4, requires_grad=True)
    loss = (x @ x.T).sum()
    loss.backward()          # x.grad now holds dLoss/dx

The Tensor and the graph walk are in `tensor/tensor.py`; every op and its backward in
`tensor/functional.py`; the Numba kernels in `tensor/kernels/`; `tensor.nn` and `tensor.optim`
build layers and optimizers on top.  Nothing here knows about GPT.
"""
from .memory import tune_malloc as _tune_malloc, malloc_tuned
_tune_malloc()     # keep freed memory for the next step: no page faults (tensor/memory.py)

from .tensor import (Tensor, tensor, zeros, ones, randn, arange, no_grad, enable_grad,
                     is_grad_enabled, manual_seed, default_generator, fused, is_fused,
                     full, eye, full_like, zeros_like, ones_like)
from . import functional
from .functional import (add, sub, mul, div, truediv, neg, pow, exp, log, sqrt, tanh, relu, gelu,
                         cast, sum, mean, max, var, reshape, transpose, permute, getitem,
                         concatenate, cat, stack, split, where, masked_fill, matmul, linear,
                         softmax, log_softmax, cross_entropy, layer_norm, dropout, embedding,
                         attention, unbroadcast)
from .functional import nll_loss, scaled_dot_product_attention
from .functional import (lt, le, gt, ge, eq, ne, logical_and, logical_or, logical_not, argmax,
                         argmin, abs, clip, clamp, sigmoid, silu, rsqrt, maximum, minimum, min,
                         logsumexp, std, expand, broadcast_to, repeat, gather, tril, triu, pad)
from .gradcheck import gradcheck, GradcheckError
from . import nn, optim, graph
from .graph import to_dot, draw_graph

# The differentiable ops, by name: the gradient tests check that each one of these has a test.
OPS = ("add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "tanh", "relu", "gelu",
       "cast", "sum", "mean", "max", "var", "reshape", "transpose", "permute", "getitem",
       "concatenate", "stack", "split", "where", "masked_fill", "matmul", "linear", "softmax",
       "log_softmax", "cross_entropy", "layer_norm", "dropout", "embedding", "attention",
       # more ops (issue 11); their gradient tests are in tests/test_ops_more.py
       "abs", "clip", "sigmoid", "silu", "rsqrt", "maximum", "minimum", "min", "logsumexp", "std",
       "expand", "repeat", "gather", "tril", "triu", "pad",
       # losses and attention with masks (issue 11); tests in tests/test_ops_losses.py
       "nll_loss", "scaled_dot_product_attention")

# Ops without a gradient (their results are booleans or indices), and the creation helpers.
NON_DIFFERENTIABLE = ("lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or",
                      "logical_not", "argmax", "argmin")
CREATION = ("tensor", "zeros", "ones", "full", "eye", "zeros_like", "ones_like", "full_like",
            "randn", "arange")

__version__ = "0.1.0"
