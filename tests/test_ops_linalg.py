"""matmul and linear: forward against np.matmul on every combination of vectors, matrices and
broadcast batches, backward by gradcheck; empty axes give zeros or empty results, and their
gradients have the inputs' shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from ops_helpers import N_EXAMPLES, SEEDS, assert_forward, check, covers, leaf, normal


# ---------------------------------------------------------------------------------------------
# matmul
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


# ---------------------------------------------------------------------------------------------
# linear: x @ w + b in one node
# ---------------------------------------------------------------------------------------------
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
