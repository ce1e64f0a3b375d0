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

The ops come in families, in this order: plumbing; elementwise arithmetic; elementwise
functions, comparisons and masks; reductions; shape and indexing; linear algebra; activations;
normalization; softmax and losses; dropout; attention. An op with a fused Numba kernel
(tensor/kernels/) reads the switch once, in its forward (`is_fused()`, tensor/mode.py), and its
backward follows the same path; the NumPy lines it runs otherwise are written beside the call.
The creation helpers (zeros, full, eye, randn, ...) are in tensor/tensor.py.
"""
from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from . import kernels
from .kernels import fused as fk
from .mode import is_fused, is_grad_enabled
from .tensor import Tensor, FLOAT_DTYPES, default_generator


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
    result.data, result._grad, result._op = out, None, op
    result.requires_grad, result._parents, result._backward = False, (), None
    if is_grad_enabled():
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


def _axis(op: str, axis, ndim: int) -> int:
    """One axis, checked and made non-negative: -1 is the last. An axis outside -ndim..ndim-1
    is an error (NumPy-style wrapping would silently pick another axis)."""
    if type(axis) is not int and (not isinstance(axis, numbers.Integral)    # (int: the fast way)
                                  or isinstance(axis, (bool, np.bool_))):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        valid = f"valid: {-ndim}..{ndim - 1}" if ndim else "it has no axes"
        raise ValueError(f"{op}: axis {axis} is out of range for a tensor with {ndim} "
                         f"dimensions ({valid})")
    return int(axis) % ndim


def _axes(axis, ndim: int, op: str = "reduction") -> tuple:
    """None -> every axis; an int or a tuple -> those axes, checked, non-negative, no repeats.
    As in PyTorch, axis 0 or -1 of a 0-d tensor names the tensor itself (nothing to reduce)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if ndim == 0 and all(isinstance(a, numbers.Integral) and a in (0, -1) for a in axes):
        return ()
    checked = tuple(_axis(op, a, ndim) for a in axes)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{op}: axis {axis} names an axis more than once: repeated axes "
                         f"are not allowed (tensor with {ndim} dimensions)")
    return checked


def _axes_of(op: str, axis, x: Tensor, ndim=None, one=False):
    """_axes (or _axis, for `one` axis) of x for an op whose error names x's shape as well."""
    ndim = x.ndim if ndim is None else ndim
    try:
        return _axis(op, axis, ndim) if one else _axes(axis, ndim, op)
    except ValueError as e:
        raise ValueError(f"{e}; the tensor has shape {x.shape}") from None


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
def div(x, y, rounding_mode: str | None = None) -> Tensor:
    """x / y. rounding_mode="floor" rounds the quotient down (floor_divide, Python's //) and
    "trunc" towards zero, as torch.div; both have gradient 0 (see _rounded_div)."""
    if rounding_mode is not None:
        return _rounded_div("div", x, y, rounding_mode)
    x, y = _binary("div", x, y)
    out = x.data / y.data
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(g / y.data, x.shape)
        if y.requires_grad:
            y.grad -= unbroadcast(g * out / y.data, y.shape)
    return _node(out, "div", (x, y), backward)


truediv = div


# out = ⌊x / y⌋ (x // y, Python's rule: x - y·out has y's sign);  dx = 0, dy = 0
def floor_divide(x, y) -> Tensor:
    return _rounded_div("floor_divide", x, y, "floor")


# out = ⌊x / y⌋ ("floor") or trunc(x / y) ("trunc", towards zero);  dx = 0, dy = 0: the result
#   is a step function of x and y, flat between its jumps (PyTorch's gradient too)
def _rounded_div(op: str, x, y, rounding_mode) -> Tensor:
    if rounding_mode not in ("floor", "trunc"):
        raise ValueError(f"{op}: rounding_mode must be None, 'floor' or 'trunc', got "
                         f"{rounding_mode!r}")
    x, y = _binary(op, x, y)
    with np.errstate(divide="ignore", invalid="ignore"):     # y = 0: ±inf or NaN, as PyTorch
        if rounding_mode == "floor":      # NumPy's floor_divide is Python's (and torch's) //:
            out = np.floor_divide(x.data, y.data)          # 1.0 // 0.1 = 9, not ⌊10.000…⌋
        else:
            out = np.trunc(x.data / y.data)                # torch's trunc: 1.0 / 0.1 -> 10
    def backward(g):
        if x.requires_grad:
            x.grad += np.zeros(x.shape, x.dtype)
        if y.requires_grad:
            y.grad += np.zeros(y.shape, y.dtype)
    return _node(out, op, (x, y), backward)


# out = -x;  dx = -g
def neg(x) -> Tensor:
    x = as_tensor(x)
    def backward(g):
        x.grad -= g
    return _node(-x.data, "neg", (x,), backward)


# out = x ** y;  dx = g · y · x^(y-1),  dy = g · out · ln x
#   (dx = 0 where y = 0, as x⁰ = 1 is flat even at x = 0; dy = 0 where x = 0 and y ≥ 0, as
#   PyTorch; ln x of a negative x is NaN: a negative base has no real derivative in y)
def pow(x, y) -> Tensor:
    """x ** y. y a number (the common case: x², x⁻¹, √x), or a tensor/array of exponents;
    x may also be a number (`2 ** t`, Tensor.__rpow__)."""
    if isinstance(y, numbers.Real) and not isinstance(y, (bool, np.bool_)) and \
            isinstance(x, Tensor):
        return _pow_number(x, y.item() if isinstance(y, np.generic) else y)
    x, y = _binary("pow", x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x.data ** y.data
    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):    # inf·0 below is masked out
            if x.requires_grad:
                dx = np.where(y.data == 0, 0.0, g * y.data * x.data ** (y.data - 1))
                x.grad += unbroadcast(dx.astype(x.dtype, copy=False), x.shape)
            if y.requires_grad:
                dy = np.where((x.data == 0) & (y.data >= 0), 0.0, g * out * np.log(x.data))
                y.grad += unbroadcast(dy.astype(y.dtype, copy=False), y.shape)
    return _node(out, "pow", (x, y), backward)


# out = x ** p  (p a Python number: keeps x's dtype);  dx = g · p · x^(p-1)  (0 for p = 0)
def _pow_number(x: Tensor, p) -> Tensor:
    out = x.data ** p
    def backward(g):
        if p == 0:        # x⁰ = 1 everywhere: p·x^(p-1) would be 0·inf = NaN at x = 0
            x.grad += np.zeros_like(g)
        else:
            x.grad += g * p * x.data ** (p - 1)
    return _node(out, "pow", (x,), backward)


# out = max(x, y) elementwise, broadcasting;  dx = g where x > y,  dy = g where y > x,
#   and where x == y each side gets ½ g (PyTorch's rule; the same split as ties in `max`)
def maximum(x, y) -> Tensor:
    return _pick_elementwise("maximum", np.maximum, np.greater, x, y)


# out = min(x, y) elementwise, broadcasting;  dx = g where x < y,  dy = g where y < x,
#   and where x == y each side gets ½ g (as maximum)
def minimum(x, y) -> Tensor:
    return _pick_elementwise("minimum", np.minimum, np.less, x, y)


def _pick_elementwise(op: str, pick, beats, x, y) -> Tensor:
    """maximum (pick = np.maximum, beats = np.greater) or minimum (np.minimum, np.less)."""
    x, y = _binary(op, x, y)
    out = pick(x.data, y.data)
    def backward(g):
        tie, x_wins = x.data == y.data, beats(x.data, y.data)
        if x.requires_grad:
            x.grad += unbroadcast(np.where(tie, 0.5 * g, g * x_wins), x.shape)
        if y.requires_grad:
            y.grad += unbroadcast(np.where(tie, 0.5 * g, g * ~(x_wins | tie)), y.shape)
    return _node(out, op, (x, y), backward)


# ---------------------------------------------------------------------------------------------
# Elementwise functions, comparisons and masks
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


# out = 1 / √x;  dx = -½ g · out³
def rsqrt(x) -> Tensor:
    x = as_tensor(x)
    out = 1 / np.sqrt(x.data)
    def backward(g):
        x.grad -= 0.5 * g * out * out * out
    return _node(out, "rsqrt", (x,), backward)


# out = tanh x;  dx = g * (1 - out²)
def tanh(x) -> Tensor:
    x = as_tensor(x)
    out = np.tanh(x.data)
    def backward(g):
        x.grad += g * (1 - out * out)
    return _node(out, "tanh", (x,), backward)


