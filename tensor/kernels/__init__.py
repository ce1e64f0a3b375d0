"""Numba kernels: arrays in, arrays out, no autograd (the ops in tensor/functional.py own the
gradients). Every kernel has a plain-NumPy reference beside it, which the tests compare it with.

    matmul(a, b)                  a @ b, by Numba or NumPy's BLAS, whichever is faster here
    matmul_numba / matmul_ref     the same product, forced through Numba / through np.matmul
    matmul_path(a, b)             "numba" or "blas": which one `matmul` takes for these operands
    softmax_forward(x, scale, causal)      y = softmax(scale * x) over the last axis
    softmax_backward(y, g, scale)          dx = scale * y * (g - Σ g·y)
    softmax_forward_ref / softmax_backward_ref     their NumPy references
    set_num_threads(n | "auto", owner="blas"), get_num_threads(), get_thread_owner(),
    get_thread_setting(), blas_info()      who owns the cores; "auto" (the default) follows the load
"""
from .threads import (set_num_threads, get_num_threads, get_thread_owner, get_thread_setting,
                      blas_info)
from .matmul import matmul, matmul_numba, matmul_ref, matmul_path
from .softmax import (softmax_forward, softmax_backward, softmax_forward_ref,
                      softmax_backward_ref, causal_mask)

__all__ = ["matmul", "matmul_numba", "matmul_ref", "matmul_path",
           "softmax_forward", "softmax_backward", "softmax_forward_ref", "softmax_backward_ref",
           "causal_mask", "set_num_threads", "get_num_threads", "get_thread_owner",
           "get_thread_setting", "blas_info"]
