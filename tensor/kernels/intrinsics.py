"""A few machine-level helpers for the Numba kernels, where Numba has no function of its own.

    prefetch(a, i)          ask the cache for the line holding a.flat[i]; a hint, never a fault
    bits_to_float32(u)      the float32 whose 32 bits are the uint32 u (a view of one number)
    float32_to_bits(f)      the other way: the 32 bits of a float32, as a uint32
    exp(z)                  e^z in z's precision: for float32 a polynomial that vectorizes,
                            for float64 math.exp
    maxnum(a, b)            the larger of a and b, NaN passed over; vectorizes in a loop
    zero_like(v)            0 in v's float type

prefetch, the bit casts and maxnum are single LLVM instructions. `exp` exists
because math.exp in a Numba loop is a call into the C library per element: it keeps a loop from
being vectorized, and a softmax spends most of its time in it. For float64, where the tests'
finite differences need every last bit, it stays math.exp.
"""
import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic, overload


@intrinsic
def prefetch(typingctx, a, i):
    """prefetch(a, i): ask the cache for the line holding a.flat[i] (a 1-D array), without
    waiting for it: a hint that cannot fault or change a result. LLVM's llvm.prefetch, the x86
    instruction prefetcht0 (read, keep in every cache level)."""
    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        byte_ptr = builder.bitcast(builder.gep(array.data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [byte_ptr.type],
            ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32]))
        builder.call(fn, [byte_ptr, i32(0), i32(3), i32(1)])      # read, keep everywhere, data
        return context.get_dummy_value()
    return types.void(a, i), codegen


@intrinsic
def bits_to_float32(typingctx, bits):
    """The float32 whose 32 bits are `bits` (a uint32): the same bits read as another type,
    what ndarray.view does for a whole array, for one number in a register."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@intrinsic
def float32_to_bits(typingctx, f):
    """The 32 bits of a float32, as a uint32 (bits_to_float32 undone)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


# e^z for float32, in a form that vectorizes (no call, no branch):
#   e^z = 2^n · e^r,   n = round(z / ln 2),   r = z - n·ln 2  (|r| <= ln 2 / 2)
# n is rounded by adding 1.5·2^23: the float's low mantissa bits then hold n (the "magic number"
# trick), so no float-to-int conversion is needed, and a NaN stays a NaN all the way through.
# ln 2 is split in two (a short part whose product with n is exact, and the rest), so r keeps
# its bits. e^r is its Taylor series to r^7, whose error (< 0.347^8 / 8! = 5e-9) is below
# float32's rounding. 2^n is built as a float32's bits (2^(n-1), exponent field n + 126, then
# doubled, so that e^88.7 does not overflow on the way). Below -86.6 (e^z < 2^-124.9, near
# float32's smallest normal number) the result is 0, as e^-inf must be; above 88.72, inf.
# tests/test_intrinsics.py: within 2 ulp of the exact value on [-86.6, 88.72].
_MAGIC = np.float32(12582912.0)                      # 1.5 * 2^23
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)              # ln 2's first 16 bits: n * _LN2_HI is exact
_LN2_LO = np.float32(1.428606765330187e-06)          # the rest of ln 2
_MAGIC_BITS = np.uint32(0x4B400000)                  # the bits of _MAGIC


@numba.njit(cache=True, nogil=True, inline="always")
def _exp_float32(z):
    t = z * _LOG2E + _MAGIC                          # n sits in t's low mantissa bits
    n = t - _MAGIC                                   # n, as a float
    r = (z - n * _LN2_HI) - n * _LN2_LO
    p = np.float32(1 / 5040)                         # Σ_k r^k / k!, k = 0..7, by Horner
    p = p * r + np.float32(1 / 720)
    p = p * r + np.float32(1 / 120)
    p = p * r + np.float32(1 / 24)
    p = p * r + np.float32(1 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1)
    p = p * r + np.float32(1)
    half_two_n = bits_to_float32((float32_to_bits(t) - _MAGIC_BITS + np.uint32(126))
                                 << np.uint32(23))   # 2^(n-1): n = 128 still fits
    if z < np.float32(-86.6):                        # (selects: the loop stays vectorized)
        return np.float32(0)
    if z > np.float32(88.72):                        # past float32's largest number
        return np.float32(np.inf)
    return p * half_two_n * np.float32(2)            # (and a NaN z gives NaN)


def exp(z):
    """e^z in z's precision (see above). Only for compiled code."""
    raise TypeError("tensor.kernels.intrinsics.exp is only called from compiled kernels")


@overload(exp, inline="always")
def _exp_by_type(z):
    if z == types.float32:
        return lambda z: _exp_float32(z)
    if z == types.float64:
        return lambda z: math.exp(z)


@intrinsic
def maxnum(typingctx, a, b):
    """The larger of two floats of one type; a NaN is passed over (IEEE 754 maxNum, LLVM's
    llvm.maxnum), where Python's max would depend on the order. A loop of these vectorizes
    without fast-math, so a row's max costs a few vector instructions."""
    if a != b or a not in (types.float32, types.float64):
        return None
    def codegen(context, builder, sig, args):
        t = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [t], ir.FunctionType(t, [t, t]))
        return builder.call(fn, args)
    return a(a, b), codegen


def zero_like(v):
    """0 in v's float type (float32 or float64). Only for compiled code."""
    raise TypeError("tensor.kernels.intrinsics.zero_like is only called from compiled kernels")


@overload(zero_like, inline="always")
def _zero_by_type(v):
    if v == types.float32:
        return lambda v: np.float32(0)
    if v == types.float64:
        return lambda v: np.float64(0)
