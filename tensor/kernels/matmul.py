"""Matrix product: a NumPy reference, a Numba kernel, and `matmul`, which picks the faster one.

    matmul(a, b)         a (M, K) or (B, M, K)  @  b (K, N) or (B, K, N)  ->  (M, N) or (B, M, N)
    matmul_numba(a, b)   the same product, always through the Numba kernel (tests, benchmarks)
    matmul_ref(a, b)     the same product, always through np.matmul (the oracle)

By default every product goes to NumPy's BLAS: measured on the 2-core AMD EPYC (AVX2) this runs
on, BLAS beats this kernel on the threads each would get, idle or under load (the reasoning is
above the dispatcher, below; the figures in benchmarks/README.md). The kernel is here to be
read -- how a fast GEMM packs and tiles its operands -- is held to the reference by
tests/test_kernels.py, and runs under set_num_threads(n, owner="numba").

Any strides are accepted: the backward products g @ wᵀ and xᵀ @ g arrive as transposed views and
are not copied first; the kernel packs its operands itself (below). The result is a new
C-contiguous array of the inputs' dtype (float32 or float64, both operands the same).

How the Numba kernel works (the GotoBLAS recipe, cut to what Numba can express):
  1. pack A into row panels   ap[z, ib, k, r] = a[z, ib*MR + r, k]    (MR = 4 rows,  zero-padded)
  2. pack B into column panels bp[z, jb, k, c] = b[z, k, jb*NR + c]   (NR = 16 cols, zero-padded)
     Packing reads each operand once, whatever its strides, and lays it out so that the inner loop
     below walks memory contiguously; it costs M·K + K·N copies against 2·M·K·N flops.
  3. every MR x NR tile of the output:  out[i0:i0+4, j0:j0+16] = Σ_k  ap[.., k, :]ᵀ ⊗ bp[.., k, :]
     LLVM vectorizes the loop over the 16 columns (two AVX2 registers of float32) and keeps the
     4 x 16 accumulators in registers for the whole k loop: 8 FMAs per k, no loads or stores of
     the output inside it. The tiles are shared among the threads with prange. (float64 needs
     16 registers for the same tile and spills: about a third of BLAS's speed; it is used for
     gradient checks, not training.)
"""
import functools

import numpy as np
from numba import from_dtype, njit, prange, types

from .threads import check_load, get_thread_owner, use_kernel_threads

MR = 4    # rows of a micro-tile: the four accumulator rows a0..a3 written out in _gemm_kernel
NR = 16   # columns of a micro-tile: 16 float32 = two AVX2 registers (float64: four)


def _validate(a, b, op):
    """Raise a clear error unless a @ b is a product this module computes; returns nothing."""
    if a.ndim not in (2, 3) or b.ndim not in (2, 3):
        raise ValueError(f"{op}: operands must be 2-D (M, K) or 3-D (B, M, K), got shapes "
                         f"{a.shape} and {b.shape}; reshape or broadcast the batch axes first")
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{op}: operands of shapes {a.shape} and {b.shape} have dtypes {a.dtype} "
                        f"and {b.dtype}; both must be float32 or both float64 (cast with .astype)")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not fit: the last axis of a "
                         f"({a.shape[-1]}) must equal the second-to-last axis of b ({b.shape[-2]})")
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"{op}: batch sizes differ in shapes {a.shape} and {b.shape}; "
                         f"broadcast both to the same batch size first")


def _check(a, b, op):
    """Validate the operands of `op`; return them as 3-D arrays (views, no copies) and the batch."""
    a, b = np.asarray(a), np.asarray(b)
    _validate(a, b, op)
    batch = a.shape[0] if a.ndim == 3 else (b.shape[0] if b.ndim == 3 else None)
    z = 1 if batch is None else batch
    a3 = a if a.ndim == 3 else np.broadcast_to(a, (z,) + a.shape)    # (Z, M, K)
    b3 = b if b.ndim == 3 else np.broadcast_to(b, (z,) + b.shape)    # (Z, K, N)
    return a3, b3, batch


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------
def matmul_ref(a, b):
    """a @ b by NumPy (its BLAS), for the same inputs as `matmul`: the oracle for the tests."""
    _check(a, b, "matmul_ref")
    return np.matmul(a, b)


