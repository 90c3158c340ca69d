"""A careless or hostile user's inputs: every one a clear error line or the right result, nothing lost.

Each case builds its files in the test, runs the command as a user would (a fresh process),
and checks: the exit status; one ``error:`` line naming the file and the reason; no Python
traceback; every input byte for byte as it was; bounded time and memory.
"""
import hashlib
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "npw2v2" / "bundled" / "digits.safetensors"
CLIP = ROOT / "npw2v2" / "bundled" / "examples" / "eight.flac"
AS_ROOT = os.geteuid() == 0  # root reads and writes through any permission bits
TIME_LIMIT = 60  # seconds any of these may take; a hang is killed and fails
MEMORY_LIMIT_MB = 1500  # peak resident memory of the process


@dataclass
class Run:
    status: int
    out: str
    err: str
    seconds: float
    peak_mb: float

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if ": error:" in line]


# The child reports its peak resident memory from /proc (VmHWM): getrusage's ru_maxrss would keep
# the forking pytest process's peak across exec.
CHILD = """import sys
from {module} import main
status = 0
try:
    status = main(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code
finally:
    peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print("peak-kib", peak, file=sys.stderr)
sys.exit(status)
"""


def run(*args, command="npw2v2", cwd=None) -> Run:
    """The command in a fresh process: its status, output, seconds and peak memory."""
    module = "npw2v2.app.cli" if command == "npw2v2" else "convert.cli"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD.format(module=module), *map(str, args)], capture_output=True,
                          text=True, timeout=TIME_LIMIT, cwd=cwd or ROOT, env=env)
    seconds = time.perf_counter() - start
    err, _, peak = done.stderr.rpartition("peak-kib ")
    return Run(done.returncode, done.stdout, err, seconds, int(peak.split()[0]) / 1024)


def fingerprints(*paths) -> dict:
    """sha256 of every regular file under the paths, to prove they were left as they were."""
    files = []
    for path in map(Path, paths):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def refused(result: Run, status: int, *words: str) -> None:
    """The run ended with ``status`` and one error line holding every word; no traceback."""
    assert result.status == status, (result.status, result.err)
    assert "Traceback" not in result.err, result.err
    assert len(result.errors) == 1, result.err
    for word in words:
        assert word in result.errors[0], (word, result.errors[0])
    assert result.peak_mb < MEMORY_LIMIT_MB, result.peak_mb


@pytest.fixture
def folder(tmp_path):
    """A working folder with the bundled model and one good clip, a.flac."""
    (tmp_path / "a.flac").write_bytes(CLIP.read_bytes())
    (tmp_path / "m.safetensors").write_bytes(MODEL.read_bytes())
    return tmp_path


def wav_header(rate: int, frames: int, channels: int = 1) -> bytes:
    """A 16-bit PCM RIFF WAV header whose rate field says ``rate``."""
    data = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            rate * channels * 2, channels * 2, 16) + b"data" + struct.pack("<I", data))


# ---------------------------------------------------------------------------
# Outputs are sacred


def test_embed_never_replaces_the_model(folder):
    before = fingerprints(folder)
    result = run("embed", folder / "a.flac", "-m", folder / "m.safetensors", "-o", folder / "m.safetensors")
    refused(result, 2, "m.safetensors", "one of the inputs")
    assert fingerprints(folder) == before


def test_embed_never_replaces_an_audio_input(folder):
    (folder / "clip.npy").write_bytes(CLIP.read_bytes())  # audio, whatever its name says
    before = fingerprints(folder)
    refused(run("embed", folder / "clip.npy", "-m", folder / "m.safetensors", "-o", folder / "clip.npy"), 2,
            "clip.npy", "one of the inputs")
    assert fingerprints(folder) == before


@pytest.mark.parametrize("target, words", [
    ("missing/x.safetensors", ["no folder", "missing"]),
    ("sub", ["a folder"]),
])
def test_embed_output_is_checked_before_any_work(folder, target, words):
    (folder / "sub.safetensors").mkdir()
    out = folder / (target if target != "sub" else "sub.safetensors")
    result = run("embed", folder / "a.flac", "-m", folder / "m.safetensors", "-o", out)
    refused(result, 2, *words)
    assert "wrote" not in result.err


def test_converter_never_replaces_its_source(folder):
    before = fingerprints(folder)
    refused(run(folder / "m.safetensors", folder / "m.safetensors", command="convert"), 1, "one of the inputs")
    source = ROOT / "golden" / "data" / "tiny_ctc"
    kept = fingerprints(source)
    refused(run(source, source / "model.safetensors", command="convert"), 1, "model.safetensors", "one of the inputs")
    assert fingerprints(folder) == before and fingerprints(source) == kept


