"""Every op in `tensor.OPS`: forward against plain NumPy, backward against finite differences.

Each test draws shapes (with size-1 axes, scalars and broadcasting pairs) and float64 values with
Hypothesis, compares the op's output with a NumPy reference, then runs `tensor.gradcheck`: central
differences in float64 with a *random* upstream gradient, so a backward that is only right for
`g = 1` (the blind spot of `.sum().backward()` tests, e.g. softmax) is caught.

Values are kept away from kinks and ties: relu |x| > 1e-3, max over distinct values, log / sqrt /
div denominators positive and away from 0, pow of a positive base for non-integer exponents.

`@covers("op")` registers a test as the gradient test of that op, and
`test_every_op_has_a_gradient_test` fails if an op is added to `tensor.OPS` without one.
"""
import importlib
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from tensor import gradcheck

N_EXAMPLES = 25
SEEDS = st.integers(0, 2**32 - 1)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)
AXIS_SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)
PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                          max_side=4).map(lambda b: b.input_shapes)


# ---------------------------------------------------------------------------------------------
# The registry behind the guard test
# ---------------------------------------------------------------------------------------------
COVERED: dict[str, list[str]] = {}


def covers(*ops):
    """Mark a test as the gradient test of `ops` (read by test_every_op_has_a_gradient_test and
    by tests/test_docs.py, which checks the op table in docs/backprop.md against it). The
    registry holds "module::test" names, e.g. "test_ops_grad::test_grad_unary"."""
    def register(test):
        for op in ops:
            COVERED.setdefault(op, []).append(f"{test.__module__}::{test.__name__}")
        return test
    return register


def uncovered(ops) -> list:
    return [op for op in ops if op not in COVERED]


# The other modules with gradient tests: importing them runs their @covers, so the guard sees
# them when this file runs alone too.
GRADIENT_TEST_MODULES = ("test_ops_more", "test_ops_losses", "test_tensor_defects")


def registry() -> dict:
    """COVERED, complete: {op: ["module::test", ...]} over this file and GRADIENT_TEST_MODULES."""
    for name in GRADIENT_TEST_MODULES:
        importlib.import_module(name)
    return COVERED


def test_every_op_has_a_gradient_test():
    registry()
    assert not uncovered(tensor.OPS), (
        f"ops in tensor.OPS without a gradient test in {__name__} or "
        f"{', '.join(GRADIENT_TEST_MODULES)}: {uncovered(tensor.OPS)}; "
        f"add a test decorated with @covers(<op>)")
    unknown = sorted(set(COVERED) - set(tensor.OPS))
    assert not unknown, f"@covers names ops that are not in tensor.OPS: {unknown}"
    not_exported = [op for op in tensor.OPS if not callable(getattr(tensor, op, None))]
    assert not not_exported, f"ops in tensor.OPS that `tensor` does not export: {not_exported}"
    for op in tensor.OPS:
        assert getattr(tensor, op) is getattr(F, op), f"tensor.{op} is not tensor.functional.{op}"


def test_the_guard_notices_an_op_without_a_test():
    registry()                      # (skipped, like the guard, where a module needs torch)
    assert uncovered(tuple(tensor.OPS) + ("frobnicate",)) == ["frobnicate"]


# ---------------------------------------------------------------------------------------------
# Helpers: inputs, values away from kinks, the two checks
# ---------------------------------------------------------------------------------------------
def leaf(a) -> tensor.Tensor:
    return tensor.Tensor(np.array(a, dtype=np.float64), requires_grad=True)


def normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(seed, shape, margin=1e-3):
    """|x| > margin: no input sits on a kink at 0 (relu), nor makes 1/x blow up."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * (margin + np.abs(rng.standard_normal(shape)))


def positive(seed, shape, low=0.3, high=3.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def distinct(seed, shape):
    """Values at least ~0.1 apart (a shuffled ramp plus tiny noise): max has no ties."""
    rng = np.random.default_rng(seed)
    size = math.prod(shape)
    ramp = rng.permutation(size).reshape(shape) - (size - 1) / 2
    return 0.1 * ramp + rng.uniform(-1e-3, 1e-3, size=shape)


def assert_forward(out, expected, rtol=1e-10, atol=1e-12):
    """The op's output matches the NumPy reference in value, shape and dtype (float64)."""
    expected = np.asarray(expected)
    assert isinstance(out, tensor.Tensor)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    assert out.dtype == np.float64, out.dtype
    np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=atol)


def check(fn, *inputs, **kwargs):
    assert gradcheck(fn, *inputs, **kwargs)


