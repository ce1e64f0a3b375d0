"""Products with compact weights: int8 with one scale per output, or bfloat16. Arrays in, arrays
out; the modules that use them (tensor/quant.py) own everything else.

Why: generating one token multiplies one row of activations by every weight matrix, so the time
goes into reading the weights from memory, not into arithmetic (2 flops per weight read). Fewer
bytes per weight is the only way past that wall: int8 moves a quarter of float32's bytes, bfloat16
half. The weights are widened to float32 (or float64) in registers, just before use, and every
sum is accumulated in the activations' dtype.

Layout: a quantized matrix is stored out-major, (N, K): one row per output, the K inputs of that
output side by side. So one output is one dot product over a contiguous row, its int8 scale is
one number per row, and GPT-2's token table (vocab, C) is already in this layout for the logits.

    int8:      w[n, k] ≈ scale[n] * q[n, k],   scale[n] = max_k |w[n, k]| / 127,  q in [-127, 127]
               out[m, n] = scale[n] * Σ_k x[m, k] * q[n, k]
    bfloat16:  the top 16 bits of the float32 (sign, 8 exponent bits, 7 mantissa bits), rounded
               to nearest even; widening puts them back on top of 16 zero bits.
               out[m, n] = Σ_k x[m, k] * widen(u[n, k])

    quantize_int8(w) / dequantize_int8(q, scale)        w: (N, K) float -> q int8, scale float32
    to_bfloat16(w) / from_bfloat16(u)                   float32 <-> uint16 (N, K)
    matmul_int8(x, q, scale), matmul_int8_ref           x (M, K) @ dequant(q).T -> (M, N)
    matmul_bf16(x, u),        matmul_bf16_ref           x (M, K) @ widen(u).T   -> (M, N)

The Numba kernels are for a few rows (one token, or a few sequences decoded together); each
thread takes a block of outputs, and both storage types share them (_widen, compiled per type).
One row is bound by memory: each weight is read, widened in a register and used once, while the
weight row a few rows on is already asked for (a prefetch), so more of memory's bandwidth is in
use at once. Several rows are bound by multiply-adds (2M flops per weight), so the kernel keeps
eight rows' sums in registers and lets each widened weight feed all eight. Many rows (a prompt,
a perplexity window) are better served by BLAS: the weights are widened a block at a time into
float and multiplied there.
"""
from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba import types
from numba.core.extending import overload

from .intrinsics import bits_to_float32, prefetch
from .threads import check_load, get_num_threads

# Up to SMALL_M rows, the Numba kernels; more, widen blocks + BLAS. One GPT-2 124M layer's four
# products, 2 threads, ms (median of 15), Numba kernel against widen + BLAS:
#   M                                 4      8     16     24     32     48     64     96    128
#   2-core AMD EPYC (Zen 1, AVX2)
#     int8      Numba / BLAS          -   1.96/  4.4/     -   9.0/  14.0/  18.8/  27.6/  37.0/
#                                          6.27   8.6          11.2   24.4   24.3   34.4   33.1
#   2-core Intel Xeon (AVX-512), the kernels as they are now
#     int8      Numba / BLAS       0.62/  1.68/  3.76/  3.89/  5.03/ 11.04/ 10.24/    -      -
#                                  4.35   4.62   5.99   5.65   8.58   6.52   7.16
#     bfloat16  Numba / BLAS       0.71/  1.70/  3.32/  5.13/  7.31/ 10.50/  9.87/    -      -
#                                  8.27   7.70   8.77   8.07   9.93  10.64  11.43
# The kernels win up to 32 rows on both machines; past that the EPYC still favours them and the
# Xeon (whose BLAS has 512-bit vectors) does not, by about the same factor at 48 rows. 32 it is.
SMALL_M = 32
_BLOCK_N = 32         # outputs per parallel task in the kernels
_BLAS_BLOCK_N = 4096  # outputs widened at a time on the BLAS path (4096 x K floats)
_CHUNK = 1024         # rows quantized at a time
# Fast-math for the products, but only what a dot product needs: reassoc lets the compiler sum in
# several vector lanes (another order of the same additions), contract fuses x * w + acc into one
# FMA. NaN and inf keep their meaning (no nnan/ninf): a nan or inf activation gives what NumPy's
# product gives.
_FAST = {"reassoc", "contract"}
# One row is bound by memory, and a core's own hardware prefetcher keeps too few cache lines in
# flight to draw the bandwidth a matrix-vector product needs: it follows one stream and stops at
# each 4 KiB page. So the one-row kernels ask for the weight row _AHEAD rows on while they work
# on this one. 4 rows ahead draws about 1.5x the bandwidth of no prefetch, within a few percent
# of the best distance for both int8 and bfloat16 (benchmarks/README.md, "Quantized kernels").
_AHEAD = 4


