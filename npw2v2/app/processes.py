"""One process per core on this machine: `npw2v2 transcribe --processes N`.

One process runs its matrix products on every core, and the cores wait for each other at the
end of each product and through the element-wise work between them. N worker processes of
one BLAS thread each keep every core busy instead: on 2 cores, a folder of 1-20 s files went
through 1.2 to 1.4 times faster than with one process on two threads (docs/performance.md).

The steps are the ray engine's (npw2v2.app.distributed), on a local process pool: the driver
reads the files' headers and makes the batches the local path makes; each worker loads the
model once (a Transcriber), then reads and runs whole batches as it frees up; the results
come back batch by batch, as they finish. A worker that dies ends the run with an error.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from . import distributed
from .distributed import Finished, Transcriber

# Read by OpenBLAS (NumPy's), OpenMP and MKL when a worker starts and imports NumPy.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_worker = None  # in a worker process: its Transcriber, which holds the model
# At least this many batches a worker (smaller ones than --batch-size if need be): the last
# batches then end close together. The results do not depend on the batches (the local path
# runs a padded batch's items each over its own frames).
BATCHES_PER_WORKER = 4


class WorkerDied(RuntimeError):
    """A worker process ended before its batch was done (killed, or out of memory)."""


def _start_worker(model_name: str, options: dict) -> None:
    global _worker
    _worker = Transcriber.configured(model_name, options)()


def _run_batch(row: dict, rate: int, min_samples: int, chunk: int) -> bytes:
    """One batch, read and run in a worker: a pickled Finished."""
    payload = distributed.read(row, rate, min_samples, chunk)["payload"]
    return _worker({"payload": [payload]})["results"][0]


@contextmanager
def one_blas_thread():
    """The environment that processes started inside it inherit: one BLAS thread each."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def transcribe(model_name: str, files: list[str], processes: int, batch_size: int = 8, timestamps: bool = False,
               chunk_seconds: float = 20.0, beam: dict | None = None) -> Iterator[Finished]:
    """Transcriptions of ``files`` as pipeline.transcribe makes them, a Finished per batch, as batches finish,
    from ``processes`` worker processes; batches of ``batch_size`` files or fewer (BATCHES_PER_WORKER)."""
    # The batches are the workers' units of work: a few for each, so that they finish together.
    batch_size = max(1, min(batch_size, len(files) // (BATCHES_PER_WORKER * processes)))
    model, options = distributed.transcribe_options(model_name, batch_size, timestamps, chunk_seconds, beam)
    rate, min_samples = model.sampling_rate, model.config.receptive_field
    probed = distributed.probe({"index": list(range(len(files))), "path": files}, rate)
    failed, rows = distributed.batch_rows(Transcriber, model, files, list(probed["samples"]), list(probed["error"]),
                                          options, options["chunk"])
    if failed.results:
        yield failed
    if not rows:
        return
    with one_blas_thread():  # the workers start as the batches are handed out
        pool = ProcessPoolExecutor(min(processes, len(rows)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(model_name, options))
        batches = [pool.submit(_run_batch, row, rate, min_samples, options["chunk"]) for row in rows]
    try:
        for batch in as_completed(batches):
            yield pickle.loads(batch.result())
    except BrokenProcessPool:
        raise WorkerDied("a worker process ended before its batch was done (killed, or out of memory?)") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
