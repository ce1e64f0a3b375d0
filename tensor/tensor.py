"""The Tensor: a NumPy array that remembers how it was made, so gradients can flow back.

Every op (in `tensor/functional.py`) computes its output with NumPy, then attaches a small
`backward(g)` closure that knows how to turn the gradient `g` of the output into gradients of
its inputs (the chain rule, one op at a time). `Tensor.backward()` walks the graph from the
output to the leaves in reverse topological order and calls those closures.

Vocabulary used throughout: `x, w, b` are inputs, `out` is the result, `g` is the gradient
arriving at `out`, and `dx, dw, db` are the gradients leaving towards the inputs.
"""
from __future__ import annotations

import numbers

import numpy as np

from .mode import is_grad_enabled  # noqa: F401  (the switches are in tensor/mode.py; quant.py
                                   #  imports this one from here)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float32)


def _freed_backward(g):
    raise RuntimeError(
        "backward: this part of the graph was already used by an earlier .backward() call and "
        "its saved values were freed to save memory. Call .backward(retain_graph=True) the first "
        "time if you need to backpropagate through the same graph twice.")


class Tensor:
    """An n-dimensional array (float32 by default) with optional gradient tracking."""

    __slots__ = ("data", "_grad", "requires_grad", "_parents", "_backward", "_op", "__weakref__")
    __array_priority__ = 1000  # so `ndarray + Tensor` calls Tensor.__radd__, not NumPy's add

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _to_array(data, dtype)
        if requires_grad and self.data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"Tensor: only float32/float64 tensors can require gradients, "
                            f"got dtype {self.data.dtype}")
        self._grad = None             # see the `grad` property
        self.requires_grad = bool(requires_grad)
        self._parents = ()            # the tensors this one was computed from
        self._backward = None         # closure g -> accumulate into the parents' .grad
        self._op = ""                 # the op's name, for error messages and graph drawing

    # -- the gradient --------------------------------------------------------------------------
    @property
    def grad(self):
        """dLoss/dself: None until a backward reaches this tensor, then an array of its shape and
        dtype. Backward gives each tensor an array of its own, so writing into one changes no
        other tensor's gradient. An array you assign is kept as it is if it has this shape and
        dtype and is writable (as in PyTorch), else copied into one that does. Only while
        backward runs may it hold a placeholder: see "How gradients accumulate" below."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not self._grad:   # (`+=` into an array this tensor owns hands back the same one)
            self._grad = _gradient_for(self, value)

    # -- the basics ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self.data

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item: only a tensor with one element can be turned into a Python "
                             f"number, this one has shape {self.shape}")
        return self.data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing the same data but cut off from the graph."""
        return Tensor(self.data)

    def astype(self, dtype) -> "Tensor":
        return _F.cast(self, dtype)

    def float64(self) -> "Tensor":
        return self.astype(np.float64)

    def float32(self) -> "Tensor":
        return self.astype(np.float32)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op}" if self._op else ""
        body = np.array2string(self.data, precision=4, threshold=20, edgeitems=2)
        return f"Tensor({body}, dtype={self.dtype}{grad}{op})"

    def __bool__(self):
        raise TypeError("Tensor: truth value is ambiguous; compare .item() or use .numpy()")

    # -- backpropagation -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Fill `.grad` of every leaf tensor that requires gradients and that this tensor depends on.

        grad: the gradient of some final scalar with respect to this tensor. It may be omitted for
        a one-element tensor (a loss), where it is 1. The saved intermediates of the graph are
        released afterwards unless `retain_graph=True`.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require gradients (no input had "
                               "requires_grad=True, or it was computed under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: a tensor of shape {self.shape} is not a scalar, so "
                                   f"the starting gradient is ambiguous; pass grad= an array of "
                                   f"shape {self.shape} (for a loss, reduce it to one number first)")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape} but the tensor has shape "
                                 f"{self.shape}")

        order = self._topological_order()
        for t in order:                           # nothing has arrived yet (a leaf keeps what
            if t._grad is None or t._backward is not None:     # it accumulated before)
                t._grad = _PENDING                # see "How gradients accumulate" below
        try:
            self.grad += grad
            for t in reversed(order):             # outputs before inputs
                if t._backward is None:
                    continue                      # a leaf
                g = t._grad
                if g is not _PENDING:             # (pending: no gradient reached it, nothing to do)
                    t._backward(g.array if type(g) is _Borrowed else g)
                if not retain_graph:
                    t._backward = _freed_backward     # drop the closure and what it saved
                    t._parents = ()
                t._grad = None                    # intermediate gradients are not kept
        except BaseException:
            for t in order:                       # a failed walk leaves no placeholder behind
                if t._grad is _PENDING or type(t._grad) is _Borrowed:
                    t._grad = None
            raise
        for t in order:                           # leaves end with arrays they own
            if t._grad is _PENDING:
                t._grad = np.zeros_like(t.data)
            elif type(t._grad) is _Borrowed:
                t._grad = np.array(t._grad.array, dtype=t.dtype, copy=True)

    def _topological_order(self) -> list:
        """Nodes that require grad, each after all of its parents."""
        return topological_order(self, lambda p: p.requires_grad)

    # -- operators: thin wrappers over tensor.functional ---------------------------------------
    def __add__(self, other):      return _F.add(self, other)
    def __radd__(self, other):     return _F.add(other, self)
    def __sub__(self, other):      return _F.sub(self, other)
    def __rsub__(self, other):     return _F.sub(other, self)
    def __mul__(self, other):      return _F.mul(self, other)
    def __rmul__(self, other):     return _F.mul(other, self)
    def __truediv__(self, other):  return _F.div(self, other)
    def __rtruediv__(self, other): return _F.div(other, self)
    def __floordiv__(self, other): return _F.floor_divide(self, other)
    def __rfloordiv__(self, other): return _F.floor_divide(other, self)
    def __matmul__(self, other):   return _F.matmul(self, other)
    def __rmatmul__(self, other):  return _F.matmul(other, self)
    def __neg__(self):             return _F.neg(self)

    # Comparisons give boolean tensors with no gradient, for masks: x.masked_fill(x < 0, 0).
    # Because `==` returns a tensor, the hash is the object's identity (as for any object), so
    # tensors still work as dict keys and set members: two different tensors are never equal keys.
    def __lt__(self, other): return _F.lt(self, other) if _comparable(other) else NotImplemented
    def __le__(self, other): return _F.le(self, other) if _comparable(other) else NotImplemented
    def __gt__(self, other): return _F.gt(self, other) if _comparable(other) else NotImplemented
    def __ge__(self, other): return _F.ge(self, other) if _comparable(other) else NotImplemented
    def __eq__(self, other): return _F.eq(self, other) if _comparable(other) else NotImplemented
    def __ne__(self, other): return _F.ne(self, other) if _comparable(other) else NotImplemented
    __hash__ = object.__hash__
    def __and__(self, other):      return _F.logical_and(self, other)
    def __rand__(self, other):     return _F.logical_and(other, self)
    def __or__(self, other):       return _F.logical_or(self, other)
    def __ror__(self, other):      return _F.logical_or(other, self)
    def __invert__(self):          return _F.logical_not(self)
    def __abs__(self):             return _F.abs(self)

    def __pow__(self, exponent):      # exponent: a number, an array or a tensor
        return _F.pow(self, exponent)

    def __rpow__(self, base):         # number ** tensor, e.g. 2 ** t
        return _F.pow(base, self)

    def __getitem__(self, index):
        return _F.getitem(self, index)

    # -- methods, so that `x.exp().sum(axis=-1)` reads naturally --------------------------------
    # elementwise
    def exp(self):                 return _F.exp(self)
    def log(self):                 return _F.log(self)
    def sqrt(self):                return _F.sqrt(self)
    def rsqrt(self):               return _F.rsqrt(self)
    def tanh(self):                return _F.tanh(self)
    def sin(self):                 return _F.sin(self)
    def cos(self):                 return _F.cos(self)
    def div(self, other, rounding_mode=None): return _F.div(self, other, rounding_mode)
    def abs(self):                 return _F.abs(self)
    def clip(self, min=None, max=None):   return _F.clip(self, min, max)
    def clamp(self, min=None, max=None):  return _F.clip(self, min, max)
    def maximum(self, other):      return _F.maximum(self, other)
    def minimum(self, other):      return _F.minimum(self, other)
    def masked_fill(self, mask, value): return _F.masked_fill(self, mask, value)
    # reductions
    def sum(self, axis=None, keepdims=False):  return _F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _F.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False):  return _F.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False):  return _F.min(self, axis, keepdims)
    def argmax(self, axis=None, keepdims=False):    return _F.argmax(self, axis, keepdims)
    def argmin(self, axis=None, keepdims=False):    return _F.argmin(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, *, correction=0):
        return _F.var(self, axis, keepdims, correction=correction)
    def std(self, axis=None, keepdims=False, *, correction=0):
        return _F.std(self, axis, keepdims, correction=correction)
    def logsumexp(self, axis=None, keepdims=False): return _F.logsumexp(self, axis, keepdims)
    def prod(self, axis=None, keepdims=False): return _F.prod(self, axis, keepdims)
    def cumsum(self, axis):        return _F.cumsum(self, axis)
    # shape and indexing
    def reshape(self, *shape):     return _F.reshape(self, *shape)
    def transpose(self, *axes):    return _F.transpose(self, *axes)
    def flip(self, *axis):         return _F.flip(self, *axis)
    def squeeze(self, axis=None):  return _F.squeeze(self, axis)
    def unsqueeze(self, axis):     return _F.unsqueeze(self, axis)
    def flatten(self, start_dim=0, end_dim=-1): return _F.flatten(self, start_dim, end_dim)
    def permute(self, *axes):      return _F.permute(self, *axes)
    def expand(self, *shape):      return _F.expand(self, *shape)
    def broadcast_to(self, *shape): return _F.expand(self, *shape)
    def repeat(self, *sizes):      return _F.repeat(self, *sizes)
    def gather(self, axis, index): return _F.gather(self, axis, index)
    def tril(self, diagonal=0):    return _F.tril(self, diagonal)
    def triu(self, diagonal=0):    return _F.triu(self, diagonal)
    # activations, softmax
    def relu(self):                return _F.relu(self)
    def gelu(self, approximate="tanh"): return _F.gelu(self, approximate)
    def sigmoid(self):             return _F.sigmoid(self)
    def silu(self):                return _F.silu(self)
    def softmax(self, axis=-1):    return _F.softmax(self, axis)
    def log_softmax(self, axis=-1): return _F.log_softmax(self, axis)

    @property
    def T(self):
        return _F.transpose(self)


