"""Weight-only quantization (tensor/kernels/quantized.py, tensor/quant.py, tinygpt/quantize.py).

Oracles: the Numba kernels against their plain-NumPy references (float32 and float64
activations, odd shapes, one row, a few rows, many rows); bfloat16 rounding against PyTorch's;
int8 against the error bound of its own definition (each weight within half a step of its row's
scale); quantized layers and a quantized GPT against the float model they came from."""
import numba
import numpy as np
import pytest
from click.testing import CliRunner

import tensor
from tensor import nn
from tensor.kernels import quantized as kq
from tensor.quant import QuantEmbedding, QuantLinear, quantize_, weight_nbytes
from tinygpt.model import GPT, GPTConfig
from tinygpt.quantize import quantize_gpt, weight_bytes

# every row count up to 17 (the int8 kernel's blocks of 8, 4, 2 and 1 rows in every mix), and
# both sides of SMALL_M (the last Numba row count, the first through BLAS)
ROWS = sorted(set(range(1, 18)) | {kq.SMALL_M, kq.SMALL_M + 1})
SHAPES = [(1, 1), (7, 5), (37, 29), (100, 65)]        # (N outputs, K inputs): odd on purpose


def rand(rng, shape, dtype=np.float32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ----- the kernels against their NumPy references ----------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", ROWS)
@pytest.mark.parametrize("N,K", SHAPES)
def test_int8_kernel_matches_numpy_reference(dtype, M, N, K):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    q, scale = kq.quantize_int8(rand(rng, (N, K)))
    x = rand(rng, (M, K), dtype)
    out, ref = kq.matmul_int8(x, q, scale), kq.matmul_int8_ref(x, q, scale)
    assert out.dtype == ref.dtype == dtype and out.shape == (M, N)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", ROWS)
@pytest.mark.parametrize("N,K", SHAPES)
def test_bf16_kernel_matches_numpy_reference(dtype, M, N, K):
    rng = np.random.default_rng(M * 1000 + N * 10 + K + 1)
    u = kq.to_bfloat16(rand(rng, (N, K)))
    x = rand(rng, (M, K), dtype)
    out, ref = kq.matmul_bf16(x, u), kq.matmul_bf16_ref(x, u)
    assert out.dtype == ref.dtype == dtype and out.shape == (M, N)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_kernels_read_non_contiguous_inputs():
    """A transposed or sliced x (and a column-major weight) give the same product."""
    rng = np.random.default_rng(0)
    w = rand(rng, (29, 40))
    q, scale = kq.quantize_int8(w.T)                 # quantize_int8 of a transposed view
    assert q.flags.c_contiguous
    x = rand(rng, (29, 3)).T                         # (3, 29), column-major
    np.testing.assert_allclose(kq.matmul_int8(x, np.asfortranarray(q), scale),
                               kq.matmul_int8_ref(np.ascontiguousarray(x), q, scale), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M", [1, 3, 8, 13, kq.SMALL_M + 1])
def test_kernels_keep_nan_and_inf_as_numpy_does(M, dtype):
    """The kernels' fast-math is reassociation and FMA only: an inf or nan activation gives what
    NumPy's product gives (inf * 0 = nan, inf - inf = nan, nan anywhere = nan)."""
    rng = np.random.default_rng(M)
    w = rand(rng, (37, 29))
    w[5] = 0.0                                       # a zero row: inf * 0 = nan
    w[6] = np.abs(w[6]) + 0.5                        # one sign, no zero: an inf stays inf
    q, scale = kq.quantize_int8(w)
    u = kq.to_bfloat16(w)
    x = rand(rng, (M, 29), dtype)
    x[0, 3] = np.inf
    if M >= 3:
        x[1, 8] = -np.inf
        x[2, 11] = np.nan
    with np.errstate(invalid="ignore"):              # NumPy warns of the nan it makes
        pairs = [(kq.matmul_int8(x, q, scale), kq.matmul_int8_ref(x, q, scale)),
                 (kq.matmul_bf16(x, u), kq.matmul_bf16_ref(x, u))]
    for out, ref in pairs:
        assert np.isnan(ref).any() and np.isinf(ref).any()      # the test sees both kinds
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref))
        np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
        fin = np.isfinite(ref)
        np.testing.assert_allclose(out[fin], ref[fin], rtol=1e-5, atol=1e-5)


def test_kernel_shape_errors_name_the_op_and_shapes():
    q, scale = kq.quantize_int8(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"matmul_int8.*\(2, 5\).*\(4, 3\)"):
        kq.matmul_int8(np.ones((2, 5), np.float32), q, scale)
    with pytest.raises(TypeError, match="matmul_bf16.*int64"):
        kq.matmul_bf16(np.ones((2, 3), np.int64), kq.to_bfloat16(np.ones((4, 3))))


