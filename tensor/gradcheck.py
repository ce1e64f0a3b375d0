"""Check a function's backward against central finite differences, in float64.

For f: inputs -> output, backprop computes vector-Jacobian products uᵀJ for an upstream
gradient u.  Central differences approximate Jacobian-vector products:

    J v ≈ (f(x + eps·v) - f(x - eps·v)) / (2 eps)        (error O(eps²))

so for random u and v the two sides of  uᵀ(J v) = (uᵀJ) v  must agree.  Small inputs are
checked element by element (v = each unit vector: the full Jacobian, row by row through u);
large ones along a few random directions v, which catches any wrong entry with probability 1.
"""
from __future__ import annotations

from builtins import max as builtins_max

import numpy as np

from .mode import no_grad
from .tensor import Tensor

FULL_JACOBIAN_MAX = 64      # inputs with at most this many elements are checked element-wise


class GradcheckError(AssertionError):
    pass


def _evaluate(fn, inputs):
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    return out


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              n_directions: int = 3, seed: int = 0, raise_on_failure: bool = True) -> bool:
    """Compare backprop with central differences for every input that requires gradients.

    fn:      a function of the inputs returning one Tensor (any shape).
    inputs:  Tensors (float64 ones are perturbed in place and restored; float32 ones are
             checked in a float64 copy) or other arguments passed through unchanged.
    Returns True, or raises GradcheckError naming the input, the element and both values.
    """
    rng = np.random.default_rng(seed)
    # float64 tensors are used as they are (perturbed in place, then restored), so fn may also
    # reach them another way, e.g. as a model's parameters; float32 ones become float64 copies.
    inputs = [Tensor(x.data.astype(np.float64), requires_grad=x.requires_grad)
              if isinstance(x, Tensor) and x.dtype == np.float32 else x for x in inputs]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    # Backprop once with a random upstream gradient u:  grads[i] = uᵀ J_i
    out = _evaluate(fn, inputs)
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype}; it must keep float64 inputs in "
                        f"float64 (finite differences in float32 are too coarse to check)")
    u = rng.standard_normal(out.shape)
    for i in checked:
        inputs[i].grad = None
    out.backward(u)
    grads = {i: (inputs[i].grad if inputs[i].grad is not None
                 else np.zeros_like(inputs[i].data)) for i in checked}

    def directional(i, v):
        """uᵀ (J_i v) by central differences."""
        return _central_difference(fn, inputs, i, u, v, eps)

    for i in checked:
        if inputs[i].data.size <= FULL_JACOBIAN_MAX:
            failure = _wrong_element(directional, i, grads[i], atol, rtol)
        else:
            failure = _wrong_direction(directional, i, grads[i], atol, rtol, n_directions, rng)
        if failure:
            return _fail(raise_on_failure, failure)
    return True


def _central_difference(fn, inputs, i, u, v, eps) -> float:
    """uᵀ (J_i v) ≈ uᵀ (f(x + eps·v) - f(x - eps·v)) / (2 eps), x = inputs[i] (restored after)."""
    x = inputs[i].data
    base = x.copy()
    try:
        with no_grad():
            x[...] = base + eps * v
            plus = np.array(_evaluate(fn, inputs).data, copy=True)   # (may be a view of x)
            x[...] = base - eps * v
            minus = np.array(_evaluate(fn, inputs).data, copy=True)
    finally:
        x[...] = base
    return float(np.sum(u * (plus - minus)) / (2 * eps))


def _wrong_element(directional, i, grad, atol, rtol) -> str | None:
    """A small input, element by element (v = each unit vector): the first wrong one, or None."""
    shape = grad.shape
    for flat in range(grad.size):
        v = np.zeros(shape)
        v.flat[flat] = 1.0
        numeric = directional(i, v)
        analytic = float(grad.flat[flat])
        if not abs(numeric - analytic) <= atol + rtol * abs(numeric):
            where = tuple(int(j) for j in np.unravel_index(flat, shape))
            return (f"gradcheck: input {i} (shape {shape}), element {where}: backprop gives "
                    f"{analytic:.10g}, finite differences give {numeric:.10g}")
    return None


def _wrong_direction(directional, i, grad, atol, rtol, n_directions, rng) -> str | None:
    """A large input, along n_directions random directions v; a failing direction is narrowed
    down to one element by halving its support. The message for that element, or None."""
    shape = grad.shape

    def agrees(v):
        """Does <grad, v> match uᵀ(J v)?  A sum over many elements hides a single wrong one
        behind a relative tolerance, so along random directions rtol is 100 times tighter
        (float64 central differences are accurate to about 1e-9 relative)."""
        numeric, analytic = directional(i, v), float(np.sum(grad * v))
        return abs(numeric - analytic) <= atol + (rtol / 100) * builtins_max(abs(numeric), 1.0)

    for k in range(n_directions):
        v = rng.standard_normal(shape)
        if agrees(v):
            continue
        support = np.arange(grad.size)
        while support.size > 1:
            half = support[: support.size // 2]
            masked = np.zeros(grad.size)
            masked[half] = v.reshape(-1)[half]
            support = half if not agrees(masked.reshape(shape)) else support[support.size // 2:]
            if support.size == 1 or half.size == 0:
                break
        flat = int(support[0])
        unit = np.zeros(shape)
        unit.flat[flat] = 1.0
        where = tuple(int(j) for j in np.unravel_index(flat, shape))
        return (f"gradcheck: input {i} (shape {shape}), element {where} (found along random "
                f"direction {k}): backprop gives {float(grad.flat[flat]):.10g}, finite "
                f"differences give {directional(i, unit):.10g}")
    return None


def _fail(raise_on_failure, message):
    if raise_on_failure:
        raise GradcheckError(message)
    return False
