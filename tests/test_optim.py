"""Tests for tensor/optim.py: AdamW, SGD with momentum, their saved state, gradient clipping
and the warmup-then-cosine learning-rate schedule.

Oracles: each update rule written out again here in plain NumPy from its paper (Kingma & Ba
2015, Adam, Algorithm 1; Loshchilov & Hutter 2019, AdamW, Algorithm 2); torch.optim.AdamW and
torch.optim.SGD when the parity extra is installed; np.linalg.norm; and the schedule's
properties derived from its definition (linear ramp, half cosine, flat tail).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensor import nn, optim
from tensor.io import load_safetensors, save_safetensors

TORCH_REASON = 'parity oracle: pip install "tinygpt[parity]"'


def make_params(rng, shapes, dtype=np.float64):
    return [nn.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def copies(params):
    return [nn.Parameter(p.data.copy()) for p in params]


def random_grads(rng, params, n_steps):
    """n_steps lists of gradients, one per parameter."""
    return [[rng.standard_normal(p.shape) for p in params] for _ in range(n_steps)]


def run(optimizer, params, grads, lrs):
    """Take one step per entry of grads/lrs; return the parameter values after every step."""
    history = []
    for step_grads, lr in zip(grads, lrs):
        for p, g in zip(params, step_grads):
            p.grad = g.astype(p.dtype)
        optimizer.lr = lr
        optimizer.step()
        history.append([p.data.copy() for p in params])
    return history


# ---------------------------------------------------------------------------------------------
# AdamW, against the algorithm as published
# ---------------------------------------------------------------------------------------------
def adamw_reference(theta, grads, lrs, beta1, beta2, eps, weight_decay, decay):
    """AdamW for one parameter, step t = 1, 2, …:
        m_t = β₁ m_{t-1} + (1 - β₁) g_t              v_t = β₂ v_{t-1} + (1 - β₂) g_t²
        m̂_t = m_t / (1 - β₁ᵗ)                        v̂_t = v_t / (1 - β₂ᵗ)
        θ_t = θ_{t-1} - lr_t · ( m̂_t / (√v̂_t + ε) + λ θ_{t-1} )
    The decay term λθ is added to the step, never to the gradient ("decoupled"); λ = 0 for
    parameters that are not decayed. (The paper scales λθ by the schedule multiplier η_t only;
    here, as in PyTorch and nanoGPT, λ is scaled by the full learning rate lr_t.)
    Returns θ after every step and the final (m, v)."""
    theta = theta.astype(np.float64)
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    lam = weight_decay if decay else 0.0
    history = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * (m_hat / (np.sqrt(v_hat) + eps) + lam * theta)
        history.append(theta)
    return history, m, v


adam_hparams = dict(
    lr0=st.floats(1e-4, 0.3),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.9, 0.9999),
    eps=st.sampled_from([1e-8, 1e-6, 1e-3]),
    weight_decay=st.floats(0.0, 0.5),
    n_steps=st.integers(1, 6),
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)


def lr_sequence(rng, lr0, n_steps):
    """A different learning rate at every step, as a schedule would give."""
    return [float(lr0 * f) for f in rng.uniform(0.2, 1.0, n_steps)]


@given(**adam_hparams)
@settings(max_examples=60)
def test_adamw_matches_the_published_algorithm(lr0, beta1, beta2, eps, weight_decay, n_steps,
                                               rows, cols, seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, [(rows, cols), (cols,)])          # a matrix and a bias
    start = [p.data.copy() for p in params]
    grads = random_grads(rng, params, n_steps)
    lrs = lr_sequence(rng, lr0, n_steps)

    opt = optim.AdamW(params, lr=lrs[0], betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    history = run(opt, params, grads, lrs)

    state = opt.state_dict()
    assert state["step"] == n_steps
    for i, (theta0, decay) in enumerate(zip(start, [True, False])):   # only the matrix decays
        ref, m, v = adamw_reference(theta0, [g[i] for g in grads], lrs, beta1, beta2, eps,
                                    weight_decay, decay)
        for t in range(n_steps):
            np.testing.assert_allclose(history[t][i], ref[t], rtol=1e-10, atol=1e-12,
                                       err_msg=f"param {i}, step {t + 1}")
        np.testing.assert_allclose(state["arrays"][f"m.{i}"], m, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state["arrays"][f"v.{i}"], v, rtol=1e-12, atol=1e-15)


def test_adamw_decays_only_parameters_with_two_or_more_dims_by_default():
    # Zero gradients: then m = v = 0, the Adam term is 0, and only the decay can move θ:
    #   θ ← θ - lr·λ·θ = (1 - lr·λ) θ
    rng = np.random.default_rng(0)
    params = make_params(rng, [(3, 4), (4,), (2, 3, 2), ()])
    start = [p.data.copy() for p in params]
    opt = optim.AdamW(params, lr=0.1, weight_decay=0.5)
    for p in params:
        p.grad = np.zeros_like(p.data)
    opt.step()
    for p, theta0 in zip(params, start):
        expected = (1 - 0.1 * 0.5) * theta0 if theta0.ndim >= 2 else theta0
        np.testing.assert_allclose(p.data, expected, rtol=1e-14, err_msg=f"shape {p.shape}")


def test_adamw_decay_filter_chooses_which_parameters_decay():
    rng = np.random.default_rng(1)
    params = make_params(rng, [(3, 4), (4,)])
    start = [p.data.copy() for p in params]
    opt = optim.AdamW(params, lr=0.1, weight_decay=0.5, decay_filter=lambda p: p.ndim == 1)
    for p in params:
        p.grad = np.zeros_like(p.data)
    opt.step()
    np.testing.assert_array_equal(params[0].data, start[0])
    np.testing.assert_allclose(params[1].data, 0.95 * start[1], rtol=1e-14)


def test_adamw_skips_parameters_without_a_gradient():
    rng = np.random.default_rng(2)
    params = make_params(rng, [(3, 4), (4,)])
    start = params[0].data.copy()
    opt = optim.AdamW(params, lr=0.1, weight_decay=0.5)
    params[1].grad = rng.standard_normal(4)       # params[0].grad stays None
    opt.step()
    np.testing.assert_array_equal(params[0].data, start)      # not even decayed
    np.testing.assert_array_equal(opt.state_dict()["arrays"]["m.0"], np.zeros((3, 4)))


def test_adamw_keeps_float32_parameters_float32():
    rng = np.random.default_rng(3)
    params = make_params(rng, [(3, 4), (4,)], dtype=np.float32)
    opt = optim.AdamW(params, lr=0.01)
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    opt.step()
    assert all(p.dtype == np.float32 for p in params)
    assert all(a.dtype == np.float32 for a in opt.state_dict()["arrays"].values())


@given(**adam_hparams)
@settings(max_examples=20)
def test_adamw_matches_torch(lr0, beta1, beta2, eps, weight_decay, n_steps, rows, cols, seed):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    rng = np.random.default_rng(seed)
    params = make_params(rng, [(rows, cols), (cols,)])
    grads = random_grads(rng, params, n_steps)
    lrs = lr_sequence(rng, lr0, n_steps)

    w = torch.tensor(params[0].data.copy(), requires_grad=True)
    b = torch.tensor(params[1].data.copy(), requires_grad=True)
    # torch decays every parameter of a group; put the bias in a group without decay
    ref = torch.optim.AdamW([{"params": [w], "weight_decay": weight_decay},
                             {"params": [b], "weight_decay": 0.0}],
                            lr=lrs[0], betas=(beta1, beta2), eps=eps)
    opt = optim.AdamW(params, lr=lrs[0], betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
    for step_grads, lr in zip(grads, lrs):
        for p, g in zip(params, step_grads):
            p.grad = g.copy()
        w.grad, b.grad = torch.tensor(step_grads[0]), torch.tensor(step_grads[1])
        opt.lr = lr
        for group in ref.param_groups:
            group["lr"] = lr
        opt.step()
        ref.step()
        np.testing.assert_allclose(params[0].data, w.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(params[1].data, b.detach().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# SGD with momentum
# ---------------------------------------------------------------------------------------------
def sgd_reference(theta, grads, lrs, momentum, weight_decay):
    """Heavy-ball momentum, as PyTorch writes it (no dampening, buffer starts at 0):
        d_t = g_t + λ θ_{t-1}            (L2 penalty folded into the gradient)
        b_t = μ b_{t-1} + d_t
        θ_t = θ_{t-1} - lr_t · b_t"""
    theta = theta.astype(np.float64)
    buf = np.zeros_like(theta)
    history = []
    for g, lr in zip(grads, lrs):
        d = g + weight_decay * theta
        buf = momentum * buf + d
        theta = theta - lr * buf
        history.append(theta)
    return history


sgd_hparams = dict(
    lr0=st.floats(1e-3, 0.5),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
    n_steps=st.integers(1, 6),
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)


@given(**sgd_hparams)
@settings(max_examples=50)
def test_sgd_momentum_matches_numpy(lr0, momentum, weight_decay, n_steps, rows, cols, seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, [(rows, cols), (cols,)])
    start = [p.data.copy() for p in params]
    grads = random_grads(rng, params, n_steps)
    lrs = lr_sequence(rng, lr0, n_steps)
    opt = optim.SGD(params, lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    history = run(opt, params, grads, lrs)
    for i, theta0 in enumerate(start):
        ref = sgd_reference(theta0, [g[i] for g in grads], lrs, momentum, weight_decay)
        for t in range(n_steps):
            np.testing.assert_allclose(history[t][i], ref[t], rtol=1e-12, atol=1e-12,
                                       err_msg=f"param {i}, step {t + 1}")


@given(**sgd_hparams)
@settings(max_examples=20)
def test_sgd_matches_torch(lr0, momentum, weight_decay, n_steps, rows, cols, seed):
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    rng = np.random.default_rng(seed)
    params = make_params(rng, [(rows, cols), (cols,)])
    grads = random_grads(rng, params, n_steps)
    lrs = lr_sequence(rng, lr0, n_steps)
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    ref = torch.optim.SGD(tparams, lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    opt = optim.SGD(params, lr=lrs[0], momentum=momentum, weight_decay=weight_decay)
    for step_grads, lr in zip(grads, lrs):
        for p, tp, g in zip(params, tparams, step_grads):
            p.grad, tp.grad = g.copy(), torch.tensor(g)
        opt.lr = lr
        ref.param_groups[0]["lr"] = lr
        opt.step()
        ref.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Optimizer state: save, load, continue
# ---------------------------------------------------------------------------------------------
SHAPES = [(4, 3), (3,), (2, 2, 2)]
OPTIMIZERS = {
    "adamw": lambda ps: optim.AdamW(ps, lr=0.05, betas=(0.8, 0.95), weight_decay=0.1),
    "sgd": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
}


def save_to_disk(path, opt):
    """The way a checkpoint stores an optimizer: arrays in safetensors, scalars in its metadata."""
    state = opt.state_dict()
    save_safetensors(path, state["arrays"], metadata={"step": str(state["step"]),
                                                      "lr": repr(state["lr"])})
    return {"step": state["step"], "lr": state["lr"]}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("through_disk", [False, True], ids=["in_memory", "safetensors"])
def test_state_round_trip_resumes_exactly_where_it_stopped(name, through_disk, tmp_path):
    rng = np.random.default_rng(4)
    params = make_params(rng, SHAPES)
    grads = random_grads(rng, params, 7)
    lrs = [0.05, 0.04, 0.06, 0.03, 0.02, 0.05, 0.01]

    uninterrupted = OPTIMIZERS[name](params)
    run(uninterrupted, params, grads[:4], lrs[:4])

    # "stop" after 4 steps: keep the weights and the optimizer state, then build a new run
    resumed_params = copies(params)
    if through_disk:
        scalars = save_to_disk(tmp_path / "optimizer.safetensors", uninterrupted)
        state = {"arrays": load_safetensors(tmp_path / "optimizer.safetensors"), **scalars}
    else:
        saved = uninterrupted.state_dict()
        state = {**saved, "arrays": {k: a.copy() for k, a in saved["arrays"].items()}}
    resumed = OPTIMIZERS[name](resumed_params)
    resumed.load_state_dict(state)
    assert resumed.step_count == 4 and resumed.lr == lrs[3]

    expected = run(uninterrupted, params, grads[4:], lrs[4:])
    got = run(resumed, resumed_params, grads[4:], lrs[4:])
    for t, (want, have) in enumerate(zip(expected, got)):
        for i, (a, b) in enumerate(zip(want, have)):
            np.testing.assert_array_equal(b, a, err_msg=f"param {i}, step {5 + t}")


def test_resuming_without_the_state_would_differ():
    """The round-trip test above can fail: a fresh AdamW (m = v = 0, t = 0) takes other steps."""
    rng = np.random.default_rng(5)
    params = make_params(rng, SHAPES)
    grads = random_grads(rng, params, 3)
    first = OPTIMIZERS["adamw"](params)
    run(first, params, grads[:2], [0.05] * 2)
    fresh_params = copies(params)
    a = run(first, params, grads[2:], [0.05])[-1]
    b = run(OPTIMIZERS["adamw"](fresh_params), fresh_params, grads[2:], [0.05])[-1]
    assert not np.allclose(a[0], b[0])


def trained_state(shapes, seed=6):
    rng = np.random.default_rng(seed)
    params = make_params(rng, shapes)
    opt = OPTIMIZERS["adamw"](params)
    run(opt, params, random_grads(rng, params, 2), [0.05, 0.05])
    state = opt.state_dict()
    return {**state, "arrays": {k: a.copy() for k, a in state["arrays"].items()}}


def optimizer_snapshot(opt):
    state = opt.state_dict()
    return state["step"], state["lr"], {k: a.copy() for k, a in state["arrays"].items()}


def assert_unchanged(opt, snap):
    step, lr, arrays = optimizer_snapshot(opt)
    assert (step, lr) == snap[:2]
    for k, a in snap[2].items():
        np.testing.assert_array_equal(arrays[k], a, err_msg=f"{k} changed by a failed load")


def target_optimizer(shapes):
    opt = OPTIMIZERS["adamw"](make_params(np.random.default_rng(7), shapes))
    run(opt, opt.params, random_grads(np.random.default_rng(8), opt.params, 1), [0.01])
    return opt


def test_load_state_with_a_missing_key_names_it():
    state = trained_state(SHAPES)
    del state["arrays"]["v.1"]
    opt = target_optimizer(SHAPES)
    with pytest.raises((KeyError, ValueError), match=r"v\.1"):
        opt.load_state_dict(state)


def test_load_state_with_a_wrong_shape_names_the_key_and_both_shapes():
    state = trained_state([(4, 3), (3,), (2, 2, 2)])
    opt = target_optimizer([(4, 3), (5,), (2, 2, 2)])
    with pytest.raises((KeyError, ValueError), match=r"m\.1.*\(3,\).*\(5,\)"):
        opt.load_state_dict(state)


def test_load_state_from_another_kind_of_optimizer_is_rejected():
    rng = np.random.default_rng(9)
    sgd = OPTIMIZERS["sgd"](make_params(rng, SHAPES))
    with pytest.raises((KeyError, ValueError), match=r"m\.0"):
        target_optimizer(SHAPES).load_state_dict(sgd.state_dict())


def test_load_state_from_an_optimizer_with_more_parameters_is_rejected():
    # m.3 and v.3 belong to no parameter here: the state comes from a different model
    state = trained_state(SHAPES + [(2,)])
    opt = target_optimizer(SHAPES)
    with pytest.raises((KeyError, ValueError), match=r"[mv]\.3"):
        opt.load_state_dict(state)


@pytest.mark.parametrize("problem", ["missing", "shape"])
def test_a_failed_load_changes_nothing(problem):
    # the problem is in the LAST parameter, so a load that checks as it copies has already
    # overwritten the earlier ones when it notices
    state = trained_state(SHAPES)
    if problem == "missing":
        del state["arrays"]["v.2"]
    else:
        state["arrays"]["v.2"] = np.zeros((8,))
    opt = target_optimizer(SHAPES)
    snap = optimizer_snapshot(opt)
    with pytest.raises((KeyError, ValueError)):
        opt.load_state_dict(state)
    assert_unchanged(opt, snap)


# ---------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------
grad_shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple),
                       min_size=1, max_size=4)


@given(shapes=grad_shapes, max_norm=st.floats(0.1, 10.0), factor=st.floats(1.01, 100.0),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=60)
def test_clip_grad_norm_scales_a_large_global_norm_down_to_max_norm(shapes, max_norm, factor,
                                                                    seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, shapes)
    raw = [rng.standard_normal(s) for s in shapes]
    norm0 = np.linalg.norm(np.concatenate([g.ravel() for g in raw]))
    for p, g in zip(params, raw):
        p.grad = np.asarray(g * (factor * max_norm / norm0))   # global norm: factor · max_norm
    before = [p.grad.copy() for p in params]
    total = np.linalg.norm(np.concatenate([g.ravel() for g in before]))

    returned = optim.clip_grad_norm_(params, max_norm)

    assert returned == pytest.approx(total, rel=1e-12)
    after = np.concatenate([p.grad.ravel() for p in params])
    # equal to max_norm up to the small ε that guards against division by zero
    assert np.linalg.norm(after) == pytest.approx(max_norm, rel=2e-5)
    assert np.linalg.norm(after) <= max_norm
    # one common factor for every gradient: the global direction is unchanged
    for g_before, p in zip(before, params):
        np.testing.assert_allclose(p.grad, g_before * (max_norm / total), rtol=2e-5, atol=1e-300)


# A norm strictly inside the bound: at most 0.999 · max_norm. The gradients are float64 with at
# most 4 · 64 = 256 entries, so the norm clip_grad_norm_ computes (a sum of squares, then a square
# root) is within ~260 ulps (< 1e-13, relative) of fraction · max_norm, far below the 1e-3 of
# room left; a fraction up to 1.0 would let rounding land the norm a hair above max_norm, where
# clipping rightly scales the gradients (the boundary is the other test's, with factor > 1).
@given(shapes=grad_shapes, max_norm=st.floats(0.1, 10.0), fraction=st.floats(0.0, 0.999),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40)
def test_clip_grad_norm_leaves_a_small_norm_alone(shapes, max_norm, fraction, seed):
    rng = np.random.default_rng(seed)
    params = make_params(rng, shapes)
    raw = [rng.standard_normal(s) for s in shapes]
    norm0 = np.linalg.norm(np.concatenate([g.ravel() for g in raw]))
    for p, g in zip(params, raw):
        p.grad = np.asarray(g * (fraction * max_norm / norm0))   # global norm < max_norm
    before = [p.grad.copy() for p in params]
    total = np.linalg.norm(np.concatenate([g.ravel() for g in before]))
    returned = optim.clip_grad_norm_(params, max_norm)
    assert returned == pytest.approx(total, rel=1e-12, abs=1e-300)
    for p, g in zip(params, before):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_skips_missing_gradients_and_keeps_float32():
    rng = np.random.default_rng(10)
    params = make_params(rng, [(3, 4), (4,), (2,)], dtype=np.float32)
    params[0].grad = np.full((3, 4), 3.0, np.float32)
    params[2].grad = np.full(2, 4.0, np.float32)           # params[1].grad is None
    total = optim.clip_grad_norm_(params, 1.0)
    assert total == pytest.approx(math.sqrt(12 * 9 + 2 * 16), rel=1e-6)
    assert params[1].grad is None
    assert params[0].grad.dtype == np.float32 and params[2].grad.dtype == np.float32
    clipped = np.concatenate([params[0].grad.ravel(), params[2].grad.ravel()]).astype(np.float64)
    assert np.linalg.norm(clipped) == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Warmup + cosine schedule
# ---------------------------------------------------------------------------------------------
schedules = dict(
    lr=st.floats(1e-5, 1.0),
    min_fraction=st.floats(0.0, 0.99),
    warmup=st.integers(0, 50),
    half_decay=st.integers(1, 200),          # decay_iters - warmup_iters = 2 · half_decay
)


@given(**schedules)
@settings(max_examples=60)
def test_cosine_lr_properties(lr, min_fraction, warmup, half_decay):
    min_lr = lr * min_fraction
    decay = warmup + 2 * half_decay
    f = [optim.cosine_lr(it, lr, min_lr, warmup, decay) for it in range(decay + 20)]

    # warmup: a straight line up from above 0, reaching lr by the first step after warmup
    ramp = np.array(f[:warmup])
    if warmup:
        assert 0 < ramp[0] and ramp.max() <= lr * (1 + 1e-12)
    if warmup >= 2:
        steps = np.diff(ramp)
        assert steps.min() > 0
        np.testing.assert_allclose(steps, steps[0], rtol=1e-9)        # linear
        slope = steps[0]
        # extend the line: it reaches lr somewhere in (warmup - 1, warmup]
        assert ramp[-1] + slope >= lr * (1 - 1e-9)
    # the decay starts at the peak ...
    assert f[warmup] == pytest.approx(lr, rel=1e-12)
    # ... and never goes up again, staying between min_lr and lr
    tail = np.array(f[warmup:])
    assert np.all(np.diff(tail) <= 0)
    assert np.all((tail >= min_lr * (1 - 1e-12)) & (tail <= lr * (1 + 1e-12)))
    # half way down the half cosine, cos(π/2) = 0: the average of lr and min_lr
    assert f[warmup + half_decay] == pytest.approx((lr + min_lr) / 2, rel=1e-12)
    # point symmetry of a half cosine about its midpoint: f(start + d) + f(end - d) = lr + min_lr
    for d in range(0, 2 * half_decay + 1, max(1, half_decay // 3)):
        assert f[warmup + d] + f[decay - d] == pytest.approx(lr + min_lr, rel=1e-9)
    # at and after decay_iters: flat at min_lr
    assert all(v == pytest.approx(min_lr, rel=1e-12, abs=1e-300) for v in f[decay:])


def test_cosine_lr_quarter_points_follow_the_cosine():
    # progress 1/4 and 3/4 through the decay: cos(π/4) = √2/2 and cos(3π/4) = -√2/2
    lr, min_lr, warmup, decay = 6e-4, 6e-5, 10, 410
    half = (lr - min_lr) / 2
    assert optim.cosine_lr(110, lr, min_lr, warmup, decay) == pytest.approx(
        min_lr + half * (1 + math.sqrt(0.5)), rel=1e-12)
    assert optim.cosine_lr(310, lr, min_lr, warmup, decay) == pytest.approx(
        min_lr + half * (1 - math.sqrt(0.5)), rel=1e-12)


def test_cosine_lr_without_warmup_starts_at_lr():
    assert optim.cosine_lr(0, 1e-3, 1e-4, 0, 100) == pytest.approx(1e-3, rel=1e-12)
