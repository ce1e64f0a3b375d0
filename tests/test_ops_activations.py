"""The activations relu, gelu (both forms), sigmoid and silu: forward against NumPy and
PyTorch, backward by gradcheck (relu's inputs kept away from its kink at 0), and finite results
for inputs far out on either side."""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from ops_helpers import (N_EXAMPLES, N_TORCH_EXAMPLES, SEEDS, SHAPES, TF, assert_forward,
                         assert_same, away_from_zero, check, covers, gelu_reference, leaf,
                         needs_torch, normal, torch)


def sigmoid_reference(a):
    return 1.0 / (1.0 + np.exp(-a))


ACTIVATIONS = {
    "relu": (F.relu, lambda a: np.maximum(a, 0.0), away_from_zero),
    "gelu": (F.gelu, gelu_reference, lambda seed, shape: normal(seed, shape, 2.0)),
    "sigmoid": (F.sigmoid, sigmoid_reference, lambda seed, shape: normal(seed, shape, 3.0)),
    "silu": (F.silu, lambda a: a * sigmoid_reference(a),
             lambda seed, shape: normal(seed, shape, 3.0)),
}


@covers(*ACTIVATIONS)
@pytest.mark.parametrize("op", ACTIVATIONS)
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, seed=SEEDS)
@example(shape=(), seed=0)
@example(shape=(1, 5, 1), seed=1)
def test_grad_activation(op, shape, seed):
    f, ref, values = ACTIVATIONS[op]
    a = values(seed, shape)
    x = leaf(a)
    assert_forward(f(x), ref(a))
    assert_forward(getattr(x, op)(), ref(a))     # the method too: x.relu(), x.gelu(), ...
    check(f, x)


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


# ---------------------------------------------------------------------------------------------
# gelu: the tanh form (GPT-2's, the default) and the exact erf form
# ---------------------------------------------------------------------------------------------
def test_gelu_is_close_to_the_exact_erf_form():
    # An independent oracle for the forward: the tanh form is within ~1e-3 of x·Φ(x).
    a = np.linspace(-5, 5, 101)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in a])
    np.testing.assert_allclose(F.gelu(leaf(a)).data, exact, atol=2e-3)


@covers("gelu")
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@settings(max_examples=N_TORCH_EXAMPLES)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), seed=SEEDS)
@example(shape=(), seed=0)
def test_gelu_matches_torch(approximate, shape, seed):
    a = normal(seed, shape, 3.0)
    fn = lambda x: F.gelu(x, approximate=approximate)  # noqa: E731
    assert_same(fn, lambda x: TF.gelu(x, approximate=approximate), [a], seed,
                rtol=1e-13, atol=1e-15)
    check(fn, leaf(a))


@needs_torch
def test_gelu_default_is_the_tanh_form_and_nn_gelu_takes_the_same_choice():
    a = np.linspace(-4, 4, 9)
    tanh_form = TF.gelu(torch.tensor(a), approximate="tanh").numpy()
    np.testing.assert_allclose(F.gelu(leaf(a)).data, tanh_form, rtol=1e-13)
    np.testing.assert_allclose(tensor.nn.GELU()(leaf(a)).data, tanh_form, rtol=1e-13)
    np.testing.assert_allclose(tensor.nn.GELU("none")(leaf(a)).data, TF.gelu(torch.tensor(a)),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="gelu: approximate"):
        F.gelu(leaf(a), approximate="erf")


@needs_torch
def test_gelu_exact_in_float32():
    a = np.linspace(-6, 6, 101).astype(np.float32)
    out = F.gelu(tensor.Tensor(a), approximate="none")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, TF.gelu(torch.tensor(a.astype(np.float64))).numpy(),
                               rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# leaky_relu and elu: a kink at 0 (kept out of the gradchecks), whose slope follows torch
# ---------------------------------------------------------------------------------------------
PIECEWISE = {
    "leaky_relu": (F.leaky_relu, lambda a, s: np.where(a > 0, a, s * a), TF and TF.leaky_relu),
    "elu": (F.elu, lambda a, s: np.where(a > 0, a, s * np.expm1(a)), TF and TF.elu),
}


@covers(*PIECEWISE)
@pytest.mark.parametrize("op", PIECEWISE)
@settings(max_examples=N_TORCH_EXAMPLES)
@given(shape=SHAPES, slope=st.sampled_from([None, 0.2, 1.5, -0.5]), seed=SEEDS)
@example(shape=(), slope=None, seed=0)
@example(shape=(2, 1, 3), slope=0.2, seed=1)
def test_grad_leaky_relu_elu(op, shape, slope, seed):
    f, ref, torch_f = PIECEWISE[op]
    a = 2.0 * away_from_zero(seed, shape, margin=1e-2)
    fn = f if slope is None else (lambda x: f(x, slope))
    default = 0.01 if op == "leaky_relu" else 1.0
    assert_forward(fn(leaf(a)), ref(a, default if slope is None else slope), rtol=1e-14)
    check(fn, leaf(a))
    assert_same(fn, torch_f if slope is None else (lambda t: torch_f(t, slope)), [a], seed,
                rtol=1e-14, atol=1e-15)


@needs_torch
@pytest.mark.parametrize("op", PIECEWISE)
def test_leaky_relu_elu_at_zero_and_far_out_like_torch(op):
    f, _, torch_f = PIECEWISE[op]
    a = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    with np.errstate(over="raise"):                  # elu's eˣ is taken on the negative side only
        x = leaf(a)
        out = f(x, 0.3)
    t = torch.tensor(a, requires_grad=True)
    t_out = torch_f(t, 0.3)
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), rtol=1e-15)
    out.backward(np.ones(5))
    t_out.backward(torch.ones(5, dtype=torch.float64))
    np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-15)       # at 0: the slope 0.3
    assert x.grad[2] == 0.3
    assert F.leaky_relu(tensor.tensor([-1.0, 2.0])).dtype == np.float32
