"""Thread control (tensor/kernels/threads.py): the "auto" setting under a simulated load, and the
two ways of driving NumPy's BLAS (threadpoolctl, and OpenBLAS's C functions through ctypes).

The load is simulated: the /proc/stat sample and the clock are replaced by fakes, so what is
tested is the decision, never a timing. The backends are checked against threadpoolctl's and
OpenBLAS's own reading of the thread count."""
import sys

import numpy as np
import pytest

import tensor.kernels as K
from tensor.kernels import threads as T


@pytest.fixture
def policy():
    """Put the thread setting and BLAS's thread count back after the test."""
    before = K.get_thread_setting()
    saved = dict(T._policy)
    yield
    K.set_num_threads(*before)
    T._policy.update(saved)
    if before[0] == "auto" and saved["blas_threads"] is not None:
        T._set_blas_threads(saved["blas_threads"])


class FakeBLAS:
    """Records the thread counts the policy gives BLAS."""
    via = "fake"

    def __init__(self, n=2):
        self.n, self.calls = n, []

    def set(self, n):
        self.n = n
        self.calls.append(n)

    def get(self):
        return self.n

    def info(self):
        return {"library": "fake", "corename": None, "threading_layer": None}


class FakeMachine:
    """A 2-core machine: `run(seconds, ours, others)` advances the clock while this process uses
    `ours` cores and other processes `others` cores; `sample()` reads it like _cpu_sample."""

    def __init__(self):
        self.wall, self.busy, self.own = 100.0, 0.0, 0.0

    def run(self, seconds, ours, others):
        self.wall += seconds
        self.busy += seconds * (ours + others)
        self.own += seconds * ours

    def sample(self):
        return self.wall, self.busy, self.own


@pytest.fixture
def machine(monkeypatch, policy):
    """Auto threads on a fake 2-core machine with a fake BLAS; yields (machine, blas)."""
    m, blas = FakeMachine(), FakeBLAS()
    monkeypatch.setattr(T, "_cpu_sample", m.sample)
    monkeypatch.setattr(T, "_clock", lambda: m.wall)
    monkeypatch.setattr(T, "_cpu_count", lambda: 2)
    monkeypatch.setattr(T, "_BLAS", blas)
    K.set_num_threads("auto")
    yield m, blas


@pytest.mark.parametrize("cores, others, want", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1),
    (1, 0.0, 1), (4, 1.0, 3), (4, 1.6, 2), (4, 3.9, 1), (8, 0.49, 8)])
def test_threads_for_load(cores, others, want):
    assert T.threads_for_load(cores, others) == want


def test_others_busy_cores_subtracts_this_process():
    # 2 s in which all cores together were busy 3 s, 1.2 s of them ours: others used 0.9 cores
    assert T.others_busy_cores((10.0, 50.0, 4.0), (12.0, 53.0, 5.2)) == pytest.approx(0.9)
    # tick rounding can make ours exceed the total: never negative
    assert T.others_busy_cores((10.0, 50.0, 4.0), (11.0, 50.5, 4.7)) == 0.0
    assert T.others_busy_cores((10.0, 50.0, 4.0), (10.0, 50.0, 4.0)) == 0.0


def test_auto_gives_blas_both_cores_when_idle(machine):
    m, blas = machine
    m.run(0.5, ours=1.0, others=0.05)          # start-up: imports, building the model
    T.check_load()
    assert blas.calls == [2] and K.get_num_threads() == 2


def test_auto_gives_blas_one_core_under_load(machine):
    m, blas = machine
    m.run(0.5, ours=1.0, others=1.0)           # another process spins on the other core
    T.check_load()
    assert blas.calls == [1] and K.get_num_threads() == 1


def test_auto_follows_the_load_during_a_run(machine):
    m, blas = machine
    m.run(0.5, ours=1.0, others=0.0)
    T.check_load()
    assert blas.n == 2
    m.run(0.5, ours=1.33, others=0.67)         # load starts: 3 busy threads share 2 cores
    T.check_load()
    assert blas.n == 2, "looked again before CHECK_EVERY seconds"
    m.run(T.CHECK_EVERY, ours=1.33, others=0.67)
    T.check_load()
    assert blas.n == 1
    m.run(T.CHECK_EVERY, ours=1.0, others=1.0)     # still loaded: stays at 1
    T.check_load()
    assert blas.n == 1
    m.run(T.CHECK_EVERY, ours=1.0, others=0.0)     # the other process ended
    T.check_load()
    assert blas.calls == [2, 1, 2]


def test_auto_uses_one_thread_until_the_window_is_long_enough(machine):
    m, blas = machine
    m.run(T.MIN_WINDOW / 4, ours=1.0, others=0.0)
    T.check_load()
    assert blas.calls == [1]                   # safe under load, until it can tell
    m.run(T.MIN_WINDOW / 4, ours=1.0, others=0.0)
    T.check_load()                             # still inside the window: nothing new
    assert blas.calls == [1]
    m.run(T.MIN_WINDOW, ours=1.0, others=0.0)
    T.check_load()
    assert blas.calls == [1, 2]


def test_a_thread_count_given_by_the_user_is_never_changed(machine):
    m, blas = machine
    K.set_num_threads(2)
    m.run(5.0, ours=1.0, others=1.0)
    T.check_load()
    assert blas.calls == [2] and K.get_thread_setting() == (2, "blas")
    K.set_num_threads(1, owner="numba")
    m.run(5.0, ours=1.0, others=0.0)
    T.check_load()
    assert blas.calls == [2, 1]


