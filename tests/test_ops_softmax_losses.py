"""softmax and log_softmax (every axis, the attention form with scale and causal mask, large
logits, a 0-d input) and the losses cross_entropy (class ids with ignore_index, reductions,
label smoothing, probability targets) and nll_loss: forward against NumPy and PyTorch in float64,
backward by gradcheck with a random upstream gradient (the sum of a softmax is constant, so a
`.sum().backward()` test could not see a wrong backward), on both paths of the fused switch."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from tensor import kernels
from ops_helpers import (AXIS_SHAPES, N_EXAMPLES, N_TORCH_EXAMPLES, SEEDS, TF, assert_forward,
                         assert_same, check, covers, cross_entropy_reference, leaf,
                         log_softmax_reference, needs_torch, normal, positive, torch)


# ---------------------------------------------------------------------------------------------
# softmax and log_softmax
# ---------------------------------------------------------------------------------------------
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_softmax_without_the_kernels_is_the_kernels_reference_exactly(causal, dtype):
    # the NumPy lines in tensor/functional.py and the kernels' oracle in tensor/kernels/softmax.py
    # are the same arithmetic: equal to the last bit, forward and backward
    a = normal(0, (2, 3, 5)).astype(dtype)
    g = normal(1, (2, 3, 5)).astype(dtype)
    x = tensor.Tensor(a, requires_grad=True)
    with tensor.fused(False):
        out = F.softmax(x, -1, scale=0.7, causal=causal)
    out.backward(g)
    y = kernels.softmax_forward_ref(a, 0.7, causal)
    np.testing.assert_array_equal(out.data, y)
    np.testing.assert_array_equal(x.grad, kernels.softmax_backward_ref(y, g, 0.7))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
def test_softmax_names_a_bad_input_on_both_paths(fused):
    with tensor.fused(fused):
        with pytest.raises(TypeError, match="softmax: .* dtype int64"):
            F.softmax(tensor.Tensor(np.arange(3, dtype=np.int64)))
        with pytest.raises(ValueError, match=r"softmax: causal=True .*Tq <= Tk.*\(3, 2\)"):
            F.softmax(leaf(normal(0, (3, 2))), causal=True)           # a query would see no key
        with pytest.raises(ValueError, match="softmax: causal=True"):
            F.softmax(leaf(normal(0, 4)), causal=True)                # no query axis


def test_softmax_of_large_logits_is_finite():
    a = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -1002.0]])
    for axis in (0, 1):
        assert_forward(F.softmax(leaf(a), axis), np.exp(log_softmax_reference(a, axis)))
        assert_forward(F.log_softmax(leaf(a), axis), log_softmax_reference(a, axis))


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


# ---------------------------------------------------------------------------------------------
# cross_entropy and nll_loss
# ---------------------------------------------------------------------------------------------
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


LEAD = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)     # size-1 axes often
REDUCTIONS = ["mean", "sum", "none"]


@covers("cross_entropy")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@settings(max_examples=N_TORCH_EXAMPLES)
@given(lead=LEAD, classes=st.integers(1, 5), smoothing=st.sampled_from([0.0, 0.1, 0.75]),
       ignore=st.booleans(), seed=SEEDS)
@example(lead=(2, 3), classes=4, smoothing=0.0, ignore=True, seed=0)
@example(lead=(1,), classes=1, smoothing=0.1, ignore=False, seed=1)
def test_cross_entropy_matches_torch(fused, reduction, lead, classes, smoothing, ignore, seed):
    rng = np.random.default_rng(seed)
    z = normal(seed, lead + (classes,), 2.0)
    t = rng.integers(0, classes, size=lead)
    if ignore:
        t.reshape(-1)[::2] = -1                                    # tinygpt's default ignore id
    fn = lambda z: F.cross_entropy(z, t, reduction=reduction, label_smoothing=smoothing)  # noqa
    def torch_fn(z):
        out = TF.cross_entropy(z.reshape(-1, classes), torch.tensor(t.reshape(-1)),
                               ignore_index=-1, reduction=reduction, label_smoothing=smoothing)
        return out.reshape(lead) if reduction == "none" else out
    kept = (t != -1).sum()
    with tensor.fused(fused):
        if kept or reduction != "mean":     # all ignored with "mean": torch NaN, ours 0 (below)
            assert_same(fn, torch_fn, [z], seed)
        else:
            assert fn(leaf(z)).item() == 0.0
        check(fn, leaf(z))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@settings(max_examples=N_TORCH_EXAMPLES)
@given(lead=LEAD, classes=st.integers(1, 5), seed=SEEDS)
def test_cross_entropy_with_probability_targets_matches_torch(reduction, smoothing, lead,
                                                              classes, seed):
    z = normal(seed, lead + (classes,), 2.0)
    q = np.random.default_rng(seed).dirichlet(np.ones(classes), size=lead)   # rows sum to 1
    fn = lambda z: F.cross_entropy(z, q, reduction=reduction, label_smoothing=smoothing)  # noqa
    def torch_fn(z):
        out = TF.cross_entropy(z.reshape(-1, classes), torch.tensor(q.reshape(-1, classes)),
                               reduction=reduction, label_smoothing=smoothing)
        return out.reshape(lead) if reduction == "none" else out
    assert_same(fn, torch_fn, [z], seed)
    check(fn, leaf(z))


@needs_torch
def test_cross_entropy_with_unnormalized_probability_targets_matches_torch():
    z, q = normal(0, (3, 4)), positive(1, (3, 4))              # rows of q do not sum to 1
    assert_same(lambda z: F.cross_entropy(z, q), lambda z: TF.cross_entropy(z, torch.tensor(q)),
                [z], 2)


def test_cross_entropy_option_errors():
    z = leaf(normal(0, (2, 3)))
    with pytest.raises(ValueError, match="cross_entropy: reduction"):
        F.cross_entropy(z, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="cross_entropy: label_smoothing"):
        F.cross_entropy(z, np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(TypeError, match=r"cross_entropy: float64 targets .* \(2, 3\)"):
        F.cross_entropy(z, np.zeros((2, 4)))
    with pytest.raises(TypeError, match="cross_entropy: the targets require gradients"):
        F.cross_entropy(z, leaf(np.zeros((2, 3))))


@covers("nll_loss")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@settings(max_examples=N_TORCH_EXAMPLES)
@given(lead=LEAD, classes=st.integers(1, 5), ignore=st.booleans(), seed=SEEDS)
def test_nll_loss_matches_torch(reduction, lead, classes, ignore, seed):
    rng = np.random.default_rng(seed)
    x = normal(seed, lead + (classes,))
    t = rng.integers(0, classes, size=lead)
    if ignore:
        t.reshape(-1)[1::2] = -100
    fn = lambda x: F.nll_loss(x, t, ignore_index=-100, reduction=reduction)  # noqa: E731
    def torch_fn(x):
        out = TF.nll_loss(x.reshape(-1, classes), torch.tensor(t.reshape(-1)), ignore_index=-100,
                          reduction=reduction)
        return out.reshape(lead) if reduction == "none" else out
    if (t != -100).any() or reduction != "mean":
        assert_same(fn, torch_fn, [x], seed)
    check(fn, leaf(x))


@covers("nll_loss")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@settings(max_examples=N_TORCH_EXAMPLES)
@given(lead=LEAD, classes=st.integers(1, 5), ignore=st.booleans(), seed=SEEDS)
@example(lead=(4,), classes=3, ignore=True, seed=0)
def test_nll_loss_with_class_weights_matches_torch(reduction, lead, classes, ignore, seed):
    # torch's weighted mean divides by the sum of the weights of the kept rows' targets
    rng = np.random.default_rng(seed)
    x = normal(seed, lead + (classes,))
    t = rng.integers(0, classes, size=lead)
    w = positive(seed + 1, (classes,), low=0.1, high=4.0)
    if ignore:
        t.reshape(-1)[1::2] = -100
    fn = lambda x: F.nll_loss(x, t, ignore_index=-100, reduction=reduction,  # noqa: E731
                              weight=w)
    def torch_fn(x):
        out = TF.nll_loss(x.reshape(-1, classes), torch.tensor(t.reshape(-1)), ignore_index=-100,
                          reduction=reduction, weight=torch.tensor(w))
        return out.reshape(lead) if reduction == "none" else out
    if (t != -100).any() or reduction != "mean":
        assert_same(fn, torch_fn, [x], seed)
    check(fn, leaf(x))
    # by hand: the weighted mean over the kept rows
    flat, keep = x.reshape(-1, classes), t.reshape(-1) != -100
    picked = flat[keep, t.reshape(-1)[keep]] * w[t.reshape(-1)[keep]]
    if reduction == "mean" and keep.any():
        np.testing.assert_allclose(fn(leaf(x)).item(),
                                   -picked.sum() / w[t.reshape(-1)[keep]].sum(), rtol=1e-12)


def test_nll_loss_weight_errors_and_zero_weights():
    x = leaf(normal(0, (3, 4)))
    t = np.array([0, 1, 3])
    with pytest.raises(ValueError, match=r"nll_loss: weight must hold one number per class, "
                                         r"shape \(4,\), got shape \(3,\)"):
        F.nll_loss(x, t, weight=np.ones(3))
    with pytest.raises(TypeError, match="nll_loss: weight requires gradients"):
        F.nll_loss(x, t, weight=leaf(np.ones(4)))
    # every kept target weighs 0: the mean is 0 (as with every row ignored), not NaN
    out = F.nll_loss(x, t, weight=np.array([0.0, 0.0, 1.0, 0.0]))
    assert out.item() == 0.0
    out.backward()
    np.testing.assert_array_equal(x.grad, np.zeros((3, 4)))


def test_cross_entropy_is_nll_of_log_softmax():
    z, t = normal(3, (4, 6)), np.array([5, 0, -1, 2])
    a, b = leaf(z), leaf(z)
    F.cross_entropy(a, t, reduction="sum").backward()
    F.nll_loss(F.log_softmax(b), t, reduction="sum").backward()
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12, atol=1e-14)
