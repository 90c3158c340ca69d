"""A corpus in the shapes real ones come in, made of held-out digit clips, with some bad files.

Used by tests/test_distributed.py and golden/bench_ray.py. The good files cycle through
the bundled model's held-out clips, each re-encoded one of five ways (one folder per way,
and the same file names in several folders, so that output names clash):

    flac16k/  the clip as recorded: FLAC, 16 kHz, mono
    wav44k/   WAV at 44.1 kHz, stereo, 16-bit: mixed and resampled on reading
    flac22k/  FLAC at 22.05 kHz
    long/     four clips joined by 0.3 s of silence: windows, with a short --chunk-seconds
    loud/     four times louder, clipped at full scale: a warning, still transcribed

and bad/ holds files that are errors: text named .wav, an empty file, 100 samples (shorter
than one frame), and a float WAV with a NaN sample (its header is fine: the error shows only
when the samples are read).
"""
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

CLIPS = Path(__file__).resolve().parents[1] / "golden" / "data" / "tiny_digits" / "held_out"
WAYS = ("flac16k", "wav44k", "flac22k", "long", "loud")
BAD = ("broken.wav", "empty.wav", "short.wav", "nan.wav")


def clip(n: int) -> np.ndarray:
    x, rate = sf.read(CLIPS / f"{n % 300:03d}.flac", dtype="float32")
    assert rate == 16000
    return x


def write_good(folder: Path, way: str, n: int, stem: str) -> Path:
    """Held-out clip ``n`` written the ``way`` named, into folder/way/STEM.*"""
    (folder / way).mkdir(parents=True, exist_ok=True)
    x = clip(n)
    if way == "flac16k":
        path = folder / way / f"{stem}.flac"
        sf.write(path, x, 16000)
    elif way == "wav44k":
        path = folder / way / f"{stem}.wav"
        y = resample_poly(x, 441, 160)
        sf.write(path, np.stack([y, y], axis=1), 44100, subtype="PCM_16")
    elif way == "flac22k":
        path = folder / way / f"{stem}.flac"
        sf.write(path, resample_poly(x, 441, 320), 22050)
    elif way == "long":
        path = folder / way / f"{stem}.flac"
        gap = np.zeros(4800, np.float32)
        sf.write(path, np.concatenate([part for k in range(4) for part in (clip(n + 7 * k), gap)]), 16000)
    else:
        path = folder / way / f"{stem}.wav"
        sf.write(path, np.clip(4 * x, -1, 1), 16000, subtype="PCM_16")
    return path


def write_bad(folder: Path) -> list[Path]:
    bad = folder / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "broken.wav").write_text("this is text, not audio")
    (bad / "empty.wav").write_bytes(b"")
    sf.write(bad / "short.wav", clip(0)[:100], 16000)
    x = clip(1).copy()
    x[500] = np.nan
    sf.write(bad / "nan.wav", x, 16000, subtype="FLOAT")
    return [bad / name for name in BAD]


def build(folder: Path, good: int) -> tuple[list[Path], list[Path]]:
    """``good`` good files and the bad ones: (good paths, bad paths).

    Clip i is written the (i % 5)th way, named i // 5: five files in a row share a name.
    """
    return [write_good(folder, WAYS[i % len(WAYS)], i, f"{i // len(WAYS):03d}") for i in range(good)], write_bad(folder)