# ---------------------------------------------------------------------------------------------
# Elementwise arithmetic, with broadcasting
# ---------------------------------------------------------------------------------------------
BINARY = {"add": (F.add, np.add), "sub": (F.sub, np.subtract),
          "mul": (F.mul, np.multiply), "div": (F.div, np.divide)}


@covers("add", "sub", "mul", "div")
@pytest.mark.parametrize("op", BINARY)
@settings(max_examples=N_EXAMPLES)
@given(shapes=PAIRS, seed=SEEDS)
@example(shapes=((3, 1, 4), (5, 4)), seed=0)
@example(shapes=((), (2, 3)), seed=1)
@example(shapes=((2, 3), ()), seed=2)
@example(shapes=((4,), (3, 1)), seed=3)
@example(shapes=((2, 1, 1), (1, 3, 1)), seed=4)
def test_grad_binary(op, shapes, seed):
    f, ref = BINARY[op]
    a = normal(seed, shapes[0])
    b = positive(seed + 1, shapes[1]) if op == "div" else normal(seed + 1, shapes[1])
    x, y = leaf(a), leaf(b)
    assert_forward(f(x, y), ref(a, b))
    check(f, x, y)


@covers("add", "sub", "mul", "div")
@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("constant", [2.5, np.array([0.5, 1.5, 2.0]), np.array([[3.0], [0.7]])],
                         ids=["number", "array", "column"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_grad_binary_with_a_constant(op, constant, side):
    f, ref = BINARY[op]
    a = positive(7, (2, 3))                     # positive: also a safe denominator for c / x
    x = leaf(a)
    fn = (lambda x: f(constant, x)) if side == "left" else (lambda x: f(x, constant))
    expected = ref(constant, a) if side == "left" else ref(a, constant)
    assert_forward(fn(x), expected)
    check(fn, x)


# ---------------------------------------------------------------------------------------------
# Elementwise functions
# ---------------------------------------------------------------------------------------------
def gelu_reference(a):
    # GPT-2's tanh approximation of x·Φ(x)
    return 0.5 * a * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (a + 0.044715 * a**3)))


UNARY = {
    "neg": (F.neg, np.negative, normal),
    "exp": (F.exp, np.exp, normal),
    "log": (F.log, np.log, positive),
    "sqrt": (F.sqrt, np.sqrt, positive),
    "tanh": (F.tanh, np.tanh, lambda seed, shape: normal(seed, shape, 1.5)),
    "relu": (F.relu, lambda a: np.maximum(a, 0.0), away_from_zero),
    "gelu": (F.gelu, gelu_reference, lambda seed, shape: normal(seed, shape, 2.0)),
}


@covers(*UNARY)
@pytest.mark.parametrize("op", UNARY)
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, seed=SEEDS)
@example(shape=(), seed=0)
@example(shape=(1, 5, 1), seed=1)
def test_grad_unary(op, shape, seed):
    f, ref, values = UNARY[op]
    a = values(seed, shape)
    x = leaf(a)
    assert_forward(f(x), ref(a))
    check(f, x)


def test_gelu_is_close_to_the_exact_erf_form():
    # An independent oracle for the forward: the tanh form is within ~1e-3 of x·Φ(x).
    a = np.linspace(-5, 5, 101)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in a])
    np.testing.assert_allclose(F.gelu(leaf(a)).data, exact, atol=2e-3)


EXPONENTS = st.one_of(st.integers(-3, 4),
                      st.floats(-2.5, 3.5, allow_nan=False).filter(lambda p: p != int(p)))


@covers("pow")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, p=EXPONENTS, seed=SEEDS)
@example(shape=(3,), p=0.5, seed=0)
@example(shape=(2, 2), p=-2, seed=1)
@example(shape=(), p=3, seed=2)
@example(shape=(4,), p=0, seed=3)
def test_grad_pow(shape, p, seed):
    # a positive base for non-integer exponents; any sign (away from 0) for integer ones
    a = away_from_zero(seed, shape, margin=0.2) if isinstance(p, int) else positive(seed, shape)
    x = leaf(a)
    assert_forward(F.pow(x, p), np.power(a, p))
    assert_forward(x ** p, np.power(a, p))
    check(lambda x: x ** p, x)


