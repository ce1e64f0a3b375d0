"""What every op shares: the guard that every op in `tensor.OPS` has a gradient test, the
checking of axes (out of range or repeated: an error naming the op, the axis and the number of
dimensions), gradients through graphs of several ops (a tensor used twice, a diamond, an MLP),
and the fused switch (each fused op's kernel and its NumPy lines agree, and both pass gradcheck).
The ops' own tests are in the files named after their families (tests/test_ops_*.py)."""
import numpy as np
import pytest

import tensor
from tensor import functional as F
from ops_helpers import (COVERED, GRADIENT_TEST_MODULES, assert_forward, check,
                         cross_entropy_reference, gelu_reference, leaf, normal, registry,
                         uncovered)


# ---------------------------------------------------------------------------------------------
# Every op has a gradient test
# ---------------------------------------------------------------------------------------------
def test_every_op_has_a_gradient_test():
    registry()
    assert not uncovered(tensor.OPS), (
        f"ops in tensor.OPS without a gradient test in {', '.join(GRADIENT_TEST_MODULES)}: "
        f"{uncovered(tensor.OPS)}; add a test decorated with @covers(<op>)")
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
# Graphs of several ops
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
# The fused kernels against the NumPy lines of the same ops
# ---------------------------------------------------------------------------------------------
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
