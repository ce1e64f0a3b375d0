"""Tests for tensor/io.py: our safetensors reader/writer and atomic file writes.

Oracles: the safetensors spec written out by hand in this file (raw headers, byte layouts,
bfloat16 bits from `struct`), NumPy's own conversions, and the `safetensors` package
(parity extra) for files written and read by the reference implementation.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def metadata_of(path) -> dict:
    """A file's "__metadata__" ({} when it has none), its whole header checked, no tensor read."""
    with tio.open_safetensors(path) as f:
        return dict(f.metadata)



def _import_tensor_io():
    try:
        return importlib.import_module("tensor.io")
    except ModuleNotFoundError as e:
        if e.name not in ("tensor", "tensor.io"):
            raise
    # Until the package is importable from here, load the file by its path.
    path = Path(__file__).resolve().parents[1] / "tensor" / "io.py"
    spec = importlib.util.spec_from_file_location("tensor_io_by_path", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


tio = _import_tensor_io()

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]
SHAPES = [(), (0,), (3, 0, 2), (1,), (2, 3), (4, 1, 3)]
SPEC_NAME = {np.float64: "F64", np.float32: "F32", np.float16: "F16", np.int64: "I64", np.int32: "I32",
             np.int16: "I16", np.int8: "I8", np.uint8: "U8", np.bool_: "BOOL"}  # fmt: skip


def _safetensors_numpy():
    pytest.importorskip("safetensors", reason='parity oracle: pip install "tinygpt[parity]"')
    import safetensors.numpy

    return safetensors.numpy


# ----------------------------------------------------------------------------------------
# helpers


def sample(dtype, shape, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)  # (asarray: NumPy makes scalars of 0-d results)
    if dtype.kind == "f":
        x = np.asarray(rng.standard_normal(shape) * 100, dtype=dtype)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=dtype)
        x.reshape(-1)[: min(x.size, 4)] = specials[: min(x.size, 4)]
        return x
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


def assert_same_array(got, want) -> None:
    """Same type, dtype (native order), shape and bits (NaN payloads, -0.0 included)."""
    want = np.asarray(want)
    want = want.astype(want.dtype.newbyteorder("="))
    assert isinstance(got, np.ndarray), type(got)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.tobytes() == want.tobytes()


def assert_same_dict(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert_same_array(got[name], want[name])


def write_raw(path: Path, header, data: bytes = b"", *, length: int | None = None) -> Path:
    """A safetensors file built by hand from the spec: u64 length, JSON header, data."""
    if isinstance(header, (dict, list)):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8")
    n = len(header) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + header + data)
    return path