@covers("cast")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, seed=SEEDS)
def test_grad_cast(shape, seed):
    a = normal(seed, shape)
    # float64 -> float64 is the identity
    check(lambda x: F.cast(x, np.float64), leaf(a))
    # float32 -> float64: exact values, and the float64 gradient arrives as float32
    x32 = tensor.Tensor(a.astype(np.float32), requires_grad=True)
    y = F.cast(x32, np.float64)
    assert_forward(y, a.astype(np.float32).astype(np.float64), rtol=0, atol=0)
    g = normal(seed + 1, shape)
    y.backward(g)
    assert x32.grad.dtype == np.float32
    np.testing.assert_array_equal(x32.grad, g.astype(np.float32))
    # float64 -> float32 -> float64 round trip: the Jacobian is the identity. The step is large
    # (1e-2) because the float32 stage rounds to ~1e-7; the function is linear, so that is exact.
    check(lambda x: F.cast(F.cast(x, np.float32), np.float64), leaf(a), eps=1e-2, atol=1e-4)
    # float64 -> float32: the gradient comes back as float64
    x64 = leaf(a)
    z = F.cast(x64, np.float32)
    assert z.dtype == np.float32
    g32 = g.astype(np.float32)
    z.backward(g32)
    assert x64.grad.dtype == np.float64
    np.testing.assert_array_equal(x64.grad, g32.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# Reductions: axis None / int / negative int / tuple, keepdims both ways
# ---------------------------------------------------------------------------------------------
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


def test_max_shares_the_gradient_between_ties():
    # The documented subgradient: tied maxima split g equally (derived by hand, not from output).
    x = leaf([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    F.max(x, axis=1).backward(np.array([6.0, 5.0]))
    np.testing.assert_array_equal(x.grad, [[0.0, 3.0, 3.0], [5.0, 0.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# Shape ops
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
    assert_forward(x[index], a[index], rtol=0, atol=0)
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
    assert_forward(x[index], a[index], rtol=0, atol=0)
    check(lambda x: x[index], x)


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


@covers("where")
@settings(max_examples=N_EXAMPLES)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=4,
                                                max_side=4).map(lambda b: b.input_shapes),
       seed=SEEDS)
@example(shapes=((3, 1, 4), (5, 4), ()), seed=0)        # the condition broadcasts x and y up
@example(shapes=((4,), (3, 4), (3, 1)), seed=1)
@example(shapes=((), (2, 3), (2, 3)), seed=2)
def test_grad_where(shapes, seed):
    cond = np.asarray(np.random.default_rng(seed).random(shapes[0]) < 0.5)   # (0-d: an array)
    a, b = normal(seed + 1, shapes[1]), normal(seed + 2, shapes[2])
    x, y = leaf(a), leaf(b)
    assert_forward(F.where(cond, x, y), np.where(cond, a, b), rtol=0, atol=0)
    assert_forward(F.where(tensor.Tensor(cond), x, y), np.where(cond, a, b), rtol=0, atol=0)
    check(lambda x, y: F.where(cond, x, y), x, y)
    check(lambda x: F.where(cond, x, 0.5), x)


@st.composite
def masked_fill_case(draw):
    """x's shape and a mask shape that broadcasts to it (a suffix of it, with some axes set to 1)."""
    shape = draw(SHAPES)
    suffix = shape[len(shape) - draw(st.integers(0, len(shape))):]
    mask_shape = tuple(1 if draw(st.booleans()) else n for n in suffix)
    return shape, mask_shape


@covers("masked_fill")
@settings(max_examples=N_EXAMPLES)
@given(case=masked_fill_case(), value=st.sampled_from([-1e9, 0.0, 2.5]), seed=SEEDS)
@example(case=((2, 3, 3), (3, 3)), value=-1e9, seed=0)
@example(case=((2, 3, 4), (2, 1, 4)), value=0.0, seed=1)
@example(case=((3,), ()), value=2.5, seed=2)
def test_grad_masked_fill(case, value, seed):
    shape, mask_shape = case
    mask = np.asarray(np.random.default_rng(seed).random(mask_shape) < 0.5)
    a = normal(seed + 1, shape)
    x = leaf(a)
    assert_forward(F.masked_fill(x, mask, value), np.where(mask, value, a), rtol=0, atol=0)
    assert_forward(F.masked_fill(x, tensor.Tensor(mask), value), np.where(mask, value, a),
                   rtol=0, atol=0)
    check(lambda x: F.masked_fill(x, mask, value), x)


# ---------------------------------------------------------------------------------------------
# Matrix product
# ---------------------------------------------------------------------------------------------
MATMUL_SHAPES = {
    "2-D": ((3, 4), (4, 5)),
    "vector @ matrix": ((4,), (4, 5)),
    "matrix @ vector": ((3, 4), (4,)),
    "batched, broadcast batch": ((2, 1, 3, 4), (5, 4, 6)),
    "linear (B,T,K) @ (K,N)": ((2, 3, 4), (4, 5)),
    "vector @ batch": ((4,), (2, 4, 5)),
    "batch @ vector": ((2, 3, 4), (4,)),
    "matrix @ batch": ((3, 4), (2, 4, 5)),
    "batch @ batch": ((2, 3, 4), (2, 4, 5)),
    "1x1": ((1, 1), (1, 1)),
    "outer (K=1)": ((3, 1), (1, 4)),
}


@covers("matmul")
@pytest.mark.parametrize("shapes", MATMUL_SHAPES.values(), ids=MATMUL_SHAPES.keys())
def test_grad_matmul(shapes):
    a, b = normal(0, shapes[0]), normal(1, shapes[1])
    x, w = leaf(a), leaf(b)
    assert_forward(x @ w, np.matmul(a, b))
    assert_forward(F.matmul(x, w), np.matmul(a, b))
    check(F.matmul, x, w)


@covers("matmul")
@pytest.mark.parametrize("k", [1, 4])
def test_grad_matmul_vector_vector(k):
    # (K,) @ (K,) is the dot product, a 0-d result (NumPy's rule)
    a, b = normal(0, (k,)), normal(1, (k,))
    x, w = leaf(a), leaf(b)
    assert_forward(x @ w, np.matmul(a, b))
    check(F.matmul, x, w)


@st.composite
def matmul_case(draw):
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    bx, bw = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2,
                                                    max_side=3)).input_shapes
    left_vector = draw(st.booleans())
    right_vector = not left_vector and draw(st.booleans())   # vector @ vector: its own test
    return ((k,) if left_vector else bx + (m, k)), ((k,) if right_vector else bw + (k, n))


@covers("matmul")
@settings(max_examples=N_EXAMPLES)
@given(shapes=matmul_case(), seed=SEEDS)
def test_grad_matmul_random_shapes(shapes, seed):
    a, b = normal(seed, shapes[0]), normal(seed + 1, shapes[1])
    x, w = leaf(a), leaf(b)
    assert_forward(x @ w, np.matmul(a, b))
    check(F.matmul, x, w)


def test_grad_matmul_with_one_constant_side():
    a, b = normal(0, (2, 3, 4)), normal(1, (4, 5))
    check(lambda x: F.matmul(x, tensor.Tensor(b)), leaf(a))
    check(lambda w: F.matmul(tensor.Tensor(a), w), leaf(b))


LINEAR_SHAPES = {"(N, K)": (3, 4), "(B, T, K)": (2, 3, 4), "(K,)": (4,), "K = 1": (2, 1)}


@covers("linear")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES.values(), ids=LINEAR_SHAPES.keys())
def test_grad_linear(shape, bias):
    n = 5
    a, w0, b0 = normal(0, shape), normal(1, (shape[-1], n)), normal(2, (n,))
    expected = np.matmul(a, w0) + (b0 if bias else 0.0)
    args = (leaf(a), leaf(w0)) + ((leaf(b0),) if bias else ())
    assert_forward(F.linear(*args), expected)
    check(F.linear, *args)


@covers("linear")
@settings(max_examples=N_EXAMPLES)
@given(lead=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3), k=st.integers(1, 4),
       n=st.integers(1, 4), seed=SEEDS)
