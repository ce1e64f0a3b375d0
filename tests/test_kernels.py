"""tensor.kernels: every kernel against an independent oracle, float32 and float64.

Oracles: for matmul, the product computed in float64 and the classic rounding-error bound of a
length-K dot product, |computed - exact| <= 2·K·eps·(|a| @ |b|) elementwise; for softmax, the
NumPy references and, for the backward, central differences of the forward in float64.
Both `matmul` (the dispatcher) and `matmul_numba` (the Numba kernel, forced) are checked at the
same shapes, under both thread owners.
"""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tensor import kernels as K

DTYPES = [np.float32, np.float64]
MATMULS = {"matmul": K.matmul, "matmul_numba": K.matmul_numba, "matmul_ref": K.matmul_ref}


@pytest.fixture
def thread_policy():
    """Lets a test change the thread policy and puts the old one back afterwards ("auto" too)."""
    before = K.get_thread_setting()
    yield
    K.set_num_threads(*before)


def operand(rng, shape, dtype, transposed=False):
    """A random array of `shape`; if `transposed`, a swapaxes view of a C array (strides differ)."""
    if not transposed:
        return rng.standard_normal(shape).astype(dtype)
    flipped = shape[:-2] + (shape[-1], shape[-2])
    return rng.standard_normal(flipped).astype(dtype).swapaxes(-1, -2)


def assert_matmul_close(out, a, b):
    """out ≈ a @ b within the rounding-error bound of a length-K dot product in out's dtype."""
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert out.shape == exact.shape and out.dtype == a.dtype
    assert out.flags.c_contiguous
    k = a.shape[-1]
    eps = np.finfo(a.dtype).eps
    bound = 2 * k * eps * np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    err = np.abs(out - exact)
    assert np.all(err <= bound + np.finfo(a.dtype).tiny), f"max error {err.max()} over the bound"


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------
ODD_SHAPES = [  # (shape of a, shape of b)
    ((1, 1), (1, 1)), ((1, 7), (7, 1)), ((7, 13), (13, 31)), ((31, 7), (7, 13)),
    ((13, 1), (1, 31)), ((33, 17), (17, 65)),                 # one past a whole tile
    ((5, 7, 13), (5, 13, 3)), ((1, 31, 7), (1, 7, 31)),       # batched
    ((3, 13, 7), (7, 31)), ((13, 7), (3, 7, 31)),            # one side batched
    ((0, 5), (5, 3)), ((4, 0), (0, 6)), ((2, 0, 3), (2, 3, 4)),  # empty
]


