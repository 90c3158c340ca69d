"""npw2v2.io.audio: real files of many formats, rates, sample types and channel counts, read to
mono float32 at 16 kHz and compared with an independent reference; bad inputs; batching helpers.

Every file is written by the test itself with soundfile into tmp_path.
"""
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from npw2v2.io import audio

TARGET = 16000  # the model's rate
MIN_SAMPLES = 400  # one frame of wav2vec 2.0 (its receptive field)
RATES = [8000, 16000, 22050, 44100, 48000]
CHANNELS = [1, 2, 6]


def tone(frames: int, rate: int, channels: int = 1) -> np.ndarray:
    """0.3 sin(220 Hz) + 0.3 sin(1000 Hz), float64 [frames, channels]; channel c is scaled by 1 - 0.15 c."""
    t = np.arange(frames) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)
    return np.stack([x * (1 - 0.15 * c) for c in range(channels)], axis=1)


def reference(signal: np.ndarray, rate: int) -> np.ndarray:
    """What load should give: float64 channel mean, resampled by resample_poly at the reduced ratio."""
    mono = signal.mean(axis=1)
    ratio = Fraction(TARGET, rate)  # reduced: 16000/44100 -> 160/441
    return resample_poly(mono, ratio.numerator, ratio.denominator) if ratio != 1 else mono


def expected_length(frames: int, rate: int) -> int:
    return math.ceil(frames * TARGET / rate)


def write(path, signal, rate, fmt, subtype):
    sf.write(str(path), signal, rate, format=fmt, subtype=subtype)
    return str(path)