@pytest.mark.parametrize("target, words", [("missing/out.safetensors", ["no folder"]), (".", ["a folder"])])
def test_converter_output_is_checked_before_reading(folder, target, words):
    refused(run(ROOT / "golden" / "data" / "tiny_ctc", folder / target, command="convert"), 1, *words)


def test_explain_save_is_checked_before_any_work(folder):
    refused(run("explain", "--samples", "800", "--save", folder / "missing" / "x.safetensors"), 2, "--save",
            "no folder")
    refused(run("explain", "-m", folder / "m.safetensors", "--save", folder / "m.safetensors"), 2,
            "one of the inputs")


def test_transcribe_output_folder_that_is_a_file(folder):
    (folder / "out").write_text("a file")
    refused(run("transcribe", folder / "a.flac", "-o", folder / "out"), 2, "--output", "not a folder")
    assert (folder / "out").read_text() == "a file"


def test_an_output_name_too_long_is_that_files_error_and_the_others_are_written(folder):
    long_name = folder / ("x" * 250 + ".wav")  # its .json (and .json.partial) name is too long
    sf.write(long_name, sf.read(CLIP)[0], 16000)
    before = fingerprints(folder)
    result = run("transcribe", long_name, folder / "a.flac", "-f", "json", "-o", folder / "out")
    assert result.status == 1 and "Traceback" not in result.err
    assert len(result.errors) == 1 and "longer than the file system allows" in result.errors[0]
    assert [p.name for p in (folder / "out").iterdir()] == ["a.json"]
    assert fingerprints(folder / "a.flac", long_name) == {k: v for k, v in before.items() if k.parent == folder
                                                          and k.suffix != ".safetensors"}


@pytest.mark.skipif(AS_ROOT, reason="root writes through any permission bits")
def test_read_only_output_folder_is_refused_before_any_work(folder):
    out = folder / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        refused(run("transcribe", folder / "a.flac", "-o", out), 2, "permission denied")
    finally:
        out.chmod(0o755)


