"""dropout: the kept entries are scaled by 1/(1-p), the mask is the same for the same generator
(so gradcheck applies), the kept fraction and the mean match p statistically, eval mode is the
identity, and a new call draws a new mask."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tensor import functional as F
from ops_helpers import N_EXAMPLES, SEEDS, SHAPES, away_from_zero, check, covers, leaf, normal


@covers("dropout")
@settings(max_examples=N_EXAMPLES)
@given(shape=SHAPES, p=st.floats(0.0, 0.9), seed=SEEDS)
def test_grad_dropout(shape, p, seed):
    a = away_from_zero(seed, shape)
    x = leaf(a)
    # a generator made inside fn: the same mask on every call, so finite differences make sense
    fn = lambda x: F.dropout(x, p, generator=np.random.default_rng(seed))  # noqa: E731
    out = fn(x).data
    assert out.dtype == np.float64 and out.shape == a.shape
    kept = out != 0
    np.testing.assert_allclose(out[kept], a[kept] / (1 - p), rtol=1e-12)   # kept ones are scaled
    if p == 0.0:
        assert kept.all()
    check(fn, x)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout_in_eval_mode_is_the_identity(p):
    a = normal(0, (3, 4))
    x = leaf(a)
    out = F.dropout(x, p, training=False)
    np.testing.assert_array_equal(out.data, a)
    g = normal(1, (3, 4))
    out.backward(g)
    np.testing.assert_array_equal(x.grad, g)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_keeps_the_expected_fraction_and_the_mean(p):
    n = 200_000
    a = np.full(n, 2.0)
    out = F.dropout(leaf(a), p, generator=np.random.default_rng(1234)).data
    kept = out != 0
    # each entry is kept with probability 1 - p: the kept fraction is within 6 standard errors
    assert abs(kept.mean() - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    # and the kept entries are scaled by 1/(1-p), so the mean is still 2
    np.testing.assert_allclose(out[kept], 2.0 / (1 - p))
    assert abs(out.mean() - 2.0) < 6 * 2.0 * math.sqrt(p / (1 - p) / n)


@pytest.mark.parametrize("p", [0.2, 0.6])
def test_dropout_averages_to_its_input(p):
    # the mean of many independent draws approaches x itself (inverted dropout is unbiased);
    # each entry's draw has standard deviation |x|·√(p/(1-p))
    a = np.array([-1.5, 0.25, 1.0, 3.0])
    x = leaf(a)
    rng = np.random.default_rng(99)
    draws = 4000
    mean = sum(F.dropout(x, p, generator=rng).data for _ in range(draws)) / draws
    assert np.all(np.abs(mean - a) < 6 * np.abs(a) * math.sqrt(p / (1 - p) / draws))


def test_dropout_names_a_wrong_generator():
    with pytest.raises(TypeError, match="dropout: generator must be a numpy.random.Generator"):
        F.dropout(leaf(np.ones(4)), 0.5, generator=np.random.RandomState(0))


def test_dropout_draws_a_new_mask_each_call():
    x = leaf(np.ones(1000))
    rng = np.random.default_rng(0)
    first, second = F.dropout(x, 0.5, generator=rng).data, F.dropout(x, 0.5, generator=rng).data
    assert not np.array_equal(first, second)
