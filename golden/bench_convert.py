"""How long converting a base-size checkpoint takes, beside reading it, and its peak memory.

    python golden/bench_convert.py [--rounds 5]      # needs torch (the golden extra)

Writes a wav2vec2-base-960h-shaped Hugging Face folder (random weights, pytorch_model.bin,
378 MB) to a temporary folder, then alternates, round by round: reading the file's bytes,
torch.load of it, and npw2v2-convert of the folder, each in a fresh process. Prints the
median and range of each, the ratios of the medians, and how far each raises the process's
peak resident memory (mapped file pages count, as they do in RSS).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import npw2v2  # noqa: E402

# name: (imports, work): only the work is timed, so torch's import time counts for no one.
CODE = {
    "read bytes": ("import pathlib", "pathlib.Path({file!r}).read_bytes()"),
    "torch.load": ("import torch", "torch.load({file!r}, weights_only=True)"),
    "npw2v2-convert": ("from convert.cli import main", "main([{folder!r}, {out!r}])"),
}


def make_folder(folder: Path) -> Path:
    cfg = npw2v2.Config(architectures=("Wav2Vec2ForCTC",))
    weights = npw2v2.random_weights(cfg, seed=0)
    state = {("" if n.startswith("lm_head") else "wav2vec2.") + n: torch.from_numpy(w) for n, w in weights.items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    return folder / "pytorch_model.bin"


def run(imports: str, work: str) -> tuple[float, float]:
    """Seconds the work takes in a fresh interpreter, and how far it raises the peak memory (MB).

    Peak memory is the process's high-water mark (VmHWM), read before and after the work.
    """
    hwm = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    timed = (f"import time; {imports}; before = {hwm}; t = time.perf_counter(); {work}; "
             f"print(time.perf_counter() - t, ({hwm} - before) / 1e3)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True, env=env, check=True).stdout
    seconds, growth = out.split()[-2:]
    return float(seconds), float(growth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "base"
        folder.mkdir()
        file = make_folder(folder)
        out = Path(tmp) / "base.safetensors"
        times = {name: [] for name in CODE}
        growth = {name: [] for name in CODE}
        for _ in range(rounds):
            for name, (imports, work) in CODE.items():
                out.unlink(missing_ok=True)
                seconds, mb = run(imports, work.format(file=str(file), folder=str(folder), out=str(out)))
                times[name].append(seconds)
                growth[name].append(mb)
        size_mb = file.stat().st_size / 1e6
    print(f"base-size checkpoint: {size_mb:.0f} MB, {rounds} rounds, alternating, a fresh process each, "
          "imports not timed")
    for name, values in times.items():
        peak = statistics.median(growth[name])
        print(f"  {name:15s} median {statistics.median(values):.2f} s  (min {min(values):.2f}, "
              f"max {max(values):.2f}), peak memory +{peak:.0f} MB = {peak / size_mb:.2f}x the file")
    convert = statistics.median(times["npw2v2-convert"])
    for name in ("read bytes", "torch.load"):
        print(f"  convert / {name}: {convert / statistics.median(times[name]):.2f}x")


if __name__ == "__main__":
    main()
