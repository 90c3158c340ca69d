"""Array-module dispatch: the only module that knows CuPy exists.

Every function takes its array module from its inputs (``xp = get_xp(x)``), so the
same code runs on NumPy arrays on the CPU and on CuPy arrays on a GPU. Any array type
that names its namespace the Array API way (``__array_namespace__``) is followed too;
the tests use that for a strict stand-in device.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _openblas


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
# Element-wise work in cache-sized blocks, over threads
#
# A chain of element-wise steps (GELU is about twenty NumPy calls) run over a whole
# [T, 3072] array streams it through memory once per step. Run block by block, each
# block's temporaries stay in the CPU's caches, which makes the chain several times
# faster. Each NumPy call also costs about a microsecond however small its block, so
# blocks are no smaller than they need be: measured here (AMD EPYC, 1 MiB L2 per core,
# 32 MiB L3), GELU took 3.2 ns per value in blocks of 32K values, 2.8 in blocks of
# 64K to 256K.
#
# BLAS uses every core for the matrix products; NumPy's element-wise calls use one. So a
# large array's rows are split over threads, one per core (NumPy lets go of the GIL inside
# its loops). That pays only when the other cores are idle, that is when OpenBLAS's threads
# sleep soon after a product (see _openblas), and only for large arrays: handing a part to
# a thread and back costs 60-90 us. Measured here, GELU right after a product on two
# threads: 1.0x on 128K values, 1.3x on 512K, 1.4x on 1M, 1.7x on 4M (at normal priority,
# where a thread wakes more slowly: 1.0x on 512K, 1.1-1.3x on 1M, 1.3-1.6x on 4M). So each
# thread is handed at least 256K values.

BLOCK_ELEMENTS = 1 << 17  # elements per block: 512 KiB of float32; a kernel's few temporaries fit in L3
THREAD_PART_ELEMENTS = 1 << 18  # the fewest elements worth handing to a thread of their own


def blas_build() -> dict:
    """NumPy's description of its BLAS ("name", "version", ...); empty where NumPy (< 1.26) has none."""
    build = getattr(np.__config__, "CONFIG", {})
    return build.get("Build Dependencies", {}).get("blas", {})


def _element_threads() -> int:
    """Threads for element-wise work: one per core BLAS may use, or 1 where its idle threads spin."""
    if not (_openblas.IDLE_THREADS_SLEEP and "openblas" in blas_build().get("name", "")):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for limit in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):  # BLAS's own limits, ours too
        if os.environ.get(limit, "").strip().isdigit():
            cores = min(cores, max(1, int(os.environ[limit])))
    return cores


ELEMENT_THREADS = _element_threads()
_helpers = None  # a thread pool of ELEMENT_THREADS - 1 workers, made on first use


def rowwise(kernel, x, out=None, threaded=True):
    """``kernel(rows, out_rows, xp)`` over blocks of rows of ``x`` [N, M]; returns ``out`` [N, M].

    The kernel must treat each row on its own (element-wise work, or a reduction along the
    row): on NumPy it sees cache-sized blocks of rows, those of a large array shared among
    ELEMENT_THREADS threads unless ``threaded`` is False; on a GPU, the whole array at once.
    ``out`` may be ``x`` itself, for in-place work.
    """
    xp = get_xp(x)
    if out is None:
        out = xp.empty_like(x)
    if xp is not np:
        kernel(x, out, xp)
        return out
    threads = max(1, min(ELEMENT_THREADS, x.size // THREAD_PART_ELEMENTS)) if threaded else 1
    parts = [(x[rows], out[rows]) for rows in _row_ranges(x.shape[0], threads)]
    helped = [_thread_pool().submit(_in_blocks, kernel, *part) for part in parts[1:]]
    _in_blocks(kernel, *parts[0])
    for part in helped:
        part.result()
    return out


def _row_ranges(rows: int, parts: int) -> list:
    """``parts`` slices covering range(rows) in order, of sizes differing by at most one."""
    bounds = [rows * i // parts for i in range(parts + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def _in_blocks(kernel, x, out):
    """The kernel over cache-sized blocks of rows of x [N, M], on this thread."""
    rows = max(1, BLOCK_ELEMENTS // max(1, x.shape[1]))
    for start in range(0, x.shape[0], rows):
        kernel(x[start:start + rows], out[start:start + rows], np)


def _thread_pool():
    global _helpers
    if _helpers is None:
        _helpers = ThreadPoolExecutor(max(1, ELEMENT_THREADS - 1), thread_name_prefix="npw2v2-rowwise")
    return _helpers