def test_grad_linear_random_shapes(lead, k, n, seed):
    a, w0, b0 = normal(seed, lead + (k,)), normal(seed + 1, (k, n)), normal(seed + 2, (n,))
    x, w, b = leaf(a), leaf(w0), leaf(b0)
    assert_forward(F.linear(x, w, b), np.matmul(a, w0) + b0)
    check(F.linear, x, w, b)


def test_linear_with_constant_weights_and_bad_shapes():
    a, w0, b0 = normal(0, (2, 3, 4)), normal(1, (4, 5)), normal(2, (5,))
    check(lambda x: F.linear(x, tensor.Tensor(w0), tensor.Tensor(b0)), leaf(a))
    with pytest.raises(ValueError, match=r"linear: x \(2, 3, 4\) @ w \(5, 4\)"):
        F.linear(leaf(a), leaf(w0.T))
    with pytest.raises(ValueError, match=r"b \(4,\)"):
        F.linear(leaf(a), leaf(w0), leaf(b0[:4]))


# ---------------------------------------------------------------------------------------------
# Softmax family
# ---------------------------------------------------------------------------------------------
def log_softmax_reference(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


SOFTMAXES = {"softmax": (F.softmax, lambda a, axis: np.exp(log_softmax_reference(a, axis))),
             "log_softmax": (F.log_softmax, log_softmax_reference)}


@covers("softmax", "log_softmax")
@pytest.mark.parametrize("op", SOFTMAXES)
@settings(max_examples=N_EXAMPLES)
@given(shape=AXIS_SHAPES, seed=SEEDS)
@example(shape=(2, 3, 4), seed=0)
def test_grad_softmax(op, shape, seed):
    f, ref = SOFTMAXES[op]
    a = normal(seed, shape, 3.0)
    x = leaf(a)
    # every axis of this shape, each with a random upstream gradient (the sum of a softmax is
    # constant, so a `.sum().backward()` test could not see a wrong backward)
    for axis in range(-len(shape), len(shape)):
        assert_forward(f(x, axis), ref(a, axis))
        check(lambda x: f(x, axis), x)
    assert_forward(getattr(x, op)(), ref(a, -1))


def causal_softmax_reference(a, scale):
    """softmax(scale·a) over the last axis, key j hidden from query i when j > i + (Tk - Tq)."""
    tq, tk = a.shape[-2:]
    hidden = np.triu(np.ones((tq, tk), dtype=bool), k=1 + tk - tq)
    return np.exp(log_softmax_reference(np.where(hidden, -np.inf, scale * a), -1))


@covers("softmax")
@settings(max_examples=N_EXAMPLES)
@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), tq=st.integers(1, 4),
       extra_keys=st.integers(0, 2), scale=st.floats(0.1, 2.0), causal=st.booleans(), seed=SEEDS)
