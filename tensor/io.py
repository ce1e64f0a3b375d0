"""Safetensors files and atomic writes, with nothing but NumPy and the standard library.

A safetensors file is three parts, back to back:

    [ N: 8 bytes, little-endian u64 ][ header: N bytes of UTF-8 JSON ][ data section ]

    header = {"__metadata__": {"format": "np"},                       # optional, str -> str
              "wte": {"dtype": "F32", "shape": [50257, 768], "data_offsets": [0, 154389504]},
              ...}

`data_offsets` are [begin, end) byte offsets into the data section (not into the file).
A tensor's bytes are its values in C order, little-endian. The tensors tile the data
section exactly: no overlaps, no holes, nothing after the last one.

Files come from the internet, so the reader trusts nothing: every length, offset and shape
is checked against the file before a byte of tensor data is read, and nothing is ever
unpickled. Every problem is a SafetensorsError that names the file and the tensor and says
what to do. (The `safetensors` package is used by the tests as an oracle, never here.)

Files we write go through `atomic_open`: a crash, an exception or Ctrl-C while writing
leaves the previous file untouched, never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Mapping

import numpy as np

__all__ = [
    "SafetensorsError",
    "save_safetensors",
    "load_safetensors",
    "open_safetensors",
    "SafetensorsFile",
    "atomic_open",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
]

# ----------------------------------------------------------------------------------------
# dtypes

# How each safetensors dtype is stored on disk, always as explicit little-endian NumPy
# dtypes: reading with "<f4" instead of "float32" means a big-endian host byte-swaps
# instead of silently misreading. NumPy has no bfloat16, so BF16 is read as its raw
# uint16 bit patterns and widened to float32 (see _bf16_to_float32), unless the caller asks
# for the bits as they are (raw=True). BOOL is read as bytes and turned into real booleans
# (any nonzero byte is True).
_STORAGE = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}
# What save_safetensors accepts: native NumPy dtype -> safetensors name (no BF16 in NumPy).
_NAME_OF = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
# Valid in the safetensors spec but not read by tinygpt: named in a clearer error.
_OTHER_SPEC_DTYPES = {"U16", "U32", "U64", "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2"}

_MAX_HEADER_BYTES = 100_000_000  # a real header is kilobytes; 100 MB is the reference limit
_MAX_NDIM = 32  # NumPy 1.x's limit
_READ_CHUNK = 1 << 26  # 64 MiB per read() call: some OSes cap a single read near 2 GiB

_REDOWNLOAD = "The file is damaged or not a safetensors file: re-download it (or re-export it, if you made it)."


class SafetensorsError(ValueError):
    """A safetensors file that cannot be trusted. `path` and `key` say where."""

    def __init__(self, message: str, path: str | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.key = key


def _error(path: str, problem: str, *, key: str | None = None, advice: str = _REDOWNLOAD) -> SafetensorsError:
    where = f"safetensors file {path!r}" + ("" if key is None else f", key {key!r}")
    return SafetensorsError(f"{where}: {problem}. {advice}", path=path, key=key)


# ----------------------------------------------------------------------------------------
# writing


def save_safetensors(path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` in the safetensors format, atomically.

    Tensors are laid out by decreasing itemsize, then by name: the file is the same bytes
    whatever the dict order, and every tensor starts at a multiple of its itemsize (the
    header is padded to 8 bytes), so zero-copy readers get aligned data.
    Non-contiguous and big-endian arrays are written as little-endian C order.
    """
    _check_tensors_to_save(tensors)
    metadata = _check_metadata_to_save(metadata)
    order = sorted(tensors, key=lambda name: (-tensors[name].dtype.itemsize, name))

    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name in order:
        x = tensors[name]
        header[name] = {
            "dtype": _NAME_OF[x.dtype.newbyteorder("=")],
            "shape": [int(d) for d in x.shape],
            "data_offsets": [offset, offset + x.nbytes],
        }
        offset += x.nbytes
    header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad with spaces to a multiple of 8

    def write(f: IO[bytes]) -> None:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name in order:
            # One tensor at a time: a non-contiguous or big-endian array is copied here,
            # never the whole dict at once.
            x = tensors[name]
            x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
            f.write(x.reshape(-1).view(np.uint8))

    atomic_write(path, write)


