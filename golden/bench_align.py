"""Forced alignment: npw2v2's time and memory against torchaudio's on the same log-probabilities.

Runs where torchaudio is installed beside npw2v2 (see golden/record_align.py for that environment):

    /work/venv-align/bin/python golden/bench_align.py            # about three minutes

Two workloads, on log-softmaxed random logits over a 32-token vocabulary (the aligner's work
does not depend on the values) and transcripts of one token every four frames (12.5 a second,
about the rate of English characters and word delimiters in speech):

- a batch of 16 items of 5 to 30 s: npw2v2 aligns the padded batch in one call, torchaudio
  (batch size 1 only) item by item; medians of ``--runs``, the two alternating;
- one hour (180,000 frames, 45,000 tokens): each run a fresh process, alternating, its time and
  its peak resident memory (and what the process held before aligning, emissions included).

Every run's paths are checked equal between the two.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

from npw2v2.app.align import forced_align, log_softmax

V = 32
TOKENS_PER_FRAME = 0.25
HOUR = 180_000  # frames of 20 ms
warnings.filterwarnings("ignore", message=".*forced_align has been deprecated.*")


def emissions(T: int, seed: int) -> np.ndarray:
    """log-softmax of random logits [T, V], the same for a seed in every process."""
    return log_softmax(np.random.default_rng(seed).standard_normal((T, V), dtype=np.float32) * 3)


def transcript(T: int, seed: int) -> np.ndarray:
    """A token every four frames, ids 1 .. V - 1 (0 is the blank), repeats as chance makes them."""
    return np.random.default_rng(seed + 1).integers(1, V, round(T * TOKENS_PER_FRAME))


def batch(seed: int = 0):
    """16 items of 250 to 1500 frames (5 to 30 s), padded: [16, T, V], [16, L], frame and token lengths."""
    frames = np.random.default_rng(seed).integers(250, 1501, 16)
    items = [(emissions(int(T), seed + k), transcript(int(T), seed + k)) for k, T in enumerate(frames)]
    log_probs = np.zeros((16, frames.max(), V), np.float32)
    targets = np.ones((16, max(len(t) for _, t in items)), np.int64)
    for b, (e, t) in enumerate(items):
        log_probs[b, :len(e)], targets[b, :len(t)] = e, t
    return items, log_probs, targets, frames, np.array([len(t) for _, t in items])


def torchaudio_path(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    import torch
    from torchaudio.functional import forced_align as theirs

    paths, _ = theirs(torch.from_numpy(log_probs)[None], torch.from_numpy(targets)[None], blank=0)
    return paths[0].numpy()


def bench_batch(runs: int) -> dict:
    items, log_probs, targets, frames, lengths = batch()
    times = {"npw2v2": [], "torchaudio": []}
    for _ in range(runs):
        start = time.perf_counter()
        ours, _ = forced_align(log_probs, targets, frames, lengths)
        times["npw2v2"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = [torchaudio_path(e, t) for e, t in items]
        times["torchaudio"].append(time.perf_counter() - start)
        for b, path in enumerate(theirs):
            assert (ours[b, :frames[b]] == path).all(), f"item {b}: the paths differ"
    return {"frames": int(frames.sum()), "tokens": int(lengths.sum()),
            **{name: statistics.median(t) for name, t in times.items()}}


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB: VmRSS (now) or VmHWM (the peak of this program).

    Not getrusage's ru_maxrss: Linux carries it across exec, so a child started from this
    (torch-laden) parent would report the parent's size as its own peak.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def hour_child(which: str) -> None:
    """One hour aligned in this process: prints seconds, peak and starting resident memory (MB), a path digest."""
    log_probs, targets = emissions(HOUR, 7), transcript(HOUR, 7)
    if which == "torchaudio":
        import torch  # noqa: F401  (loaded before the baseline, as npw2v2 is)
        import torchaudio.functional  # noqa: F401
    before = status_mb("VmRSS")
    start = time.perf_counter()
    if which == "npw2v2":
        path = forced_align(log_probs[None], targets[None])[0][0]
    else:
        path = torchaudio_path(log_probs, targets)
    seconds = time.perf_counter() - start
    peak = status_mb("VmHWM")
    digest = int(np.asarray(path, np.int64) @ np.arange(1, HOUR + 1, dtype=np.int64) % 1_000_000_007)
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "before_mb": before, "digest": digest}))


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) / 1024


def bench_hour(runs: int, with_torchaudio: bool) -> dict:
    found = {"npw2v2": [], "torchaudio": []}
    needed = HOUR * (2 * round(HOUR * TOKENS_PER_FRAME) + 1) / 2**20 + 1024  # its back-pointers, and torch
    if with_torchaudio and available_mb() < needed:
        found["torchaudio"].append({"error": f"skipped: it needs about {needed / 1024:.1f} GB, "
                                             f"{available_mb() / 1024:.1f} GB are available"})
        with_torchaudio = False
    for _ in range(runs):
        for which in ("npw2v2", "torchaudio") if with_torchaudio else ("npw2v2",):
            out = subprocess.run([sys.executable, __file__, "--hour-child", which], capture_output=True, text=True)
            if out.returncode:
                found[which].append({"error": f"exit {out.returncode}: {out.stderr.strip()[-300:]}"})
            else:
                found[which].append(json.loads(out.stdout))
    digests = {r["digest"] for rs in found.values() for r in rs if "digest" in r}
    assert len(digests) <= 1, "the hour's paths differ"
    summary = {}
    for name, rs in found.items():
        ok = [r for r in rs if "seconds" in r]
        if ok:
            summary[name] = {"seconds": statistics.median(r["seconds"] for r in ok),
                             "peak_mb": max(r["peak_mb"] for r in ok), "before_mb": min(r["before_mb"] for r in ok)}
        elif rs:
            summary[name] = rs[0]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of the batch of 16 (default 5)")
    parser.add_argument("--hour-runs", type=int, default=1, help="runs of the hour for each (default 1)")
    parser.add_argument("--no-torchaudio-hour", action="store_true",
                        help="skip torchaudio's hour (it keeps a byte per frame and state: 16 GB)")
    parser.add_argument("--hour-child", choices=["npw2v2", "torchaudio"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hour_child:
        return hour_child(args.hour_child)
    import torch
    import torchaudio

    torch.set_num_threads(1)  # torchaudio's kernel runs on one thread; so does npw2v2's NumPy here
    print(f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"torchaudio {torchaudio.__version__}, {os.cpu_count()} CPUs")
    b = bench_batch(args.runs)
    print(f"batch of 16 ({b['frames']} frames, {b['tokens']} tokens), median of {args.runs}: "
          f"npw2v2 {b['npw2v2'] * 1000:.1f} ms (one call), torchaudio {b['torchaudio'] * 1000:.1f} ms (item by item)")
    h = bench_hour(args.hour_runs, not args.no_torchaudio_hour)
    for name, r in h.items():
        if "seconds" in r:
            print(f"one hour ({HOUR} frames, {round(HOUR * TOKENS_PER_FRAME)} tokens), {name}: {r['seconds']:.1f} s, "
                  f"peak resident {r['peak_mb']:.0f} MB ({r['before_mb']:.0f} MB before aligning)")
        else:
            print(f"one hour, {name}: {r['error']}")


if __name__ == "__main__":
    main()
