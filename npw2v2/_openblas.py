"""How long OpenBLAS's idle threads spin: set before NumPy loads OpenBLAS.

After each matrix product, OpenBLAS's worker threads keep spinning, waiting for the next
one, for 2^28 CPU cycles (about 0.1 s) by default. Element-wise work that follows (GELU),
which ``backend.rowwise`` splits over threads, then finds the other cores busy and gains
nothing. Spinning 2^19 cycles (about 0.2 ms) still bridges a run of back-to-back products,
and frees the cores for the element-wise work between them.

OpenBLAS reads OPENBLAS_THREAD_TIMEOUT (log2 of the cycles) once, when it is loaded. So the
setting below takes effect only when NumPy is imported after npw2v2 (as in the ``npw2v2``
command) or when the variable was set before Python started; ``IDLE_THREADS_SLEEP`` records
whether one of them holds. A value the user set is left as it is.
"""
import os
import sys

VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
SPIN_CYCLES_LOG2 = 19
LONGEST_SHORT_SPIN_LOG2 = 22  # about 2 ms: still short next to the element-wise work in a layer


def idle_threads_sleep(value_before, numpy_loaded_before: bool) -> bool:
    """Whether OpenBLAS's idle threads sleep soon after a product, given the variable's value
    before npw2v2 set it (None: unset) and whether NumPy had already loaded OpenBLAS."""
    if value_before is None:
        return not numpy_loaded_before  # npw2v2's value, if OpenBLAS was not yet loaded
    return value_before.strip().isdigit() and int(value_before) <= LONGEST_SHORT_SPIN_LOG2


IDLE_THREADS_SLEEP = idle_threads_sleep(os.environ.get(VARIABLE), "numpy" in sys.modules)
os.environ.setdefault(VARIABLE, str(SPIN_CYCLES_LOG2))
