"""The bundled model's long recordings: a held-out set of a minute or more of digit strings with pauses.

    python golden/long_digits.py --write       # rewrites golden/data/long_digits/ (needs espeak-ng)
    python golden/long_digits.py               # word error rates of the bundled model on it, greedy and with its LM
    python golden/long_digits.py --record      # the same, written into its manifest.json (the README quotes them)

Each recording is one held-out voice (voices never trained on) reading digit strings, 0.3 to 2 s
of pause before each, with gain and light noise throughout. npw2v2 transcribes them as any user
would (windows of --chunk-seconds); the word error rates go to the README.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "golden"))
import npw2v2  # noqa: E402
from digits_data import RATE, TEST_VARIANTS, degrade, paused_jobs, synthesize_paused  # noqa: E402
from npw2v2.app.cli import BUNDLED_LM, DEFAULT_MODEL  # noqa: E402
from npw2v2.app.metrics import char_error_rate, word_error_rate  # noqa: E402

OUT = ROOT / "golden" / "data" / "long_digits"
SEED = 1000


def write(count: int, seconds: tuple[float, float]) -> None:
    """Synthesise the set and write it as 16-bit FLAC with its texts."""
    jobs = paused_jobs(count, TEST_VARIANTS, SEED, seconds)
    rng = np.random.RandomState(SEED)
    audio = [degrade(x, rng) for x in synthesize_paused(jobs)]
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.flac"):
        old.unlink()
    for i, (job, x) in enumerate(zip(jobs, audio)):
        job["file"], job["seconds"] = f"{i:02d}.flac", round(len(x) / RATE, 2)
        sf.write(OUT / job["file"], x, RATE, subtype="PCM_16")
    (OUT / "recordings.json").write_text(json.dumps(jobs, indent=1))
    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    manifest = {"command": f"python golden/long_digits.py --write --count {count} --seconds {seconds[0]:g} "
                           f"{seconds[1]:g}", "seed": SEED, "test_variants": TEST_VARIANTS,
                "versions": {"espeak-ng": espeak, "numpy": np.__version__},
                "recordings": len(jobs), "minutes": round(sum(j["seconds"] for j in jobs) / 60, 2),
                "words": sum(len(j["text"].split()) for j in jobs)}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {len(jobs)} recordings, {manifest['minutes']} minutes, {manifest['words']} words to {OUT}")


def measure(model_path: Path, lm: str | None, chunk_seconds: float, record: bool) -> None:
    """The model's word and character error rates on the set, greedy and with the LM; ``record``
    writes them into the manifest (the README quotes them, tests/test_bundled_model.py checks them)."""
    jobs = json.loads((OUT / "recordings.json").read_text())
    files, truth = [OUT / j["file"] for j in jobs], [j["text"] for j in jobs]
    model = npw2v2.load(model_path)
    measured = {}
    for name, kwargs in [("greedy", {}), ("lm", {"lm": lm})] if lm else [("greedy", {})]:
        start = time.perf_counter()
        texts = [r.text for r in model.transcribe(files, chunk_seconds=chunk_seconds, **kwargs)]
        took = time.perf_counter() - start
        measured[name] = {"wer": word_error_rate(truth, texts), "cer": char_error_rate(truth, texts)}
        print(f"{name}: WER {100 * measured[name]['wer']:.2f}%  CER {100 * measured[name]['cer']:.2f}%"
              f"  ({sum(len(t.split()) for t in truth)} words, {took:.1f} s)")
        for j, t in zip(jobs, texts):
            errors = word_error_rate([j["text"]], [t])
            if errors:
                print(f"  {j['file']} {100 * errors:.1f}%: {t[:160]}")
    if record:
        manifest = json.loads((OUT / "manifest.json").read_text())
        manifest["measured"] = {"command": f"python golden/long_digits.py --record --chunk-seconds {chunk_seconds:g}",
                                "model": str(Path(model_path).relative_to(ROOT)), "lm_file": str(Path(lm).relative_to(ROOT)),
                                "chunk_seconds": chunk_seconds, **measured}
        (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="synthesise the set (needs espeak-ng)")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seconds", type=float, nargs=2, default=(60.0, 80.0))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--lm", default=str(BUNDLED_LM), help="the LM to measure with ('' for greedy only)")
    parser.add_argument("--chunk-seconds", type=float, default=20.0)
    parser.add_argument("--record", action="store_true", help="write the bundled model's rates into the manifest")
    args = parser.parse_args()
    if args.write:
        write(args.count, tuple(args.seconds))
    else:
        measure(args.model, args.lm or None, args.chunk_seconds, args.record)


if __name__ == "__main__":
    main()
