"""Shape and indexing ops: they move numbers around, so backward moves the gradient back.
Forward against NumPy (exactly: rtol = atol = 0) and PyTorch where the meaning could differ
(expand's -1, repeat = np.tile, gather, pad's order, squeeze of an axis that is not 1),
backward by gradcheck. Indexing of every form is also checked against an independent oracle:
the forward is NumPy's (with PyTorch's rule for ints beside arrays, see `torch_rule`), the
backward is np.add.at of the upstream gradient (so a repeated index adds up)."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from ops_helpers import (AXIS_SHAPES, N_EXAMPLES, SEEDS, SHAPES, assert_forward, assert_same,
                         check, covers, leaf, normal, torch_or_skip)


# ---------------------------------------------------------------------------------------------
# reshape, transpose, permute, expand, repeat
# ---------------------------------------------------------------------------------------------
@st.composite
def reshape_case(draw):
    """A shape and another arrangement of the same elements (shuffled factors, extra 1s, a -1)."""
    shape = draw(SHAPES)
    dims = list(draw(st.permutations([d for d in shape if d != 1])))
    for _ in range(draw(st.integers(0, 2))):
        dims.insert(draw(st.integers(0, len(dims))), 1)
    if dims and draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return shape, tuple(dims)


@covers("reshape")
@settings(max_examples=N_EXAMPLES)
@given(case=reshape_case(), seed=SEEDS)
@example(case=((2, 3, 4), (-1,)), seed=0)
@example(case=((2, 3, 4), (4, 1, 6)), seed=1)
@example(case=((6,), (1, 2, 1, 3)), seed=2)
@example(case=((), (1, 1)), seed=3)
def test_grad_reshape(case, seed):
    shape, new_shape = case
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(F.reshape(x, new_shape), a.reshape(new_shape), rtol=0, atol=0)
    assert_forward(x.reshape(*new_shape), a.reshape(new_shape), rtol=0, atol=0)
    check(lambda x: F.reshape(x, new_shape), x)


@covers("transpose")
@settings(max_examples=N_EXAMPLES)
@given(shape=AXIS_SHAPES, data=st.data(), seed=SEEDS)
def test_grad_transpose(shape, data, seed):
    ndim = len(shape)
    a = normal(seed, shape)
    x = leaf(a)
    # no axes: reverse them all (.T)
    assert_forward(x.T, a.T, rtol=0, atol=0)
    check(lambda x: F.transpose(x), x)
    # two axes (possibly negative): swap them
    i, j = data.draw(st.integers(-ndim, ndim - 1)), data.draw(st.integers(-ndim, ndim - 1))
    assert_forward(F.transpose(x, i, j), np.swapaxes(a, i, j), rtol=0, atol=0)
    check(lambda x: F.transpose(x, i, j), x)


@covers("permute")
@settings(max_examples=N_EXAMPLES)
@given(shape=AXIS_SHAPES, data=st.data(), seed=SEEDS)
def test_grad_permute(shape, data, seed):
    ndim = len(shape)
    order = data.draw(st.permutations(range(ndim)))
    order = tuple(o - ndim if data.draw(st.booleans()) else o for o in order)  # some negative
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(F.permute(x, order), np.transpose(a, order), rtol=0, atol=0)
    assert_forward(x.permute(*order), np.transpose(a, order), rtol=0, atol=0)
    check(lambda x: F.permute(x, order), x)


# ---------------------------------------------------------------------------------------------
# flip, squeeze, unsqueeze, flatten
# ---------------------------------------------------------------------------------------------
@st.composite
def shape_and_axes(draw, shapes=AXIS_SHAPES):
    """A shape and some of its axes (unique, some negative), as an int or a tuple."""
    shape = draw(shapes)
    ndim = len(shape)
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)) if ndim else []
    axes = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
    return shape, axes[0] if len(axes) == 1 and draw(st.booleans()) else axes


@covers("flip")
@settings(max_examples=N_EXAMPLES)
@given(case=shape_and_axes(), seed=SEEDS)
@example(case=((2, 3, 4), (0, -1)), seed=0)
@example(case=((5,), 0), seed=1)
def test_grad_flip(case, seed):
    shape, axes = case
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(F.flip(x, axes), np.flip(a, axes), rtol=0, atol=0)
    spread = axes if isinstance(axes, tuple) else (axes,)
    assert_forward(x.flip(*spread), np.flip(a, axes), rtol=0, atol=0)   # x.flip(0, 1) as torch
    check(lambda x: F.flip(x, axes), x)
    assert_same(lambda x: F.flip(x, axes), lambda t: t.flip(spread), [a], seed, rtol=0, atol=0)


@covers("squeeze")
@settings(max_examples=N_EXAMPLES)
@given(case=shape_and_axes(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=3)),
       every=st.booleans(), seed=SEEDS)
@example(case=((2, 1, 3, 1), (1, -1)), every=False, seed=0)
@example(case=((2, 1, 3), 0), every=False, seed=1)          # not size 1: a no-op, as torch
@example(case=((1, 1), ()), every=True, seed=2)
@example(case=((), ()), every=False, seed=3)
def test_grad_squeeze(case, every, seed):
    shape, axes = case
    axis = None if every else axes
    a = normal(seed, shape)
    x = leaf(a)
    named = range(len(shape)) if axis is None else [
        d % len(shape) for d in (axis if isinstance(axis, tuple) else (axis,))]
    expected = a.reshape([n for d, n in enumerate(shape) if not (d in named and n == 1)])
    assert_forward(F.squeeze(x, axis), expected, rtol=0, atol=0)
    assert_forward(x.squeeze(axis), expected, rtol=0, atol=0)
    check(lambda x: F.squeeze(x, axis), x)
    assert_same(lambda x: F.squeeze(x, axis),
                lambda t: t.squeeze() if axis is None else t.squeeze(axis), [a], seed,
                rtol=0, atol=0)


@covers("unsqueeze")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, data=st.data(), seed=SEEDS)
@example(shape=(), data=None, seed=0)
def test_grad_unsqueeze(shape, data, seed):
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim - 1, ndim)) if data is not None else 0
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(F.unsqueeze(x, axis), np.expand_dims(a, axis), rtol=0, atol=0)
    assert_forward(x.unsqueeze(axis), np.expand_dims(a, axis), rtol=0, atol=0)
    check(lambda x: F.unsqueeze(x, axis), x)
    assert_same(lambda x: F.unsqueeze(x, axis), lambda t: t.unsqueeze(axis), [a], seed,
                rtol=0, atol=0)


@covers("flatten")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, data=st.data(), seed=SEEDS)
@example(shape=(2, 3, 4), data=None, seed=0)
@example(shape=(), data=None, seed=1)
def test_grad_flatten(shape, data, seed):
    n = max(len(shape), 1)
    if data is None:
        start, end = 0, -1
    else:
        start = data.draw(st.integers(-n, n - 1))
        end = data.draw(st.integers(start % n, n - 1))          # not before start
        end = end - n if data.draw(st.booleans()) else end
    a = normal(seed, shape)
    x = leaf(a)
    dims = shape or (1,)
    s, e = start % n, end % n
    expected = a.reshape(dims[:s] + (int(np.prod(dims[s:e + 1])),) + dims[e + 1:])
    assert_forward(F.flatten(x, start, end), expected, rtol=0, atol=0)
    assert_forward(x.flatten(start, end), expected, rtol=0, atol=0)
    check(lambda x: F.flatten(x, start, end), x)
    assert_same(lambda x: F.flatten(x, start, end), lambda t: t.flatten(start, end), [a], seed,
                rtol=0, atol=0)


def test_squeeze_unsqueeze_flatten_flip_name_bad_axes_and_shapes():
    x = leaf(normal(0, (2, 1, 3)))
    for call, message in [(lambda: x.squeeze(3), r"squeeze: axis 3 .* shape \(2, 1, 3\)"),
                          (lambda: x.squeeze((1, 1)), r"squeeze: .* more than once"),
                          (lambda: x.unsqueeze(4), r"unsqueeze: axis 4 .* shape \(2, 1, 3\)"),
                          (lambda: x.unsqueeze(-5), r"unsqueeze: axis -5 .* -4..3"),
                          (lambda: x.flatten(0, 3), r"flatten: axis 3 .* shape \(2, 1, 3\)"),
                          (lambda: x.flatten(2, 1), r"flatten: start_dim 2 comes after end_dim 1"),
                          (lambda: x.flip(-4), r"flip: axis -4 .* shape \(2, 1, 3\)")]:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="unsqueeze: axis must be an int"):
        x.unsqueeze(1.5)
    assert x.squeeze(0).shape == (2, 1, 3)         # a no-op on an axis that is not 1, as torch


@st.composite
def expand_case(draw):
    """x's shape, and a shape x broadcasts to, with -1 for some of the sizes x keeps."""
    shape = draw(SHAPES)
    other = draw(hnp.broadcastable_shapes(shape, min_dims=len(shape), max_dims=len(shape) + 2,
                                          max_side=4))
    target = list(np.broadcast_shapes(shape, other))
    lead = len(target) - len(shape)
    for i, n in enumerate(shape):
        if draw(st.booleans()) and target[lead + i] == n:
            target[lead + i] = -1
    return shape, tuple(target)


