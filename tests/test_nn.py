"""Tests for tensor/nn.py: the Module tree (registration, names, saving and loading, modes) and
the layers (Linear, Embedding, LayerNorm, Dropout, Sequential, ModuleList).

Oracles: names and parameter counts written out by hand for a small GPT-shaped tree; each
layer's formula in plain NumPy (float64); central differences (tensor.gradcheck); and
torch.nn.functional.layer_norm when the parity extra is installed.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensor
from tensor import nn

F64 = np.float64


# ---------------------------------------------------------------------------------------------
# A small GPT-shaped tree: Embedding, a ModuleList of blocks, nested sub-modules, LayerNorms
# ---------------------------------------------------------------------------------------------
class Attn(nn.Module):
    def __init__(self, c, rng):
        super().__init__()
        self.c_attn = nn.Linear(c, 3 * c, generator=rng)
        self.c_proj = nn.Linear(c, c, generator=rng)


class Block(nn.Module):
    def __init__(self, c, rng):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c)
        self.attn = Attn(c, rng)
        self.drop = nn.Dropout(0.5)


class TinyGPT(nn.Module):
    """Not a working GPT: only the shape of its module tree matters here."""

    def __init__(self, vocab=11, c=4, n_layer=2, seed=0, tie=False):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.wte = nn.Embedding(vocab, c, generator=rng)
        self.h = nn.ModuleList([Block(c, rng) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(c)
        if tie:   # a second handle on the token table (the way GPT-2 reuses it for the logits)
            self.head = nn.Embedding(vocab, c, generator=rng)
            self.head.weight = self.wte.weight


def expected_names(n_layer):
    """The dotted names, in registration order, worked out by hand from TinyGPT.__init__."""
    names = ["wte.weight"]
    for i in range(n_layer):
        names += [f"h.{i}.ln_1.weight", f"h.{i}.ln_1.bias",
                  f"h.{i}.attn.c_attn.weight", f"h.{i}.attn.c_attn.bias",
                  f"h.{i}.attn.c_proj.weight", f"h.{i}.attn.c_proj.bias"]
    return names + ["ln_f.weight", "ln_f.bias"]


def snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Registration by attribute
# ---------------------------------------------------------------------------------------------
class Holder(nn.Module):
    def __init__(self):
        super().__init__()


def test_parameters_and_submodules_are_registered_by_attribute():
    m = Holder()
    m.w = nn.Parameter(np.ones((2, 3)))
    m.sub = nn.Linear(3, 2)
    m.constant = tensor.ones(5, requires_grad=True)   # a Tensor, but not a Parameter
    m.array = np.zeros(4)
    m.number = 3.0
    names = dict(m.named_parameters())
    assert list(names) == ["w", "sub.weight", "sub.bias"]
    assert names["w"] is m.w and names["sub.weight"] is m.sub.weight
    assert [name for name, _ in m.named_modules()] == ["", "sub."]


@pytest.mark.parametrize("replacement", [None, np.zeros((2, 3)), tensor.zeros(2, 3), 1.5],
                         ids=["None", "ndarray", "Tensor", "float"])
def test_replacing_an_attribute_by_a_non_parameter_unregisters_it(replacement):
    m = Holder()
    m.w = nn.Parameter(np.ones((2, 3)))
    m.sub = nn.Linear(3, 2)
    m.w = replacement
    m.sub = replacement
    assert dict(m.named_parameters()) == {}
    assert [name for name, _ in m.named_modules()] == [""]
    assert m.w is replacement      # the attribute itself is still set


def test_replacing_a_parameter_by_a_module_and_back_moves_the_registration():
    m = Holder()
    m.x = nn.Parameter(np.ones(3))
    m.x = nn.Linear(2, 2, bias=False)
    assert list(dict(m.named_parameters())) == ["x.weight"]
    m.x = nn.Parameter(np.ones(4))
    assert list(dict(m.named_parameters())) == ["x"]
    assert [name for name, _ in m.named_modules()] == [""]


def test_named_parameters_gives_dotted_names_through_module_lists():
    model = TinyGPT(n_layer=3)
    named = list(model.named_parameters())
    assert [name for name, _ in named] == expected_names(3)
    lookup = dict(named)
    assert lookup["h.2.attn.c_attn.weight"] is model.h[2].attn.c_attn.weight
    assert lookup["h.0.ln_1.bias"] is model.h[0].ln_1.bias
    assert [id(p) for _, p in named] == [id(p) for p in model.parameters()]   # same order


def test_tied_parameter_is_listed_once_under_its_first_name():
    model = TinyGPT(n_layer=1, tie=True)
    assert model.head.weight is model.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert names == expected_names(1)          # no "head.weight"
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids))
    assert list(model.state_dict()) == expected_names(1)


@pytest.mark.parametrize("tie", [False, True])
def test_num_parameters_counts_every_weight_once(tie):
    vocab, c, n_layer = 11, 4, 2
    model = TinyGPT(vocab, c, n_layer, tie=tie)
    # by hand: token table; per block: ln_1 (2c), c_attn (c·3c + 3c), c_proj (c·c + c); ln_f (2c)
    per_block = 2 * c + (c * 3 * c + 3 * c) + (c * c + c)
    assert model.num_parameters() == vocab * c + n_layer * per_block + 2 * c


# ---------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ---------------------------------------------------------------------------------------------
def test_state_dict_round_trip_into_a_freshly_initialised_model():
    source, target = TinyGPT(seed=0), TinyGPT(seed=1)
    assert not np.array_equal(source.wte.weight.data, target.wte.weight.data)
    state = source.state_dict()
    assert list(state) == expected_names(2)
    result = target.load_state_dict(state)
    assert result == ([], [])      # (missing, unexpected)
    for name, p in target.named_parameters():
        np.testing.assert_array_equal(p.data, state[name], err_msg=name)
        assert not np.shares_memory(p.data, state[name]), f"{name}: loaded by reference, not copied"
    # the loaded model is independent of the source: changing one leaves the other alone
    loaded = target.wte.weight.data.copy()
    source.wte.weight.data += 1.0
    np.testing.assert_array_equal(target.wte.weight.data, loaded)


def test_load_state_dict_casts_to_the_parameter_dtype():
    model = TinyGPT(n_layer=1)
    state = {k: v.astype(F64) + 0.25 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    for name, p in model.named_parameters():
        assert p.dtype == np.float32, name
        np.testing.assert_array_equal(p.data, state[name].astype(np.float32), err_msg=name)


def test_load_state_dict_takes_tensor_values_or_refuses_them_clearly():
    # dict(model.named_parameters()) holds Parameters, not arrays: an easy mix-up when copying
    # weights from one model to another. Either load them, or say which key is wrong and why.
    source = nn.Linear(3, 2, generator=np.random.default_rng(0))
    target = nn.Linear(3, 2, generator=np.random.default_rng(1))
    source.bias.data[...] = 1.0
    state = dict(source.named_parameters())
    try:
        target.load_state_dict(state)
    except TypeError as e:
        assert "weight" in str(e) or "bias" in str(e), str(e)
    else:
        for name, p in target.named_parameters():
            np.testing.assert_array_equal(p.data, state[name].data, err_msg=name)


def test_strict_load_names_every_bad_key_in_one_error_and_changes_nothing():
    model = TinyGPT(seed=0)
    state = {k: v.copy() + 1.0 for k, v in TinyGPT(seed=1).state_dict().items()}
    del state["h.1.attn.c_proj.bias"], state["ln_f.weight"]                 # missing
    state["h.7.mlp.weight"] = np.zeros((4, 4), np.float32)                   # unexpected
    state["lm_head.weight"] = np.zeros((4, 11), np.float32)
    state["wte.weight"] = np.zeros((12, 4), np.float32)                      # wrong shapes
    state["h.0.attn.c_attn.bias"] = np.zeros(13, np.float32)
    before = snapshot(model)
    with pytest.raises(KeyError) as info:
        model.load_state_dict(state, strict=True)
    message = str(info.value)
    for key in ("h.1.attn.c_proj.bias", "ln_f.weight", "h.7.mlp.weight", "lm_head.weight",
                "wte.weight", "h.0.attn.c_attn.bias"):
        assert key in message, f"{key!r} not named in: {message}"
    assert "(12, 4)" in message and "(11, 4)" in message      # both shapes of the mismatch
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=f"{name} changed by a bad load")


@pytest.mark.parametrize("problem", ["missing", "unexpected", "shape"])
def test_strict_load_rejects_each_kind_of_problem_alone(problem):
    model = TinyGPT(seed=0)
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    if problem == "missing":
        key = "h.0.ln_1.weight"
        del state[key]
    elif problem == "unexpected":
        key = "extra.weight"
        state[key] = np.zeros(3, np.float32)
    else:
        key = "ln_f.bias"
        state[key] = np.zeros((1, 4), np.float32)
    before = snapshot(model)
    with pytest.raises(KeyError, match=key.replace(".", r"\.")):
        model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_non_strict_load_copies_the_matching_keys_and_reports_the_rest():
    model, other = TinyGPT(seed=0), TinyGPT(seed=1)
    before = snapshot(model)
    state = {k: v.copy() for k, v in other.state_dict().items()}
    del state["ln_f.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["ln_f.bias"] and unexpected == ["extra.weight"]
    for name, value in model.state_dict().items():
        expected = before[name] if name == "ln_f.bias" else state[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Modes, zero_grad
# ---------------------------------------------------------------------------------------------
def test_train_and_eval_reach_every_module():
    model = TinyGPT()
    modules = [m for _, m in model.named_modules()]
    assert len(modules) == 1 + 1 + 1 + 2 * 6 + 1   # self, wte, h, 2 × (block, ln_1, attn,
    assert all(m.training for m in modules)       #   c_attn, c_proj, drop), ln_f
    assert model.eval() is model
    assert not any(m.training for m in modules)
    model.train()
    assert all(m.training for m in modules)
    model.h[1].eval()                              # only that subtree
    assert not model.h[1].attn.c_attn.training and not model.h[1].drop.training
    assert model.training and model.h[0].drop.training


def test_dropout_is_the_identity_in_eval_mode():
    model = TinyGPT()
    x = tensor.randn(3, 50, seed=0)
    model.eval()
    out = model.h[0].drop(x)
    np.testing.assert_array_equal(out.data, x.data)


@given(p=st.floats(0.05, 0.9), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=25)
def test_dropout_in_train_mode_zeros_some_entries_and_scales_the_rest(p, seed):
    n = 20_000
    rng = np.random.default_rng(seed)
    x_np = rng.uniform(0.5, 2.0, n)                 # no zeros in the input
    x = tensor.Tensor(x_np, requires_grad=True)
    drop = nn.Dropout(p, generator=np.random.default_rng(seed + 1))
    out = drop(x)
    dropped = out.data == 0
    np.testing.assert_allclose(out.data[~dropped], x_np[~dropped] / (1 - p), rtol=1e-12)
    # the number dropped is Binomial(n, p): within 6 standard deviations of n·p
    assert abs(dropped.sum() - n * p) < 6 * np.sqrt(n * p * (1 - p))
    # backward uses the same mask and scale:  dx = g · mask / (1 - p)
    g = rng.standard_normal(n)
    out.backward(g)
    np.testing.assert_allclose(x.grad, np.where(dropped, 0.0, g / (1 - p)), rtol=1e-12)


def test_dropout_with_p_zero_is_the_identity_and_p_one_is_rejected():
    x = tensor.randn(4, 5, seed=0)
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).data, x.data)
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(1.0)


def test_zero_grad_clears_every_gradient_so_the_next_backward_starts_fresh():
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 2, dtype=F64, generator=rng)
    x = tensor.Tensor(rng.standard_normal((5, 3)))
    lin(x).sum().backward()
    first = [p.grad.copy() for p in lin.parameters()]
    lin(x).sum().backward()                  # without zero_grad gradients add up ...
    for p, g in zip(lin.parameters(), first):
        np.testing.assert_allclose(p.grad, 2 * g)
    lin.zero_grad()
    assert all(p.grad is None for p in lin.parameters())
    lin(x).sum().backward()                  # ... and after it they start again from zero
    for p, g in zip(lin.parameters(), first):
        np.testing.assert_allclose(p.grad, g)


def test_zero_grad_reaches_nested_parameters():
    model = TinyGPT(n_layer=2)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Linear
# ---------------------------------------------------------------------------------------------
batch_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple)


@given(batch=batch_shapes, n_in=st.integers(1, 6), n_out=st.integers(1, 6), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40)
def test_linear_forward_is_x_at_w_plus_b(batch, n_in, n_out, bias, seed):
    rng = np.random.default_rng(seed)
    lin = nn.Linear(n_in, n_out, bias=bias, dtype=F64, generator=rng)
    assert lin.weight.shape == (n_in, n_out)
    if bias:
        assert lin.bias.shape == (n_out,)
        lin.bias.data[...] = rng.standard_normal(n_out)     # the default zeros would hide it
    else:
        assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    x = rng.standard_normal(batch + (n_in,))
    out = lin(tensor.Tensor(x))
    expected = x @ lin.weight.data + (lin.bias.data if bias else 0.0)
    assert out.shape == batch + (n_out,)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


def test_linear_float32_forward_matches_float64_reference():
    rng = np.random.default_rng(1)
    lin = nn.Linear(7, 5, generator=rng)
    lin.bias.data[...] = rng.standard_normal(5)
    assert lin.weight.dtype == np.float32
    x = rng.standard_normal((2, 3, 7)).astype(np.float32)
    out = lin(tensor.Tensor(x))
    assert out.dtype == np.float32
    expected = x.astype(F64) @ lin.weight.data.astype(F64) + lin.bias.data.astype(F64)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "op-by-op"])
def test_linear_takes_plain_arrays_of_any_number_type_on_both_paths(fused):
    """A NumPy input (float64 or int) is cast to the weight's dtype, as matmul does, whichever
    path runs: the fused `linear` op or matmul + add."""
    rng = np.random.default_rng(2)
    lin = nn.Linear(4, 3, generator=rng)
    lin.bias.data[...] = rng.standard_normal(3)
    for x in (rng.standard_normal((2, 4)), np.arange(8).reshape(2, 4)):
        with tensor.fused(fused):
            out = lin(x)
        assert out.dtype == np.float32
        expected = x.astype(F64) @ lin.weight.data.astype(F64) + lin.bias.data.astype(F64)
        np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 2, 3)])
def test_linear_gradcheck_float64(bias, shape):
    rng = np.random.default_rng(2)
    lin = nn.Linear(3, 4, bias=bias, dtype=F64, generator=rng)
    if bias:
        lin.bias.data[...] = rng.standard_normal(4)
    x = tensor.Tensor(rng.standard_normal(shape), requires_grad=True)
    params = [lin.weight] + ([lin.bias] if bias else [])
    assert tensor.gradcheck(lambda x, *_: lin(x), x, *params)


# ---------------------------------------------------------------------------------------------
# Embedding, LayerNorm
# ---------------------------------------------------------------------------------------------
@given(vocab=st.integers(1, 9), dim=st.integers(1, 5), idx_shape=batch_shapes,
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=30)
def test_embedding_forward_is_a_row_lookup_and_backward_adds_up_rows(vocab, dim, idx_shape, seed):
    rng = np.random.default_rng(seed)
    emb = nn.Embedding(vocab, dim, dtype=F64, generator=rng)
    idx = rng.integers(0, vocab, idx_shape)
    out = emb(idx)
    assert out.shape == idx_shape + (dim,)
    np.testing.assert_array_equal(out.data, emb.weight.data[idx])
    g = rng.standard_normal(out.shape)
    out.backward(g)
    expected = np.zeros((vocab, dim))
    for i, gi in zip(idx.reshape(-1), g.reshape(-1, dim)):    # repeated ids add up
        expected[i] += gi
    np.testing.assert_allclose(emb.weight.grad, expected, rtol=1e-12, atol=1e-12)


def layer_norm_reference(x, w, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)    # biased, as in the LayerNorm paper
    out = (x - mean) / np.sqrt(var + eps) * w
    return out + b if b is not None else out


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40)
def test_layer_norm_forward_matches_numpy(shape, bias, seed):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    ln = nn.LayerNorm(c, bias=bias, dtype=F64)
    assert ln.eps == 1e-5
    np.testing.assert_array_equal(ln.weight.data, np.ones(c))     # identity at initialisation
    ln.weight.data[...] = rng.standard_normal(c)
    if bias:
        ln.bias.data[...] = rng.standard_normal(c)
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    out = ln(tensor.Tensor(x))
    expected = layer_norm_reference(x, ln.weight.data, ln.bias.data if bias else None)
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-10)


def test_layer_norm_float32_stays_float32():
    ln = nn.LayerNorm(6)
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    out = ln(tensor.Tensor(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, layer_norm_reference(x.astype(F64), 1.0, 0.0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(5,), (3, 8), (2, 3, 7)])
def test_layer_norm_matches_torch(shape):
    torch = pytest.importorskip("torch", reason='parity oracle: pip install "tinygpt[parity]"')
    rng = np.random.default_rng(4)
    c = shape[-1]
    ln = nn.LayerNorm(c, dtype=F64)
    ln.weight.data[...] = rng.standard_normal(c)
    ln.bias.data[...] = rng.standard_normal(c)
    x_np, g = rng.standard_normal(shape), rng.standard_normal(shape)

    x = tensor.Tensor(x_np, requires_grad=True)
    out = ln(x)
    out.backward(g)

    xt = torch.tensor(x_np, requires_grad=True)
    wt = torch.tensor(ln.weight.data, requires_grad=True)
    bt = torch.tensor(ln.bias.data, requires_grad=True)
    ref = torch.nn.functional.layer_norm(xt, (c,), wt, bt, eps=1e-5)
    ref.backward(torch.tensor(g))

    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ln.weight.grad, wt.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ln.bias.grad, bt.grad.numpy(), rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------
class Scale(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x * self.k


class AddOne(nn.Module):
    def forward(self, x):
        return x + 1.0


def test_sequential_runs_its_modules_in_order():
    x_np = np.arange(4.0)
    x = tensor.Tensor(x_np)
    np.testing.assert_array_equal(nn.Sequential(Scale(2.0), AddOne())(x).data, 2 * x_np + 1)
    np.testing.assert_array_equal(nn.Sequential(AddOne(), Scale(2.0))(x).data, 2 * (x_np + 1))


def test_sequential_of_layers_matches_numpy_and_names_its_parameters():
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Linear(3, 4, dtype=F64, generator=rng), nn.LayerNorm(4, dtype=F64),
                          nn.Linear(4, 2, bias=False, dtype=F64, generator=rng))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.weight",
                                                        "1.bias", "2.weight"]
    x = rng.standard_normal((5, 3))
    h = x @ model[0].weight.data + model[0].bias.data
    expected = layer_norm_reference(h, 1.0, 0.0) @ model[2].weight.data
    np.testing.assert_allclose(model(tensor.Tensor(x)).data, expected, rtol=1e-10, atol=1e-12)


def test_module_list_indexing_len_iter_and_append():
    a, b, c = AddOne(), Scale(2.0), nn.Linear(2, 2)
    ml = nn.ModuleList([a, b])
    assert len(ml) == 2
    assert ml[0] is a and ml[1] is b and ml[-1] is b
    assert list(ml) == [a, b]
    ml.append(c)
    assert len(ml) == 3 and ml[2] is c and list(ml) == [a, b, c]
    assert [n for n, _ in ml.named_parameters()] == ["2.weight", "2.bias"]
    with pytest.raises(IndexError):
        ml[3]
    assert len(nn.ModuleList()) == 0


# ---------------------------------------------------------------------------------------------
# A subclass that forgot super().__init__()
# ---------------------------------------------------------------------------------------------
def test_forgetting_super_init_fails_clearly_when_setting_an_attribute():
    class Forgetful(nn.Module):
        def __init__(self):
            self.lin = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match=r"Forgetful.*super\(\)\.__init__\(\)"):
        Forgetful()


class NoAttributes(nn.Module):
    """A parameter-free layer whose __init__ forgot super().__init__() and sets nothing, so the
    check in __setattr__ never runs."""

    def __init__(self):
        pass

    def forward(self, x):
        return x * 2.0


def test_forgetting_super_init_fails_clearly_when_the_module_is_called():
    with pytest.raises((RuntimeError, AttributeError), match=r"super\(\)\.__init__\(\)"):
        NoAttributes()(tensor.ones(3))


def test_forgetting_super_init_fails_clearly_when_a_parent_walks_the_tree():
    model = nn.Sequential(nn.Linear(2, 2), NoAttributes())
    for walk in (model.parameters, model.eval, model.state_dict):
        with pytest.raises((RuntimeError, AttributeError),
                           match=r"NoAttributes.*super\(\)\.__init__\(\)"):
            walk()
