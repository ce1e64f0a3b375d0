"""Every differentiable op, each with its backward right below its forward.

How to read an op:

    # out = f(x);  dx = <the chain rule, as one line of math>
    def f(x):
        x = as_tensor(x)
        out = <NumPy forward>                  # save only what backward needs
        def backward(g):                       # g = dLoss/dout, same shape as out
            if x.requires_grad:
                x.grad += <dx>                 # `+=`: x may feed several ops
        return _node(out, "f", (x,), backward)

`_node` wraps the result in a Tensor and, when gradients are being tracked and an input needs
them, records the parents and the backward closure. Binary ops broadcast like NumPy; `unbroadcast`
sums a gradient back to the shape of the input it belongs to (the only place that does so).
"""
from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from . import kernels
from .kernels import fused as fk
from . import tensor as _t
from .tensor import Tensor, FLOAT_DTYPES


# ---------------------------------------------------------------------------------------------
# Plumbing shared by every op
# ---------------------------------------------------------------------------------------------
def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Tensors pass through; numbers and arrays become constants (in `like`'s float dtype)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and like.dtype in FLOAT_DTYPES:
        if isinstance(x, numbers.Number) and not isinstance(x, (bool, complex)):
            return Tensor(np.asarray(x, dtype=like.dtype))
        if isinstance(x, np.ndarray) and x.dtype.kind in "iuf":
            return Tensor(x.astype(like.dtype, copy=False))
    return Tensor(x)


def _node(out: np.ndarray, op: str, parents: tuple, backward) -> Tensor:
    """Wrap `out` in a Tensor; remember how to backpropagate if any parent needs gradients."""
    result = Tensor.__new__(Tensor)
    if not isinstance(out, np.ndarray):
        out = np.asarray(out)          # NumPy returns scalars for 0-d inputs; keep arrays
    result.data, result._grad, result._grad_owned, result._op = out, None, True, op
    result.requires_grad, result._parents, result._backward = False, (), None
    if _t._grad_enabled:
        for p in parents:
            if p.requires_grad:
                result.requires_grad = True
                result._parents = parents
                result._backward = backward
                break
    return result


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `g` over the axes that broadcasting added or stretched, so it has `shape` again.

    Broadcasting copies an input along new or size-1 axes; the copies all used the same
    number, so their gradients add up.  (3, 4) -> (4,) sums axis 0; (3, 4) -> (3, 1) sums axis 1.
    """
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    assert g.shape == tuple(shape), (g.shape, shape)
    return g


def _broadcast_check(op: str, x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        try:
            np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise ValueError(f"{op}: shapes {x.shape} and {y.shape} cannot be broadcast together "
                             f"(NumPy rules: trailing axes must be equal or 1)") from None


def _binary(op: str, x, y) -> tuple[Tensor, Tensor]:
    x = as_tensor(x, like=y if isinstance(y, Tensor) else None)
    y = as_tensor(y, like=x)
    _broadcast_check(op, x, y)
    return x, y


# ---------------------------------------------------------------------------------------------
# Elementwise arithmetic (broadcasting)
# ---------------------------------------------------------------------------------------------
# out = x + y;  dx = g,  dy = g   (each summed back to its own shape)
def add(x, y) -> Tensor:
    x, y = _binary("add", x, y)
    out = x.data + y.data
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(g, x.shape)
        if y.requires_grad:
            y.grad += unbroadcast(g, y.shape)
    return _node(out, "add", (x, y), backward)


# out = x - y;  dx = g,  dy = -g
def sub(x, y) -> Tensor:
    x, y = _binary("sub", x, y)
    out = x.data - y.data
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(g, x.shape)
        if y.requires_grad:
            y.grad -= unbroadcast(g, y.shape)
    return _node(out, "sub", (x, y), backward)


# out = x * y;  dx = g * y,  dy = g * x
def mul(x, y) -> Tensor:
    x, y = _binary("mul", x, y)
    out = x.data * y.data
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(g * y.data, x.shape)
        if y.requires_grad:
            y.grad += unbroadcast(g * x.data, y.shape)
    return _node(out, "mul", (x, y), backward)


# out = x / y;  dx = g / y,  dy = -g * x / y² = -g * out / y
def div(x, y) -> Tensor:
    x, y = _binary("div", x, y)
    out = x.data / y.data
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(g / y.data, x.shape)
        if y.requires_grad:
            y.grad -= unbroadcast(g * out / y.data, y.shape)
    return _node(out, "div", (x, y), backward)


truediv = div


# out = -x;  dx = -g
def neg(x) -> Tensor:
    x = as_tensor(x)
    def backward(g):
        x.grad -= g
    return _node(-x.data, "neg", (x,), backward)


# out = x ** p  (p a number);  dx = g * p * x^(p-1)
def pow(x, p) -> Tensor:
    x = as_tensor(x)
    if not isinstance(p, numbers.Real) or isinstance(p, bool):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(p).__name__}; "
                        f"for a tensor exponent write exp(y * log(x))")
    p = p.item() if isinstance(p, np.generic) else p    # a Python number keeps x's dtype
    out = x.data ** p
    def backward(g):
        x.grad += g * p * x.data ** (p - 1)
    return _node(out, "pow", (x,), backward)


# ---------------------------------------------------------------------------------------------
# Elementwise functions
# ---------------------------------------------------------------------------------------------
# out = eˣ;  dx = g * out
def exp(x) -> Tensor:
    x = as_tensor(x)
    out = np.exp(x.data)
    def backward(g):
        x.grad += g * out
    return _node(out, "exp", (x,), backward)


# out = ln x;  dx = g / x
def log(x) -> Tensor:
    x = as_tensor(x)
    out = np.log(x.data)
    def backward(g):
        x.grad += g / x.data
    return _node(out, "log", (x,), backward)


# out = √x;  dx = g / (2 out)
def sqrt(x) -> Tensor:
    x = as_tensor(x)
    out = np.sqrt(x.data)
    def backward(g):
        x.grad += g * 0.5 / out
    return _node(out, "sqrt", (x,), backward)


# out = tanh x;  dx = g * (1 - out²)
def tanh(x) -> Tensor:
    x = as_tensor(x)
    out = np.tanh(x.data)
    def backward(g):
        x.grad += g * (1 - out * out)
    return _node(out, "tanh", (x,), backward)


# out = max(x, 0);  dx = g where x > 0, else 0
def relu(x) -> Tensor:
    x = as_tensor(x)
    out = np.maximum(x.data, 0)
    def backward(g):
        x.grad += g * (x.data > 0)
    return _node(out, "relu", (x,), backward)


_GELU_C = math.sqrt(2.0 / math.pi)


# GPT-2's GELU, the tanh approximation:  out = ½x(1 + tanh(u)),  u = c(x + 0.044715x³),  c = √(2/π)
#   dx = g * [½(1 + t) + ½x(1 - t²) c (1 + 3·0.044715x²)],  t = tanh(u)
def gelu(x) -> Tensor:
    x = as_tensor(x)
    if _t._fused:   # one Numba pass (tensor/kernels/fused.py) instead of the lines below
        out = fk.gelu_forward(x.data)
    else:
        x2 = x.data * x.data                 # (x·x·x is much faster than x ** 3 in NumPy)
        t = np.tanh(_GELU_C * x.data * (1 + 0.044715 * x2))
        out = 0.5 * x.data * (1 + t)
    def backward(g):
        if _t._fused:
            x.grad += fk.gelu_backward(x.data, g)
            return
        dudx = _GELU_C * (1 + 3 * 0.044715 * x2)
        x.grad += g * (0.5 * (1 + t) + 0.5 * x.data * (1 - t * t) * dudx)
    return _node(out, "gelu", (x,), backward)


# out = x in another float dtype;  dx = g in x's dtype
def cast(x, dtype) -> Tensor:
    x = as_tensor(x)
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"cast: only float32 and float64 are supported, got {dtype}")
    def backward(g):
        x.grad += g
    return _node(x.data.astype(dtype), "cast", (x,), backward)


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------
def _axes(axis, ndim) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes) if ndim else ()


def _expand(g, axes, keepdims):
    """Give a reduced gradient its size-1 axes back, so it broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


# out = Σ x over axes;  dx = g copied along the summed axes
def sum(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim)
    out = np.sum(x.data, axis=axes, keepdims=keepdims)
    def backward(g):
        x.grad += _expand(g, axes, keepdims)
    return _node(np.asarray(out), "sum", (x,), backward)


# out = Σ x / n;  dx = g / n copied along the averaged axes
def mean(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    out = np.mean(x.data, axis=axes, keepdims=keepdims)
    def backward(g):
        x.grad += _expand(g, axes, keepdims) / n
    return _node(np.asarray(out, dtype=x.dtype), "mean", (x,), backward)


# out = max x over axes;  dx = g at the arg-max (shared equally between ties), 0 elsewhere
def max(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim)
    out = np.max(x.data, axis=axes, keepdims=True)
    def backward(g):
        winners = (x.data == out)
        x.grad += winners * (_expand(g, axes, keepdims) / winners.sum(axis=axes, keepdims=True))
    return _node(out if keepdims else np.squeeze(out, axes), "max", (x,), backward)


# out = mean((x - μ)²)  (population variance, like np.var);  dx = g · 2(x - μ) / n
def var(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    centered = x.data - x.data.mean(axis=axes, keepdims=True)
    out = np.mean(centered * centered, axis=axes, keepdims=keepdims)
    def backward(g):
        x.grad += _expand(g, axes, keepdims) * (2.0 / n) * centered
    return _node(np.asarray(out, dtype=x.dtype), "var", (x,), backward)


# ---------------------------------------------------------------------------------------------
# Shape ops: they move numbers around, so backward moves the gradient back
# ---------------------------------------------------------------------------------------------
# out = x viewed with a new shape;  dx = g viewed with x's shape
def reshape(x, *shape) -> Tensor:
    x = as_tensor(x)
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    try:
        out = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                         f"({x.size} elements) into {tuple(shape)}") from None
    def backward(g):
        x.grad += g.reshape(x.shape)
    return _node(out, "reshape", (x,), backward)


# out = x with axes reordered;  dx = g with the inverse order
def permute(x, *axes) -> Tensor:
    x = as_tensor(x)
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    if sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise ValueError(f"permute: axes {tuple(axes)} are not a permutation of the "
                         f"{x.ndim} axes of a tensor of shape {x.shape}")
    inverse = np.argsort([a % x.ndim for a in axes])
    def backward(g):
        x.grad += g.transpose(inverse)
    return _node(x.data.transpose(axes), "permute", (x,), backward)


def transpose(x, *axes) -> Tensor:
    """With no axes: reverse them all (`.T`). With two: swap those two. Otherwise: permute."""
    x = as_tensor(x)
    if not axes:
        return permute(x, tuple(reversed(range(x.ndim))))
    if len(axes) == 2 and all(isinstance(a, int) for a in axes):
        order = list(range(x.ndim))
        a, b = axes[0] % x.ndim, axes[1] % x.ndim
        order[a], order[b] = order[b], order[a]
        return permute(x, order)
    return permute(x, *axes)


def _plain_index(index):
    """Tensors inside an index become their arrays (e.g. x[idx] with idx a Tensor of ints)."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


def _has_array(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (np.ndarray, list)) for i in parts)


# out = x[index];  dx = g scattered back to the indexed places (added up where an index repeats)
def getitem(x, index) -> Tensor:
    x = as_tensor(x)
    index = _plain_index(index)
    try:
        out = x.data[index]
    except IndexError as e:
        raise IndexError(f"getitem: {e} (tensor of shape {x.shape})") from None
    def backward(g):
        dx = np.zeros_like(x.data)
        if _has_array(index):
            np.add.at(dx, index, g)             # scatter-add: repeated indices accumulate
        else:
            dx[index] = g                       # basic slicing: every place appears once
        x.grad += dx
    return _node(np.array(out, copy=True), "getitem", (x,), backward)


# out = [x₀ x₁ …] joined along axis;  dxᵢ = the slice of g that came from xᵢ
def concatenate(tensors, axis=0) -> Tensor:
    tensors = [as_tensor(t) for t in tensors]
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} do not match "
                         f"except along axis {axis}") from None
    ends = np.cumsum([t.shape[axis] for t in tensors])
    def backward(g):
        for t, piece in zip(tensors, np.split(g, ends[:-1], axis=axis)):
            if t.requires_grad:
                t.grad += piece
    return _node(out, "concatenate", tuple(tensors), backward)


cat = concatenate


# out = [x₀ x₁ …] stacked on a new axis;  dxᵢ = g[…, i, …]
def stack(tensors, axis=0) -> Tensor:
    tensors = [as_tensor(t) for t in tensors]
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors need the same shape, got {[t.shape for t in tensors]}")
    out = np.stack([t.data for t in tensors], axis=axis)
    def backward(g):
        for i, t in enumerate(tensors):
            if t.requires_grad:
                t.grad += np.take(g, i, axis=axis)
    return _node(out, "stack", tuple(tensors), backward)


def split(x, sections, axis=-1) -> list:
    """Split into pieces along `axis`: `sections` is a piece count or a list of piece sizes.
    Each piece is a slice of x (`getitem`), so its gradient flows back into that slice."""
    x = as_tensor(x)
    length = x.shape[axis]
    if isinstance(sections, int):
        if sections <= 0 or length % sections:
            raise ValueError(f"split: axis {axis} of shape {x.shape} has length {length}, which "
                             f"does not split into {sections} equal pieces")
        sizes = [length // sections] * sections
    else:
        sizes = list(sections)
        if np.sum(sizes) != length:
            raise ValueError(f"split: piece sizes {sizes} add up to {np.sum(sizes)}, but axis "
                             f"{axis} of shape {x.shape} has length {length}")
    axis = axis % x.ndim
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(x, index))
        start += size
    return pieces


# out = x where cond else y;  dx = g where cond,  dy = g where not cond
def where(cond, x, y) -> Tensor:
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    x, y = _binary("where", x, y)
    try:
        np.broadcast_shapes(cond.shape, x.shape, y.shape)
    except ValueError:
        raise ValueError(f"where: condition {cond.shape}, x {x.shape} and y {y.shape} cannot be "
                         f"broadcast together") from None
    out = np.where(cond, x.data, y.data)
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(np.where(cond, g, 0), x.shape)
        if y.requires_grad:
            y.grad += unbroadcast(np.where(cond, 0, g), y.shape)
    return _node(out, "where", (x, y), backward)


# out = value where mask else x;  dx = g where not mask
def masked_fill(x, mask, value) -> Tensor:
    x = as_tensor(x)
    mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)
    try:
        out = np.where(mask, np.asarray(value, dtype=x.dtype), x.data)
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast against "
                         f"the tensor's shape {x.shape}") from None
    if out.shape != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} would grow the tensor of shape "
                         f"{x.shape} to {out.shape}; the mask must broadcast to the tensor's shape")
    def backward(g):
        x.grad += np.where(mask, 0, g)
    return _node(out, "masked_fill", (x,), backward)


# ---------------------------------------------------------------------------------------------
# Matrix product
# ---------------------------------------------------------------------------------------------
def _matmul_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (..., M, K) @ b (..., K, N) for arrays of 2 or more dims, batch dims broadcast."""
    if b.ndim == 2:   # (..., M, K) @ (K, N): fold the batch into the rows, one 2-D product
        return kernels.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[-1:])
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n = a.shape[-2:], b.shape[-1]
    a3 = np.broadcast_to(a, batch + (m, k)).reshape(-1, m, k)    # (B, M, K)
    b3 = np.broadcast_to(b, batch + (k, n)).reshape(-1, k, n)    # (B, K, N)
    return kernels.matmul(a3, b3).reshape(batch + (m, n))        # (..., M, N)


# out = x @ w;  dx = g @ wᵀ,  dw = xᵀ @ g   (summed over broadcast batch dims)
def matmul(x, w) -> Tensor:
    x = as_tensor(x, like=w if isinstance(w, Tensor) else None)
    w = as_tensor(w, like=x)
    if x.ndim == 0 or w.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one axis, got shapes "
                         f"{x.shape} and {w.shape}; use * for scaling")
    k_w = w.shape[0] if w.ndim == 1 else w.shape[-2]
    if x.shape[-1] != k_w:
        raise ValueError(f"matmul: shapes {x.shape} and {w.shape} do not fit: the last axis of "
                         f"the first ({x.shape[-1]}) must equal the "
                         f"{'only' if w.ndim == 1 else 'second-to-last'} axis of the second ({k_w})")
    if x.ndim == 1 and w.ndim == 1:   # a dot product:  (K,) @ (K,) -> ()
        return reshape(matmul(reshape(x, 1, -1), reshape(w, -1, 1)), ())
    if x.ndim == 1:   # a vector on the left is a (1, K) row:  (K,) @ (..., K, N) -> (..., N)
        return reshape(matmul(reshape(x, 1, -1), w), w.shape[:-2] + w.shape[-1:])
    if w.ndim == 1:   # a vector on the right is a (K, 1) column:  (..., M, K) @ (K,) -> (..., M)
        return reshape(matmul(x, reshape(w, -1, 1)), x.shape[:-1])
    if x.dtype != w.dtype:
        raise TypeError(f"matmul: dtypes differ ({x.dtype} and {w.dtype}); cast one with "
                        f".astype() so both are float32 or both float64")
    try:
        out = _matmul_arrays(x.data, w.data)
    except ValueError:
        raise ValueError(f"matmul: batch shapes of {x.shape} and {w.shape} cannot be "
                         f"broadcast together") from None
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(_matmul_arrays(g, w.data.swapaxes(-1, -2)), x.shape)
        if w.requires_grad:
            if w.ndim == 2:   # the batch folds into one product:  (K, B·M) @ (B·M, N)
                xf, gf = x.data.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
                w.grad += kernels.matmul(xf.T, gf)
            else:
                w.grad += unbroadcast(_matmul_arrays(x.data.swapaxes(-1, -2), g), w.shape)
    return _node(out, "matmul", (x, w), backward)