@covers("expand")
@settings(max_examples=N_EXAMPLES)
@given(case=expand_case(), seed=SEEDS)
@example(case=((3, 1), (2, -1, 4)), seed=0)
@example(case=((), (2, 3)), seed=1)
@example(case=((1, 4, 1), (3, 4, 5)), seed=2)
def test_grad_expand(case, seed):
    shape, target = case
    a = normal(seed, shape)
    x = leaf(a)
    full = tuple(a.shape[i - (len(target) - a.ndim)] if s == -1 else s
                 for i, s in enumerate(target))
    expected = np.broadcast_to(a, full)
    assert_forward(F.expand(x, *target), expected, rtol=0, atol=0)
    assert_forward(F.broadcast_to(x, target), expected, rtol=0, atol=0)
    assert_forward(x.expand(target), expected, rtol=0, atol=0)
    check(lambda x: F.expand(x, target), x)


def test_expand_matches_torch_and_refuses_bad_shapes():
    torch = torch_or_skip()
    a = normal(0, (3, 1))
    np.testing.assert_array_equal(F.expand(leaf(a), 2, -1, 4).data,
                                  torch.tensor(a).expand(2, -1, 4).numpy())
    with pytest.raises(ValueError, match="expand: cannot expand shape \\(3, 1\\) to \\(2, 4\\)"):
        F.expand(leaf(a), 2, 4)
    with pytest.raises(ValueError, match="expand: cannot expand shape"):
        F.expand(leaf(a), -1, 3, 1)                 # -1 on a new axis
    with pytest.raises(ValueError, match="expand: cannot expand shape"):
        F.expand(leaf(a), 4)                         # fewer sizes than axes


