"""What the op tests (tests/test_ops_*.py) share: Hypothesis strategies, inputs kept away from
kinks and ties, the two checks (forward against a reference, backward by `tensor.gradcheck`), the
comparison with PyTorch, and the `@covers` registry.

Every op test follows one pattern: draw shapes (with size-1 axes, scalars and broadcasting pairs)
and float64 values with Hypothesis, compare the op's output with a NumPy (or PyTorch) reference,
then run `tensor.gradcheck`: central differences in float64 with a *random* upstream gradient, so
a backward that is only right for `g = 1` (the blind spot of `.sum().backward()` tests, e.g.
softmax) is caught.

`@covers("op")` registers a test as the gradient test of that op;
tests/test_ops_plumbing.py::test_every_op_has_a_gradient_test fails if an op is added to
`tensor.OPS` without one, and tests/test_docs.py checks the op table of docs/backprop.md against
the registry.
"""
import importlib
import math

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import gradcheck

try:                       # the parity extra; without it only the PyTorch comparisons skip and
    import torch           # every gradcheck still runs
    TF = torch.nn.functional
except ImportError:
    torch = TF = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch: pip install -e '.[parity]'")

N_EXAMPLES = 25            # Hypothesis examples per gradient test
N_TORCH_EXAMPLES = 20      # ... per comparison with PyTorch (each also runs a gradcheck)
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
    registry holds "module::test" names, e.g. "test_ops_elementwise::test_grad_unary"."""
    def register(test):
        for op in ops:
            COVERED.setdefault(op, []).append(f"{test.__module__}::{test.__name__}")
        return test
    return register


def uncovered(ops) -> list:
    return [op for op in ops if op not in COVERED]


# The modules with gradient tests, one per family of tensor/functional.py: importing them runs
# their @covers, so the guard sees them all when one file runs alone too.
GRADIENT_TEST_MODULES = ("test_ops_elementwise", "test_ops_reductions", "test_ops_shape",
                         "test_ops_linalg", "test_ops_activations", "test_ops_normalization",
                         "test_ops_softmax_losses", "test_ops_dropout", "test_ops_attention")


def registry() -> dict:
    """COVERED, complete: {op: ["module::test", ...]} over GRADIENT_TEST_MODULES."""
    for name in GRADIENT_TEST_MODULES:
        importlib.import_module(name)
    return COVERED


# ---------------------------------------------------------------------------------------------
# Inputs: float64 leaves, values away from kinks and ties
# ---------------------------------------------------------------------------------------------
def leaf(a) -> tensor.Tensor:
    return tensor.Tensor(np.array(a, dtype=np.float64), requires_grad=True)


def normal(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def away_from_zero(seed, shape, margin=1e-3):
    """|x| > margin: no input sits on a kink at 0 (relu), nor makes 1/x blow up."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=shape) * (margin + np.abs(rng.standard_normal(shape)))


def away_from(a, points, margin=1e-2):
    """Move entries of `a` that sit within `margin` of one of `points` (a kink) by 5·margin."""
    a = np.array(a, dtype=np.float64)
    for p in points:
        if p is not None:
            near = np.abs(a - p) < margin
            a[near] += 5 * margin
    return a


def positive(seed, shape, low=0.3, high=3.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def distinct(seed, shape):
    """Values at least ~0.1 apart (a shuffled ramp plus tiny noise): max has no ties."""
    rng = np.random.default_rng(seed)
    size = math.prod(shape)
    ramp = rng.permutation(size).reshape(shape) - (size - 1) / 2
    return 0.1 * ramp + rng.uniform(-1e-3, 1e-3, size=shape)


# ---------------------------------------------------------------------------------------------
# The two checks, and the comparison with PyTorch
# ---------------------------------------------------------------------------------------------
def assert_forward(out, expected, rtol=1e-10, atol=1e-12):
    """The op's output matches the NumPy reference in value, shape and dtype (float64)."""
    expected = np.asarray(expected)
    assert isinstance(out, tensor.Tensor)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    assert out.dtype == np.float64, out.dtype
    np.testing.assert_allclose(out.data, expected, rtol=rtol, atol=atol)


def check(fn, *inputs, **kwargs):
    assert gradcheck(fn, *inputs, **kwargs)


def torch_or_skip():
    return pytest.importorskip("torch")


def torch_run(fn, arrays, g):
    """fn on float64 torch leaves; its output and the leaves' gradients for upstream g."""
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*leaves)
    out.backward(torch.tensor(np.asarray(g, dtype=np.float64)))
    return out.detach().numpy(), [t.grad.numpy() for t in leaves]


def ours_run(fn, arrays, g):
    leaves = [leaf(a) for a in arrays]
    out = fn(*leaves)
    out.backward(np.asarray(g, dtype=np.float64))
    return out.data, [t.grad for t in leaves]


def assert_same(fn, torch_fn, arrays, seed, rtol=1e-10, atol=1e-12):
    """fn's output and gradients equal PyTorch's (torch_fn on the same float64 inputs). Without
    torch this comparison is left out; the tests' gradchecks still run. (Tests whose only check
    is this comparison carry @needs_torch.)"""
    if torch is None:
        return
    ours = fn(*[leaf(a) for a in arrays])
    g = normal(seed, ours.shape)
    out, grads = ours_run(fn, arrays, g)
    t_out, t_grads = torch_run(torch_fn, arrays, g)
    np.testing.assert_allclose(out, t_out, rtol=rtol, atol=atol)
    for got, want in zip(grads, t_grads):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# References used by more than one family's tests
# ---------------------------------------------------------------------------------------------
def gelu_reference(a):
    # GPT-2's tanh approximation of x·Φ(x)
    return 0.5 * a * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (a + 0.044715 * a**3)))


def log_softmax_reference(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


def cross_entropy_reference(logits, targets, ignore_index):
    v = logits.shape[-1]
    z, t = logits.reshape(-1, v), targets.reshape(-1)
    keep = t != ignore_index
    logp = log_softmax_reference(z, axis=1)
    return -logp[keep, t[keep]].sum() / max(keep.sum(), 1)
