"""Audio in: read any file libsndfile reads, mono float32 at the model's rate, checked.

Every problem with an input names the input: ``AudioError`` for what cannot be used (no
file, not a regular file, unreadable, not audio, an implausible rate, empty, NaN or Inf
samples, shorter than one frame) and ``AudioWarning`` for what can, with care (clipping, a
file shorter than its header says).
"""
from __future__ import annotations

import math
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import outputs

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped (full scale is 1.0)
CLIP_FRACTION = 1e-3  # warn when more than this share of samples is clipped
# Rates a header may claim. Outside them it is broken or hostile: a header saying 1 Hz would
# have a few seconds of samples resampled 16000-fold into hours.
MIN_RATE, MAX_RATE = 1_000, 1_000_000
SCAN_FRAMES = 1 << 16  # frames per block when a long file is scanned: its memory stays that of a block


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


NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
               (stat.S_ISSOCK, "a socket"))


def check_regular(path) -> None:
    """Refuse what is not a readable regular file, by name, before anything opens it.

    Opening a named pipe waits for a writer, forever; a device may never end.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise AudioError(f"{path}: {_cause(e)}") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"{path}: a folder, not an audio file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in NOT_REGULAR if test(mode)), "not a regular file")
        raise AudioError(f"{path}: {kind}, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")


def _cause(error: OSError) -> str:
    """An OSError's cause in words: "no such file", "permission denied", ..."""
    return "no such file" if isinstance(error, FileNotFoundError) else outputs.cause(error)


def _open_error(path, error) -> AudioError:
    """Why libsndfile could not open a regular, readable file."""
    if Path(path).stat().st_size == 0:
        return AudioError(f"{path}: empty file")
    reason = str(error).split(": ", 1)[-1] if str(error) else type(error).__name__
    return AudioError(f"{path}: not readable as audio ({reason})")


def _check_rate(path, rate: int) -> int:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{path}: its header says {rate} Hz, outside {MIN_RATE} Hz to {MAX_RATE} Hz: "
                         "not plausible audio")
    return rate


def info(path) -> AudioInfo:
    """The rate, length and channels of an audio file, from its header."""
    check_regular(path)
    sf = _soundfile()
    try:
        i = sf.info(str(path))
    except (RuntimeError, OSError, TypeError, ValueError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise _open_error(path, e) from None
    return AudioInfo(str(path), _check_rate(path, int(i.samplerate)), int(i.frames), int(i.channels))


def read(path, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Samples of a file (all, or ``frames`` from ``start``), mixed to mono: ([S] float32, rate)."""
    check_regular(path)
    sf = _soundfile()
    try:
        with sf.SoundFile(str(path)) as f:
            _check_rate(path, f.samplerate)
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)  # [S, channels]
            rate = f.samplerate
    except AudioError:
        raise
    except (RuntimeError, OSError, TypeError, ValueError) as e:
        raise _open_error(path, e) from None
    return _mono(data), int(rate)


def write_wav(path, x: np.ndarray, rate: int) -> None:
    """1-d samples to a 32-bit float WAV file, written whole (float: nothing read as float32 is lost)."""
    sf = _soundfile()
    outputs.write_atomically(path, lambda tmp: sf.write(str(tmp), x, rate, format="WAV", subtype="FLOAT"))


def _mono(data: np.ndarray) -> np.ndarray:
    """[S, channels] -> [S]: the channels' mean."""
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


@dataclass(frozen=True)
class Scan:
    """What one pass over a file found: its samples, how many are clipped, the first that is not finite."""

    frames: int
    clipped: int
    first_not_finite: int | None  # frame index, at the file's own rate


def scan(path) -> Scan:
    """Read a file once, block by block, for clipping and NaN or Inf, without holding it whole."""
    check_regular(path)
    sf = _soundfile()
    frames, clipped, first_bad = 0, 0, None
    try:
        for block in sf.blocks(str(path), blocksize=SCAN_FRAMES, dtype="float32", always_2d=True):
            x = _mono(block)
            finite = np.isfinite(x)
            if first_bad is None and not finite.all():
                first_bad = frames + int(np.argmin(finite))
            clipped += int((np.abs(x[finite]) >= CLIP_LEVEL).sum())
            frames += len(x)
    except (RuntimeError, OSError, TypeError, ValueError) as e:
        raise _open_error(path, e) from None
    return Scan(frames, clipped, first_bad)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling at the exact reduced ratio (e.g. 44100 -> 16000 is 160/441). [S] -> [S']."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def check(x: np.ndarray, name: str, min_samples: int, rate: int) -> None:
    """Refuse audio that cannot be transcribed: empty, NaN or infinite, shorter than ``min_samples`` (one frame;
    more for an x-vector head). [S] at ``rate``."""
    if x.size == 0:
        raise AudioError(f"{name}: no audio samples")
    check_finite(x, name, rate)
    if x.size < min_samples:
        raise AudioError(f"{name}: {x.size} samples after resampling, fewer than the {min_samples} "
                         "the model needs")


def check_finite(x: np.ndarray, name: str, rate: int) -> None:
    """Refuse NaN or infinite samples, saying how many and when the first comes. x: [S] at ``rate``."""
    finite = np.isfinite(x)
    if not finite.all():
        raise AudioError(not_finite(name, int((~finite).sum()), int(np.argmin(finite)), rate))


def not_finite(name: str, count: int | None, first: int, rate: int) -> str:
    """The message for NaN or infinite samples: how many (when known) and where the first is."""
    how_many = "" if count is None else f"{count} sample{'s are' if count > 1 else ' is'} "
    return f"{name}: {how_many or 'samples are '}NaN or infinite, the first at {first / rate:.2f} s"


def warn_if_clipped(x: np.ndarray, name: str) -> None:
    """Warn when many samples sit at full scale; judged on the samples as recorded, before resampling."""
    warn_clipped(int((np.abs(x) >= CLIP_LEVEL).sum()), x.size, name)


def warn_clipped(clipped: int, total: int, name: str) -> None:
    """Warn when more than CLIP_FRACTION of ``total`` samples are clipped."""
    if clipped > CLIP_FRACTION * total:
        warnings.warn(f"{name}: {clipped} samples ({100 * clipped / total:.1f}%) at full scale: "
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
    check_finite(x, str(path), file_rate)  # before resampling, which would smear a NaN over its neighbours
    warn_if_clipped(x, str(path))
    x = resample(x, file_rate, rate)
    check(x, str(path), min_samples, rate)
    return x