# out = sin x;  dx = g · cos x
def sin(x) -> Tensor:
    x = as_tensor(x)
    def backward(g):
        x.grad += g * np.cos(x.data)
    return _node(np.sin(x.data), "sin", (x,), backward)


# out = cos x;  dx = -g · sin x
def cos(x) -> Tensor:
    x = as_tensor(x)
    def backward(g):
        x.grad -= g * np.sin(x.data)
    return _node(np.cos(x.data), "cos", (x,), backward)


# out = |x|;  dx = g · sign(x)   (0 at x = 0, as in PyTorch)
def abs(x) -> Tensor:
    x = as_tensor(x)
    def backward(g):
        x.grad += g * np.sign(x.data)
    return _node(np.abs(x.data), "abs", (x,), backward)


# out = min(max(x, min), max);  dx = g where min ≤ x ≤ max, else 0
#   (a bound's own value counts as inside, as in PyTorch's clamp; either bound may be None)
def clip(x, min=None, max=None) -> Tensor:
    x = as_tensor(x)
    if min is None and max is None:
        raise ValueError("clip: give at least one of min= and max=")
    lo, hi = _constant_bounds("clip", min), _constant_bounds("clip", max)
    out = np.clip(x.data, lo, hi).astype(x.dtype, copy=False)
    if out.shape != x.shape:
        raise ValueError(f"clip: bounds of shapes {np.shape(lo)} and {np.shape(hi)} would grow the "
                         f"tensor of shape {x.shape} to {out.shape}")
    inside = np.ones(x.shape, dtype=bool)
    if lo is not None:
        inside &= x.data >= lo
    if hi is not None:
        inside &= x.data <= hi
    def backward(g):
        x.grad += g * inside
    return _node(out, "clip", (x,), backward)


clamp = clip


def _constant_bounds(op: str, value):
    """A bound taken as a constant: a number, an array, or a tensor that needs no gradient (a
    gradient to it would be dropped silently, so that case is refused)."""
    if isinstance(value, Tensor):
        if value.requires_grad:
            raise TypeError(f"{op}: this bound is a tensor that requires gradients, but {op} "
                            f"treats its bounds as constants; use maximum/minimum to get "
                            f"gradients to them")
        return value.data
    return value


# out = x in another float dtype;  dx = g in x's dtype
def cast(x, dtype) -> Tensor:
    x = as_tensor(x)
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"cast: only float32 and float64 are supported, got {dtype}")
    def backward(g):
        x.grad += g
    return _node(x.data.astype(dtype), "cast", (x,), backward)


# Comparisons: boolean tensors, no gradient (the result is a step function of the inputs)
def _compare(op: str, ufunc, x, y) -> Tensor:
    x, y = _binary(op, x, y)
    out = ufunc(x.data, y.data)              # bool, broadcast shape
    return _node(out, op, (), None)          # no parents: never part of a graph


def lt(x, y) -> Tensor: return _compare("lt", np.less, x, y)             # x < y
def le(x, y) -> Tensor: return _compare("le", np.less_equal, x, y)       # x <= y
def gt(x, y) -> Tensor: return _compare("gt", np.greater, x, y)          # x > y
def ge(x, y) -> Tensor: return _compare("ge", np.greater_equal, x, y)    # x >= y
def eq(x, y) -> Tensor: return _compare("eq", np.equal, x, y)            # x == y
def ne(x, y) -> Tensor: return _compare("ne", np.not_equal, x, y)        # x != y


def _logical(op: str, ufunc, *xs) -> Tensor:
    xs = [as_tensor(x) for x in xs]
    if any(x.dtype != np.bool_ for x in xs):
        raise TypeError(f"{op}: needs boolean tensors (masks, e.g. from x > 0), got dtypes "
                        f"{[str(x.dtype) for x in xs]}")
    if len(xs) == 2:
        _broadcast_check(op, *xs)
    return _node(ufunc(*(x.data for x in xs)), op, (), None)


def logical_and(x, y) -> Tensor: return _logical("logical_and", np.logical_and, x, y)  # x & y
def logical_or(x, y) -> Tensor:  return _logical("logical_or", np.logical_or, x, y)    # x | y
def logical_not(x) -> Tensor:    return _logical("logical_not", np.logical_not, x)     # ~x


# out = x where cond else y;  dx = g where cond,  dy = g where not cond
def where(cond, x, y) -> Tensor:
    """x where cond is True, else y. The result's dtype follows PyTorch's promotion: see
    _where_branches (where(c, 1, 2) is int64, where(c, x, 0.5) keeps x's float dtype)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    x, y, dtype = _where_branches(x, y)
    try:
        np.broadcast_shapes(cond.shape, x.shape, y.shape)
    except ValueError:
        raise ValueError(f"where: condition {cond.shape}, x {x.shape} and y {y.shape} cannot be "
                         f"broadcast together") from None
    out = np.where(cond, x.data, y.data).astype(dtype, copy=False)
    def backward(g):
        if x.requires_grad:
            x.grad += unbroadcast(np.where(cond, g, 0), x.shape)
        if y.requires_grad:
            y.grad += unbroadcast(np.where(cond, 0, g), y.shape)
    return _node(out, "where", (x, y), backward)


def _is_number(v) -> bool:
    return isinstance(v, (numbers.Number, np.bool_)) and not isinstance(v, complex)


def _number_kind(v) -> int:
    """0 bool, 1 integer, 2 float: the order of PyTorch's type promotion (and of _KIND)."""
    return 0 if isinstance(v, (bool, np.bool_)) else 1 if isinstance(v, numbers.Integral) else 2


_KIND = {"b": 0, "u": 1, "i": 1, "f": 2}       # a dtype's kind, in the same order


def _where_branches(x, y):
    """where's two branches as tensors, and the result's dtype, by PyTorch's rule: the higher
    kind wins (bool < integer < float); tensors of the winning kind promote as NumPy does
    (float32 and float64: float64; int32 and int64: int64); a Python number never widens a
    tensor of its own kind or a higher one: it takes that tensor's dtype. A number of a higher
    kind, or two numbers, give bool, int64 or float32 (PyTorch's default float): where(c, 1, 2)
    is int64, where(c, int32_t, 2) int32, where(c, int32_t, 2.5) float32. Arrays are constants,
    as everywhere here: in the float dtype of the other branch, if it is a float tensor."""
    x = x if _is_number(x) else as_tensor(x, like=y if isinstance(y, Tensor) else None)
    y = y if _is_number(y) else as_tensor(y, like=x if isinstance(x, Tensor) else None)
    tensors = [v.dtype for v in (x, y) if isinstance(v, Tensor)]
    top = builtins.max((_KIND[d.kind] for d in tensors), default=-1)
    dtype = np.result_type(*(d for d in tensors if _KIND[d.kind] == top)) if tensors else None
    number = builtins.max((_number_kind(v) for v in (x, y) if not isinstance(v, Tensor)),
                          default=-1)
    if number > top:
        dtype = (np.bool_, np.int64, np.float32)[number]
    x, y = (v if isinstance(v, Tensor) else Tensor(np.asarray(v, dtype=dtype)) for v in (x, y))
    return x, y, np.dtype(dtype)


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
# Reductions
# ---------------------------------------------------------------------------------------------
def _expand(g, axes, keepdims):
    """Give a reduced gradient its size-1 axes back, so it broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


# out = Σ x over axes;  dx = g copied along the summed axes
def sum(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "sum")
    out = np.sum(x.data, axis=axes, keepdims=keepdims)
    def backward(g):
        x.grad += _expand(g, axes, keepdims)
    return _node(np.asarray(out), "sum", (x,), backward)


# out = Σ x / n;  dx = g / n copied along the averaged axes  (n = 0: NaN, as NumPy)
def mean(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "mean")
    n = math.prod(x.shape[a] for a in axes)
    out = np.mean(x.data, axis=axes, keepdims=keepdims)
    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):   # g is an array: n = 0 gives inf
            x.grad += _expand(g, axes, keepdims) / n
    return _node(np.asarray(out, dtype=x.dtype), "mean", (x,), backward)


# out = max (min) of x over axes;  dx = g at the arg-max (arg-min), shared equally between
#   ties, 0 elsewhere. Values only: PyTorch's torch.max(x, dim) also returns indices (argmax).
def max(x, axis=None, keepdims=False) -> Tensor:
    return _reduce_extreme("max", np.max, x, axis, keepdims)


def min(x, axis=None, keepdims=False) -> Tensor:
    return _reduce_extreme("min", np.min, x, axis, keepdims)


def _reduce_extreme(op: str, np_reduce, x, axis, keepdims) -> Tensor:
    """max (np_reduce = np.max) or min (np.min) over axes."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, op)
    out = np_reduce(x.data, axis=axes, keepdims=True)
    def backward(g):
        winners = (x.data == out)
        x.grad += winners * (_expand(g, axes, keepdims) / winners.sum(axis=axes, keepdims=True))
    return _node(out if keepdims else np.squeeze(out, axes), op, (x,), backward)