@example(batch=(2,), tq=3, extra_keys=0, scale=0.5, causal=True, seed=0)
@example(batch=(), tq=2, extra_keys=2, scale=1.0, causal=True, seed=1)
def test_grad_softmax_scaled_and_causal(batch, tq, extra_keys, scale, causal, seed):
    # the attention form: softmax(scale · scores) over the keys, future keys masked out
    shape = batch + (tq, tq + extra_keys)
    a = normal(seed, shape, 2.0)
    x = leaf(a)
    expected = (causal_softmax_reference(a, scale) if causal
                else np.exp(log_softmax_reference(scale * a, -1)))
    assert_forward(F.softmax(x, -1, scale=scale, causal=causal), expected)
    check(lambda x: F.softmax(x, -1, scale=scale, causal=causal), x)
    if not causal and len(shape) > 1:   # the NumPy path (another axis) takes scale too
        assert_forward(F.softmax(x, 0, scale=scale), np.exp(log_softmax_reference(scale * a, 0)))
        check(lambda x: F.softmax(x, 0, scale=scale), x)


def test_causal_softmax_needs_the_last_axis():
    with pytest.raises(ValueError, match="causal"):
        F.softmax(leaf(normal(0, (3, 3))), axis=0, causal=True)


def test_softmax_of_large_logits_is_finite():
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -1002.0]])
    for axis in (0, 1):
        assert_forward(F.softmax(leaf(a), axis), np.exp(log_softmax_reference(a, axis)))
        assert_forward(F.log_softmax(leaf(a), axis), log_softmax_reference(a, axis))


def cross_entropy_reference(logits, targets, ignore_index):
    v = logits.shape[-1]
    z, t = logits.reshape(-1, v), targets.reshape(-1)
    keep = t != ignore_index
    logp = log_softmax_reference(z, axis=1)
    return -logp[keep, t[keep]].sum() / max(keep.sum(), 1)


@covers("cross_entropy")
@settings(max_examples=N_EXAMPLES)
@given(lead=hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4),
       classes=st.integers(1, 6), ignore_index=st.sampled_from([-1, -100]), seed=SEEDS)
@example(lead=(4,), classes=5, ignore_index=-1, seed=0)          # 2-D logits
@example(lead=(2, 3), classes=4, ignore_index=-1, seed=1)        # 3-D logits
@example(lead=(1,), classes=1, ignore_index=-100, seed=2)
def test_grad_cross_entropy(lead, classes, ignore_index, seed):
    rng = np.random.default_rng(seed)
    a = normal(seed, lead + (classes,), 2.0)
    targets = rng.integers(0, classes, size=lead)
    targets = np.where(rng.random(lead) < 0.3, ignore_index, targets)   # some rows are ignored
    x = leaf(a)
    out = F.cross_entropy(x, targets, ignore_index=ignore_index)
    assert_forward(out, cross_entropy_reference(a, targets, ignore_index))
    check(lambda x: F.cross_entropy(x, targets, ignore_index=ignore_index), x)