def _check_tensors_to_save(tensors) -> None:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"save_safetensors: tensors must be a dict {{name: np.ndarray}}, got {type(tensors).__name__}")
    supported = ", ".join(str(d) for d in _NAME_OF)
    for name, x in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save_safetensors: tensor names must be str, got {type(name).__name__} {name!r}")
        if name == "__metadata__":
            raise ValueError("save_safetensors: '__metadata__' is reserved by the format; pass metadata=... instead")
        _check_utf8("save_safetensors: tensor name", name)
        if not isinstance(x, np.ndarray):
            raise TypeError(
                f"save_safetensors: tensor {name!r} is a {type(x).__name__}, expected np.ndarray; "
                f"convert it with np.asarray(...) first"
            )
        if x.dtype.newbyteorder("=") not in _NAME_OF:
            raise TypeError(
                f"save_safetensors: tensor {name!r} has dtype {x.dtype}, which cannot be saved; "
                f"convert it with .astype(...) to one of: {supported}"
            )


def _check_metadata_to_save(metadata) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"save_safetensors: metadata must be a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"save_safetensors: metadata must map str -> str, but key {key!r} maps to "
                f"{type(value).__name__} {value!r}; store other values as text, e.g. json.dumps(value)"
            )
        _check_utf8("save_safetensors: metadata key", key)
        _check_utf8(f"save_safetensors: metadata value for {key!r}", value)
    return dict(metadata)


def _check_utf8(what: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} {text!r} is not valid Unicode (it holds a lone surrogate)") from None


# ----------------------------------------------------------------------------------------
# reading
#
# Design: each tensor is read with readinto() straight into a freshly allocated array of
# its final shape. That is one copy, from the OS into the array we return; the file is
# never held in memory twice (GPT-2 xl is 6 GB), and reads run in file order.
# open_safetensors goes one step further for a loader that converts as it reads: it hands
# out one tensor at a time, so only that tensor's bytes need be in memory at once.
# Why not mmap: it also avoids a second copy, but a file that is truncated or replaced
# while mapped turns reads into SIGBUS -- a crash, not an error -- and a map cannot be
# closed while NumPy views into it are alive. With readinto, a file that shrinks under us
# is a short read, which becomes a SafetensorsError.


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # byte offsets into the data section, [begin, end)
    end: int


@dataclass(frozen=True)
class _Header:
    entries: list[_Entry]  # in file order
    metadata: dict[str, str]
    data_start: int  # file offset of the data section: 8 + N


def load_safetensors(path, *, to_float32: bool = False, raw: bool = False) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file, checking every bound first.

    Returns {name: array} in file order, in native byte order. BF16 tensors are widened to
    float32 (NumPy has no bfloat16); F16 tensors too when `to_float32`. With `raw`, BF16
    tensors come back as their uint16 bit patterns instead, unwidened (see SafetensorsFile.read).
    Other dtypes are returned as stored. Raises SafetensorsError on any malformed file.
    """
    with open_safetensors(path) as f:
        return {name: f.read(name, to_float32=to_float32, raw=raw) for name in f.names()}


def open_safetensors(path) -> SafetensorsFile:
    """Open a safetensors file to read its tensors one at a time (the header is checked now).

        with open_safetensors("model.safetensors") as f:
            for name in f.names():                      # file order
                x = f.read(name)                        # this tensor only

    A loader that converts each tensor as it comes (say, to int8) holds one tensor's bytes at
    a time instead of the whole file's."""
    return SafetensorsFile(path)


