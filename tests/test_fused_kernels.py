"""Each fused kernel (tensor/kernels/fused.py) against its one plain-NumPy reference: the op's own
path with the kernels off (`tensor.fused(False)`: the NumPy lines of tensor/functional.py, and of
AdamW.step in tensor/optim.py), run in float64 on the same inputs. float32 and float64 kernels,
odd sizes, non-contiguous inputs."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tensor
from tensor import functional as F, optim
from tensor.kernels import fused as fk

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
SIZES = [1, 2, 7, 13, 31]


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def leaf64(a):
    return tensor.Tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def numpy_path(fn, inputs, g):
    """fn's output and the gradients of `inputs` (float64 copies) with the kernels off."""
    leaves = [leaf64(a) for a in inputs]
    with tensor.fused(False):
        out = fn(*leaves)
        out.backward(np.asarray(g, dtype=np.float64))
    return out.data, [t.grad for t in leaves]


def gelu_reference(x, g):
    out, (dx,) = numpy_path(F.gelu, [x], g)
    return out, dx


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_gelu(dtype, n):
    rng = np.random.default_rng(n)
    x = rand(rng, (n, 5), dtype, 4.0)             # covers the clamped tails of tanh too
    g = rand(rng, (n, 5), dtype)
    out, dx = gelu_reference(x, g)
    np.testing.assert_allclose(fk.gelu_forward(x), out, **TOL[dtype])
    np.testing.assert_allclose(fk.gelu_backward(x, g), dx, **TOL[dtype])
    assert fk.gelu_forward(x).dtype == dtype


def test_gelu_far_tails_and_transposed_input():
    x = np.array([-60.0, -12.0, -9.5, 0.0, 1e-8, 9.5, 12.0, 60.0], dtype=np.float32)
    out, _ = gelu_reference(x, np.ones_like(x))
    np.testing.assert_allclose(fk.gelu_forward(x), out, rtol=1e-6, atol=1e-6)
    xt = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32).T   # not contiguous
    out, _ = gelu_reference(xt, np.ones_like(xt))
    np.testing.assert_allclose(fk.gelu_forward(xt), out, **TOL[np.float32])


@pytest.mark.parametrize("dtype", DTYPES)
def test_erf_matches_math_erf(dtype):
    x = np.concatenate([np.linspace(-7, 7, 2001), [0.0, -0.0, 1e-300, 30.0, -30.0]]).astype(dtype)
    expected = np.array([math.erf(float(v)) for v in x])
    np.testing.assert_allclose(fk.erf(x), expected, rtol=1e-6 if dtype == np.float32 else 1e-15,
                               atol=1e-7 if dtype == np.float32 else 1e-16)
    assert fk.erf(x).dtype == dtype
    xt = x[:600].reshape(20, 30).T                                   # not contiguous
    np.testing.assert_array_equal(fk.erf(xt), fk.erf(np.ascontiguousarray(xt)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, c", [(1, 1), (1, 7), (13, 31), (6, 128)])
def test_layernorm(dtype, rows, c):
    rng = np.random.default_rng(c)
    x, w, b = rand(rng, (rows, c), dtype, 3.0), rand(rng, c, dtype), rand(rng, c, dtype)
    g = rand(rng, (rows, c), dtype)
    out, mean, rstd = fk.layernorm_forward(x, w, b)
    ref_out, ref_grads = numpy_path(F.layer_norm, [x, w, b], g)
    np.testing.assert_allclose(out, ref_out, **TOL[dtype])
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(-1), **TOL[dtype])
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x64.var(-1) + 1e-5), **TOL[dtype])
    for got, want in zip(fk.layernorm_backward(g, x, w, mean, rstd), ref_grads):
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
    ref_losses, (ref_dz,) = numpy_path(lambda z: F.cross_entropy(z, t, reduction="none"), [z], g)
    np.testing.assert_allclose(losses, ref_losses, **TOL[dtype])
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(lse, np.log(np.exp(z64).sum(axis=1)), **TOL[dtype])
    np.testing.assert_allclose(fk.cross_entropy_backward(z, t, lse, g), ref_dz, **TOL[dtype])


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
    w = rand(rng, (rows, c), dtype)
    _, (dw,) = numpy_path(lambda w: F.embedding(idx, w), [w], g)
    np.testing.assert_allclose(fk.embedding_backward(idx, g, rows), dw, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (13, 31)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_fused_step_equals_numpy_step(dtype, shape, weight_decay):
    rng = np.random.default_rng(1)
    make = lambda: [tensor.nn.Parameter(rand(rng, shape, dtype)),   # noqa: E731
                    tensor.nn.Parameter(rand(rng, 3, dtype))]
    a = make()
    b = [tensor.nn.Parameter(p.data.copy()) for p in a]
    kwargs = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=weight_decay,
                  decay_filter=lambda p: p.size > 3)
    opt_a, opt_b = optim.AdamW(a, **kwargs), optim.AdamW(b, **kwargs)
    for _ in range(4):
        grads = [rand(rng, p.shape, dtype) for p in a]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.copy(), g.copy()
        with tensor.fused(True):
            opt_a.step()
        with tensor.fused(False):
            opt_b.step()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for p, q in zip(a, b):
        np.testing.assert_allclose(p.data, q.data, **tol)
    for got, want in zip(opt_a.m + opt_a.v, opt_b.m + opt_b.v):
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (13, 31)])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.97])
def test_dropout_mask_kernel_equals_numpy_path(dtype, shape, p):
    # the same generator state on both paths: the same bits, so exactly the same mask
    with tensor.fused(True):
        fused = F._dropout_mask(shape, p, dtype, np.random.default_rng(3))
    with tensor.fused(False):
        plain = F._dropout_mask(shape, p, dtype, np.random.default_rng(3))
    assert fused.dtype == plain.dtype == dtype and fused.shape == plain.shape == shape
    np.testing.assert_array_equal(fused, plain)
    # and both follow the rule from the generator's raw 32-bit words
    n = math.prod(shape)
    words = np.random.default_rng(3).bit_generator.random_raw((n + 1) // 2)
    bits = [(int(w) >> s) & 0xFFFFFFFF for w in words for s in (0, 32)][:n]   # low half first
    keep = np.array([b >= math.ceil(p * 2**32) for b in bits], dtype=bool).reshape(shape)
    scale = dtype(1) / dtype(1 - p)
    np.testing.assert_array_equal(plain, np.where(keep, scale, dtype(0)))
