"""Who owns the CPU cores, NumPy's BLAS (OpenBLAS) or Numba's thread pool, and how many are free.

Both libraries keep their own pool of worker threads, and both let the workers spin (busy-wait)
for a while after a parallel call so that the next call starts fast. On a 2-core machine a spinning
pool holds a core the other pool is waiting for: a parallel region, whose threads meet at a
barrier, then waits for a thread that cannot run. So only one of them may run parallel.

When both pools run parallel and a training step alternates their products, the medians fall
20x (BLAS) and 100x (Numba). Of the two ways to avoid that fight:
  owner="blas"  (BLAS on every core, Numba on the calling thread): BLAS does the 2-D products
                and the batched attention products.
  owner="numba" (BLAS on one thread, Numba on every core): the Numba kernel does the 2-D
                products, BLAS the batched ones, and the softmax kernels get every core.
"blas" is faster where the time goes (the 2-D products are ~90% of a block's matmul flops, the
softmax's saving small beside them), so it is the default; `set_num_threads(n,
owner="numba")` chooses the other. The measurements: benchmarks/README.md ("Who owns the
cores"). `matmul` dispatches according to the owner (matmul.py).
Importing tensor.kernels changes nothing in BLAS; the Numba kernels run on one thread until
set_num_threads says otherwise.

Under load: "auto", the default. Another process busy on one of the two cores hurts any parallel
region (each call waits for the thread that has no core; BLAS fell to 3-20 GFLOP/s in such
runs), and `tinygpt sample` ran 30x slower than with one BLAS thread. So
until set_num_threads is given a count, BLAS gets the cores other processes leave free:
`check_load`, called by `matmul` before every product and acting at most once every CHECK_EVERY
seconds, reads /proc/stat; the busy time of our cores minus this process's own CPU time
(time.process_time: all its threads, spinning workers included) is what the others used, and each
core they hold more than half of is taken from BLAS. The first look covers the time from import
to the first product (start-up, loading); a run then follows the load as it comes and goes.
Off Linux "auto" gives BLAS every core, as before. benchmarks/load_speed.py measures it against
--threads 1 and 2, idle and with one core spun by another process.

Wait policies, chosen on purpose:
  OpenBLAS (a pthreads build in NumPy's wheels; threadpoolctl reports it): after a parallel call
    its workers spin for a while before they sleep, so that the next small product starts at
    once. The spin is set by OPENBLAS_THREAD_TIMEOUT, which the library reads once when NumPy
    loads it, so it cannot be changed from here. On a free core the spin is what we want; when a
    core is taken, "auto" removes the pool instead: with one BLAS thread OpenBLAS computes on the
    calling thread and no worker is left to spin.
  Numba (its "omp" threading layer here, libgomp): with owner "blas" its kernels run on the
    calling thread (numba.set_num_threads(1)), so no OpenMP worker exists to spin. owner "numba"
    starts its workers, which spin on libgomp's defaults (OMP_WAIT_POLICY, GOMP_SPINCOUNT, read
    when Numba first loads the layer); it is for idle machines and "auto" never picks it.
    KMP_BLOCKTIME is Intel's OpenMP, which is not loaded here.

BLAS threads are set through threadpoolctl when it is installed (`pip install tinygpt[threads]`;
any BLAS, any OS), else through OpenBLAS's own C functions, found with ctypes among the libraries
listed in /proc/self/maps (NumPy's wheels on Linux); with neither, that part is a silent no-op.
OPENBLAS_CORETYPE, if set, chooses OpenBLAS's kernels; it is reported by `blas_info()` and never
changed here. TENSOR_THREADS_LOG=1 prints each change "auto" makes on stderr.
"""
import contextlib
import ctypes
import math
import os
import sys
import time

import numba

OWNERS = ("blas", "numba")
AUTO = "auto"

# The automatic setting (see "Under load" in the module docstring): how often it looks again,
# the shortest window it trusts, and how busy the other processes must be to cost us a core.
CHECK_EVERY = 1.0      # seconds between two looks at the load, during a run
MIN_WINDOW = 0.2       # seconds: a shorter window is noise (the kernel counts in 10 ms ticks)
BUSY_CORE = 0.5        # other processes using more than half a core take one core away
_clock = time.monotonic