# index of the largest (smallest) entry along axis; the first one if several tie. No gradient:
# an index does not change when x moves a little.
def argmax(x, axis=None, keepdims=False) -> Tensor:
    return _arg_reduce("argmax", np.argmax, x, axis, keepdims)


def argmin(x, axis=None, keepdims=False) -> Tensor:
    return _arg_reduce("argmin", np.argmin, x, axis, keepdims)


def _arg_reduce(op: str, np_arg, x, axis, keepdims) -> Tensor:
    x = as_tensor(x)
    if x.size == 0:
        raise ValueError(f"{op}: the tensor of shape {x.shape} is empty; it has no {op[3:]}imum")
    if axis is None:                         # the index into the flattened tensor, as PyTorch
        out = np_arg(x.data.reshape(-1))
        out = np.reshape(out, (1,) * x.ndim) if keepdims else out
    elif x.ndim == 0:                        # a 0-d tensor has one element, at index 0
        _axis(op, axis, 1)
        out = np.zeros((), dtype=np.int64)
    else:
        out = np_arg(x.data, axis=_axis(op, axis, x.ndim), keepdims=keepdims)
    return _node(np.asarray(out, dtype=np.int64), op, (), None)


# out = Σ (x - μ)² / (n - correction);  dx = g · 2(x - μ) / (n - correction)
#   (μ's own dependence on x drops out: Σ (x - μ) = 0)
def var(x, axis=None, keepdims=False, *, correction=0) -> Tensor:
    """Variance over `axis`. The default correction=0 divides by n: the population (biased)
    variance, as np.var and layer norm use. PyTorch's default is correction=1 (divide by n - 1,
    the unbiased estimate): pass correction=1 for torch.var's result. When n - correction <= 0
    (an empty axis, or one element with correction=1) the result is NaN or inf, as in NumPy and
    PyTorch, and so is the gradient; nothing raises."""
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "var")
    n = math.prod(x.shape[a] for a in axes)
    dof = x.dtype.type(builtins.max(n - correction, 0))          # a NumPy 0 divides to inf/NaN
    with np.errstate(divide="ignore", invalid="ignore"):     # (np.mean would warn for n = 0)
        centered = x.data - np.sum(x.data, axis=axes, keepdims=True) / x.dtype.type(n)
        out = np.sum(centered * centered, axis=axes, keepdims=keepdims) / dof
    def backward(g):
        with np.errstate(divide="ignore", invalid="ignore"):
            x.grad += _expand(g, axes, keepdims) * (2.0 / dof) * centered
    return _node(np.asarray(out, dtype=x.dtype), "var", (x,), backward)


# out = √var(x);  dx = g / (2 out) · dvar/dx = g · (x - μ) / ((n - correction) · out)
#   built on `var` (two nodes, sqrt after var), with var's `correction` and its default 0: the
#   population standard deviation, like np.std. PyTorch's default is correction=1.
def std(x, axis=None, keepdims=False, *, correction=0) -> Tensor:
    x = as_tensor(x)
    _axes(axis, x.ndim, "std")               # so that a bad axis is reported as std's
    return sqrt(var(x, axis, keepdims, correction=correction))


