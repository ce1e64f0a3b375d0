"""Backprop by hand: a two-layer network's gradients written out in NumPy, next to .backward().

The network classifies N points of D features into K classes:

    h      = tanh(x @ W1 + b1)                   (N, D) @ (D, H) + (H,) -> (N, H)
    logits = h @ W2 + b2                         (N, H) @ (H, K) + (K,) -> (N, K)
    loss   = cross_entropy(logits, y)            mean over the N rows of -log softmax(logits)[y]

We compute the gradient of the loss with respect to W1, b1, W2, b2 twice: once by applying the
chain rule ourselves, layer by layer from the loss back to the input (the formulas are derived
in docs/backprop.md), and once with tensor's autograd (`loss.backward()`). Then we print the
two side by side and check they agree to float64 precision. Finally a few steps of gradient
descent with the hand-written gradients show the loss going down.

    python examples/backprop_by_hand.py          # --fast: a smaller problem (used by the tests)
"""
import argparse
import sys

import numpy as np

import tensor
from tensor import functional as F


def hand_backward(x, y, W1, b1, W2, b2):
    """Forward, then backward written out by hand. Returns (loss, {name: gradient})."""
    N = x.shape[0]
    # forward, keeping what backward needs
    z1 = x @ W1 + b1                                # (N, H)
    h = np.tanh(z1)                                 # (N, H)
    logits = h @ W2 + b2                            # (N, K)
    shifted = logits - logits.max(axis=1, keepdims=True)     # stable softmax
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)               # (N, K) probabilities
    loss = -np.log(p[np.arange(N), y]).mean()

    # backward, from the loss to the weights
    dlogits = p.copy()                              # d loss / d logits = (softmax - onehot) / N
    dlogits[np.arange(N), y] -= 1.0
    dlogits /= N                                    # (N, K)
    dW2 = h.T @ dlogits                             # (H, N) @ (N, K) -> (H, K)   dW = xᵀ g
    db2 = dlogits.sum(axis=0)                       # (K,): b2 was broadcast over N rows
    dh = dlogits @ W2.T                             # (N, K) @ (K, H) -> (N, H)   dx = g Wᵀ
    dz1 = dh * (1.0 - h * h)                        # tanh' = 1 - tanh²
    dW1 = x.T @ dz1                                 # (D, N) @ (N, H) -> (D, H)
    db1 = dz1.sum(axis=0)                           # (H,)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def autograd_backward(x, y, W1, b1, W2, b2):
    """The same network with tensor ops; .backward() fills each parameter's .grad."""
    params = {name: tensor.Tensor(a, requires_grad=True)
              for name, a in (("W1", W1), ("b1", b1), ("W2", W2), ("b2", b2))}
    h = F.tanh(tensor.Tensor(x) @ params["W1"] + params["b1"])       # (N, H)
    logits = h @ params["W2"] + params["b2"]                          # (N, K)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return loss.item(), {name: p.grad for name, p in params.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="a smaller problem (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    N, D, H, K = (8, 3, 5, 4) if args.fast else (64, 10, 32, 6)

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((N, D))                 # float64 throughout: an exact comparison
    y = rng.integers(0, K, N)
    W1 = rng.standard_normal((D, H)) / np.sqrt(D)
    b1 = 0.1 * rng.standard_normal(H)
    W2 = rng.standard_normal((H, K)) / np.sqrt(H)
    b2 = 0.1 * rng.standard_normal(K)

    loss_hand, by_hand = hand_backward(x, y, W1, b1, W2, b2)
    loss_auto, by_autograd = autograd_backward(x, y, W1, b1, W2, b2)
    print(f"network: x ({N}, {D}) -> tanh hidden ({N}, {H}) -> logits ({N}, {K}); "
          f"loss by hand {loss_hand:.6f}, by autograd {loss_auto:.6f}\n")
    print(f"{'param':<6} {'shape':<9} {'first entries by hand':<36} {'first entries by autograd':<36}"
          f" max |difference|")
    worst = abs(loss_hand - loss_auto)
    for name in by_hand:
        a, b = by_hand[name], by_autograd[name]
        diff = float(np.max(np.abs(a - b)))
        worst = max(worst, diff)
        show = lambda g: " ".join(f"{v:+.4f}" for v in g.ravel()[:4])      # noqa: E731
        print(f"{name:<6} {str(a.shape):<9} {show(a):<36} {show(b):<36} {diff:.2e}")

    # and a third opinion, with no calculus at all: nudge one weight and watch the loss
    eps, i, j = 1e-6, 0, 0
    W1_plus, W1_minus = W1.copy(), W1.copy()
    W1_plus[i, j] += eps
    W1_minus[i, j] -= eps
    numeric = (hand_backward(x, y, W1_plus, b1, W2, b2)[0]
               - hand_backward(x, y, W1_minus, b1, W2, b2)[0]) / (2 * eps)
    print(f"\nW1[{i}, {j}] by central differences (L(w + ε) - L(w - ε)) / 2ε: {numeric:+.8f}; "
          f"by hand {by_hand['W1'][i, j]:+.8f}")
    # float64 differences are accurate to ~1e-9; hand vs autograd should agree to rounding
    ok = worst < 1e-12 and abs(numeric - by_hand["W1"][i, j]) < 1e-6
    print(f"\n{'OK' if ok else 'MISMATCH'}: the hand-written gradients "
          f"{'match' if ok else 'differ from'} autograd (largest difference {worst:.1e})")
    if not ok:
        return 1

    # the hand-written gradients are enough to train: plain gradient descent
    lr, steps = 0.5, 5 if args.fast else 50
    weights = {"W1": W1.copy(), "b1": b1.copy(), "W2": W2.copy(), "b2": b2.copy()}
    print(f"\ngradient descent with the hand-written gradients, lr {lr}:")
    for step in range(steps + 1):
        loss, grads = hand_backward(x, y, **weights)
        if step % max(1, steps // 5) == 0:
            print(f"  step {step:>3}: loss {loss:.4f}")
        for name in weights:
            weights[name] -= lr * grads[name]
    return 0


if __name__ == "__main__":
    sys.exit(main())
