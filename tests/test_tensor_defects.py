"""Defects found off GPT-2's path (issue 11), each pinned by a test against an independent oracle:
out-of-range and repeated axes, indexing of every form (forward = NumPy, backward = np.add.at),
pow at 0, 0-d softmax, matmul with empty axes, var over an empty axis.
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from test_ops_grad import check, leaf, normal

N_EXAMPLES = 25


# ---------------------------------------------------------------------------------------------
# Axes: out of range or repeated -> an error naming the op, the axis and the number of dims
# ---------------------------------------------------------------------------------------------
REDUCING = {
    "sum": lambda x, axis: F.sum(x, axis),
    "mean": lambda x, axis: F.mean(x, axis),
    "max": lambda x, axis: F.max(x, axis),
    "var": lambda x, axis: F.var(x, axis),
    "softmax": lambda x, axis: F.softmax(x, axis),
    "log_softmax": lambda x, axis: F.log_softmax(x, axis),
    "concatenate": lambda x, axis: F.concatenate([x, x], axis),
    "stack": lambda x, axis: F.stack([x, x], axis),
    "split": lambda x, axis: F.split(x, 1, axis),
    "transpose": lambda x, axis: F.transpose(x, 0, axis),
    "permute": lambda x, axis: F.permute(x, (axis, 1, 2, 3) if isinstance(axis, int) else axis),
}


@pytest.mark.parametrize("op", REDUCING)
@pytest.mark.parametrize("axis", [4, 5, -5, -9])
def test_out_of_range_axis_is_refused(op, axis):
    x = leaf(normal(0, (3, 5, 6, 2)))
    if op == "stack":                 # stack makes a 5-D result: axes 4 and -5 are valid there
        axis = {4: 6, -5: -7}.get(axis, axis)
    with pytest.raises(ValueError, match=rf"{op}: axis {axis} is out of range .*dimensions"):
        REDUCING[op](x, axis)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "var"])
@pytest.mark.parametrize("axis", [1, (1,), -2, (0, 1)])
def test_axis_of_a_0d_tensor_is_refused(op, axis):
    x = leaf(np.array(2.0))
    with pytest.raises(ValueError, match=rf"{op}: axis .* out of range .*0 dimensions"):
        REDUCING[op](x, axis)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "var"])
def test_a_0d_tensor_reduces_over_axis_0_or_minus_1_like_pytorch(op):
    # PyTorch lets dim 0 / -1 name the single "axis" of a 0-d tensor; the result is x (var: 0)
    x = leaf(np.array(2.5))
    for axis in (0, -1, (0,), None, ()):
        out = REDUCING[op](x, axis)
        assert out.shape == ()
        assert out.item() == (0.0 if op == "var" else 2.5)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "var"])
@pytest.mark.parametrize("axis", [(0, 0), (1, -2), (2, 0, 2)])
def test_repeated_axes_are_refused(op, axis):
    x = leaf(normal(0, (3, 5, 6)))
    with pytest.raises(ValueError, match=rf"{op}: axis .* repeated"):
        REDUCING[op](x, axis)


def test_permute_names_a_repeated_axis():
    with pytest.raises(ValueError, match="permute"):
        F.permute(leaf(normal(0, (2, 3))), (0, -2))


# ---------------------------------------------------------------------------------------------
# Indexing: forward = NumPy, backward = np.add.at of the upstream gradient
# ---------------------------------------------------------------------------------------------
def scatter_reference(shape, index, g):
    """The gradient of x[index] for upstream g: each place gets the sum of the g's it fed."""
    dx = np.zeros(shape)
    np.add.at(dx, index, g)
    return dx


def test_a_tuple_of_repeated_indices_adds_up():
    x = leaf([1.0, 2.0, 3.0])
    x[(1, 1),].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 0.0])


INDEXES = {
    "tuple inside a tuple": ((1, 1, 0),),
    "tuple and slice": ((3, 3), slice(None, None, -1)),
    "list of lists": [[0, 0], [2, 0]],
    "nested tuple pair": ((0, 0), (1, 1)),
    "bool scalar": True,
    "bool list": [True, False, True, True],
    "ellipsis, tuple": (Ellipsis, (4, 4)),
    "numpy int scalar": np.int64(2),
    "array then None": (np.array([1, 1]), None, slice(None)),
}


@pytest.mark.parametrize("index", INDEXES.values(), ids=INDEXES.keys())
def test_getitem_forward_and_scatter_backward(index):
    a = normal(0, (4, 3, 5))
    x = leaf(a)
    out = x[index]
    np.testing.assert_array_equal(out.data, a[index])
    g = normal(1, out.shape)
    out.backward(g)
    np.testing.assert_allclose(x.grad, scatter_reference(a.shape, index, g), rtol=0, atol=1e-15)


