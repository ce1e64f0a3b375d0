"""Row-wise softmax over the last axis, with the attention extras (scale, causal mask).

    y  = softmax_forward(x, scale, causal)    y = softmax(scale * x) over the last axis
    dx = softmax_backward(y, g, scale)        dx = scale * y * (g - Σ_j g·y)

x is (..., Tq, Tk): Tq queries (rows) against Tk keys (columns). With causal=True, query i may
see key j only when j <= i + (Tk - Tq): for Tq == Tk that is the usual lower triangle, and the
last query always sees every key (a single new token against a KV cache: Tq = 1). Masked
entries get y = 0 exactly, so their gradient is 0 too.

The NumPy references (`*_ref`) are the oracles for the tests.
"""
import numpy as np
from numba import from_dtype, njit, prange, types

from .intrinsics import exp, maxnum, zero_like
from .matmul import compile_for
from .threads import use_kernel_threads


def _check(x, op, causal=False):
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: input of shape {x.shape} has dtype {x.dtype}; it must be float32 "
                        f"or float64 (cast with .astype)")
    if x.ndim < 1 or (causal and x.ndim < 2):
        raise ValueError(f"{op}: input of shape {x.shape} needs "
                         f"{'(..., Tq, Tk) with causal=True' if causal else 'at least one axis'}")
    if causal and x.shape[-2] > x.shape[-1]:
        raise ValueError(f"{op}: causal=True needs Tq <= Tk, got shape {x.shape} "
                         f"(Tq={x.shape[-2]} queries, Tk={x.shape[-1]} keys): the first queries "
                         f"would see no key at all")
    return x


def causal_mask(tq, tk):
    """Boolean (Tq, Tk): True where key j is hidden from query i, i.e. j > i + (Tk - Tq)."""
    return np.arange(tk)[None, :] > np.arange(tq)[:, None] + (tk - tq)


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------
# y = e^(z - max z) / Σ e^(z - max z),  z = scale * x  (masked entries: z = -inf, so y = 0)
def softmax_forward_ref(x, scale=1.0, causal=False):
    x = _check(x, "softmax_forward_ref", causal)
    z = x * x.dtype.type(scale)
    if causal:
        z = np.where(causal_mask(*x.shape[-2:]), -np.inf, z)
    e = np.exp(z - z.max(axis=-1, keepdims=True))       # the max entry becomes e^0 = 1
    return e / e.sum(axis=-1, keepdims=True)