@st.composite
def repeat_case(draw):
    shape = draw(SHAPES)
    extra = draw(st.integers(0, 2))
    return shape, tuple(draw(st.lists(st.integers(0, 3), min_size=len(shape) + extra,
                                      max_size=len(shape) + extra)))


@covers("repeat")
@settings(max_examples=N_EXAMPLES)
@given(case=repeat_case(), seed=SEEDS)
@example(case=((2, 3), (2, 1)), seed=0)
@example(case=((3,), (2, 1, 2)), seed=1)
@example(case=((2, 1), (0, 3)), seed=2)
def test_grad_repeat(case, seed):
    shape, sizes = case
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(F.repeat(x, *sizes), np.tile(a, sizes), rtol=0, atol=0)
    assert_forward(x.repeat(sizes), np.tile(a, sizes), rtol=0, atol=0)
    check(lambda x: F.repeat(x, sizes), x)


def test_repeat_is_torch_tensor_repeat_not_repeat_interleave():
    torch = torch_or_skip()
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    for sizes in ((2, 3), (1, 2, 1), (3, 1, 2, 2)):
        np.testing.assert_array_equal(F.repeat(leaf(a), *sizes).data,
                                      torch.tensor(a).repeat(*sizes).numpy())
    np.testing.assert_array_equal(F.repeat(leaf([1.0, 2.0]), 2).data, [1.0, 2.0, 1.0, 2.0])
    # each copy sends its gradient back: dx sums the tiles
    x = leaf(a)
    g = np.arange(8.0).reshape(2, 4)
    F.repeat(x, 1, 2).backward(g)
    np.testing.assert_array_equal(x.grad, g[:, :2] + g[:, 2:])
    with pytest.raises(ValueError, match="repeat: needs one non-negative count per axis"):
        F.repeat(x, 2)