def test_grad_cross_entropy_ignores_the_ignored_rows():
    # The gradient of an ignored row is exactly 0 and the loss is the mean over the kept rows only.
    a = normal(3, (3, 4))
    targets = np.array([2, -1, 0])
    x = leaf(a)
    loss = F.cross_entropy(x, targets)
    assert_forward(loss, cross_entropy_reference(a[[0, 2]], targets[[0, 2]], -1))
    loss.backward()
    np.testing.assert_array_equal(x.grad[1], 0.0)


# ---------------------------------------------------------------------------------------------
# Layers with a fused backward
# ---------------------------------------------------------------------------------------------
def layer_norm_reference(a, w, b, eps=1e-5):
    out = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + eps)
    if w is not None:
        out = out * w
    if b is not None:
        out = out + b
    return out


@covers("layer_norm")
@settings(max_examples=N_EXAMPLES)
@given(shape=AXIS_SHAPES, with_weight=st.booleans(), with_bias=st.booleans(), seed=SEEDS)
@example(shape=(2, 3, 5), with_weight=True, with_bias=True, seed=0)
@example(shape=(4, 5), with_weight=False, with_bias=False, seed=1)
@example(shape=(3, 1), with_weight=True, with_bias=False, seed=2)
def test_grad_layer_norm(shape, with_weight, with_bias, seed):
    c = shape[-1]
    a = normal(seed, shape, 2.0) + 0.5
    wa = normal(seed + 1, (c,)) if with_weight else None
    ba = normal(seed + 2, (c,)) if with_bias else None
    x = leaf(a)
    w = leaf(wa) if with_weight else None
    b = leaf(ba) if with_bias else None
    assert_forward(F.layer_norm(x, w, b), layer_norm_reference(a, wa, ba))
    check(lambda x, w, b: F.layer_norm(x, w, b), x, w, b)


def test_grad_layer_norm_with_constant_input():
    # only the weight and bias need gradients
    a = normal(0, (3, 4))
    check(lambda w, b: F.layer_norm(tensor.Tensor(a), w, b), leaf(normal(1, 4)), leaf(normal(2, 4)))


@covers("dropout")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, p=st.floats(0.0, 0.9), seed=SEEDS)
def test_grad_dropout(shape, p, seed):
    a = away_from_zero(seed, shape)
    x = leaf(a)
    # a generator made inside fn: the same mask on every call, so finite differences make sense
    fn = lambda x: F.dropout(x, p, generator=np.random.default_rng(seed))  # noqa: E731
    out = fn(x).data
    assert out.dtype == np.float64 and out.shape == a.shape
    kept = out != 0
    np.testing.assert_allclose(out[kept], a[kept] / (1 - p), rtol=1e-12)   # kept ones are scaled
    if p == 0.0:
        assert kept.all()
    check(fn, x)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout_in_eval_mode_is_the_identity(p):
    a = normal(0, (3, 4))
    x = leaf(a)
    out = F.dropout(x, p, training=False)
    np.testing.assert_array_equal(out.data, a)
    g = normal(1, (3, 4))
    out.backward(g)
    np.testing.assert_array_equal(x.grad, g)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_the_expected_fraction_and_the_mean(p):
    n = 200_000
    a = np.full(n, 2.0)
    out = F.dropout(leaf(a), p, generator=np.random.default_rng(1234)).data
    kept = out != 0
    # each entry is kept with probability 1 - p: the kept fraction is within 6 standard errors
    assert abs(kept.mean() - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    # and the kept entries are scaled by 1/(1-p), so the mean is still 2
    np.testing.assert_allclose(out[kept], 2.0 / (1 - p))
    assert abs(out.mean() - 2.0) < 6 * 2.0 * math.sqrt(p / (1 - p) / n)


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_dropout_averages_to_its_input(p):
    # the mean of many independent draws approaches x itself (inverted dropout is unbiased);
    # each entry's draw has standard deviation |x|·√(p/(1-p))
    a = np.array([-1.5, 0.25, 1.0, 3.0])
    x = leaf(a)
    rng = np.random.default_rng(99)
    draws = 4000
    mean = sum(F.dropout(x, p, generator=rng).data for _ in range(draws)) / draws
    assert np.all(np.abs(mean - a) < 6 * np.abs(a) * math.sqrt(p / (1 - p) / draws))


def test_dropout_names_a_wrong_generator():
    with pytest.raises(TypeError, match="dropout: generator must be a numpy.random.Generator"):
        F.dropout(leaf(np.ones(4)), 0.5, generator=np.random.RandomState(0))


def test_dropout_draws_a_new_mask_each_call():
    x = leaf(np.ones(1000))
    rng = np.random.default_rng(0)
    first, second = F.dropout(x, 0.5, generator=rng).data, F.dropout(x, 0.5, generator=rng).data
    assert not np.array_equal(first, second)


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
# Composite graphs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["gelu", "tanh"])
def test_grad_two_layer_mlp(activation):
    n, d, h, v = 5, 4, 6, 3
    xa = normal(0, (n, d))
    params = [normal(1, (d, h), 0.5), normal(2, (h,)), normal(3, (h, v), 0.5), normal(4, (v,))]
    targets = np.array([0, 2, -1, 1, 2])
    act, act_ref = (F.gelu, gelu_reference) if activation == "gelu" else (F.tanh, np.tanh)

    def mlp(x, w1, b1, w2, b2):
        return F.cross_entropy(act(x @ w1 + b1) @ w2 + b2, targets)

    w1, b1, w2, b2 = params
    expected = cross_entropy_reference(act_ref(xa @ w1 + b1) @ w2 + b2, targets, -1)
    inputs = [leaf(xa)] + [leaf(p) for p in params]
    assert_forward(mlp(*inputs), expected)
    check(mlp, *inputs)


def attention_reference(xa, wa, wo, n_head, fill):
    b, t, c = xa.shape
    hs = c // n_head
    q, k, v = np.split(xa @ wa, 3, axis=-1)
    heads = lambda z: z.reshape(b, t, n_head, hs).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    att = np.where(np.triu(np.ones((t, t), bool), 1), fill, att)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True)
    return (att @ v).transpose(0, 2, 1, 3).reshape(b, t, c) @ wo


