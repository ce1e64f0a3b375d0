"""Keep freed memory in the process, so that a training step does not pay for fresh pages.

A training step allocates hundreds of temporary arrays (activations, their gradients, matmul
outputs) and frees them all by the end of the step.  glibc's malloc serves any request above its
mmap threshold (128 KiB at start, raised as it goes up to 32 MiB) with a fresh `mmap`, and gives
memory at the top of its heap back to the kernel whenever more than its trim threshold (twice the
mmap threshold) is free there.  Either way the next step gets pages that the kernel must find,
zero and map one by one on first touch: a page fault per 4 KiB.

Measured on the 2-core AMD EPYC this was written on, `baby` preset (batch 12, block 64), one
training step (forward, backward, clip, AdamW), median of 100 steps:

    glibc defaults:                     ~7,000 page faults per step,  94-107 ms
    mmap threshold 32 MiB, trim 256 MiB:   ~0 page faults per step,   56-70 ms

the same peak resident memory either way (227 MB).  The faults were most of the non-matmul time:
the matmul outputs alone are 0.4-1.5 MB each, 75 of them a step.

So importing `tensor` sets both thresholds once, through glibc's `mallopt`.  Arrays above 32 MiB
(GPT-2's embedding, say) still get their own mmap, and up to 256 MiB of freed memory stays
mapped for reuse instead of being handed back.  This is a setting of the whole process: set
TENSOR_MALLOC_TUNE=0 in the environment to leave malloc as it was.  Off glibc (macOS, musl,
Windows) nothing happens.  The same effect is available to any program through the environment
variables MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ (see `man mallopt`).
"""
import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1          # glibc's <malloc.h> parameter numbers
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20      # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 256 << 20

_state = {"tuned": False}


def _glibc_function(name: str, argtypes: tuple):
    """glibc's function `name` (returning an int) from the C library this process already
    uses, or None where that is not glibc (musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = list(argtypes), ctypes.c_int
    return fn


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring). Returns True if they
    were set, False where they could not be (not glibc) or TENSOR_MALLOC_TUNE=0 says not to."""
    if os.environ.get("TENSOR_MALLOC_TUNE", "1").strip() == "0":
        return False
    mallopt = _glibc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                         TRIM_THRESHOLD))
    _state["tuned"] = ok
    return ok


def malloc_tuned() -> bool:
    """Whether tune_malloc() has set glibc's thresholds in this process."""
    return _state["tuned"]


def give_back_freed_memory() -> None:
    """Hand the memory freed so far back to the system (glibc's malloc_trim(0)). tune_malloc
    keeps freed memory for reuse on purpose, so that training steps reuse their pages; a loader
    that frees one large temporary after another (tinygpt/quantize.py: each float32 tensor once
    it is quantized) calls this between them, or the holes left between the compact arrays stay
    resident: measured on gpt2-medium, 2-core AMD EPYC, the int8 load peaked at
    599 MB without this and 516 MB with it (360 MB of weights; bfloat16: 929 -> 858 MB), in the
    same time. malloc_trim(0) hands whole free pages back; elsewhere this does nothing."""
    trim = _glibc_function("malloc_trim", (ctypes.c_size_t,))
    if trim is not None:
        trim(0)