def _comparable(other) -> bool:
    """Can `other` stand on the other side of a comparison? (None or a string cannot: then
    Python falls back to identity, so `x == None` is False, as for any object.)"""
    return isinstance(other, (Tensor, np.ndarray, np.generic, numbers.Number, list, tuple))


def topological_order(root: Tensor, follow=lambda p: True) -> list:
    """Every tensor in root's graph whose parents `follow` accepts, each after all of its parents.
    Iterative, with an explicit stack: a graph may be far deeper than Python's recursion limit."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for p in reversed(node._parents):          # reversed: the first input comes out first
            if follow(p) and id(p) not in visited:
                stack.append((p, False))
    return order


# ---------------------------------------------------------------------------------------------
# Turning user input into arrays
# ---------------------------------------------------------------------------------------------
def _to_array(data, dtype=None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind not in "fiub":
            raise TypeError(f"Tensor: unsupported dtype {dtype}; use float32, float64, or an "
                            f"integer/bool dtype for indices and masks")
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        if data.dtype.kind == "f":
            # float16 and long double are not supported by the kernels; float32 is the default
            return data if data.dtype in FLOAT_DTYPES else data.astype(DEFAULT_DTYPE)
        if data.dtype.kind in "iub":
            return data                    # indices, targets and masks keep their dtype
        raise TypeError(f"Tensor: unsupported array dtype {data.dtype} (use float32 or float64)")
    if isinstance(data, (np.generic, numbers.Number)) and not isinstance(data, (bool, np.bool_)):
        if isinstance(data, complex) or np.iscomplexobj(data):
            raise TypeError("Tensor: complex numbers are not supported")
        return np.asarray(data, dtype=DEFAULT_DTYPE)
    if isinstance(data, (list, tuple)):
        arr = np.asarray(data)
        if arr.dtype.kind in "fiu":
            return arr.astype(DEFAULT_DTYPE)
        if arr.dtype.kind == "b":
            return arr
        raise TypeError(f"Tensor: cannot make a tensor from a list of {arr.dtype} values")
    raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}; "
                    f"pass a number, a (nested) list, or a NumPy array")


# ---------------------------------------------------------------------------------------------
# Creation helpers
# ---------------------------------------------------------------------------------------------
def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Make a tensor from a number, a nested list or a NumPy array (float32 unless told)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


_default_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator used by randn() and dropout() when no generator is passed."""
    global _default_rng
    _default_rng = np.random.default_rng(seed)