@pytest.mark.parametrize("fill", [-np.inf, -1e9])
def test_grad_causal_self_attention(fill):
    b, t, c, n_head = 2, 3, 4, 2
    hs = c // n_head
    causal = np.triu(np.ones((t, t), dtype=bool), k=1)           # True above the diagonal

    def attention(x, w_attn, w_proj):
        q, k, v = F.split(x @ w_attn, 3, axis=-1)                 # 3 x (B, T, C)
        q = q.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        k = k.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        v = v.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))   # (B, nh, T, T)
        att = F.masked_fill(att, causal, fill).softmax(-1)        # (B, nh, T, T)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)            # (B, T, C)
        return y @ w_proj                                         # (B, T, C)

    xa, wa, wo = normal(0, (b, t, c)), normal(1, (c, 3 * c), 0.5), normal(2, (c, c), 0.5)
    inputs = leaf(xa), leaf(wa), leaf(wo)
    out = attention(*inputs)
    assert np.isfinite(out.data).all()
    assert_forward(out, attention_reference(xa, wa, wo, n_head, fill))
    check(attention, *inputs)


def test_grad_causal_self_attention_with_the_fused_softmax():
    # the same attention with softmax(scale=, causal=) instead of masked_fill: same values, and
    # its own gradient check
    b, t, c, n_head = 2, 3, 4, 2
    hs = c // n_head

    def attention(x, w_attn, w_proj):
        q, k, v = F.split(x @ w_attn, 3, axis=-1)                 # 3 x (B, T, C)
        q = q.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        k = k.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        v = v.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        att = F.softmax(q @ k.transpose(-2, -1), -1, scale=1.0 / math.sqrt(hs), causal=True)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)            # (B, T, C)
        return y @ w_proj                                         # (B, T, C)

    xa, wa, wo = normal(0, (b, t, c)), normal(1, (c, 3 * c), 0.5), normal(2, (c, c), 0.5)
    inputs = leaf(xa), leaf(wa), leaf(wo)
    assert_forward(attention(*inputs), attention_reference(xa, wa, wo, n_head, -np.inf))
    check(attention, *inputs)


def test_grad_tensor_used_twice():
    a = normal(0, (3, 4))
    check(lambda x: x * x + x, leaf(a))
    check(lambda x: x @ x.T, leaf(a))                 # both operands of one matmul
    check(lambda x: x - x * 0.5, leaf(a))
    x = leaf(a)
    g = normal(1, (3, 4))
    (x * x + x).backward(g)
    np.testing.assert_allclose(x.grad, g * (2 * a + 1), rtol=1e-12)   # d(x² + x) = 2x + 1