def entry(dtype: str, shape, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# ----------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_dtype_and_shape(tmp_path, dtype):
    rng = np.random.default_rng(0)
    tensors = {f"t{i}": sample(dtype, shape, rng) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "x.safetensors"
    tio.save_safetensors(path, tensors)
    assert_same_dict(tio.load_safetensors(path), tensors)
    assert metadata_of(path) == {}


def test_round_trip_metadata(tmp_path):
    metadata = {"format": "np", "config": json.dumps({"n_layer": 2}), "ünïcode ✓": "\"quotes\"\n\\"}
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    tio.save_safetensors(tmp_path / "m.safetensors", tensors, metadata)
    assert metadata_of(tmp_path / "m.safetensors") == metadata
    assert_same_dict(tio.load_safetensors(tmp_path / "m.safetensors"), tensors)


def test_non_contiguous_and_big_endian_inputs_are_written_as_c_order(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {
        "transposed": base.T,
        "strided": base[:, ::2],
        "reversed": base[::-1],
        "fortran": np.asfortranarray(base),
        "big_endian": base.astype(">f4"),
        "big_endian_i64": np.arange(5, dtype=">i8"),
    }
    assert not tensors["strided"].flags.c_contiguous
    tio.save_safetensors(tmp_path / "v.safetensors", tensors)
    got = tio.load_safetensors(tmp_path / "v.safetensors")
    for name, x in tensors.items():
        assert_same_array(got[name], np.ascontiguousarray(x))
        np.testing.assert_array_equal(got[name], x)  # same values, independent of byte order


def test_written_bytes_follow_the_spec(tmp_path):
    """Decode our file by hand, from the spec alone."""
    rng = np.random.default_rng(1)
    tensors = {"b": sample(np.float16, (3,), rng), "a": sample(np.float64, (2, 2), rng),
               "c": sample(np.uint8, (5,), rng), "d": sample(np.int32, (0, 4), rng)}  # fmt: skip
    path = tmp_path / "s.safetensors"
    tio.save_safetensors(path, tensors, {"k": "v"})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    text = raw[8 : 8 + n].decode("utf-8")
    assert n % 8 == 0 and text.startswith("{") and len(text) - len(text.rstrip(" ")) < 8  # padded with spaces
    header = json.loads(text)
    assert header.pop("__metadata__") == {"k": "v"}
    data = raw[8 + n :]
    covered = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        x = tensors[name]
        begin, end = info["data_offsets"]
        assert begin == covered  # back to back, no hole
        assert begin % x.dtype.itemsize == 0  # aligned for zero-copy readers
        assert info["dtype"] == SPEC_NAME[x.dtype.type] and info["shape"] == list(x.shape)
        assert data[begin:end] == x.astype(x.dtype.newbyteorder("<")).tobytes(order="C")
        covered = end
    assert covered == len(data)


def test_file_bytes_do_not_depend_on_dict_order(tmp_path):
    rng = np.random.default_rng(2)
    tensors = {name: sample(dt, (2, 3), rng) for name, dt in zip("qwerty", DTYPES)}
    tio.save_safetensors(tmp_path / "1.safetensors", tensors)
    tio.save_safetensors(tmp_path / "2.safetensors", dict(reversed(list(tensors.items()))))
    assert (tmp_path / "1.safetensors").read_bytes() == (tmp_path / "2.safetensors").read_bytes()


@pytest.mark.parametrize(
    "tensors, metadata, error, match",
    [
        ({1: np.zeros(2)}, None, TypeError, "names must be str"),
        ({"w": [1.0, 2.0]}, None, TypeError, "'w' is a list, expected np.ndarray"),
        ({"w": np.float32(1.0)}, None, TypeError, "'w' is a float32"),
        ({"w": np.zeros(2, np.complex64)}, None, TypeError, "'w' has dtype complex64"),
        ({"w": np.zeros(2, np.uint16)}, None, TypeError, "'w' has dtype uint16"),
        ({"w": np.zeros(2, object)}, None, TypeError, "'w' has dtype object"),
        ({"__metadata__": np.zeros(2)}, None, ValueError, "reserved"),
        ({"bad\ud800": np.zeros(2)}, None, ValueError, "surrogate"),
        ([np.zeros(2)], None, TypeError, "must be a dict"),
        ({"w": np.zeros(2)}, {"step": 3}, TypeError, "'step' maps to int"),
        ({"w": np.zeros(2)}, ["x"], TypeError, "metadata must be a dict"),
    ],
)
def test_save_rejects_bad_input_and_writes_nothing(tmp_path, tensors, metadata, error, match):
    with pytest.raises(error, match=match):
        tio.save_safetensors(tmp_path / "bad.safetensors", tensors, metadata)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------
# parity with the safetensors package


def _all_dtypes_dict(rng) -> dict[str, np.ndarray]:
    tensors = {}
    for dt in DTYPES:
        for i, shape in enumerate([(), (0, 3), (3, 5)]):
            tensors[f"{np.dtype(dt).name}.{i}"] = sample(dt, shape, rng)
    return tensors


def test_we_read_files_written_by_the_safetensors_package(tmp_path):
    stnp = _safetensors_numpy()
    tensors = _all_dtypes_dict(np.random.default_rng(3))
    metadata = {"format": "np", "note": "written by the reference"}
    stnp.save_file(tensors, tmp_path / "ref.safetensors", metadata=metadata)
    assert_same_dict(tio.load_safetensors(tmp_path / "ref.safetensors"), tensors)
    assert metadata_of(tmp_path / "ref.safetensors") == metadata


def test_the_safetensors_package_reads_our_files(tmp_path):
    stnp = _safetensors_numpy()
    from safetensors import safe_open

    tensors = _all_dtypes_dict(np.random.default_rng(4))
    metadata = {"format": "np", "note": "written by tinygpt"}
    tio.save_safetensors(tmp_path / "ours.safetensors", tensors, metadata)
    assert_same_dict(stnp.load_file(tmp_path / "ours.safetensors"), tensors)
    with safe_open(tmp_path / "ours.safetensors", framework="np") as f:
        assert f.metadata() == metadata


# bfloat16-exact float32 values: zero in their low 16 mantissa bits.
BF16_VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, -2.75, 3.140625, 2.0**-10, -(1 + 2.0**-7) * 2.0**20,
               (2 - 2.0**-7) * 2.0**127, 2.0**-126, 2.0**-133, float("inf"), float("-inf")]  # fmt: skip


def _bf16_bits(value: float) -> int:
    """The top 16 bits of a float32, via struct (independent of NumPy)."""
    f32 = struct.pack("<f", value)
    assert f32[:2] == b"\0\0", f"{value} is not exactly representable in bfloat16"
    return int.from_bytes(f32[2:], "little")


def test_bf16_tensors_are_widened_to_float32(tmp_path):
    bits = [_bf16_bits(v) for v in BF16_VALUES]
    data = b"".join(b.to_bytes(2, "little") for b in bits)  # "m": shape (2, 7)
    data += (0x7FC0).to_bytes(2, "little")  # "nan": a quiet NaN
    data += _bf16_bits(-2.75).to_bytes(2, "little")  # "scalar": shape ()
    k = 2 * len(bits)
    header = {"m": entry("BF16", [2, len(bits) // 2], 0, k), "nan": entry("BF16", [1], k, k + 2),
              "scalar": entry("BF16", [], k + 2, k + 4), "empty": entry("BF16", [0, 5], k + 4, k + 4)}  # fmt: skip
    path = write_raw(tmp_path / "bf16.safetensors", header, data)
    for to_float32 in (False, True):
        got = tio.load_safetensors(path, to_float32=to_float32)
        want_m = np.array([struct.unpack("<f", struct.pack("<f", v))[0] for v in BF16_VALUES], np.float32)
        assert_same_array(got["m"], want_m.reshape(2, -1))
        assert got["nan"].dtype == np.float32 and np.isnan(got["nan"]).all()
        assert_same_array(got["scalar"], np.array(-2.75, np.float32))
        assert_same_array(got["empty"], np.zeros((0, 5), np.float32))


def test_f16_to_float32_matches_numpy_on_every_bit_pattern(tmp_path):
    stnp = _safetensors_numpy()
    every_f16 = np.arange(2**16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    others = {"f32": np.linspace(-1, 1, 7, dtype=np.float32), "f64": np.linspace(-1, 1, 5),
              "i16": np.arange(-3, 3, dtype=np.int16)}  # fmt: skip
    stnp.save_file({"h": every_f16, **others}, tmp_path / "h.safetensors")
    widened = tio.load_safetensors(tmp_path / "h.safetensors", to_float32=True)
    assert_same_array(widened["h"], every_f16.astype(np.float32))
    for name, x in others.items():  # only half precision is widened
        assert_same_array(widened[name], x)
    assert_same_array(tio.load_safetensors(tmp_path / "h.safetensors")["h"], every_f16)


# ----------------------------------------------------------------------------------------
# malformed files

F32x2 = bytes(8)  # two float32 zeros


def raw_file(content: bytes):
    def build(path: Path) -> Path:
        path.write_bytes(content)
        return path

    return build


def _truncated(path: Path) -> Path:
    tio.save_safetensors(path, {"a": np.ones(4, np.float32), "z": np.ones(3, np.uint8)})
    path.write_bytes(path.read_bytes()[:-2])  # "z" (1-byte items) is laid out last
    return path


# (id, build(path) -> path, key named in the error or None, regex for what is wrong,
#  whether the safetensors package rejects it too)
MALFORMED = [
    ("empty file", raw_file(b""), None, r"0 bytes long", True),
    ("4-byte file", raw_file(b"\x08\0\0\0"), None, r"4 bytes long", True),
    ("header length beyond file", lambda p: write_raw(p, "{}", length=1000), None, r"1,000 bytes but the file", True),
    ("header length absurd", lambda p: write_raw(p, "{}", length=2**64 - 1), None, r"absurdly large", True),
    ("header not UTF-8", lambda p: write_raw(p, b'{"\xff\xfe": 1}'), None, r"not valid UTF-8", True),
    ("header not JSON", lambda p: write_raw(p, "this is not json"), None, r"not valid JSON", True),
    ("header JSON array", lambda p: write_raw(p, [1, 2]), None, r"is an array, expected a JSON object", True),
    ("header JSON null", lambda p: write_raw(p, "null"), None, r"is null", True),
    ("header nested deeply", lambda p: write_raw(p, "[" * 100_000), None, r"not valid JSON", True),
    ("NaN in header", lambda p: write_raw(p, '{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 0]}}'),
     None, r"NaN is not valid JSON", True),
    ("duplicate name", lambda p: write_raw(p, '{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                             '"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}',
                                             bytes(16)), None, r"'w' appears twice", True),
    ("metadata not strings", lambda p: write_raw(p, {"__metadata__": {"step": 3}}), "__metadata__",
     r"value of 'step' is a number", True),
    ("entry not an object", lambda p: write_raw(p, {"w": 3}), "w", r"is a number, expected", True),
    ("dtype missing", lambda p: write_raw(p, {"w": {"shape": [2], "data_offsets": [0, 8]}}, F32x2), "w",
     r"no 'dtype'", True),
    ("unknown dtype", lambda p: write_raw(p, {"w": entry("Q8", [2], 0, 8)}, F32x2), "w", r"unknown dtype 'Q8'", True),
    ("valid but unsupported dtype", lambda p: write_raw(p, {"w": entry("U16", [4], 0, 8)}, F32x2), "w",
     r"'U16' is valid safetensors but tinygpt does not read it", False),
    ("negative shape", lambda p: write_raw(p, {"w": entry("F32", [-1, 2], 0, 8)}, F32x2), "w",
     r"shape \[-1, 2\] is not a list of non-negative integers", True),
    ("boolean in shape", lambda p: write_raw(p, {"w": entry("F32", [True, 2], 0, 8)}, F32x2), "w",
     r"non-negative integers", True),
    ("float in shape", lambda p: write_raw(p, {"w": entry("F32", [2.0], 0, 8)}, F32x2), "w",
     r"non-negative integers", True),
    ("too many axes", lambda p: write_raw(p, {"w": entry("F32", [1] * 40, 0, 4)}, bytes(4)), "w",
     r"40 axes", False),
    ("phantom huge empty shape", lambda p: write_raw(p, {"w": entry("F32", [0, 2**62], 0, 0)}), "w",
     r"too large", True),
    ("offsets not a pair", lambda p: write_raw(p, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, F32x2),
     "w", r"not a list of two integers", True),
    ("offsets reversed", lambda p: write_raw(p, {"w": entry("F32", [0], 8, 4)}, F32x2), "w",
     r"0 <= begin <= end", True),
    ("offsets beyond the data", lambda p: write_raw(p, {"w": entry("F32", [2], 100, 108)}, F32x2), "w",
     r"only 8 bytes of data.*truncated or its header is corrupt", True),
    ("length does not match shape", lambda p: write_raw(p, {"w": entry("F32", [3], 0, 8)}, F32x2), "w",
     r"span 8 bytes, but shape \[3\] of F32 needs 12 bytes", True),
    ("overlapping offsets", lambda p: write_raw(p, {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)},
                                                 bytes(12)), "b", r"overlap those of 'a'", True),
    ("truncated data section", _truncated, "z", r"file is truncated", True),
    ("hole in the data section", lambda p: write_raw(p, {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)},
                                                      bytes(20)), "b", r"bytes \[8, 12\).*belong to no tensor", True),
    ("bytes after the last tensor", lambda p: write_raw(p, {"a": entry("F32", [2], 0, 8)}, bytes(12)), "a",
     r"bytes \[8, 12\) at the end of the data section belong to no tensor", True),
]  # fmt: skip


@pytest.mark.parametrize("build, key, match", [c[1:4] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
@pytest.mark.parametrize("loader", [tio.load_safetensors, metadata_of], ids=["load", "metadata"])
def test_malformed_files_raise_a_clear_error(tmp_path, loader, build, key, match):
    path = build(tmp_path / "bad.safetensors")
    with pytest.raises(tio.SafetensorsError) as info:
        loader(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message and info.value.path == str(path)  # names the file
    assert info.value.key == key
    if key is not None:
        assert repr(key) in message  # names the key
    assert re.search(match, message, re.S), message  # says what is wrong
    assert re.search(r"re-download|re-export", message, re.I), message  # says what to do


@pytest.mark.parametrize("build", [c[1] for c in MALFORMED if c[4]], ids=[c[0] for c in MALFORMED if c[4]])
def test_malformed_files_are_rejected_by_the_reference_too(tmp_path, build):
    """Our idea of 'malformed' agrees with the reference implementation."""
    stnp = _safetensors_numpy()
    path = build(tmp_path / "bad.safetensors")
    with pytest.raises(Exception):
        stnp.load(path.read_bytes())


def test_empty_header_is_a_valid_empty_file(tmp_path):
    path = write_raw(tmp_path / "e.safetensors", "{}      ")
    assert tio.load_safetensors(path) == {}
    assert metadata_of(path) == {}


def test_load_and_save_hold_tensor_data_in_memory_once(tmp_path):
    """GPT-2 xl is 6 GB: neither direction may make a second copy of the data."""
    x = np.arange(2**21, dtype=np.float64)  # 16 MiB
    path = tmp_path / "big.safetensors"
    tracemalloc.start()  # NumPy reports its array allocations to tracemalloc
    try:
        tio.save_safetensors(path, {"x": x})
        _, save_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got = tio.load_safetensors(path)
        _, load_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert save_peak < x.nbytes // 4  # a contiguous little-endian input is written from its own memory
    assert load_peak < 1.25 * x.nbytes  # the returned array itself, and no second copy
    assert_same_array(got["x"], x)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        tio.load_safetensors(tmp_path / "nope.safetensors")


# ----------------------------------------------------------------------------------------
# property tests


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One directory for all examples of a property test: each example overwrites its file."""
    return tmp_path_factory.mktemp("scratch")


names = st.text(max_size=8).filter(lambda s: s != "__metadata__")
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tensors=st.dictionaries(names, arrays, max_size=5),
    metadata=st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3),
)
def test_random_dicts_round_trip(scratch, tensors, metadata):
    path = scratch / "r.safetensors"
    tio.save_safetensors(path, tensors, metadata)
    assert_same_dict(tio.load_safetensors(path), tensors)
    assert metadata_of(path) == (metadata or {})


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> bytes:
    rng = np.random.default_rng(5)
    tensors = {"wte": sample(np.float32, (3, 4), rng), "ln.b": sample(np.float16, (4,), rng),
               "ids": sample(np.int64, (2,), rng), "mask": sample(np.bool_, (2, 2), rng),
               "empty": sample(np.int8, (0, 10), rng), "u": sample(np.uint8, (), rng)}  # fmt: skip
    path = tmp_path_factory.mktemp("good") / "good.safetensors"
    tio.save_safetensors(path, tensors, {"format": "np"})
    return path.read_bytes()


# Bytes that keep a header "almost JSON" are the interesting ones.
corrupt_bytes = st.sampled_from(list(b'{}[]",: -0123456789FIUBOL\\e.')) | st.integers(0, 255)


def _corrupt(data: st.DataObject, good: bytes) -> bytes:
    header_end = 8 + int.from_bytes(good[:8], "little")  # the length field and the header
    bad = bytearray(good)
    edits = data.draw(st.lists(st.tuples(st.integers(0, header_end - 1), corrupt_bytes), min_size=1, max_size=4))
    for i, b in edits:
        bad[i] = b
    return bytes(bad)


def _load_or_error(path: Path):
    try:
        return tio.load_safetensors(path)
    except tio.SafetensorsError as e:
        assert str(path) in str(e)
        return e


def _load_or_error_metadata(path: Path):
    try:
        return metadata_of(path)
    except tio.SafetensorsError as e:
        return e


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_corrupt_headers_load_or_raise_safetensors_error(scratch, good_file, data):
    bad = _corrupt(data, good_file)
    path = scratch / "c.safetensors"
    path.write_bytes(bad)
    got = _load_or_error(path)  # anything but a SafetensorsError fails the test
    meta = _load_or_error_metadata(path)
    assert isinstance(got, Exception) == isinstance(meta, Exception)
    if isinstance(got, Exception):
        return
    # A file that loads is a valid one: its tensors tile the data section it has.
    data_len = len(bad) - 8 - int.from_bytes(bad[:8], "little")
    assert all(isinstance(name, str) and isinstance(x, np.ndarray) for name, x in got.items())
    assert sum(x.nbytes for x in got.values()) == data_len
    if bad == good_file:
        path.write_bytes(good_file)
        assert_same_dict(got, tio.load_safetensors(path))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_corrupt_headers_that_load_agree_with_the_reference(scratch, good_file, data):
    stnp = _safetensors_numpy()
    bad = _corrupt(data, good_file)
    path = scratch / "c.safetensors"
    path.write_bytes(bad)
    got = _load_or_error(path)
    if not isinstance(got, Exception):
        assert_same_dict(got, stnp.load(bad))  # the reference must accept it and agree


# Headers built from parts: valid-looking entries mixed with JSON junk in every field.
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**70) | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
header_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from([*SPEC_NAME.values(), "BF16", "U16", "Q8", "f32"]) | json_junk,
        "shape": st.lists(st.integers(-1, 5), max_size=3) | json_junk,
        "data_offsets": st.lists(st.integers(-1, 48), min_size=2, max_size=2) | json_junk,
    }
) | json_junk
random_headers = st.dictionaries(
    st.sampled_from(["a", "b", "c", "__metadata__"]),
    header_entries | st.dictionaries(st.text(max_size=3), st.text(max_size=3) | json_junk, max_size=2),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(header=random_headers, data_len=st.integers(0, 48))
def test_random_headers_load_or_raise_safetensors_error(scratch, header, data_len):
    path = write_raw(scratch / "h.safetensors", header, bytes(range(data_len)))
    got = _load_or_error(path)
    if not isinstance(got, Exception):  # then it tiles the data section (BF16 comes back twice as wide)
        widened = sum(x.nbytes // 2 for name, x in got.items() if header[name]["dtype"] == "BF16")
        assert sum(x.nbytes for x in got.values()) == data_len + widened


@settings(max_examples=150, deadline=None)
@given(header=random_headers, data_len=st.integers(0, 48))
def test_random_headers_agree_with_the_reference(scratch, header, data_len):
    """We accept a header if and only if the reference does (BF16 aside: its NumPy API lacks it)."""
    stnp = _safetensors_numpy()
    path = write_raw(scratch / "h.safetensors", header, bytes(range(data_len)))
    got = _load_or_error(path)
    try:
        want = stnp.load(path.read_bytes())
    except Exception as e:
        want = e
    entries = [info for name, info in header.items() if name != "__metadata__" and isinstance(info, dict)]
    if any(info.get("dtype") in ("BF16", "U16") for info in entries):  # reference's NumPy lacks BF16; we lack U16
        return
    assert isinstance(got, Exception) == isinstance(want, Exception), (got, want)
    if not isinstance(got, Exception):
        assert_same_dict(got, want)
        from safetensors import safe_open

        with safe_open(path, framework="np") as f:
            assert metadata_of(path) == (f.metadata() or {})


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_every_truncation_is_an_error(scratch, good_file, data):
    cut = data.draw(st.integers(0, len(good_file) - 1))
    path = scratch / "t.safetensors"
    path.write_bytes(good_file[:cut])
    with pytest.raises(tio.SafetensorsError, match=re.escape(str(path))):
        tio.load_safetensors(path)


# ----------------------------------------------------------------------------------------
# atomic writes


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failed_atomic_write_keeps_the_previous_file(tmp_path, exc):
    target = tmp_path / "target.bin"
    target.write_bytes(b"previous content")

    def write_half_then_fail(f):
        f.write(b"new content that never lands" * 1000)
        raise exc("interrupted")

    with pytest.raises(exc):
        tio.atomic_write(target, write_half_then_fail)
    assert target.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["target.bin"]  # no temp file left behind


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failed_atomic_open_text_on_a_new_path_leaves_nothing(tmp_path, exc):
    with pytest.raises(exc):
        with tio.atomic_open(tmp_path / "new.txt", "w") as f:
            f.write("partial")
            raise exc()
    assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.txt"
    tio.atomic_write_bytes(target, b"one")
    tio.atomic_write_text(target, "two\r\nlines ✓\n")
    assert target.read_bytes() == "two\r\nlines ✓\n".encode("utf-8")  # UTF-8, newlines as given
    with tio.atomic_open(target, "w") as f:
        f.write("three")
    assert target.read_text() == "three"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_save_safetensors_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    tio.save_safetensors(path, {"old": np.ones(3, np.float32)})
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)  # fails after all bytes were written
    with pytest.raises(OSError, match="No space left"):
        tio.save_safetensors(path, {"new": np.zeros(1000, np.float64)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    (tmp_path / "plain").write_bytes(b"x")  # the oracle: what a plain open() creates
    tio.atomic_write_bytes(tmp_path / "new", b"x")
    assert (tmp_path / "new").stat().st_mode == (tmp_path / "plain").stat().st_mode
    os.chmod(tmp_path / "new", 0o640)
    tio.atomic_write_bytes(tmp_path / "new", b"y")  # overwriting keeps the mode, as open() does
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o640


def test_atomic_open_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with tio.atomic_open(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []


def test_atomic_write_json_format_and_read_json(tmp_path):
    obj = {"zeta": 1, "alpha": [1.5, None, True], "nested": {"b": "x", "a": {}}}
    tio.atomic_write_json(tmp_path / "c.json", obj)
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert text == json.dumps(obj, indent=2) + "\n"  # indent 2, key order kept, trailing newline
    assert tio.read_json(tmp_path / "c.json") == obj
    tio.atomic_write_json(tmp_path / "u.json", {"name": "ünïcode ✓"})
    assert tio.read_json(tmp_path / "u.json") == {"name": "ünïcode ✓"}


def test_atomic_write_json_of_unserializable_keeps_previous(tmp_path):
    tio.atomic_write_json(tmp_path / "c.json", {"ok": 1})
    with pytest.raises(TypeError, match=r"c\.json.*not JSON serializable"):
        tio.atomic_write_json(tmp_path / "c.json", {"arr": np.zeros(2)})
    assert tio.read_json(tmp_path / "c.json") == {"ok": 1}
    assert os.listdir(tmp_path) == ["c.json"]


def test_atomic_write_text_rejects_bytes(tmp_path):
    with pytest.raises(TypeError, match="must be str"):
        tio.atomic_write_text(tmp_path / "t", b"bytes")


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.json"))):
        tio.read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"a": 1,\n "b": }')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "bad.json")) + r".*line 2"):
        tio.read_json(tmp_path / "bad.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "bin.json")) + r".*UTF-8"):
        tio.read_json(tmp_path / "bin.json")
