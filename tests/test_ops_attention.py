"""Attention: GPT's causal self-attention op by op (split, transpose, masked_fill or the fused
softmax), the one-node `attention(qkv, n_head)` against a definition written head by head and
query by query (with and without dropout), and scaled_dot_product_attention (boolean masks,
Tq != Tk, broadcast batch axes) against PyTorch; all backward by gradcheck."""
import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tensor
from tensor import functional as F
from ops_helpers import (N_EXAMPLES, N_TORCH_EXAMPLES, SEEDS, TF, assert_forward, assert_same,
                         check, covers, leaf, normal, torch)


# ---------------------------------------------------------------------------------------------
# Causal self-attention, op by op
# ---------------------------------------------------------------------------------------------
def attention_reference(xa, wa, wo, n_head, fill):
    b, t, c = xa.shape
    hs = c // n_head
    q, k, v = np.split(xa @ wa, 3, axis=-1)
    heads = lambda z: z.reshape(b, t, n_head, hs).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    att = np.where(np.triu(np.ones((t, t), bool), 1), fill, att)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True)
    return (att @ v).transpose(0, 2, 1, 3).reshape(b, t, c) @ wo


@pytest.mark.parametrize("fill", [-np.inf, -1e9])
def test_grad_causal_self_attention(fill):
    b, t, c, n_head = 2, 3, 4, 2
    hs = c // n_head
    causal = np.triu(np.ones((t, t), dtype=bool), k=1)           # True above the diagonal

    def attention(x, w_attn, w_proj):
        q, k, v = F.split(x @ w_attn, 3, axis=-1)                 # 3 x (B, T, C)
        q = q.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        k = k.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        v = v.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))   # (B, nh, T, T)
        att = F.masked_fill(att, causal, fill).softmax(-1)        # (B, nh, T, T)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)            # (B, T, C)
        return y @ w_proj                                         # (B, T, C)

    xa, wa, wo = normal(0, (b, t, c)), normal(1, (c, 3 * c), 0.5), normal(2, (c, c), 0.5)
    inputs = leaf(xa), leaf(wa), leaf(wo)
    out = attention(*inputs)
    assert np.isfinite(out.data).all()
    assert_forward(out, attention_reference(xa, wa, wo, n_head, fill))
    check(attention, *inputs)


def test_grad_causal_self_attention_with_the_fused_softmax():
    # the same attention with softmax(scale=, causal=) instead of masked_fill: same values, and
    # its own gradient check
    b, t, c, n_head = 2, 3, 4, 2
    hs = c // n_head

    def attention(x, w_attn, w_proj):
        q, k, v = F.split(x @ w_attn, 3, axis=-1)                 # 3 x (B, T, C)
        q = q.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        k = k.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        v = v.reshape(b, t, n_head, hs).transpose(1, 2)           # (B, nh, T, hs)
        att = F.softmax(q @ k.transpose(-2, -1), -1, scale=1.0 / math.sqrt(hs), causal=True)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)            # (B, T, C)
        return y @ w_proj                                         # (B, T, C)

    xa, wa, wo = normal(0, (b, t, c)), normal(1, (c, 3 * c), 0.5), normal(2, (c, c), 0.5)
    inputs = leaf(xa), leaf(wa), leaf(wo)
    assert_forward(attention(*inputs), attention_reference(xa, wa, wo, n_head, -np.inf))
    check(attention, *inputs)


