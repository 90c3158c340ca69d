"""Record torchaudio.functional.forced_align's paths, for npw2v2's aligner to equal (tests/test_align.py).

torchaudio wants the torch it was built with, so this runs in an environment of its own:

    python3 -m venv /work/venv-align
    /work/venv-align/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy safetensors
    /work/venv-align/bin/pip install -e .          # npw2v2, for the bundled model's emissions
    /work/venv-align/bin/python golden/record_align.py   # rewrites golden/data/align/

Two sets of cases, each one item (torchaudio aligns a batch of one):

- ``random.npz``: log-softmax of random logits over many shapes, with targets that repeat
  tokens (a blank needed between), targets as long as the frames allow, and ties made on
  purpose: log-probabilities rounded to a coarse grid, all equal, or (unnormalised) 0, -1 and -2,
  so that several paths score the same and only the tie-breaking rule decides.
- ``bundled.npz``: the bundled model's log-probabilities of its example clips (npw2v2's
  logits, npw2v2.app.align.log_softmax) against the transcripts the file names spell.

Case ``k`` is stored as ``k/log_probs`` [T, V], ``k/targets`` [L], ``k/path`` [T] and
``k/scores`` [T]; ``versions.json`` records the versions, seeds, command and time.
"""
from __future__ import annotations

import datetime
import json
import platform
import warnings
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torchaudio.functional import forced_align

import npw2v2
from npw2v2.app.align import log_softmax, tokenize
from npw2v2.app.cli import DEFAULT_MODEL, EXAMPLES
from npw2v2.io import audio

OUT = Path(__file__).resolve().parent / "data" / "align"
SEED = 20
warnings.filterwarnings("ignore", message=".*forced_align has been deprecated.*")


def theirs(log_probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchaudio's path and scores of one item: log_probs [T, V], targets [L]."""
    paths, scores = forced_align(torch.from_numpy(log_probs)[None], torch.from_numpy(targets)[None], blank=0)
    return paths[0].numpy(), scores[0].numpy()


def repeating_targets(rng, L: int, V: int, repeat: float) -> np.ndarray:
    """L token ids in 1 .. V - 1, each repeating the one before with probability ``repeat``."""
    targets = rng.integers(1, V, L)
    for i in range(1, L):
        if rng.random() < repeat:
            targets[i] = targets[i - 1]
    return targets


def random_case(rng, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One random item; every fourth is quantised to a grid of 0.5, every eighth all equal (ties)."""
    V = int(rng.integers(2, 12))
    L = int(rng.integers(1, 20))
    targets = repeating_targets(rng, L, V, repeat=0.3 if V > 2 else 0.0)
    needed = L + int((targets[1:] == targets[:-1]).sum())
    slack = [0, 0, 1, 2, 5, 20, 60][k % 7]  # as tight as allowed, and looser
    T = needed + slack
    logits = rng.normal(size=(T, V)).astype(np.float32) * float(rng.choice([0.5, 2.0, 6.0]))
    log_probs = log_softmax(logits)
    if k % 4 == 1:
        log_probs = (np.round(log_probs * 2) / 2).astype(np.float32)
    if k % 8 == 3:
        log_probs = np.full((T, V), -np.log(V), np.float32)
    if k % 16 == 5:
        log_probs = log_probs.astype(np.float64)
    return log_probs, targets


def long_case(rng) -> tuple[np.ndarray, np.ndarray]:
    """A larger item: a vocabulary of 32, up to 150 tokens, two to four frames a token."""
    L = int(rng.integers(60, 150))
    targets = repeating_targets(rng, L, 32, repeat=0.1)
    T = int(L * rng.uniform(2, 4))
    return log_softmax(rng.normal(size=(T, 32)).astype(np.float32) * 3), targets


def coarse_case(rng) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of 0, -1 or -2 (not normalised: the aligner never needs them to be): ties at
    almost every state, where the rule for the state before tying with the skip shows."""
    V = int(rng.integers(3, 6))
    targets = repeating_targets(rng, int(rng.integers(2, 12)), V, repeat=0.1)
    T = len(targets) + int((targets[1:] == targets[:-1]).sum()) + int(rng.integers(0, 12))
    return -rng.integers(0, 3, (T, V)).astype(np.float32), targets


def bundled_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    model = npw2v2.load(DEFAULT_MODEL)
    cases = {}
    for path in sorted(EXAMPLES.glob("*.flac")):
        text = path.stem.replace("-", " ")
        x = audio.load(path, model.sampling_rate, model.config.receptive_field)
        out = model(audio.normalize(x[None]))
        cases[path.stem] = (log_softmax(out.logits[0]), tokenize(text, model.vocab, model.word_delimiter).tokens)
    return cases


def save(name: str, cases: dict) -> int:
    arrays = {}
    for k, (log_probs, targets) in cases.items():
        path, scores = theirs(log_probs, targets)
        arrays.update({f"{k}/log_probs": log_probs, f"{k}/targets": targets, f"{k}/path": path.astype(np.int64),
                       f"{k}/scores": scores})
    np.savez_compressed(OUT / name, **arrays)
    return (OUT / name).stat().st_size


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    random_cases = {f"{k:03d}": random_case(rng, k) for k in range(160)}
    random_cases.update({f"{k:03d}": long_case(rng) for k in range(160, 168)})
    random_cases.update({f"{k:03d}": coarse_case(rng) for k in range(168, 248)})
    sizes = {"random.npz": save("random.npz", random_cases), "bundled.npz": save("bundled.npz", bundled_cases())}
    versions = {
        "command": "python golden/record_align.py",
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torchaudio": torchaudio.__version__, "numpy": np.__version__, "npw2v2": npw2v2.__version__},
        "seed": SEED,
        "blank": 0,
        "cases": {"random.npz": len(random_cases), "bundled.npz": len(list(EXAMPLES.glob("*.flac")))},
    }
    (OUT / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    print(f"wrote {OUT}: {sizes}")


if __name__ == "__main__":
    main()
