"""Each fused kernel against its plain-NumPy reference (tensor/kernels/fused.py), float32 and
float64, on odd sizes and non-contiguous inputs; and AdamW's fused step against its NumPy path."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tensor
from tensor import optim
from tensor.kernels import fused as fk

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
SIZES = [1, 2, 7, 13, 31]


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_gelu(dtype, n):
    rng = np.random.default_rng(n)
    x = rand(rng, (n, 5), dtype, 4.0)             # covers the clamped tails of tanh too
    g = rand(rng, (n, 5), dtype)
    ref_x = x.astype(np.float64)
    np.testing.assert_allclose(fk.gelu_forward(x), fk.gelu_forward_ref(ref_x), **TOL[dtype])
    np.testing.assert_allclose(fk.gelu_backward(x, g), fk.gelu_backward_ref(ref_x, g),
                               **TOL[dtype])
    assert fk.gelu_forward(x).dtype == dtype


def test_gelu_far_tails_and_transposed_input():
    x = np.array([-60.0, -12.0, -9.5, 0.0, 1e-8, 9.5, 12.0, 60.0], dtype=np.float32)
    np.testing.assert_allclose(fk.gelu_forward(x), fk.gelu_forward_ref(x.astype(np.float64)),
                               rtol=1e-6, atol=1e-6)
    xt = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32).T   # not contiguous
    np.testing.assert_allclose(fk.gelu_forward(xt), fk.gelu_forward_ref(xt.astype(np.float64)),
                               **TOL[np.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, c", [(1, 1), (1, 7), (13, 31), (6, 128)])
def test_layernorm(dtype, rows, c):
    rng = np.random.default_rng(c)
    x, w, b = rand(rng, (rows, c), dtype, 3.0), rand(rng, c, dtype), rand(rng, c, dtype)
    g = rand(rng, (rows, c), dtype)
    out, mean, rstd = fk.layernorm_forward(x, w, b)
    ref_out, ref_mean, ref_rstd = fk.layernorm_forward_ref(*(a.astype(np.float64) for a in (x, w, b)))
    np.testing.assert_allclose(out, ref_out, **TOL[dtype])
    np.testing.assert_allclose(rstd, ref_rstd, **TOL[dtype])
    for got, want in zip(fk.layernorm_backward(g, x, w, mean, rstd),
                         fk.layernorm_backward_ref(g.astype(np.float64), x.astype(np.float64),
                                                   w.astype(np.float64), ref_mean, ref_rstd)):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"] * 10,
                                   atol=TOL[dtype]["atol"] * 10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, v", [(1, 1), (5, 2), (13, 65), (7, 257)])
def test_cross_entropy(dtype, n, v):
    rng = np.random.default_rng(v)
    z = rand(rng, (n, v), dtype, 5.0)
    t = rng.integers(0, v, n)
    t[::3] = -1                                   # ignored rows
    g = rand(rng, n, dtype)
    losses, lse = fk.cross_entropy_forward(z, t)
    ref_losses, ref_lse = fk.cross_entropy_forward_ref(z.astype(np.float64), t)
    np.testing.assert_allclose(losses, ref_losses, **TOL[dtype])
    np.testing.assert_allclose(fk.cross_entropy_backward(z, t, lse, g),
                               fk.cross_entropy_backward_ref(z.astype(np.float64), t, ref_lse, g),
                               **TOL[dtype])


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], dtype=np.float32)
    losses, _ = fk.cross_entropy_forward(z, np.array([0, 2]))
    assert np.isfinite(losses).all()
    np.testing.assert_allclose(losses, [0.0, 1e4], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=20)
@given(n=st.integers(1, 40), c=st.integers(1, 9), rows=st.integers(1, 6), seed=st.integers(0, 99))
def test_embedding_backward_adds_repeated_rows(dtype, n, c, rows, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, rows, size=n)           # repeats are likely
    g = rand(rng, (n, c), dtype)
    np.testing.assert_allclose(fk.embedding_backward(idx, g, rows),
                               fk.embedding_backward_ref(idx, g, rows), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (13, 31)])
def test_adamw_update(dtype, shape):
    rng = np.random.default_rng(1)
    p, m, v = rand(rng, shape, dtype), rand(rng, shape, dtype), np.abs(rand(rng, shape, dtype))
    p2, m2, v2 = p.copy(), m.copy(), v.copy()
    for step in (1, 2, 3):
        g = rand(rng, shape, dtype)
        fk.adamw_update(p, g, m, v, 1e-2, 0.9, 0.99, 1e-8, 0.1, step)
        fk.adamw_update_ref(p2, g, m2, v2, 1e-2, 0.9, 0.99, 1e-8, 0.1, step)
    for got, want in ((p, p2), (m, m2), (v, v2)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_adamw_fused_step_equals_numpy_step():
    rng = np.random.default_rng(0)
    make = lambda: [tensor.nn.Parameter(rng.standard_normal((4, 3)).astype(np.float32)),  # noqa
                    tensor.nn.Parameter(rng.standard_normal(3).astype(np.float32))]
    a = make()
    b = [tensor.nn.Parameter(p.data.copy()) for p in a]
    opt_a = optim.AdamW(a, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    opt_b = optim.AdamW(b, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.copy(), g.copy()
        with tensor.fused(True):
            opt_a.step()
        with tensor.fused(False):
            opt_b.step()
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-5, atol=1e-6)