# A linear layer in one node:  out = x @ w + b
#   dx = g @ wᵀ,  dw = xᵀ @ g,  db = Σ g over every row      (x: (..., K), w: (K, N), b: (N,))
# The same as matmul then add, with one output array instead of two and one graph node.
def linear(x, w, b=None) -> Tensor:
    x = as_tensor(x, like=w if isinstance(w, Tensor) else None)   # arrays take w's dtype
    w = as_tensor(w, like=x)
    b = None if b is None else as_tensor(b, like=w)
    if x.ndim == 0 or w.ndim != 2 or x.shape[-1] != w.shape[0] or (
            b is not None and b.shape != (w.shape[1],)):
        raise ValueError(f"linear: x {x.shape} @ w {w.shape} + b "
                         f"{None if b is None else b.shape} do not fit: x must be (..., K), w "
                         f"(K, N) and b (N,)")
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype) or \
            w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"linear: x {x.dtype}, w {w.dtype}"
                        f"{'' if b is None else f', b {b.dtype}'} must all be float32 or all "
                        f"float64; cast with .astype()")
    K, N = w.shape
    x2 = x.data.reshape(-1, K)                            # (rows, K): the batch folds into rows
    out = kernels.matmul(x2, w.data)                      # (rows, N), a fresh array
    if b is not None:
        out += b.data                                     # in place: no second (rows, N) array
    def backward(g):
        g2 = g.reshape(-1, N)                             # (rows, N)
        if x.requires_grad:                               # (rows, N) @ (N, K) -> (..., K)
            x.grad += kernels.matmul(g2, w.data.T).reshape(x.shape)
        if w.requires_grad:
            w.grad += kernels.matmul(x2.T, g2)            # (K, rows) @ (rows, N)
        if b is not None and b.requires_grad:
            b.grad += g2.sum(axis=0)                      # (N,)
    return _node(out.reshape(x.shape[:-1] + (N,)),        # (..., N)
                 "linear", (x, w) if b is None else (x, w, b), backward)


