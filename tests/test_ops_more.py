"""The ops a PyTorch user reaches for (issue 11): forward against NumPy (and PyTorch where the
meaning could differ), backward against finite differences in float64 with random upstream
gradients and Hypothesis-drawn shapes that include size-1 axes.

Kinks and ties are kept out of the gradient checks (abs at 0, clip at its bounds, ties in min,
maximum and minimum) and checked on their own, by hand and against torch, with the rule each op
states: abs'(0) = 0; clip passes the gradient when x is exactly on a bound; maximum/minimum and
min give each tied entry an equal share.

`@covers` registers each gradient test for the guard in tests/test_ops_grad.py.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from test_ops_grad import (AXIS_SHAPES, N_EXAMPLES, PAIRS, SEEDS, SHAPES, assert_forward, check,
                           covers, distinct, leaf, normal, positive, shape_and_axis)


def torch_or_skip():
    return pytest.importorskip("torch")


def away_from(a, points, margin=1e-2):
    """Move entries of `a` that sit within `margin` of one of `points` (a kink) by 5·margin."""
    a = np.array(a, dtype=np.float64)
    for p in points:
        if p is not None:
            near = np.abs(a - p) < margin
            a[near] += 5 * margin
    return a


# ---------------------------------------------------------------------------------------------
# Comparisons and logical ops: boolean tensors outside the graph
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


def test_tensors_still_hash_by_identity_and_compare_with_none():
    x, y = leaf([1.0, 2.0]), leaf([1.0, 2.0])          # equal values, different tensors
    assert len({x, y, x}) == 2
    d = {x: "x", y: "y"}
    assert d[x] == "x" and d[y] == "y"
    assert hash(x) != hash(y)
    assert (x == None) is False and (x != None) is True     # noqa: E711 (the operator is tested)
    assert (x == "x") is False
    with pytest.raises(TypeError, match="ambiguous"):       # as in PyTorch: no truth value
        bool(x == y)


def test_a_model_with_comparison_operators_still_trains():
    """nn keeps parameters in dicts and sets by identity: `==` returning a tensor breaks nothing."""
    model = tensor.nn.Sequential(tensor.nn.Linear(3, 4), tensor.nn.Linear(4, 2))
    params = model.parameters()
    assert len(params) == len(set(params)) == 4
    opt = tensor.optim.AdamW(params, lr=0.1)
    x = tensor.randn(5, 3, seed=0)
    before = [p.data.copy() for p in params]
    model(x).sum().backward()
    opt.step()
    assert all(not np.array_equal(p.data, b) for p, b in zip(params, before))


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
# Elementwise functions
# ---------------------------------------------------------------------------------------------
def sigmoid_reference(a):
    return 1.0 / (1.0 + np.exp(-a))


UNARY = {
    "abs": (F.abs, np.abs, lambda seed, shape: away_from(normal(seed, shape), [0.0])),
    "sigmoid": (F.sigmoid, sigmoid_reference, lambda seed, shape: normal(seed, shape, 3.0)),
    "silu": (F.silu, lambda a: a * sigmoid_reference(a),
             lambda seed, shape: normal(seed, shape, 3.0)),
    "rsqrt": (F.rsqrt, lambda a: 1.0 / np.sqrt(a), positive),
}


@covers(*UNARY)
@pytest.mark.parametrize("op", UNARY)
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, seed=SEEDS)
@example(shape=(), seed=0)
@example(shape=(1, 5, 1), seed=1)
def test_grad_more_unary(op, shape, seed):
    f, ref, values = UNARY[op]
    a = values(seed, shape)
    x = leaf(a)
    assert_forward(f(x), ref(a))
    assert_forward(getattr(x, op)(), ref(a))
    check(f, x)


def test_abs_has_gradient_0_at_0_like_torch():
    torch = torch_or_skip()
    a = np.array([-2.0, 0.0, 3.0])
    x, t = leaf(a), torch.tensor(a, requires_grad=True)
    abs(x).backward(np.array([1.0, 5.0, 2.0]))
    t.abs().backward(torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64))
    np.testing.assert_array_equal(x.grad, t.grad.numpy())
    np.testing.assert_array_equal(x.grad, [-1.0, 0.0, 2.0])


def test_sigmoid_and_silu_are_finite_for_huge_inputs():
    a = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):     # no overflow on the way
        s, u = F.sigmoid(leaf(a)), F.silu(leaf(a))
    np.testing.assert_allclose(s.data, [0.0, math.exp(-40) / (1 + math.exp(-40)), 0.5,
                                        1 / (1 + math.exp(-40)), 1.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(u.data, a * s.data, rtol=1e-15, atol=0)
    x = leaf(a)
    F.sigmoid(x).backward(np.ones(5))
    assert np.all(np.isfinite(x.grad))


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


# ---------------------------------------------------------------------------------------------
# maximum / minimum: elementwise, broadcasting, ties split
# ---------------------------------------------------------------------------------------------
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
# Reductions: min, logsumexp, std
# ---------------------------------------------------------------------------------------------
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
# Shape ops: expand, repeat, gather, tril / triu, pad
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Every new op keeps float32 as float32 (forward and gradient), like the ops in test_tensor.py
# ---------------------------------------------------------------------------------------------
def more_op_cases(dtype):
    rng = np.random.default_rng(0)
    x = tensor.Tensor(rng.uniform(0.5, 2.0, size=(3, 4)).astype(dtype), requires_grad=True)
    y = tensor.Tensor(rng.uniform(0.5, 2.0, size=(4,)).astype(dtype), requires_grad=True)
    return {
        "abs": lambda: F.abs(x - 1.25),
        "clip": lambda: F.clip(x, 0.75, 1.5),
        "sigmoid": lambda: F.sigmoid(x),
        "silu": lambda: F.silu(x),
        "rsqrt": lambda: F.rsqrt(x),
        "maximum": lambda: F.maximum(x, y),
        "minimum": lambda: F.minimum(x, 1.0),
        "min": lambda: F.min(x, axis=1),
        "logsumexp": lambda: F.logsumexp(x, axis=-1),
        "std": lambda: F.std(x, axis=0, correction=1),
        "expand": lambda: F.expand(y, 2, 4),
        "repeat": lambda: F.repeat(x, 2, 1),
        "gather": lambda: F.gather(x, 1, np.array([[0, 3], [1, 1], [2, 0]])),
        "tril": lambda: F.tril(x),
        "triu": lambda: F.triu(x, 1),
        "pad": lambda: F.pad(x, (1, 1)),
    }, (x, y)


MORE_OPS = ("abs", "clip", "sigmoid", "silu", "rsqrt", "maximum", "minimum", "min", "logsumexp",
            "std", "expand", "repeat", "gather", "tril", "triu", "pad")


def test_the_float32_table_covers_the_new_ops():
    cases, _ = more_op_cases(np.float32)
    assert sorted(cases) == sorted(MORE_OPS)
    assert set(MORE_OPS) <= set(tensor.OPS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_the_new_ops_keep_the_float_dtype(dtype):
    cases, leaves = more_op_cases(dtype)
    for op, thunk in cases.items():
        out = thunk()
        assert out.dtype == dtype, f"{op}: {np.dtype(dtype)} in, {out.dtype} out"
        out.backward(np.ones(out.shape, dtype=dtype))
        for t in leaves:
            assert t.grad is None or t.grad.dtype == dtype, f"{op}: gradient {t.grad.dtype}"
            t.grad = None


# ---------------------------------------------------------------------------------------------
# Creation helpers (tensor/tensor.py)
# ---------------------------------------------------------------------------------------------
def test_full_and_eye():
    t = tensor.full((2, 3), 2.5)
    assert t.dtype == np.float32 and not t.requires_grad
    np.testing.assert_array_equal(t.data, np.full((2, 3), 2.5))
    assert tensor.full(4, 1.0, dtype=np.float64, requires_grad=True).requires_grad
    assert tensor.full(4, 1.0).shape == (4,)
    np.testing.assert_array_equal(tensor.eye(3).data, np.eye(3))
    np.testing.assert_array_equal(tensor.eye(2, 4, dtype=np.float64).data, np.eye(2, 4))
    assert tensor.eye(3).dtype == np.float32


def test_the_like_helpers_copy_shape_and_dtype():
    x = tensor.randn(2, 3, dtype=np.float64)
    for t, value in ((tensor.zeros_like(x), 0.0), (tensor.ones_like(x), 1.0),
                     (tensor.full_like(x, -4.0), -4.0)):
        assert t.shape == (2, 3) and t.dtype == np.float64 and not t.requires_grad
        np.testing.assert_array_equal(t.data, np.full((2, 3), value))
        assert t.data is not x.data
    assert tensor.zeros_like(x, dtype=np.float32).dtype == np.float32
    assert tensor.ones_like(x, requires_grad=True).requires_grad
    idx = tensor.Tensor(np.arange(3))                         # an integer tensor stays integer
    assert tensor.full_like(idx, 7).dtype == idx.dtype
    assert tensor.zeros_like(np.ones((2, 2), dtype=np.float64)).dtype == np.float64


def test_arange():
    np.testing.assert_array_equal(tensor.arange(5).data, np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(tensor.arange(1, 2, 0.25, dtype=np.float64).data,
                                  [1.0, 1.25, 1.5, 1.75])
    assert tensor.arange(3).dtype == np.float32 and not tensor.arange(3).requires_grad