def test_auto_off_linux_gives_every_core(machine, monkeypatch):
    m, blas = machine
    monkeypatch.setattr(T, "_cpu_sample", lambda: None)
    K.set_num_threads("auto")
    m.run(1.0, ours=1.0, others=1.0)
    T.check_load()
    assert blas.calls == [2]


def test_matmul_applies_auto_to_the_real_blas(monkeypatch, policy):
    """Through the public path: a product under a simulated load leaves NumPy's BLAS (as
    threadpoolctl or OpenBLAS reports it) at one thread, an idle machine at two."""
    if T._BLAS is None:
        pytest.skip("no controllable BLAS in this process")
    m = FakeMachine()
    monkeypatch.setattr(T, "_cpu_sample", m.sample)
    monkeypatch.setattr(T, "_clock", lambda: m.wall)
    monkeypatch.setattr(T, "_cpu_count", lambda: 2)
    a = np.ones((8, 8), np.float32)
    K.set_num_threads("auto")
    m.run(1.0, ours=1.0, others=1.0)
    np.testing.assert_array_equal(K.matmul(a, a), np.full((8, 8), 8, np.float32))
    assert K.blas_info()["threads"] == 1
    m.run(T.CHECK_EVERY, ours=1.0, others=0.0)
    K.matmul(a, a)
    assert K.blas_info()["threads"] == 2


def test_auto_setting_errors_and_round_trip(policy):
    with pytest.raises(ValueError, match="auto"):
        K.set_num_threads("auto", owner="numba")
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        K.set_num_threads("all")
    K.set_num_threads(1)
    assert K.get_thread_setting() == (1, "blas")
    K.set_num_threads("auto")
    assert K.get_thread_setting() == ("auto", "blas")


def test_cpu_sample_reads_this_machine():
    s = T._cpu_sample()
    if s is None:
        pytest.skip("no /proc/stat here")
    wall, busy, own = s
    assert busy > 0 and own > 0
    later = T._cpu_sample()
    assert later[0] >= wall and later[1] >= busy and later[2] >= own


# ---------------------------------------------------------------------------------------------
# the two backends, against the libraries' own reading
# ---------------------------------------------------------------------------------------------
def openblas_threads_by_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    info = threadpoolctl.threadpool_info()
    blas = [lib for lib in info if lib["user_api"] == "blas"]
    if not blas:
        pytest.skip("threadpoolctl sees no BLAS")
    return blas[0]["num_threads"]


@pytest.mark.parametrize("backend", ["threadpoolctl", "ctypes"])
def test_backend_sets_blas_threads(backend, policy):
    if backend == "threadpoolctl":
        pytest.importorskip("threadpoolctl")
    try:
        blas = T._ThreadpoolctlBLAS() if backend == "threadpoolctl" else T._CtypesOpenBLAS()
    except (LookupError, OSError):
        pytest.skip(f"no BLAS reachable through {backend} here")
    before = blas.get()
    try:
        for n in (1, 2, 1):
            blas.set(n)
            assert blas.get() == n
            assert openblas_threads_by_threadpoolctl() == n    # the library itself agrees
        assert blas.info()["library"]
    finally:
        blas.set(before)


def test_fallback_without_threadpoolctl(monkeypatch):
    """With threadpoolctl not installed (import fails), OpenBLAS is driven through ctypes."""
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)      # `import threadpoolctl` fails
    blas = T._find_blas()
    try:
        T._CtypesOpenBLAS()
    except (LookupError, OSError):
        assert blas is None                    # no OpenBLAS either: thread counts are a no-op
        return
    assert isinstance(blas, T._CtypesOpenBLAS) and blas.via == "ctypes"


def test_no_blas_found_is_a_silent_no_op(monkeypatch, policy):
    monkeypatch.setattr(T, "_BLAS", None)
    K.set_num_threads(1)
    assert K.blas_info()["threads"] is None and K.get_num_threads() == 1


def test_auto_sends_every_product_to_blas(policy):
    """As measured (benchmarks/README.md): under the default setting the Numba kernel
    is never on the hot path, whatever the size; owner="numba" still reaches it."""
    K.set_num_threads("auto")
    a = np.ones((768, 512), np.float32)
    b = np.ones((512, 512), np.float32)
    assert K.matmul_path(a, b) == "blas" and K.matmul_path(a[None], b[None]) == "blas"
    K.set_num_threads(2, owner="numba")
    assert K.matmul_path(a, b) == "numba"


# ----- OpenBLAS's idle-thread timeout, set before NumPy loads -----------------------------------

def _env_after(code, env):
    import subprocess
    out = subprocess.run([sys.executable, "-c", code + "; import os; "
                          "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("first", ["import tensor", "import tinygpt.cli", "import tinygpt"])
def test_tensor_and_tinygpt_set_openblas_thread_timeout_before_numpy(first):
    """Both packages set the same value (tinygpt repeats tensor's, see tensor/__init__.py), and
    the command line's imports reach it before NumPy; a value the user set is kept."""
    import os
    import tensor
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    assert _env_after(first, env) == tensor.OPENBLAS_THREAD_TIMEOUT
    assert _env_after(first, {**env, "OPENBLAS_THREAD_TIMEOUT": "7"}) == "7"


def test_import_tinygpt_sets_it_without_loading_numpy():
    """So every tinygpt module (each imports the package first) finds it set when NumPy loads."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = "import sys, tinygpt; assert 'numpy' not in sys.modules, 'import tinygpt loaded numpy'"
    assert _env_after(code, env) != "None"
