"""Peak memory and time of transcribing long files, and how chunking changes the output.

    python golden/measure_long_audio.py [--minutes 1 5 10] [--model M]

Needs no torch. Without --model it uses the wav2vec2-base architecture with random weights
and wav2vec2-base-960h's vocabulary (the numbers are about memory and time, not accuracy).
Each file is a speech-like 16 kHz signal written to a temporary FLAC file and transcribed
by model.transcribe in a fresh process, whose peak resident memory (VmHWM) is read at the
end. Then one file that fits both ways is transcribed whole and in 20-second windows, and
the share of frames whose best token differs is printed, with the character error rate
between the two transcripts (meaningful only for a trained model).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from npw2v2.app.metrics import char_error_rate  # noqa: E402
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]

RUN = """
import sys, json, time
sys.argv = ["npw2v2"]
import numpy as np
import npw2v2
from npw2v2.app.cli import load_model
model_name, path, chunk = {model!r}, {path!r}, {chunk!r}
if model_name == "base":
    cfg = npw2v2.Config(architectures=("Wav2Vec2ForCTC",))
    model = npw2v2.from_tensors(npw2v2.random_weights(cfg, seed=0), cfg, vocab={vocab!r})
else:
    model = load_model(model_name)[0]
start = time.perf_counter()
result = model.transcribe([path], chunk_seconds=chunk)[0]
seconds = time.perf_counter() - start
hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1e3
print(json.dumps({{"seconds": seconds, "peak_mb": hwm, "text": result.text,
                  "tokens": result.frame_tokens.tolist()}}))
"""


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Bursts of harmonics with a wandering pitch, separated by short pauses: not speech, but not a tone."""
    rng = np.random.RandomState(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 0.3 * t) + 20 * np.sin(2 * np.pi * 1.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > -0.3).astype(float)
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32)


def transcribe(model: str, path: Path, chunk: float) -> dict:
    import json

    code = RUN.format(model=model, path=str(path), chunk=chunk, vocab={t: i for i, t in enumerate(VOCAB)})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    parser.add_argument("--model", default="base")
    parser.add_argument("--compare-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"model: {args.model}; 20 s windows with 3.3 s of context on each side")
        for minutes in args.minutes:
            path = Path(tmp) / f"{minutes:g}min.flac"
            sf.write(path, speech_like(60 * minutes), 16000)
            r = transcribe(args.model, path, chunk=20.0)
            print(f"  {minutes:4g} min: peak memory {r['peak_mb']:6.0f} MB, {r['seconds']:6.1f} s "
                  f"({60 * minutes / r['seconds']:.1f}x real time)", flush=True)
        path = Path(tmp) / "compare.flac"
        sf.write(path, speech_like(args.compare_seconds, seed=1), 16000)
        whole = transcribe(args.model, path, chunk=args.compare_seconds + 1)
        chunked = transcribe(args.model, path, chunk=20.0)
        differ = np.mean(np.array(whole["tokens"]) != np.array(chunked["tokens"]))
        print(f"  {args.compare_seconds:g} s file, whole vs 20 s windows: {100 * differ:.2f}% of "
              f"{len(whole['tokens'])} frames differ in their best token; character error rate "
              f"{100 * char_error_rate([whole['text']], [chunked['text']]):.2f}% over {len(whole['text'])} "
              f"characters; peak memory {whole['peak_mb']:.0f} MB whole, {chunked['peak_mb']:.0f} MB chunked")


if __name__ == "__main__":
    main()
