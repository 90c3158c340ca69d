"""--engine ray against the local engine on this machine: the same transcripts, a resumed run, throughput.

    python golden/bench_ray.py [--files 250] [--rounds 2] [--work DIR]

Needs npw2v2[ray]. Builds the corpus of tests/corpus.py (FLAC and WAV at three rates, long
files, clipped files, and four bad files), then runs the npw2v2 command on it:

1. the ray engine, interrupted with Ctrl-C once a third of the files are written, then run
   again to the end in the same folder: it must say it resumes, and write only the rest;
2. rounds of the local engine and the ray engine, whole corpus, fresh folders, timed;

and checks that every ray run wrote what the local engine wrote, file for file. Throughput
is hours of (good) audio per hour of wall-clock time of the whole command, start-up included.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import corpus  # tests/corpus.py

OPTIONS = ["-f", "json", "--timestamps", "--chunk-seconds", "2"]


def npw2v2(folder: Path, out: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "npw2v2", "transcribe", str(folder), *OPTIONS, "-o", str(out),
                             *more], cwd=ROOT, stderr=subprocess.PIPE, text=True)


def timed(folder: Path, out: Path, *more: str) -> tuple[float, str]:
    start = time.perf_counter()
    run = npw2v2(folder, out, *more)
    _, err = run.communicate()
    assert run.returncode == 1, err  # 1: the bad files
    return time.perf_counter() - start, err


def outputs(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.glob("*.json") if not p.name.startswith("npw2v2-")}


def interrupted_then_resumed(folder: Path, out: Path, total: int, expected: dict) -> None:
    """Ctrl-C once a third of the files are written, then the same command again."""
    run = npw2v2(folder, out, "--engine", "ray")
    while len(outputs(out) if out.exists() else {}) < total // 3 and run.poll() is None:
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate()
    before = len(outputs(out))
    print(f"interrupted: exit status {run.returncode}, {before} of {total} files written; last line: "
          f"{err.strip().splitlines()[-1] if err.strip() else ''}")
    seconds, err = timed(folder, out, "--engine", "ray")
    resumed = [line for line in err.splitlines() if "resuming" in line or "wrote" in line]
    print("rerun:", *resumed, sep="\n  ")
    assert outputs(out) == expected, "the resumed run differs from the local engine's output"
    print(f"resumed run: the same {len(expected)} files as the local engine, in {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=250, help="good files (the four bad ones come on top)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/npw2v2-bench-ray"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    folder = args.work / "corpus"
    good, bad = corpus.build(folder, args.files)
    total = len(good) + len(bad)

    _, err = timed(folder, args.work / "local")
    expected = outputs(args.work / "local")
    hours = sum(json.loads(text)["seconds"] for text in expected.values()) / 3600
    print(f"corpus: {len(good)} good files ({hours * 60:.1f} minutes of audio) and {len(bad)} bad; "
          f"local engine: {len(expected)} files written, {err.count('npw2v2: error:')} errors")

    interrupted_then_resumed(folder, args.work / "resumed", total, expected)

    times: dict[str, list[float]] = {"local": [], "ray": []}
    for k in range(args.rounds):
        for engine, runs in times.items():
            out = args.work / f"{engine}-{k}"
            seconds, _ = timed(folder, out, "--engine", engine)
            assert outputs(out) == expected, f"{engine} round {k} differs from the local engine's output"
            runs.append(seconds)
    for engine, runs in times.items():
        median = statistics.median(runs)
        print(f"{engine:>5}: {', '.join(f'{s:.1f}' for s in runs)} s, median {median:.1f} s = "
              f"{hours * 3600 / median:.0f} audio-hours per hour")


if __name__ == "__main__":
    main()