# dx = scale * y * (g - Σ_j g·y)
def softmax_backward_ref(y, g, scale=1.0):
    y, g = _check(y, "softmax_backward_ref"), np.asarray(g)
    return y.dtype.type(scale) * y * (g - (g * y).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# Numba kernels: one row per prange iteration, C-contiguous (R, Tq, Tk) arrays in and out
# ---------------------------------------------------------------------------------------------
# Each row is one query's scores: y[j] = e^(z[j] - max z) / Σ e^(z - max z), z = scale * x, over
# the keys j < n it may see; y[j] = 0 for the rest. Three passes over the row: its max, the
# exponentials and their sum, the division. Each is a loop that LLVM vectorizes: the max with
# maxnum, e^z with intrinsics.exp (for float32 a polynomial; float64 keeps math.exp, a call per
# number), the sum because fastmath "reassoc" lets it be split across vector lanes ("contract"
# fuses exp's multiply-adds; no other fast-math: NaN and inf keep their meaning). A causal mask
# makes rows short and ragged (query i sees i + 1 keys), and a loop of a few dozen numbers
# never reaches the vectorized body, which takes 64 float32 at a time on AVX-512. So for float32
# every pass runs over the whole row (`whole_rows`), a masked entry standing in as the row's
# first score (max) or as 0 (exp): the same length for every row. float64 walks only the
# visible keys. The sum is kept in x's dtype.
#
# A NaN anywhere in the visible row: maxnum passes over it, but e^(NaN - max) is NaN, so the sum
# and the row's visible entries are NaN, as in the NumPy reference. An inf: max = inf, inf - inf
# = NaN: the same. Masked entries stay exactly 0 (the reference's are NaN in such a row).
@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _softmax_forward_kernel(x, scale, causal, whole_rows):
    R, Tq, Tk = x.shape
    y = np.empty((R, Tq, Tk), x.dtype)
    for t in prange(R * Tq):
        r, i = t // Tq, t % Tq
        n = min(Tk, i + 1 + Tk - Tq) if causal else Tk     # query i sees keys j < n
        if n == 0:                                   # Tk == 0: an empty row
            continue
        end = Tk if whole_rows else n                # how far the passes walk
        xr, yr = x[r, i], y[r, i]                    # (Tk,) each
        first = scale * xr[0]
        zmax = first
        for j in range(end):
            zmax = maxnum(zmax, scale * xr[j] if j < n else first)
        zero = zero_like(zmax)
        total = zero
        for j in range(end):
            e = exp(scale * xr[j] - zmax)            # <= 1: no overflow
            e = e if j < n else zero                 # (a select, not a branch)
            yr[j] = e
            total += e
        inv = 1 / total
        for j in range(end):
            yr[j] = yr[j] * inv if j < n else zero   # (masked: 0 even in a NaN row)
        for j in range(end, Tk):                     # the masked future: exactly 0
            yr[j] = zero
    return y


# The sum Σ g·y may be reordered ("reassoc") so that it vectorizes; there is no exp here.
@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def _softmax_backward_kernel(y, g, scale):
    R, Tq, Tk = y.shape
    dx = np.empty((R, Tq, Tk), y.dtype)
    for t in prange(R * Tq):
        r, i = t // Tq, t % Tq
        dot = 0.0
        for j in range(Tk):
            dot += g[r, i, j] * y[r, i, j]
        for j in range(Tk):
            dx[r, i, j] = scale * y[r, i, j] * (g[r, i, j] - dot)
    return dx


def _rows(x):
    """x as a C-contiguous (R, Tq, Tk) array: a view for the usual contiguous input, else a copy;
    a 1-D x is one row (1, 1, Tk)."""
    x = np.ascontiguousarray(x)
    if x.ndim == 1:
        return x.reshape(1, 1, x.shape[0])
    return x.reshape((int(np.prod(x.shape[:-2])),) + x.shape[-2:])   # (R, Tq, Tk)


def softmax_forward(x, scale=1.0, causal=False):
    """softmax(scale * x) over the last axis, causal mask optional; a new array of x's dtype."""
    x = _check(x, "softmax_forward", causal)
    kernel = compile_for(_softmax_forward_kernel, x.dtype, (3,), "C",
                         (from_dtype(x.dtype), types.boolean, types.boolean))
    with use_kernel_threads():
        y = kernel(_rows(x), x.dtype.type(scale), bool(causal), x.dtype == np.float32)
    return y.reshape(x.shape)


def softmax_backward(y, g, scale=1.0):
    """scale * y * (g - Σ g·y) over the last axis: softmax_forward's gradient, from its output."""
    y, g = _check(y, "softmax_backward"), np.asarray(g)
    if g.shape != y.shape:
        raise ValueError(f"softmax_backward: g of shape {g.shape} must have the shape of y, "
                         f"{y.shape}")
    if g.dtype != y.dtype:
        raise TypeError(f"softmax_backward: g has dtype {g.dtype} and y {y.dtype} (shapes "
                        f"{g.shape}); both must be float32 or both float64")
    kernel = compile_for(_softmax_backward_kernel, y.dtype, (3, 3), "C", (from_dtype(y.dtype),))
    with use_kernel_threads():
        dx = kernel(_rows(y), _rows(g), y.dtype.type(scale))
    return dx.reshape(y.shape)
