"""Loading with --dtype int8 / bfloat16 tensor by tensor (tinygpt/quantize.py: load_weights),
and bfloat16 files kept compact (tensor/io.py: raw=True).

Oracles: the whole-model path (load in float32, then quantize_gpt, which the tests of
tensor/quant.py check against NumPy); an int8 and a bfloat16 rounding written here in plain NumPy;
for a bfloat16 file, the uint16 bits the file was built from; for memory, a fresh process's peak
resident set (ru_maxrss) against the float32 size of the weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tensor
from tensor import nn
from tensor.io import load_safetensors, open_safetensors, save_safetensors
from tensor.quant import QuantEmbedding, QuantLinear, QuantMatrix, QuantWeight
from tinygpt.export import hf_tensors
from tinygpt.loading import LoadError, load_model
from tinygpt.model import GPT, GPTConfig
from tinygpt.quantize import quantize_gpt

from helpers import reseal, ROOT, TINY_GPT2, logits, random_model, write_hf_dir

SMALL = dict(TINY_GPT2, block_size=16, n_embd=24)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits in plain NumPy: the top 16 bits after round-to-nearest-even."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_bf16_file(path: Path, bits: dict) -> None:
    """A safetensors file of BF16 tensors, written by hand from their uint16 bits (NumPy has no
    bfloat16, so save_safetensors cannot): the independent oracle for what the file holds."""
    header, blobs, offset = {}, [], 0
    for name, u in bits.items():
        blob = np.ascontiguousarray(u, "<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(u.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def layers(model) -> list[tuple[str, str]]:
    """(name, layer type) of every module, in order: the two paths must build the same tree."""
    return [(name, type(m).__name__) for name, m in model.named_modules()]


def assert_same_weights(got, want):
    """Bit for bit: every quantized matrix (data and int8 scales), every float parameter."""
    assert layers(got) == layers(want)
    assert got.weight_dtype == want.weight_dtype
    wanted = dict(want.named_modules())
    for name, m in got.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, (QuantMatrix, QuantWeight)):
            a = w if isinstance(w, QuantMatrix) else w.matrix
            b = wanted[name].weight if isinstance(w, QuantMatrix) else wanted[name].weight.matrix
            assert (a.dtype, a.shape, a.data.dtype) == (b.dtype, b.shape, b.data.dtype), name
            np.testing.assert_array_equal(a.data, b.data, err_msg=name)
            if b.scale is not None:
                assert a.scale.dtype == b.scale.dtype
                np.testing.assert_array_equal(a.scale, b.scale, err_msg=name)
    got_p, want_p = dict(got.named_parameters()), dict(want.named_parameters())
    assert list(got_p) == list(want_p)
    for name in want_p:
        assert got_p[name].dtype == want_p[name].dtype == np.float32, name
        np.testing.assert_array_equal(got_p[name].data, want_p[name].data, err_msg=name)


def whole_model(directory, dtype):
    """The oracle path: the float32 model whole, then quantized in place."""
    model, _, _ = load_model(directory)
    return quantize_gpt(model, dtype)


@pytest.fixture(scope="module")
def source():
    """Every parameter random, biases and gains too, so a swapped or skipped tensor shows."""
    return random_model(SMALL, gains=("ln_1.weight",), gain_std=0.1)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, source):
    return write_hf_dir(tmp_path_factory.mktemp("hf") / "m", source)


# ----- a float32 Hugging Face file -------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_streaming_equals_quantizing_the_whole_float32_model(hf_dir, dtype):
    got, _, _ = load_model(hf_dir, weight_dtype=dtype)
    assert_same_weights(got, whole_model(hf_dir, dtype))


def test_int8_matrices_match_a_numpy_rounding(hf_dir, source):
    """Independently of tensor/quant.py: per output row, scale = max|w| / 127, q = rint(w / scale)."""
    got, _, _ = load_model(hf_dir, weight_dtype="int8")
    for name, w_in_out in [("h.1.mlp.c_fc.", source.h[1].mlp.c_fc.weight.data),
                           ("h.0.attn.c_attn.", source.h[0].attn.c_attn.weight.data)]:
        w = w_in_out.T.astype(np.float32)                              # (out, in)
        scale = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
        m = dict(got.named_modules())[name].weight
        np.testing.assert_array_equal(m.scale, scale)
        np.testing.assert_array_equal(m.data, np.rint(w / scale[:, None]).astype(np.int8))
    table, wte = got.wte.weight.matrix, source.wte.weight.data        # quantized in row blocks
    scale = (np.abs(wte).max(axis=1) / np.float32(127)).astype(np.float32)
    np.testing.assert_array_equal(table.scale, scale)
    np.testing.assert_array_equal(table.data, np.rint(wte / scale[:, None]).astype(np.int8))


def test_bfloat16_matrices_match_a_numpy_rounding(hf_dir, source):
    got, _, _ = load_model(hf_dir, weight_dtype="bfloat16")
    np.testing.assert_array_equal(got.h[0].attn.c_proj.weight.data, bf16_bits(source.h[0].attn.c_proj.weight.data.T))
    np.testing.assert_array_equal(got.wte.weight.matrix.data, bf16_bits(source.wte.weight.data))


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_streamed_model_generates_as_the_whole_model(hf_dir, dtype):
    got, _, _ = load_model(hf_dir, weight_dtype=dtype)
    want = whole_model(hf_dir, dtype)
    ids = [5, 17, 300, 50256, 9]
    np.testing.assert_array_equal(logits(got, ids), logits(want, ids))
    x = tensor.Tensor(np.ones((1, SMALL["n_embd"]), np.float32), requires_grad=True)
    out = got.h[0].attn.c_attn(x)
    with pytest.raises(RuntimeError, match="quantized"):       # inference only, as quantize_gpt
        out.sum().backward()


def test_float32_load_is_unchanged(hf_dir, source):
    """weight_dtype float32 (the default) is the float32 path: plain arrays, the file's values."""
    got, _, _ = load_model(hf_dir)
    assert getattr(got, "weight_dtype", "float32") == "float32"
    for name, p in source.named_parameters():
        np.testing.assert_array_equal(dict(got.named_parameters())[name].data, p.data)


