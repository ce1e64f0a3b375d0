"""The elementwise ops (tensor/functional.py's arithmetic, functions, comparisons and masks):
forward against NumPy (and PyTorch where the meaning could differ), backward by gradcheck with
Hypothesis-drawn shapes that include size-1 axes and broadcasting pairs.

Kinks and ties are kept out of the gradient checks (abs at 0, clip at its bounds, ties in
maximum and minimum) and checked on their own, by hand and against torch, with the rule each
op states: abs'(0) = 0; clip passes the gradient when x is exactly on a bound; maximum and
minimum give each tied side half. Comparisons and logical ops give boolean tensors outside the
graph; where and masked_fill carry the gradient past them."""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from ops_helpers import (N_EXAMPLES, N_TORCH_EXAMPLES, PAIRS, SEEDS, SHAPES, assert_forward,
                         assert_same, away_from, away_from_zero, check, covers, distinct, leaf,
                         needs_torch, normal, positive, torch, torch_or_skip)


# ---------------------------------------------------------------------------------------------
# Arithmetic, with broadcasting
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


def test_pow_zero_at_zero_has_zero_gradient():
    x = leaf([0.0, 2.0, -1.5])
    (x ** 0).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])


SMALL_PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                                max_side=3).map(lambda b: b.input_shapes)


@covers("pow")
@settings(max_examples=N_TORCH_EXAMPLES)
@given(shapes=SMALL_PAIRS, seed=SEEDS)
@example(shapes=((3,), ()), seed=0)
@example(shapes=((), (2, 2)), seed=1)
def test_pow_tensor_exponent_matches_torch(shapes, seed):
    base, exponent = positive(seed, shapes[0]), normal(seed + 1, shapes[1])
    assert_same(lambda x, y: x ** y, lambda x, y: x ** y, [base, exponent], seed)
    check(lambda x, y: F.pow(x, y), leaf(base), leaf(exponent))


@settings(max_examples=N_TORCH_EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4),
       number=st.sampled_from([2, 0.5, math.e, 10.0]), seed=SEEDS)
def test_number_to_a_tensor_power_matches_torch(shape, number, seed):
    a = normal(seed, shape)
    assert_same(lambda y: number ** y, lambda y: number ** y, [a], seed)
    check(lambda y: number ** y, leaf(a))
    assert (number ** tensor.Tensor(a.astype(np.float32))).dtype == np.float32


@needs_torch
def test_pow_at_zero_base_matches_torch():
    # 0 ** y: dx = 0 where y = 0, dy = 0 where y >= 0 (PyTorch's convention)
    base, exponent = np.array([0.0, 0.0, 0.0, 2.0]), np.array([0.0, 1.0, 2.5, 0.0])
    assert_same(lambda x, y: x ** y, lambda x, y: x ** y, [base, exponent], 0)