# ----- whose threads the kernels run on (the measured decision above kernel_threads) ---------------

@pytest.fixture
def thread_setting():
    """Put the thread policy back as it was after the test."""
    from tensor.kernels import get_thread_setting, set_num_threads
    n, owner = get_thread_setting()
    yield set_num_threads
    set_num_threads(n, owner=owner)


def kernel_thread_count():
    with kq.kernel_threads():
        return numba.get_num_threads()


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_kernels_take_the_policy_threads_whoever_owns_them(thread_setting):
    thread_setting(2)                                # BLAS owns 2 threads: BLAS idles meanwhile
    assert kernel_thread_count() == 2
    thread_setting(2, owner="numba")
    assert kernel_thread_count() == 2
    thread_setting(1)
    assert kernel_thread_count() == 1
    before = numba.get_num_threads()
    kernel_thread_count()
    assert numba.get_num_threads() == before         # put back afterwards


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("others_busy,want", [(0.0, 2), (1.0, 1)])
def test_kernels_follow_the_load_under_auto(thread_setting, monkeypatch, others_busy, want):
    """Under "auto" the kernels get the cores other processes leave free, even when no float
    product (which also looks at the load) runs between two quantized ones, as in a model whose
    every weight is quantized. The load is faked: another process kept `others_busy` of our two
    cores busy over one second."""
    from tensor.kernels import threads
    samples = [(0.0, 0.0, 0.0), (1.0, others_busy, 0.0)]     # (wall, busy cores s, our cpu s)
    monkeypatch.setattr(threads, "_cpu_sample", lambda: samples.pop(0) if samples else None)
    monkeypatch.setattr(threads, "_cpu_cores", lambda: [0, 1])
    monkeypatch.setattr(threads, "_clock", lambda: 1.0)
    thread_setting("auto")                           # takes the first sample
    assert kernel_thread_count() == want             # the kernel looks at the load: the second


# ----- what the stored numbers mean --------------------------------------------------------------

def test_int8_each_weight_within_half_a_step_of_its_row_scale():
    rng = np.random.default_rng(1)
    w = rand(rng, (50, 33), np.float64) * rng.uniform(0.01, 10, (50, 1))   # rows of any size
    w[7] = 0.0                                                              # a row of zeros
    q, scale = kq.quantize_int8(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (50,)
    np.testing.assert_allclose(scale[np.arange(50) != 7],
                               np.abs(w).max(axis=1)[np.arange(50) != 7] / 127, rtol=1e-6)
    assert np.abs(q).max(axis=1)[np.arange(50) != 7].min() == 127    # the largest maps to ±127
    assert np.all(q[7] == 0)
    err = np.abs(kq.dequantize_int8(q, scale, np.float64) - w)
    assert np.all(err <= scale[:, None] * (0.5 + 1e-6))


def test_bfloat16_rounds_as_pytorch_does():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w = np.concatenate([rand(rng, 5000), rand(rng, 1000, scale=1e-30),
                        rand(rng, 1000, scale=1e30),
                        np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875], np.float32)])
    ours = kq.to_bfloat16(w)
    theirs = torch.from_numpy(w).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(kq.from_bfloat16(ours),
                                  torch.from_numpy(ours.view(np.int16)).view(torch.bfloat16)
                                  .float().numpy())


def test_nan_weights_are_refused_with_the_shape():
    w = np.ones((3, 4), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"quantize_int8.*\(3, 4\).*nan"):
        kq.quantize_int8(w)
    with pytest.raises(ValueError, match=r"to_bfloat16.*\(3, 4\).*nan"):
        kq.to_bfloat16(w)


# ----- layers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_quant_linear_is_the_float_linear_of_the_widened_weights(dtype):
    rng = np.random.default_rng(3)
    lin = nn.Linear(23, 11, generator=rng)
    lin.bias.data[:] = rand(rng, 11)
    ql = QuantLinear(lin, dtype)
    widened = ql.weight.dequantize(np.float64)                   # (out, in)
    for shape in [(23,), (1, 23), (2, 5, 23)]:
        x = rand(rng, shape)
        out = ql(tensor.Tensor(x))
        ref = x.astype(np.float64) @ widened.T + lin.bias.data
        assert out.shape == shape[:-1] + (11,) and out.dtype == np.float32
        np.testing.assert_allclose(out.data, ref, rtol=1e-5, atol=1e-5)
        # and close to the float32 layer itself: int8 within half a step per weight
        bound = np.abs(x) @ (np.abs(lin.weight.data) / (127 if dtype == "int8" else 128))
        assert np.all(np.abs(out.data - lin(tensor.Tensor(x)).data) <= bound + 1e-5)