def test_lm_head_is_checked_when_streaming(tmp_path, source):
    tensors = hf_tensors(source)
    tensors["lm_head.weight"] = tensors["wte.weight"].copy()
    d = write_hf_dir(tmp_path / "tied", source, tensors)
    assert_same_weights(load_model(d, weight_dtype="int8")[0], whole_model(d, "int8"))
    tensors["lm_head.weight"][-1, -1] += 1.0                     # in the last block of rows
    d = write_hf_dir(tmp_path / "untied", source, tensors)
    for dtype in ("float32", "int8", "bfloat16"):
        with pytest.raises(LoadError, match="lm_head.weight' differs"):
            load_model(d, weight_dtype=dtype)


def test_a_nan_weight_is_an_error_naming_the_key(tmp_path, source):
    tensors = {k: v.copy() for k, v in hf_tensors(source).items()}     # not the source's arrays
    tensors["h.1.mlp.c_proj.weight"][3, 4] = np.nan
    d = write_hf_dir(tmp_path / "nan", source, tensors)
    for dtype in ("int8", "bfloat16"):
        with pytest.raises(LoadError, match=r"model\.safetensors: h\.1\.mlp\.c_proj\.weight\b.*nan"):
            load_model(d, weight_dtype=dtype)


def test_wrong_shape_is_refused_before_reading(tmp_path, source):
    tensors = hf_tensors(source)
    tensors["h.0.mlp.c_fc.weight"] = tensors["h.0.mlp.c_fc.weight"][:, :-1].copy()
    d = write_hf_dir(tmp_path / "shape", source, tensors)
    with pytest.raises(LoadError, match="'h.0.mlp.c_fc.weight' has shape"):
        load_model(d, weight_dtype="int8")


# ----- bfloat16 and float16 Hugging Face files -------------------------------------------------

@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory, source):
    """A BF16 file built FROM chosen bits: random finite bfloat16 patterns (any sign, exponents
    from tiny to large, every mantissa), so the expected values are the bits themselves."""
    rng = np.random.default_rng(7)
    bits = {}
    for name, x in hf_tensors(source).items():
        sign = rng.integers(0, 2, x.shape, dtype=np.uint16) << 15
        exponent = rng.integers(100, 131, x.shape, dtype=np.uint16) << 7    # 2^-27 .. 2^3
        mantissa = rng.integers(0, 128, x.shape, dtype=np.uint16)
        bits[name] = (sign | exponent | mantissa).astype(np.uint16)
    d = tmp_path_factory.mktemp("bf16") / "m"
    write_hf_dir(d, source)
    write_bf16_file(d / "model.safetensors", bits)
    return d, bits