# out = log Σ eˣ over axes = m + log Σ e^(x - m)  (m = the max: no exponent overflows);
#   dx = g · e^(x - out)  (= g · softmax(x) over the same axes)
def logsumexp(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes(axis, x.ndim, "logsumexp")
    m = np.array(np.max(x.data, axis=axes, keepdims=True, initial=-np.inf))  # (-inf if empty)
    m[~np.isfinite(m)] = 0                   # all -inf (out = -inf) or an inf: no shift
    with np.errstate(divide="ignore"):       # log 0 = -inf for a row of all -inf, as it should
        out = m + np.log(np.sum(np.exp(x.data - m), axis=axes, keepdims=True))
    def backward(g):
        x.grad += _expand(g, axes, keepdims) * np.exp(x.data - out)
    return _node(out if keepdims else np.squeeze(out, axes), "logsumexp", (x,), backward)


# out = Π x over axes;  dx_i = g · Π_(j≠i) x_j, the product of the others in i's slice
#   (not g · out / x_i, which is 0/0 at a zero: a slice with one zero sends g · Π of the rest
#   to that entry and 0 to the others; two zeros, 0 everywhere, as PyTorch)
def prod(x, axis=None, keepdims=False) -> Tensor:
    x = as_tensor(x)
    axes = _axes_of("prod", axis, x)
    out = np.prod(x.data, axis=axes, keepdims=keepdims)
    def backward(g):
        rest = tuple(a for a in range(x.ndim) if a not in axes)
        order = rest + axes                                  # the reduced axes last
        n = math.prod(x.shape[a] for a in axes)
        if n == 0:                                           # an empty product: nothing to send
            x.grad += np.zeros_like(x.data)
            return
        slices = x.data.transpose(order).reshape(tuple(x.shape[a] for a in rest) + (n,))  # (..., n)
        ones = np.ones(slices.shape[:-1] + (1,), x.dtype)
        before = np.cumprod(np.concatenate([ones, slices[..., :-1]], axis=-1), axis=-1)
        after = np.cumprod(np.concatenate([ones, slices[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
        others = (before * after).reshape(tuple(x.shape[a] for a in order))   # Π_(j≠i), x's order
        x.grad += _expand(g, axes, keepdims) * others.transpose(np.argsort(order))
    return _node(np.asarray(out, dtype=x.dtype), "prod", (x,), backward)


# out_i = Σ_(j≤i) x_j along axis (a running sum);  dx_j = Σ_(i≥j) g_i, the running sum of g
#   from the other end: x_j is in every out_i from i = j on
def cumsum(x, axis) -> Tensor:
    x = as_tensor(x)
    axis = _axes_of("cumsum", axis, x, builtins.max(x.ndim, 1), one=True)
    out = np.cumsum(x.data.reshape(x.shape or (1,)), axis=axis).reshape(x.shape)
    def backward(g):
        g = g.reshape(x.shape or (1,))
        x.grad += np.flip(np.cumsum(np.flip(g, axis), axis=axis), axis).reshape(x.shape)
    return _node(out.astype(x.dtype, copy=False), "cumsum", (x,), backward)


# ---------------------------------------------------------------------------------------------
# Shape and indexing: they move numbers around, so backward moves the gradient back
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
    return _permute("permute", x, axes)


def _permute(op: str, x: Tensor, axes) -> Tensor:
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    axes = tuple(_axis(op, a, x.ndim) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"{op}: axes {tuple(axes)} are not a permutation of the "
                         f"{x.ndim} axes of a tensor of shape {x.shape}")
    def backward(g):
        x.grad += g.transpose(np.argsort(axes))                  # the inverse order
    return _node(x.data.transpose(axes), op, (x,), backward)


# out = x with axes a and b swapped;  dx = g with them swapped back (a swap is its own inverse)
def transpose(x, *axes) -> Tensor:
    """With no axes: reverse them all (`.T`). With two: swap those two. Otherwise: permute."""
    x = as_tensor(x)
    if not axes:
        return _permute("transpose", x, tuple(reversed(range(x.ndim))))
    if len(axes) == 2 and all(isinstance(a, int) for a in axes):
        a, b = _axis("transpose", axes[0], x.ndim), _axis("transpose", axes[1], x.ndim)
        def backward(g):
            x.grad += g.swapaxes(a, b)
        return _node(x.data.swapaxes(a, b), "transpose", (x,), backward)
    return _permute("transpose", x, axes)


# out = x reversed along the given axes;  dx = g reversed along them (a flip undoes itself)
def flip(x, *axis) -> Tensor:
    """flip(x, 0), flip(x, 0, 1) or flip(x, (0, 1)): reverse the order of entries along those
    axes (torch.flip(x, dims), np.flip)."""
    x = as_tensor(x)
    axis = axis[0] if len(axis) == 1 and isinstance(axis[0], (tuple, list)) else axis
    axes = _axes_of("flip", tuple(axis), x)
    def backward(g):
        x.grad += np.flip(g, axes)
    return _node(np.flip(x.data, axes).copy(), "flip", (x,), backward)


# squeeze, unsqueeze and flatten only change the shape: each is a `reshape`, whose backward
# views g with x's shape again.
def squeeze(x, axis=None) -> Tensor:
    """Drop axes of size 1: all of them (axis=None), or those named (an int or a tuple) that
    have size 1; a named axis of another size stays, as in PyTorch."""
    x = as_tensor(x)
    axes = _axes_of("squeeze", axis, x)
    return reshape(x, tuple(n for a, n in enumerate(x.shape) if not (a in axes and n == 1)))


def unsqueeze(x, axis: int) -> Tensor:
    """Insert an axis of size 1 at position `axis` of the result (-1: last), torch.unsqueeze."""
    x = as_tensor(x)
    if not isinstance(axis, numbers.Integral) or isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"unsqueeze: axis must be an int, got {axis!r}")
    if not -x.ndim - 1 <= axis <= x.ndim:       # (the new axis is one of the result's)
        raise ValueError(f"unsqueeze: axis {axis} is out of range for a tensor of shape "
                         f"{x.shape}: the new axis goes at {-x.ndim - 1}..{x.ndim}")
    axis = _axis("unsqueeze", axis, x.ndim + 1)
    return reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge axes start_dim..end_dim (both included) into one, torch.flatten; a 0-d tensor
    becomes shape (1,). (PyTorch's argument names: NumPy has no such function.)"""
    x = as_tensor(x)
    ndim = builtins.max(x.ndim, 1)
    start = _axes_of("flatten", start_dim, x, ndim, one=True)
    end = _axes_of("flatten", end_dim, x, ndim, one=True)
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for a "
                         f"tensor of shape {x.shape}")
    shape = x.shape or (1,)
    return reshape(x, shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])


def _sizes(op: str, sizes) -> tuple:
    """The sizes of expand, repeat and pad: ints, given one by one or as one tuple."""
    sizes = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
        raise TypeError(f"{op}: sizes must be ints, got {tuple(sizes)}")
    return tuple(int(s) for s in sizes)


# out = x broadcast to `shape` (a read-only view, no copy);  dx = g summed over the copies
#   -1 keeps an axis' size, as in PyTorch: a (3, 1) x expands with (-1, 4) to (3, 4)
def expand(x, *shape) -> Tensor:
    x = as_tensor(x)
    shape = _sizes("expand", shape)
    lead = len(shape) - x.ndim               # new axes on the left
    if lead < 0 or any(s == -1 for s in shape[:lead]):
        raise ValueError(f"expand: cannot expand shape {x.shape} to {shape}: give at least "
                         f"{x.ndim} sizes, and -1 only for axes the tensor already has")
    shape = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    try:
        out = np.broadcast_to(x.data, shape)
    except ValueError:
        raise ValueError(f"expand: cannot expand shape {x.shape} to {shape}: only axes of size "
                         f"1 can grow (NumPy broadcasting rules)") from None
    def backward(g):
        x.grad += unbroadcast(g, x.shape)
    return _node(out, "expand", (x,), backward)


broadcast_to = expand


# out = x tiled sizes[i] times along axis i (PyTorch's Tensor.repeat, which is np.tile, not
#   np.repeat / torch.repeat_interleave);  dx = Σ of g over the copies
def repeat(x, *sizes) -> Tensor:
    x = as_tensor(x)
    sizes = _sizes("repeat", sizes)
    if len(sizes) < x.ndim or any(s < 0 for s in sizes):
        raise ValueError(f"repeat: needs one non-negative count per axis (at least {x.ndim} for "
                         f"shape {x.shape}), got {sizes}")
    padded = (1,) * (len(sizes) - x.ndim) + x.shape      # new axes on the left, as np.tile
    out = np.tile(x.data, sizes)                          # (r₀·n₀, r₁·n₁, …)
    def backward(g):
        pairs = [d for r, n in zip(sizes, padded) for d in (r, n)]
        g = g.reshape(pairs)                              # (r₀, n₀, r₁, n₁, …)
        x.grad += g.sum(axis=tuple(range(0, len(pairs), 2))).reshape(x.shape)   # (n₀, n₁, …)
    return _node(out, "repeat", (x,), backward)


def _plain_index(index):
    """Tensors inside an index become their arrays (e.g. x[idx] with idx a Tensor of ints)."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


def _is_advanced(index) -> bool:
    """Does NumPy read this index as advanced indexing (which may pick a place twice)?
    Integer or boolean arrays, lists, a tuple *inside* the index tuple (`x[(1, 1),]` is
    x[[1, 1]]) and True/False are advanced; ints, slices, None and Ellipsis are basic."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (np.ndarray, list, tuple, bool, np.bool_)) for i in parts)


def _index(a: np.ndarray, index) -> np.ndarray:
    """a[index] by PyTorch's rule, which differs from NumPy's in one case. Both put the axes of
    the advanced indices (arrays, lists) where the first of them stands if they are side by
    side, and first otherwise. NumPy counts an int beside an array as advanced, PyTorch as
    basic: on a (2, 3, 4, 5) tensor x[0, :, [0, 1], :] is (2, 3, 5) in NumPy but (3, 2, 5) in
    PyTorch, where the list is the only advanced index, alone, so its axis stays in place. So
    the ints (and 0-d integer arrays, which PyTorch reads as ints) are applied first, as basic
    indexing, then the rest of the index."""
    parts = index if isinstance(index, tuple) else (index,)
    ints = [_is_int_index(i) for i in parts]
    if not any(ints) or not _is_advanced(index):
        return a[index]                    # NumPy and PyTorch agree
    first = []                             # the ints, with a slice for each axis the rest use
    for i, is_int in zip(parts, ints):
        if is_int:
            first.append(int(i))
        elif i is Ellipsis:
            first.append(i)
        elif i is not None:                # (None adds an axis: nothing to skip)
            b = np.asarray(i)              # a boolean mask spans as many axes as it has
            first += [slice(None)] * (b.ndim if b.dtype == bool else 1)
    rest = tuple(i for i, is_int in zip(parts, ints) if not is_int)
    return a[tuple(first)][rest]


def _is_int_index(i) -> bool:
    """An int, or a 0-d integer array (a 0-d tensor of ints): a basic index for PyTorch."""
    if isinstance(i, np.ndarray):
        return i.ndim == 0 and i.dtype.kind in "iu"
    return isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))


# out = x[index];  dx = g scattered back to the indexed places (added up where an index repeats)
def getitem(x, index) -> Tensor:
    x = as_tensor(x)
    index = _plain_index(index)
    try:
        out = _index(x.data, index)
    except IndexError as e:
        raise IndexError(f"getitem: {e} (tensor of shape {x.shape})") from None
    advanced = _is_advanced(index)
    def backward(g):
        if advanced:   # the flat position of every picked element, then a scatter-add (bincount)
            picked = _index(np.arange(x.size).reshape(x.shape), index)  # out's shape
            dx = np.bincount(picked.reshape(-1), weights=g.reshape(-1), minlength=x.size)
            x.grad += dx.reshape(x.shape).astype(x.dtype, copy=False)
        else:          # basic indexing (ints, slices, None, ...): every place appears once
            dx = np.zeros_like(x.data)
            dx[index] = g
            x.grad += dx
    return _node(np.array(out, copy=True), "getitem", (x,), backward)


# out[i, j, k] = x[i, index[i, j, k], k]  (axis 1; torch.gather semantics: index has x's number
#   of axes and is no larger than x on the others);  dx[i, index[i, j, k], k] += g[i, j, k]
def gather(x, axis, index) -> Tensor:
    x = as_tensor(x)
    index = np.asarray(index.data if isinstance(index, Tensor) else index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"gather: index must hold integers, got dtype {index.dtype}")
    if x.ndim == 0 or index.ndim != x.ndim:
        raise ValueError(f"gather: index of shape {index.shape} must have as many axes as the "
                         f"tensor of shape {x.shape} (at least one)")
    axis = _axis("gather", axis, x.ndim)
    if any(i > n for d, (i, n) in enumerate(zip(index.shape, x.shape)) if d != axis):
        raise ValueError(f"gather: index of shape {index.shape} is larger than the tensor of shape "
                         f"{x.shape} along an axis other than {axis}")
    if index.size and (index.min() < 0 or index.max() >= x.shape[axis]):
        raise IndexError(f"gather: index values must be in 0..{x.shape[axis] - 1} (axis {axis} "
                         f"of shape {x.shape}), got {index.min()}..{index.max()}")
    places = list(np.ix_(*(np.arange(n) for n in index.shape)))   # i, j, k as open grids
    places[axis] = index                                          # … with index on `axis`
    places = tuple(places)
    out = x.data[places]                                          # index.shape, a copy
    def backward(g):
        dx = np.zeros_like(x.data)
        np.add.at(dx, places, g)          # scatter-add: an index used twice gets both shares
        x.grad += dx
    return _node(out, "gather", (x,), backward)


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
    fused = is_fused()   # decided once, here: backward follows the same path
    def backward(g):
        if fused:
            w.grad += fk.embedding_backward(idx, g, w.shape[0])
            return
        dw = np.zeros_like(w.data)
        np.add.at(dw, idx.reshape(-1), g.reshape(-1, w.shape[1]))       # scatter-add rows
        w.grad += dw
    return _node(out, "embedding", (w,), backward)


# out = [x₀ x₁ …] joined along axis;  dxᵢ = the slice of g that came from xᵢ
def concatenate(tensors, axis=0) -> Tensor:
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor, got an empty list")
    axis = _axis("concatenate", axis, tensors[0].ndim)
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
    axis = _axis("stack", axis, tensors[0].ndim + 1)          # the new axis of the result
    out = np.stack([t.data for t in tensors], axis=axis)
    def backward(g):
        for i, t in enumerate(tensors):
            if t.requires_grad:
                t.grad += np.take(g, i, axis=axis)
    return _node(out, "stack", tuple(tensors), backward)


def split(x, sections, axis=-1) -> list:
    """Split into pieces along `axis`: `sections` is a piece count or a list of piece sizes.
    Each piece is a slice of x (`getitem`), so its gradient flows back into that slice.

    Note for PyTorch users: an int here is the number of pieces (like np.split), and the
    default axis is the last; torch.split(x, n) takes the *size* of each piece along axis 0
    (torch.chunk(x, n, dim) is the count form). A list of sizes means the same in both."""
    x = as_tensor(x)
    axis = _axis("split", axis, x.ndim)
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
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(x, index))
        start += size
    return pieces


