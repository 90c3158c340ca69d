"""Corpus throughput: `npw2v2 transcribe FOLDER` against transformers over the same batches.

    python golden/bench_corpus.py --work /tmp/corpus [--files 24] [--rounds 3]   # in a venv with torch

Writes a folder of FLAC files of noise, 1 to 20 s each (seeded; their content does not change the
work), and a base-size CTC model (wav2vec2-base's architecture, random weights, saved by
transformers as a Hugging Face folder that both read). Then times whole processes, start-up
included, taking turns round by round:

- npw2v2: one `npw2v2 transcribe FOLDER` (its BLAS and element-wise work on every core);
- npw2v2, one process per core: `npw2v2 transcribe FOLDER --processes N` (N cores), worker
  processes of one BLAS thread each, the batches handed out as workers free up;
- torch: one process running transformers' Wav2Vec2ForCTC on the batches npw2v2 makes
  (npw2v2.io.audio.batches_by_length, batch size 8, the attention mask given), greedy decoding,
  torch's threads on every core;
- torch, one process per core: the files split in halves of equal audio length, one process of
  one thread each.

Prints each one's median seconds and audio-hours per hour, and the ratios to torch.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "golden"))
from bench_deploy import MAKE_MODEL  # noqa: E402
from npw2v2.app.bench import machine_description  # noqa: E402
from npw2v2.app.processes import THREAD_VARIABLES  # noqa: E402

RATE = 16000
TORCH_JOB = """
import sys, torch, soundfile as sf
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor
from npw2v2.io.audio import batches_by_length
torch.set_num_threads(int(sys.argv[2]))
model = Wav2Vec2ForCTC.from_pretrained(sys.argv[1]).eval()
processor = Wav2Vec2Processor.from_pretrained(sys.argv[1])
audio = [sf.read(f, dtype="float32")[0] for f in sys.argv[3:]]
with torch.inference_mode():
    for batch in batches_by_length([len(a) for a in audio], 8):
        inputs = processor([audio[i] for i in batch], sampling_rate=16000, return_tensors="pt", padding=True,
                           return_attention_mask=True)
        logits = model(inputs.input_values, attention_mask=inputs.attention_mask).logits
        print(*processor.batch_decode(logits.argmax(-1)), sep="\\n")
"""


def write_corpus(folder: Path, files: int, seed: int = 0) -> list[Path]:
    """``files`` FLAC files of quiet noise, 1 to 20 s each."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        samples = int(rng.uniform(1, 20) * RATE)
        paths.append(folder / f"{i:03d}.flac")
        sf.write(paths[-1], (0.1 * rng.standard_normal(samples)).astype(np.float32), RATE, subtype="PCM_16")
    return paths


def halves(seconds: dict[Path, float]) -> list[list[Path]]:
    """Two lists of files of about equal audio length (``seconds`` of each): longest first, each to the shorter."""
    parts, totals = [[], []], [0.0, 0.0]
    for path in sorted(seconds, key=seconds.get, reverse=True):
        k = totals.index(min(totals))
        parts[k].append(path)
        totals[k] += seconds[path]
    return parts


def run_together(commands: list[list[str]], threads: int | None) -> float:
    """Seconds until every command (started at once) has finished; each limited to ``threads`` BLAS threads."""
    env = dict(os.environ)
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    start = time.perf_counter()
    running = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    for process, command in zip(running, commands):
        _, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"{command[:4]} failed:\n{err.decode()[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/npw2v2-bench-corpus"))
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    corpus, model = args.work / "corpus", args.work / "model"
    paths = sorted(corpus.glob("*.flac")) or write_corpus(corpus, args.files)
    if not (model / "config.json").exists():
        subprocess.run([sys.executable, "-c", MAKE_MODEL, str(model)], check=True, capture_output=True)
    seconds = {p: sf.info(str(p)).frames / RATE for p in paths}
    audio_seconds = sum(seconds.values())
    cores = len(os.sched_getaffinity(0))
    npw2v2 = [sys.executable, "-m", "npw2v2", "transcribe", "-m", str(model)]
    torch_job = [sys.executable, "-c", TORCH_JOB, str(model)]
    ways = {
        "npw2v2": ([npw2v2 + [str(corpus)]], None),
        f"npw2v2 --processes {cores}": ([npw2v2 + [str(corpus), "--processes", str(cores)]], None),
        "torch": ([torch_job + [str(cores)] + list(map(str, paths))], None),
        f"torch, {cores} processes": ([torch_job + ["1"] + list(map(str, h)) for h in halves(seconds)], 1),
    }
    print(f"{machine_description()}, torch {version('torch')}, transformers {version('transformers')}")
    print(f"corpus: {len(paths)} files, {audio_seconds:.0f} s of audio; {args.rounds} rounds after an untimed one, "
          f"the ways taking turns")
    times = {name: [] for name in ways}
    for round_ in range(args.rounds + 1):
        order = list(ways) if round_ % 2 == 0 else list(ways)[::-1]
        for name in order:
            time.sleep(1.0)
            elapsed = run_together(*ways[name])
            if round_:
                times[name].append(elapsed)
    torch_median = statistics.median(times["torch"])
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"  {name:22s} {', '.join(f'{s:.1f}' for s in runs)} s, median {median:.1f} s = "
              f"{audio_seconds / median:.0f} audio-hours per hour, {torch_median / median:.2f}x torch's throughput")


if __name__ == "__main__":
    main()
