"""The Tensor's behaviour: dtypes, creation, the backward walk, graph memory, grad modes,
operators with NumPy and Python values, and the errors users see."""
import gc
import weakref

import numpy as np
import pytest

import tensor
from tensor import functional as F


def leaf(a, dtype=np.float64):
    return tensor.Tensor(np.array(a, dtype=dtype), requires_grad=True)


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [[1, 2, 3], [[1.5, 2.0], [3.0, 4.0]], 3, 2.5, -7, [True, 2]],
                         ids=["int list", "float list", "int", "float", "negative int", "mixed"])
def test_lists_and_python_numbers_default_to_float32(data):
    t = tensor.tensor(data)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.asarray(data, dtype=np.float32))


def test_arrays_keep_float32_and_float64_and_other_floats_become_float32():
    assert tensor.tensor(np.ones(3, dtype=np.float64)).dtype == np.float64
    assert tensor.tensor(np.ones(3, dtype=np.float32)).dtype == np.float32
    assert tensor.tensor(np.ones(3, dtype=np.float16)).dtype == np.float32
    assert tensor.tensor([1, 2], dtype=np.float64).dtype == np.float64
    # integer and bool arrays stay as they are: indices, targets, masks
    assert tensor.tensor(np.arange(3)).dtype == np.arange(3).dtype
    assert tensor.tensor(np.array([True, False])).dtype == np.bool_