# out = x with `value` added around it;  dx = the middle of g (the part that came from x)
#   `pad` is in PyTorch's F.pad order: (left, right) of the LAST axis first, then of the axis
#   before it, …: pad(x, (1, 2)) pads the last axis, pad(x, (0, 0, 1, 1)) the second-to-last.
#   (NumPy's np.pad takes ((before, after), …) from the FIRST axis.) Constant padding only.
def pad(x, pad, mode: str = "constant", value: float = 0.0) -> Tensor:
    x = as_tensor(x)
    pad = _sizes("pad", (pad,))
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > x.ndim or any(p < 0 for p in pad):
        raise ValueError(f"pad: needs (left, right) pairs of non-negative sizes, at most one pair "
                         f"per axis ({x.ndim} for shape {x.shape}), got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):                                # pair i pads axis -1 - i
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    out = np.pad(x.data, widths, constant_values=value) if x.ndim else x.data.copy()
    middle = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
    def backward(g):
        x.grad += g[middle]
    return _node(out, "pad", (x,), backward)


# out = x on and below diagonal k of the last two axes, 0 above  (k > 0: above the main one);
#   dx = g with the same zeros
def tril(x, diagonal: int = 0) -> Tensor:
    x = as_tensor(x)
    _two_axes("tril", x)
    keep = np.tri(*x.shape[-2:], k=diagonal, dtype=bool)          # (M, N): j ≤ i + k
    return _triangle("tril", x, keep)


# out = x on and above diagonal k of the last two axes, 0 below;  dx = g with the same zeros
def triu(x, diagonal: int = 0) -> Tensor:
    x = as_tensor(x)
    _two_axes("triu", x)
    keep = ~np.tri(*x.shape[-2:], k=diagonal - 1, dtype=bool)     # (M, N): j ≥ i + k
    return _triangle("triu", x, keep)


def _triangle(op: str, x: Tensor, keep: np.ndarray) -> Tensor:
    def backward(g):
        x.grad += np.where(keep, g, 0)
    return _node(np.where(keep, x.data, x.dtype.type(0)), op, (x,), backward)


def _two_axes(op: str, x: Tensor) -> None:
    if x.ndim < 2:
        raise ValueError(f"{op}: needs a tensor with at least 2 axes (the last two form the "
                         f"matrix), got shape {x.shape}")


# ---------------------------------------------------------------------------------------------
# Linear algebra
# ---------------------------------------------------------------------------------------------
def _matmul_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (..., M, K) @ b (..., K, N) for arrays of 2 or more dims, batch dims broadcast."""
    # (sizes are spelled out, not -1: an axis may be 0, and reshape cannot infer -1 then)
    if b.ndim == 2:   # (..., M, K) @ (K, N): fold the batch into the rows, one 2-D product
        rows = math.prod(a.shape[:-1])
        return kernels.matmul(a.reshape(rows, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[-1:])
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n, z = a.shape[-2:], b.shape[-1], math.prod(batch)
    if a.shape[:-2] != batch:                                      # (no call when they agree)
        a = np.broadcast_to(a, batch + (m, k))
    if b.shape[:-2] != batch:
        b = np.broadcast_to(b, batch + (k, n))
    a3, b3 = a.reshape(z, m, k), b.reshape(z, k, n)               # (B, M, K), (B, K, N)
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
                rows = math.prod(x.shape[:-1])
                xf, gf = x.data.reshape(rows, x.shape[-1]), g.reshape(rows, g.shape[-1])
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
    rows = math.prod(x.shape[:-1])                        # (not -1: K may be 0)
    x2 = x.data.reshape(rows, K)                          # (rows, K): the batch folds into rows
    out = kernels.matmul(x2, w.data)                      # (rows, N), a fresh array
    if b is not None:
        out += b.data                                     # in place: no second (rows, N) array
    def backward(g):
        g2 = g.reshape(rows, N)                           # (rows, N)
        if x.requires_grad:                               # (rows, N) @ (N, K) -> (..., K)
            x.grad += kernels.matmul(g2, w.data.T).reshape(x.shape)
        if w.requires_grad:
            w.grad += kernels.matmul(x2.T, g2)            # (K, rows) @ (rows, N)
        if b is not None and b.requires_grad:
            b.grad += g2.sum(axis=0)                      # (N,)
    return _node(out.reshape(x.shape[:-1] + (N,)),        # (..., N)
                 "linear", (x, w) if b is None else (x, w, b), backward)


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
# out = max(x, 0);  dx = g where x > 0, else 0
def relu(x) -> Tensor:
    x = as_tensor(x)
    out = np.maximum(x.data, 0)
    def backward(g):
        x.grad += g * (x.data > 0)
    return _node(out, "relu", (x,), backward)


# out = x where x > 0, else a·x  (a = negative_slope);  dx = g where x > 0, else a·g
#   (at x = 0 the slope is a, as PyTorch)
def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    x = as_tensor(x)
    a = x.dtype.type(negative_slope) if x.dtype in FLOAT_DTYPES else negative_slope
    positive = x.data > 0
    def backward(g):
        x.grad += np.where(positive, g, a * g)
    return _node(np.where(positive, x.data, a * x.data), "leaky_relu", (x,), backward)


# out = x where x > 0, else α(eˣ - 1);  dx = g where x > 0, else g · α eˣ
#   (at x = 0 the slope is α, from the left side, as PyTorch; 1 from the right)
def elu(x, alpha: float = 1.0) -> Tensor:
    x = as_tensor(x)
    a = x.dtype.type(alpha) if x.dtype in FLOAT_DTYPES else alpha
    positive = x.data > 0
    em1 = np.expm1(np.minimum(x.data, 0))      # eˣ - 1 on the negative side, exact near 0 (and
    def backward(g):                           # no overflow on the positive side)
        x.grad += np.where(positive, g, g * a * (em1 + 1))
    return _node(np.where(positive, x.data, a * em1), "elu", (x,), backward)


_GELU_C = math.sqrt(2.0 / math.pi)


# GELU(x) = x·Φ(x), Φ the standard normal CDF.
# approximate="tanh", GPT-2's form:  out = ½x(1 + tanh(u)),  u = c(x + 0.044715x³),  c = √(2/π)
#   dx = g * [½(1 + t) + ½x(1 - t²) c (1 + 3·0.044715x²)],  t = tanh(u)
def gelu(x, approximate: str = "tanh") -> Tensor:
    """GELU. approximate="tanh" (the default here, GPT-2's form) or "none" (the exact erf form,
    PyTorch's default: pass approximate="none" to match torch.nn.functional.gelu(x)). The two
    differ by up to ~5e-4. Only the tanh form has a fused kernel."""
    x = as_tensor(x)
    if approximate == "none":
        return _gelu_exact(x)
    if approximate != "tanh":
        raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")
    fused = is_fused()   # decided once, here: backward follows the same path
    if fused:           # one Numba pass (tensor/kernels/fused.py) instead of the lines below
        out = fk.gelu_forward(x.data)
    else:
        x2 = x.data * x.data                 # (x·x·x is much faster than x ** 3 in NumPy)
        t = np.tanh(_GELU_C * x.data * (1 + 0.044715 * x2))
        out = 0.5 * x.data * (1 + t)
    def backward(g):
        if fused:
            x.grad += fk.gelu_backward(x.data, g)
            return
        dudx = _GELU_C * (1 + 3 * 0.044715 * x2)
        x.grad += g * (0.5 * (1 + t) + 0.5 * x.data * (1 - t * t) * dudx)
    return _node(out, "gelu", (x,), backward)


# The exact GELU:  out = xΦ(x) = ½x(1 + erf(x/√2));  dx = g · (Φ(x) + x·φ(x))
#   with φ(x) = e^(-x²/2)/√(2π), the standard normal density
def _gelu_exact(x: Tensor) -> Tensor:
    cdf = 0.5 * (1 + fk.erf(x.data * x.dtype.type(1 / math.sqrt(2))))      # Φ(x)
    out = x.data * cdf
    def backward(g):
        pdf = np.exp(-0.5 * x.data * x.data) * (1 / math.sqrt(2 * math.pi))   # φ(x)
        x.grad += g * (cdf + x.data * pdf)
    return _node(out, "gelu", (x,), backward)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + e⁻ᵃ), from e^-|a| ≤ 1: no overflow for large |a| of either sign."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


# out = σ(x) = 1 / (1 + e⁻ˣ);  dx = g · out · (1 - out)
def sigmoid(x) -> Tensor:
    x = as_tensor(x)
    out = _sigmoid(x.data)
    def backward(g):
        x.grad += g * out * (1 - out)
    return _node(out, "sigmoid", (x,), backward)


# out = x · σ(x)  (SiLU, "swish");  dx = g · σ(x) · (1 + x · (1 - σ(x)))
def silu(x) -> Tensor:
    x = as_tensor(x)
    s = _sigmoid(x.data)
    def backward(g):
        x.grad += g * s * (1 + x.data * (1 - s))
    return _node(x.data * s, "silu", (x,), backward)


# ---------------------------------------------------------------------------------------------
# Normalization
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
    if is_fused() and w is not None and b is not None:   # decided once: its own backward
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


# ---------------------------------------------------------------------------------------------
# Softmax and losses
# ---------------------------------------------------------------------------------------------
def _softmax_axis(op: str, x: Tensor, axis) -> tuple:
    """x's array with at least one axis (a 0-d tensor is one number: softmax 1, as PyTorch) and
    the checked axis."""
    data = x.data if x.ndim else x.data.reshape(1)
    return data, _axis(op, axis, builtins.max(x.ndim, 1))


# Softmax over the last axis of an array: the rows of `softmax` and of attention.
#   y = e^(z - max z) / Σ e^(z - max z),  z = scale·x  (causal: z = -inf, so y = 0, for each key
#   j > i + (Tk - Tq) that query i may not see);   dx = scale · y * (g - Σ g·y)
# fused: the Numba kernels (tensor/kernels/softmax.py), one pass per row; otherwise the NumPy
# lines below them. The op decides once, in its forward, and passes the same `fused` to both.
def _softmax_rows(x: np.ndarray, scale: float, causal: bool, fused: bool) -> np.ndarray:
    if fused:
        return kernels.softmax_forward(x, scale=scale, causal=causal)
    z = x * x.dtype.type(scale)
    if causal:
        z = np.where(kernels.causal_mask(*x.shape[-2:]), -np.inf, z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))          # the max entry becomes e^0 = 1
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_rows_backward(y: np.ndarray, g: np.ndarray, scale: float, fused: bool) -> np.ndarray:
    if fused:
        return kernels.softmax_backward(y, g, scale=scale)
    return y.dtype.type(scale) * y * (g - (g * y).sum(axis=-1, keepdims=True))


# out = eᶻ / Σ eᶻ (along axis), z = scale·x with the causal entries masked out;
#   dx = scale · out * (g - Σ g·out)
def softmax(x, axis=-1, scale: float = 1.0, causal: bool = False) -> Tensor:
    """Softmax along `axis`. For attention, `scale` multiplies the scores first and `causal=True`
    gives weight 0 to key j for query i when j > i + (Tk - Tq) (the key is in the query's future).
    Fused (the default), one Numba pass per row; otherwise the NumPy lines of _softmax_rows."""
    x = as_tensor(x)
    data, axis = _softmax_axis("softmax", x, axis)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"softmax: the input of shape {x.shape} has dtype {x.dtype}; it must be "
                        f"float32 or float64 (cast with .astype)")
    if causal and axis != data.ndim - 1:
        raise ValueError(f"softmax: causal=True needs axis=-1 (the keys), got axis={axis}")
    if causal and (data.ndim < 2 or data.shape[-2] > data.shape[-1]):
        raise ValueError(f"softmax: causal=True needs scores (..., Tq, Tk) with Tq <= Tk, got "
                         f"shape {x.shape}: the first queries would see no key at all")
    fused = is_fused()           # decided once, here: backward follows the same path
    rows = np.moveaxis(data, axis, -1)                     # the softmax axis last (a view)
    out_rows = _softmax_rows(rows, scale, causal, fused)
    out = np.moveaxis(out_rows, -1, axis).reshape(x.shape)
    def backward(g):
        g_rows = np.moveaxis(g.reshape(data.shape), axis, -1)
        dx = _softmax_rows_backward(out_rows, g_rows, scale, fused)
        x.grad += np.moveaxis(dx, -1, axis).reshape(x.shape)
    return _node(out, "softmax", (x,), backward)


# out = x - max - ln Σ e^(x - max);  dx = g - softmax(x) * Σ g
def log_softmax(x, axis=-1) -> Tensor:
    """log softmax along `axis`, in NumPy (no kernel, so the fused switch does not touch it)."""
    x = as_tensor(x)
    data, axis = _softmax_axis("log_softmax", x, axis)
    shifted = data - data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    def backward(g):
        g = g.reshape(out.shape)
        x.grad += (g - np.exp(out) * g.sum(axis=axis, keepdims=True)).reshape(x.shape)
    return _node(out.reshape(x.shape), "log_softmax", (x,), backward)


# Cross-entropy of logits z (..., V) against a target distribution q over the V classes, per row:
#   loss_i = -Σ_v q_iv · log softmax(z_i)_v;   dz_i = g_i · (softmax(z_i) · Σ_v q_iv - q_i)
# For class ids q_i = onehot(t_i), blended with the uniform 1/V by label smoothing ε:
#   q_i = (1 - ε)·onehot(t_i) + ε/V  (Σ q = 1, so dz_i = g_i · (softmax(z_i) - q_i));
#   ignored rows have loss 0 and gradient 0. g_i = g / n_kept for "mean", g for "sum".
def cross_entropy(logits, targets, ignore_index: int = -1, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy from logits, with the classes along the LAST axis (PyTorch: axis 1).

    targets: integer class ids of shape logits.shape[:-1]; ids equal to `ignore_index` are
      skipped (the default here is -1, tinygpt's padding id; PyTorch's is -100). Or float class
      probabilities of the logits' own shape (PyTorch's probability targets; no ignore_index).
    reduction: "mean" (over the rows kept; 0 if every row is ignored, where PyTorch gives NaN),
      "sum", or "none" (one loss per row, of shape logits.shape[:-1]).
    label_smoothing ε in [0, 1]: the target becomes (1 - ε)·target + ε/V, as in PyTorch.
    The fused kernel runs for class ids without smoothing; the NumPy lines below otherwise.
    """
    logits = as_tensor(logits)
    _loss_options("cross_entropy", logits, reduction, label_smoothing)
    if isinstance(targets, Tensor) and targets.requires_grad:
        raise TypeError("cross_entropy: the targets require gradients, but they are taken as "
                        "constants; pass targets.detach()")
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if targets.dtype.kind == "f":
        if targets.shape != logits.shape:
            raise TypeError(f"cross_entropy: {targets.dtype} targets are class probabilities and "
                            f"need the logits' shape {logits.shape}, got {targets.shape}; class "
                            f"ids must be integers")
        return _cross_entropy_probabilities(logits, targets, reduction, label_smoothing)
    v = logits.shape[-1]
    t, keep, n_kept = _class_ids("cross_entropy", logits, targets, ignore_index)
    z = logits.data.reshape(-1, v)                                 # (N, V)
    eps = label_smoothing
    fused = is_fused() and eps == 0   # decided once, here: backward follows the same path
    if fused:   # one Numba pass per row: max, log-sum-exp, pick the target
        losses, lse = fk.cross_entropy_forward(z, t, ignore_index)
    else:
        rows = np.nonzero(keep)[0]
        shifted = z - z.max(axis=1, keepdims=True)                 # stable: largest is 0
        log_sum = np.log(np.exp(shifted).sum(axis=1))              # (N,)
        losses = np.zeros(z.shape[0], dtype=z.dtype)
        losses[rows] = log_sum[rows] - shifted[rows, t[rows]]      # -log p(target)
        if eps:   # -Σ_v (ε/V) log p_v = ε · (log_sum - mean_v shifted)
            uniform = log_sum[rows] - shifted[rows].mean(axis=1)
            losses[rows] = (1 - eps) * losses[rows] + eps * uniform
    out = _reduce_losses(losses, reduction, n_kept, targets.shape, logits.dtype)
    def backward(g):
        g_rows = _row_gradients(g, reduction, n_kept, z.shape[0], z.dtype)     # (N,)
        if fused:
            logits.grad += fk.cross_entropy_backward(z, t, lse, g_rows, ignore_index).reshape(
                logits.shape)
            return
        probs = np.exp(shifted - log_sum[:, None])                 # softmax, (N, V)
        probs[rows, t[rows]] -= 1.0 - eps
        if eps:
            probs[rows] -= eps / v
        probs[~keep] = 0.0
        probs *= g_rows[:, None]
        logits.grad += probs.reshape(logits.shape)
    return _node(out, "cross_entropy", (logits,), backward)


# The same loss for class probabilities q (..., V):  loss_i = -Σ_v q_iv log p_iv,
#   dz_i = g_i · (p_i Σ_v q_iv - q_i)   (p = softmax(z); q smoothed first; "mean": over all rows)
def _cross_entropy_probabilities(logits, q, reduction, eps) -> Tensor:
    v = logits.shape[-1]
    z = logits.data.reshape(-1, v)                                 # (N, V)
    q = q.reshape(-1, v).astype(z.dtype)                           # (N, V)
    if eps:
        q = (1 - eps) * q + eps / v
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))   # log softmax, (N, V)
    losses = -(q * log_p).sum(axis=1)                              # (N,)
    n = builtins.max(z.shape[0], 1)
    out = _reduce_losses(losses, reduction, n, logits.shape[:-1], logits.dtype)
    def backward(g):
        g_rows = _row_gradients(g, reduction, n, z.shape[0], z.dtype)         # (N,)
        dz = np.exp(log_p) * q.sum(axis=1, keepdims=True) - q
        logits.grad += (g_rows[:, None] * dz).reshape(logits.shape)
    return _node(out, "cross_entropy", (logits,), backward)


# loss_i = -w[t_i] · log_probs[i, t_i]  (0 for ignored rows; w = 1 without weights);
#   "mean" divides by Σ w[t_i] over the kept rows (the count without weights);
#   dlog_probs[i, t_i] = -g_i · w[t_i], 0 elsewhere
def nll_loss(log_probs, targets, ignore_index: int = -1, reduction: str = "mean",
             weight=None) -> Tensor:
    """Negative log-likelihood of class ids under log-probabilities (..., V), classes along the
    last axis: cross_entropy(z, t) == nll_loss(log_softmax(z), t). Same targets, ignore_index
    (default -1; PyTorch's is -100) and reductions as cross_entropy's class-id form.
    weight: one weight per class (V,), a constant, as torch's: each row's loss is multiplied by
      its target's weight, and "mean" divides by the sum of those weights over the kept rows
      (0 if that sum is 0, where PyTorch gives NaN)."""
    x = as_tensor(log_probs)
    _loss_options("nll_loss", x, reduction, 0.0)
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    t, keep, n_kept = _class_ids("nll_loss", x, targets, ignore_index)
    v = x.shape[-1]
    rows = np.nonzero(keep)[0]
    w = np.ones(len(rows), dtype=x.dtype)                          # each kept row's weight
    if weight is not None:
        w = _class_weights("nll_loss", weight, v, x.dtype)[t[rows]]
        total = w.sum()
        n_kept = total if total != 0 else 1                        # (all weights 0: loss 0)
    losses = np.zeros(t.shape[0], dtype=x.dtype)
    losses[rows] = -w * x.data.reshape(-1, v)[rows, t[rows]]
    out = _reduce_losses(losses, reduction, n_kept, targets.shape, x.dtype)
    def backward(g):
        g_rows = _row_gradients(g, reduction, n_kept, t.shape[0], x.dtype)   # (N,)
        dx = np.zeros((t.shape[0], v), dtype=x.dtype)              # (N, V)
        dx[rows, t[rows]] = -g_rows[rows] * w
        x.grad += dx.reshape(x.shape)
    return _node(out, "nll_loss", (x,), backward)


def _class_weights(op, weight, v, dtype):
    """A loss's class weights: a constant array of shape (V,), in the input's dtype."""
    if isinstance(weight, Tensor) and weight.requires_grad:
        raise TypeError(f"{op}: weight requires gradients, but the class weights are taken as "
                        f"constants; pass weight.detach()")
    w = np.asarray(weight.data if isinstance(weight, Tensor) else weight)
    if w.shape != (v,) or w.dtype.kind not in "iuf":
        raise ValueError(f"{op}: weight must hold one number per class, shape ({v},), got "
                         f"shape {w.shape} and dtype {w.dtype}")
    return w.astype(dtype, copy=False)


def _loss_options(op, logits, reduction, label_smoothing):
    if logits.ndim == 0:
        raise ValueError(f"{op}: the input needs a class axis (the last), got a 0-d tensor")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")


def _class_ids(op, logits, targets, ignore_index):
    """Check integer targets against logits (..., V): flat ids (N,), the kept rows, their count."""
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be integer class ids, got dtype {targets.dtype}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"{op}: logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]}, got {targets.shape}")
    v = logits.shape[-1]
    t = targets.reshape(-1)                                        # (N,)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= v))
    if bad.any():
        raise IndexError(f"{op}: target {t[bad][0]} is outside 0..{v - 1} "
                         f"(logits have {v} classes); ignore_index is {ignore_index}")
    return t, keep, builtins.max(int(keep.sum()), 1)