def peaks(x: np.ndarray, rate: int) -> tuple[float, float]:
    """The strongest frequency, and the strongest one more than 50 Hz away from it."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    first = freqs[spectrum.argmax()]
    spectrum[np.abs(freqs - first) <= 50] = 0
    return first, freqs[spectrum.argmax()]


# ---------------------------------------------------------------------------
# Reading real files


LOSSLESS = [("WAV", "wav", s, 1e-4 if s == "PCM_16" else 1e-6) for s in ["PCM_16", "PCM_32", "FLOAT", "DOUBLE"]] + [
    ("FLAC", "flac", "PCM_16", 1e-4), ("FLAC", "flac", "PCM_24", 1e-6),
    ("AIFF", "aiff", "PCM_16", 1e-4), ("AIFF", "aiff", "FLOAT", 1e-6)]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt,ext,subtype,tol", LOSSLESS, ids=[f"{f}-{s}" for f, _, s, _ in LOSSLESS])
def test_lossless_file_matches_reference(tmp_path, fmt, ext, subtype, tol, rate):
    """A lossless file (1, 2, 6 channels) loads as float32 mono at 16 kHz, equal to mean-then-resample_poly."""
    frames = rate // 4 + 37  # a quarter second and an odd remainder
    for channels in CHANNELS:
        signal = tone(frames, rate, channels)
        path = write(tmp_path / f"tone{channels}.{ext}", signal, rate, fmt, subtype)

        x = audio.load(path, TARGET, MIN_SAMPLES)

        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - expected_length(frames, rate)) <= 1, f"{channels} channels"
        ref = reference(signal, rate)
        assert len(x) == len(ref), f"{channels} channels"
        np.testing.assert_allclose(x, ref, rtol=0, atol=tol, err_msg=f"{channels} channels")


LOSSY = [("OGG", "ogg", "VORBIS", (1, 2, 6)), ("MP3", "mp3", "MPEG_LAYER_III", (1, 2))]  # MP3 has at most 2


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("fmt,ext,subtype,channel_counts", LOSSY, ids=[f for f, *_ in LOSSY])
def test_lossy_file_keeps_length_and_frequencies(tmp_path, fmt, ext, subtype, channel_counts, rate):
    """OGG/Vorbis and MP3 load at the right length, and the 220 Hz and 1000 Hz tones are the two strongest."""
    frames = rate // 2 + 37
    for channels in channel_counts:
        path = write(tmp_path / f"tone{channels}.{ext}", tone(frames, rate, channels), rate, fmt, subtype)

        x = audio.load(path, TARGET, MIN_SAMPLES)

        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - expected_length(frames, rate)) <= 1, f"{channels} channels"
        low, high = sorted(peaks(x, TARGET))
        assert low == pytest.approx(220, abs=5) and high == pytest.approx(1000, abs=5), f"{channels} channels"


@pytest.mark.parametrize("rate", [16000, 44100])
def test_stereo_with_different_channels_is_their_mean(tmp_path, rate):
    """Left 220 Hz, right 1000 Hz at another amplitude: mono is the mean, not one channel."""
    t = np.arange(rate // 2) / rate
    signal = np.stack([0.5 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 1000 * t)], axis=1)
    path = write(tmp_path / "stereo.wav", signal, rate, "WAV", "FLOAT")

    x = audio.load(path, TARGET, MIN_SAMPLES)

    np.testing.assert_allclose(x, reference(signal, rate), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt,ext,subtype,rate,channels", [
    ("WAV", "wav", "PCM_16", 48000, 6), ("FLAC", "flac", "PCM_24", 22050, 2),
    ("OGG", "ogg", "VORBIS", 44100, 1), ("AIFF", "aiff", "FLOAT", 8000, 2)])
def test_info_reads_the_header(tmp_path, fmt, ext, subtype, rate, channels):
    """audio.info gives the path, rate, frames, channels and seconds of a file."""
    frames = rate // 3
    path = write(tmp_path / f"a.{ext}", tone(frames, rate, channels), rate, fmt, subtype)

    found = audio.info(path)

    assert (found.path, found.rate, found.frames, found.channels) == (path, rate, frames, channels)
    assert found.seconds == pytest.approx(frames / rate)


# ---------------------------------------------------------------------------
# resample, normalize, pad, batches_by_length


@pytest.mark.parametrize("rate,up,down", [(44100, 160, 441), (22050, 320, 441), (48000, 1, 3), (8000, 2, 1),
                                          (11025, 640, 441), (32000, 1, 2)])
def test_resample_uses_the_exact_reduced_ratio(rate, up, down):
    """44100 -> 16000 is 160/441: length ceil(n * 160 / 441), values of resample_poly(x, 160, 441)."""
    n = rate + 123
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)

    y = audio.resample(x, rate, TARGET)

    assert y.dtype == np.float32
    assert len(y) == math.ceil(n * up / down)
    np.testing.assert_allclose(y, resample_poly(x.astype(np.float64), up, down), rtol=0, atol=1e-5)


def test_resample_at_the_same_rate_returns_the_input():
    """No resampling when the rates are equal: the very same array comes back."""
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    kept = x.copy()

    y = audio.resample(x, TARGET, TARGET)

    assert y is x
    np.testing.assert_array_equal(y, kept)


def test_normalize_uses_valid_samples_only():
    """Per row, (x - mean) / sqrt(var + 1e-7) over valid samples, population variance; padding stays 0."""
    rng = np.random.default_rng(2)
    lengths = [50, 4, 31]  # 4 valid samples: sample and population variance differ by 4/3
    scales = [2.0, 2.0, 1e-3]  # a quiet row (var ~1e-6) where the 1e-7 in the root matters
    x = np.full((3, 50), 7.0, dtype=np.float32)  # padding holds junk that must be ignored
    mask = np.arange(50)[None, :] < np.array(lengths)[:, None]
    for row, (n, scale) in enumerate(zip(lengths, scales)):
        x[row, :n] = scale * (0.25 + rng.standard_normal(n))

    out = audio.normalize(x, mask)

    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.all(out[~mask] == 0)
    for row, n in enumerate(lengths):
        v = x[row, :n].astype(np.float64)
        expected = (v - v.mean()) / np.sqrt(((v - v.mean()) ** 2).sum() / n + 1e-7)
        np.testing.assert_allclose(out[row, :n], expected, rtol=1e-5, atol=1e-6)


def test_normalize_without_mask_uses_whole_rows():
    """With no mask every sample counts; a constant row becomes zeros (var 0, mean removed)."""
    x = np.stack([np.linspace(-3, 5, 40), np.full(40, 2.5)]).astype(np.float32)

    out = audio.normalize(x)

    v = x[0].astype(np.float64)
    np.testing.assert_allclose(out[0], (v - v.mean()) / np.sqrt(v.var() + 1e-7), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], 0, atol=1e-6)


def test_pad_right_pads_with_zeros_and_marks_real_samples():
    """pad gives a [B, max S] float32 batch, zeros after each input, and a mask True on real samples."""
    arrays = [np.array([1, 2, 3], np.float32), np.array([4, 5, 6, 7, 8], np.float32), np.array([9], np.float32)]

    batch, mask = audio.pad(arrays)

    assert batch.dtype == np.float32 and batch.shape == (3, 5) and mask.dtype == bool
    np.testing.assert_array_equal(batch, [[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 10])
def test_batches_by_length_sorts_longest_first(batch_size):
    """Every index exactly once, longest first, full batches then one remainder."""
    lengths = [5, 1, 9, 3, 7, 2, 8]

    batches = audio.batches_by_length(lengths, batch_size)

    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    full, rest = divmod(len(lengths), batch_size)
    assert [len(b) for b in batches] == [batch_size] * full + ([rest] if rest else [])


# ---------------------------------------------------------------------------
# Bad inputs: an AudioError naming the file and the problem


def _empty(p):
    p.write_bytes(b"")


def _header_only_wav(p):
    sf.write(str(p), np.zeros((0, 1)), 16000, subtype="PCM_16")


def _header_only_aiff(p):
    sf.write(str(p), np.zeros((0, 1)), 16000, format="AIFF", subtype="PCM_16")


def _text(p):
    p.write_text("this is a text file, not audio\n" * 20)


def _with(value, rate=16000, subtype="FLOAT"):
    def make(p):
        x = tone(2000, rate)
        x[1000] = value
        sf.write(str(p), x, rate, subtype=subtype)
    return make


def _short(frames, rate):
    def make(p):
        sf.write(str(p), tone(frames, rate), rate, subtype="PCM_16")
    return make


def _folder(p):
    p.mkdir()


BAD = {
    "empty-file": (_empty, "empty file"),
    "header-only-wav": (_header_only_wav, "no audio samples"),
    "header-only-aiff": (_header_only_aiff, "no audio samples"),
    "text-as-wav": (_text, "not readable as audio"),
    "nan-float": (_with(np.nan), "NaN"),
    "nan-double-22050": (_with(np.nan, 22050, "DOUBLE"), "NaN"),
    "inf-float": (_with(np.inf), "infinite"),
    "minus-inf-double": (_with(-np.inf, 16000, "DOUBLE"), "infinite"),
    "300-samples-16k": (_short(300, 16000), "fewer than the 400"),
    "199-samples-8k": (_short(199, 8000), "fewer than the 400"),
    "missing": (lambda p: None, "no such file"),
    "folder": (_folder, "a folder"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_raises_audio_error_naming_path_and_problem(tmp_path, case):
    """Each bad input gives an AudioError (a ValueError) whose message has the path and the problem."""
    make, problem = BAD[case]
    path = tmp_path / f"{case}.wav" if "aiff" not in case else tmp_path / f"{case}.aiff"
    make(path)

    with pytest.raises(audio.AudioError) as caught:
        audio.load(str(path), TARGET, MIN_SAMPLES)

    assert isinstance(caught.value, ValueError)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


@pytest.mark.parametrize("frames,rate", [(400, 16000), (200, 8000)])
def test_exactly_one_frame_is_enough(tmp_path, frames, rate):
    """400 samples at 16 kHz (or 200 at 8 kHz, 400 after resampling) are accepted."""
    path = write(tmp_path / "one_frame.wav", tone(frames, rate), rate, "WAV", "PCM_16")

    assert len(audio.load(path, TARGET, MIN_SAMPLES)) == 400


@pytest.mark.parametrize("case,problem", [("empty-file", "empty file"), ("text-as-wav", "not readable as audio"),
                                          ("missing", "no such file"), ("folder", "a folder")])
def test_info_on_bad_input_raises_audio_error(tmp_path, case, problem):
    """audio.info refuses unreadable inputs with the same messages as load."""
    path = tmp_path / f"{case}.wav"
    BAD[case][0](path)

    with pytest.raises(audio.AudioError) as caught:
        audio.info(str(path))

    assert str(path) in str(caught.value) and problem in str(caught.value)


# ---------------------------------------------------------------------------
# Warnings: truncation and clipping


@pytest.mark.parametrize("channels", [1, 2])
def test_truncated_wav_loads_with_a_warning(tmp_path, channels):
    """A PCM_16 WAV missing its last 30% of bytes still loads; a warning gives declared and available bytes."""
    frames = 16000
    signal = tone(frames, TARGET, channels)
    path = tmp_path / "cut.wav"
    sf.write(str(path), signal, TARGET, subtype="PCM_16")
    whole = path.read_bytes()
    path.write_bytes(whole[:int(len(whole) * 0.7)])
    data_start = whole.index(b"data") + 8
    declared = frames * 2 * channels
    available = int(len(whole) * 0.7) - data_start

    with pytest.warns(audio.AudioWarning, match="truncated") as record:
        x = audio.load(str(path), TARGET, MIN_SAMPLES)

    message = str(record[0].message)
    assert str(path) in message and str(declared) in message and str(available) in message
    kept = available // (2 * channels)
    assert len(x) == kept
    np.testing.assert_allclose(x, signal[:kept].mean(axis=1), rtol=0, atol=1e-4)


def test_clipped_signal_warns(tmp_path):
    """5% of the samples at +-1.0 gives an AudioWarning saying the recording is clipped."""
    x = tone(16000, TARGET)
    picked = np.random.default_rng(3).choice(16000, 800, replace=False)
    x[picked, 0] = np.where(np.arange(800) % 2, 1.0, -1.0)
    path = write(tmp_path / "clipped.wav", x, TARGET, "WAV", "PCM_16")

    with pytest.warns(audio.AudioWarning, match="clipped") as record:
        audio.load(path, TARGET, MIN_SAMPLES)

    assert str(path) in str(record[0].message)


def test_hard_clipped_44k_recording_warns(tmp_path):
    """A loud tone hard-clipped at +-1 in a 44.1 kHz file (flat tops) is reported as clipped."""
    x = np.clip(3 * tone(44100, 44100), -1, 1)
    path = write(tmp_path / "loud.wav", x, 44100, "WAV", "PCM_16")

    with pytest.warns(audio.AudioWarning, match="clipped"):
        audio.load(path, TARGET, MIN_SAMPLES)


def test_clipping_is_judged_on_the_file_samples(tmp_path):
    """5% of a 44.1 kHz file's samples at +-1.0 is clipping too, whatever the model's rate."""
    x = tone(44100, 44100)
    picked = np.random.default_rng(3).choice(44100, 2205, replace=False)
    x[picked, 0] = np.where(np.arange(2205) % 2, 1.0, -1.0)
    path = write(tmp_path / "clipped44k.wav", x, 44100, "WAV", "PCM_16")

    with pytest.warns(audio.AudioWarning, match="clipped"):
        audio.load(path, TARGET, MIN_SAMPLES)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_clean_signal_gives_no_warning(tmp_path, rate):
    """A clean complete file loads without any AudioWarning."""
    path = write(tmp_path / "clean.wav", tone(rate, rate), rate, "WAV", "PCM_16")

    with warnings.catch_warnings():
        warnings.simplefilter("error", audio.AudioWarning)
        audio.load(path, TARGET, MIN_SAMPLES)


def test_unreadable_file_is_refused_with_its_cause(tmp_path, monkeypatch):
    """A permission problem reads as one (libsndfile would say "System error.")."""
    path = tmp_path / "locked.wav"
    sf.write(path, np.zeros(1000, np.float32), 16000)
    monkeypatch.setattr(audio.os, "access", lambda p, mode: False)  # as a user without read permission sees it
    for read in (audio.info, audio.read, audio.scan):
        with pytest.raises(audio.AudioError, match="locked.wav: permission denied"):
            read(path)


@pytest.mark.parametrize("rate, plausible", [(999, False), (1000, True), (1_000_000, True), (1_000_001, False)])
def test_header_rates_outside_1_khz_to_1_mhz_are_refused(tmp_path, rate, plausible):
    path = tmp_path / "rate.wav"
    sf.write(path, np.zeros(4000, np.float32), rate, subtype="FLOAT")
    if plausible:
        assert audio.info(path).rate == rate and audio.read(path)[1] == rate
        return
    for read in (audio.info, audio.read):
        with pytest.raises(audio.AudioError, match=f"rate.wav: its header says {rate} Hz"):
            read(path)


def test_scan_counts_clipping_and_finds_the_first_nan_block_by_block(tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "SCAN_FRAMES", 1000)  # 10 blocks, the NaN in the eighth
    x = 0.1 * np.sin(np.arange(10000) / 7.0)
    x[5000:5100] = 1.0
    x[7321] = np.nan
    stereo = np.stack([x, x], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    assert audio.scan(tmp_path / "s.wav") == audio.Scan(frames=10000, clipped=100, first_not_finite=7321)
    sf.write(tmp_path / "clean.wav", stereo[:7000], 16000, subtype="FLOAT")
    assert audio.scan(tmp_path / "clean.wav").first_not_finite is None


def test_nan_is_located_before_resampling(tmp_path):
    x = 0.1 * np.sin(np.arange(44100) / 7.0)
    x[33075] = np.nan  # 0.75 s at 44.1 kHz
    sf.write(tmp_path / "n.wav", x.astype(np.float32), 44100, subtype="FLOAT")
    with pytest.raises(audio.AudioError, match=r"n.wav: 1 sample is NaN or infinite, the first at 0.75 s"):
        audio.load(tmp_path / "n.wav", 16000, 400)