# ---------------------------------------------------------------------------------------------
# attention(qkv, n_head): one node
# ---------------------------------------------------------------------------------------------
def fused_attention_reference(qkv, n_head, keep=None, p=0.0):
    """Causal self-attention written from its definition, head by head, query by query. With
    dropout: keep (B, nh, T, T) bool says which weights survive, each scaled by 1/(1-p)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    y = np.zeros((B, T, C))
    for b in range(B):
        for h in range(n_head):
            q = qkv[b, :, h * hs:(h + 1) * hs]
            k = qkv[b, :, C + h * hs:C + (h + 1) * hs]
            v = qkv[b, :, 2 * C + h * hs:2 * C + (h + 1) * hs]
            for i in range(T):
                scores = np.array([q[i] @ k[j] / math.sqrt(hs) for j in range(i + 1)])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                if keep is not None:
                    w = np.where(keep[b, h, i, :i + 1], w / (1 - p), 0.0)
                y[b, i, h * hs:(h + 1) * hs] = w @ v[:i + 1]
    return y


@covers("attention")
@settings(max_examples=N_EXAMPLES)
@given(b=st.integers(1, 2), t=st.integers(1, 5), n_head=st.integers(1, 3), hs=st.integers(1, 3),
       seed=SEEDS)
def test_grad_attention(b, t, n_head, hs, seed):
    a = normal(seed, (b, t, 3 * n_head * hs))
    x = leaf(a)
    assert_forward(F.attention(x, n_head), fused_attention_reference(a, n_head))
    check(lambda x: F.attention(x, n_head), x)


@settings(max_examples=N_EXAMPLES)
@given(b=st.integers(1, 2), t=st.integers(1, 5), n_head=st.integers(1, 3), hs=st.integers(1, 3),
       p=st.sampled_from([0.1, 0.5, 0.9]), seed=SEEDS)
def test_grad_attention_with_dropout(b, t, n_head, hs, p, seed):
    # the mask comes from the generator's first B·nh·T·T 32-bit words (tensor/functional.py's
    # _dropout_mask, tested in test_fused_kernels.py); a fresh generator per call gives
    # gradcheck the same mask every time
    a = normal(seed, (b, t, 3 * n_head * hs))
    keep = F._dropout_mask((b, n_head, t, t), p, np.float64, np.random.default_rng(seed)) > 0
    def f(x):
        return F.attention(x, n_head, p, np.random.default_rng(seed))
    assert_forward(f(leaf(a)), fused_attention_reference(a, n_head, keep, p))
    check(f, leaf(a))


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="attention"):
        F.attention(leaf(normal(0, (2, 3, 10))), 2)
    with pytest.raises(ValueError, match="attention: dropout"):
        F.attention(leaf(normal(0, (2, 3, 12))), 2, dropout=1.0)


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
@settings(max_examples=N_TORCH_EXAMPLES * 2)
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
    with pytest.raises(TypeError, match="mask must be boolean .* or float"):
        F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v),
                                       mask=np.zeros((4, 6), dtype=np.int64))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 6\)"):
        F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), mask=np.ones((3, 6), bool))


@covers("scaled_dot_product_attention")
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
@settings(max_examples=N_TORCH_EXAMPLES * 2)
@given(case=attention_case(), hidden=st.sampled_from([0.0, 0.3]), seed=SEEDS)
@example(case=((2,), 3, 5, 2, 3, "full", True), hidden=0.3, seed=0)
@example(case=((), 4, 2, 3, 2, "row", True), hidden=0.0, seed=1)   # Tq > Tk: rows with no key
@example(case=((1, 2), 3, 3, 2, 2, "key", False), hidden=0.3, seed=2)
def test_float_attention_mask_is_added_to_the_scores_like_torch(fused, case, hidden, seed):
    # PyTorch's float attn_mask: added to q kᵀ · scale; -inf hides a key. Here the mask is a
    # leaf too, so its gradient (the gradient at the scores) is compared with torch's as well.
    batch, tq, tk, hs, hv, mask_kind, causal = case
    rng = np.random.default_rng(seed)
    q, k, v = (normal(seed + i, batch + s) for i, s in
               enumerate([(tq, hs), (tk, hs), (tk, hv)]))
    shape = {"none": (tq, tk), "full": batch + (tq, tk), "row": (tq, tk), "key": (1, tk)}[
        mask_kind]
    m = np.where(rng.random(shape) < hidden, -np.inf, normal(seed + 3, shape))
    fn = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, mask=m,  # noqa: E731
                                                           causal=causal)
    bias = np.where(torch_causal(tq, tk), 0.0, -np.inf) if causal else np.zeros((tq, tk))
    torch_fn = lambda q, k, v, m: TF.scaled_dot_product_attention(  # noqa: E731
        q, k, v, attn_mask=m + torch.tensor(bias))
    with tensor.fused(fused):
        assert_same(fn, torch_fn, [q, k, v, m], seed, rtol=1e-10, atol=1e-12)
        check(fn, leaf(q), leaf(k), leaf(v), leaf(m))
        # a constant float mask (an array) gives the same y
        y = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), mask=m, causal=causal)
        np.testing.assert_array_equal(y.data, fn(leaf(q), leaf(k), leaf(v), leaf(m)).data)


def test_float_and_boolean_masks_agree_and_a_float32_mask_follows_q():
    q, k, v = normal(0, (2, 3, 4)), normal(1, (2, 5, 4)), normal(2, (2, 5, 3))
    keep = np.random.default_rng(3).random((3, 5)) > 0.4
    by_bool = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v), mask=keep)
    by_float = F.scaled_dot_product_attention(leaf(q), leaf(k), leaf(v),
                                              mask=np.where(keep, 0.0, -np.inf))
    np.testing.assert_allclose(by_float.data, by_bool.data, rtol=1e-14, atol=1e-15)
    q32 = tensor.Tensor(q.astype(np.float32))
    k32, v32 = tensor.Tensor(k.astype(np.float32)), tensor.Tensor(v.astype(np.float32))
    m = tensor.Tensor(np.zeros((3, 5)), requires_grad=True)            # float64 mask, float32 q
    y = F.scaled_dot_product_attention(q32, k32, v32, mask=m)
    assert y.dtype == np.float32
    y.sum().backward()
    assert m.grad.shape == (3, 5) and m.grad.dtype == np.float64


def test_causal_attention_matches_the_one_node_gpt_op():
    # the same computation as attention(qkv, n_head) when q, k, v come from one (B, T, 3C)
    B, T, nh, hs = 2, 5, 2, 3
    qkv = normal(4, (B, T, 3 * nh * hs))
    heads = qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4)        # (3, B, nh, T, hs)
    y = F.scaled_dot_product_attention(*heads, causal=True).data                    # (B, nh, T, hs)
    np.testing.assert_allclose(y.transpose(0, 2, 1, 3).reshape(B, T, nh * hs),
                               F.attention(leaf(qkv), nh).data, rtol=1e-12, atol=1e-14)