def op_cases(dtype):
    """One call of every op in tensor.OPS on inputs of `dtype`; returns {name: (thunk, leaves)}."""
    rng = np.random.default_rng(0)

    def t(*shape):   # positive values: safe for log, sqrt, and as denominators
        return tensor.Tensor(rng.uniform(0.5, 2.0, size=shape).astype(dtype), requires_grad=True)

    x, y, w, b = t(3, 4), t(4), t(4), t(4)
    m, emb = t(4, 2), t(5, 4)
    mask = np.array([True, False, False, True])
    return {
        "add": (lambda: x + y, (x, y)),
        "sub": (lambda: x - y, (x, y)),
        "mul": (lambda: x * y, (x, y)),
        "div": (lambda: x / y, (x, y)),
        "neg": (lambda: -x, (x,)),
        "pow": (lambda: x ** 1.5, (x,)),
        "exp": (lambda: x.exp(), (x,)),
        "log": (lambda: x.log(), (x,)),
        "sqrt": (lambda: x.sqrt(), (x,)),
        "tanh": (lambda: x.tanh(), (x,)),
        "relu": (lambda: (x - 1.0).relu(), (x,)),
        "gelu": (lambda: x.gelu(), (x,)),
        "cast": (lambda: F.cast(x, dtype), (x,)),
        "sum": (lambda: x.sum(axis=0), (x,)),
        "mean": (lambda: x.mean(), (x,)),
        "max": (lambda: x.max(axis=-1, keepdims=True), (x,)),
        "var": (lambda: x.var(axis=1), (x,)),
        "reshape": (lambda: x.reshape(2, 6), (x,)),
        "transpose": (lambda: x.T, (x,)),
        "permute": (lambda: x.permute(1, 0), (x,)),
        "getitem": (lambda: x[[0, 0], 1:], (x,)),
        "concatenate": (lambda: F.concatenate([x, x], axis=1), (x,)),
        "stack": (lambda: F.stack([x, x]), (x,)),
        "split": (lambda: F.split(x, 2, axis=1), (x,)),
        "where": (lambda: F.where(mask, x, y), (x, y)),
        "masked_fill": (lambda: F.masked_fill(x, mask, -1e9), (x,)),
        "matmul": (lambda: x @ m, (x, m)),
        "linear": (lambda: F.linear(x, m, m[0]), (x, m)),
        "softmax": (lambda: x.softmax(-1), (x,)),
        "log_softmax": (lambda: F.log_softmax(x, 0), (x,)),
        "cross_entropy": (lambda: F.cross_entropy(x, np.array([0, 3, -1])), (x,)),
        "layer_norm": (lambda: F.layer_norm(x, w, b), (x, w, b)),
        "dropout": (lambda: F.dropout(x, 0.5, generator=np.random.default_rng(0)), (x,)),
        "embedding": (lambda: F.embedding(np.array([0, 4, 4]), emb), (emb,)),
        "attention": (lambda: F.attention(x.reshape(1, 2, 6), 2), (x,)),
        "nll_loss": (lambda: F.nll_loss(x, np.array([0, 3, -1])), (x,)),
        "scaled_dot_product_attention": (
            lambda: F.scaled_dot_product_attention(x, m.T, m.T, mask=np.tri(3, 2, dtype=bool)),
            (x, m)),
        "abs": (lambda: F.abs(x - 1.0), (x,)),
        "clip": (lambda: F.clip(x, 0.7, 1.5), (x,)),
        "sigmoid": (lambda: F.sigmoid(x), (x,)),
        "silu": (lambda: F.silu(x), (x,)),
        "rsqrt": (lambda: F.rsqrt(x), (x,)),
        "maximum": (lambda: F.maximum(x, y), (x, y)),
        "minimum": (lambda: F.minimum(x, y), (x, y)),
        "min": (lambda: F.min(x, axis=0), (x,)),
        "logsumexp": (lambda: F.logsumexp(x, axis=-1), (x,)),
        "std": (lambda: F.std(x, axis=1, correction=1), (x,)),
        "expand": (lambda: F.expand(y, 3, 4), (y,)),
        "repeat": (lambda: F.repeat(x, 2, 1), (x,)),
        "gather": (lambda: F.gather(x, 1, np.array([[0, 0], [3, 1], [2, 2]])), (x,)),
        "tril": (lambda: F.tril(x), (x,)),
        "triu": (lambda: F.triu(x, 1), (x,)),
        "pad": (lambda: F.pad(x, (1, 2)), (x,)),
        "floor_divide": (lambda: x // y, (x, y)),
        "sin": (lambda: x.sin(), (x,)),
        "cos": (lambda: x.cos(), (x,)),
        "prod": (lambda: x.prod(axis=1), (x,)),
        "cumsum": (lambda: x.cumsum(0), (x,)),
        "flip": (lambda: x.flip(0, 1), (x,)),
        "squeeze": (lambda: x.reshape(3, 1, 4).squeeze(), (x,)),
        "unsqueeze": (lambda: x.unsqueeze(1), (x,)),
        "flatten": (lambda: x.flatten(), (x,)),
        "leaky_relu": (lambda: F.leaky_relu(x - 1.0, 0.1), (x,)),
        "elu": (lambda: F.elu(x - 1.0), (x,)),
    }


def test_the_dtype_table_covers_every_op():
    assert set(op_cases(np.float64)) == set(tensor.OPS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", tensor.OPS)
def test_every_op_keeps_the_float_dtype(op, dtype):
    thunk, leaves = op_cases(dtype)[op]
    outs = thunk()
    outs = outs if isinstance(outs, list) else [outs]
    for out in outs:
        assert out.dtype == dtype, f"{op}: {np.dtype(dtype)} in, {out.dtype} out"
        out.backward(np.ones(out.shape, dtype=dtype))
    for x in leaves:
        assert x.grad is not None and x.grad.dtype == dtype, f"{op}: gradient dtype {x.grad.dtype}"


def test_python_and_numpy_constants_keep_float32():
    x = tensor.tensor([1.0, 2.0, 3.0])
    for out in (x * 2.5, 2.5 * x, x + 1, x / np.float64(3.0), x - np.ones(3),
                np.ones(3, dtype=np.float64) * x, F.where(np.array([True, False, True]), x, 0.5)):
        assert out.dtype == np.float32


def test_pow_with_a_numpy_scalar_exponent_keeps_float32():
    # `x ** np.float64(2)` is NumPy-2 promotion float32 ** float64 -> float64; every other op
    # turns constants into x's dtype first (as_tensor(..., like=x)).
    x = tensor.tensor([1.0, 2.0, 3.0])
    assert (x * np.float64(2.0)).dtype == np.float32
    assert (x ** np.float64(2.0)).dtype == np.float32


def other_op_cases(dtype):
    """A second call of some ops, with other arguments: a number or a row as the second
    operand, other axes, bounds and indices."""
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
        "div": lambda: x.div(y, rounding_mode="trunc"),
        "floor_divide": lambda: 3 // x,
        "nll_loss": lambda: F.nll_loss(x, np.array([0, 3, -1]), weight=np.arange(4.0)),
        "scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(
            x, x, x, mask=np.zeros((3, 3))),              # a float64 mask: q's dtype wins
    }, (x, y)


