"""Who owns the CPU cores: NumPy's BLAS (OpenBLAS) or Numba's thread pool.

Both libraries keep their own pool of worker threads, and both let the workers spin (busy-wait)
for a while after a parallel call so that the next call starts fast. On a 2-core machine a spinning
pool holds a core the other pool is waiting for: a parallel region, whose threads meet at a
barrier, then waits for a thread that cannot run. So only one of them may run parallel.

Measured on the 2-core AMD EPYC (Zen 3, AVX2; OpenBLAS 0.3.31 "Haswell" kernels) this was written
on, float32, GFLOP/s, best / median of 100 runs:

                            BLAS 1, Numba 1   BLAS 1, Numba 2   BLAS 2, Numba 1   BLAS 2, Numba 2
  np.matmul 768x128@128x384     71 / 64           82 / 76          150 / 134         149 / 135
  Numba     768x128@128x384     55 / 46          122 / 108          62 / 55           98 / 82
  np.matmul 48x(64x32@32x64)    56 / 52           63 / 61           63 / 61           50 / 43
  Numba     48x(64x32@32x64)    24 / 23           47 / 41           30 / 27           45 / 39
  the two products alternately, as in a training step:
    np.matmul 768x128@128x384   79 / 74           87 / 80          142 / 126          71 / 7
    Numba batched               24 / 22           45 / 35           30 / 25           25 / 0.4

The last column is the fight: both pools parallel, and the medians fall 20x (BLAS) and 100x
(Numba) once the two alternate. Of the two ways to avoid it:
  owner="blas"  (BLAS 2, Numba 1): BLAS does the 2-D products at 134-150 GFLOP/s, the batched
                attention products at 63, and the Numba kernels run on the calling thread.
  owner="numba" (BLAS 1, Numba 2): the Numba kernel does the 2-D products at 108-122, BLAS the
                batched ones at 63, and the softmax kernels get both cores.
benchmarks/kernels.py over all 15 matmuls of a block (forward and both backward products) and the
causal softmax (48, 64, 64), forward + backward, on the idle machine:
  owner="blas":   2-D 124-160 GFLOP/s (BLAS), batched 61-68 (BLAS), softmax 721 us (1 thread)
  owner="numba":  2-D  93-123 GFLOP/s (Numba), batched 59-68 (BLAS), softmax 411 us (2 threads)
"blas" is faster where the time goes (the 2-D products are ~90% of a block's matmul flops; the
softmax saving is ~0.3 ms against ~2 ms), so it is the default; `set_num_threads(n,
owner="numba")` chooses the other. `matmul` dispatches according to the owner (matmul.py).
Importing tensor.kernels changes nothing in BLAS; the Numba kernels run on one thread until
set_num_threads says otherwise.

Another process busy on one of the two cores hurts any parallel region the same way (each call
waits for the descheduled thread; BLAS fell to 3-20 GFLOP/s in such runs), so benchmarks need an
otherwise idle machine, and on a shared one set_num_threads(1) is the safe choice.

BLAS threads are set through OpenBLAS's own C function, found with ctypes among the libraries
this process has loaded (no threadpoolctl needed); with another BLAS, or off Linux, that part is a
silent no-op. OPENBLAS_CORETYPE, if set, chooses OpenBLAS's kernels; it is reported by
`blas_info()` and never changed here.
"""
import contextlib
import ctypes
import os

import numba

OWNERS = ("blas", "numba")


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))     # the cores this process may run on
    except AttributeError:                      # not Linux
        return os.cpu_count() or 1


def _find_openblas():
    """The OpenBLAS library that NumPy loaded, as a ctypes handle with `set`/`get`/`corename`
    attributes, or None. NumPy 2.x wheels ship it as scipy_openblas (64-bit ints), whose symbols
    are spelled `scipy_openblas_set_num_threads64_`; older wheels say `openblas_set_num_threads`."""
    import numpy    # noqa: F401  (the library is mapped once numpy is imported)
    try:
        with open("/proc/self/maps") as maps:    # Linux: the shared libraries of this process
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"),
                               ("scipy_openblas", ""), ("openblas", "")):
            try:
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}")
            except AttributeError:
                continue
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            corename = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            if corename is not None:
                corename.argtypes, corename.restype = [], ctypes.c_char_p
            return {"path": path, "set": setter, "get": getter, "corename": corename}
    return None


_OPENBLAS = _find_openblas()
_policy = {"threads": None, "owner": "blas", "numba_threads": 1}


def _set_blas_threads(n):
    if _OPENBLAS is not None:
        _OPENBLAS["set"](int(n))


def blas_info():
    """NumPy's BLAS here: library, OpenBLAS core type, thread count (printed by benchmarks)."""
    if _OPENBLAS is None:
        return {"library": None, "corename": None, "threads": None,
                "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    core = _OPENBLAS["corename"]() if _OPENBLAS["corename"] is not None else None
    return {"library": os.path.basename(_OPENBLAS["path"]),
            "corename": core.decode() if core else None, "threads": _OPENBLAS["get"](),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def set_num_threads(n, owner="blas"):
    """Use `n` CPU threads, given to `owner`: "blas" (the default, measured faster) gives them to
    NumPy's BLAS and runs the Numba kernels on the calling thread; "numba" gives them to the Numba
    kernels and holds BLAS to one thread. Safe to call again at any time."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    if owner not in OWNERS:
        raise ValueError(f"set_num_threads: owner must be one of {OWNERS}, got {owner!r}")
    numba_n = min(n, numba.config.NUMBA_NUM_THREADS) if owner == "numba" else 1
    _set_blas_threads(n if owner == "blas" else 1)
    _policy.update(threads=n, owner=owner, numba_threads=numba_n)
    numba.set_num_threads(numba_n)


def get_num_threads():
    """The thread count set by set_num_threads (before any call: BLAS's own count, or the cores)."""
    if _policy["threads"] is not None:
        return _policy["threads"]
    return _OPENBLAS["get"]() if _OPENBLAS is not None else _cpu_count()


def get_thread_owner():
    """"blas" or "numba": who gets the threads (see the module docstring)."""
    return _policy["owner"]


@contextlib.contextmanager
def use_kernel_threads():
    """Run a Numba kernel with the policy's thread count. Numba's count is per Python thread,
    so it is set here, on the thread that calls the kernel, not only once at start-up."""
    want = _policy["numba_threads"]
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
    yield
