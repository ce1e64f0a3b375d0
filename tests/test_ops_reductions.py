"""The reductions: forward against NumPy (and PyTorch where the meaning could differ: var's and
std's correction, min's ties), backward by gradcheck over axis None / int / negative int /
tuple, keepdims both ways. max and min are checked on distinct values (no ties); ties, empty
axes and too few elements for the correction are checked on their own."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tensor import functional as F
from ops_helpers import (AXIS_SHAPES, N_EXAMPLES, N_TORCH_EXAMPLES, SEEDS, SHAPES, assert_forward,
                         assert_same, check, covers, distinct, leaf, normal, torch, torch_or_skip)


@st.composite
def shape_and_axis(draw):
    shape = draw(SHAPES)
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"] if ndim else ["none", "tuple"]))
    if kind == "none":
        return shape, None
    if kind == "int":
        return shape, draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)) if ndim else []
    return shape, tuple(a - ndim if draw(st.booleans()) else a for a in axes)


REDUCTIONS = {"sum": (F.sum, np.sum, normal), "mean": (F.mean, np.mean, normal),
              "max": (F.max, np.max, distinct), "var": (F.var, np.var, normal)}


@covers(*REDUCTIONS)
@pytest.mark.parametrize("op", REDUCTIONS)
@settings(max_examples=N_EXAMPLES)
@given(shape_axis=shape_and_axis(), keepdims=st.booleans(), seed=SEEDS)
@example(shape_axis=((3, 4, 2), None), keepdims=False, seed=0)
@example(shape_axis=((3, 4, 2), None), keepdims=True, seed=0)
@example(shape_axis=((3, 4, 2), 1), keepdims=False, seed=1)
@example(shape_axis=((3, 4, 2), -1), keepdims=True, seed=2)
@example(shape_axis=((3, 4, 2), (0, -1)), keepdims=False, seed=3)
@example(shape_axis=((3, 1, 2), (-2, 0)), keepdims=True, seed=4)
@example(shape_axis=((), None), keepdims=False, seed=5)
def test_grad_reduction(op, shape_axis, keepdims, seed):
    shape, axis = shape_axis
    f, ref, values = REDUCTIONS[op]
    a = values(seed, shape)
    x = leaf(a)
    assert_forward(f(x, axis=axis, keepdims=keepdims), ref(a, axis=axis, keepdims=keepdims))
    # the methods take the same arguments
    assert_forward(getattr(x, op)(axis, keepdims), ref(a, axis=axis, keepdims=keepdims))
    check(lambda x: f(x, axis=axis, keepdims=keepdims), x)


# ---------------------------------------------------------------------------------------------
# max and min: ties share the gradient; argmax and argmin
# ---------------------------------------------------------------------------------------------
def test_max_shares_the_gradient_between_ties():
    # The documented subgradient: tied maxima split g equally (derived by hand, not from output).
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    F.max(x, axis=1).backward(np.array([6.0, 5.0]))
    np.testing.assert_array_equal(x.grad, [[0.0, 3.0, 3.0], [5.0, 0.0, 0.0]])


@covers("min")
@settings(max_examples=N_EXAMPLES)
@given(shape_axis=shape_and_axis(), keepdims=st.booleans(), seed=SEEDS)
@example(shape_axis=((3, 4, 2), None), keepdims=False, seed=0)
@example(shape_axis=((3, 1, 2), (-2, 0)), keepdims=True, seed=1)
@example(shape_axis=((), None), keepdims=False, seed=2)
def test_grad_min(shape_axis, keepdims, seed):
    shape, axis = shape_axis
    a = distinct(seed, shape)
    x = leaf(a)
    assert_forward(F.min(x, axis=axis, keepdims=keepdims), np.min(a, axis=axis, keepdims=keepdims))
    assert_forward(x.min(axis, keepdims), np.min(a, axis=axis, keepdims=keepdims))
    check(lambda x: F.min(x, axis=axis, keepdims=keepdims), x)


def test_min_shares_the_gradient_between_ties_like_torch_amin():
    torch = torch_or_skip()
    a = np.array([[1.0, -3.0, -3.0], [2.0, 0.0, 5.0]])
    for axis in (1, None):
        x, t = leaf(a), torch.tensor(a, requires_grad=True)
        out = F.min(x, axis=axis)
        g = normal(1, out.shape)
        out.backward(g)
        ref = torch.amin(t, dim=axis if axis is not None else (0, 1))
        ref.backward(torch.tensor(g))
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-15)
    # by hand, axis 1: row 0's two -3s get g/2 each
    x = leaf(a)
    F.min(x, axis=1).backward(np.array([6.0, 5.0]))
    np.testing.assert_array_equal(x.grad, [[0.0, 3.0, 3.0], [0.0, 5.0, 0.0]])


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@settings(max_examples=N_EXAMPLES)
@given(shape=AXIS_SHAPES, data=st.data(), keepdims=st.booleans(), seed=SEEDS)
@example(shape=(3, 4), data=None, keepdims=True, seed=0)
def test_argmax_argmin_give_int64_indices_like_numpy(op, shape, data, keepdims, seed):
    f, ref = getattr(F, op), getattr(np, op)
    axis = None if data is None else data.draw(st.one_of(st.none(),
                                                         st.integers(-len(shape), len(shape) - 1)))
    a = np.round(normal(seed, shape))                      # rounded: ties, the first one wins
    x = leaf(a)
    for out in (f(x, axis, keepdims), getattr(x, op)(axis=axis, keepdims=keepdims)):
        assert out.dtype == np.int64 and not out.requires_grad
        expected = ref(a, axis=axis, keepdims=keepdims)
        assert out.shape == np.shape(expected)
        np.testing.assert_array_equal(out.data, expected)


def test_argmax_errors_and_a_0d_tensor():
    assert F.argmax(leaf(3.0)).item() == 0 and F.argmax(leaf(3.0), 0).item() == 0
    with pytest.raises(ValueError, match="argmax: axis 2 is out of range for a tensor with 2"):
        F.argmax(leaf(np.ones((2, 3))), 2)
    with pytest.raises(ValueError, match="argmin: the tensor of shape \\(0,\\) is empty"):
        F.argmin(leaf(np.ones(0)))


# ---------------------------------------------------------------------------------------------
# var and std: the correction, and empty or too-short axes
# ---------------------------------------------------------------------------------------------
@st.composite
def shape_and_axes(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, min_size=1, max_size=ndim))
    return shape, tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@covers("var")
@settings(max_examples=N_TORCH_EXAMPLES * 2)
@given(shape_axis=shape_and_axes(), correction=st.sampled_from([0, 1, 2]), keepdims=st.booleans(),
       seed=SEEDS)
@example(shape_axis=((3, 4), (1,)), correction=1, keepdims=False, seed=0)
def test_var_with_correction_matches_torch(shape_axis, correction, keepdims, seed):
    shape, axis = shape_axis
    n = math.prod(shape[a] for a in axis)
    a = normal(seed, shape)
    fn = lambda x: F.var(x, axis, keepdims, correction=correction)  # noqa: E731
    if n <= correction:        # NaN or inf, as PyTorch; the gradient must not raise either
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.var(a, axis=axis, ddof=correction, keepdims=keepdims)
        np.testing.assert_array_equal(fn(leaf(a)).data, expected)
        return
    assert_same(fn, lambda x: torch.var(x, dim=axis, correction=correction, keepdim=keepdims),
                [a], seed)
    check(fn, leaf(a))


def test_var_default_is_the_population_variance():
    a = normal(0, (5, 3))
    np.testing.assert_allclose(F.var(leaf(a), 0).data, np.var(a, axis=0), rtol=1e-12)
    np.testing.assert_allclose(leaf(a).var(0, correction=1).data, np.var(a, axis=0, ddof=1),
                               rtol=1e-12)


def test_var_over_an_empty_axis_is_nan_and_backward_runs():
    x = leaf(np.zeros((3, 0)))
    out = F.var(x, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.var(np.zeros((3, 0)), axis=1)
    np.testing.assert_array_equal(np.isnan(out.data), np.isnan(expected))
    assert np.isnan(out.data).all()
    out.backward(np.ones(3))
    assert x.grad.shape == (3, 0)


def test_var_with_one_element_and_correction_1_is_nan_like_pytorch():
    x = leaf([[1.5], [2.0]])
    out = F.var(x, axis=1, correction=1)
    assert np.isnan(out.data).all()
    out.backward(np.ones(2))
    assert x.grad.shape == (2, 1)


def test_mean_over_an_empty_axis_is_nan():
    x = leaf(np.zeros((2, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # NumPy's "Mean of empty slice"
        out = F.mean(x, axis=1)
    assert np.isnan(out.data).all()
    out.backward(np.ones(2))
    assert x.grad.shape == (2, 0)


@covers("std")
@pytest.mark.parametrize("correction", [0, 1])
@settings(max_examples=N_EXAMPLES)
@given(shape_axis=shape_and_axis(), keepdims=st.booleans(), seed=SEEDS)
@example(shape_axis=((3, 4, 2), None), keepdims=False, seed=0)
@example(shape_axis=((3, 4, 2), (0, -1)), keepdims=True, seed=1)
@example(shape_axis=((5,), 0), keepdims=False, seed=2)
def test_grad_std(correction, shape_axis, keepdims, seed):
    shape, axis = shape_axis
    axes = range(len(shape)) if axis is None else [axis] if isinstance(axis, int) else axis
    n = math.prod(shape[i] for i in axes)
    assume(n >= 2)                                  # one value: std 0, where √ has no derivative
    a = normal(seed, shape)
    x = leaf(a)
    expected = np.std(a, axis=axis, ddof=correction, keepdims=keepdims)
    assert_forward(F.std(x, axis=axis, correction=correction, keepdims=keepdims), expected)
    assert_forward(x.std(axis, keepdims, correction=correction), expected)
    assert_forward(x.var(axis, keepdims, correction=correction), expected ** 2, rtol=1e-9)
    check(lambda x: F.std(x, axis=axis, correction=correction, keepdims=keepdims), x)


def test_std_matches_torch_and_its_default_is_the_population_std():
    torch = torch_or_skip()
    a = normal(5, (3, 4, 5))
    t = torch.tensor(a)
    for axis, correction in ((None, 0), (None, 1), (1, 1), ((0, 2), 0), (-1, 1)):
        out = F.std(leaf(a), axis=axis, correction=correction, keepdims=True)
        ref = torch.std(t, dim=axis, correction=correction, keepdim=True).numpy()
        np.testing.assert_allclose(out.data, ref, rtol=1e-13)
    # the default differs from PyTorch's (which is correction=1): here it is 0, like np.std and var
    np.testing.assert_allclose(F.std(leaf(a)).data, np.std(a), rtol=1e-14)
    np.testing.assert_allclose(F.std(leaf(a)).data ** 2, F.var(leaf(a)).data, rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# logsumexp
# ---------------------------------------------------------------------------------------------
def logsumexp_reference(a, axis, keepdims):
    return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))


@covers("logsumexp")
@settings(max_examples=N_EXAMPLES)
@given(shape_axis=shape_and_axis(), keepdims=st.booleans(), seed=SEEDS)
@example(shape_axis=((3, 4, 2), None), keepdims=False, seed=0)
@example(shape_axis=((3, 4, 2), -1), keepdims=True, seed=1)
@example(shape_axis=((), None), keepdims=False, seed=2)
def test_grad_logsumexp(shape_axis, keepdims, seed):
    shape, axis = shape_axis
    a = normal(seed, shape, 3.0)
    x = leaf(a)
    assert_forward(F.logsumexp(x, axis=axis, keepdims=keepdims),
                   logsumexp_reference(a, axis, keepdims))
    assert_forward(x.logsumexp(axis, keepdims), logsumexp_reference(a, axis, keepdims))
    check(lambda x: F.logsumexp(x, axis=axis, keepdims=keepdims), x)


def test_logsumexp_is_stable_like_torch():
    torch = torch_or_skip()
    a = np.array([[1000.0, 999.0, -5.0], [-1000.0, -1001.0, -1002.0], [-np.inf, -np.inf, -np.inf]])
    x = leaf(a)
    out = F.logsumexp(x, axis=1)
    ref = torch.logsumexp(torch.tensor(a), dim=1).numpy()
    np.testing.assert_allclose(out.data, ref, rtol=1e-14)
    assert out.data[2] == -np.inf
    np.testing.assert_allclose(out.data[0], 1000.0 + np.log1p(np.exp(-1.0) + np.exp(-1005.0)))
    x = leaf(a[:2])
    F.logsumexp(x, axis=1).backward(np.ones(2))             # the gradient is a softmax per row
    np.testing.assert_allclose(x.grad.sum(axis=1), [1.0, 1.0], rtol=1e-12)   # (|out| ~ 1000)


# ---------------------------------------------------------------------------------------------
# prod (zeros included) and cumsum
# ---------------------------------------------------------------------------------------------
def with_zeros(seed, shape, zeros):
    """Normal values with `zeros` entries set to exactly 0 (where prod's g · out / x is 0/0)."""
    a = normal(seed, shape)
    flat = a.reshape(-1)
    flat[np.random.default_rng(seed + 1).permutation(flat.size)[:zeros]] = 0.0
    return a


def torch_prod(t, axis, keepdims):
    """torch.prod takes one dim at a time: reduce the axes one by one, the last first."""
    if axis is None:
        return t.prod().reshape((1,) * t.ndim) if keepdims else t.prod()
    for d in sorted((a % t.ndim for a in ((axis,) if isinstance(axis, int) else axis)),
                    reverse=True):
        t = t.prod(d, keepdim=keepdims)
    return t


@covers("prod")
@settings(max_examples=N_EXAMPLES)
@given(shape_axis=shape_and_axis(), keepdims=st.booleans(), zeros=st.integers(0, 3), seed=SEEDS)
@example(shape_axis=((3, 4), 1), keepdims=False, zeros=1, seed=0)     # one zero in a row
@example(shape_axis=((2, 4), None), keepdims=True, zeros=2, seed=1)   # two zeros: all 0
@example(shape_axis=((3, 1, 2), (-2, 0)), keepdims=False, zeros=0, seed=2)
@example(shape_axis=((), None), keepdims=False, zeros=1, seed=3)
def test_grad_prod(shape_axis, keepdims, zeros, seed):
    shape, axis = shape_axis
    a = with_zeros(seed, shape, zeros)
    x = leaf(a)
    assert_forward(F.prod(x, axis=axis, keepdims=keepdims), np.prod(a, axis=axis, keepdims=keepdims))
    assert_forward(x.prod(axis, keepdims), np.prod(a, axis=axis, keepdims=keepdims))
    # prod is a polynomial: smooth at its zeros too, so central differences check them as well
    check(lambda x: F.prod(x, axis=axis, keepdims=keepdims), x)
    if axis != ():
        assert_same(lambda x: F.prod(x, axis=axis, keepdims=keepdims),
                    lambda t: torch_prod(t, axis, keepdims), [a], seed, rtol=1e-12, atol=1e-14)


def test_prod_gradient_at_zeros_by_hand():
    x = leaf([[2.0, 0.0, 3.0], [0.0, 0.0, 5.0], [1.0, 2.0, 4.0]])
    F.prod(x, axis=1).backward(np.array([1.0, 1.0, 1.0]))
    # one zero: it gets the product of the others, the rest 0; two zeros: all 0; none: out / x
    np.testing.assert_array_equal(x.grad, [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [8.0, 4.0, 2.0]])


@covers("cumsum")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, data=st.data(), seed=SEEDS)
@example(shape=(), data=None, seed=0)
@example(shape=(3, 4), data=None, seed=1)
def test_grad_cumsum(shape, data, seed):
    n = max(len(shape), 1)
    axis = data.draw(st.integers(-n, n - 1)) if data is not None else -1
    a = normal(seed, shape)
    x = leaf(a)
    expected = np.cumsum(a.reshape(shape or (1,)), axis=axis).reshape(shape)
    assert_forward(F.cumsum(x, axis), expected, rtol=1e-13, atol=1e-14)
    assert_forward(x.cumsum(axis), expected, rtol=1e-13, atol=1e-14)
    check(lambda x: F.cumsum(x, axis), x)
    assert_same(lambda x: F.cumsum(x, axis), lambda t: torch.cumsum(t, axis), [a], seed,
                rtol=1e-13, atol=1e-14)


def test_cumsum_and_prod_name_bad_axes():
    x = leaf(normal(0, (2, 3)))
    with pytest.raises(ValueError, match=r"cumsum: axis 2 is out of range .* shape \(2, 3\)"):
        F.cumsum(x, 2)
    with pytest.raises(TypeError, match="cumsum: axis must be an int"):
        F.cumsum(x, (0, 1))
    with pytest.raises(ValueError, match=r"prod: axis -3 is out of range .* shape \(2, 3\)"):
        x.prod(-3)