# ---------------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------------
# out = eᶻ / Σ eᶻ (along axis), z = scale·x with the causal entries masked out;
#   dx = scale · out * (g - Σ g·out)
def softmax(x, axis=-1, scale: float = 1.0, causal: bool = False) -> Tensor:
    """Softmax along `axis`. For attention, `scale` multiplies the scores first and `causal=True`
    gives weight 0 to key j for query i when j > i + (Tk - Tq) (the key is in the query's future)."""
    x = as_tensor(x)
    last = (axis % x.ndim) == x.ndim - 1
    if last:   # the Numba kernel: one pass per row, over the last axis
        out = kernels.softmax_forward(x.data, scale=scale, causal=causal)
    elif causal:
        raise ValueError(f"softmax: causal=True needs axis=-1 (the keys), got axis={axis}")
    else:
        z = scale * x.data
        e = np.exp(z - z.max(axis=axis, keepdims=True))    # shift by the max: no overflow
        out = e / e.sum(axis=axis, keepdims=True)
    def backward(g):
        if last:
            x.grad += kernels.softmax_backward(out, g, scale=scale)
        else:
            x.grad += scale * out * (g - (g * out).sum(axis=axis, keepdims=True))
    return _node(out, "softmax", (x,), backward)


# out = x - max - ln Σ e^(x - max);  dx = g - softmax(x) * Σ g
def log_softmax(x, axis=-1) -> Tensor:
    x = as_tensor(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    def backward(g):
        x.grad += g - np.exp(out) * g.sum(axis=axis, keepdims=True)
    return _node(out, "log_softmax", (x,), backward)


# loss = mean over kept rows of -log softmax(logits)[target]
#   dlogits = g * (softmax(logits) - onehot(target)) / n_kept   (0 for ignored rows)
def cross_entropy(logits, targets, ignore_index: int = -1) -> Tensor:
    logits = as_tensor(logits)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {targets.dtype}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]}, got {targets.shape}")
    v = logits.shape[-1]
    z = logits.data.reshape(-1, v)                                 # (N, V)
    t = targets.reshape(-1)                                        # (N,)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= v))
    if bad.any():
        raise IndexError(f"cross_entropy: target {t[bad][0]} is outside 0..{v - 1} "
                         f"(logits have {v} classes); ignore_index is {ignore_index}")
    n_kept = builtins.max(int(keep.sum()), 1)
    if _t._fused:   # one Numba pass per row: max, log-sum-exp, pick the target
        losses, lse = fk.cross_entropy_forward(z, t, ignore_index)
        out = np.asarray(losses.sum() / n_kept, dtype=logits.dtype)
    else:
        rows = np.nonzero(keep)[0]
        shifted = z - z.max(axis=1, keepdims=True)                 # stable: largest is 0
        log_sum = np.log(np.exp(shifted).sum(axis=1))              # (N,)
        picked = shifted[rows, t[rows]] - log_sum[rows]            # log p(target)
        out = np.asarray(-picked.sum() / n_kept, dtype=logits.dtype)
    def backward(g):
        if _t._fused:
            g_rows = np.full(z.shape[0], g / n_kept, dtype=z.dtype)
            logits.grad += fk.cross_entropy_backward(z, t, lse, g_rows, ignore_index).reshape(
                logits.shape)
            return
        probs = np.exp(shifted - log_sum[:, None])                 # softmax, (N, V)
        probs[rows, t[rows]] -= 1.0
        probs[~keep] = 0.0
        logits.grad += (g / n_kept * probs).reshape(logits.shape)
    return _node(out, "cross_entropy", (logits,), backward)


