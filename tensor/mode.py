"""The two switches every op reads.

    with tensor.no_grad():      ops record no graph (inference, optimizer updates);
                                `enable_grad()` turns recording back on inside it
    with tensor.fused(False):   gelu, layer_norm, cross_entropy, embedding, dropout's mask,
                                softmax and the `attention` op run as the NumPy lines written
                                beside their kernels, instead of the Numba kernels of
                                tensor/kernels/ (GPT then builds attention op by op)

Both paths of the fused switch are tested against each other; TENSOR_FUSED=0 in the
environment turns the kernels off from the start. The state lives here and nowhere else: read
it with `is_grad_enabled()` and `is_fused()`.
"""
import contextlib
import os

_grad_enabled = True
_fused = os.environ.get("TENSOR_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def is_grad_enabled() -> bool:
    return _grad_enabled


def is_fused() -> bool:
    return _fused


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, enabled
    try:
        yield
    finally:
        _grad_enabled = previous      # restored even if the block raised


def no_grad():
    """Context manager: ops inside it record no graph, so no memory is kept for backward."""
    return _grad_mode(False)


def enable_grad():
    """Context manager: ops inside it record a graph again (e.g. inside a `no_grad` block)."""
    return _grad_mode(True)


@contextlib.contextmanager
def fused(enabled: bool = True):
    """Context manager: run the ops inside with (True) or without (False) the fused kernels.
    Each op reads the switch once, in its forward; its backward follows the same path."""
    global _fused
    previous, _fused = _fused, bool(enabled)
    try:
        yield
    finally:
        _fused = previous