def _index_part(draw, n):
    kind = draw(st.sampled_from(["int", "slice", "array", "list", "tuple", "mask", "none"]))
    if kind == "int":
        return draw(st.integers(-n, n - 1))
    if kind == "slice":
        bound = st.none() | st.integers(-n - 2, n + 2)
        return slice(draw(bound), draw(bound), draw(st.none() | st.sampled_from([1, 2, 3, -1, -2])))
    if kind == "none":
        return None
    if kind == "mask":
        return np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    ids = draw(st.lists(st.integers(-n, n - 1), min_size=2, max_size=2))   # length 2: broadcasts
    return {"array": np.array(ids), "list": ids, "tuple": tuple(ids)}[kind]


@st.composite
def any_index(draw):
    """A shape and an index mixing every form: ints, slices (any step), None, Ellipsis, boolean
    masks, integer arrays / lists / tuples (with repeats), advanced next to basic."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    n_parts = draw(st.integers(1, len(shape)))
    parts = [_index_part(draw, n) for n in shape[:n_parts]]
    masks = [i for i, p in enumerate(parts) if isinstance(p, np.ndarray) and p.dtype == bool]
    for i in masks[1:]:                       # one mask at most: several must match in count
        parts[i] = slice(None)
    if masks:                                  # a mask's count must broadcast with the arrays
        count = int(parts[masks[0]].sum())
        if count not in (1, 2):
            parts[masks[0]] = slice(None)
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), Ellipsis)
    if len(parts) == 1 and not isinstance(parts[0], tuple) and draw(st.booleans()):
        return shape, parts[0]                 # a bare index, not wrapped in a tuple
    return shape, tuple(parts)


@settings(max_examples=150)
@given(case=any_index(), seed=st.integers(0, 2**32 - 1))
def test_getitem_property_forward_numpy_backward_add_at(case, seed):
    shape, index = case
    a = normal(seed, shape)
    try:
        expected = a[index]
    except IndexError:
        with pytest.raises(IndexError, match="getitem"):
            leaf(a)[index]
        return
    x = leaf(a)
    out = x[index]
    np.testing.assert_array_equal(out.data, expected)
    g = normal(seed + 1, out.shape)
    out.backward(g)
    np.testing.assert_allclose(x.grad, scatter_reference(shape, index, g), rtol=0, atol=1e-14)
    if seed % 4 == 0:                          # a float64 gradcheck on some of them
        check(lambda x: x[index], leaf(a))


# ---------------------------------------------------------------------------------------------
# pow, softmax, matmul, var at their edges
# ---------------------------------------------------------------------------------------------
def test_pow_zero_at_zero_has_zero_gradient():
    x = leaf([0.0, 2.0, -1.5])
    (x ** 0).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_of_a_0d_tensor(op, fused):
    # PyTorch: softmax of a single number is 1 (log_softmax: 0), with gradient 0
    x = leaf(np.array(3.0))
    with tensor.fused(fused):
        out = getattr(F, op)(x)
        assert out.shape == ()
        assert out.item() == (1.0 if op == "softmax" else 0.0)
        out.backward(np.array(2.0))
    assert x.grad == 0.0


@pytest.mark.parametrize("xs, ws", [((2, 0), (0, 3)), ((4, 2, 0), (0, 5)), ((2, 3, 0), (2, 0, 4)),
                                    ((0,), (0,)), ((0,), (0, 3))])
def test_matmul_with_an_empty_inner_axis_gives_zeros(xs, ws):
    x, w = leaf(np.ones(xs)), leaf(np.ones(ws))
    out = F.matmul(x, w)
    expected = np.matmul(np.ones(xs), np.ones(ws))
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out.data, 0.0)
    out.backward(normal(0, out.shape))
    assert x.grad.shape == xs and w.grad.shape == ws


@pytest.mark.parametrize("xs, ws", [((2, 3), (3, 0)), ((0, 3), (3, 4)), ((2, 0, 3), (3, 4)),
                                    ((0, 2, 3), (0, 3, 4)), ((2, 3), (2, 3, 0))])
def test_matmul_with_an_empty_outer_axis_is_empty(xs, ws):
    a, b = normal(0, xs), normal(1, ws)
    x, w = leaf(a), leaf(b)
    out = F.matmul(x, w)
    assert out.shape == np.matmul(a, b).shape and out.size == 0
    out.backward(np.zeros(out.shape))
    np.testing.assert_array_equal(x.grad, np.zeros(xs))
    np.testing.assert_array_equal(w.grad, np.zeros(ws))


@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_empty_axes(bias):
    for xs, (k, n) in (((2, 0), (0, 3)), ((0, 4), (4, 3)), ((2, 4), (4, 0))):
        x, w = leaf(normal(0, xs)), leaf(normal(1, (k, n)))
        b = leaf(normal(2, n)) if bias else None
        out = F.linear(x, w, b)
        expected = normal(0, xs) @ normal(1, (k, n)) + (normal(2, n) if bias else 0)
        np.testing.assert_allclose(out.data, expected)
        out.backward(normal(3, out.shape))
        assert x.grad.shape == xs and w.grad.shape == (k, n)


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