def _reduce_losses(losses, reduction, count, shape, dtype):
    """Per-row losses (N,) -> their mean over `count` rows, their sum, or all of them (`shape`)."""
    if reduction == "none":
        return losses.reshape(shape).astype(dtype, copy=False)
    total = losses.sum()
    return np.asarray(total / count if reduction == "mean" else total, dtype=dtype)


def _row_gradients(g, reduction, count, n, dtype):
    """The gradient reaching each row's loss (N,): g / count ("mean"), g ("sum"), g's rows."""
    if reduction == "none":
        return np.asarray(g, dtype=dtype).reshape(n)
    return np.full(n, g / count if reduction == "mean" else g, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------
# Inverted dropout: keep each entry with probability 1-p and scale it by 1/(1-p), so the
# expected value is unchanged and eval mode is the identity.   out = x * m;  dx = g * m
def dropout(x, p: float = 0.5, training: bool = True, generator: np.random.Generator | None = None):
    x = as_tensor(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    m = _dropout_mask(x.shape, p, x.dtype, generator)
    def backward(g):
        x.grad += g * m
    return _node(x.data * m, "dropout", (x,), backward)


# m = 1/(1-p) where an entry is kept, 0 where it is dropped: entry i is dropped when its 32
# random bits, read as an integer, fall below t = ⌈p·2³²⌉ (probability t/2³², within 2⁻³² of p).
# Raw bits cost half of what uniform floats do, and the mask is one pass (a kernel when fused).
def _dropout_mask(shape, p, dtype, generator=None):
    """The mask for an array of `shape`, drawn from `generator` (tensor's default one if None).
    `attention` draws its mask here too, so the fused and op-by-op paths use the same stream."""
    rng = generator if generator is not None else default_generator()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout: generator must be a numpy.random.Generator "
                        f"(np.random.default_rng(seed)), got {type(rng).__name__}")
    n = math.prod(shape)
    bits = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]   # (n,) uint32
    t = math.ceil(p * 2**32)
    scale = np.asarray(1.0, dtype=dtype) / np.asarray(1.0 - p, dtype=dtype)  # 1/(1-p), in dtype
    if is_fused():
        return fk.dropout_mask(bits, t, scale).reshape(shape)
    return np.where(bits >= t, scale, np.zeros((), dtype)).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------