class SafetensorsFile:
    """An open safetensors file whose header has been read and checked; tensors are read on
    request, each straight from the file into its own array. Close it (or use `with`)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._f = open(self.path, "rb", buffering=0)
        try:
            self._header = _read_header(self._f, self.path)
        except BaseException:
            self._f.close()
            raise
        self._entries = {e.name: e for e in self._header.entries}
        self.metadata: dict[str, str] = self._header.metadata

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def names(self) -> list[str]:
        """Tensor names, in file order."""
        return list(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def dtype(self, name: str) -> str:
        """The stored dtype's safetensors name: "F32", "BF16", ..."""
        return self._entry(name).dtype

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def read(self, name: str, *, to_float32: bool = False, raw: bool = False, rows=None) -> np.ndarray:
        """Tensor `name` as an array of its own, in native byte order.

        BF16 is widened to float32 (exactly: a bfloat16 is the top half of a float32), and so
        is F16 when `to_float32`. `raw=True` keeps BF16 as stored: a uint16 array of its bit
        patterns, with no float32 copy made (for code that computes with bfloat16 bits, such as
        tensor/quant.py); F16 then stays float16. BOOL becomes bool either way.
        rows=(start, stop): only rows [start, stop) of the first axis are read."""
        if raw and to_float32:
            raise ValueError(f"SafetensorsFile.read({name!r}): raw=True keeps tensors as stored "
                             f"and to_float32=True widens them; ask for one of the two")
        e = self._entry(name)
        if rows is not None:
            e = _row_slice(self.path, e, rows)
        return _read_tensor(self._f, self.path, self._header.data_start, e, to_float32, raw)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"safetensors file {self.path!r} has no tensor {name!r} (it has "
                           f"{len(self._entries)}: {', '.join(list(self._entries)[:5])}"
                           f"{' ...' if len(self._entries) > 5 else ''})") from None


def _row_slice(path: str, e: _Entry, rows) -> _Entry:
    """The entry for rows [start, stop) of e's first axis: a byte range inside e's."""
    start, stop = (operator.index(r) for r in rows)         # ints only (a float cannot seek)
    if not e.shape or not 0 <= start <= stop <= e.shape[0]:
        raise ValueError(f"safetensors file {path!r}, key {e.name!r}: rows [{start}, {stop}) "
                         f"are not inside its shape {list(e.shape)}")
    row_bytes = math.prod(e.shape[1:]) * _STORAGE[e.dtype].itemsize
    return _Entry(name=e.name, dtype=e.dtype, shape=(stop - start,) + e.shape[1:],
                  begin=e.begin + start * row_bytes, end=e.begin + stop * row_bytes)


def _read_header(f, path: str) -> _Header:
    file_size = os.fstat(f.fileno()).st_size
    if file_size < 8:
        raise _error(path, f"the file is {file_size} bytes long, too short to hold the 8-byte header length")
    n = int.from_bytes(_read_exact(f, 8, path), "little")
    if n > _MAX_HEADER_BYTES:
        raise _error(path, f"the header length field says {n:,} bytes, absurdly large (limit {_MAX_HEADER_BYTES:,})")
    if n > file_size - 8:
        raise _error(path, f"the header length field says {n:,} bytes but the file is only {file_size:,} bytes")
    header = _parse_header_json(_read_exact(f, n, path), path)

    metadata = _check_metadata(path, header.pop("__metadata__", None))
    entries = [_check_entry(path, name, info) for name, info in header.items()]
    data_len = file_size - 8 - n
    entries = _check_layout(path, entries, data_len, n)
    return _Header(entries=entries, metadata=metadata, data_start=8 + n)