# ---------------------------------------------------------------------------------------------
# Numba kernel
# ---------------------------------------------------------------------------------------------
# fastmath={"contract"} only lets LLVM fuse a*b + c into one FMA instruction (one rounding
# instead of two); it does not reorder the sum over k, so results do not depend on the tiling.
@njit(parallel=True, fastmath={"contract"}, cache=True)
def _gemm_kernel(a, b):
    """out[z] = a[z] @ b[z] for a (Z, M, K), b (Z, K, N), any strides -> out (Z, Mp, Np),
    where Mp, Np are M, N rounded up to whole tiles (the caller slices off the padding)."""
    Z, M, K = a.shape
    N = b.shape[2]
    mb = (M + MR - 1) // MR            # row panels
    nb = (N + NR - 1) // NR            # column panels

    ap = np.empty((Z, mb, K, MR), a.dtype)           # 1. A as row panels: ap[z, ib, k, r]
    for t in prange(Z * mb):
        z, ib = t // mb, t % mb
        rows = min(MR, M - ib * MR)
        for k in range(K):
            for r in range(rows):
                ap[z, ib, k, r] = a[z, ib * MR + r, k]
            for r in range(rows, MR):
                ap[z, ib, k, r] = 0.0

    bp = np.empty((Z, nb, K, NR), a.dtype)           # 2. B as column panels: bp[z, jb, k, c]
    for t in prange(Z * nb):
        z, jb = t // nb, t % nb
        cols = min(NR, N - jb * NR)
        for k in range(K):
            for c in range(cols):
                bp[z, jb, k, c] = b[z, k, jb * NR + c]
            for c in range(cols, NR):
                bp[z, jb, k, c] = 0.0

    # ap, bp and out are made outside the tile loop on purpose: Numba hands them to the prange
    # body as arguments it marks `noalias`, and only then may LLVM keep the 4 x 16 accumulators
    # in registers (measured: 60 GFLOP/s on one core; ~25 with the panels made inside the loop).
    out = np.empty((Z, mb * MR, nb * NR), a.dtype)   # 3. one MR x NR tile per iteration
    for t in prange(Z * nb * mb):    # tile order (z, jb, ib): neighbours share one B panel
        # max(.., 0) does nothing at run time; it proves to LLVM that the index is not negative,
        # so Numba's negative-index wraparound disappears and the column loop vectorizes
        # (without it LLVM emits scalar code only).
        z = max(t // (nb * mb), 0)
        jb = max((t // mb) % nb, 0)
        ib = max(t % mb, 0)
        i0 = max(ib * MR, 0)
        j0 = max(jb * NR, 0)
        for c in range(NR):
            out[z, i0, j0 + c] = 0.0
            out[z, i0 + 1, j0 + c] = 0.0
            out[z, i0 + 2, j0 + c] = 0.0
            out[z, i0 + 3, j0 + c] = 0.0
        for k in range(K):
            a0 = ap[z, ib, k, 0]     # one element of each of the tile's 4 rows of A ...
            a1 = ap[z, ib, k, 1]
            a2 = ap[z, ib, k, 2]
            a3 = ap[z, ib, k, 3]
            for c in range(NR):      # ... times the tile's 16 columns of row k of B
                bkc = bp[z, jb, k, c]
                out[z, i0, j0 + c] += a0 * bkc
                out[z, i0 + 1, j0 + c] += a1 * bkc
                out[z, i0 + 2, j0 + c] += a2 * bkc
                out[z, i0 + 3, j0 + c] += a3 * bkc
    return out


@functools.cache
def compile_for(kernel, dtype, ndims, layout="A", scalars=()):
    """`kernel` compiled once for arrays of `dtype` with the given numbers of dims, followed by
    scalar arguments of the given Numba types; returns the compiled function.

    layout "A" accepts any strides. Left to itself Numba compiles a new copy of a kernel for every
    mix of C-contiguous, Fortran-contiguous and strided arguments (5 s each here); one "A" version
    per dtype, called directly, keeps that to one. Layout "C" (C-contiguous only) lets LLVM
    vectorize loops that walk the last axis. With cache=True the compiled code is loaded from
    disk by the next process. readonly=True: kernels only read their inputs, and read-only arrays
    (np.broadcast_to) must be accepted too."""
    nbtype = from_dtype(np.dtype(dtype))
    arrays = tuple(types.Array(nbtype, n, layout, readonly=True) for n in ndims)
    return kernel.compile(arrays + tuple(scalars))


def matmul_numba(a, b):
    """a @ b through the Numba kernel, whatever the shapes (see the module docstring)."""
    a3, b3, batch = _check(a, b, "matmul_numba")
    gemm = compile_for(_gemm_kernel, a3.dtype, (3, 3))
    with use_kernel_threads():
        out = gemm(a3, b3)                            # (Z, Mp, Np), padded to whole tiles
    m, n = a3.shape[1], b3.shape[2]
    if out.shape[1:] != (m, n):
        out = np.ascontiguousarray(out[:, :m, :n])    # (Z, M, N)
    return out if batch is not None else out[0]


# ---------------------------------------------------------------------------------------------
# Dispatcher
# ---------------------------------------------------------------------------------------------
# Which path is faster depends on who owns the cores (tensor/kernels/threads.py). Wherever the
# products run by default -- BLAS on both cores, or on the one core "auto" leaves under load --
# BLAS beats this kernel on the thread the kernel would get; the kernel wins only when given the
# cores BLAS would otherwise use, where the whole step is slower. So on the default path the
# Numba kernel is teaching code (how a GEMM is tiled and packed, held to the reference by the
# tests), and owner="numba" runs it. The figures: benchmarks/README.md ("matmul's dispatcher",
# from benchmarks/kernels.py).
#
# Rule: owner "blas"  -> always BLAS (one Numba thread stays under two BLAS threads, and under
#       one BLAS thread as well);
#       owner "numba" -> the Numba kernel for 2-D products of at least NUMBA_MIN_MACS
#       multiply-adds, where it overtakes BLAS; BLAS for batched ones (ahead of our two threads
#       on an idle machine, behind them on a shared one: the rule to re-measure if
#       owner="numba" is ever made a default).
NUMBA_MIN_MACS = 768 * 128 * 128


def matmul_path(a, b):
    """"numba" or "blas": the path `matmul(a, b)` takes for these operands (rule above)."""
    a, b = np.asarray(a), np.asarray(b)
    _validate(a, b, "matmul")         # cheap: this runs before every product of a training step
    if get_thread_owner() != "numba" or a.ndim == 3 or b.ndim == 3:
        return "blas"
    (m, k), n = a.shape, b.shape[1]
    return "numba" if m * k * n >= NUMBA_MIN_MACS else "blas"


def matmul(a, b):
    """a @ b: (M, K) or (B, M, K) times (K, N) or (B, K, N), through the faster of the Numba
    kernel and NumPy's BLAS for these shapes. Returns a new C-contiguous array."""
    check_load()      # "auto" threads: follow the machine's load (threads.py); one clock read
    if matmul_path(a, b) == "numba":
        return matmul_numba(a, b)
    return np.matmul(a, b)
