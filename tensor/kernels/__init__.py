"""Numba kernels (draft)."""
from .threads import set_num_threads, get_num_threads, get_thread_owner, blas_info
from .matmul import matmul, matmul_numba, matmul_ref
from .softmax import (softmax_forward, softmax_backward, softmax_forward_ref,
                      softmax_backward_ref)