# ---------------------------------------------------------------------------------------------
# Indexing: getitem, gather, embedding
# ---------------------------------------------------------------------------------------------
def torch_rule(a, index):
    """PyTorch's reading of a[index], written another way than tensor's: an int (or a 0-d
    integer array) is a basic index, so each int beside an advanced index is applied on its own,
    as a view of its axis, with Ellipsis spelled out; then NumPy applies what is left, which has
    no ints, so NumPy's rule is PyTorch's. Returns (the view of a, the rest of the index): the
    forward is view[rest], the backward np.add.at(view of dx, rest, g)."""
    parts = list(index) if isinstance(index, tuple) else [index]
    def is_int(p):
        return (isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_))) or (
            isinstance(p, np.ndarray) and p.ndim == 0 and p.dtype.kind in "iu")
    def spans(p):           # how many axes of `a` an index part uses up
        if p is None or p is Ellipsis:
            return 0
        if isinstance(p, (slice, int, np.integer)) and not isinstance(p, (bool, np.bool_)):
            return 1
        arr = np.asarray(p)
        return arr.ndim if arr.dtype == bool else 1
    advanced = [p for p in parts if isinstance(p, (np.ndarray, list, tuple, bool, np.bool_))
                and not is_int(p)]
    if not advanced or not any(is_int(p) for p in parts):
        return a, index
    if any(p is Ellipsis for p in parts):
        at = next(i for i, p in enumerate(parts) if p is Ellipsis)
        parts[at:at + 1] = [slice(None)] * (a.ndim - sum(spans(p) for p in parts))
    view, rest, axis = a, [], 0          # axis: where the next part starts in `view`
    for p in parts:
        if is_int(p):
            view = view[(slice(None),) * axis + (int(p),)]
        else:
            rest.append(p)
            axis += spans(p)
    return view, tuple(rest)


def torch_indexed(a, index):
    view, rest = torch_rule(a, index)
    return view[rest]


# getitem on a (4, 3, 5) tensor: every kind of index, and repeated integer arrays (scatter-add)
GETITEM_INDEXES = {
    "int": 2,
    "negative int": -1,
    "two ints": (1, 2),
    "slice": slice(1, None),
    "int after slice": (slice(None), 1),
    "negative step": slice(None, None, -1),
    "negative step 2": (slice(3, 0, -2), slice(None), -1),
    "all ints": (3, 0, 4),
    "None": (None, 1),
    "ellipsis and None": (Ellipsis, None, -1),
    "repeated list": [0, 0, 2],
    "repeated array": np.array([1, 1, 1, 0]),
    "negative array": np.array([-1, 3, -1]),
    "two arrays": (np.array([2, 0, 2]), np.array([1, 1, 1])),
    "arrays around a slice": (np.array([2, 0, 2]), slice(None), np.array([1, 1, 4])),
    "array after slice": (slice(None), [2, 0, 2, 2]),
    "int, None, array": (1, None, [0, 0]),
    "2-D array and negative step": (np.array([[0, 1], [1, 1]]), slice(None, None, -1)),
    "bool mask": np.array([True, False, True, True]),
    "2-D bool mask": normal(5, (4, 3)) > 0,
    "0-d array": np.array(3),
    "ellipsis and array": (Ellipsis, [4, 4, 0]),
    "slice, None, array, step": (slice(None), None, [0, 0], slice(None, None, -2)),
}


@covers("getitem")
@pytest.mark.parametrize("index", GETITEM_INDEXES.values(), ids=GETITEM_INDEXES.keys())
def test_grad_getitem(index):
    a = normal(0, (4, 3, 5))
    x = leaf(a)
    assert_forward(x[index], torch_indexed(a, index), rtol=0, atol=0)
    check(lambda x: x[index], x)


