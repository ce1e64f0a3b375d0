"""Fused Numba kernels for the hot loops of a transformer: GELU, layer norm, cross-entropy,
embedding scatter-add, the dropout mask and the AdamW update. (Attention is fused at the op level in
tensor/functional.py: BLAS's batched products around the causal softmax kernel.)

"Fused" means one pass over the data does what several NumPy calls would do with a temporary
array each: on a CPU the time of these ops goes into reading and writing memory, not arithmetic.
Arrays in, arrays out; the ops in tensor/functional.py own the gradients.

Each formula is written twice, once here as a kernel and once in plain NumPy: the NumPy one is
the op's own path when the kernels are off (`with tensor.fused(False):`), in tensor/functional.py
(gelu, layer_norm, cross_entropy, embedding, dropout) and tensor/optim.py (AdamW.step). That path is the
kernel's reference: tests/test_fused_kernels.py compares the two, float32 and float64.

Compiled with error_model="numpy" (a division by zero gives inf/nan as in NumPy instead of
raising, which would stop LLVM from vectorizing the loop) and fastmath only where reassociating
a sum is harmless. cache=True: a second process loads the machine code from __pycache__.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = dict(cache=True, error_model="numpy")
# Sums over a row may be reordered ("reassoc"), which lets LLVM vectorize them, and a multiply
# followed by an add may become one fused multiply-add ("contract"). Nothing else is relaxed:
# NaN and inf still behave as written.
_SUMS = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})


def _c(a, dtype=None):
    """a as a C-contiguous array (copied only if it is not one already)."""
    return np.require(a, dtype=dtype, requirements="C")


_FAST = dict(cache=True, error_model="numpy", fastmath=True)

# ---------------------------------------------------------------------------------------------
# GELU, tanh form:  out = ½x(1 + tanh(u)),  u = √(2/π)(x + 0.044715x³)
# tanh is a rational function here: tanh(u) ≈ u·P(u²)/Q(u²) on |u| ≤ 9 (beyond it tanh(u) = ±1
# to float32 precision). P and Q were fitted for this project by linearized least squares on the
# relative error (Sanathanan–Koerner iterations); max relative error 6.3e-8, under float32's
# resolution. Unlike np.tanh (a scalar libm call per element) it vectorizes: ~40x faster here.
# ---------------------------------------------------------------------------------------------
_P = (0.9999999921732671, 0.1339626393042353, 0.003513605264094081,
      2.0902255151722827e-05, 1.375454769525497e-08)
_Q = (0.4672958632297861, 0.02594573636090722, 0.00033149577894192725, 7.941573570285909e-07)
_GELU_C = math.sqrt(2.0 / math.pi)


@njit(**_FAST)
def _gelu_constants(x):
    """The constants in x's dtype. (In Numba a Python float or int constant turns float32
    arithmetic into float64, and the loop runs 4x slower.)"""
    f = x.dtype.type
    return (f(_GELU_C), f(0.044715), f(9.0), f(1.0),
            (f(_P[0]), f(_P[1]), f(_P[2]), f(_P[3]), f(_P[4])),
            (f(_Q[0]), f(_Q[1]), f(_Q[2]), f(_Q[3])))


@njit(**_FAST)
def _tanh(u, lim, one, P, Q):
    w = lim if u > lim else (-lim if u < -lim else u)       # keep the polynomials finite
    z = w * w
    num = w * (P[0] + z * (P[1] + z * (P[2] + z * (P[3] + z * P[4]))))
    den = one + z * (Q[0] + z * (Q[1] + z * (Q[2] + z * Q[3])))
    return one if u >= lim else (-one if u <= -lim else num / den)


@njit(**_FAST)
def _gelu_forward_kernel(x, out, exact):
    c, a, lim, one, P, Q = _gelu_constants(x)
    half = x.dtype.type(0.5)
    for i in range(x.size):
        v = x[i]
        u = c * v * (one + a * v * v)
        t = math.tanh(u) if exact else _tanh(u, lim, one, P, Q)
        out[i] = half * v * (one + t)


@njit(**_FAST)
def _gelu_backward_kernel(x, g, dx, exact):
    c, a, lim, one, P, Q = _gelu_constants(x)
    half, three = x.dtype.type(0.5), x.dtype.type(3.0)
    for i in range(x.size):
        v = x[i]
        u = c * v * (one + a * v * v)
        t = math.tanh(u) if exact else _tanh(u, lim, one, P, Q)
        dudx = c * (one + three * a * v * v)
        dx[i] = g[i] * (half * (one + t) + half * v * (one - t * t) * dudx)


# float32 uses the rational tanh (vectorized); float64, the precision of gradient checks, uses
# the exact math.tanh. `exact` is the same for a whole call, so the branch costs nothing.
def gelu_forward(x):
    """out = ½x(1 + tanh(√(2/π)(x + 0.044715x³)))"""
    x = _c(x)
    out = np.empty_like(x)
    _gelu_forward_kernel(x.reshape(-1), out.reshape(-1), x.dtype == np.float64)
    return out


def gelu_backward(x, g):
    """dx = g · d gelu/dx, recomputed from x (nothing else saved)."""
    x, g = _c(x), _c(g, x.dtype)
    dx = np.empty_like(x)
    _gelu_backward_kernel(x.reshape(-1), g.reshape(-1), dx.reshape(-1), x.dtype == np.float64)
    return dx


# ---------------------------------------------------------------------------------------------
# erf, elementwise, for the exact GELU (tensor.functional.gelu(x, approximate="none")): NumPy has
# no erf and scipy is not a dependency, so Numba compiles math.erf (libm's, accurate to the last
# bit or two) into a loop over the array. Reference: math.erf itself, one number at a time.
# ---------------------------------------------------------------------------------------------
@njit(**_JIT)
def _erf_kernel(x, out):
    for i in range(x.size):
        out[i] = math.erf(x[i])


def erf(x):
    """erf of every element, in x's dtype."""
    x = _c(x)
    out = np.empty_like(x)
    _erf_kernel(x.reshape(-1), out.reshape(-1))
    return out


