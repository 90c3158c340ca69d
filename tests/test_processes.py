"""transcribe --processes N: the local engine's output, file for file, from worker processes of one BLAS thread."""
import contextlib
import io
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import corpus  # beside the tests

from npw2v2.app import processes
from npw2v2.app.cli import DEFAULT_MODEL, main

# chunk 2 s: the long/ files (about 6 s) run in windows; batches of 3: several batches per worker
OPTIONS = ["-f", "json", "--timestamps", "--chunk-seconds", "2", "--batch-size", "3"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    good, bad = corpus.build(folder, 12)
    return folder, good, bad


def transcribe_into(folder: Path, out: Path, *extra: str) -> tuple[int, str]:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        status = main(["transcribe", str(folder), *OPTIONS, "-o", str(out), *extra])
    return status, err.getvalue()


def files_of(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir()}


def lines(stderr: str, kind: str) -> set[str]:
    return {line for line in stderr.splitlines() if line.startswith(f"npw2v2: {kind}:")}


def test_processes_write_what_the_local_engine_writes(mixed, tmp_path):
    folder, good, bad = mixed
    local_status, local_err = transcribe_into(folder, tmp_path / "local")
    status, err = transcribe_into(folder, tmp_path / "processes", "--processes", "2")
    assert local_status == status == 1  # the bad files
    local = files_of(tmp_path / "local")
    assert len(local) == len(good) and "000-2.json" in local  # one per good file; clashing names numbered
    assert files_of(tmp_path / "processes") == local
    assert lines(err, "error") == lines(local_err, "error") and len(lines(err, "error")) == len(bad)
    assert lines(err, "warning") == lines(local_err, "warning") != set()  # the loud files, said by a worker
    assert "Traceback" not in err


def test_processes_print_the_transcripts_in_order(mixed, capsys):
    folder = mixed[0] / "flac16k"
    assert main(["transcribe", str(folder), "-f", "tsv"]) == 0
    local = capsys.readouterr().out
    assert main(["transcribe", str(folder), "-f", "tsv", "--processes", "2", "--batch-size", "1"]) == 0
    assert capsys.readouterr().out == local and local.count("\n") == 3


@pytest.mark.parametrize("extra", [["--engine", "ray"], ["--device", "cuda"], ["--language", "fra"]])
def test_processes_are_the_local_engine_on_this_machine(extra, mixed, capsys):
    assert main(["transcribe", str(mixed[0] / "flac16k"), "--processes", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert "--processes runs the local engine's worker processes" in err and "Traceback" not in err


def test_workers_start_with_one_blas_thread():
    context = multiprocessing.get_context("spawn")
    with processes.one_blas_thread(), ProcessPoolExecutor(1, mp_context=context) as pool:
        seen = pool.submit(os.getenv, "OPENBLAS_NUM_THREADS").result()
    assert seen == "1"


def test_the_environment_is_given_back(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with processes.one_blas_thread():
        assert os.environ["OPENBLAS_NUM_THREADS"] == os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7" and "OMP_NUM_THREADS" not in os.environ


def test_a_worker_that_dies_ends_the_run_with_an_error(mixed):
    files = [str(p) for p in mixed[1]]
    batches = processes.transcribe(str(DEFAULT_MODEL), files, processes=2, batch_size=1)
    next(batches)  # the workers are running
    for worker in multiprocessing.active_children():
        os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(processes.WorkerDied, match="worker process ended"):
        for _ in batches:
            pass
