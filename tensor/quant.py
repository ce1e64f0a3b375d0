"""Weight-only quantization for inference: Linear and Embedding layers whose weights are stored
in bfloat16 or in int8 with one float32 scale per output, while activations and sums stay
float32 (or float64).

    quantize_(model, "int8")                      # every Linear swapped for a QuantLinear
    quantize_(model, "bfloat16", embeddings=["wte"])     # and the embedding named wte
    out = model(x)                                # inference only: no backward

Why: a one-token forward pass reads every weight once and does 2 flops with it, so its speed is
the memory bandwidth divided by the bytes per weight. int8 reads a quarter of float32's bytes,
bfloat16 half (tensor/kernels/quantized.py has the kernels and the formulas).

A quantized layer is inference-only: its output carries a backward that raises, so calling
.backward() through it says so instead of silently training nothing. Training stays float32:
quantize a copy after training, never the model being trained.
"""
from __future__ import annotations

import numpy as np

from . import nn
from .kernels import quantized as kq
from .mode import is_grad_enabled
from .tensor import Tensor

DTYPES = ("float32", "bfloat16", "int8")      # what quantize_ accepts; float32 changes nothing
BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2, "int8": 1}


class QuantMatrix:
    """A (N, K) matrix stored out-major in bfloat16 or int8: row n holds the K weights of output
    n (and, for int8, scale[n]). Not a Tensor: it has no gradient."""

    def __init__(self, w_nk: np.ndarray, dtype: str):
        if dtype not in ("bfloat16", "int8"):
            raise ValueError(f"QuantMatrix: dtype must be 'bfloat16' or 'int8', got {dtype!r}")
        self.dtype = dtype
        self.scale = None
        if dtype == "int8":
            self.data, self.scale = kq.quantize_int8(w_nk)          # (N, K) int8, (N,) float32
        else:
            self.data = kq.to_bfloat16(w_nk)                        # (N, K) uint16
        self.shape = self.data.shape

    @classmethod
    def from_bfloat16_bits(cls, bits: np.ndarray) -> "QuantMatrix":
        """A matrix already in bfloat16 (e.g. a checkpoint stored so): kept as it is."""
        return cls._holding("bfloat16", np.ascontiguousarray(bits, dtype=np.uint16), None)

    @classmethod
    def from_int8(cls, q: np.ndarray, scale: np.ndarray) -> "QuantMatrix":
        """A matrix quantized already (say, block by block): q (N, K) int8, scale (N,) float32,
        as QuantMatrix(w, "int8") would hold them."""
        if q.dtype != np.int8 or q.ndim != 2 or scale.shape != q.shape[:1]:
            raise ValueError(f"QuantMatrix.from_int8: want q (N, K) int8 and scale (N,), got q "
                             f"{q.shape} {q.dtype} and scale {scale.shape}")
        return cls._holding("int8", q, scale)

    @classmethod
    def _holding(cls, dtype: str, data: np.ndarray, scale) -> "QuantMatrix":
        m = cls.__new__(cls)                       # the data is compact already: no quantizing
        m.dtype, m.data, m.scale, m.shape = dtype, data, scale, data.shape
        return m

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + (0 if self.scale is None else self.scale.nbytes)

    def matmul_t(self, x: np.ndarray) -> np.ndarray:
        """x (..., K) @ thisᵀ -> (..., N), in x's dtype (float32 or float64)."""
        rows = x.reshape(-1, x.shape[-1])                           # (M, K)
        if self.dtype == "int8":
            out = kq.matmul_int8(rows, self.data, self.scale)       # (M, N)
        else:
            out = kq.matmul_bf16(rows, self.data)                   # (M, N)
        return out.reshape(x.shape[:-1] + (self.shape[0],))         # (..., N)

    def rows(self, idx: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Rows idx (any shape) widened: (*idx.shape, K)."""
        if self.dtype == "int8":
            return self.data[idx].astype(dtype) * self.scale[idx].astype(dtype)[..., None]
        return kq.from_bfloat16(self.data[idx], dtype)

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        return self.rows(np.arange(self.shape[0]), dtype)


def _inference_node(out: np.ndarray, x, op: str) -> Tensor:
    """Wrap out in a Tensor. With gradients on, its backward raises: a quantized weight cannot
    be trained, and silently giving no gradient would be worse."""
    result = Tensor(out)
    if is_grad_enabled():
        def backward(g):
            raise RuntimeError(f"{op}: backward through a quantized (inference-only) weight. "
                               f"Quantize with tensor.quant.quantize_ only to run a model; train "
                               f"the float32 model (without --dtype) and quantize afterwards")
        result.requires_grad = True
        result._parents = (x,) if isinstance(x, Tensor) and x.requires_grad else ()
        result._backward, result._op = backward, op
    return result


class QuantLinear(nn.Module):
    """out = x @ W + b with W stored compact, out-major (out_features, in_features)."""

    def __init__(self, linear: nn.Linear, dtype: str):
        super().__init__()
        self._hold(QuantMatrix(linear.weight.data.T, dtype), linear.bias)   # [in, out] -> (out, in)

    @classmethod
    def from_matrix(cls, matrix: QuantMatrix, bias=None) -> "QuantLinear":
        """A layer around a matrix quantized already, (out, in); bias: a float Parameter."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._hold(matrix, bias)
        return layer

    def _hold(self, matrix: QuantMatrix, bias) -> None:
        self.out_features, self.in_features = matrix.shape
        self.weight = matrix                                            # (out, in)
        self.bias = bias                   # float32, a Parameter (still read by state_dict)

    def forward(self, x):
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        if xd.shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear: x has shape {xd.shape} but the layer takes "
                             f"{self.in_features} inputs (weight {self.weight.shape} out x in)")
        out = self.weight.matmul_t(xd)                                  # (..., out)
        if self.bias is not None:
            out += self.bias.data.astype(out.dtype, copy=False)
        return _inference_node(out, x, "QuantLinear")