OTHER_CASE_OPS = ("abs", "clip", "sigmoid", "silu", "rsqrt", "maximum", "minimum", "min",
                  "logsumexp", "std", "expand", "repeat", "gather", "tril", "triu", "pad", "div",
                  "floor_divide", "nll_loss", "scaled_dot_product_attention")


def test_the_second_dtype_table_covers_its_ops():
    cases, _ = other_op_cases(np.float32)
    assert sorted(cases) == sorted(OTHER_CASE_OPS)
    assert set(OTHER_CASE_OPS) <= set(tensor.OPS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_ops_keep_the_float_dtype_with_other_arguments(dtype):
    cases, leaves = other_op_cases(dtype)
    for op, thunk in cases.items():
        out = thunk()
        assert out.dtype == dtype, f"{op}: {np.dtype(dtype)} in, {out.dtype} out"
        out.backward(np.ones(out.shape, dtype=dtype))
        for t in leaves:
            assert t.grad is None or t.grad.dtype == dtype, f"{op}: gradient {t.grad.dtype}"
            t.grad = None


# ---------------------------------------------------------------------------------------------
# Creation helpers
# ---------------------------------------------------------------------------------------------
def test_zeros_and_ones():
    for make, ref in ((tensor.zeros, np.zeros), (tensor.ones, np.ones)):
        for t in (make(2, 3), make((2, 3))):
            assert t.dtype == np.float32 and not t.requires_grad
            np.testing.assert_array_equal(t.data, ref((2, 3)))
        t = make(4, dtype=np.float64, requires_grad=True)
        assert t.dtype == np.float64 and t.requires_grad and t.shape == (4,)


def test_randn_repeats_with_the_same_seed_or_generator():
    a, b = tensor.randn(3, 4, seed=11), tensor.randn(3, 4, seed=11)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dtype == np.float32 and a.shape == (3, 4)
    assert not np.array_equal(a.data, tensor.randn(3, 4, seed=12).data)
    g1, g2 = tensor.randn(5, generator=np.random.default_rng(7)), \
        tensor.randn(5, generator=np.random.default_rng(7))
    np.testing.assert_array_equal(g1.data, g2.data)
    # they are standard normal samples from that generator
    np.testing.assert_array_equal(g1.data, np.random.default_rng(7).standard_normal(5)
                                  .astype(np.float32))
    tensor.manual_seed(3)
    m1 = tensor.randn(2, 2)
    tensor.manual_seed(3)
    np.testing.assert_array_equal(m1.data, tensor.randn(2, 2).data)
    assert tensor.randn(2, dtype=np.float64, requires_grad=True, seed=0).requires_grad


@pytest.mark.parametrize("args, kwargs", [((5,), {}), ((2, 7), {}), ((0, 1, 0.25), {}),
                                          ((3, -3, -2), {}), ((10,), {"step": 3})],
                         ids=["stop", "start-stop", "float step", "negative step", "step keyword"])
def test_arange_matches_numpy(args, kwargs):
    t = tensor.arange(*args, **kwargs)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.data, np.arange(*args, **kwargs, dtype=np.float32))


def test_arange():
    np.testing.assert_array_equal(tensor.arange(5).data, np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(tensor.arange(1, 2, 0.25, dtype=np.float64).data,
                                  [1.0, 1.25, 1.5, 1.75])
    assert tensor.arange(3).dtype == np.float32 and not tensor.arange(3).requires_grad


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


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------
def test_backward_on_a_scalar_starts_from_one():
    a = normal(0, (2, 3))
    x = leaf(a)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * a)
    x = leaf(a)
    (x * 3.0).sum(keepdims=True).backward()          # a (1, 1) tensor: also one element
    np.testing.assert_allclose(x.grad, np.full((2, 3), 3.0))


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = leaf(normal(0, (2, 3)))
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        (x * 2).backward(np.ones((3, 2)))
    g = normal(1, (2, 3))
    (x * 2).backward(tensor.Tensor(g))              # a Tensor gradient is fine too
    np.testing.assert_allclose(x.grad, 2 * g)


