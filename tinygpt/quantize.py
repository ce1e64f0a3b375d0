"""GPT-2 with compact weights for generation: `--dtype bfloat16` or `--dtype int8`.

    model = quantize_gpt(model, "int8")       # in place; inference only from here on

What is quantized: every Linear (c_attn, c_proj, c_fc of each block) and the token table wte,
which is also the output projection (logits = x @ wteᵀ) and the largest matrix of GPT-2
(50,257 x 768 in the 124M model). What stays float32: the position table wpe (only looked up,
never multiplied), the LayerNorms and the biases (small, and sensitive), and every activation.
tensor/quant.py has the layers, tensor/kernels/quantized.py the kernels.

Memory: bytes of weights for a config at each dtype (weight_bytes below; `benchmarks/
quant_speed.py` prints them for the four GPT-2 sizes beside what a process measures).
"""
from __future__ import annotations

from tensor.quant import BYTES_PER_WEIGHT, DTYPES, quantize_, weight_nbytes

__all__ = ["DTYPES", "quantize_gpt", "weight_bytes", "weight_nbytes"]


def quantize_gpt(model, dtype: str):
    """Quantize a GPT's Linear weights and its token table in place (dtype "float32": nothing
    changes) and return it. The model can still generate and score text, not train."""
    quantize_(model, dtype, embeddings=["wte"])
    model.weight_dtype = dtype            # what `tinygpt` commands report
    return model


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
