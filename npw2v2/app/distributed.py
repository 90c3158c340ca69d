"""Corpus scale: transcribe and embed on a Ray cluster, or a local Ray runtime, with Ray Data.

The local path reads every file, then runs them in padded batches of similar length in one
process. Here the same steps are spread over the cores of a cluster:

1. probe   Ray tasks read the files' headers: each file's length at the model's rate.
2. plan    the driver groups the files into batches of similar length with
           ``audio.batches_by_length``, as the local path does; a long file is a batch of its own.
3. read    Ray tasks read and resample each batch's audio (``pipeline.prepare``).
4. model   an actor pool (``map_batches`` with a callable class): each actor loads the model
           once and runs ``pipeline.transcribe_prepared`` or ``embed_prepared`` on whole batches.
5. results stream back to the driver batch by batch, as they finish.

A row of the dataset is a whole batch, so the model sees the batches it sees on one
machine and gives the same results. Ray retries the batches of a worker that dies. A bad
file becomes an error result, as on the local path, never a failed job. Every machine must
reach the audio files and the model at the same paths (shared storage).

The record of a run in its output folder, so that a rerun skips what is done, is npw2v2.app.journal.
Ray is imported only when one of these functions runs: npw2v2 does not need it otherwise.
"""
from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, NamedTuple

import numpy as np

from ..io import audio
from . import pipeline
from .model import load_model

PROBE_FILES = 256  # files per header-reading task: a header costs little, a task more
MAX_BLOCKS = 1000  # dataset blocks: enough to spread the reading, few enough to schedule cheaply
# An actor leaves a quarter of its core to the reading tasks: with whole cores, actors on
# every core would leave the reading unscheduled, waiting for them forever.
READ_CPUS = 0.25
MODEL_CPUS = 1 - READ_CPUS


class RayUnavailable(RuntimeError):
    """Ray is not installed, so the ray engine cannot run."""


class Finished(NamedTuple):
    """One finished batch: (index into the files, result) pairs, and the audio warnings its reading gave."""

    results: list
    warnings: list[str]


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable('the ray engine needs Ray: pip install "npw2v2[ray]"') from None
    return ray


def check_address(address: str | None) -> None:
    """Refuse a Ray Client address: Ray Data's executor needs a driver inside the cluster (Ray 2.60)."""
    if address and address.startswith("ray://"):
        raise ValueError(f"Ray Data does not run through Ray Client ({address}): run npw2v2 on a machine of "
                         "the cluster, with --address auto")