def test_backward_needs_a_tensor_that_requires_grad():
    with pytest.raises(RuntimeError, match="requires_grad"):
        (tensor.tensor([1.0, 2.0]) * 2).sum().backward()


def test_a_ten_thousand_op_chain_backpropagates():
    x = leaf([0.5, -1.0])
    z = x
    for i in range(10_000):                          # no recursion: the walk is iterative
        z = z * 1.0001 if i % 2 else z + 0.001
    z.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001 ** 5000), rtol=1e-12)


def test_a_tensor_feeding_several_ops_gets_every_contribution():
    a = normal(0, (3,))
    x = leaf(a)
    out = (x * 3.0).sum() + x.exp().sum() + x[0] + (x * x).sum()
    out.backward()
    expected = 3.0 + np.exp(a) + np.array([1.0, 0.0, 0.0]) + 2 * a
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


def test_leaf_grad_accumulates_over_separate_graphs():
    x = leaf(normal(0, (4,)))
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full(4, 5.0))


def test_retain_graph_allows_a_second_backward_that_adds_up():
    a = normal(0, (4,))
    x = leaf(a)
    out = (x.exp() * x).sum()
    out.backward(retain_graph=True)
    once = x.grad.copy()
    np.testing.assert_allclose(once, np.exp(a) * (1 + a), rtol=1e-12)
    out.backward()
    np.testing.assert_allclose(x.grad, 2 * once, rtol=1e-12)


def test_a_second_backward_without_retain_graph_raises():
    x = leaf(normal(0, (4,)))
    out = (x.exp() * x).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        out.backward()


def test_intermediate_grads_are_not_kept_and_constants_get_none():
    x, c = leaf([1.0, 2.0]), tensor.Tensor(np.array([3.0, 4.0]))
    h = x * c
    h.sum().backward()
    assert h.grad is None and c.grad is None
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_grad_is_a_plain_array_the_tensor_owns_after_assignment():
    p = tensor.Tensor(np.zeros((3, 4), dtype=np.float32), requires_grad=True)
    row = np.arange(4, dtype=np.float32)
    for value in (np.broadcast_to(row, (3, 4)),          # a read-only view of p's shape
                  row,                                    # a row, broadcast to p's shape
                  np.ones((3, 4)),                        # float64
                  2.5):                                   # a number
        p.grad = value
        assert type(p.grad) is np.ndarray, type(p.grad)
        assert p.grad.shape == (3, 4) and p.grad.dtype == np.float32
        np.testing.assert_array_equal(p.grad, np.broadcast_to(value, (3, 4)))
        p.grad[0, 0] = 7.0                                # p's own: what it came from is untouched
        np.testing.assert_array_equal(row, np.arange(4))
    p.grad = np.broadcast_to(row, (3, 4))
    (p * 2.0).sum().backward()                            # backward adds into it
    assert type(p.grad) is np.ndarray
    np.testing.assert_array_equal(p.grad, np.broadcast_to(row, (3, 4)) + 2.0)
    mine = np.zeros((3, 4), dtype=np.float32)             # an array of p's shape and dtype is
    p.grad = mine                                         # kept as it is, as in PyTorch
    (p * 1.0).sum().backward()
    assert p.grad is mine and (mine == 1.0).all()


def test_writing_into_a_grad_cannot_change_another_tensors_grad():
    # add hands the same g to both inputs, sum a view with size-1 axes, reshape a view of g:
    # each first contribution is borrowed during backward, and each leaf ends with its own array
    g = normal(0, (2, 3))
    x, y, z = leaf(np.zeros((2, 3))), leaf(np.zeros((2, 3))), leaf(np.zeros(6))
    out = x + y + z.reshape(2, 3)
    out.backward(g)
    s, t = leaf(np.ones((2, 3))), leaf(np.ones((2, 3)))
    (s.sum() + t.sum()).backward()
    for a in (x, y, z, s, t):
        assert type(a.grad) is np.ndarray and a.grad.flags.writeable
    x.grad[...] = -1.0
    z.grad[...] = -2.0
    s.grad[...] = -3.0
    np.testing.assert_array_equal(y.grad, g)
    np.testing.assert_array_equal(g, normal(0, (2, 3)))   # nor the gradient passed in
    np.testing.assert_array_equal(t.grad, np.ones((2, 3)))