# ---------------------------------------------------------------------------------------------
# Layers with their own fused backward
# ---------------------------------------------------------------------------------------------
# Layer norm over the last axis:  x̂ = (x - μ) / √(σ² + eps),  out = x̂ * w + b
#   dw = Σ g·x̂,  db = Σ g  (over all rows);  with d = g·w:
#   dx = (d - mean(d) - x̂ · mean(d·x̂)) / √(σ² + eps)
def layer_norm(x, w=None, b=None, eps: float = 1e-5) -> Tensor:
    x = as_tensor(x)
    w = as_tensor(w) if w is not None else None
    b = as_tensor(b) if b is not None else None
    c = x.shape[-1]
    for name, p in (("weight", w), ("bias", b)):
        if p is not None and p.shape != (c,):
            raise ValueError(f"layer_norm: {name} has shape {p.shape}, expected ({c},) for an "
                             f"input of shape {x.shape}")
    if _t._fused and w is not None and b is not None:
        return _layer_norm_fused(x, w, b, eps)
    mu = x.data.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(x.data.var(axis=-1, keepdims=True) + eps)   # 1/σ, (..., 1)
    xhat = (x.data - mu) * rstd
    out = xhat * w.data if w is not None else xhat.copy()
    if b is not None:
        out += b.data
    def backward(g):
        if w is not None and w.requires_grad:
            w.grad += (g * xhat).reshape(-1, c).sum(axis=0)
        if b is not None and b.requires_grad:
            b.grad += g.reshape(-1, c).sum(axis=0)
        if x.requires_grad:
            d = g * w.data if w is not None else g
            x.grad += rstd * (d - d.mean(axis=-1, keepdims=True)
                              - xhat * (d * xhat).mean(axis=-1, keepdims=True))
    parents = tuple(p for p in (x, w, b) if p is not None)
    return _node(out.astype(x.dtype, copy=False), "layer_norm", parents, backward)