def test_outputs_get_the_users_umask(folder):
    code = ("import os, sys; os.umask(0o027); from npw2v2.app.cli import main; "
            f"sys.exit(main(['embed', {str(folder / 'a.flac')!r}, '-m', {str(MODEL)!r}, '-o', "
            f"{str(folder / 'f.safetensors')!r}, '-q']))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT, timeout=TIME_LIMIT)
    assert stat.S_IMODE((folder / "f.safetensors").stat().st_mode) == 0o640
    assert not list(folder.glob("*.partial"))


# ---------------------------------------------------------------------------
# Odd files: refused by name, never a hang


def test_named_pipe_given_by_name_is_refused_without_a_hang(folder):
    os.mkfifo(folder / "pipe.wav")
    result = run("transcribe", folder / "pipe.wav", folder / "a.flac")
    assert result.status == 1 and result.seconds < TIME_LIMIT
    assert result.out == "EIGHT\n"
    assert len(result.errors) == 1 and "pipe.wav: a named pipe" in result.errors[0]


def test_named_pipe_in_a_folder_is_passed_over(folder):
    os.mkfifo(folder / "pipe.wav")
    result = run("transcribe", folder)
    assert result.status == 0 and result.out == "EIGHT\n" and not result.errors


def test_a_device_is_refused_by_name():
    refused(run("transcribe", "/dev/zero"), 1, "/dev/zero: a device")


@pytest.mark.parametrize("rate", [1, 999, 2_000_000])
def test_implausible_rate_in_a_header_is_refused_at_once(folder, rate):
    path = folder / "rate.wav"
    path.write_bytes(wav_header(rate, 21000) + bytes(42000))  # 42 KB: 5.8 hours at 1 Hz
    before = fingerprints(path)
    for command in (["transcribe", path], ["embed", path, "-m", folder / "m.safetensors", "-o", folder / "e.npy"]):
        result = run(*command)
        refused(result, 1, "rate.wav", f"says {rate} Hz")
        assert result.seconds < 30
    assert fingerprints(path) == before and not (folder / "e.npy").exists()


@pytest.mark.parametrize("chunk", [None, "1"], ids=["read-whole", "in-windows"])
def test_nan_is_reported_where_it_is(folder, chunk):
    x = 0.1 * np.sin(np.arange(48000) / 9.0)
    x[24000:24010] = np.nan  # 1.50 s at 16 kHz
    sf.write(folder / "nan.wav", x.astype(np.float32), 16000, subtype="FLOAT")
    result = run("transcribe", folder / "nan.wav", *(["--chunk-seconds", chunk] if chunk else []))
    refused(result, 1, "nan.wav", "NaN or infinite", "the first at 1.50 s")


def test_clipping_is_warned_of_on_long_files_too(folder):
    x = np.clip(3.0 * np.sin(np.arange(48000) / 9.0), -1, 1)
    sf.write(folder / "loud.wav", x.astype(np.float32), 16000, subtype="FLOAT")
    for chunk in ("20", "1"):  # read whole; in windows
        result = run("transcribe", folder / "loud.wav", "--chunk-seconds", chunk)
        assert result.status == 0 and "loud.wav" in result.err and "clipped" in result.err, (chunk, result.err)


def test_an_empty_name_does_not_search_the_current_folder(folder):
    refused(run("transcribe", "", cwd=folder), 2, "empty path")


@pytest.mark.skipif(AS_ROOT, reason="root reads through any permission bits")
def test_unreadable_file_names_the_cause(folder):
    (folder / "a.flac").chmod(0)
    try:
        refused(run("transcribe", folder / "a.flac"), 1, "a.flac", "permission denied")
    finally:
        (folder / "a.flac").chmod(0o644)


def test_a_folder_named_like_a_built_in_architecture_is_the_model(folder):
    (folder / "base").mkdir()
    refused(run("explain", "-m", "base", "--samples", "800", cwd=folder), 2, "base", "no config.json")


# ---------------------------------------------------------------------------
# Options


@pytest.mark.parametrize("args, option", [
    (["transcribe", "{clip}", "--batch-size", "-1"], "--batch-size"),
    (["transcribe", "{clip}", "--batch-size", "0"], "--batch-size"),
    (["embed", "{clip}", "-m", "{model}", "-o", "x.npy", "--batch-size", "-3"], "--batch-size"),
    (["classify", "{clip}", "-m", "{model}", "--batch-size", "1.5"], "--batch-size"),
    (["classify", "{clip}", "-m", "{model}", "--top-k", "0"], "--top-k"),
    (["transcribe", "{clip}", "--chunk-seconds", "inf"], "--chunk-seconds"),
    (["transcribe", "{clip}", "--chunk-seconds", "nan"], "--chunk-seconds"),
    (["transcribe", "{clip}", "--chunk-seconds", "0"], "--chunk-seconds"),
    (["transcribe", "{clip}", "--engine", "ray", "--workers", "0", "-o", "out"], "--workers"),
    (["explain", "--seconds", "-1"], "--seconds"),
    (["explain", "--samples", "0"], "--samples"),
    (["explain", "--seed", "-1"], "--seed"),
    (["compare", "{model}", "{model}", "--tolerance", "-0.1"], "--tolerance"),
    (["compare", "{model}", "{model}", "--tolerance", "nan"], "--tolerance"),
    (["bench", "--runs", "0"], "--runs"),
    (["bench", "--warmup", "-1"], "--warmup"),
    (["bench", "--seconds", "inf"], "--seconds"),
])
def test_every_numeric_option_is_checked_with_its_name(args, option):
    result = run(*[a.format(clip=CLIP, model=MODEL) for a in args])
    assert result.status == 2 and "Traceback" not in result.err
    assert f"argument {option}" in result.err, result.err


def test_timestamps_with_text_output_says_it_does_nothing():
    refused(run("transcribe", CLIP, "--timestamps"), 2, "--timestamps", "json")


def test_version():
    result = run("--version")
    assert result.status == 0 and result.out.startswith("npw2v2 ")


# ---------------------------------------------------------------------------
# Streams: a reader that goes away, an interrupted run


def test_a_reader_that_goes_away_ends_the_run_quietly(folder):
    clips = folder / "clips"
    clips.mkdir()
    for i in range(80):
        (clips / f"{i:03d}.flac").write_bytes(CLIP.read_bytes())
    child = subprocess.Popen([sys.executable, "-m", "npw2v2", "transcribe", clips], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert child.stdout.readline() == "EIGHT\n"
    child.stdout.close()  # as `| head -1` does
    err = child.stderr.read()
    assert child.wait(timeout=TIME_LIMIT) == 141
    assert "Traceback" not in err and "Broken pipe" not in err and "BrokenPipeError" not in err, err


def test_transcripts_come_out_as_they_finish_so_an_interrupted_run_keeps_them(folder):
    clips = folder / "clips"
    clips.mkdir()
    for i in range(200):
        (clips / f"{i:03d}.flac").write_bytes(CLIP.read_bytes())
    child = subprocess.Popen([sys.executable, "-m", "npw2v2", "transcribe", clips, "-f", "tsv"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    first = child.stdout.readline()  # the first group is done: interrupt the rest
    child.send_signal(signal.SIGINT)
    rest, err = child.communicate(timeout=TIME_LIMIT)
    lines = [first, *rest.splitlines(keepends=True)]
    assert first.startswith(str(clips / "000.flac")) and first.rstrip().endswith("EIGHT")
    assert child.returncode in (0, 130) and "Traceback" not in err
    if child.returncode == 130:
        assert "interrupted" in err and len(lines) < 200


# ---------------------------------------------------------------------------
# Progress: on a terminal only, silenced by --quiet


def run_in_terminal(*args) -> tuple[int, str]:
    """The command with its stderr on a pseudo-terminal: (status, what the terminal showed)."""
    import pty

    controller, terminal = pty.openpty()
    child = subprocess.Popen([sys.executable, "-m", "npw2v2", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=terminal, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child is gone and the terminal closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return child.wait(timeout=TIME_LIMIT), shown.decode(errors="replace")


def test_progress_shows_on_a_terminal_for_many_files_and_long_ones(folder):
    clips = folder / "clips"
    clips.mkdir()
    for i in range(3):
        (clips / f"{i}.flac").write_bytes(CLIP.read_bytes())
    status, shown = run_in_terminal("transcribe", clips)
    assert status == 0 and "3/3 files" in shown
    sf.write(folder / "long.wav", 0.1 * np.sin(np.arange(16000 * 12) / 9.0).astype(np.float32), 16000)
    status, shown = run_in_terminal("transcribe", folder / "long.wav", "--chunk-seconds", "3")
    assert status == 0 and "long.wav: window 1/" in shown and "1/1 files" in shown
    status, shown = run_in_terminal("explain", "--samples", "800")
    assert status == 0 and "stages" in shown and "hidden_states.12" in shown


def test_quiet_silences_progress(folder):
    status, shown = run_in_terminal("transcribe", folder / "a.flac", folder / "a.flac", "--quiet")
    assert status == 0 and "files," not in shown


# ---------------------------------------------------------------------------
# In-process: what a subprocess cannot show here (root, an interrupt at a chosen moment)


def test_embed_interrupted_writes_the_features_of_the_files_done(folder, monkeypatch, capsys):
    from npw2v2.app import cli, pipeline

    finish = pipeline.embed_each

    def two_then_ctrl_c(model, files, *args, **kwargs):
        for k, pair in enumerate(finish(model, files, *args, **kwargs)):
            yield pair
            if k == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "embed_each", two_then_ctrl_c)
    clips = [folder / f"{i}.flac" for i in range(4)]
    for clip in clips:
        clip.write_bytes(CLIP.read_bytes())
    out = folder / "f.safetensors"
    assert cli.main(["embed", *map(str, clips), "-m", str(MODEL), "-o", str(out)]) == 130
    from safetensors.numpy import load_file

    assert list(load_file(str(out))) == [str(clips[0]), str(clips[1])]
    err = capsys.readouterr().err
    assert "interrupted: wrote the features of the 2 of 4 files done" in err and "Traceback" not in err


def test_unwritable_places_are_named(folder, monkeypatch):
    from npw2v2.io import outputs

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)  # as a user without write permission
    assert "permission denied" in outputs.output_problem(folder / "x.safetensors")
    assert "permission denied" in outputs.folder_problem(folder / "new" / "deeper")
    assert "permission denied" in outputs.folder_problem(folder)


def test_a_config_that_is_not_an_object_is_one_line(folder):
    bad = folder / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("[1, 2]")
    (bad / "model.safetensors").write_bytes(MODEL.read_bytes())
    refused(run("transcribe", folder / "a.flac", "-m", bad), 2, "config.json", "JSON object")


def test_explain_refuses_a_batch_too_large_to_keep_every_stage_of():
    result = run("explain", "--samples", "100000000")
    refused(result, 2, "at most 120 s of padded audio", "1 x 6250.0 s")
    assert result.seconds < 30


def test_running_out_of_memory_is_one_line(monkeypatch, capsys):
    from npw2v2.app import cli

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 38.1 GiB for an array")

    monkeypatch.setattr(cli, "load_model", too_big)
    assert cli.main(["explain", "--samples", "800"]) == 2
    err = capsys.readouterr().err
    assert err == "npw2v2: error: not enough memory (Unable to allocate 38.1 GiB for an array)\n"