@pytest.mark.parametrize("name", ["matmul", "matmul_numba"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sa,sb", ODD_SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_odd_and_transposed_shapes(name, dtype, sa, sb, ta, tb):
    rng = np.random.default_rng(0)
    a, b = operand(rng, sa, dtype, ta), operand(rng, sb, dtype, tb)
    out = MATMULS[name](a, b)
    assert_matmul_close(out, a, b)
    assert not np.shares_memory(out, a) and not np.shares_memory(out, b)


@pytest.mark.parametrize("owner", ["blas", "numba"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_gpt_backward_layouts(owner, dtype, thread_policy):
    """The products of a linear layer and of attention, forward and backward, with the backward
    operands passed as transposed views, as tensor/functional.py does."""
    K.set_num_threads(2, owner)
    rng = np.random.default_rng(1)
    x, w = operand(rng, (96, 64), dtype), operand(rng, (64, 48), dtype)
    g = operand(rng, (96, 48), dtype)
    q, k = operand(rng, (6, 16, 8), dtype), operand(rng, (6, 16, 8), dtype)
    gs = operand(rng, (6, 16, 16), dtype)
    for a, b in [(x, w), (g, w.T), (x.T, g),                              # y = x@w, dx, dw
                 (q, k.swapaxes(-1, -2)), (gs, k), (gs.swapaxes(-1, -2), q)]:   # attention
        for f in (K.matmul, K.matmul_numba):
            assert_matmul_close(f(a, b), a, b)


@pytest.mark.parametrize("owner", ["blas", "numba"])
def test_matmul_dispatch_large_2d(owner, thread_policy):
    """At a GPT-sized 2-D product the dispatcher's path follows the thread owner, and whichever
    path it takes gives the product."""
    K.set_num_threads(2, owner)
    rng = np.random.default_rng(2)
    a, b = operand(rng, (768, 128), np.float32), operand(rng, (128, 384), np.float32, True)
    assert K.matmul_path(a, b) == ("numba" if owner == "numba" else "blas")
    assert K.matmul_path(a[None], b[None]) == "blas"          # batched: BLAS under both owners
    assert K.matmul_path(a[:2], b) == "blas"                  # small: BLAS under both owners
    assert_matmul_close(K.matmul(a, b), a, b)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 40), k=st.integers(1, 40), n=st.integers(1, 40),
       batch=st.sampled_from([None, 1, 3]), ta=st.booleans(), tb=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_matmul_matches_float64_product(m, k, n, batch, ta, tb, dtype, seed):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    a, b = operand(rng, lead + (m, k), dtype, ta), operand(rng, lead + (k, n), dtype, tb)
    assert_matmul_close(K.matmul_numba(a, b), a, b)
    assert_matmul_close(K.matmul(a, b), a, b)


def test_matmul_accepts_read_only_and_broadcast_views():
    rng = np.random.default_rng(3)
    a = np.broadcast_to(operand(rng, (5, 7), np.float32), (4, 5, 7))     # read-only, stride 0
    b = operand(rng, (4, 7, 3), np.float32)
    assert_matmul_close(K.matmul_numba(a, b), a, b)


@pytest.mark.parametrize("name", list(MATMULS))
def test_matmul_shape_errors_name_both_shapes(name):
    f = MATMULS[name]
    a32 = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        f(a32, np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(5, 4, 2\)"):
        f(np.ones((2, 3, 4), np.float32), np.ones((5, 4, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(4,\).*\(4, 2\)"):
        f(np.ones(4, np.float32), np.ones((4, 2), np.float32))


@pytest.mark.parametrize("name", list(MATMULS))
def test_matmul_dtype_errors_name_shapes_and_dtypes(name):
    f = MATMULS[name]
    with pytest.raises(TypeError, match=r"\(3, 4\).*\(4, 2\).*float32.*float64"):
        f(np.ones((3, 4), np.float32), np.ones((4, 2), np.float64))
    with pytest.raises(TypeError, match=r"int64.*int64"):
        f(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64))
    with pytest.raises(TypeError, match=r"float16"):
        f(np.ones((3, 4), np.float16), np.ones((4, 2), np.float16))


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------
def tolerances(dtype):
    return dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)


def assert_softmax_backward_close(dx, y, g, scale):
    """dx ≈ scale·y·(g - Σ g·y), computed in float64 from the same y and g, within the rounding
    bound of the formula in dx's dtype: the length-Tk dot product, then g - dot, then products."""
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    dot = np.sum(g64 * y64, axis=-1, keepdims=True)
    exact = scale * y64 * (g64 - dot)
    eps, tk = np.finfo(dx.dtype).eps, y.shape[-1]
    absdot = np.sum(np.abs(g64) * y64, axis=-1, keepdims=True)
    bound = 2 * abs(scale) * y64 * ((tk + 2) * eps * absdot + 3 * eps * (np.abs(g64) + abs(dot)))
    err = np.abs(dx - exact)
    assert np.all(err <= bound + np.finfo(dx.dtype).tiny), f"max error {err.max()} over the bound"


@settings(max_examples=40, deadline=None)
@given(lead=st.lists(st.integers(1, 3), max_size=2), tq=st.integers(1, 13),
       extra_keys=st.integers(0, 20), causal=st.booleans(), transposed=st.booleans(),
       scale=st.sampled_from([1.0, 0.125, 3.0, -0.7]), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_softmax_matches_reference(lead, tq, extra_keys, causal, transposed, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(lead) + (tq, tq + extra_keys)                 # Tq <= Tk
    x = operand(rng, shape, dtype, transposed) * 3
    g = operand(rng, shape, dtype, not transposed)
    y = K.softmax_forward(x, scale=scale, causal=causal)
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, K.softmax_forward_ref(x, scale, causal), **tolerances(dtype))
    dx = K.softmax_backward(y, g, scale=scale)
    assert dx.dtype == dtype and dx.shape == shape
    assert_softmax_backward_close(dx, y, g, scale)
    assert_softmax_backward_close(K.softmax_backward_ref(y, g, scale), y, g, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tq,tk", [(1, 1), (7, 7), (13, 13), (3, 31), (1, 13)])
def test_softmax_causal_mask(dtype, tq, tk):
    """Key j is hidden from query i exactly when j > i + (Tk - Tq): y = 0 there (exactly), the
    visible entries are the plain softmax of the visible scores, and dx = 0 where masked."""
    rng = np.random.default_rng(4)
    x, g = operand(rng, (2, tq, tk), dtype), operand(rng, (2, tq, tk), dtype)
    y = K.softmax_forward(x, scale=0.5, causal=True)
    i, j = np.indices((tq, tk))
    hidden = j > i + (tk - tq)
    assert np.all(y[:, hidden] == 0)
    for r in range(tq):
        seen = tk - tq + r + 1                                    # keys 0..seen-1 are visible
        np.testing.assert_allclose(y[:, r, :seen], K.softmax_forward_ref(x[:, r, :seen], 0.5),
                                   **tolerances(dtype))
    assert np.all(K.softmax_backward(y, g, scale=0.5)[:, hidden] == 0)
    if tq == 1:                                                   # KV-cache decoding: sees all
        np.testing.assert_allclose(y, K.softmax_forward(x, scale=0.5), **tolerances(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_for_large_scores(dtype):
    x = np.array([[1000.0, 999.0, -1000.0], [-5000.0, -5001.0, -5000.0]], dtype)
    y = K.softmax_forward(x, scale=2.0)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(y, K.softmax_forward_ref(x, 2.0), **tolerances(dtype))


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_backward_is_the_derivative(causal):
    """Central differences of L(x) = Σ g·softmax_forward(x) along random directions v, in float64:
    (L(x + εv) - L(x - εv)) / 2ε must equal Σ v·softmax_backward(y, g)."""
    rng = np.random.default_rng(5)
    x, g = rng.standard_normal((2, 5, 7)), rng.standard_normal((2, 5, 7))
    scale, eps = 0.8, 1e-6
    y = K.softmax_forward(x, scale, causal)
    dx = K.softmax_backward(y, g, scale)
    for _ in range(5):
        v = rng.standard_normal(x.shape)
        loss = lambda z: np.sum(g * K.softmax_forward(z, scale, causal))   # noqa: E731
        numeric = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
        np.testing.assert_allclose(np.sum(v * dx), numeric, rtol=1e-6, atol=1e-8)


def test_softmax_shapes_and_empty_inputs():
    assert K.softmax_forward(np.ones(4, np.float32)).shape == (4,)
    np.testing.assert_allclose(K.softmax_forward(np.zeros(4)), 0.25)
    for shape in [(2, 3, 0), (0, 4, 4), (2, 0, 3)]:
        x = np.ones(shape, np.float32)
        assert K.softmax_forward(x).shape == shape
        assert K.softmax_backward(x, x).shape == shape


def test_softmax_errors():
    with pytest.raises(ValueError, match=r"Tq <= Tk.*\(2, 5, 3\)"):
        K.softmax_forward(np.ones((2, 5, 3), np.float32), causal=True)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        K.softmax_forward(np.ones(5, np.float32), causal=True)
    with pytest.raises(TypeError, match=r"\(2, 3\).*int64"):
        K.softmax_forward(np.ones((2, 3), np.int64))
    y = np.full((2, 3), 1 / 3, np.float32)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        K.softmax_backward(y, np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"float64.*float32"):
        K.softmax_backward(y, np.ones((2, 3), np.float64))


# ---------------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------------
def test_set_num_threads_policy(thread_policy):
    blas_found = K.blas_info()["library"] is not None
    for _ in range(2):                                         # safe to call again
        K.set_num_threads(1)
        assert (K.get_num_threads(), K.get_thread_owner()) == (1, "blas")
        if blas_found:
            assert K.blas_info()["threads"] == 1
        K.set_num_threads(2, owner="numba")
        assert (K.get_num_threads(), K.get_thread_owner()) == (2, "numba")
        if blas_found:
            assert K.blas_info()["threads"] == 1                # BLAS held to one thread
        K.softmax_forward(np.ones((2, 3), np.float32))          # kernels set Numba's count
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        K.set_num_threads(2, owner="blas")
        if blas_found:
            assert K.blas_info()["threads"] == 2
        K.softmax_forward(np.ones((2, 3), np.float32))
        assert numba.get_num_threads() == 1                     # Numba kernels: calling thread


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_rejects_bad_counts(bad, thread_policy):
    with pytest.raises(ValueError, match="positive int"):
        K.set_num_threads(bad)


def test_set_num_threads_rejects_bad_owner(thread_policy):
    with pytest.raises(ValueError, match="owner"):
        K.set_num_threads(2, owner="openmp")