def test_grad_diamond():
    # a = eˣ feeds both the product and the sum:  out = a · Σa
    a = normal(0, (2, 3))
    check(lambda x: (lambda e: e * e.sum())(x.exp()), leaf(a))
    x = leaf(a)
    e = x.exp()
    out = e * e.sum()
    g = normal(1, (2, 3))
    out.backward(g)
    ea = np.exp(a)
    # d out_ij / d x_kl = e_ij Σe δ + e_ij e_kl  ->  dx = e ⊙ (g Σe + Σ(g ⊙ e))
    np.testing.assert_allclose(x.grad, ea * (g * ea.sum() + (g * ea).sum()), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# attention, and the fused kernels against the NumPy path of the same ops
# ---------------------------------------------------------------------------------------------
def fused_attention_reference(qkv, n_head, keep=None, p=0.0):
    """Causal self-attention written from its definition, head by head, query by query. With
    dropout: keep (B, nh, T, T) bool says which weights survive, each scaled by 1/(1-p)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    y = np.zeros((B, T, C))
    for b in range(B):
        for h in range(n_head):
            q = qkv[b, :, h * hs:(h + 1) * hs]
            k = qkv[b, :, C + h * hs:C + (h + 1) * hs]
            v = qkv[b, :, 2 * C + h * hs:2 * C + (h + 1) * hs]
            for i in range(T):
                scores = np.array([q[i] @ k[j] / math.sqrt(hs) for j in range(i + 1)])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                if keep is not None:
                    w = np.where(keep[b, h, i, :i + 1], w / (1 - p), 0.0)
                y[b, i, h * hs:(h + 1) * hs] = w @ v[:i + 1]
    return y


@covers("attention")
@settings(max_examples=N_EXAMPLES)
@given(b=st.integers(1, 2), t=st.integers(1, 5), n_head=st.integers(1, 3), hs=st.integers(1, 3),
       seed=SEEDS)
def test_grad_attention(b, t, n_head, hs, seed):
    a = normal(seed, (b, t, 3 * n_head * hs))
    x = leaf(a)
    assert_forward(F.attention(x, n_head), fused_attention_reference(a, n_head))
    check(lambda x: F.attention(x, n_head), x)


@settings(max_examples=N_EXAMPLES)
@given(b=st.integers(1, 2), t=st.integers(1, 5), n_head=st.integers(1, 3), hs=st.integers(1, 3),
       p=st.sampled_from([0.1, 0.5, 0.9]), seed=SEEDS)
def test_grad_attention_with_dropout(b, t, n_head, hs, p, seed):
    # the mask comes from the generator's first B·nh·T·T 32-bit words (tensor/functional.py's
    # _dropout_mask, tested in test_fused_kernels.py); a fresh generator per call gives
    # gradcheck the same mask every time
    a = normal(seed, (b, t, 3 * n_head * hs))
    keep = F._dropout_mask((b, n_head, t, t), p, np.float64, np.random.default_rng(seed)) > 0
    def f(x):
        return F.attention(x, n_head, p, np.random.default_rng(seed))
    assert_forward(f(leaf(a)), fused_attention_reference(a, n_head, keep, p))
    check(f, leaf(a))


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="attention"):
        F.attention(leaf(normal(0, (2, 3, 10))), 2)
    with pytest.raises(ValueError, match="attention: dropout"):
        F.attention(leaf(normal(0, (2, 3, 12))), 2, dropout=1.0)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
@pytest.mark.parametrize("op", ["gelu", "layer_norm", "cross_entropy", "embedding"])
def test_fused_and_numpy_paths_agree_and_pass_gradcheck(op, fused):
    rng = np.random.default_rng(7)
    x = leaf(rng.standard_normal((3, 4, 6)))
    fns = {
        "gelu": (lambda x: F.gelu(x), (x,)),
        "layer_norm": (lambda x, w, b: F.layer_norm(x, w, b),
                       (x, leaf(rng.standard_normal(6)), leaf(rng.standard_normal(6)))),
        "cross_entropy": (lambda x: F.cross_entropy(x, np.array([[0, 5, -1, 2]] * 3)), (x,)),
        "embedding": (lambda w: F.embedding(np.array([[1, 1, 0], [4, 1, 2]]), w),
                      (leaf(rng.standard_normal((5, 6))),)),
    }
    fn, inputs = fns[op]
    with tensor.fused(fused):
        check(fn, *inputs)
        out = fn(*inputs).data
    with tensor.fused(not fused):
        other = fn(*inputs).data
    np.testing.assert_allclose(out, other, rtol=1e-7, atol=1e-9)
