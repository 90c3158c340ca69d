"""A strict stand-in for a GPU array library, to prove the model's device path without a GPU.

``DeviceArray`` wraps a NumPy array the way a CuPy array holds device memory: NumPy's own
functions refuse it (no ``__array__``, and ``__array_function__``/``__array_ufunc__`` raise),
arithmetic with a host NumPy array is refused, and only its namespace ``device`` (reached
through ``__array_namespace__``, as npw2v2.core.backend.get_xp does) computes with it. Moving
data back takes ``.get()``, as with CuPy. So a NumPy-only call left on the device path,
such as ``np.sqrt(x)`` or ``np.asarray(x)``, fails loudly.
"""
from __future__ import annotations

import types

import numpy as np
import scipy.special


class HostCallError(TypeError):
    """A NumPy (host) function was handed a device array."""


def _unwrap(value):
    if isinstance(value, DeviceArray):
        return value._host
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise HostCallError("a NumPy array was mixed with a device array; move it with device.asarray first")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _wrap(value):
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _on_device(function):
    def call(*args, **kwargs):
        return _wrap(function(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))
    return call


class DeviceArray:
    """An array on the stand-in device."""

    def __init__(self, host: np.ndarray):
        self._host = host

    def __array_namespace__(self, api_version=None):
        return device

    def __array__(self, *args, **kwargs):
        raise HostCallError("implicit conversion of a device array to NumPy; use .get()")

    def __array_function__(self, func, types, args, kwargs):
        raise HostCallError(f"numpy.{func.__name__} was called with a device array")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise HostCallError(f"numpy.{ufunc.__name__} was called with a device array")

    def get(self) -> np.ndarray:
        return self._host.copy()

    shape = property(lambda self: self._host.shape)
    ndim = property(lambda self: self._host.ndim)
    dtype = property(lambda self: self._host.dtype)
    size = property(lambda self: self._host.size)
    T = property(lambda self: DeviceArray(self._host.T))

    def __len__(self):
        return len(self._host)

    def __getitem__(self, key):
        return _wrap(self._host[_unwrap(key)])

    def __setitem__(self, key, value):
        self._host[_unwrap(key)] = _unwrap(value)

    def __bool__(self):
        raise HostCallError("the truth value of a device array needs a copy to the host")

    def __float__(self):
        raise HostCallError("float() of a device array needs a copy to the host")

    def __repr__(self):
        return f"DeviceArray({self._host!r})"

    def __getattr__(self, name):  # methods: reshape, transpose, astype, sum, mean, max, ...
        if name.startswith("__"):  # no __array_interface__ and friends: NumPy must not see the data
            raise AttributeError(name)
        attribute = getattr(self._host, name)
        return _on_device(attribute) if callable(attribute) else _wrap(attribute)


def _operator(name):
    def method(self, *others):
        return _wrap(getattr(self._host, name)(*(_unwrap(o) for o in others)))
    return method


for _name in ["add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "matmul", "rmatmul",
              "pow", "rpow", "neg", "pos", "abs", "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "invert",
              "iadd", "isub", "imul", "itruediv"]:
    setattr(DeviceArray, f"__{_name}__", _operator(f"__{_name}__"))


def _in_place(name):
    def method(self, other):
        getattr(self._host, name)(_unwrap(other))
        return self
    return method


for _name in ["iadd", "isub", "imul", "itruediv"]:
    setattr(DeviceArray, f"__{_name}__", _in_place(f"__{_name}__"))


class _Namespace(types.SimpleNamespace):
    """NumPy's functions, computing on device arrays and returning device arrays."""

    def __getattr__(self, name):
        value = getattr(np, name)
        if callable(value) and not isinstance(value, type):
            return _on_device(value)
        return value  # dtypes, finfo, constants


def _asarray(a, dtype=None) -> DeviceArray:
    """The way onto the device, as cupy.asarray: host arrays are copied over, device arrays stay."""
    if isinstance(a, DeviceArray):
        return a if dtype is None or a.dtype == dtype else DeviceArray(a._host.astype(dtype))
    return DeviceArray(np.array(a, dtype=dtype))


device = _Namespace(
    lib=types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
        sliding_window_view=_on_device(np.lib.stride_tricks.sliding_window_view))),
    fft=types.SimpleNamespace(rfft=_on_device(np.fft.rfft)),  # cupy.fft.rfft (w2v-BERT's filter banks)
    asarray=_asarray,
    finfo=np.finfo,
    erf=_on_device(scipy.special.erf),  # NumPy has none; CuPy's is cupyx.scipy.special.erf
)


def to_device(tree):
    """A parameter tree (dicts, lists, arrays) with every array moved to the stand-in device."""
    if isinstance(tree, dict):
        return {k: to_device(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [to_device(v) for v in tree]
    return DeviceArray(np.array(tree))