def test_grad_getitem_with_a_tensor_of_indices():
    a = normal(1, (4, 3))
    idx = tensor.Tensor(np.array([3, 3, 0]))
    x = leaf(a)
    assert_forward(x[idx], a[np.array([3, 3, 0])], rtol=0, atol=0)
    check(lambda x: x[idx], x)


@st.composite
def index_case(draw):
    """A shape and a random mix of ints, slices (any step), None and integer arrays (with repeats)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    length = draw(st.integers(1, 4))           # all index arrays have one length, so they broadcast
    parts = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        if draw(st.integers(0, 4)) == 0:
            parts.append(None)
        kind = draw(st.sampled_from(["int", "slice", "array"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            bound = st.none() | st.integers(-n - 1, n + 1)
            parts.append(slice(draw(bound), draw(bound),
                               draw(st.none() | st.sampled_from([1, 2, -1, -2]))))
        else:
            parts.append(np.array(draw(st.lists(st.integers(-n, n - 1),
                                                min_size=length, max_size=length))))
    return shape, tuple(parts)


@covers("getitem")
@settings(max_examples=N_EXAMPLES)
@given(case=index_case(), seed=SEEDS)
def test_grad_getitem_random_index(case, seed):
    shape, index = case
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(x[index], torch_indexed(a, index), rtol=0, atol=0)
    check(lambda x: x[index], x)


def scatter_reference(shape, index, g):
    """The gradient of x[index] for upstream g: each place gets the sum of the g's it fed."""
    dx = np.zeros(shape)
    view, rest = torch_rule(dx, index)         # a view into dx, and the index without ints
    np.add.at(view, rest, g)
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
    np.testing.assert_array_equal(out.data, torch_indexed(a, index))
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
        expected = torch_indexed(a, index)
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


# Where NumPy and PyTorch disagree: an int beside an array that a slice (or None) separates
# from it. NumPy counts the int as advanced too and puts the broadcast axes first; PyTorch
# applies the int as basic indexing, so the array is alone and its axis stays in place.
TORCH_RULE_INDEXES = {
    "int, slice, list, slice": (0, slice(None), [0, 1], slice(None)),   # (3, 2, 5), NumPy (2, 3, 5)
    "slice, int, slice, list": (slice(None), 0, slice(None), [0, 1]),
    "int, ellipsis, list": (0, Ellipsis, [0, 1]),
    "None, int, slice, list": (None, 0, slice(None), [0, 1]),
    "int, slice, two lists": (1, slice(None), [0, 1], [1, 2]),
    "list first (both rules agree)": ([1, 0, 1], slice(None), -1),
    "0-d array, slice, list": (np.array(1), slice(None), [3, 3]),
    "int, mask, slice, list (agree)": (1, np.array([True, False, True]), slice(None), [4, 0]),
}


@pytest.mark.parametrize("index", TORCH_RULE_INDEXES.values(), ids=TORCH_RULE_INDEXES.keys())
def test_getitem_puts_the_axes_where_torch_does(index):
    torch = torch_or_skip()
    a = normal(3, (2, 3, 4, 5))
    t_index = tuple(torch.tensor(p) if isinstance(p, (list, np.ndarray)) else p for p in index)
    x, t = leaf(a), torch.tensor(a, requires_grad=True)
    out, t_out = x[index], t[t_index]
    assert out.shape == tuple(t_out.shape)
    np.testing.assert_array_equal(out.data, t_out.detach().numpy())
    g = normal(4, out.shape)
    out.backward(g)
    t_out.backward(torch.tensor(g))
    np.testing.assert_array_equal(x.grad, t.grad.numpy())
    check(lambda x: x[index], leaf(a))


def test_an_int_is_a_basic_index_as_in_torch():
    # the example: only the list is advanced, so its axis stays where it is
    x = leaf(normal(0, (2, 3, 4, 5)))
    assert x[0, :, [0, 1], :].shape == (3, 2, 5)           # NumPy's rule would give (2, 3, 5)
    np.testing.assert_array_equal(x[0, :, [0, 1], :].data, x.data[0][:, [0, 1], :])


