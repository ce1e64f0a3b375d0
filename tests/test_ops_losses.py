"""The extended ops of issue 11 against PyTorch in float64 (forward, and backward with a random
upstream gradient) and against finite differences (gradcheck), on Hypothesis-drawn shapes with
size-1 axes: cross_entropy (reductions, ignore_index, label smoothing, probability targets),
nll_loss, var(correction=), gelu(approximate=), pow with tensor exponents and number bases,
scaled_dot_product_attention (boolean masks, Tq != Tk)."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from test_ops_grad import check, covers, leaf, normal, positive

try:                       # the parity extra; without it only the PyTorch comparisons skip and
    import torch           # every gradcheck below still runs
    TF = torch.nn.functional
except ImportError:
    torch = TF = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch: pip install -e '.[parity]'")

N_EXAMPLES = 20
SEEDS = st.integers(0, 2**32 - 1)
LEAD = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)     # size-1 axes often
REDUCTIONS = ["mean", "sum", "none"]


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
# cross_entropy and nll_loss
# ---------------------------------------------------------------------------------------------
def torch_classes_last(fn):
    """PyTorch puts the classes on axis 1; ours are on the last axis: flatten the rows."""
    def run(z, *rest):
        return fn(z.reshape(-1, z.shape[-1]), *rest)
    return run


@covers("cross_entropy")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@settings(max_examples=N_EXAMPLES)
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
@settings(max_examples=N_EXAMPLES)
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
@settings(max_examples=N_EXAMPLES)
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


def test_cross_entropy_is_nll_of_log_softmax():
    z, t = normal(3, (4, 6)), np.array([5, 0, -1, 2])
    a, b = leaf(z), leaf(z)
    F.cross_entropy(a, t, reduction="sum").backward()
    F.nll_loss(F.log_softmax(b), t, reduction="sum").backward()
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# var(correction=), gelu(approximate=), pow with tensor exponents
# ---------------------------------------------------------------------------------------------
@st.composite
def shape_and_axis(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, min_size=1, max_size=ndim))
    return shape, tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@covers("var")
@settings(max_examples=N_EXAMPLES * 2)
@given(shape_axis=shape_and_axis(), correction=st.sampled_from([0, 1, 2]), keepdims=st.booleans(),
       seed=SEEDS)
@example(shape_axis=((3, 4), (1,)), correction=1, keepdims=False, seed=0)
def test_var_with_correction_matches_torch(shape_axis, correction, keepdims, seed):
    shape, axis = shape_axis
    n = math.prod(shape[a] for a in axis)
    a = normal(seed, shape)
    fn = lambda x: F.var(x, axis, keepdims, correction=correction)  # noqa: E731
    if n <= correction:        # NaN or inf, as PyTorch; the gradient must not raise either
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.var(a, axis=axis, ddof=correction, keepdims=keepdims)
        np.testing.assert_array_equal(fn(leaf(a)).data, expected)
        return
    assert_same(fn, lambda x: torch.var(x, dim=axis, correction=correction, keepdim=keepdims),
                [a], seed)
    check(fn, leaf(a))


def test_var_default_is_the_population_variance():
    a = normal(0, (5, 3))
    np.testing.assert_allclose(F.var(leaf(a), 0).data, np.var(a, axis=0), rtol=1e-12)
    np.testing.assert_allclose(leaf(a).var(0, correction=1).data, np.var(a, axis=0, ddof=1),
                               rtol=1e-12)


@covers("gelu")
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@settings(max_examples=N_EXAMPLES)
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


PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                          max_side=3).map(lambda b: b.input_shapes)


@covers("pow")
@settings(max_examples=N_EXAMPLES)
@given(shapes=PAIRS, seed=SEEDS)
@example(shapes=((3,), ()), seed=0)
@example(shapes=((), (2, 2)), seed=1)
def test_pow_tensor_exponent_matches_torch(shapes, seed):
    base, exponent = positive(seed, shapes[0]), normal(seed + 1, shapes[1])
    assert_same(lambda x, y: x ** y, lambda x, y: x ** y, [base, exponent], seed)
    check(lambda x, y: F.pow(x, y), leaf(base), leaf(exponent))


@settings(max_examples=N_EXAMPLES)
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


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention: masks and Tq != Tk
# ---------------------------------------------------------------------------------------------
@st.composite
def attention_case(draw):
    batch = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=2))
    tq, tk, hs, hv = (draw(st.integers(1, 4)) for _ in range(4))
    mask_kind = draw(st.sampled_from(["none", "full", "row", "key"]))
    causal = draw(st.booleans())
    return batch, tq, tk, hs, hv, mask_kind, causal


def torch_causal(tq, tk):
    """Our causal rule (j <= i + Tk - Tq) as an explicit boolean mask for PyTorch."""
    return np.arange(tk)[None, :] <= np.arange(tq)[:, None] + (tk - tq)


@covers("scaled_dot_product_attention")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
@settings(max_examples=N_EXAMPLES * 2)
@given(case=attention_case(), seed=SEEDS)
@example(case=((2,), 3, 5, 2, 3, "none", True), seed=0)
@example(case=((), 4, 2, 3, 2, "none", True), seed=1)        # Tq > Tk: first queries see nothing
@example(case=((1, 2), 3, 3, 2, 2, "full", False), seed=2)
def test_scaled_dot_product_attention_matches_torch(fused, case, seed):
    batch, tq, tk, hs, hv, mask_kind, causal = case
    rng = np.random.default_rng(seed)
    q, k, v = (normal(seed + i, batch + s) for i, s in
               enumerate([(tq, hs), (tk, hs), (tk, hv)]))
    mask = {"none": None, "full": rng.random(batch + (tq, tk)) > 0.3,
            "row": rng.random((tq, tk)) > 0.3, "key": rng.random((1, tk)) > 0.3}[mask_kind]
    allowed = np.ones((tq, tk), dtype=bool) if mask is None else mask
    if causal:
        allowed = allowed & torch_causal(tq, tk)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)  # noqa
    torch_fn = lambda q, k, v: TF.scaled_dot_product_attention(  # noqa: E731
        q, k, v, attn_mask=torch.tensor(np.broadcast_to(allowed, batch + (tq, tk)).copy()))
    with tensor.fused(fused):
        assert_same(fn, torch_fn, [q, k, v], seed)
        check(fn, leaf(q), leaf(k), leaf(v))


def test_scaled_dot_product_attention_broadcasts_shared_keys_and_names_bad_inputs():
    q, k, v = normal(0, (2, 3, 4, 5)), normal(1, (1, 1, 6, 5)), normal(2, (6, 3))   # shared k, v
    assert_same(lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
                lambda q, k, v: TF.scaled_dot_product_attention(q, k, v.expand(1, 1, 6, 3)),
                [q, k, v], 3)
    with pytest.raises(ValueError, match="scaled_dot_product_attention: q"):
        F.scaled_dot_product_attention(leaf(q), leaf(normal(0, (6, 4))), leaf(v))
    with pytest.raises(TypeError, match="mask must be boolean"):
        F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), mask=np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 6\)"):
        F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), mask=np.ones((3, 6), bool))


def test_causal_attention_matches_the_one_node_gpt_op():
    # the same computation as attention(qkv, n_head) when q, k, v come from one (B, T, 3C)
    B, T, nh, hs = 2, 5, 2, 3
    qkv = normal(4, (B, T, 3 * nh * hs))
    heads = qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4)        # (3, B, nh, T, hs)
    y = F.scaled_dot_product_attention(*heads, causal=True).data                    # (B, nh, T, hs)
    np.testing.assert_allclose(y.transpose(0, 2, 1, 3).reshape(B, T, nh * hs),
                               F.attention(leaf(qkv), nh).data, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# split keeps its numpy-like rule (a count), documented
# ---------------------------------------------------------------------------------------------
def test_split_takes_a_count_like_numpy_not_a_size_like_torch():
    a = normal(0, (2, 6))
    pieces = F.split(leaf(a), 3)                          # 3 pieces of 2 along the last axis
    assert [p.shape for p in pieces] == [(2, 2)] * 3
    assert "torch.split" in F.split.__doc__