def test_a_failed_backward_leaves_no_placeholder_in_grad():
    x = leaf([1.0, 2.0])
    out = (x * x).sum()
    out.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        out.backward()
    assert out.grad is None
    assert type(x.grad) is np.ndarray


def _graph_with_a_watched_intermediate(retain_graph):
    x = leaf(normal(0, (3,)))
    h = x * 2.0                                      # the intermediate
    out = (h * h).sum()
    watched = weakref.ref(h)
    del h
    out.backward(retain_graph=retain_graph)
    gc.collect()
    return out, watched


def test_backward_releases_the_graph():
    out, watched = _graph_with_a_watched_intermediate(retain_graph=False)
    assert watched() is None, "the output still holds the intermediate after backward"
    assert out._parents == ()


def test_retain_graph_keeps_the_graph():
    out, watched = _graph_with_a_watched_intermediate(retain_graph=True)
    assert watched() is not None
    out.backward(retain_graph=True)                  # the kept graph can be walked again
    assert watched() is not None
    del out
    gc.collect()
    assert watched() is None                         # ...until the output itself goes


# ---------------------------------------------------------------------------------------------
# Grad modes, detach, numpy, item
# ---------------------------------------------------------------------------------------------
def test_no_grad_builds_no_graph():
    x = leaf(normal(0, (3,)))
    with tensor.no_grad():
        assert not tensor.is_grad_enabled()
        y = (x * 2).exp().sum()
    assert tensor.is_grad_enabled()
    assert not y.requires_grad and y._parents == () and y._backward is None
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(KeyError):
        with tensor.no_grad():
            raise KeyError("boom")
    assert tensor.is_grad_enabled()
    with tensor.no_grad():
        with pytest.raises(KeyError):
            with tensor.enable_grad():
                raise KeyError("boom")
        assert not tensor.is_grad_enabled()          # back to the enclosing no_grad


def test_enable_grad_inside_no_grad():
    x = leaf([1.0, 2.0])
    with tensor.no_grad():
        with tensor.no_grad():
            pass
        assert not tensor.is_grad_enabled()          # the inner exit restored "off", not "on"
        with tensor.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and not z.requires_grad


def test_detach_shares_data_and_stops_gradients():
    a = normal(0, (3,))
    x = leaf(a)
    d = x.detach()
    assert not d.requires_grad and d._parents == ()
    assert np.shares_memory(d.data, x.data)
    (x * d).sum().backward()                         # d is a constant: d(x·d)/dx = d
    np.testing.assert_allclose(x.grad, a)


def test_numpy_shares_the_array():
    x = leaf([1.0, 2.0])
    assert x.numpy() is x.data
    assert isinstance(x.numpy(), np.ndarray)


def test_op_results_hold_arrays_even_when_0d():
    # `.data` / `.numpy()` is documented as "the underlying array". NumPy ufuncs on 0-d arrays
    # return scalars (np.float64), so ops on 0-d tensors must wrap them back into arrays.
    x, y = leaf(2.0), leaf(3.0)
    results = {"neg": -x, "exp": x.exp(), "log": x.log(), "sqrt": x.sqrt(), "tanh": x.tanh(),
               "relu": x.relu(), "gelu": x.gelu(), "pow": x ** 2, "add": x + y, "sub": x - y,
               "mul": x * y, "div": x / y, "max": x.max(), "sum": x.sum(), "mean": x.mean(),
               "var": x.var()}
    scalars = sorted(name for name, out in results.items()
                     if not isinstance(out.numpy(), np.ndarray))
    assert not scalars, f"these ops give a NumPy scalar, not an array, for 0-d input: {scalars}"


def test_item():
    assert tensor.tensor([[2.5]]).item() == 2.5
    assert isinstance(tensor.tensor(3).item(), float)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        tensor.tensor([1.0, 2.0]).item()


def test_truth_value_is_refused():
    with pytest.raises(TypeError, match="ambiguous"):
        bool(tensor.tensor([1.0]))


