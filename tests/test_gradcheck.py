"""tensor.gradcheck itself: it must pass right backwards and catch wrong ones.

The wrong backwards are custom ops built with `tensor.functional._node`: sin(x) whose backward
uses some other derivative than cos(x). For such an op backprop gives u·d(x) and finite
differences give u·cos(x) at each element, so the ratio of the two values gradcheck reports is
d(x)/cos(x) whatever the upstream gradient u was — which lets a test check the reported values
without knowing gradcheck's random numbers.
"""
import re

import numpy as np
import pytest

import tensor
from tensor import GradcheckError, functional as F, gradcheck
from tensor.gradcheck import FULL_JACOBIAN_MAX


def sin_with_derivative(derivative):
    """An op computing sin(x) whose backward multiplies g by `derivative(x)` (right: np.cos)."""
    def op(x):
        x = F.as_tensor(x)
        def backward(g):
            x.grad += g * derivative(x.data)
        return F._node(np.sin(x.data), "sin", (x,), backward)
    return op


def one_element_wrong(flat, delta=1.0):
    """cos(x), except that element `flat` is off by `delta`."""
    def derivative(a):
        d = np.cos(a)
        d.flat[flat] += delta
        return d
    return derivative


right_sin = sin_with_derivative(np.cos)
wrong_sin = sin_with_derivative(np.sin)          # the bug: d/dx sin = sin


def leaf(shape, seed=0):
    return tensor.Tensor(np.random.default_rng(seed).uniform(-1.2, 1.2, size=shape),
                         requires_grad=True)


SMALL, LARGE = (3, 4), (9, 10)
assert np.prod(SMALL) <= FULL_JACOBIAN_MAX < np.prod(LARGE)


def parse_failure(message):
    """(input index, element or None, backprop value, finite-difference value) from the message."""
    message = re.sub(r"np\.\w+\((-?\d+)\)", r"\1", message)        # np.int64(2) -> 2
    index = int(re.search(r"input (\d+)", message).group(1))
    element = re.search(r"element \(([-\d, ]*)\)", message)
    element = tuple(int(i) for i in re.findall(r"-?\d+", element.group(1))) if element else None
    number = r"(-?\d+(?:\.\d*)?(?:e[-+]?\d+)?|-?nan|-?inf)"
    values = re.search(rf"backprop gives (?:<grad, v> = )?{number}.*?finite differences "
                       rf"(?:give|gives) {number}", message)
    assert values, f"no backprop / finite-difference values in: {message}"
    return index, element, float(values.group(1)), float(values.group(2))


# ---------------------------------------------------------------------------------------------
# It passes correct ops
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(), SMALL, LARGE, (40, 50)])
def test_passes_a_correct_custom_op(shape):
    assert gradcheck(right_sin, leaf(shape)) is True


@pytest.mark.parametrize("shape", [SMALL, LARGE])
def test_passes_correct_library_ops(shape):
    x, w = leaf(shape, 1), leaf(shape[::-1], 2)
    assert gradcheck(lambda x, w: F.softmax(x @ w, -1), x, w)
    assert gradcheck(lambda x: F.layer_norm(x).tanh() * x, x)
    assert gradcheck(lambda x: F.cross_entropy(x, np.arange(shape[0]) % shape[1]), x)


def test_passes_non_tensor_arguments_through():
    x = leaf(SMALL)
    assert gradcheck(lambda x, axis, targets: F.sum(x, axis) * F.mean(targets), x, 1,
                     tensor.Tensor(np.ones(3)))


def test_checks_float32_inputs_in_float64():
    x32 = tensor.Tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    assert gradcheck(lambda x: (x * x).exp(), x32)
    with pytest.raises(GradcheckError):
        gradcheck(wrong_sin, x32)


def test_raise_on_failure_false_returns_false():
    assert gradcheck(wrong_sin, leaf(SMALL), raise_on_failure=False) is False
    assert gradcheck(wrong_sin, leaf(LARGE), raise_on_failure=False) is False


# ---------------------------------------------------------------------------------------------
# It fails wrong ones, and says where
# ---------------------------------------------------------------------------------------------
def test_fails_a_wrong_backward_on_a_small_input_naming_input_element_and_values():
    a, x = leaf(SMALL, 1), leaf(SMALL, 2)
    with pytest.raises(GradcheckError) as failure:
        gradcheck(lambda a, x: right_sin(a) * wrong_sin(x), a, x)   # input 1 is the wrong one
    index, element, analytic, numeric = parse_failure(str(failure.value))
    assert index == 1
    assert element is not None and len(element) == 2
    # at that element backprop gives c·sin(x) and finite differences c·cos(x), c = u·sin(a)
    xe = x.data[element]
    assert analytic / numeric == pytest.approx(np.tan(xe), rel=1e-4)