def _cpu_cores():
    """The cores this process may run on (Linux), else all of them, as a sorted list."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return list(range(os.cpu_count() or 1))


def usable_cores():
    """How many cores this process may run on: len(os.sched_getaffinity(0)) (Linux: what
    `taskset` or a container's cpuset allows), else os.cpu_count(). More threads than this only
    queue for the same cores, and a parallel region, whose threads meet at a barrier, then waits
    for the thread that has no core (2 cores, 3 threads: training 10x and sampling 58x slower)."""
    return len(_cpu_cores())


def check_thread_count(n, option="--threads"):
    """A thread count a user asked for (the commands' --threads), refused with what to do when
    it is more than usable_cores(): ValueError, whose message names `option`."""
    cores = usable_cores()
    if n > cores:
        where = ("os.sched_getaffinity" if hasattr(os, "sched_getaffinity") else "os.cpu_count")
        raise ValueError(f"{option} {n}: this process may use {cores} "
                         f"core{'' if cores == 1 else 's'} ({where}); pass {option} {cores} or "
                         f"fewer (or leave it out: the default uses them all)")


def _cpu_count():
    return usable_cores()


# ---------------------------------------------------------------------------------------------
# NumPy's BLAS pool: through threadpoolctl when it is installed, else OpenBLAS's C functions
# ---------------------------------------------------------------------------------------------
class _ThreadpoolctlBLAS:
    """NumPy's BLAS as threadpoolctl sees it (OpenBLAS, MKL or BLIS; any platform)."""
    via = "threadpoolctl"

    def __init__(self):
        import numpy    # noqa: F401  (threadpoolctl only finds libraries already loaded)
        from threadpoolctl import ThreadpoolController
        self.controller = ThreadpoolController().select(user_api="blas")
        if not self.controller.lib_controllers:
            raise LookupError("threadpoolctl found no BLAS library in this process")

    def set(self, n):
        self.controller.limit(limits=int(n))    # applies now and stays (nothing is restored)

    def get(self):
        return self.controller.info()[0]["num_threads"]

    def info(self):
        lib = self.controller.info()[0]
        return {"library": os.path.basename(lib["filepath"]), "corename": lib.get("architecture"),
                "threading_layer": lib.get("threading_layer")}


class _CtypesOpenBLAS:
    """The fallback without threadpoolctl: the OpenBLAS that NumPy loaded, found by its path in
    /proc/self/maps (Linux only) and driven through its own C functions. NumPy 2.x wheels ship
    it as scipy_openblas (64-bit ints), spelled `scipy_openblas_set_num_threads64_`; older wheels
    say `openblas_set_num_threads`."""
    via = "ctypes"

    def __init__(self):
        import numpy    # noqa: F401  (the library is mapped once numpy is imported)
        with open("/proc/self/maps") as maps:   # OSError off Linux: no fallback there
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
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
                self.path, self.set, self.get, self._corename = path, setter, getter, corename
                return
        raise LookupError("no OpenBLAS with set_num_threads among this process's libraries")

    def info(self):
        core = self._corename() if self._corename is not None else None
        return {"library": os.path.basename(self.path),
                "corename": core.decode() if core else None, "threading_layer": None}


def _find_blas():
    """The first of threadpoolctl and the ctypes fallback that works here, or None (then thread
    counts for BLAS are a silent no-op: its own default stays)."""
    for backend in (_ThreadpoolctlBLAS, _CtypesOpenBLAS):
        try:
            return backend()
        except (ImportError, LookupError, OSError):
            continue
    return None


_BLAS = _find_blas()


def _set_blas_threads(n):
    if _BLAS is not None:
        _BLAS.set(int(n))


def blas_info():
    """NumPy's BLAS here: library, core type, thread count, how it is driven (for benchmarks)."""
    info = {"library": None, "corename": None, "threading_layer": None, "threads": None,
            "via": None, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    if _BLAS is not None:
        info.update(_BLAS.info(), threads=_BLAS.get(), via=_BLAS.via)
    return info


# ---------------------------------------------------------------------------------------------
# The load on the machine: how many cores other processes keep busy
# ---------------------------------------------------------------------------------------------
def _cpu_sample():
    """(wall clock, busy CPU seconds of our cores, CPU seconds of this process) now, or None off
    Linux. /proc/stat counts every core's time in ticks: user nice system idle iowait irq
    softirq steal ...; all but idle and iowait are busy (steal: a hypervisor gave the core away)."""
    cores = set(_cpu_cores())
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
    except OSError:
        return None
    busy = 0
    for fields in lines:
        if int(fields[0][3:]) in cores:
            ticks = [int(v) for v in fields[1:9]]
            busy += sum(ticks) - ticks[3] - ticks[4]
    return _clock(), busy / os.sysconf("SC_CLK_TCK"), time.process_time()


def others_busy_cores(before, after):
    """Cores kept busy by other processes between two _cpu_sample()s: all busy time on our cores
    minus our own CPU time (every thread of this process, spinning BLAS workers included)."""
    wall = after[0] - before[0]
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, others / wall) if wall > 0 else 0.0


def threads_for_load(cores, others_busy):
    """BLAS threads for `cores` cores of which other processes keep `others_busy` busy: one core
    fewer for each core they use (a core counts once they hold more than BUSY_CORE of it)."""
    taken = math.floor(others_busy + (1.0 - BUSY_CORE))
    return max(1, min(cores, cores - taken))


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------
_policy = {"threads": AUTO, "owner": "blas", "numba_threads": 1,
           "blas_threads": None,            # what auto last gave BLAS (None: not yet decided)
           "sample": _cpu_sample(),         # auto's window starts at import
           "next_check": 0.0, "others_busy": None}


def set_num_threads(n, owner="blas"):
    """Use `n` CPU threads, given to `owner`: "blas" (the default, measured faster) gives them to
    NumPy's BLAS and runs the Numba kernels on the calling thread; "numba" gives them to the Numba
    kernels and holds BLAS to one thread. n="auto" (the setting at import) lets BLAS have the
    cores that other processes leave free, looked at again every CHECK_EVERY seconds. Safe to
    call again at any time."""
    if n == AUTO:
        if owner != "blas":
            raise ValueError(f"set_num_threads: 'auto' gives the cores to BLAS; with "
                             f"owner={owner!r} give a thread count (e.g. 2)")
        numba.set_num_threads(1)
        _policy.update(threads=AUTO, owner="blas", numba_threads=1, blas_threads=None,
                       sample=_cpu_sample(), next_check=0.0)
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int or 'auto', got {n!r}")
    if owner not in OWNERS:
        raise ValueError(f"set_num_threads: owner must be one of {OWNERS}, got {owner!r}")
    numba_n = min(n, numba.config.NUMBA_NUM_THREADS) if owner == "numba" else 1
    _set_blas_threads(n if owner == "blas" else 1)
    _policy.update(threads=n, owner=owner, numba_threads=numba_n, blas_threads=None)
    numba.set_num_threads(numba_n)


def check_load():
    """In the "auto" setting, give BLAS the cores other processes leave free, at most once every
    CHECK_EVERY seconds; otherwise do nothing. Called by `matmul` before every product, so a
    run follows the load as it changes (the cost between two checks: one clock read)."""
    if _policy["threads"] != AUTO or _clock() < _policy["next_check"]:
        return
    before, now = _policy["sample"], _cpu_sample()
    if before is None or now is None:            # not Linux: every core, as BLAS would anyway
        _policy.update(next_check=math.inf, blas_threads=_cpu_count())
        _set_blas_threads(_policy["blas_threads"])
        return
    if now[0] - before[0] < MIN_WINDOW:          # too short to tell: one thread, safe under load,
        if _policy["blas_threads"] is None:      # until the window is long enough
            _policy["blas_threads"] = 1
            _set_blas_threads(1)
        _policy["next_check"] = before[0] + MIN_WINDOW
        return
    others = others_busy_cores(before, now)
    n = threads_for_load(_cpu_count(), others)
    if n != _policy["blas_threads"]:
        _set_blas_threads(n)
        if os.environ.get("TENSOR_THREADS_LOG"):     # benchmarks/load_speed.py reads this line
            print(f"tensor.kernels: BLAS threads -> {n} (other processes kept {others:.2f} "
                  f"cores busy)", file=sys.stderr, flush=True)
    _policy.update(blas_threads=n, others_busy=others, sample=now,
                   next_check=now[0] + CHECK_EVERY)


def get_num_threads():
    """The thread count in use: set by set_num_threads, or chosen by "auto" (before its first
    look at the load: BLAS's own count, or the cores)."""
    if _policy["threads"] != AUTO:
        return _policy["threads"]
    if _policy["blas_threads"] is not None:
        return _policy["blas_threads"]
    return _BLAS.get() if _BLAS is not None else _cpu_count()


def get_thread_setting():
    """(n or "auto", owner): what set_num_threads was last given, to put it back later."""
    return _policy["threads"], _policy["owner"]


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
