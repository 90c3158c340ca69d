"""Array-module dispatch: the only module that knows CuPy exists.

Every function takes its array module from its inputs (``xp = get_xp(x)``), so the
same code runs on NumPy arrays on the CPU and on CuPy arrays on a GPU. Any array type
that names its namespace the Array API way (``__array_namespace__``) is followed too;
the tests use that for a strict stand-in device.
"""
from __future__ import annotations

import numpy as np


class DeviceError(RuntimeError):
    """The asked device cannot be used (no CuPy, no GPU)."""


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def get_xp(*arrays):
    """The array module (numpy, cupy, or another array namespace) that the given arrays belong to."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return _cupy()
        if not isinstance(a, np.ndarray) and hasattr(a, "__array_namespace__"):
            return a.__array_namespace__()
    return np


def asnumpy(a):
    """A NumPy array of ``a``, wherever it lives."""
    if get_xp(a) is np:
        return np.asarray(a)
    return a.get()  # CuPy's (and the stand-in device's) copy to the host


def to_device(a, device: str):
    """Move an array to ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy)."""
    if device == "cpu":
        return asnumpy(a)
    if device == "cuda":
        cupy = _cupy()
        if cupy is None:
            raise DeviceError('device "cuda" needs CuPy: pip install "npw2v2[cupy]" (CUDA 12) '
                              'or "npw2v2[cupy13]" (CUDA 13)')
        return cupy.asarray(a)
    raise ValueError(f'device must be "cpu" or "cuda", got {device!r}')


def sliding_window_view(x, window: int, axis: int):
    """A read-only view of every length-``window`` window along ``axis``, appended as a last axis."""
    return get_xp(x).lib.stride_tricks.sliding_window_view(x, window, axis=axis)


# ---------------------------------------------------------------------------
# Element-wise work in cache-sized blocks
#
# A chain of element-wise steps (GELU is about twenty NumPy calls) run over a whole
# [T, 3072] array streams it through memory once per step. Run block by block, each
# block's temporaries stay in the CPU's caches, which makes the chain several times
# faster. Each NumPy call also costs about a microsecond however small its block, so
# blocks are no smaller than they need be: measured here (AMD EPYC, 1 MiB L2 per core,
# 32 MiB L3), GELU took 3.2 ns per value in blocks of 32K values, 2.8 in blocks of
# 64K to 256K. (Python threads over the blocks were tried and gained nothing: each of
# the many short NumPy calls hands the GIL over, and the hand-overs cost more than the
# second core brings. BLAS still uses every core for the matrix products.)

BLOCK_ELEMENTS = 1 << 17  # elements per block: 512 KiB of float32; a kernel's few temporaries fit in L3


def rowwise(kernel, x, out=None):
    """``kernel(rows, out_rows, xp)`` over blocks of rows of ``x`` [N, M]; returns ``out`` [N, M].

    The kernel must treat each row on its own (element-wise work, or a reduction along the
    row): on NumPy it sees cache-sized blocks of rows; on a GPU, the whole array at once.
    ``out`` may be ``x`` itself, for in-place work.
    """
    xp = get_xp(x)
    if out is None:
        out = xp.empty_like(x)
    if xp is not np:
        kernel(x, out, xp)
        return out
    rows = max(1, BLOCK_ELEMENTS // max(1, x.shape[1]))
    for start in range(0, x.shape[0], rows):
        kernel(x[start:start + rows], out[start:start + rows], np)
    return out
