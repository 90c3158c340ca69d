"""Audio in: read any file libsndfile reads, mono float32 at the model's rate, checked.

Every problem with an input names the input: ``AudioError`` for what cannot be used (no
file, not audio, empty, NaN or Inf samples, shorter than one frame) and ``AudioWarning``
for what can, with care (clipping, a file shorter than its header says).
"""
from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped (full scale is 1.0)
CLIP_FRACTION = 1e-3  # warn when more than this share of samples is clipped


class AudioError(ValueError):
    """An input that cannot be transcribed; the message names it and the problem."""


class AudioWarning(UserWarning):
    """An input that can be used but may give poor results (clipping, truncation)."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, without reading its samples."""

    path: str
    rate: int
    frames: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def samples_at(self, rate: int) -> int:
        """Its length once resampled to ``rate``: ceil(frames * rate / own rate), as resample_poly makes it."""
        return -(-self.frames * rate // self.rate)


def _soundfile():
    import soundfile

    return soundfile


def _open_error(path, error) -> AudioError:
    path = Path(path)
    if not path.exists():
        return AudioError(f"{path}: no such file")
    if path.is_dir():
        return AudioError(f"{path}: a folder, not an audio file")
    if path.stat().st_size == 0:
        return AudioError(f"{path}: empty file")
    reason = str(error).split(": ", 1)[-1] if str(error) else type(error).__name__
    return AudioError(f"{path}: not readable as audio ({reason})")


def info(path) -> AudioInfo:
    """The rate, length and channels of an audio file, from its header."""
    sf = _soundfile()
    try:
        i = sf.info(str(path))
    except (RuntimeError, OSError, TypeError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise _open_error(path, e) from None
    return AudioInfo(str(path), int(i.samplerate), int(i.frames), int(i.channels))


def read(path, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Samples of a file (all, or ``frames`` from ``start``), mixed to mono: ([S] float32, rate)."""
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)  # [S, channels]
            rate = f.samplerate
    except (RuntimeError, OSError, TypeError, ValueError) as e:
        raise _open_error(path, e) from None
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0], int(rate)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling at the exact reduced ratio (e.g. 44100 -> 16000 is 160/441). [S] -> [S']."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def check(x: np.ndarray, name: str, min_samples: int) -> None:
    """Refuse audio that cannot be transcribed: empty, NaN or infinite, shorter than one frame."""
    if x.size == 0:
        raise AudioError(f"{name}: no audio samples")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise AudioError(f"{name}: {bad} sample{'s are' if bad > 1 else ' is'} NaN or infinite")
    if x.size < min_samples:
        raise AudioError(f"{name}: {x.size} samples after resampling, fewer than the {min_samples} "
                         "the model needs for one frame")


def warn_if_clipped(x: np.ndarray, name: str) -> None:
    """Warn when many samples sit at full scale; judged on the samples as recorded, before resampling."""
    clipped = int((np.abs(x) >= CLIP_LEVEL).sum())
    if clipped > CLIP_FRACTION * x.size:
        warnings.warn(f"{name}: {clipped} samples ({100 * clipped / x.size:.1f}%) at full scale: "
                      "the recording is clipped", AudioWarning, stacklevel=3)


def wav_truncation(path) -> str | None:
    """For a RIFF WAV file shorter than its data chunk declares, say so (libsndfile reads it silently)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = Path(path).stat().st_size
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"data":
                    available = size - f.tell()
                    if length != 0xFFFFFFFF and available < length:
                        return f"truncated: the header declares {length} bytes of audio, the file holds {available}"
                    return None
                f.seek(length + (length & 1), 1)
    except OSError:
        return None


def normalize(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance over the valid samples, padding left at 0. [B, S] -> [B, S].

    ``(x - mean) / sqrt(var + 1e-7)`` with the population variance, per utterance, as
    Wav2Vec2FeatureExtractor does when its preprocessor config says ``do_normalize``.
    """
    if valid is None:
        valid = np.ones(x.shape, dtype=bool)
    w = valid.astype(np.float32)
    count = np.maximum(w.sum(axis=1, keepdims=True), 1.0)
    mean = (x * w).sum(axis=1, keepdims=True) / count
    var = (((x - mean) * w) ** 2).sum(axis=1, keepdims=True) / count
    return ((x - mean) / np.sqrt(var + 1e-7) * w).astype(np.float32)


def pad(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad 1-d arrays into a batch: ([B, S] float32, [B, S] bool mask, True = real)."""
    lengths = np.array([len(a) for a in arrays])
    batch = np.zeros((len(arrays), lengths.max()), dtype=np.float32)
    for row, a in zip(batch, arrays):
        row[:len(a)] = a
    return batch, np.arange(batch.shape[1])[None, :] < lengths[:, None]


def batches_by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def warn_if_truncated(path) -> None:
    reason = wav_truncation(path)
    if reason:
        warnings.warn(f"{path}: {reason}", AudioWarning, stacklevel=3)


def load(path, rate: int, min_samples: int) -> np.ndarray:
    """A whole file as checked mono float32 at ``rate``: [S]."""
    warn_if_truncated(path)
    x, file_rate = read(path)
    if x.size == 0:
        raise AudioError(f"{path}: no audio samples (the header declares none)")
    warn_if_clipped(x, str(path))
    x = resample(x, file_rate, rate)
    check(x, str(path), min_samples)
    return x