def _layer_norm_fused(x, w, b, eps):
    """The same layer norm as one Numba pass forward and one backward (tensor/kernels/fused.py)."""
    out, mean, rstd = fk.layernorm_forward(x.data, w.data, b.data, eps)
    def backward(g):
        dx, dw, db = fk.layernorm_backward(g, x.data, w.data, mean, rstd)
        if x.requires_grad:
            x.grad += dx
        if w.requires_grad:
            w.grad += dw
        if b.requires_grad:
            b.grad += db
    return _node(out, "layer_norm", (x, w, b), backward)


# Inverted dropout: keep each entry with probability 1-p and scale it by 1/(1-p), so the
# expected value is unchanged and eval mode is the identity.   out = x * m;  dx = g * m
def dropout(x, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None):
    x = as_tensor(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    rng = generator if generator is not None else _t.default_generator()
    m = (rng.random(x.shape) >= p).astype(x.dtype) / np.asarray(1.0 - p, dtype=x.dtype)
    def backward(g):
        x.grad += g * m
    return _node(x.data * m, "dropout", (x,), backward)


# out[...] = w[idx[...]]  (a row lookup);  dw[i] = Σ of g over every place where idx == i
def embedding(idx, w) -> Tensor:
    w = as_tensor(w)
    idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= w.shape[0]):
        raise IndexError(f"embedding: index {int(idx.max() if idx.max() >= w.shape[0] else idx.min())} "
                         f"is outside 0..{w.shape[0] - 1} (table of shape {w.shape})")
    out = w.data[idx]                                              # (*idx.shape, C)
    def backward(g):
        if _t._fused:
            w.grad += fk.embedding_backward(idx, g, w.shape[0])
            return
        dw = np.zeros_like(w.data)
        np.add.at(dw, idx.reshape(-1), g.reshape(-1, w.shape[1]))       # scatter-add rows
        w.grad += dw
    return _node(out, "embedding", (w,), backward)