# ---------------------------------------------------------------------------------------------
# Layer norm over the last axis, rows of x as (N, C):
#   x̂ = (x - μ)·r,  r = 1/√(σ² + eps),  out = x̂·w + b
#   backward, d = g·w:  dx = r·(d - mean(d) - x̂·mean(d·x̂)),  dw = Σ_rows g·x̂,  db = Σ_rows g
# ---------------------------------------------------------------------------------------------
@njit(**_SUMS)
def _layernorm_forward_kernel(x, w, b, eps, out, mean, rstd):
    n, c = x.shape
    for i in range(n):
        s = 0.0
        for j in range(c):
            s += x[i, j]
        mu = s / c
        s2 = 0.0
        for j in range(c):
            d = x[i, j] - mu
            s2 += d * d
        r = 1.0 / math.sqrt(s2 / c + eps)
        for j in range(c):
            out[i, j] = (x[i, j] - mu) * r * w[j] + b[j]
        mean[i] = mu
        rstd[i] = r


@njit(**_SUMS)
def _layernorm_backward_kernel(g, x, w, mean, rstd, dx, dw, db):
    n, c = x.shape
    for i in range(n):
        mu, r = mean[i], rstd[i]
        sum_d = 0.0
        sum_dxhat = 0.0
        for j in range(c):
            xhat = (x[i, j] - mu) * r
            d = g[i, j] * w[j]
            sum_d += d
            sum_dxhat += d * xhat
            dw[j] += g[i, j] * xhat
            db[j] += g[i, j]
        m1, m2 = sum_d / c, sum_dxhat / c
        for j in range(c):
            xhat = (x[i, j] - mu) * r
            dx[i, j] = r * (g[i, j] * w[j] - m1 - xhat * m2)


def layernorm_forward(x, w, b, eps=1e-5):
    """x (..., C), w, b (C,) -> out (..., C), mean (N,), rstd (N,) with N = rows of x."""
    c = x.shape[-1]
    x2 = _c(x).reshape(-1, c)                    # (N, C)
    out = np.empty_like(x2)
    mean = np.empty(x2.shape[0], dtype=x.dtype)
    rstd = np.empty(x2.shape[0], dtype=x.dtype)
    _layernorm_forward_kernel(x2, _c(w, x.dtype),
                              _c(b, x.dtype), eps, out, mean, rstd)
    return out.reshape(x.shape), mean, rstd


def layernorm_backward(g, x, w, mean, rstd):
    """-> dx (..., C), dw (C,), db (C,)"""
    c = x.shape[-1]
    x2 = _c(x).reshape(-1, c)                    # (N, C)
    g2 = _c(g, x.dtype).reshape(-1, c)
    dx = np.empty_like(x2)
    dw = np.zeros(c, dtype=np.float64)                             # sums over many rows:
    db = np.zeros(c, dtype=np.float64)                             # accumulate in float64
    _layernorm_backward_kernel(g2, x2, _c(w, x.dtype), mean, rstd,
                               dx, dw, db)
    return dx.reshape(x.shape), dw.astype(x.dtype), db.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Cross-entropy over rows of logits z (N, V) with integer targets t (N,):
