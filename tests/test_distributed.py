"""--engine ray: the local engine's output, file for file, from a local Ray runtime of 2 CPUs.

Errors stay rows, a rerun skips the files done, and a worker that dies has its batch retried.
"""
import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'npw2v2[ray]' (CI installs it)")

import corpus  # beside the tests

import npw2v2
from npw2v2.app import distributed, journal
from npw2v2.app.cli import BUNDLED_LM, DEFAULT_MODEL, main

# Workers unpickle the test's dying worker class: send it by value, as its module is not installed.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# chunk 2 s: the long/ files (about 6 s) run in windows; batches of 3: several batches per run
OPTIONS = ["-f", "json", "--timestamps", "--chunk-seconds", "2", "--batch-size", "3"]


@pytest.fixture(scope="module")
def runtime():
    """One local Ray runtime for the module; the engine uses it and leaves it running."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    good, bad = corpus.build(folder, 12)
    return folder, good, bad


@pytest.fixture(scope="module")
def runs(runtime, mixed, tmp_path_factory):
    """The local and the ray engine over the mixed corpus: {engine: (exit status, output folder, stderr)}."""
    runs = {}
    for engine in ("local", "ray"):
        out = tmp_path_factory.mktemp(engine)
        with contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(["transcribe", str(mixed[0]), *OPTIONS, "-o", str(out), "--engine", engine])
        runs[engine] = status, out, err.getvalue()
    return runs


def run_cli(args, capsys) -> tuple[int, str]:
    status = main(args)
    return status, capsys.readouterr().err


def files_of(folder: Path) -> dict[str, str]:
    """The per-input outputs in a folder, by name: what the local engine writes."""
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith("npw2v2-")}


def lines(stderr: str, kind: str) -> set[str]:
    return {line for line in stderr.splitlines() if line.startswith(f"npw2v2: {kind}:")}


def test_ray_engine_writes_what_the_local_engine_writes(runs, mixed):
    (local_status, local_out, local_err), (ray_status, ray_out, ray_err) = runs["local"], runs["ray"]
    good, bad = mixed[1:]
    assert local_status == ray_status == 1  # the bad files
    local = files_of(local_out)
    assert len(local) == len(good) and "000-2.json" in local  # one per good file; clashing names numbered
    assert files_of(ray_out) == local
    assert lines(ray_err, "error") == lines(local_err, "error") and len(lines(ray_err, "error")) == len(bad)
    assert lines(ray_err, "warning") == lines(local_err, "warning") != set()  # the loud files
    assert "Traceback" not in ray_err


def test_journal_has_a_row_per_input_errors_included(runs, mixed):
    folder, good, bad = mixed
    out = runs["ray"][1]
    rows = journal.journal_rows(out)
    assert len(rows) == len(good) + len(bad)
    errors = {row["path"]: row["error"] for row in rows if "error" in row}
    assert sorted(errors) == sorted(map(str, bad))
    assert "NaN" in errors[str(folder / "bad" / "nan.wav")]  # found on reading, in a Ray task
    for row in rows:
        if "output" in row:
            assert (out / row["output"]).read_text().startswith('{"path": "' + row["path"])
            assert row["words"] and row["text"] == " ".join(w["word"] for w in row["words"])


def settings_of(folder: Path) -> dict:
    return json.loads((folder / journal.Journal.SETTINGS).read_text())


def test_rerun_skips_the_files_done(runs, mixed, tmp_path, capsys):
    folder, good, bad = mixed
    out = tmp_path / "out"
    shutil.copytree(runs["ray"][1], out)
    complete = files_of(out)
    # As if the run had been killed: two outputs never written, the journal's last line cut short
    lines = (out / journal.Journal.RESULTS).read_text().splitlines(keepends=True)
    done = [line for line in lines if "output" in json.loads(line)]
    kept, lost = done[:-2], done[-2:]
    (out / journal.Journal.RESULTS).write_text("".join(kept) + lines[-1][:20])
    for line in lost:
        (out / json.loads(line)["output"]).unlink()
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    status, err = run_cli(["transcribe", str(folder), *OPTIONS, "-o", str(out), "--engine", "ray"], capsys)
    assert status == 1
    assert f"resuming: {len(kept)} of {len(good) + len(bad)} files are already done" in err
    assert f"wrote {len(good) - len(kept)} files" in err  # the two lost ones, and nothing else
    assert files_of(out) == complete
    assert all(out.joinpath(name).stat().st_mtime_ns == t for name, t in written.items()
               if name.endswith(".json") and not name.startswith("npw2v2-"))


def test_ray_engine_beam_search_with_an_lm_writes_what_the_local_engine_writes(runtime, mixed, tmp_path_factory):
    """Each worker reads the LM itself; the settings go into the journal."""
    from golden import GOLDEN

    beam = ["--lm", str(BUNDLED_LM), "--hotwords", "SEVEN", "--beam-width", "20"]
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path_factory.mktemp(f"lm-{engine}")
        with contextlib.redirect_stderr(io.StringIO()):
            main(["transcribe", str(mixed[0]), *OPTIONS, *beam, "-o", str(out), "--engine", engine])
        outputs[engine] = out
    assert files_of(outputs["ray"]) == files_of(outputs["local"]) and len(files_of(outputs["local"])) >= 10
    settings = json.loads((outputs["ray"] / journal.Journal.SETTINGS).read_text())
    assert settings["beam"] == {"lm": beam[1], "beam_width": 20, "hotwords": ["SEVEN"]}


def test_rerun_with_other_settings_is_refused(runtime, mixed, tmp_path, capsys):
    folder = mixed[0]
    (tmp_path / journal.Journal.SETTINGS).write_text('{"command": "transcribe", "format": "tsv"}')
    status, err = run_cli(["transcribe", str(folder), "-o", str(tmp_path), "--engine", "ray"], capsys)
    assert status == 2 and "holds the results of a run with another" in err and "format" in err
    assert "Traceback" not in err


class DiesOnce(distributed.Transcriber):
    """A worker whose process dies on its first batch, as when a machine goes away."""

    marker: Path

    @classmethod
    def run(cls, model, items, options):
        if not cls.marker.exists():
            cls.marker.write_text(str(os.getpid()))
            os._exit(1)
        return distributed.Transcriber.run(model, items, options)


@pytest.mark.filterwarnings("ignore::npw2v2.io.audio.AudioWarning")  # the loud file, in the local reference run
def test_a_dead_workers_batch_is_retried(runtime, mixed, tmp_path):
    files = [str(p) for p in mixed[1][:6]]
    DiesOnce.marker = tmp_path / "died"
    batches = distributed.transcribe(str(DEFAULT_MODEL), files, batch_size=3, worker=DiesOnce, workers=1)
    results = dict(pair for batch in batches for pair in batch.results)
    assert DiesOnce.marker.exists()  # a worker did die
    expected = npw2v2.load(DEFAULT_MODEL).transcribe(files, batch_size=3)
    assert [results[i].text for i in range(len(files))] == [r.text for r in expected]


def test_embed_gives_the_local_features(runtime, mixed, tmp_path, capsys):
    from safetensors.numpy import load_file

    _, good, bad = mixed
    inputs = [str(p) for p in good[:4] + bad[:1]]
    args = ["embed", *inputs, "-m", str(DEFAULT_MODEL), "--layers", "1,3", "--batch-size", "3"]
    local_status, _ = run_cli([*args, "-o", str(tmp_path / "local.safetensors")], capsys)
    ray_status, err = run_cli([*args, "-o", str(tmp_path / "ray.safetensors"), "--engine", "ray"], capsys)
    assert local_status == ray_status == 1 and str(bad[0]) in err
    local, distributed_ = load_file(tmp_path / "local.safetensors"), load_file(tmp_path / "ray.safetensors")
    assert sorted(distributed_) == sorted(local) == sorted(inputs[:4])
    for name in local:
        # Ray workers run BLAS on one thread (OMP_NUM_THREADS=1): sums in another order, float noise
        np.testing.assert_allclose(distributed_[name], local[name], rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "ray.safetensors.parts").exists()  # merged, then removed

    shards = tmp_path / "shards"
    assert run_cli([*args, "-o", str(shards), "--engine", "ray"], capsys)[0] == 1
    rows = journal.journal_rows(shards)
    for row in rows:
        if "output" in row:
            np.testing.assert_allclose(load_file(shards / row["output"])[row["path"]], local[row["path"]],
                                       rtol=1e-5, atol=1e-5)
    assert sum("output" in row for row in rows) == 4
    shutil.rmtree(shards)