def test_fails_a_wrong_backward_on_a_0d_input():
    with pytest.raises(GradcheckError) as failure:
        gradcheck(wrong_sin, tensor.Tensor(np.array(0.7), requires_grad=True))
    index, _, analytic, numeric = parse_failure(str(failure.value))
    assert index == 0
    assert analytic / numeric == pytest.approx(np.tan(0.7), rel=1e-4)


def test_fails_a_wrong_backward_on_a_large_input_naming_input_and_values():
    a, x = leaf(SMALL, 1), leaf(LARGE, 2)
    with pytest.raises(GradcheckError) as failure:
        gradcheck(lambda a, x: right_sin(a).sum() * wrong_sin(x), a, x)
    index, _, analytic, numeric = parse_failure(str(failure.value))
    assert index == 1
    assert abs(analytic - numeric) > 1e-3 * abs(numeric)


def test_failure_on_a_large_input_names_the_element():
    # gradcheck's docstring: it raises "naming the input, the element and both values". On the
    # random-direction path (> FULL_JACOBIAN_MAX elements) it names only "random direction k".
    flat = 37
    x = leaf(LARGE, 3)
    with pytest.raises(GradcheckError) as failure:
        gradcheck(sin_with_derivative(one_element_wrong(flat)), x)
    _, element, _, _ = parse_failure(str(failure.value))
    assert element == np.unravel_index(flat, LARGE)


def test_failure_message_names_the_element_in_plain_numbers():
    # The element reads "(1, 2)", not "(np.int64(1), np.int64(2))" (NumPy 2 reprs).
    with pytest.raises(GradcheckError) as failure:
        gradcheck(wrong_sin, leaf(SMALL))
    assert "np." not in str(failure.value), str(failure.value)


def test_detects_one_wrong_element_in_a_small_input():
    x = leaf(SMALL, 4)
    for flat in range(x.size):
        with pytest.raises(GradcheckError) as failure:
            gradcheck(sin_with_derivative(one_element_wrong(flat)), x)
        assert parse_failure(str(failure.value))[1] == np.unravel_index(flat, SMALL)


@pytest.mark.parametrize("shape", [LARGE, (20, 50)])
def test_detects_one_wrong_element_in_a_large_input(shape):
    # One derivative off by 1.0 (as large as cos itself), at every position in turn. The random
    # directions must catch each one: the docstring promises "any wrong entry".
    x = leaf(shape, 5)
    missed = [flat for flat in range(x.size)
              if gradcheck(sin_with_derivative(one_element_wrong(flat)), x,
                           raise_on_failure=False)]
    assert not missed, f"an error of 1.0 in one element was missed at {len(missed)} of " \
                       f"{x.size} positions, e.g. {missed[:5]}"


def test_uses_a_random_upstream_gradient():
    # A backward that is right only when g is constant (what `.sum().backward()` sends):
    # dx = g + (g - mean(g)) instead of g. A check with g = 1 cannot see it; gradcheck must.
    def identity_with_bad_backward(x):
        def backward(g):
            x.grad += g + (g - g.mean())
        return F._node(x.data.copy(), "identity", (x,), backward)

    x = leaf(SMALL)
    identity_with_bad_backward(x).sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones(SMALL))     # looks right under .sum()
    for shape in (SMALL, LARGE):
        with pytest.raises(GradcheckError):
            gradcheck(identity_with_bad_backward, leaf(shape))


def test_gradcheck_of_an_op_returning_a_view():
    # reshape / transpose return views of the input's array. gradcheck perturbs the input in
    # place and keeps fn's output without copying it, so "f(x + eps v)" changes when x is set
    # to x - eps v: the finite differences read 0 and a correct op fails.
    x = leaf(SMALL)
    assert gradcheck(lambda x: x.reshape(-1), x)
    assert gradcheck(lambda x: x.T, x)


def test_restores_the_inputs():
    a = np.random.default_rng(6).standard_normal(SMALL)
    x = tensor.Tensor(a.copy(), requires_grad=True)
    gradcheck(right_sin, x)
    np.testing.assert_array_equal(x.data, a)
    with pytest.raises(GradcheckError):
        gradcheck(wrong_sin, x)
    np.testing.assert_array_equal(x.data, a)


# ---------------------------------------------------------------------------------------------
# It refuses what it cannot check
# ---------------------------------------------------------------------------------------------
def test_rejects_a_function_returning_float32():
    with pytest.raises(TypeError, match="float32"):
        gradcheck(lambda x: F.cast(x, np.float32), leaf(SMALL))


def test_rejects_a_function_returning_a_non_tensor():
    with pytest.raises(TypeError, match="ndarray"):
        gradcheck(lambda x: x.data * 2, leaf(SMALL))


def test_raises_when_no_input_requires_grad():
    x = tensor.Tensor(np.ones(SMALL))
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda x: x * 2, x)
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda i: tensor.Tensor(np.asarray(i, dtype=np.float64)), 3)