@st.composite
def gather_case(draw):
    """x's shape, an axis, and an index shape no larger than x off the axis (any length on it)."""
    shape = draw(AXIS_SHAPES)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    index_shape = tuple(draw(st.integers(1, 5)) if d == axis % len(shape) else
                        draw(st.integers(1, n)) for d, n in enumerate(shape))
    return shape, axis, index_shape


@covers("gather")
@settings(max_examples=N_EXAMPLES)
@given(case=gather_case(), seed=SEEDS)
@example(case=((3, 4), 1, (3, 6)), seed=0)        # more picks than entries: repeats add up
@example(case=((4, 3, 2), 0, (2, 2, 1)), seed=1)
@example(case=((5,), -1, (3,)), seed=2)
def test_grad_gather(case, seed):
    shape, axis, index_shape = case
    rng = np.random.default_rng(seed)
    index = rng.integers(0, shape[axis], size=index_shape)
    a = normal(seed, shape)
    x = leaf(a)
    # the reference: torch.gather's definition, written out with np.take_along_axis on the part
    # of x that the index covers
    covered = a[tuple(slice(0, n) for n in index_shape[:axis % len(shape)])]
    covered = covered[(slice(None),) * (axis % len(shape) + 1)
                      + tuple(slice(0, n) for n in index_shape[axis % len(shape) + 1:])]
    expected = np.take_along_axis(covered, index, axis=axis)
    assert_forward(F.gather(x, axis, index), expected, rtol=0, atol=0)
    assert_forward(x.gather(axis, tensor.Tensor(index)), expected, rtol=0, atol=0)
    check(lambda x: F.gather(x, axis, index), x)


def test_gather_matches_torch_forward_and_backward():
    torch = torch_or_skip()
    a = normal(1, (3, 4, 2))
    index = np.array([[[3, 3], [0, 1], [3, 0]], [[1, 1], [2, 2], [0, 0]]])   # (2, 3, 2), repeats
    g = normal(2, index.shape)
    x, t = leaf(a), torch.tensor(a, requires_grad=True)
    out = F.gather(x, 1, index)
    ref = torch.gather(t, 1, torch.tensor(index))
    np.testing.assert_array_equal(out.data, ref.detach().numpy())
    out.backward(g)
    ref.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-15)