class _BadJSON(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _BadJSON(f"key {key!r} appears twice")
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise _BadJSON(f"{name} is not valid JSON")


_JSON_TYPE_NAMES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE_NAMES.get(type(value), "an object")


def _parse_header_json(raw: bytes, path: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _error(path, f"the header is not valid UTF-8 (byte {e.start}: {e.reason})") from None
    try:
        # Strict JSON: duplicate keys are ambiguous, NaN/Infinity are not JSON.
        header = json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise _error(path, f"the header is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # _BadJSON, too many digits, absurd nesting
        raise _error(path, f"the header is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise _error(path, f"the header is {_json_type(header)}, expected a JSON object {{name: tensor info}}")
    return header


def _check_metadata(path: str, metadata: Any) -> dict[str, str]:
    if metadata is None:  # absent, or null as the reference implementation also accepts
        return {}
    if not isinstance(metadata, dict):
        raise _error(path, f"must be an object of strings, got {_json_type(metadata)}", key="__metadata__")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _error(path, f"value of {key!r} is {_json_type(value)}, expected a string", key="__metadata__")
        if not (_is_unicode(key) and _is_unicode(value)):
            raise _error(path, f"{key!r} holds a lone surrogate, not valid Unicode", key="__metadata__")
    return metadata


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, which is an int subclass in Python


def _check_entry(path: str, name: str, info: Any) -> _Entry:
    """One header entry: known dtype, shape of non-negative ints, offsets that match it."""
    if not _is_unicode(name):
        raise _error(path, "the tensor name holds a lone surrogate, not valid Unicode", key=name)
    if not isinstance(info, dict):
        raise _error(path, f"the entry is {_json_type(info)}, expected {{dtype, shape, data_offsets}}", key=name)
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise _error(path, f"the entry has no {field!r}", key=name)

    dtype = info["dtype"]
    if not isinstance(dtype, str):
        raise _error(path, f"dtype is {_json_type(dtype)}, expected a string such as \"F32\"", key=name)
    if dtype in _OTHER_SPEC_DTYPES:
        raise _error(
            path,
            f"dtype {dtype!r} is valid safetensors but tinygpt does not read it",
            key=name,
            advice=f"Re-export the tensor as one of: {', '.join(_STORAGE)}.",
        )
    if dtype not in _STORAGE:
        raise _error(path, f"unknown dtype {dtype!r} (known: {', '.join(_STORAGE)})", key=name)

    shape = info["shape"]
    if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
        raise _error(path, f"shape {shape!r} is not a list of non-negative integers", key=name)
    if len(shape) > _MAX_NDIM:
        raise _error(path, f"shape has {len(shape)} axes, more than NumPy's {_MAX_NDIM}", key=name)
    # A zero-size tensor could still claim axes too big for NumPy to allocate even empty;
    # 8 is the largest itemsize we ever create (BF16 widens to 4, F64 is 8).
    if math.prod(d for d in shape if d) * 8 > sys.maxsize:
        raise _error(path, f"shape {shape!r} is too large for NumPy", key=name)

    offsets = info["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise _error(path, f"data_offsets {offsets!r} is not a list of two integers [begin, end]", key=name)
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _error(path, f"data_offsets [{begin}, {end}] do not satisfy 0 <= begin <= end", key=name)
    # bytes = prod(shape) * itemsize;  BF16 is 2 bytes, BOOL 1
    nbytes = math.prod(shape) * _STORAGE[dtype].itemsize
    if end - begin != nbytes:
        raise _error(
            path,
            f"data_offsets [{begin}, {end}] span {end - begin} bytes, but shape {shape} of {dtype} "
            f"needs {nbytes} bytes (prod(shape) * {_STORAGE[dtype].itemsize})",
            key=name,
        )
    return _Entry(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_layout(path: str, entries: list[_Entry], data_len: int, header_len: int) -> list[_Entry]:
    """The tensors must tile the data section exactly: inside it, no overlap, no hole.

    Returns the entries in file order.
    """
    if entries:
        last = max(entries, key=lambda e: e.end)
        if last.end > data_len:
            raise _error(
                path,
                f"its data ends at byte {last.end:,} of the data section, but the file holds only "
                f"{data_len:,} bytes of data ({8 + header_len + data_len:,} bytes in all, "
                f"{8 + header_len + last.end:,} expected): the file is truncated or its header is corrupt",
                key=last.name,
            )
    # Sweep in file order. Zero-size tensors take no room; they may sit at any boundary.
    entries = sorted(entries, key=lambda e: (e.begin, e.end, e.name))
    covered = 0  # the data section's bytes [0, covered) belong to the tensors seen so far
    previous = None  # the tensor that ends at `covered`
    for e in entries:
        if e.begin < covered:
            raise _error(
                path,
                f"its data_offsets [{e.begin}, {e.end}] overlap those of {previous.name!r} "
                f"[{previous.begin}, {previous.end}]",
                key=e.name,
            )
        if e.begin > covered:
            raise _error(
                path,
                f"bytes [{covered}, {e.begin}) of the data section, just before this tensor, belong to "
                f"no tensor (a hole; the format requires the tensors to cover the data section)",
                key=e.name,
            )
        if e.end > e.begin or previous is None:
            covered, previous = e.end, e
    if covered < data_len:
        raise _error(
            path,
            f"bytes [{covered}, {data_len}) at the end of the data section belong to no tensor "
            f"(the format requires the tensors to cover the data section)",
            key=None if previous is None else previous.name,
        )
    return entries


def _read_exact(f, n: int, path: str) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = f.read(min(remaining, _READ_CHUNK))
        if not chunk:
            raise _error(path, f"the file ended while reading its {n:,}-byte header (did it change while loading?)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_tensor(f, path: str, data_start: int, e: _Entry, to_float32: bool, raw: bool = False) -> np.ndarray:
    storage = _STORAGE[e.dtype]
    x = np.empty(e.shape, dtype=storage)
    buf = memoryview(x.reshape(-1).view(np.uint8))  # the array's own bytes, written in place
    f.seek(data_start + e.begin)
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done : done + _READ_CHUNK])
        if not n:
            raise _error(path, "the file ended while reading this tensor (did it change while loading?)", key=e.name)
        done += n
    del buf
    x = x.astype(storage.newbyteorder("="), copy=False)  # native byte order; a no-op on little-endian hosts
    if e.dtype == "BF16":
        return x if raw else _bf16_to_float32(x)
    if e.dtype == "BOOL":
        return x.astype(np.bool_)  # any nonzero byte is True
    if e.dtype == "F16" and to_float32:
        return x.astype(np.float32)
    return x


def _bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of a float32: same sign and 8-bit exponent, 7 of the 23
    # mantissa bits. Put its 16 bits in the high half of a uint32 and read that as float32.
    # (In place, because `<<` on a 0-d array would return a NumPy scalar, not an array.)
    wide = bits.astype(np.uint32)
    wide <<= 16
    return wide.view(np.float32)


# ----------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to `path`; on a clean exit it replaces `path`.

        with atomic_open("log.json", "w") as f:
            f.write(text)

    The temp file is in the same directory (os.replace is atomic only within one file
    system), flushed and fsync'ed before the rename, and the directory is fsync'ed after
    it (best effort) so the rename survives a power cut. On any exception, including
    KeyboardInterrupt, the temp file is removed and `path` keeps its previous content.
    Mode "w" writes UTF-8 text with no newline translation; "wb" writes bytes.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp_beside(path, directory)
    try:
        f = open(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {}))
    except BaseException:
        os.close(fd)
        _remove_quietly(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _copy_permissions(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_directory(directory)


def _create_temp_beside(path: str, directory: str) -> tuple[int, str]:
    # Not tempfile.mkstemp: it creates files with mode 0600, which the rename would hand to
    # the target. os.open with 0o666 lets the umask decide, as a plain open() would.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"atomic_open: could not create a temporary file next to {path!r}")


def _copy_permissions(path: str, tmp: str) -> None:
    # Overwriting with a plain open() keeps the target's permissions; so do we.
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    os.chmod(tmp, mode)


def _remove_quietly(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _fsync_directory(directory: str) -> None:
    # Best effort: makes the rename durable on POSIX. Windows cannot open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write_fn: Callable[[IO[bytes]], Any]) -> None:
    """Call write_fn(f) on a binary file that atomically replaces `path` once it returns."""
    with atomic_open(path, "wb") as f:
        write_fn(f)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text: str) -> None:
    """Write `text` as UTF-8, atomically. Newlines are written as given."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text({os.fspath(path)!r}): text must be str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Any) -> None:
    """Write `obj` as JSON (indent=2, keys in the order given, trailing newline), atomically."""
    try:
        # Serialize before touching the disk: an unserializable value writes nothing.
        text = json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    except (TypeError, ValueError) as e:
        raise type(e)(
            f"atomic_write_json({os.fspath(path)!r}): {e}; convert the value to plain "
            f"dict/list/str/int/float/bool/None first (e.g. float(x), array.tolist())"
        ) from e
    atomic_write_text(path, text)


def read_json(path) -> Any:
    """Parse a JSON file; a missing or malformed file is an error that names it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path!r}: no such file; check the path (was it written or downloaded?)") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path!r}: not a JSON file, it is not valid UTF-8 (byte {e.start}: {e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path!r}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}); fix or re-create the file"
        ) from None
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path!r}: invalid JSON ({type(e).__name__}: {e}); fix or re-create the file") from None