# ---------------------------------------------------------------------------------------------
# Operators with Python numbers and NumPy arrays on either side
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, grad", [
    (lambda x: 2 + x, lambda a: np.ones_like(a)),
    (lambda x: 2 - x, lambda a: -np.ones_like(a)),
    (lambda x: 2 * x, lambda a: np.full_like(a, 2.0)),
    (lambda x: 2 / x, lambda a: -2 / a**2),
    (lambda x: np.array([1.0, 2.0, 3.0]) + x, lambda a: np.ones_like(a)),
    (lambda x: np.array([1.0, 2.0, 3.0]) - x, lambda a: -np.ones_like(a)),
    (lambda x: np.array([1.0, 2.0, 3.0]) * x, lambda a: np.array([1.0, 2.0, 3.0])),
    (lambda x: x ** 2, lambda a: 2 * a),
    (lambda x: -x, lambda a: -np.ones_like(a)),
], ids=["2+x", "2-x", "2*x", "2/x", "arr+x", "arr-x", "arr*x", "x**2", "-x"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_reflected_operators(expr, grad, dtype):
    a = np.array([1.0, 2.0, 4.0])
    x = leaf(a, dtype)
    out = expr(x)
    assert isinstance(out, tensor.Tensor) and out.dtype == dtype
    np.testing.assert_allclose(out.data, expr(a), rtol=1e-6)
    out.backward(np.ones(3, dtype=dtype))
    np.testing.assert_allclose(x.grad, grad(a), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_numpy_array_matmul_tensor(dtype):
    # `np.ones(3) @ x` must give a Tensor in x's dtype, like `np.ones(3) + x` does.
    m = normal(0, (3, 2))
    x = leaf(m, dtype)
    out = np.ones(3) @ x
    assert isinstance(out, tensor.Tensor) and out.dtype == dtype
    np.testing.assert_allclose(out.data, np.ones(3) @ m, rtol=1e-6)
    out.backward(np.ones(2, dtype=dtype))
    np.testing.assert_allclose(x.grad, np.ones((3, 2)))
    out = x.T @ np.ones(3)
    assert isinstance(out, tensor.Tensor) and out.dtype == dtype


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


# ---------------------------------------------------------------------------------------------
# Errors name the op and the shapes
# ---------------------------------------------------------------------------------------------
def _message(excinfo):
    return str(excinfo.value)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_broadcast_error_names_the_op_and_shapes(op):
    with pytest.raises(ValueError) as e:
        getattr(F, op)(tensor.zeros(2, 3), tensor.zeros(4))
    assert op in _message(e) and "(2, 3)" in _message(e) and "(4,)" in _message(e)


@pytest.mark.parametrize("a, b", [((2, 3), (4, 5)), ((2, 2, 3), (3, 4, 5)), ((3,), (4, 5)),
                                  ((2, 3), (4,))],
                         ids=["2-D", "batch", "vector left", "vector right"])
def test_matmul_error_names_both_shapes(a, b):
    with pytest.raises(ValueError) as e:
        tensor.zeros(*a) @ tensor.zeros(*b)
    assert "matmul" in _message(e) and str(a) in _message(e) and str(b) in _message(e), _message(e)


def test_matmul_needs_axes():
    with pytest.raises(ValueError, match="matmul"):
        tensor.zeros(()) @ tensor.zeros(3)


def test_concatenate_error_names_the_shapes():
    with pytest.raises(ValueError) as e:
        F.concatenate([tensor.zeros(2, 3), tensor.zeros(3, 4)], axis=0)
    assert "concatenate" in _message(e) and "(2, 3)" in _message(e) and "(3, 4)" in _message(e)


def test_stack_error_names_the_shapes():
    with pytest.raises(ValueError) as e:
        F.stack([tensor.zeros(2, 3), tensor.zeros(3, 2)])
    assert "stack" in _message(e) and "(2, 3)" in _message(e) and "(3, 2)" in _message(e)


def test_reshape_error_names_both_shapes():
    with pytest.raises(ValueError) as e:
        tensor.zeros(2, 3).reshape(4, 2)
    assert "reshape" in _message(e) and "(2, 3)" in _message(e) and "(4, 2)" in _message(e)


def test_cross_entropy_error_names_both_shapes():
    with pytest.raises(ValueError) as e:
        F.cross_entropy(tensor.zeros(2, 3, 5), np.zeros((2, 4), dtype=np.int64))
    assert all(s in _message(e) for s in ("cross_entropy", "(2, 3, 5)", "(2, 4)"))


@pytest.mark.parametrize("which", ["weight", "bias"])
def test_layer_norm_error_names_both_shapes(which):
    kwargs = {"w": tensor.ones(5), "b": tensor.zeros(5)}
    kwargs["w" if which == "weight" else "b"] = tensor.ones(4)
    with pytest.raises(ValueError) as e:
        F.layer_norm(tensor.zeros(2, 5), **kwargs)
    assert all(s in _message(e) for s in ("layer_norm", which, "(4,)", "(2, 5)"))


def test_masked_fill_error_names_the_shapes():
    with pytest.raises(ValueError) as e:
        F.masked_fill(tensor.zeros(2, 3), np.zeros((4, 1, 3), dtype=bool), 0.0)
    assert all(s in _message(e) for s in ("masked_fill", "(4, 1, 3)", "(2, 3)"))


def test_where_error_names_the_op():
    with pytest.raises(ValueError) as e:
        F.where(np.ones(3, dtype=bool), tensor.zeros(2, 4), tensor.zeros(2, 4))
    assert "where" in _message(e) and "(3,)" in _message(e), _message(e)


def test_split_error_names_the_shape():
    with pytest.raises(ValueError) as e:
        F.split(tensor.zeros(2, 5), 2, axis=1)
    assert "split" in _message(e) and "(2, 5)" in _message(e)
    with pytest.raises(ValueError) as e:
        F.split(tensor.zeros(2, 5), [2, 2], axis=1)
    assert "split" in _message(e) and "(2, 5)" in _message(e)


@pytest.mark.parametrize("make, words", [
    (lambda: tensor.tensor(1 + 2j), ["complex"]),
    (lambda: tensor.tensor(np.ones(2, dtype=np.complex128)), ["complex128"]),
    (lambda: tensor.tensor([1 + 2j, 3]), ["complex"]),
    (lambda: tensor.tensor([1.0], dtype=np.complex64), ["complex64"]),
    (lambda: tensor.tensor("abc"), ["str"]),
    (lambda: tensor.tensor(["a", "b"]), ["<U1"]),
    (lambda: tensor.tensor(np.array([1, None], dtype=object)), ["object"]),
    (lambda: tensor.tensor(None), ["NoneType"]),
    (lambda: tensor.Tensor(np.arange(3), requires_grad=True), ["int64", "float"]),
    (lambda: F.cast(tensor.tensor([1.0]), np.int32), ["cast", "int32"]),
    (lambda: F.cross_entropy(tensor.zeros(2, 3), np.array([0.0, 1.0])), ["cross_entropy", "float64"]),
    (lambda: F.embedding(np.array([0.0, 1.0]), tensor.zeros(3, 2)), ["embedding", "float64"]),
], ids=["complex number", "complex array", "complex list", "complex dtype", "string",
        "string list", "object array", "None", "requires_grad int", "cast to int", "float targets", "float indices"])
def test_unsupported_types_are_refused_by_name(make, words):
    with pytest.raises(TypeError) as e:
        make()
    assert all(w in _message(e) for w in words), _message(e)


@pytest.mark.parametrize("targets, words", [([0, 5], ["5", "0..4"]), ([-2, 1], ["-2", "0..4"])],
                         ids=["too large", "negative, not ignore_index"])
def test_cross_entropy_target_out_of_range(targets, words):
    with pytest.raises(IndexError) as e:
        F.cross_entropy(tensor.zeros(2, 5), np.array(targets))
    assert "cross_entropy" in _message(e) and all(w in _message(e) for w in words), _message(e)


def test_embedding_index_out_of_range():
    with pytest.raises(IndexError) as e:
        F.embedding(np.array([0, 3]), tensor.zeros(3, 2))
    assert "embedding" in _message(e) and "3" in _message(e) and "(3, 2)" in _message(e)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_probability_out_of_range(p):
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(tensor.ones(3), p)