# Causal self-attention from the fused q/k/v projection, all heads in one op:
#   per head: a = softmax(q kᵀ / √hs, causal);  ã = a ⊙ m (dropout; m = 1 without);  y = ã v
#   dv = ãᵀ g;  dã = g vᵀ;  da = dã ⊙ m;  ds = a ⊙ (da - Σ a ⊙ da) / √hs;  dq = ds k;  dk = dsᵀ q
# One node instead of twelve: q, k, v are strided views of qkv (no split or transpose copies),
# the products run in BLAS and the mask, scale and softmax in one pass of the softmax kernel.
# The op-by-op version of the same computation is in tinygpt/model.py (CausalSelfAttention),
# used when the fused kernels are off; both draw the same dropout mask from the generator.
def attention(qkv, n_head: int, dropout: float = 0.0,
              generator: np.random.Generator | None = None) -> Tensor:
    """qkv (B, T, 3C) with q, k, v side by side -> y (B, T, C). dropout: the probability of
    zeroing each attention weight (pass 0 in eval mode), drawn from `generator`."""
    qkv = as_tensor(qkv)
    if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
        raise ValueError(f"attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}, "
                         f"got shape {qkv.shape}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"attention: dropout must be in [0, 1), got {dropout}")
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
    m = None
    if dropout > 0:
        m = _dropout_mask(att.shape, dropout, att.dtype, generator)   # (B, nh, T, T)
    att_d = att if m is None else att * m                          # (B, nh, T, T)
    y = np.matmul(att_d, v)                                        # (B, nh, T, hs)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C)                 # (B, T, C): heads side by side
    def backward(g):
        g = g.reshape(B, T, n_head, hs).transpose(0, 2, 1, 3)      # (B, nh, T, hs)
        dqkv = np.empty((B, T, 3, n_head, hs), dtype=qkv.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                 # views into dqkv
        np.matmul(att_d.swapaxes(-1, -2), g, out=dv)               # dv = ãᵀ g
        da = np.matmul(g, v.swapaxes(-1, -2))                      # dã = g vᵀ  (B, nh, T, T)
        if m is not None:
            da *= m                                                # da = dã ⊙ m
        ds = kernels.softmax_backward(att, da, scale=scale)
        np.matmul(ds, k, out=dq)                                   # dq = ds k
        np.matmul(ds.swapaxes(-1, -2), q, out=dk)                  # dk = dsᵀ q
        qkv.grad += dqkv.reshape(B, T, C3)
    return _node(out, "attention", (qkv,), backward)


# Attention with separate q, k, v (any Tq and Tk), an optional mask and causal flag:
#   z = q kᵀ · scale (+ m, a float mask),  hidden entries -> -inf;  a = softmax(z) over the
#   keys;  y = a v
#   dv = aᵀ g;  da = g vᵀ;  dz = a ⊙ (da - Σ a ⊙ da);  dm = dz;  ds = dz · scale;  dq = ds k;
#   dk = dsᵀ q
def scaled_dot_product_attention(q, k, v, mask=None, causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """q (..., Tq, hs), k (..., Tk, hs), v (..., Tk, hv) -> y (..., Tq, hv); batch axes broadcast.

    mask: broadcastable to (..., Tq, Tk), PyTorch's attn_mask. Boolean: True = the key takes
      part. Float: added to the scaled scores (-inf hides a key); a float mask that is a tensor
      requiring gradients gets them (dm = dz, the gradient at the scores).
    causal: query i sees key j only when j <= i + (Tk - Tq), the KV-cache convention of
      `softmax(causal=True)`: the last query sees every key. For Tq == Tk this is PyTorch's
      is_causal; for Tq != Tk PyTorch aligns the mask top-left instead (pass that as `mask`).
      mask and causal together: a key takes part only if both allow it.
    A query that no key may see gets y = 0 and no gradient (as PyTorch's math path since 2.5).
    scale: defaults to 1/√hs. The one-node `attention(qkv, n_head)` is GPT's causal fast path.
    """
    q = as_tensor(q)
    k, v = as_tensor(k, like=q), as_tensor(v, like=q)
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2 or q.shape[-1] != k.shape[-1] or \
            k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: q {q.shape}, k {k.shape}, v {v.shape} do "
                         f"not fit: they must be (..., Tq, hs), (..., Tk, hs) and (..., Tk, hv)")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"scaled_dot_product_attention: q, k, v have dtypes {q.dtype}, {k.dtype}, "
                        f"{v.dtype}; all must be float32 or all float64")
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    bias = None                 # a float mask, as a tensor (a constant unless it requires grad)
    if mask is not None:
        if isinstance(mask, Tensor) and mask.dtype in FLOAT_DTYPES:
            bias = mask if mask.dtype == q.dtype else cast(mask, q.dtype)
        elif np.asarray(mask).dtype.kind == "f":
            bias = Tensor(np.asarray(mask, dtype=q.dtype))
        mask = bias.data if bias is not None else np.asarray(
            mask.data if isinstance(mask, Tensor) else mask)
        if mask.dtype != bool and bias is None:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = take "
                            f"part) or float (added to the scores), got dtype {mask.dtype}")
        try:
            np.broadcast_shapes(mask.shape, q.shape[:-2] + (tq, tk))
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: mask of shape {mask.shape} does not "
                             f"broadcast to (..., Tq, Tk) = {q.shape[:-2] + (tq, tk)}") from None
    try:
        s = np.matmul(q.data, k.data.swapaxes(-1, -2))                 # (..., Tq, Tk)
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the batch axes of q {q.shape} and k "
                         f"{k.shape} cannot be broadcast together") from None
    fused = is_fused()      # the softmax kernels or their NumPy lines, decided once
    if bias is not None:    # z = s · scale + m, then the softmax (with the causal -inf)
        allowed = ~kernels.causal_mask(tq, tk) if causal else np.ones((tq, tk), dtype=bool)
        att = _masked_softmax_rows(s * s.dtype.type(scale) + bias.data, allowed, 1.0)
    elif mask is None and (not causal or tq <= tk):
        att = _softmax_rows(s, scale, causal, fused)                  # (..., Tq, Tk)
    else:
        allowed = np.ones((tq, tk), dtype=bool) if mask is None else mask
        if causal:
            allowed = allowed & ~kernels.causal_mask(tq, tk)
        att = _masked_softmax_rows(s, allowed, scale)                 # (..., Tq, Tk)
    try:
        y = np.matmul(att, v.data)                                     # (..., Tq, hv)
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: the batch axes of k {k.shape} and v "
                         f"{v.shape} cannot be broadcast together") from None
    def backward(g):
        if v.requires_grad:
            v.grad += unbroadcast(np.matmul(att.swapaxes(-1, -2), g), v.shape)      # aᵀ g
        bias_grad = bias is not None and bias.requires_grad
        if q.requires_grad or k.requires_grad or bias_grad:
            da = np.matmul(g, v.data.swapaxes(-1, -2))                 # (..., Tq, Tk)
            if bias_grad:
                dz = _softmax_rows_backward(att, da, 1.0, fused)       # at z: 0 where a = 0
                bias.grad += unbroadcast(dz, bias.shape)
                ds = dz * dz.dtype.type(scale)
            else:
                ds = _softmax_rows_backward(att, da, scale, fused)     # 0 where a = 0
            if q.requires_grad:
                q.grad += unbroadcast(np.matmul(ds, k.data), q.shape)               # ds k
            if k.requires_grad:
                k.grad += unbroadcast(np.matmul(ds.swapaxes(-1, -2), q.data), k.shape)  # dsᵀ q
    parents = (q, k, v) if bias is None else (q, k, v, bias)
    return _node(y, "scaled_dot_product_attention", parents, backward)


# Softmax over the last axis of scores s (..., Tq, Tk) with any boolean mask (True = the key takes
# part), in NumPy:  z = scale·s where allowed, -inf elsewhere;  y = e^(z - max z) / Σ e^(z - max z)
# A row with no key allowed gets y = 0 (not NaN); its gradient is then 0 as well.
def _masked_softmax_rows(s: np.ndarray, allowed: np.ndarray, scale: float) -> np.ndarray:
    z = np.where(allowed, s * s.dtype.type(scale), -np.inf)       # (..., Tq, Tk)
    top = z.max(axis=-1, keepdims=True)
    top[top == -np.inf] = 0                      # a row with no key: e = 0 below, not NaN
    e = np.exp(z - top)
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)                      # rows with no key: 0