# Causal self-attention from the fused q/k/v projection, all heads in one op:
#   per head: a = softmax(q kᵀ / √hs, causal);  y = a v      (heads side by side in y)
#   dv = aᵀ g;  da = g vᵀ;  ds = a ⊙ (da - Σ a ⊙ da) / √hs;  dq = ds k;  dk = dsᵀ q
# One node instead of eleven: q, k, v are strided views of qkv (no split or transpose copies),
# the products run in the batched matmul kernel and the mask, scale and softmax in one pass of
# the softmax kernel. The op-by-op version of the same computation is in tinygpt/model.py
# (CausalSelfAttention), used when the fused kernels are off.
def attention(qkv, n_head: int) -> Tensor:
    """qkv (B, T, 3C) with q, k, v side by side -> y (B, T, C)."""
    qkv = as_tensor(qkv)
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
        raise ValueError(f"attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}, "
                         f"got shape {qkv.shape}")
    B, T, C3 = qkv.shape
    C, hs = C3 // 3, C3 // 3 // n_head
    scale = 1.0 / math.sqrt(hs)
    heads = qkv.data.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)   # (3, B, nh, T, hs)
    q, k, v = heads                                                # views, (B, nh, T, hs) each
    # np.matmul takes these strided views as they are (BLAS reads rows 3C apart), one BLAS call
    # per batch and head, with no copies: faster here than folding them into contiguous 3-D
    # stacks first. (Batched products always go to BLAS; see tensor/kernels/matmul.py.)
    att = kernels.softmax_forward(np.matmul(q, k.swapaxes(-1, -2)), scale=scale,
                                  causal=True)                     # (B, nh, T, T)
    y = np.matmul(att, v)                                          # (B, nh, T, hs)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C)                 # (B, T, C): heads side by side
    def backward(g):
        g = g.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)      # (B, nh, T, hs)
        dqkv = np.empty((B, T, 3, n_head, hs), dtype=qkv.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                 # views into dqkv
        np.matmul(att.swapaxes(-1, -2), g, out=dv)                 # dv = aᵀ g
        ds = kernels.softmax_backward(att, np.matmul(g, v.swapaxes(-1, -2)), scale=scale)
        np.matmul(ds, k, out=dq)                                   # dq = ds k
        np.matmul(ds.swapaxes(-1, -2), q, out=dk)                  # dk = dsᵀ q
        qkv.grad += dqkv.reshape(B, T, C3)
    return _node(out, "attention", (qkv,), backward)
