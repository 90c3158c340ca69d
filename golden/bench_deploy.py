"""The numbers a deployer decides on: npw2v2 against PyTorch + transformers, each installed fresh.

    python golden/bench_deploy.py --work /tmp/deploy [--runs 5]

Makes two fresh virtual environments in WORK: one with npw2v2 (this checkout, with its runtime
dependencies only), one with torch (CPU) + transformers + soundfile. Then it measures, side by
side:

- the installed size: each environment's site-packages less a bare environment's;
- import time: a fresh process importing what a user's program imports (``import npw2v2;
  npw2v2.load``, against ``import torch, transformers`` and the Wav2Vec2 model class);
- time to the first transcript: a fresh process that loads a base-size CTC model (wav2vec2-base's
  architecture, random weights, saved by transformers as a Hugging Face folder that both read)
  and transcribes a 10 s file: ``npw2v2 transcribe``, against transformers' ASR pipeline.

Runs alternate between the two, a fresh process each; medians are printed with the machine.
Needs the network's package registries (pip) and the local torch build.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = ["torch==2.13.0", "transformers", "soundfile"]


def venv(folder: Path, *packages: str) -> Path:
    """A fresh virtual environment holding ``packages``; its python."""
    if not (folder / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        if packages:
            subprocess.run([str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages], check=True)
    return folder / "bin" / "python"


def site_packages_bytes(python: Path) -> int:
    folder = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink())


MAKE_MODEL = """
import json, sys, torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
folder = sys.argv[1]
torch.manual_seed(0)
vocab = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
config = Wav2Vec2Config(vocab_size=len(vocab), architectures=["Wav2Vec2ForCTC"])
Wav2Vec2ForCTC(config).eval().save_pretrained(folder, safe_serialization=True)
json.dump({t: i for i, t in enumerate(vocab)}, open(f"{folder}/vocab.json", "w"))
json.dump({"tokenizer_class": "Wav2Vec2CTCTokenizer", "word_delimiter_token": "|", "pad_token": "<pad>",
           "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}, open(f"{folder}/tokenizer_config.json", "w"))
json.dump({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
           "padding_value": 0.0, "do_normalize": True, "return_attention_mask": False},
          open(f"{folder}/preprocessor_config.json", "w"))
"""

MAKE_AUDIO = """
import sys, numpy as np, soundfile as sf
rng = np.random.RandomState(0)
sf.write(sys.argv[1], (0.1 * rng.standard_normal(160000)).astype(np.float32), 16000, subtype="PCM_16")
"""

TRANSFORMERS_TRANSCRIBE = """
import sys
import soundfile as sf
from transformers import pipeline
asr = pipeline("automatic-speech-recognition", model=sys.argv[1], device="cpu")
x, rate = sf.read(sys.argv[2], dtype="float32")
print(asr({"raw": x, "sampling_rate": rate})["text"])
"""


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def alternate(commands: dict[str, list[str]], runs: int) -> dict[str, float]:
    """Median seconds of each command, run in turns, a fresh process each, after one untimed round."""
    times = {name: [] for name in commands}
    for round_ in range(runs + 1):
        for name, command in commands.items():
            time.sleep(0.5)
            elapsed = seconds(command)
            if round_:
                times[name].append(elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a folder for the environments and files")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bare = venv(args.work / "bare")
    ours = venv(args.work / "npw2v2", str(ROOT))
    theirs = venv(args.work / "torch", *TORCH)
    base = site_packages_bytes(bare)
    sizes = {name: (site_packages_bytes(python) - base) / 1e6 for name, python in (("npw2v2", ours), ("torch", theirs))}
    model, audio = args.work / "base-ctc", args.work / "ten-seconds.wav"
    if not (model / "model.safetensors").exists():
        subprocess.run([str(theirs), "-c", MAKE_MODEL, str(model)], check=True)
    subprocess.run([str(theirs), "-c", MAKE_AUDIO, str(audio)], check=True)
    imports = alternate({
        "npw2v2": [str(ours), "-c", "import npw2v2; npw2v2.load"],
        "torch": [str(theirs), "-c", "import torch, transformers; from transformers import Wav2Vec2ForCTC"],
    }, args.runs)
    first = alternate({
        "npw2v2": [str(ours.parent / "npw2v2"), "transcribe", str(audio), "-m", str(model)],
        "torch": [str(theirs), "-c", TRANSFORMERS_TRANSCRIBE, str(model), str(audio)],
    }, args.runs)
    versions = subprocess.run([str(theirs), "-c", "import torch, transformers; print(torch.__version__, "
                               "transformers.__version__)"], capture_output=True, text=True, check=True).stdout.split()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    print(f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; torch {versions[0]}, "
          f"transformers {versions[1]}; medians of {args.runs} fresh processes each, alternating")
    print("| | npw2v2 | PyTorch + transformers | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| installed size (site-packages) | {sizes['npw2v2']:.0f} MB | {sizes['torch']:.0f} MB | "
          f"{sizes['npw2v2'] / sizes['torch']:.2f}x |")
    print(f"| import | {imports['npw2v2']:.2f} s | {imports['torch']:.2f} s | {imports['npw2v2'] / imports['torch']:.2f}x |")
    print(f"| first transcript of a 10 s file, fresh process (base-size CTC model) | {first['npw2v2']:.2f} s | "
          f"{first['torch']:.2f} s | {first['npw2v2'] / first['torch']:.2f}x |")


if __name__ == "__main__":
    main()
