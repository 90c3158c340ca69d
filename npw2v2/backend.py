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
# Element-wise work on all cores
#
# BLAS already spreads each matrix product over the cores, but NumPy runs element-wise
# work (GELU, softmax, normalisation) on one thread. NumPy releases the GIL inside its
# loops, so Python threads working on separate row blocks of an array do run in parallel.
# Small blocks also keep each chain of element-wise steps in the CPU cache.

BLOCK_ELEMENTS = 1 << 15  # elements per block: 128 KiB of float32; a kernel's few temporaries fit in L2


def threads() -> int:
    """Threads for element-wise work: NPW2V2_THREADS, else the cores this process may use."""
    import os

    configured = os.environ.get("NPW2V2_THREADS")
    if configured:
        return max(1, int(configured))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_pool, _pool_owner = None, None


def _thread_pool(workers: int):
    """The shared pool of worker threads; a forked child (whose copy has no threads) makes its own."""
    import os

    global _pool, _pool_owner
    if _pool is None or _pool_owner != os.getpid() or _pool._max_workers < workers:
        from concurrent.futures import ThreadPoolExecutor

        _pool, _pool_owner = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="npw2v2"), os.getpid()
    return _pool


def rowwise(kernel, x, out=None):
    """``kernel(rows, out_rows, xp)`` over blocks of rows of ``x`` [N, M]; returns ``out`` [N, M].

    The kernel must treat each row on its own (element-wise work, or a reduction along the
    row): on NumPy it sees blocks of rows, in parallel threads; on a GPU, the whole array.
    ``out`` may be ``x`` itself, for in-place work.
    """
    xp = get_xp(x)
    if out is None:
        out = xp.empty_like(x)
    if xp is not np:
        kernel(x, out, xp)
        return out
    rows = max(1, BLOCK_ELEMENTS // max(1, x.shape[1]))
    starts = range(0, x.shape[0], rows)

    def run(part):  # one thread's share: every n-th block, so a short tail is spread too
        for start in part:
            kernel(x[start:start + rows], out[start:start + rows], np)

    n = min(threads(), len(starts))
    if n <= 1:
        run(starts)
        return out
    parts = [starts[i::n] for i in range(n)]
    futures = [_thread_pool(n - 1).submit(run, part) for part in parts[1:]]
    run(parts[0])
    for f in futures:
        f.result()
    return out