@contextmanager
def runtime(address: str | None = None):
    """Join the Ray cluster at ``address`` (``auto``: the one this machine belongs to, or HOST:PORT of
    its head), or start a local runtime.

    A runtime that is already running in this process (a notebook's, a test's) is used and
    left running; one started or joined here is shut down on the way out.
    """
    check_address(address)
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # "local" always starts a fresh runtime, rather than joining one found on this machine
    ray.init(address=address or "local", include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()


def quiet(ray) -> None:
    """No progress bars, execution plans or notices of Ray's own deprecations: npw2v2 reports its progress."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="ray")  # first: making the context warns
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------
# What runs in Ray tasks and actors


def probe(rows: dict, rate: int) -> dict:
    """Lengths at ``rate`` from the files' headers; -1 and the reason for a file that cannot be opened.

    rows: {"index": [N], "path": [N]} -> the same with "samples" [N] and "error" [N].
    """
    samples, errors = [], []
    for path in rows["path"]:
        try:
            samples.append(audio.info(path).samples_at(rate))
            errors.append("")
        except audio.AudioError as e:
            samples.append(-1)
            errors.append(str(e))
    return {**rows, "samples": np.array(samples, np.int64), "error": np.array(errors, dtype=object)}


def read(row: dict, rate: int, min_samples: int, chunk: int) -> dict:
    """Read and resample one batch's files, keeping the audio warnings to report on the driver.

    {"indices", "paths"} -> {"payload": pickled (indices, prepared inputs, warning messages)}.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", audio.AudioWarning)
        items = pipeline.prepare(list(row["paths"]), rate, min_samples, chunk, errors="keep")
    said = [str(w.message) for w in caught if issubclass(w.category, audio.AudioWarning)]
    return {"payload": pickle.dumps((list(row["indices"]), items, said))}


class ModelWorker:
    """An actor of the pool: loads the model once, then runs whole batches that ``read`` prepared.

    ``configured`` makes a subclass holding the model's name and the options, so that the
    actor takes no constructor arguments: Ray keeps those in the object store, and an actor
    restarted after their loss could not start again.
    """

    model_name: ClassVar[str] = ""
    options: ClassVar[dict] = {}

    @classmethod
    def configured(cls, model_name: str, options: dict) -> type:
        return type(cls.__name__, (cls,), {"model_name": model_name, "options": options})

    def __init__(self):
        self.model, _ = load_model(self.model_name)

    def __call__(self, batch: dict) -> dict:
        """{"payload": [B] pickled batches} -> {"results": [B] pickled Finished}."""
        out = []
        for payload in batch["payload"]:
            indices, items, said = pickle.loads(payload)
            out.append(pickle.dumps(Finished(list(zip(indices, self.run(self.model, items, self.options))), said)))
        return {"results": np.array(out, dtype=object)}  # bytes: never nested by numpy


class Transcriber(ModelWorker):
    def __init__(self):
        super().__init__()
        beam = self.options.get("beam")  # each worker reads the language model once
        self.options = {**self.options, "decoder": self.model.beam_decoder(**beam) if beam else None}

    @staticmethod
    def run(model, items, options) -> list:
        return pipeline.transcribe_prepared(model, items, options["batch_size"], options["timestamps"],
                                            options["chunk"], options["stride"], errors="keep",
                                            decoder=options.get("decoder"))


class Embedder(ModelWorker):
    @staticmethod
    def run(model, items, options) -> list:
        return pipeline.embed_prepared(model, items, options["layers"], options["batch_size"],
                                       options.get("final_proj", False))


# ---------------------------------------------------------------------------
# The driver


def plan(samples: list[int], batch_size: int, chunk: int) -> list[list[int]]:
    """Batches of positions in ``samples``: similar lengths together as on the local path; a long input alone."""
    short = [i for i, n in enumerate(samples) if n <= chunk]
    batches = [[short[j] for j in group] for group in audio.batches_by_length([samples[i] for i in short], batch_size)]
    return batches + [[i] for i, n in enumerate(samples) if n > chunk]


def batch_rows(worker: type[ModelWorker], model, files: list[str], samples: list[int], errors: list[str],
               options: dict, chunk: int) -> tuple[Finished, list[dict]]:
    """The unreadable files' error results, and the batches to run as rows {"indices", "paths"}.

    ``samples`` and ``errors``: each file's length and error message, as ``probe`` gives them.
    """
    bad = [i for i, e in enumerate(errors) if e]
    failed = [pipeline._Input(files[i], 0, error=errors[i]) for i in bad]  # the worker's run makes them results
    good = [i for i, e in enumerate(errors) if not e]
    batches = [[good[j] for j in batch] for batch in plan([samples[i] for i in good], options["batch_size"], chunk)]
    rows = [{"indices": b, "paths": [files[i] for i in b]} for b in batches]
    return Finished(list(zip(bad, worker.run(model, failed, options))) if bad else [], []), rows


def headers(ray, files: list[str], rate: int) -> tuple[list[int], list[str]]:
    """Every file's length at ``rate`` (-1 when unreadable) and error message ("" when fine), read in Ray tasks."""
    rows = ray.data.from_items([{"index": i, "path": f} for i, f in enumerate(files)],
                               override_num_blocks=max(1, min(MAX_BLOCKS, -(-len(files) // PROBE_FILES))))
    probed = sorted(rows.map_batches(probe, fn_kwargs={"rate": rate}, batch_size=None).take_all(),
                    key=lambda row: row["index"])
    return [int(row["samples"]) for row in probed], [row["error"] for row in probed]


def run(worker: type[ModelWorker], model, model_name: str, files: list[str], options: dict, chunk: int,
        workers: int | None = None, address: str | None = None) -> Iterator[Finished]:
    """Results of ``worker`` over ``files``, a Finished per batch, in the order the batches finish.

    ``model`` is ``model_name`` loaded on the driver, which needs its rate and frame sizes.
    """
    if not files:  # all done already: no need to start Ray
        return
    rate, min_samples = model.sampling_rate, model.config.receptive_field
    with runtime(address) as ray:
        quiet(ray)
        failed, rows = batch_rows(worker, model, files, *headers(ray, files, rate), options, chunk)
        if failed.results:
            yield failed
        if not rows:
            return
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = ray.data.ActorPoolStrategy(size=min(size, len(rows)))
        results = (ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
                   .map(read, fn_kwargs={"rate": rate, "min_samples": min_samples, "chunk": chunk},
                        num_cpus=READ_CPUS)
                   .map_batches(worker.configured(model_name, options), batch_size=1, compute=pool,
                                num_cpus=MODEL_CPUS))
        for row in results.iter_rows():
            yield pickle.loads(row["results"])


def transcribe(model_name: str, files: list[str], batch_size: int = 8, timestamps: bool = False,
               chunk_seconds: float = pipeline.DEFAULT_CHUNK_SECONDS, workers: int | None = None,
               address: str | None = None, worker: type[ModelWorker] = Transcriber,
               beam: dict | None = None) -> Iterator[Finished]:
    """Transcriptions of ``files`` as pipeline.transcribe makes them, a Finished per batch, as batches finish.

    ``workers`` actors each hold the model (default: one per CPU of the cluster), and with
    ``beam`` (Wav2Vec2.beam_decoder's arguments: an LM path the workers can read) a beam search.
    """
    model, options = transcribe_options(model_name, batch_size, timestamps, chunk_seconds, beam)
    return run(worker, model, model_name, files, options, options["chunk"], workers, address)


def transcribe_options(model_name: str, batch_size: int, timestamps: bool, chunk_seconds: float,
                       beam: dict | None) -> tuple:
    """The model loaded here first (a wrong model or LM fails before any worker starts), and the
    Transcriber's options."""
    model, _ = load_model(model_name)
    pipeline.check_can_transcribe(model)
    if beam:
        model.beam_decoder(**beam)  # a bad LM file or setting fails here, not in every worker
    chunk, stride = pipeline.chunking(model, chunk_seconds)
    return model, {"batch_size": batch_size, "timestamps": timestamps, "chunk": chunk, "stride": stride, "beam": beam}


def embed(model_name: str, files: list[str], layers=None, batch_size: int = 8, workers: int | None = None,
          address: str | None = None, worker: type[ModelWorker] = Embedder,
          final_proj: bool = False) -> Iterator[Finished]:
    """Hidden states of ``files`` as pipeline.embed makes them ([len(layers), T_i, D] or AudioError), per batch."""
    model, _ = load_model(model_name)
    pipeline.check_layers(model, layers)
    pipeline.check_final_proj(model, final_proj)
    options = {"batch_size": batch_size, "layers": layers, "final_proj": final_proj}
    return run(worker, model, model_name, files, options, pipeline.WHOLE, workers, address)