@numba.njit(cache=True, nogil=True, inline="always")
def _prefetch_row(flat, n, K):
    """Ask for row n of a (N, K) matrix, given as flat = matrix.reshape(-1): one hint per 64-byte
    cache line. Past the last row, nothing."""
    for i in range(n * K, min((n + 1) * K, flat.size), 64 // flat.itemsize):
        prefetch(flat, i)


# ----------------------------------------------------------------------------------------------
# Compressing and widening (NumPy; done once, when a model is quantized)
# ----------------------------------------------------------------------------------------------

# q = round(w / scale),  scale = max|w| / 127 per row (per output)
def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w (N, K) float -> (q (N, K) int8, scale (N,) float32). Symmetric: 0 stays exactly 0, and
    the largest |w| of each row maps to ±127. A row of zeros gets scale 1 (any scale is exact)."""
    w = np.ascontiguousarray(w)        # row-major (N, K): a transposed view would give a
    if w.ndim != 2:                    # column-major q, and the kernels read rows
        raise ValueError(f"quantize_int8: expected a 2-D (outputs, inputs) matrix, got shape "
                         f"{w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"quantize_int8: the {w.shape} matrix holds nan or inf; int8 cannot "
                         f"store them (is the checkpoint damaged?)")
    q = np.empty(w.shape, dtype=np.int8)
    scale = np.empty(w.shape[0], dtype=np.float32)
    for n0 in range(0, w.shape[0], _CHUNK):       # a block of rows at a time: the float
        rows = w[n0:n0 + _CHUNK]                    # temporaries stay small for a big table
        amax = np.abs(rows).max(axis=1).astype(np.float32)                 # (n,)
        s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
        q[n0:n0 + _CHUNK] = np.rint(rows / s[:, None]).clip(-127, 127)     # (n, K)
        scale[n0:n0 + _CHUNK] = s
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(N, K) int8 and (N,) scales -> (N, K) floats."""
    return q.astype(dtype) * scale.astype(dtype)[:, None]


def to_bfloat16(w: np.ndarray) -> np.ndarray:
    """float -> bfloat16 bits (uint16), rounded to nearest, ties to even (as PyTorch rounds)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"to_bfloat16: the {w.shape} matrix holds nan or inf (is the checkpoint "
                         f"damaged?)")
    out = np.empty(w.shape, dtype=np.uint16)
    flat, dst = w.reshape(-1), out.reshape(-1)
    step = _CHUNK * 1024
    for i in range(0, flat.size, step):           # a block at a time: small temporaries
        bits = flat[i:i + step].view(np.uint32).astype(np.uint64)
        bits += 0x7FFF + ((bits >> 16) & 1)       # round the 16 dropped bits, ties to even
        dst[i:i + step] = bits >> 16
    return out


def from_bfloat16(u: np.ndarray, dtype=np.float32) -> np.ndarray:
    """bfloat16 bits (uint16) -> floats: the 16 bits on top of 16 zero bits."""
    out = (np.asarray(u, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return out.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# The references: widen the whole matrix, then one NumPy product
# ----------------------------------------------------------------------------------------------

def matmul_int8_ref(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8: out[m, n] = Σ_k x[m, k] * scale[n] * q[n, k]. x (M, K) -> (M, N) in x's dtype."""
    return x @ dequantize_int8(q, scale, x.dtype).T


def matmul_bf16_ref(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """bfloat16: out[m, n] = Σ_k x[m, k] * widen(u[n, k]). x (M, K) -> (M, N) in x's dtype."""
    return x @ from_bfloat16(u, x.dtype).T


# ----------------------------------------------------------------------------------------------
# The kernels, one for both storage types:  out[m, n] = Σ_k x[m, k] * _widen(w, n, k)
# (for int8 the row's scale multiplies each finished sum, outside the kernel)
# ----------------------------------------------------------------------------------------------

def _widen(w, n, k):
    """w[n, k] as a number to multiply with: an int8 as it is, bfloat16 bits as the float32 whose
    top half they are. Numba picks the body by w's dtype when it compiles a kernel (below), so
    each kernel is compiled once per storage type with nothing to decide inside its loops."""
    raise TypeError("_widen is only called from compiled kernels")


@overload(_widen, inline="always")
def _widen_by_dtype(w, n, k):
    if w.dtype == types.int8:
        return lambda w, n, k: w[n, k]                               # int8 -> x's dtype
    if w.dtype == types.uint16:
        return lambda w, n, k: bits_to_float32(np.uint32(w[n, k]) << 16)     # exact


@numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
def _matvec(x, w, out):
    """One row (M = 1): out[0, n] = Σ_k x[0, k] * widen(w[n, k]). Each weight is widened in a
    register as it is read and used once; meanwhile the row _AHEAD rows on is asked for."""
    K = x.shape[1]
    N = w.shape[0]
    flat = w.reshape(-1)
    for block in numba.prange((N + _BLOCK_N - 1) // _BLOCK_N):
        for n in range(block * _BLOCK_N, min(N, (block + 1) * _BLOCK_N)):
            _prefetch_row(flat, n + _AHEAD, K)
            acc = out[0, n]                                  # 0, in x's dtype
            for k in range(K):
                acc += x[0, k] * _widen(w, n, k)
            out[0, n] = acc


@numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
def _rows(x, w, out):
    """A few rows (2 <= M <= SMALL_M): out[m, n] = Σ_k x[m, k] * widen(w[n, k]).

    Eight rows of x at a time share each weight: one weight read and widened in a register feeds
    eight independent sums (eight accumulators, one per row). The weight row (K numbers) stays in
    L1 cache for the next eight rows. The first pass over a block reads the weights from memory,
    so it asks for them _AHEAD rows ahead, as _matvec does."""
    M, K = x.shape
    N = w.shape[0]
    flat = w.reshape(-1)
    for block in numba.prange((N + _BLOCK_N - 1) // _BLOCK_N):
        n0, n1 = block * _BLOCK_N, min(N, (block + 1) * _BLOCK_N)
        for n in range(n0, min(n0 + _AHEAD, n1)):   # the block's first weight rows...
            _prefetch_row(flat, n, K)
        m = 0
        while m < M:                     # 8 rows of x at a time, then the last 4, 2, 1
            rows = 8 if M - m >= 8 else 4 if M - m >= 4 else 2 if M - m >= 2 else 1
            for n in range(n0, n1):      # these rows of x stay in L1 for the whole block
                if m == 0:               # ...and the rest on the way while the first are used
                    _prefetch_row(flat, n + _AHEAD, K)
                if rows == 8:
                    _dot8(x, m, w, n, out)
                elif rows == 4:
                    _dot4(x, m, w, n, out)
                elif rows == 2:
                    _dot2(x, m, w, n, out)
                else:
                    _dot1(x, m, w, n, out)
            m += rows


@numba.njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _dot8(x, m, w, n, out):
    """out[m:m+8, n] += x[m:m+8] @ widen(w[n]). Vectorized over k, each step is one widening of
    a vector of weights and 8 fused multiply-adds that read x from memory: 8 accumulators + 1
    weight register; more rows (or outputs) would not fit AVX2's 16 vector registers."""
    a0, a1, a2, a3 = out[m, n], out[m + 1, n], out[m + 2, n], out[m + 3, n]
    a4, a5, a6, a7 = out[m + 4, n], out[m + 5, n], out[m + 6, n], out[m + 7, n]
    for k in range(x.shape[1]):
        wk = _widen(w, n, k)                                 # once, for 8 rows
        a0 += x[m, k] * wk
        a1 += x[m + 1, k] * wk
        a2 += x[m + 2, k] * wk
        a3 += x[m + 3, k] * wk
        a4 += x[m + 4, k] * wk
        a5 += x[m + 5, k] * wk
        a6 += x[m + 6, k] * wk
        a7 += x[m + 7, k] * wk
    out[m, n], out[m + 1, n], out[m + 2, n], out[m + 3, n] = a0, a1, a2, a3
    out[m + 4, n], out[m + 5, n], out[m + 6, n], out[m + 7, n] = a4, a5, a6, a7


@numba.njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _dot4(x, m, w, n, out):
    """out[m:m+4, n] += x[m:m+4] @ widen(w[n]) (the same, four rows)."""
    a0, a1, a2, a3 = out[m, n], out[m + 1, n], out[m + 2, n], out[m + 3, n]
    for k in range(x.shape[1]):
        wk = _widen(w, n, k)
        a0 += x[m, k] * wk
        a1 += x[m + 1, k] * wk
        a2 += x[m + 2, k] * wk
        a3 += x[m + 3, k] * wk
    out[m, n], out[m + 1, n], out[m + 2, n], out[m + 3, n] = a0, a1, a2, a3


@numba.njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _dot2(x, m, w, n, out):
    """out[m:m+2, n] += x[m:m+2] @ widen(w[n]) (the same, two rows)."""
    a0, a1 = out[m, n], out[m + 1, n]
    for k in range(x.shape[1]):
        wk = _widen(w, n, k)
        a0 += x[m, k] * wk
        a1 += x[m + 1, k] * wk
    out[m, n], out[m + 1, n] = a0, a1


@numba.njit(fastmath=_FAST, cache=True, nogil=True, inline="always")
def _dot1(x, m, w, n, out):
    """out[m, n] += x[m] @ widen(w[n]) (one row)."""
    acc = out[m, n]
    for k in range(x.shape[1]):
        acc += x[m, k] * _widen(w, n, k)
    out[m, n] = acc


def _kernel_product(x, w):
    """x (M <= SMALL_M, K) @ widen(w).T on the kernels above, on the policy's threads."""
    out = np.zeros((x.shape[0], w.shape[0]), dtype=x.dtype)
    with kernel_threads():
        (_matvec if x.shape[0] == 1 else _rows)(x, w, out)
    return out


def matmul_int8(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x (M, K) float32/float64 times the int8 matrix (N, K) transposed -> (M, N), x's dtype."""
    _check(x, q, "matmul_int8")
    x, q = np.ascontiguousarray(x), np.ascontiguousarray(q)     # the kernels read rows
    if x.shape[0] > SMALL_M:                 # widen q only; scale the (M, n) products instead
        out = _blas_blocks(x, q.shape[0], lambda n0, n1: q[n0:n1].astype(x.dtype))
    else:
        out = _kernel_product(x, q)
    out *= scale.astype(x.dtype, copy=False)                            # (M, N) * (N,)
    return out


def matmul_bf16(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x (M, K) float32/float64 times the bfloat16 matrix (N, K) transposed -> (M, N)."""
    _check(x, u, "matmul_bf16")
    x, u = np.ascontiguousarray(x), np.ascontiguousarray(u)     # the kernels read rows
    if x.shape[0] > SMALL_M:
        return _blas_blocks(x, u.shape[0], lambda n0, n1: from_bfloat16(u[n0:n1], x.dtype))
    return _kernel_product(x, u)


# ----------------------------------------------------------------------------------------------
# Shared
# ----------------------------------------------------------------------------------------------

def _blas_blocks(x, N, widen):
    """Many rows: widen a block of weight rows at a time and let BLAS multiply (out[:, n0:n1] =
    x @ widen(n0, n1).T), so at most _BLAS_BLOCK_N x K widened floats exist at once."""
    check_load()                               # "auto": BLAS's threads follow the load
    out = np.empty((x.shape[0], N), dtype=x.dtype)
    for n0 in range(0, N, _BLAS_BLOCK_N):
        n1 = min(N, n0 + _BLAS_BLOCK_N)
        np.matmul(x, widen(n0, n1).T, out=out[:, n0:n1])
    return out


# Who runs these kernels. While one of them runs, BLAS has no work, so the kernels
# take every thread the policy gives products, whoever owns them: get_num_threads() -- all cores
# on an idle machine, the count given to set_num_threads, or under "auto" the cores other
# processes leave free (check_load is called here too, so a run of quantized products follows
# the load even when no float product comes between them). The risk is OpenBLAS's workers, which
# spin for a while after a parallel product and hold the core a Numba thread needs: a kernel
# right after a 2-thread BLAS product took up to 10x its usual time. tensor/__init__.py
# therefore shortens that spin (OPENBLAS_THREAD_TIMEOUT) at its source, and what is left costs at
# most a few ms once after each parallel BLAS product, while one Numba thread would lose 2x on
# every call: the kernels take the policy's threads. The measurements: benchmarks/README.md
# ("Quantized kernels").
@contextlib.contextmanager
def kernel_threads():
    """Run a kernel on the threads the policy gives products (tensor.kernels.set_num_threads;
    under "auto", the cores other processes leave free): these kernels are bound by memory
    traffic (one row) or by multiply-adds (several rows), and one core alone gets half of
    either. See the comment above for why BLAS's owning the cores does not matter."""
    check_load()                               # "auto": one clock read between two looks
    before = numba.get_num_threads()
    want = max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if want == before:                         # (setting it costs a few microseconds)
        yield
        return
    numba.set_num_threads(want)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _check(x, w, op):
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"{op}: x {x.shape} and the weight (outputs, inputs) {w.shape} do not "
                         f"fit: x must be (rows, {w.shape[1] if w.ndim == 2 else 'inputs'})")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: x must be float32 or float64, got {x.dtype}")