@covers("maximum", "minimum")
@pytest.mark.parametrize("op", ["maximum", "minimum"])
@settings(max_examples=N_EXAMPLES)
@given(shapes=PAIRS, seed=SEEDS)
@example(shapes=((3, 1, 4), (5, 4)), seed=0)
@example(shapes=((), (2, 3)), seed=1)
@example(shapes=((2, 1), (1, 3)), seed=2)
def test_grad_maximum_minimum(op, shapes, seed):
    f, ref = getattr(F, op), getattr(np, op)
    n0, n1 = math.prod(shapes[0]), math.prod(shapes[1])
    values = distinct(seed, (n0 + n1,))                     # no ties between any two entries
    a, b = values[:n0].reshape(shapes[0]), values[n0:].reshape(shapes[1])
    x, y = leaf(a), leaf(b)
    assert_forward(f(x, y), ref(a, b))
    assert_forward(getattr(x, op)(y), ref(a, b))
    check(f, x, y)
    check(lambda x: f(x, 0.03), x)        # a constant (distinct() values sit at k·0.05 ± 1e-3)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_like_torch(op):
    torch = torch_or_skip()
    a = np.array([[1.0, 2.0, 3.0], [3.0, 3.0, 0.0]])     # (2, 3)
    b = np.array([1.0, 3.0, 3.0])                        # (3,), broadcast over the rows
    g = normal(4, (2, 3))
    x, y = leaf(a), leaf(b)
    getattr(F, op)(x, y).backward(g)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    getattr(torch, op)(tx, ty).backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-15)
    np.testing.assert_allclose(y.grad, ty.grad.numpy(), rtol=1e-15)
    # by hand: a tie sends g/2 to each side
    tie = a == b                                          # (2, 3)
    np.testing.assert_allclose(x.grad[tie], g[tie] / 2, rtol=1e-15)
    np.testing.assert_allclose(y.grad, np.where(tie, g / 2, g * (a != b) * (
        (b > a) if op == "maximum" else (b < a))).sum(axis=0), rtol=1e-15)


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------
UNARY = {
    "neg": (F.neg, np.negative, normal),
    "exp": (F.exp, np.exp, normal),
    "log": (F.log, np.log, positive),
    "sqrt": (F.sqrt, np.sqrt, positive),
    "rsqrt": (F.rsqrt, lambda a: 1.0 / np.sqrt(a), positive),
    "tanh": (F.tanh, np.tanh, lambda seed, shape: normal(seed, shape, 1.5)),
    "sin": (F.sin, np.sin, lambda seed, shape: normal(seed, shape, 3.0)),
    "cos": (F.cos, np.cos, lambda seed, shape: normal(seed, shape, 3.0)),
    "abs": (F.abs, np.abs, lambda seed, shape: away_from(normal(seed, shape), [0.0])),
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
    if hasattr(x, op):                     # the method too: x.exp(), x.abs(), ...
        assert_forward(getattr(x, op)(), ref(a))
    check(f, x)


@covers("sin", "cos")
@pytest.mark.parametrize("op", ["sin", "cos"])
@settings(max_examples=N_TORCH_EXAMPLES)
@given(shape=SHAPES, seed=SEEDS)
def test_sin_cos_match_torch(op, shape, seed):
    a = normal(seed, shape, 3.0)
    assert_same(getattr(F, op), lambda t: getattr(t, op)(), [a], seed, rtol=1e-14, atol=1e-15)
    check(getattr(F, op), leaf(a))


# ---------------------------------------------------------------------------------------------
# Floor division and div(rounding_mode=): a step function, gradient 0 (as torch)
# ---------------------------------------------------------------------------------------------
def away_from_jumps(a, b, margin=0.05):
    """Move x so that x / y is at least `margin` from an integer, where the rounded quotient
    jumps: gradcheck's steps of 1e-6 in x or y (|x| < 30, |y| > 0.1) move x / y by < 3e-3."""
    q = a / b
    near = np.abs(q - np.round(q)) < margin
    return np.where(near, a + 0.5 * b, a)                   # x / y + 0.5: half-way between


ROUNDED = {"floor_divide": F.floor_divide,
           "floor": lambda x, y: F.div(x, y, rounding_mode="floor"),
           "trunc": lambda x, y: F.div(x, y, rounding_mode="trunc")}


@covers("floor_divide", "div")
@pytest.mark.parametrize("mode", ROUNDED)
@settings(max_examples=N_EXAMPLES)
@given(shapes=PAIRS, seed=SEEDS)
@example(shapes=((3, 1), (4,)), seed=0)
@example(shapes=((), (2,)), seed=1)
def test_grad_rounded_division(mode, shapes, seed):
    b = away_from_zero(seed + 1, shapes[1], margin=0.1)
    a = away_from_jumps(normal(seed, shapes[0], 4.0), b)
    x, y = leaf(a), leaf(b)
    # floor: Python's // (x - y·q has y's sign), which NumPy's floor_divide is too
    reference = np.floor_divide(a, b) if mode != "trunc" else np.trunc(a / b)
    assert_forward(ROUNDED[mode](x, y), reference, rtol=0, atol=0)
    check(ROUNDED[mode], x, y)           # central differences between the jumps: 0, as backward
    t_mode = "trunc" if mode == "trunc" else "floor"
    assert_same(ROUNDED[mode], lambda t, u: torch.div(t, u, rounding_mode=t_mode), [a, b], seed,
                rtol=0, atol=0)


def test_floor_division_operators_match_python_and_torch():
    torch = torch_or_skip()
    a, b = np.array([1.0, -1.0, 7.0, -7.0, 7.5]), np.array([0.1, 0.1, 2.0, 2.0, -2.0])
    x, y = leaf(a), leaf(b)
    t, u = torch.tensor(a), torch.tensor(b)
    # 1.0 // 0.1 is 9 in Python and torch (the quotient is computed exactly, then floored)
    np.testing.assert_array_equal((x // y).data, [p // q for p, q in zip(a, b)])
    np.testing.assert_array_equal((x // y).data, (t // u).numpy())
    np.testing.assert_array_equal((x // 2.0).data, (t // 2.0).numpy())
    np.testing.assert_array_equal((3.0 // y).data, (3.0 // u).numpy())
    np.testing.assert_array_equal(x.div(y, rounding_mode="trunc").data,
                                  torch.div(t, u, rounding_mode="trunc").numpy())
    assert (tensor.tensor([1.0, 2.0]) // 2).dtype == np.float32
    # y = 0: ±inf or NaN, as torch
    zero = np.array([1.0, -1.0, 0.0])
    for mode in ("floor", "trunc"):
        np.testing.assert_array_equal(F.div(leaf(zero), 0.0, rounding_mode=mode).data,
                                      torch.div(torch.tensor(zero), 0.0, rounding_mode=mode))
    out = (x // y).sum() + x.div(y, rounding_mode="trunc").sum()
    out.backward()
    np.testing.assert_array_equal(x.grad, np.zeros(5))       # as torch: zero, not None
    with pytest.raises(ValueError, match="div: rounding_mode must be None, 'floor' or 'trunc'"):
        F.div(x, y, rounding_mode="round")


def test_abs_has_gradient_0_at_0_like_torch():
    torch = torch_or_skip()
    a = np.array([-2.0, 0.0, 3.0])
    x, t = leaf(a), torch.tensor(a, requires_grad=True)
    abs(x).backward(np.array([1.0, 5.0, 2.0]))
    t.abs().backward(torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64))
    np.testing.assert_array_equal(x.grad, t.grad.numpy())
    np.testing.assert_array_equal(x.grad, [-1.0, 0.0, 2.0])


@st.composite
def clip_case(draw):
    lo = draw(st.one_of(st.none(), st.sampled_from([-1.0, -0.25, 0.0])))
    hi = draw(st.sampled_from([0.5, 1.0, 2.0]) if lo is None else
              st.one_of(st.none(), st.sampled_from([0.5, 1.0, 2.0])))
    return lo, hi


@covers("clip")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, bounds=clip_case(), seed=SEEDS)
@example(shape=(2, 1, 3), bounds=(-0.25, 0.5), seed=0)
@example(shape=(4,), bounds=(None, 0.5), seed=1)
@example(shape=(), bounds=(0.0, None), seed=2)
def test_grad_clip(shape, bounds, seed):
    lo, hi = bounds
    a = away_from(normal(seed, shape, 1.5), bounds)        # no entry on a bound (a kink)
    x = leaf(a)
    assert_forward(F.clip(x, lo, hi), np.clip(a, lo, hi))
    assert_forward(F.clamp(x, min=lo, max=hi), np.clip(a, lo, hi))
    assert_forward(x.clamp(lo, hi), np.clip(a, lo, hi))
    check(lambda x: F.clip(x, lo, hi), x)


def test_clip_passes_the_gradient_on_the_bounds_like_torch_clamp():
    torch = torch_or_skip()
    a = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, -1.0, 1.0])
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    for lo, hi in ((-1.0, 1.0), (-1.0, None), (None, 1.0), (1.0, -1.0)):
        x, t = leaf(a), torch.tensor(a, requires_grad=True)
        out = F.clip(x, lo, hi)
        ref = torch.clamp(t, lo, hi)
        np.testing.assert_array_equal(out.data, ref.detach().numpy())
        out.backward(g)
        ref.backward(torch.tensor(g))
        np.testing.assert_array_equal(x.grad, t.grad.numpy(), err_msg=f"bounds {lo}, {hi}")
    # by hand, for [-1, 1]: entries -1 and 1 are on a bound and keep their gradient
    x = leaf(a)
    F.clip(x, -1.0, 1.0).backward(g)
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 3.0, 4.0, 0.0, 6.0, 7.0])


def test_clip_errors():
    x = leaf([1.0, 2.0])
    with pytest.raises(ValueError, match="clip: give at least one"):
        F.clip(x)
    with pytest.raises(TypeError, match="clip: this bound is a tensor that requires gradients"):
        F.clip(x, leaf(0.0))
    with pytest.raises(ValueError, match="clip: bounds of shapes"):
        F.clip(x, np.zeros((3, 2)))
    np.testing.assert_array_equal(F.clip(x, tensor.tensor(1.5)).data, [1.5, 2.0])


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
# Comparisons and logical ops: boolean tensors outside the graph; where and masked_fill
# ---------------------------------------------------------------------------------------------
COMPARISONS = {
    "lt": (F.lt, np.less, lambda x, y: x < y),
    "le": (F.le, np.less_equal, lambda x, y: x <= y),
    "gt": (F.gt, np.greater, lambda x, y: x > y),
    "ge": (F.ge, np.greater_equal, lambda x, y: x >= y),
    "eq": (F.eq, np.equal, lambda x, y: x == y),
    "ne": (F.ne, np.not_equal, lambda x, y: x != y),
}


@pytest.mark.parametrize("op", COMPARISONS)
@settings(max_examples=N_EXAMPLES)
@given(shapes=PAIRS, seed=SEEDS)
@example(shapes=((3, 1), (4,)), seed=0)
@example(shapes=((), ()), seed=1)
def test_comparisons_are_boolean_and_carry_no_gradient(op, shapes, seed):
    f, ref, dunder = COMPARISONS[op]
    rng = np.random.default_rng(seed)
    a = rng.integers(-2, 3, size=shapes[0]).astype(np.float64)    # small ints: many ties
    b = rng.integers(-2, 3, size=shapes[1]).astype(np.float64)
    x, y = leaf(a), leaf(b)
    for out in (f(x, y), dunder(x, y)):
        assert out.dtype == np.bool_ and out.shape == np.broadcast_shapes(a.shape, b.shape)
        np.testing.assert_array_equal(out.data, ref(a, b))
        assert not out.requires_grad and out._parents == () and out._backward is None
    # a number or an array on either side; Python reflects `1 < x` to `x > 1`
    np.testing.assert_array_equal(dunder(x, 0.5).data, ref(a, 0.5))
    np.testing.assert_array_equal(dunder(0.5, x).data, ref(0.5, a))
    np.testing.assert_array_equal(dunder(b, x).data, ref(b, a))        # ndarray op Tensor


def test_logical_ops_on_masks():
    p = np.array([True, False, True, False])
    q = np.array([True, True, False, False])
    tp, tq = tensor.Tensor(p), tensor.Tensor(q)
    np.testing.assert_array_equal((tp & tq).data, p & q)
    np.testing.assert_array_equal((tp | tq).data, p | q)
    np.testing.assert_array_equal((~tp).data, ~p)
    np.testing.assert_array_equal((tp & q).data, p & q)               # an array on the right
    np.testing.assert_array_equal((q | tp).data, q | p)               # and on the left
    with pytest.raises(TypeError, match="logical_and: needs boolean"):
        leaf([1.0, 2.0]) & tp
    with pytest.raises(ValueError, match="logical_or: shapes"):
        F.logical_or(tp, np.ones(3, dtype=bool))


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


def test_where_with_number_branches_follows_torch_dtypes():
    torch = torch_or_skip()
    c = np.array([True, False, True])
    tc = torch.tensor(c)
    branches = {                                     # ours, torch's
        "two ints": ((1, 2), (1, 2)),
        "int and float": ((1, 2.5), (1, 2.5)),
        "two bools": ((True, False), (True, False)),
        "int32 tensor and int": ((np.array([1, 2, 3], np.int32), 2), None),
        "int32 tensor and float": ((np.array([1, 2, 3], np.int32), 2.5), None),
        "bool tensor and int": ((np.array([True, False, False]), 7), None),
        "int64 tensor and bool": ((np.array([4, 5, 6]), False), None),
        "float64 tensor and int": ((np.array([1.0, 2.0, 3.0]), 1), None),
        "int and float64 tensor": ((1, np.array([1.0, 2.0, 3.0])), None),
        "float32 tensor and float": ((np.array([1.0, 2.0, 3.0], np.float32), 0.5), None),
        "int32 and float32 tensors": ((np.array([1, 2, 3], np.int32),
                                       np.array([0.5, 1.5, 2.5], np.float32)), None),
        "int32 and int64 tensors": ((np.array([1, 2, 3], np.int32), np.array([7, 8, 9])), None),
    }
    for name, (ours, theirs) in branches.items():
        x, y = (tensor.Tensor(v) if isinstance(v, np.ndarray) else v for v in ours)
        tx, ty = theirs or (torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                            for v in ours)
        out, t_out = F.where(c, x, y), torch.where(tc, tx, ty)
        assert out.dtype == np.dtype(str(t_out.dtype).removeprefix("torch.")), name
        np.testing.assert_array_equal(out.data, t_out.numpy(), err_msg=name)


def test_comparison_masks_in_where_and_masked_fill():
    a = np.array([[-1.5, 0.5, 2.0], [0.25, -0.75, 3.0]])
    x = leaf(a)
    out = F.where(x > 0, x * 2.0, x.masked_fill(x < -1, 0.0)) + x.masked_fill(~(x <= 1), -9.0)
    expected = np.where(a > 0, 2 * a, np.where(a < -1, 0, a)) + np.where(a > 1, -9, a)
    np.testing.assert_allclose(out.data, expected)
    g = normal(3, a.shape)
    out.backward(g)
    # d/dx: 2 where x > 0, 1 where -1 <= x <= 0 (the masked_fill branch), 0 where x < -1,
    # plus 1 where x <= 1 (the second term)
    dx = np.where(a > 0, 2.0, np.where(a < -1, 0.0, 1.0)) + (a <= 1)
    np.testing.assert_allclose(x.grad, g * dx)
    check(lambda x: F.where(x > 0, x * 2.0, x.masked_fill(x < -1, 0.0)), leaf(a))
