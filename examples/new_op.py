"""How to add a new op to `tensor`, with its backward, and check it with `tensor.gradcheck`.

An op in tensor/functional.py is three things on one screen:

    1. the math, as a comment:   out = f(x);  dx = g * f'(x)
    2. a forward in NumPy that computes `out` and keeps what backward needs
    3. a closure backward(g) that turns g = dLoss/dout into dLoss/dx and ADDS it to x.grad,
       registered with `_node(out, name, inputs, backward)`

Here we add softplus, a smooth relu:  softplus(x) = ln(1 + eˣ),  whose derivative is the
sigmoid σ(x) = 1 / (1 + e⁻ˣ). We check it against central finite differences in float64, use it
inside a bigger expression, and show that gradcheck catches a backward with a bug in it.

    python examples/new_op.py          # --fast: smaller inputs (used by the tests)
"""
import argparse
import sys

import numpy as np

import tensor
from tensor import functional as F
from tensor.functional import _node, as_tensor


# out = ln(1 + eˣ);  dx = g * σ(x)
def softplus(x) -> tensor.Tensor:
    x = as_tensor(x)
    out = np.logaddexp(0.0, x.data)                  # ln(e⁰ + eˣ), without overflow for large x
    sig = np.exp(x.data - out)                       # σ(x) = eˣ / (1 + eˣ): saved for backward
    def backward(g):                                 # g has out's shape, which is x's shape
        x.grad += g * sig                            # `+=`: x may feed other ops too
    return _node(out.astype(x.dtype, copy=False), "softplus", (x,), backward)


# the same op with a classic mistake: the derivative of ln(1 + eˣ) taken as 1 / (1 + eˣ)
def softplus_buggy(x) -> tensor.Tensor:
    x = as_tensor(x)
    out = np.logaddexp(0.0, x.data)
    def backward(g):
        x.grad += g / (1.0 + np.exp(x.data))         # wrong: that is σ(-x), not σ(x)
    return _node(out, "softplus_buggy", (x,), backward)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="smaller inputs (for tests)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (3, 4) if args.fast else (16, 32)

    # 1. forward against the definition
    x = tensor.Tensor(rng.standard_normal(shape) * 3, requires_grad=True)    # float64
    expected = np.log1p(np.exp(x.data))
    print(f"forward: softplus of a {shape} tensor matches ln(1 + eˣ): "
          f"{np.allclose(softplus(x).data, expected, rtol=1e-12)}")
    print(f"  no overflow for large inputs: softplus(1000) = {softplus(np.array(1000.0)).item()}")

    # 2. backward against finite differences. gradcheck uses a random upstream gradient, so
    #    every entry of the Jacobian counts (a plain .sum() could hide a wrong sign or scale)
    ok = tensor.gradcheck(softplus, x)
    print(f"gradcheck(softplus): {ok}")

    # 3. the new op composes with every other op; autograd does the chain rule for us
    w = tensor.Tensor(rng.standard_normal((shape[1], 2)), requires_grad=True)
    def model(x, w):
        return F.mean(softplus(x @ w) * softplus(-x @ w))   # x and w each used twice
    print(f"gradcheck(mean(softplus(x @ w) * softplus(-x @ w))): {tensor.gradcheck(model, x, w)}")

    # 4. a wrong backward is caught, and the message names the element
    try:
        tensor.gradcheck(softplus_buggy, x)
        print("gradcheck(softplus_buggy): passed?! (it should not)")
        return 1
    except tensor.GradcheckError as e:
        print(f"gradcheck(softplus_buggy) caught the bug:\n  {e}")

    # 5. and the graph shows the new op by name (tensor/graph.py)
    from tensor.graph import to_dot
    dot = to_dot(model(x, w), names={"x": x, "w": w})
    n = dot.count('label="softplus')
    print(f"the graph of the model has {n} softplus nodes "
          f"(write it with tensor.graph.draw_graph(out, 'graph.svg'))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
