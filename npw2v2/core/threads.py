"""Element-wise work in cache-sized blocks, shared among threads: the fast path's engine room.

A chain of element-wise steps (the fast GELU is about twenty NumPy calls) run over a
whole [T, 3072] array streams it through memory once per step. Run block by block, each
block's temporaries stay in the CPU's caches. Blocks are no smaller than they need be,
since every NumPy call has a fixed cost however small its block.

BLAS uses every core for the matrix products; NumPy's element-wise calls use one. So a
large array's rows are split among threads, one per core (NumPy lets go of the GIL inside
its loops). That pays only when the other cores are idle, that is when OpenBLAS's threads
sleep soon after a product (see npw2v2._openblas), and only for arrays large enough to
outweigh handing a part to a thread and back. docs/performance.md has the measurements
behind the block and part sizes.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _openblas
from .backend import get_xp

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
