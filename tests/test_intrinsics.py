"""The kernels' machine-level helpers (tensor/kernels/intrinsics.py) against NumPy: the float32
exp against float64's exp (the exact value, to within float32's own rounding), its edges (0, the
underflow and overflow limits, ±inf, NaN); maxnum's NaN rule; the bit casts against ndarray.view;
prefetch changes nothing. And the softmax built on them keeps NaN and inf as NumPy does."""
import numba
import numpy as np
import pytest

from tensor.kernels import intrinsics as I
from tensor.kernels import softmax_forward, softmax_forward_ref


@numba.njit
def _exp_all(z):
    out = np.empty_like(z)
    for i in range(z.size):
        out[i] = I.exp(z[i])
    return out


def test_float32_exp_within_two_ulp_of_the_exact_value():
    z = np.concatenate([np.linspace(-86.6, 88.72, 200_001), [0.0, -1e-30, 1e-30, -0.5, 0.5]])
    z = z.astype(np.float32)
    got = _exp_all(z)
    assert got.dtype == np.float32
    exact = np.exp(z.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)     # float32's step there
    assert np.max(np.abs(got - exact) / ulp) <= 2.0


def test_float32_exp_edges():
    z = np.array([-np.inf, -1000, -86.7, 88.73, 1000, np.inf, np.nan, 0], np.float32)
    got = _exp_all(z)
    np.testing.assert_array_equal(got[:3], 0)                # underflow: exactly 0
    assert np.all(np.isposinf(got[3:6]))                     # overflow: inf
    assert np.isnan(got[6]) and got[7] == 1


def test_float64_exp_is_math_exp():
    z = np.array([-700.0, -1.5, 0.0, 1e-300, 2.5, 700.0])
    np.testing.assert_array_equal(_exp_all(z), np.exp(z))


@numba.njit
def _max_all(a):
    m = a[0]
    for v in a:
        m = I.maxnum(m, v)
    return m


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxnum_passes_over_nan(dtype):
    assert _max_all(np.array([1, np.nan, 3, 2], dtype)) == 3
    assert _max_all(np.array([np.nan, -5, -7], dtype)) == -5
    assert _max_all(np.array([-np.inf, np.inf], dtype)) == np.inf
    a = np.random.default_rng(0).standard_normal(1001).astype(dtype)
    assert _max_all(a) == a.max()


@numba.njit
def _casts(u):
    out = np.empty(u.size, np.float32)
    back = np.empty(u.size, np.uint32)
    for i in range(u.size):
        out[i] = I.bits_to_float32(u[i])
        back[i] = I.float32_to_bits(out[i])
    return out, back


def test_bit_casts_are_views():
    u = np.random.default_rng(1).integers(0, 2**32, 10_000, dtype=np.uint64).astype(np.uint32)
    u = u[(u & 0x7F800000) != 0x7F800000]                    # NaN bits may change when copied
    f, back = _casts(u)
    np.testing.assert_array_equal(f.view(np.uint32), u)
    np.testing.assert_array_equal(back, u)


@numba.njit
def _sum_with_prefetch(a):
    s = I.zero_like(a[0])
    for i in range(a.size):
        I.prefetch(a, min(i + 64, a.size - 1))
        s += a[i]
    return s


def test_prefetch_changes_nothing_and_zero_like_keeps_the_type():
    a = np.arange(1000, dtype=np.float32)
    assert _sum_with_prefetch(a) == np.float32(a.sum())
    assert numba.typeof(_sum_with_prefetch(np.ones(3, np.float64))) == numba.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_keeps_nan_and_inf_as_numpy_does(dtype, causal):
    """A NaN or +inf among the visible scores makes that row's visible entries NaN (inf - inf),
    as in NumPy; masked entries stay exactly 0; -inf is a score of probability 0; a NaN among
    the masked (future) scores changes nothing."""
    x = np.random.default_rng(2).standard_normal((2, 6, 6)).astype(dtype)
    x[0, 2, 1] = np.nan                  # visible to query 2
    x[0, 4, 0] = np.inf
    x[1, 3, 2] = -np.inf
    x[1, 1, 5] = np.nan                  # in the future of query 1: masked when causal
    with np.errstate(invalid="ignore"):
        ref = softmax_forward_ref(x, 0.5, causal)
    got = softmax_forward(x, 0.5, causal)
    if causal:
        hidden = np.triu(np.ones((6, 6), bool), 1)
        assert np.all(got[:, hidden] == 0)
        ref[:, hidden] = 0                          # the reference's NaN row spills into them
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-5, atol=1e-7)
    assert got[1, 3, 2] == 0