#   loss_i = log Σ_v e^(z_iv) - z_i,t_i         (computed with the row max subtracted)
#   dz_i = (softmax(z_i) - onehot(t_i)) · g_i   (0 for ignored rows)
# ---------------------------------------------------------------------------------------------
@njit(**_JIT)
def _cross_entropy_forward_kernel(z, t, ignore_index, losses, lse):
    n, v = z.shape
    for i in range(n):
        m = z[i, 0]
        for j in range(1, v):
            if z[i, j] > m:
                m = z[i, j]
        s = 0.0
        for j in range(v):
            s += math.exp(z[i, j] - m)
        lse[i] = m + math.log(s)
        losses[i] = 0.0 if t[i] == ignore_index else lse[i] - z[i, t[i]]


@njit(**_JIT)
def _cross_entropy_backward_kernel(z, t, ignore_index, lse, g, dz):
    n, v = z.shape
    for i in range(n):
        if t[i] == ignore_index:
            for j in range(v):
                dz[i, j] = 0.0
            continue
        for j in range(v):
            dz[i, j] = math.exp(z[i, j] - lse[i]) * g[i]
        dz[i, t[i]] -= g[i]


def cross_entropy_forward(z, t, ignore_index=-1):
    """z (N, V), t (N,) -> per-row losses (N,) (0 for ignored rows) and log-sum-exp (N,)."""
    z = _c(z)
    losses = np.empty(z.shape[0], dtype=z.dtype)
    lse = np.empty(z.shape[0], dtype=z.dtype)
    _cross_entropy_forward_kernel(z, _c(t, np.int64), ignore_index,
                                  losses, lse)
    return losses, lse


def cross_entropy_backward(z, t, lse, g_rows, ignore_index=-1):
    """dz (N, V) for per-row upstream gradients g_rows (N,)."""
    z = _c(z)
    dz = np.empty_like(z)
    _cross_entropy_backward_kernel(z, _c(t, np.int64), ignore_index, lse,
                                   _c(g_rows, z.dtype), dz)
    return dz


# ---------------------------------------------------------------------------------------------
# Embedding backward: dw[idx[n]] += g[n] for every position n (repeated ids add up)
# ---------------------------------------------------------------------------------------------
@njit(**_FAST)
def _embedding_backward_kernel(idx, g, dw):
    n, c = g.shape
    for i in range(n):
        row = idx[i]
        for j in range(c):
            dw[row, j] += g[i, j]


def embedding_backward(idx, g, num_embeddings):
    """idx (...), g (..., C) -> dw (num_embeddings, C)"""
    c = g.shape[-1]
    dw = np.zeros((num_embeddings, c), dtype=g.dtype)
    _embedding_backward_kernel(_c(idx, np.int64).reshape(-1),
                               _c(g).reshape(-1, c), dw)
    return dw


# ---------------------------------------------------------------------------------------------
# Dropout mask from 32 random bits per entry (bits: flat uint32):
#   m = scale where bits ≥ t (kept), 0 where bits < t (dropped);   t = ⌈p·2³²⌉, scale = 1/(1-p)
# so an entry is dropped with probability t/2³², within 2⁻³² of p.
# ---------------------------------------------------------------------------------------------
@njit(**_JIT)
def _dropout_mask_kernel(bits, t, scale, out):
    for i in range(bits.size):
        out[i] = scale if bits[i] >= t else 0


def dropout_mask(bits, t, scale):
    """(n,) uint32 bits, threshold t, scale (a NumPy float of the mask's dtype) -> (n,) mask."""
    out = np.empty(bits.size, dtype=scale.dtype)
    _dropout_mask_kernel(bits, np.uint64(t), scale, out)
    return out


# ---------------------------------------------------------------------------------------------
# AdamW, one pass over a parameter, its gradient and both moments (all flat, same length):
#   m = β₁m + (1-β₁)g;  v = β₂v + (1-β₂)g²;  p -= lr·(wd·p + (m/c₁) / (√(v/c₂) + eps))
# with c₁ = 1-β₁ᵗ, c₂ = 1-β₂ᵗ. (Decay first, as PyTorch: p·(1 - lr·wd), then the Adam step.)
# ---------------------------------------------------------------------------------------------
@njit(**_FAST)
def _adamw_kernel(p, g, m, v, lr, beta1, beta2, eps, wd, c1, c2):
    for i in range(p.size):
        gi = g[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * gi
        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi
        p[i] = p[i] * (1.0 - lr * wd) - lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """Update p, m, v in place (flat views of contiguous arrays)."""
    _adamw_kernel(p.reshape(-1), _c(g, p.dtype).reshape(-1),
                  m.reshape(-1), v.reshape(-1), lr, beta1, beta2, eps, weight_decay,
                  1.0 - beta1 ** step, 1.0 - beta2 ** step)
