"""layer_norm, with and without weight and bias: forward against NumPy, backward by gradcheck
(the fused kernel's path when weight and bias are given, the NumPy lines otherwise; the two are
compared in tests/test_ops_plumbing.py)."""
import numpy as np
from hypothesis import example, given, settings, strategies as st

import tensor
from tensor import functional as F
from ops_helpers import AXIS_SHAPES, N_EXAMPLES, SEEDS, assert_forward, check, covers, leaf, normal


def layer_norm_reference(a, w, b, eps=1e-5):
    out = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + eps)
    if w is not None:
        out = out * w
    if b is not None:
        out = out + b
    return out


@covers("layer_norm")
@settings(max_examples=N_EXAMPLES)
@given(shape=AXIS_SHAPES, with_weight=st.booleans(), with_bias=st.booleans(), seed=SEEDS)
@example(shape=(2, 3, 5), with_weight=True, with_bias=True, seed=0)
@example(shape=(4, 5), with_weight=False, with_bias=False, seed=1)
@example(shape=(3, 1), with_weight=True, with_bias=False, seed=2)
def test_grad_layer_norm(shape, with_weight, with_bias, seed):
    c = shape[-1]
    a = normal(seed, shape, 2.0) + 0.5
    wa = normal(seed + 1, (c,)) if with_weight else None
    ba = normal(seed + 2, (c,)) if with_bias else None
    x = leaf(a)
    w = leaf(wa) if with_weight else None
    b = leaf(ba) if with_bias else None
    assert_forward(F.layer_norm(x, w, b), layer_norm_reference(a, wa, ba))
    check(lambda x, w, b: F.layer_norm(x, w, b), x, w, b)


def test_grad_layer_norm_with_constant_input():
    # only the weight and bias need gradients
    a = normal(0, (3, 4))
    check(lambda w, b: F.layer_norm(tensor.Tensor(a), w, b), leaf(normal(1, 4)), leaf(normal(2, 4)))