def test_raw_read_gives_the_files_bits(bf16_dir):
    d, bits = bf16_dir
    raw = load_safetensors(d / "model.safetensors", raw=True)
    assert list(raw) == sorted(bits, key=list(bits).index)           # file order
    for name, u in bits.items():
        assert raw[name].dtype == np.uint16
        np.testing.assert_array_equal(raw[name], u)
    widened = load_safetensors(d / "model.safetensors")               # default: still widened
    assert widened["wte.weight"].dtype == np.float32
    np.testing.assert_array_equal(widened["wte.weight"].view(np.uint32),
                                  bits["wte.weight"].astype(np.uint32) << 16)


def test_bfloat16_file_with_dtype_bfloat16_keeps_its_bits(bf16_dir, monkeypatch):
    """Exactly the file's bits, and no rounding from float32 on the way (no float32 copy)."""
    from tensor.kernels import quantized as kq
    d, bits = bf16_dir

    def refuse(*args, **kwargs):
        raise AssertionError("a bfloat16 weight went through float32 and was rounded again")
    monkeypatch.setattr(kq, "to_bfloat16", refuse)
    model, _, _ = load_model(d, weight_dtype="bfloat16")
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            assert m.weight.data.dtype == np.uint16
            np.testing.assert_array_equal(m.weight.data, bits[f"{name}weight"].T)   # (out, in)
    np.testing.assert_array_equal(model.wte.weight.matrix.data, bits["wte.weight"])
    np.testing.assert_array_equal(model.wpe.weight.data.view(np.uint32),           # float32 here
                                  bits["wpe.weight"].astype(np.uint32) << 16)
    monkeypatch.undo()
    assert_same_weights(model, whole_model(d, "bfloat16"))


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_bfloat16_file_with_other_dtypes(bf16_dir, dtype):
    d, bits = bf16_dir
    got, _, _ = load_model(d, weight_dtype=dtype)
    if dtype == "float32":                                # widened, exactly
        np.testing.assert_array_equal(got.h[1].attn.c_attn.weight.data.view(np.uint32),
                                      bits["h.1.attn.c_attn.weight"].astype(np.uint32) << 16)
    else:
        assert_same_weights(got, whole_model(d, dtype))


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_float16_file(tmp_path, source, dtype):
    """F16 is widened to float32 tensor by tensor, then rounded: as the whole-model path does."""
    tensors = {k: v.astype(np.float16) for k, v in hf_tensors(source).items()}
    d = write_hf_dir(tmp_path / "f16", source, tensors)
    got, _, _ = load_model(d, weight_dtype=dtype)
    assert_same_weights(got, whole_model(d, dtype))
    if dtype == "bfloat16":
        np.testing.assert_array_equal(got.wte.weight.matrix.data,
                                      bf16_bits(tensors["wte.weight"].astype(np.float32)))


# ----- a tinygpt training run ------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run(max_iters=4, eval_interval=2, eval_iters=1)


@pytest.mark.parametrize("which", ["best", "latest"])
@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_training_run_streams_as_the_whole_model(run_dir, dtype, which):
    got, tok, description = load_model(run_dir, which=which, weight_dtype=dtype)
    want, want_tok, want_description = load_model(run_dir, which=which)
    assert description == want_description
    assert tok.vocab_size == want_tok.vocab_size
    assert_same_weights(got, quantize_gpt(want, dtype))


def test_training_run_with_a_wrong_shape(run_dir, copy_run):
    from tinygpt import checkpoint
    run = copy_run(run_dir)
    ckpt = checkpoint.find_checkpoint(run, "latest")[0].path
    file = ckpt / checkpoint.MODEL_FILE
    with open_safetensors(file) as f:
        metadata = dict(f.metadata)
    arrays = load_safetensors(file)
    arrays["ln_f.bias"] = arrays["ln_f.bias"][:-1].copy()
    save_safetensors(file, arrays, metadata=metadata)
    reseal(ckpt)                                   # so that it verifies
    for dtype in ("float32", "int8"):              # the same complaint either way
        with pytest.raises(LoadError, match=r"shape mismatch for ln_f\.bias: checkpoint \(15,\)"):
            load_model(run, which="latest", weight_dtype=dtype)


# ----- the constructors that build quantized layers around compact data -----------------------