def test_gather_errors():
    x = leaf(np.ones((3, 4)))
    with pytest.raises(IndexError, match="gather: index values must be in 0..3"):
        F.gather(x, 1, np.array([[4]]))
    with pytest.raises(IndexError, match="gather: index values"):
        F.gather(x, 1, np.array([[-1]]))
    with pytest.raises(TypeError, match="gather: index must hold integers"):
        F.gather(x, 1, np.array([[1.0]]))
    with pytest.raises(ValueError, match="gather: index of shape \\(2,\\) must have as many axes"):
        F.gather(x, 0, np.array([0, 1]))
    with pytest.raises(ValueError, match="larger than the tensor"):
        F.gather(x, 1, np.zeros((4, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="gather: axis 2 is out of range"):
        F.gather(x, 2, np.zeros((1, 1), dtype=np.int64))


@covers("embedding")
@settings(max_examples=N_EXAMPLES)
@given(idx_shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4),
       vocab=st.integers(1, 6), dim=st.integers(1, 4), seed=SEEDS)
@example(idx_shape=(2, 3), vocab=4, dim=3, seed=0)
def test_grad_embedding(idx_shape, vocab, dim, seed):
    idx = np.random.default_rng(seed).integers(0, vocab, size=idx_shape)   # repeats are likely
    table = normal(seed + 1, (vocab, dim))
    w = leaf(table)
    assert_forward(F.embedding(idx, w), table[idx], rtol=0, atol=0)
    assert_forward(F.embedding(tensor.Tensor(idx), w), table[idx], rtol=0, atol=0)
    check(lambda w: F.embedding(idx, w), w)


def test_grad_embedding_with_repeated_indices():
    idx = np.array([[1, 1, 3], [1, 0, 3]])
    check(lambda w: F.embedding(idx, w), leaf(normal(0, (5, 2))))
    w = leaf(normal(0, (5, 2)))
    g = normal(1, (2, 3, 2))
    F.embedding(idx, w).backward(g)
    np.testing.assert_allclose(w.grad[1], g[0, 0] + g[0, 1] + g[1, 0])   # three lookups of row 1
    np.testing.assert_array_equal(w.grad[[2, 4]], 0.0)                   # never looked up


# ---------------------------------------------------------------------------------------------
# Joining and cutting: concatenate, stack, split, pad, tril / triu
# ---------------------------------------------------------------------------------------------
@st.composite
def concat_case(draw):
    shape = list(draw(AXIS_SHAPES))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    shapes = []
    for size in draw(st.lists(st.integers(1, 3), min_size=1, max_size=4)):
        shape[axis] = size
        shapes.append(tuple(shape))
    return shapes, axis


@covers("concatenate")
@settings(max_examples=N_EXAMPLES)
@given(case=concat_case(), seed=SEEDS)
@example(case=([(2, 3), (2, 1), (2, 2)], -1), seed=0)
@example(case=([(1, 2), (3, 2)], 0), seed=1)
def test_grad_concatenate(case, seed):
    shapes, axis = case
    arrays = [normal(seed + i, s) for i, s in enumerate(shapes)]
    xs = [leaf(a) for a in arrays]
    assert_forward(F.concatenate(xs, axis=axis), np.concatenate(arrays, axis=axis), rtol=0, atol=0)
    assert_forward(F.cat(xs, axis=axis), np.concatenate(arrays, axis=axis), rtol=0, atol=0)
    check(lambda *xs: F.concatenate(xs, axis=axis), *xs)


def test_grad_concatenate_with_a_constant_piece():
    a, c = normal(0, (2, 3)), normal(1, (2, 2))
    x = leaf(a)
    check(lambda x: F.concatenate([c, x, tensor.Tensor(c)], axis=1), x)


@covers("stack")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, n=st.integers(1, 4), data=st.data(), seed=SEEDS)
def test_grad_stack(shape, n, data, seed):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    arrays = [normal(seed + i, shape) for i in range(n)]
    xs = [leaf(a) for a in arrays]
    assert_forward(F.stack(xs, axis=axis), np.stack(arrays, axis=axis), rtol=0, atol=0)
    check(lambda *xs: F.stack(xs, axis=axis), *xs)


@st.composite
def split_case(draw):
    """A shape, an axis and sections: a piece count that divides the axis, or a list of sizes."""
    shape = list(draw(AXIS_SHAPES))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    if draw(st.booleans()):
        pieces, size = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        shape[axis] = pieces * size
        sections = pieces
    else:
        sections = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
        shape[axis] = sum(sections)
    return tuple(shape), axis, sections


@covers("split")
@settings(max_examples=N_EXAMPLES)
@given(case=split_case(), seed=SEEDS)
@example(case=((2, 6), -1, 3), seed=0)
@example(case=((2, 6), 1, [1, 2, 3]), seed=1)
@example(case=((5, 2), 0, [5]), seed=2)
def test_grad_split(case, seed):
    shape, axis, sections = case
    a = normal(seed, shape)
    x = leaf(a)
    ends = np.cumsum(sections)[:-1] if isinstance(sections, list) else sections
    expected = np.split(a, ends, axis=axis)
    pieces = F.split(x, sections, axis=axis)
    assert len(pieces) == len(expected)
    for piece, e in zip(pieces, expected):
        assert_forward(piece, e, rtol=0, atol=0)
    # every piece's gradient lands in its own slice: each piece alone, then all of them reordered
    for i in range(len(pieces)):
        check(lambda x: F.split(x, sections, axis=axis)[i], x)
    check(lambda x: F.concatenate(F.split(x, sections, axis=axis)[::-1], axis=axis), x)


def test_split_takes_a_count_like_numpy_not_a_size_like_torch():
    a = normal(0, (2, 6))
    pieces = F.split(leaf(a), 3)                          # 3 pieces of 2 along the last axis
    assert [p.shape for p in pieces] == [(2, 2)] * 3
    assert "torch.split" in F.split.__doc__