def test_backward_through_a_quantized_weight_raises_a_clear_error():
    rng = np.random.default_rng(4)
    model = nn.Sequential(nn.Linear(6, 4, generator=rng), nn.Linear(4, 3, generator=rng))
    quantize_(model, "int8")
    x = tensor.Tensor(rand(rng, (2, 6)), requires_grad=True)
    loss = model(x).sum()
    with pytest.raises(RuntimeError, match="QuantLinear.*inference-only.*quantize"):
        loss.backward()
    with tensor.no_grad():                   # no graph: generation pays nothing for the check
        assert not model(x).requires_grad


def test_quantize_rejects_unknown_dtypes_and_missing_embeddings():
    with pytest.raises(ValueError, match="float16"):
        quantize_(nn.Linear(2, 2), "float16")
    with pytest.raises(ValueError, match="no nn.Embedding named emb"):
        quantize_(nn.Sequential(nn.Linear(2, 2)), "int8", embeddings=["emb"])


# ----- a quantized GPT ----------------------------------------------------------------------------

CFG = dict(vocab_size=67, block_size=16, n_layer=2, n_head=2, n_embd=24)


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_quantized_gpt_logits_are_close_to_float32(dtype):
    model = GPT(GPTConfig(**CFG), seed=0)
    ids = np.random.default_rng(5).integers(0, 67, (2, 9))
    with tensor.no_grad():
        ref = model(ids)[0].data
        quantize_gpt(model, dtype)
        out = model(ids)[0].data
    assert isinstance(model.wte, QuantEmbedding) and isinstance(model.h[0].mlp.c_fc, QuantLinear)
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert rel < (0.03 if dtype == "int8" else 0.01), rel
    assert rel > 0                                   # the weights did change


def test_quantized_token_table_serves_lookup_and_logits():
    model = GPT(GPTConfig(**CFG), seed=1)
    table = model.wte.weight.data.copy()
    quantize_gpt(model, "int8")
    w = model.wte.weight
    assert w.shape == (67, 24) and w.T.shape == (24, 67)
    widened = w.dequantize()
    half_step = np.abs(table).max(axis=1, keepdims=True) / 254
    assert np.all(np.abs(widened - table) <= half_step + 1e-7)
    ids = np.array([[3, 0, 66]])
    np.testing.assert_array_equal(model.wte(ids).data, widened[ids])
    x = tensor.Tensor(rand(np.random.default_rng(6), (2, 3, 24)))
    np.testing.assert_allclose((x @ w.T).data, x.data @ widened.T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_weight_bytes_from_the_config_match_the_model(dtype):
    for cfg in (CFG, dict(CFG, n_layer=3, n_embd=32, vocab_size=101)):
        model = GPT(GPTConfig(**cfg), seed=0)
        quantize_gpt(model, dtype)
        assert weight_nbytes(model) == weight_bytes(GPTConfig(**cfg), dtype)
    gpt2 = GPTConfig()                                   # 124M: 498 MB of float32
    assert weight_bytes(gpt2, "float32") == 4 * 124_439_808
    assert weight_bytes(gpt2, "int8") < weight_bytes(gpt2, "float32") / 3.5


# ----- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tinygpt.cli import main
    out = tmp_path_factory.mktemp("quant") / "out"
    result = CliRunner().invoke(main, ["train", "--n-layer", "1", "--n-head", "2", "--n-embd",
                                       "16", "--block-size", "16", "--batch-size", "4",
                                       "--eval-interval", "10", "--eval-iters", "2", "--quiet",
                                       "--max-iters", "10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return str(out)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_sample_and_perplexity_take_dtype(run, tmp_path, dtype):
    from tinygpt.cli import main
    r = CliRunner().invoke(main, ["sample", "--model", run, "--dtype", dtype, "--max-new-tokens",
                                  "10", "--seed", "1", "ROMEO:"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("ROMEO:") and f"weights in {dtype}" in r.stderr
    text = tmp_path / "t.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 3)
    ppl = {}
    for d in ("float32", dtype):
        r = CliRunner().invoke(main, ["perplexity", str(text), "--model", run, "--dtype", d])
        assert r.exit_code == 0, r.output
        ppl[d] = float(r.stdout.split()[1])
    assert abs(ppl[dtype] / ppl["float32"] - 1) < 0.02, ppl


def test_a_bad_dtype_is_a_usage_error(run):
    from tinygpt.cli import main
    r = CliRunner().invoke(main, ["sample", "--model", run, "--dtype", "float16"])
    assert r.exit_code == 2 and "--dtype" in r.output and "int8" in r.output