def test_from_matrix_builds_the_layers_quantizing_builds():
    """QuantLinear.from_matrix / QuantEmbedding.from_matrix / QuantMatrix.from_int8 set exactly
    what quantizing a float layer sets (so a new attribute there shows up here as a failure)."""
    rng = np.random.default_rng(0)
    linear = nn.Linear(6, 5)
    want = QuantLinear(linear, "bfloat16")
    got = QuantLinear.from_matrix(QuantMatrix.from_bfloat16_bits(want.weight.data), linear.bias)
    assert set(vars(got)) == set(vars(want))
    assert (got.in_features, got.out_features) == (want.in_features, want.out_features)
    assert list(got._parameters) == list(want._parameters) and got.bias is linear.bias
    x = rng.standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(got(x).data, want(x).data)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    want_m = QuantMatrix(w, "int8")
    got_m = QuantMatrix.from_int8(want_m.data, want_m.scale)
    assert vars(got_m).keys() == vars(want_m).keys() and got_m.shape == want_m.shape
    np.testing.assert_array_equal(got_m.matmul_t(x), want_m.matmul_t(x))
    table = nn.Embedding(7, 4)
    want_t = QuantEmbedding(table, "bfloat16")
    got_t = QuantEmbedding.from_matrix(QuantMatrix.from_bfloat16_bits(want_t.weight.matrix.data))
    assert set(vars(got_t)) == set(vars(want_t))
    np.testing.assert_array_equal(got_t(np.array([1, 6])).data, want_t(np.array([1, 6])).data)
    with pytest.raises(ValueError, match="from_int8"):
        QuantMatrix.from_int8(want_m.data.astype(np.int16), want_m.scale)


def test_open_safetensors_reads_rows_and_refuses_raw_with_to_float32(tmp_path):
    x = np.arange(60, dtype=np.float16).reshape(10, 6)
    save_safetensors(tmp_path / "x.safetensors", {"x": x})
    with open_safetensors(tmp_path / "x.safetensors") as f:
        assert f.names() == ["x"] and f.shape("x") == (10, 6) and f.dtype("x") == "F16"
        np.testing.assert_array_equal(f.read("x", rows=(3, 7)), x[3:7])
        assert f.read("x", raw=True).dtype == np.float16
        assert f.read("x", to_float32=True, rows=(9, 10)).dtype == np.float32
        with pytest.raises(ValueError, match="raw=True"):
            f.read("x", raw=True, to_float32=True)
        with pytest.raises(ValueError, match="rows"):
            f.read("x", rows=(4, 11))
        with pytest.raises(KeyError, match="no tensor 'y'"):
            f.read("y")


# ----- peak memory -----------------------------------------------------------------------------

# The peak is VmHWM, the high-water mark of this process's own memory. Not ru_maxrss: Linux
# carries that across exec, so a child forked from this pytest process (which holds the 0.5 GB
# of weights it wrote) would report the parent's size, whatever the loader does.
PEAK = """
import sys
from tinygpt.loading import load_model
model, tok, _ = load_model(sys.argv[1], weight_dtype=sys.argv[2])
assert model.weight_dtype == sys.argv[2]
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]) * 1024)                      # kB
"""


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A GPT-2-124M-shaped Hugging Face directory with random N(0, 0.02²) weights."""
    from tinygpt.model import PRESETS
    model = GPT(GPTConfig(**PRESETS["gpt2"]), init=False)
    rng = np.random.default_rng(0)
    tensors = {name: (rng.standard_normal(p.shape, dtype=np.float32) * np.float32(0.02))
               for name, p in model.named_parameters()}
    d = write_hf_dir(tmp_path_factory.mktemp("gpt2") / "gpt2", model, tensors)
    return d, sum(x.nbytes for x in tensors.values())


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_int8_load_of_a_124m_model_peaks_well_below_its_float32_size(gpt2_dir):
    d, float32_bytes = gpt2_dir
    out = subprocess.run([sys.executable, "-c", PEAK, str(d), "int8"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1])
    assert peak < 0.75 * float32_bytes, (f"peak RSS {peak / 1e6:.0f} MB loading int8; the float32 "
                                         f"weights are {float32_bytes / 1e6:.0f} MB")


# ----- the commands ----------------------------------------------------------------------------

def test_generate_command_quantizes_as_it_reads(hf_dir, monkeypatch):
    from click.testing import CliRunner

    import tinygpt.quantize
    from tinygpt.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("the float32 model was loaded whole, then quantized")
    monkeypatch.setattr(tinygpt.quantize, "quantize_gpt", refuse)
    r = CliRunner().invoke(main, ["generate", "--model", str(hf_dir), "--dtype", "int8",
                                  "--max-new-tokens", "2", "--temperature", "0", "Hello"])
    assert r.exit_code == 0, r.output