@st.composite
def pad_case(draw):
    shape = draw(SHAPES)
    pairs = draw(st.integers(0, len(shape)))
    return shape, tuple(draw(st.lists(st.integers(0, 2), min_size=2 * pairs, max_size=2 * pairs)))


@covers("pad")
@settings(max_examples=N_EXAMPLES)
@given(case=pad_case(), value=st.sampled_from([0.0, -1.5]), seed=SEEDS)
@example(case=((2, 3), (1, 2)), value=0.0, seed=0)
@example(case=((2, 3, 1), (0, 1, 2, 0, 1, 1)), value=-1.5, seed=1)
@example(case=((3,), ()), value=0.0, seed=2)
def test_grad_pad(case, value, seed):
    shape, widths = case
    a = normal(seed, shape)
    x = leaf(a)
    # np.pad's pairs run from the first axis; F.pad's (PyTorch's) from the last
    pairs = [(widths[2 * i], widths[2 * i + 1]) for i in range(len(widths) // 2)]
    np_widths = [(0, 0)] * (a.ndim - len(pairs)) + pairs[::-1]
    expected = np.pad(a, np_widths, constant_values=value) if a.ndim else a
    assert_forward(F.pad(x, widths, value=value), expected, rtol=0, atol=0)
    check(lambda x: F.pad(x, widths, value=value), x)


def test_pad_takes_torch_f_pad_order():
    torch = torch_or_skip()
    a = normal(4, (2, 3, 4))
    for widths in ((1, 2), (0, 1, 2, 0), (1, 0, 0, 2, 1, 1)):
        np.testing.assert_array_equal(
            F.pad(leaf(a), widths, value=7.0).data,
            torch.nn.functional.pad(torch.tensor(a), widths, value=7.0).numpy())
    assert F.pad(leaf(a), (1, 2)).shape == (2, 3, 7)              # the last axis
    assert F.pad(leaf(a), (0, 0, 1, 1)).shape == (2, 5, 4)        # the second-to-last
    for bad in ((1,), (1, -1), (1,) * 8):
        with pytest.raises(ValueError, match="pad: needs \\(left, right\\) pairs"):
            F.pad(leaf(a), bad)
    with pytest.raises(ValueError, match="pad: only mode='constant'"):
        F.pad(leaf(a), (1, 1), mode="reflect")


@covers("tril", "triu")
@pytest.mark.parametrize("op", ["tril", "triu"])
@settings(max_examples=N_EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=5),
       diagonal=st.integers(-3, 3), seed=SEEDS)
@example(shape=(4, 4), diagonal=0, seed=0)
@example(shape=(2, 3, 5), diagonal=-1, seed=1)
@example(shape=(5, 2), diagonal=2, seed=2)
def test_grad_tril_triu(op, shape, diagonal, seed):
    f, ref = getattr(F, op), getattr(np, op)
    a = normal(seed, shape)
    x = leaf(a)
    assert_forward(f(x, diagonal), ref(a, diagonal), rtol=0, atol=0)
    assert_forward(getattr(x, op)(diagonal=diagonal), ref(a, diagonal), rtol=0, atol=0)
    check(lambda x: f(x, diagonal), x)


@pytest.mark.parametrize("op", ["tril", "triu"])
def test_tril_triu_match_torch_and_keep_zeros_next_to_infinities(op):
    torch = torch_or_skip()
    a = normal(3, (2, 3, 4))
    for k in (-2, 0, 1, 5):
        np.testing.assert_array_equal(getattr(F, op)(leaf(a), k).data,
                                      getattr(torch, op)(torch.tensor(a), k).numpy())
    big = np.full((3, 3), -np.inf)                       # a causal mask made with tril
    out = getattr(F, op)(leaf(big)).data
    assert not np.isnan(out).any() and (out == 0).sum() == 3
    with pytest.raises(ValueError, match=f"{op}: needs a tensor with at least 2 axes"):
        getattr(F, op)(leaf([1.0, 2.0]))
