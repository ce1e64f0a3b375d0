"""The fused switch is read once, in forward: an op built with the kernels on (or off) runs its
backward the same way even if `tensor.fused(...)` has flipped since. Flipping between forward
and backward, both ways, must give exactly the gradients of the unflipped run: per op with a
fused path, and for a whole GPT (`loss = model(idx, idx)[1]` in one mode, `backward()` in the
other, as the README suggests for comparing the two paths)."""
import numpy as np
import pytest

import tensor
from tensor import functional as F, nn
from tinygpt.model import GPT, GPTConfig

FLIPS = [(True, False), (False, True)]


def leaves(rng, *shapes):
    return [tensor.Tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]


def grads_with(fn, make_inputs, forward_fused, backward_fused, seed=0):
    """Build fn's graph with the switch at `forward_fused`, backpropagate a random upstream
    gradient at `backward_fused`; return the output and every input's gradient."""
    inputs = make_inputs(np.random.default_rng(seed))
    with tensor.fused(forward_fused):
        out = fn(*inputs)
    g = np.random.default_rng(seed + 1).standard_normal(out.shape)
    with tensor.fused(backward_fused):
        out.backward(g)
    return out.data, [x.grad for x in inputs]


IDX = np.array([[1, 1, 0], [4, 1, 2]])
TARGETS = np.array([[0, 5, -1, 2]] * 3)
OPS = {
    "gelu": (F.gelu, lambda r: leaves(r, (3, 4, 6))),
    "layer_norm": (F.layer_norm, lambda r: leaves(r, (3, 4, 6), (6,), (6,))),
    "cross_entropy": (lambda z: F.cross_entropy(z, TARGETS), lambda r: leaves(r, (3, 4, 6))),
    "cross_entropy none": (lambda z: F.cross_entropy(z, TARGETS, reduction="none"),
                           lambda r: leaves(r, (3, 4, 6))),
    "embedding": (lambda w: F.embedding(IDX, w), lambda r: leaves(r, (5, 6))),
    "softmax": (lambda x: F.softmax(x, axis=-1, scale=0.5, causal=True),
                lambda r: leaves(r, (2, 3, 4))),
    "softmax axis 0": (lambda x: F.softmax(x, axis=0), lambda r: leaves(r, (3, 4))),
    "attention": (lambda qkv: F.attention(qkv, 2), lambda r: leaves(r, (2, 4, 12))),
}


@pytest.mark.parametrize("forward_fused, backward_fused", FLIPS, ids=["on-off", "off-on"])
@pytest.mark.parametrize("op", OPS)
def test_flipping_the_switch_before_backward_changes_nothing(op, forward_fused, backward_fused):
    fn, make = OPS[op]
    out, grads = grads_with(fn, make, forward_fused, forward_fused)
    flipped_out, flipped = grads_with(fn, make, forward_fused, backward_fused)
    np.testing.assert_array_equal(flipped_out, out)
    for got, want in zip(flipped, grads):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("forward_fused, backward_fused", FLIPS, ids=["on-off", "off-on"])
def test_linear_module_decides_once(forward_fused, backward_fused):
    layer = nn.Linear(6, 5, dtype=np.float64, generator=np.random.default_rng(0))
    layer.bias.data[:] = np.random.default_rng(1).standard_normal(5)
    def run(flip):
        layer.zero_grad()
        x = tensor.Tensor(np.random.default_rng(2).standard_normal((3, 6)), requires_grad=True)
        with tensor.fused(forward_fused):
            out = layer(x)
        with tensor.fused(flip):
            out.backward(np.random.default_rng(3).standard_normal(out.shape))
        return [out.data, x.grad, layer.weight.grad, layer.bias.grad]
    for got, want in zip(run(backward_fused), run(forward_fused)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("forward_fused, backward_fused", FLIPS, ids=["on-off", "off-on"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_gpt_flipped_between_forward_and_backward(forward_fused, backward_fused, dtype):
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
    idx = np.random.default_rng(0).integers(0, 11, size=(2, 7))

    def run(flip):
        model = GPT(cfg, seed=0, dtype=dtype)
        with tensor.fused(forward_fused):
            logits, loss = model(idx, idx)
        with tensor.fused(flip):
            loss.backward()
        return loss.data, {name: p.grad for name, p in model.named_parameters()}

    loss, grads = run(forward_fused)
    flipped_loss, flipped = run(backward_fused)
    np.testing.assert_array_equal(flipped_loss, loss)
    assert flipped.keys() == grads.keys()
    for name in grads:
        np.testing.assert_array_equal(flipped[name], grads[name], err_msg=name)