class QuantWeight(Tensor):
    """A quantized table seen as a weight Tensor, so code written for a float table keeps
    working: `x @ table.weight.T` (GPT-2's logits, whose output projection is the token
    table). Python asks the right operand first when its class is a subclass of the left
    operand's, so `x @ w.T` arrives at QuantWeight.__rmatmul__ and runs the quantized kernel.
    It holds no float array (.data is empty): ask for .dequantize() to get one."""
    __slots__ = ("matrix", "transposed")

    def __init__(self, matrix: QuantMatrix, transposed: bool = False):
        super().__init__(np.empty(0, dtype=np.float32))
        self.matrix, self.transposed = matrix, transposed

    @property
    def shape(self) -> tuple:
        return self.matrix.shape[::-1] if self.transposed else self.matrix.shape

    @property
    def ndim(self) -> int:
        return 2

    @property
    def T(self) -> "QuantWeight":
        return QuantWeight(self.matrix, not self.transposed)

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        w = self.matrix.dequantize(dtype)
        return w.T if self.transposed else w

    def __rmatmul__(self, x):
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        if not self.transposed or xd.shape[-1] != self.shape[0]:
            side = "weight.T" if self.transposed else "weight"
            raise ValueError(f"matmul with a quantized table: x {xd.shape} @ {side} {self.shape} "
                             f"is not supported; only x (..., {self.matrix.shape[1]}) @ weight.T "
                             f"is (the logits product)")
        return _inference_node(self.matrix.matmul_t(xd), x, "QuantEmbedding.weight.T")

    def __matmul__(self, other):
        raise ValueError(f"matmul: a quantized table {self.shape} on the left is not supported; "
                         f"use x @ weight.T, or weight.dequantize()")

    def __repr__(self):
        return f"QuantWeight(shape={self.shape}, dtype={self.matrix.dtype})"


class QuantEmbedding(nn.Module):
    """A lookup table stored compact: row i (widened to float32) is the vector for id i."""

    def __init__(self, embedding: nn.Embedding, dtype: str):
        super().__init__()
        self.weight = QuantWeight(QuantMatrix(embedding.weight.data, dtype))   # (num, dim)

    @classmethod
    def from_matrix(cls, matrix: QuantMatrix) -> "QuantEmbedding":
        """A table around a matrix quantized already, (num, dim)."""
        table = cls.__new__(cls)
        nn.Module.__init__(table)
        table.weight = QuantWeight(matrix)
        return table

    def forward(self, idx):
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        return Tensor(self.weight.matrix.rows(idx))                 # (*idx.shape, dim)


def quantize_(model: nn.Module, dtype: str, embeddings=()) -> nn.Module:
    """Swap, in place, every nn.Linear of model for a QuantLinear, and every nn.Embedding whose
    dotted name is in embeddings for a QuantEmbedding; return model. dtype "float32" changes
    nothing. The float32 weights are dropped (their memory is freed unless something else holds
    them): quantize a copy if you still need the original."""
    if dtype not in DTYPES:
        raise ValueError(f"quantize_: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float32":
        return model
    wanted = set(embeddings)
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            full = f"{name}{child_name}"
            if isinstance(child, nn.Linear):
                setattr(parent, child_name, QuantLinear(child, dtype))
            elif isinstance(child, nn.Embedding) and full in wanted:
                setattr(parent, child_name, QuantEmbedding(child, dtype))
                wanted.discard(full)
    if wanted:
        raise ValueError(f"quantize_: no nn.Embedding named {', '.join(sorted(wanted))} in "
                         f"{type(model).__name__}")
    return model


def weight_nbytes(model: nn.Module) -> int:
    """Bytes held by the model's weights: float parameters plus quantized matrices."""
    total = sum(p.data.nbytes for p in model.parameters())
    for _, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, QuantMatrix):
            total += w.nbytes
        elif isinstance(w, QuantWeight):
            total += w.matrix.nbytes
    return total