def default_generator() -> np.random.Generator:
    return _default_rng


def zeros(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(np.ones(_shape(shape), dtype=dtype), requires_grad=requires_grad)


def full(shape, fill_value, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    """A tensor of `shape` (an int or a tuple) with every entry `fill_value`."""
    return Tensor(np.full(_shape((shape,)), fill_value, dtype=dtype), requires_grad=requires_grad)


def eye(n: int, m: int | None = None, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    """The (n, m) identity matrix (m = n unless given): ones on the diagonal, zeros elsewhere."""
    return Tensor(np.eye(n, m, dtype=dtype), requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of x's shape and dtype (unless `dtype` is given) filled with `fill_value`."""
    x = x.data if isinstance(x, Tensor) else np.asarray(x)
    dtype = x.dtype if dtype is None else dtype
    return Tensor(np.full(x.shape, fill_value, dtype=dtype), requires_grad=requires_grad)


def zeros_like(x, dtype=None, requires_grad=False) -> Tensor:
    return full_like(x, 0, dtype=dtype, requires_grad=requires_grad)


def ones_like(x, dtype=None, requires_grad=False) -> Tensor:
    return full_like(x, 1, dtype=dtype, requires_grad=requires_grad)


def randn(*shape, dtype=DEFAULT_DTYPE, requires_grad=False, generator=None, seed=None) -> Tensor:
    """Standard normal samples. Pass `generator=np.random.default_rng(seed)` or `seed=` to repeat."""
    if generator is not None:
        rng = generator
    else:
        rng = np.random.default_rng(seed) if seed is not None else _default_rng
    return Tensor(rng.standard_normal(_shape(shape)).astype(dtype), requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=DEFAULT_DTYPE) -> Tensor:
    if stop is None:
        start, stop = 0, start
    return Tensor(np.arange(start, stop, step, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# How gradients accumulate during backward
# ---------------------------------------------------------------------------------------------
# Every op hands its contribution on with `x.grad += dx`. Until the first one arrives, backward
# leaves the placeholder _PENDING in x's gradient, and `_PENDING += dx` keeps dx itself: no
# zero-filled buffer, no copy. That dx may be shared (`add` hands the same g to both inputs,
# `reshape` a view of it), so it is kept as _Borrowed and never written in place: the next `+=`
# makes a new array (borrowed + dx), which x owns. When backward ends, every leaf owns its
# gradient, so outside backward `.grad` is None or a plain array. Ops need not know any of this.
class _Pending:
    __slots__ = ()

    def __iadd__(self, dx):
        return _Borrowed(dx)

    def __isub__(self, dx):
        return np.negative(dx)            # a new array: owned


class _Borrowed:
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __iadd__(self, dx):
        return self.array + dx            # a new array, owned from now on

    def __isub__(self, dx):
        return self.array - dx


_PENDING = _Pending()


def _gradient_for(t: Tensor, value):
    """What `t.grad = value` stores: None, a placeholder during backward, or an array t owns."""
    if value is None or value is _PENDING:
        return value
    shape, dtype = t.data.shape, t.data.dtype
    if type(value) is _Borrowed:
        g = value.array
        if g.shape != shape or g.dtype != dtype:
            # a first contribution may still have size-1 axes (sum's backward) or another float
            # dtype (cast's): view it at t's shape and dtype, still borrowed
            value = _Borrowed(np.broadcast_to(g.astype(dtype, copy=False), shape))
        return value
    g = np.asarray(value)
    if g.shape == shape and g.dtype == dtype and g.flags.writeable:
        return g                          # t's own now: backward adds into it in place
    owned = np.empty(shape, dtype)        # a broadcast view, another dtype, a read-only array:
    owned[...] = g                        # copied into an array of t's shape and dtype
    return owned


# The ops live in tensor/functional.py, which imports this file; bind it last.
from . import functional as _F  # noqa: E402
