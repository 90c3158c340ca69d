"""Array-module dispatch: the only module that knows CuPy exists.

Every function takes its array module from its inputs (``xp = get_xp(x)``), so the
same code runs on NumPy arrays on the CPU and on CuPy arrays on a GPU.
"""
from __future__ import annotations

import numpy as np


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def get_xp(*arrays):
    """The array module (numpy or cupy) that the given arrays belong to."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            return _cupy()
    return np


def asnumpy(a):
    """A NumPy array of ``a``, wherever it lives."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def to_device(a, device: str):
    """Move an array to ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy)."""
    if device == "cpu":
        return asnumpy(a)
    if device == "cuda":
        cupy = _cupy()
        if cupy is None:
            raise RuntimeError('device "cuda" needs CuPy: pip install "npw2v2[cupy]"')
        return cupy.asarray(a)
    raise ValueError(f'device must be "cpu" or "cuda", got {device!r}')


def erf(x):
    """The error function, elementwise, keeping the dtype (float32 stays float32)."""
    if get_xp(x) is np:
        import scipy.special

        return scipy.special.erf(x)
    import cupyx.scipy.special

    return cupyx.scipy.special.erf(x)


def sliding_window_view(x, window: int, axis: int):
    """A read-only view of every length-``window`` window along ``axis``, appended as a last axis."""
    return get_xp(x).lib.stride_tricks.sliding_window_view(x, window, axis=axis)
