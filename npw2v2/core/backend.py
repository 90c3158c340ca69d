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


def erf(x):
    """The error function, element by element, on the array's own device and in its dtype.

    NumPy has none, so NumPy arrays go to SciPy's and CuPy arrays to cupyx's; another
    array namespace must offer ``erf`` itself.
    """
    xp = get_xp(x)
    if xp is np:
        from scipy.special import erf as scipy_erf

        return scipy_erf(x)
    if xp is _cupy():
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    return xp.erf(x)
