"""Who owns the CPU cores: NumPy's BLAS (OpenBLAS) or Numba's thread pool.

DRAFT: numbers to be filled in.
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
    """What NumPy's BLAS is here: library path, OpenBLAS core type, thread count (for benchmarks)."""
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
