"""GPT-2 with compact weights for generation: `--dtype bfloat16` or `--dtype int8`.

    model = quantize_gpt(model, "int8")       # in place; inference only from here on
    model = load_weights(GPT(config, init=False), "int8", read)     # the same, tensor by tensor

What is quantized: every Linear (c_attn, c_proj, c_fc of each block) and the token table wte,
which is also the output projection (logits = x @ wteᵀ) and the largest matrix of GPT-2
(50,257 x 768 in the 124M model). What stays float32: the position table wpe (only looked up,
never multiplied), the LayerNorms and the biases (small, and sensitive), and every activation.
tensor/quant.py has the layers, tensor/kernels/quantized.py the kernels.

Two ways in, one result (bit for bit; tests/test_quantize.py checks it):
  quantize_gpt     a float32 model already in memory, quantized in place. Simple, but the
                   whole float32 model existed first: 6.2 GB for gpt2-xl.
  load_weights     what the loader uses (tinygpt/loading.py, for every --dtype): each weight is read
                   from the file, quantized and its float32 copy dropped before the next one
                   is read, so the peak is the compact model plus one float32 tensor (wte, the
                   largest). A bfloat16 tensor of a bfloat16 file keeps its bits as they are.
                   With "float32" nothing is quantized: every weight is read as it is.

Memory: bytes of weights for a config at each dtype (weight_bytes below; `benchmarks/
quant_speed.py` prints them for the four GPT-2 sizes beside what a process measures).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tensor import nn
from tensor.memory import give_back_freed_memory
from tensor.kernels import quantized as kq
from tensor.quant import (
    BYTES_PER_WEIGHT,
    DTYPES,
    QuantEmbedding,
    QuantLinear,
    QuantMatrix,
    quantize_,
    weight_nbytes,
)

__all__ = ["DTYPES", "load_weights", "quantize_gpt", "weight_bytes", "weight_nbytes"]

EMBEDDINGS = ("wte",)       # the tables quantized besides the Linears (wpe is only looked up)
TABLE_ROWS = 4096           # rows of wte read at a time: 12 MB of float32 at GPT-2's 768 wide


def check_weight_dtype(op: str, weight_dtype: str, dtype) -> None:
    """The loaders' checks of weight_dtype (one of DTYPES) against the compute dtype: quantized
    weights compute in float32."""
    if weight_dtype not in DTYPES:
        raise ValueError(f"{op}: weight_dtype must be one of {', '.join(DTYPES)}, got "
                         f"{weight_dtype!r}")
    if weight_dtype != "float32" and np.dtype(dtype) != np.float32:
        raise ValueError(f"{op}: weight_dtype {weight_dtype!r} computes in float32; dtype "
                         f"{np.dtype(dtype)} is only for float32 weights")


def quantize_gpt(model, dtype: str):
    """Quantize a GPT's Linear weights and its token table in place (dtype "float32": nothing
    changes) and return it. The model can still generate and score text, not train."""
    quantize_(model, dtype, embeddings=list(EMBEDDINGS))
    model.weight_dtype = dtype            # what `tinygpt` commands report
    return model


def load_weights(model, dtype: str, read: Callable[..., np.ndarray]):
    """Fill `model`, a GPT built with init=False (zeros that no page of memory holds yet), one
    weight at a time, quantizing each matrix to dtype ("bfloat16", "int8") as soon as it is
    read, or keeping it as read ("float32": in the model's own float dtype); return the model.

    read(name, rows=None) -> the array of parameter `name` ("h.0.attn.c_attn.weight", ...), or
    with rows=(start, stop) only those rows of it (the token table is read in blocks, so it is
    never whole in float32): any float (cast to the model's dtype), or uint16, the bit patterns
    of a bfloat16 tensor (tensor.io's raw=True). With dtype "bfloat16"
    those bits are kept as they are; otherwise they are widened, exactly, to float32 first.
    tensor.io.SafetensorsFile.read is such a function.

    The layers are visited in the order quantize_ visits them, and each is quantized by the
    same function, so the result equals quantize_gpt(the float32 model, dtype) bit for bit,
    down to the order of the modules. Beside the compact model, one tensor's float32 copy at
    most is alive at a time: a Linear's [in, out] weight (the kernels take (out, in), and that
    transpose is a second copy of that one tensor), or a block of TABLE_ROWS rows of wte.
    """
    if dtype not in DTYPES:
        raise ValueError(f"load_weights: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    read = _finite(read)                # every tensor, or block of rows, checked as it comes
    # Names only, not the layers: a list holding a replaced Linear would keep its float32
    # weight alive to the end, and the peak would be the float32 model again.
    slots = [(prefix, parent, child_name) for prefix, parent in model.named_modules()
             for child_name in parent._modules]
    for prefix, parent, child_name in slots if dtype != "float32" else ():
        child, name = parent._modules[child_name], f"{prefix}{child_name}.weight"
        is_table = isinstance(child, nn.Embedding) and prefix + child_name in EMBEDDINGS
        if not (isinstance(child, nn.Linear) or is_table):
            continue
        give_back_freed_memory()
        w = None if is_table else read(name)                            # (in, out)
        if w is not None:
            _check_shape(name, w, child.weight.shape)
        try:
            if is_table:                                                # (num, dim), in blocks
                layer = QuantEmbedding.from_matrix(_table(read, name, child.weight.shape, dtype))
            else:
                layer = _linear(child, w, dtype)
        except NonFiniteWeight:
            raise                                   # it names the tensor already
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        setattr(parent, child_name, layer)
        child = w = layer = None        # the float32 copy goes before the next tensor is read
    give_back_freed_memory()
    for name, p in model.named_parameters():      # the rest (all of them for "float32")
        x = read(name)
        _check_shape(name, x, p.shape)
        p.data = np.ascontiguousarray(kq.from_bfloat16(x) if _is_bf16_bits(x) else x,
                                      dtype=p.dtype)
    model.weight_dtype = dtype
    return model


class NonFiniteWeight(ValueError):
    """A weight that holds nan or inf: the sources turn it into their LoadError, naming the file."""


def _finite(read: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """read, refusing any array it returns that holds nan or inf (float32, float16, float64, or
    bfloat16 bits). A non-finite weight would not fail where it is: sampling would end in
    "probabilities contain NaN", greedy decoding print the same token forever, perplexity
    print nan. One pass over each tensor as it is read: on GPT-2's wte (50,257 x 768) 28 ms,
    a third of what copying it costs."""
    def checked(name, rows=None):
        x = read(name, rows=rows)
        if _is_bf16_bits(x):
            bad = None if not np.any((x & 0x7F80) == 0x7F80) else (x & 0x7F80) == 0x7F80
        else:
            bad = None if np.isfinite(x).all() else ~np.isfinite(x)
        if bad is not None:
            raise NonFiniteWeight(_non_finite_message(name, x, bad, rows))
        return x
    return checked


def _non_finite_message(name: str, x: np.ndarray, bad: np.ndarray, rows) -> str:
    """Which tensor, how many bad numbers, and the first of them (nan or inf, and where)."""
    first = [int(i) for i in np.argwhere(bad)[0]]     # in x, which may be a block of rows
    value = x[tuple(first)]
    value = kq.from_bfloat16(np.array([value]))[0] if _is_bf16_bits(x) else value
    if rows is not None and first:
        first[0] += rows[0]                           # an index into the whole tensor
    more = int(bad.sum()) - 1                         # (a block's only, for a table)
    at = f"[{', '.join(map(str, first))}]" if first else "(a scalar)"
    also = (f" (and {more:,} more nan or inf{'' if more == 1 else 's'}"
            f"{'' if rows is None else ' in these rows'})" if more else "")
    return (f"{name} holds {value} at {at}{also}; a usable model's weights are all finite. The "
            f"file is damaged, or was saved from a training run that diverged: restore it, or "
            f"load another checkpoint")


def _check_shape(name: str, x: np.ndarray, shape) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"load_weights: {name} has shape {list(x.shape)} but the model's "
                         f"config gives {list(shape)}; does the config match the weights?")


def _is_bf16_bits(x: np.ndarray) -> bool:
    return x.dtype == np.uint16


def _float32(x: np.ndarray) -> np.ndarray:
    """Any float array, or bfloat16 bits, as contiguous float32 (bits widen exactly)."""
    if _is_bf16_bits(x):
        return kq.from_bfloat16(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _bf16_matrix(bits_nk: np.ndarray) -> QuantMatrix:
    """A bfloat16 matrix from its bits, kept as they are. Like kq.to_bfloat16 on floats, nan and
    inf are refused: a weight of a usable checkpoint is finite."""
    if np.any((bits_nk & 0x7F80) == 0x7F80):                # exponent all ones: inf or nan
        raise ValueError(f"load_weights: the {bits_nk.shape} bfloat16 matrix holds nan or "
                         f"inf (is the checkpoint damaged?)")
    return QuantMatrix.from_bfloat16_bits(np.ascontiguousarray(bits_nk))


def _linear(linear: nn.Linear, w: np.ndarray, dtype: str) -> QuantLinear:
    """linear (its weight still unread zeros) as a QuantLinear holding w [in, out]."""
    if _is_bf16_bits(w) and dtype == "bfloat16":
        return QuantLinear.from_matrix(_bf16_matrix(w.T), linear.bias)    # (out, in) bits
    return _from_float(linear, w, lambda: QuantLinear(linear, dtype))


def _from_float(layer, w: np.ndarray, make):
    """make() a quantized layer from `layer` while its weight holds w as float32, then put its
    zeros back: the float32 copy lives only inside this call, whoever still holds `layer`."""
    zeros = layer.weight.data
    layer.weight.data = _float32(w)
    try:
        return make()
    finally:
        layer.weight.data = zeros


def _table(read, name: str, shape, dtype: str) -> QuantMatrix:
    """The token table, TABLE_ROWS rows at a time: wte is the largest tensor (50,257 rows), and
    read whole it would be the whole of the load's float32 peak. Its rows are its outputs, each
    quantized on its own (one int8 scale per row; bfloat16 rounds each number alone), so block
    by block gives the very bits of the whole table at once."""
    N, K = shape
    if _is_bf16_bits(read(name, rows=(0, 0))) and dtype == "bfloat16":   # 0 rows: the dtype
        bits = read(name)
        _check_shape(name, bits, shape)
        return _bf16_matrix(bits)                        # already compact: kept whole, as is
    data = np.empty((N, K), dtype=np.int8 if dtype == "int8" else np.uint16)
    scale = np.empty(N, dtype=np.float32) if dtype == "int8" else None
    for start in range(0, N, TABLE_ROWS):
        stop = min(start + TABLE_ROWS, N)
        block = read(name, rows=(start, stop))                          # (rows, K)
        _check_shape(f"{name} rows [{start}, {stop})", block, (stop - start, K))
        if dtype == "int8":
            data[start:stop], scale[start:stop] = kq.quantize_int8(_float32(block))
        else:
            data[start:stop] = kq.to_bfloat16(_float32(block))
    if dtype == "int8":
        return QuantMatrix.from_int8(data, scale)
    return QuantMatrix.from_bfloat16_bits(data)


def weight_bytes(config, dtype: str) -> int:
    """Bytes of a GPT's weights when quantized to dtype, from its config alone.

    The quantized matrices: per block c_attn (C, 3C), attn.c_proj (C, C), c_fc (C, 4C),
    mlp.c_proj (4C, C), i.e. 12 C² weights, plus wte (V, C). int8 adds one float32 scale per
    output row. Everything else (wpe, LayerNorms, biases) stays float32."""
    if dtype not in DTYPES:
        raise ValueError(f"weight_bytes: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    C, L, V, T = config.n_embd, config.n_layer, config.vocab_size, config.block_size
    matrices = L * 12 * C * C + V * C
    rows = L * (3 * C + C + 4 * C + C) + V                      # outputs of those matrices
    biases = L * (3 * C + C + 4 * C + C) if config.bias else 0
    norms = (2 * L + 1) * C * (2 if config.bias else 1)
    floats = T * C + biases + norms                             # wpe + biases + LayerNorms
    scales = rows if dtype == "int8" else 0
    return matrices * BYTES_PER_WEIGHT[dtype] + 4 * (floats + scales)
