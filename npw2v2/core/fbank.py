"""w2v-BERT 2.0's front end: a 16 kHz waveform to 160 log-mel features every 20 ms.

w2v-BERT 2.0 has no convolutional feature encoder: its feature extractor (transformers'
SeamlessM4TFeatureExtractor, what ``AutoFeatureExtractor`` gives for facebook/w2v-bert-2.0)
computes Kaldi-style filter banks, and the model projects them. Per utterance:

1. Scale to the 16-bit range (x 32768): Kaldi's features are defined on integer samples.
2. Frames of 400 samples (25 ms) every 160 (10 ms), from the first sample, no padding:
   ``1 + (S - 400) // 160`` frames.
3. Each frame: subtract its mean (DC offset), pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``
   (``y[0] = 0.03 x[0]``), multiply by the Povey window (a symmetric Hann window to the power 0.85).
4. Power spectrum: ``|rfft|^2`` of the frame zero-padded to 512, 257 bins of 31.25 Hz.
5. 80 triangular filters evenly spaced on Kaldi's mel scale (``1127 ln(1 + f / 700)``) from
   20 Hz to 8 kHz, triangular in mel, unnormalised; floored at float32's epsilon, natural log.
6. Each mel bin to zero mean and unit variance over the utterance's frames, with the sample
   variance (ddof=1) and 1e-7 under the square root.
7. Frames stacked in pairs: [T, 80] -> [T // 2, 160], one feature vector every 20 ms.

A padded batch pads the normalised 80-bin frames with the preprocessor's ``padding_value``
(1 for facebook/w2v-bert-2.0, 0 for many fine-tunes) to an even count before stacking; a
stacked frame is real when both its halves are (an odd last frame is half real and masked).
Statistics never see the padding, so each item of a batch gets its features alone.

**dtype.** The extractor rounds the waveform to float32, then promotes each frame to float64
("np.fft uses float64 internally"), but stores the FFT in a complex64 array: the spectrum is
rounded to complex64 before its magnitude, which is taken again in float64, as are the mel
product, the floor and the log; the log-mel is cast to float32 and normalised in float32.
These float64 steps are kept on purpose: they are what the extractor computes, and with
NumPy's own reductions in the same memory order they reproduce its output bit for bit.

Mirrors SeamlessM4TFeatureExtractor.__call__ (with transformers.audio_utils' spectrogram,
mel_filter_bank and window_function) at its defaults: no dither, ``pad_to_multiple_of=2``,
``do_normalize_per_mel_bins=True``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .backend import get_xp, sliding_window_view

SAMPLING_RATE = 16000  # the only rate the extractor accepts
FRAME_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
FFT_LENGTH = 512  # 257 frequency bins
NUM_MEL_BINS = 80
MIN_FREQUENCY = 20.0  # Hz; the top filter ends at the Nyquist frequency
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32's epsilon, as a float64
NORM_EPS = 1e-7
STRIDE = 2  # 80-bin frames per feature vector
PADDING_VALUE = 1.0  # facebook/w2v-bert-2.0's preprocessor_config.json; transformers' default is 0.0
# The shortest input with one feature vector: two frames.
MIN_SAMPLES = FRAME_LENGTH + (STRIDE - 1) * HOP_LENGTH  # 560 samples, 35 ms
FRAMES_PER_BLOCK = 4096  # 41 s of audio at a time: bounds the float64 temporaries of log_mel


# ---------------------------------------------------------------------------- lengths


def frame_lengths(sample_lengths):
    """Number of 25 ms frames in each input: S -> 1 + floor((S - 400) / 160), 0 below 400. [B] -> [B].

    16000 samples give 98 frames. Mirrors the frame count of transformers.audio_utils.spectrogram
    (center=False), which goes negative, and fails, below 240 samples; here it stops at 0.
    """
    lengths = np.asarray(sample_lengths, dtype=np.int64)
    return np.maximum((lengths - FRAME_LENGTH) // HOP_LENGTH + 1, 0)


def feature_lengths(sample_lengths):
    """Number of real (stacked) feature vectors in each input: frames // 2. [B] -> [B].

    16000 samples give 49. The extractor marks a stacked frame real when its second half is,
    so an odd last frame is padding. Mirrors the attention_mask of SeamlessM4TFeatureExtractor.
    """
    return frame_lengths(sample_lengths) // STRIDE


def padded_length(sample_lengths) -> int:
    """Feature vectors in a padded batch: the longest input's frames, rounded up to even, halved."""
    return int(-(-frame_lengths(sample_lengths).max() // STRIDE))


# ---------------------------------------------------------------------------- the filters and the window


def kaldi_mel(hz):
    """Hertz to Kaldi's mel scale, 1127 ln(1 + f / 700) (the natural-log form of HTK's 2595 log10)."""
    return 1127.0 * np.log(1.0 + hz / 700.0)


@lru_cache(maxsize=4)
def mel_filter_bank(num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
    """The filters as a [257, M] float64 matrix: power spectrum [T, 257] @ bank -> mel energies [T, M].

    M triangles whose corners are M + 2 points evenly spaced in mel from 20 Hz to 8 kHz; each
    FFT bin's weight is read off the triangle at the bin's frequency in mel (so the triangles
    are straight in mel, curved in hertz), with no area normalisation. Only the shape of the
    scale matters: its factor 1127 cancels in the slopes (HTK's 2595 log10 gives the same bank,
    to rounding). Mirrors mel_filter_bank(mel_scale="kaldi", triangularize_in_mel_space=True, norm=None).
    """
    corners = np.linspace(kaldi_mel(MIN_FREQUENCY), kaldi_mel(SAMPLING_RATE / 2), num_mel_bins + 2)
    bins = kaldi_mel(np.arange(FFT_LENGTH // 2 + 1) * (SAMPLING_RATE / FFT_LENGTH))[:, None]  # [257, 1]
    left, centre, right = corners[:-2], corners[1:-1], corners[2:]  # [M] each
    rising = (bins - left) / (centre - left)  # [257, M]
    falling = (right - bins) / (right - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank.flags.writeable = False  # shared by every call (cached)
    return bank


@lru_cache(maxsize=1)
def povey_window() -> np.ndarray:
    """Kaldi's default window, a symmetric Hann window to the power 0.85: [400] float64.

    Like Hann it goes to zero at both ends, but it is fatter in the middle.
    Mirrors window_function(400, "povey", periodic=False).
    """
    window = np.hanning(FRAME_LENGTH) ** 0.85
    window.flags.writeable = False
    return window


# ---------------------------------------------------------------------------- one utterance


def frames(waveform):
    """The 25 ms frames of a waveform, 10 ms apart: [S] -> [T, 400], a view (nothing is copied)."""
    n = int(frame_lengths(waveform.shape[0]))
    return sliding_window_view(waveform, FRAME_LENGTH, axis=0)[::HOP_LENGTH][:n]


def prepare_frames(x):
    """Kaldi's 16-bit scale, DC offset removed, pre-emphasis, Povey window: [T, 400] float32 -> [T, 400] float64.

    In float64 because the extractor computes every frame in float64 (it scales the float32
    waveform by 2**15 first: exact in either precision). Mirrors the per-frame steps of
    spectrogram(remove_dc_offset=True, preemphasis=0.97).
    """
    xp = get_xp(x)
    x = x.astype(np.float64) * 2**15
    x = x - x.mean(axis=-1, keepdims=True)
    # The first sample has no predecessor in the frame: Kaldi scales it by 1 - 0.97 instead
    # (which changes nothing in the end: the Povey window is 0 there).
    x = xp.concatenate([x[:, :1] * (1 - PREEMPHASIS), x[:, 1:] - PREEMPHASIS * x[:, :-1]], axis=-1)
    return x * xp.asarray(povey_window())


def power_spectrum(x):
    """|FFT|^2 of each frame zero-padded to 512 samples: [T, 400] float64 -> [T, 257] float64.

    The FFT is rounded to complex64 first, as the extractor stores it, then its magnitude is
    taken in float64: that rounding is part of the numbers being matched.
    """
    xp = get_xp(x)
    spectrum = xp.fft.rfft(x, n=FFT_LENGTH, axis=-1).astype(np.complex64)  # [T, 257]
    return xp.abs(spectrum.astype(np.complex128)) ** 2


def log_mel(waveform, num_mel_bins: int = NUM_MEL_BINS, block: int = FRAMES_PER_BLOCK):
    """Log mel filter-bank energies of one waveform: [S] float32 -> [T, M] float32 (M = 80).

    Energies below float32's epsilon are raised to it before the log, so digital silence
    gives ln(1.19e-7) = -15.94 rather than -inf. Frames go through in blocks of ``block``,
    so the float64 work stays near 50 MB however long the audio; every frame is computed on
    its own, so the blocks change no number.
    Mirrors SeamlessM4TFeatureExtractor._extract_fbank_features.
    """
    xp = get_xp(waveform)
    framed = frames(waveform)  # [T, 400]
    bank = xp.asarray(mel_filter_bank(num_mel_bins))  # [257, M]
    out = xp.empty((framed.shape[0], num_mel_bins), dtype=np.float32)
    for start in range(0, framed.shape[0], block):
        energies = power_spectrum(prepare_frames(framed[start:start + block])) @ bank  # [block, M] float64
        out[start:start + block] = xp.log(xp.maximum(energies, MEL_FLOOR))  # rounded to float32
    return out


def normalize_bins(features):
    """Each bin to zero mean and unit variance over the frames: [T, M] float32 -> [T, M] float32.

    ``(x - mean) / sqrt(var + 1e-7)`` with the sample variance (ddof=1: the extractor copies
    torch's default), over every frame of the utterance, including an odd last one that the
    stacking will mask. One frame has no sample variance: callers refuse such inputs.
    """
    xp = get_xp(features)
    # The statistics are summed along contiguous memory, as in the extractor (its features
    # are a transposed [M, T] array): NumPy then adds in the same (pairwise) order. It matters
    # for a bin that is constant over the utterance (digital silence at the floor): its
    # rounding noise is all that is left, and the division by sqrt(1e-7) magnifies it 3162 times.
    bins = xp.ascontiguousarray(features.T)  # [M, T]
    mean = bins.mean(axis=1, keepdims=True)  # [M, 1]
    var = bins.var(axis=1, ddof=1, keepdims=True)
    return ((bins - mean) / xp.sqrt(var + NORM_EPS)).T  # [T, M]


def stack_frames(features):
    """Consecutive pairs of frames side by side: [..., T, M] -> [..., T // 2, 2M]; an odd last frame is dropped.

    Row k is frame 2k followed by frame 2k + 1. Mirrors the reshape in SeamlessM4TFeatureExtractor.__call__.
    """
    *lead, t, m = features.shape
    return features[..., :t - t % STRIDE, :].reshape(*lead, t // STRIDE, m * STRIDE)


def mel_features(waveform, normalize: bool = True, num_mel_bins: int = NUM_MEL_BINS):
    """One checked waveform's M-bin frames, normalised per bin unless ``normalize`` is False: [S] -> [T, M] float32."""
    features = log_mel(waveform, num_mel_bins)
    return normalize_bins(features) if normalize else features


def fbank(waveform, *, sampling_rate: int = SAMPLING_RATE, normalize: bool = True,
          num_mel_bins: int = NUM_MEL_BINS):
    """w2v-BERT's input features of one utterance: [S] float (16 kHz) -> [T, 2M] float32, T = feature_lengths(S).

    Only real feature vectors: an odd last 25 ms frame, which the extractor pads and masks,
    is left out. The same numbers as row i of fbank_batch's features where its mask is True.
    """
    waveform = checked_waveform(waveform, sampling_rate)
    check_long_enough([waveform.shape[0]])
    return stack_frames(mel_features(waveform, normalize, num_mel_bins))


# ---------------------------------------------------------------------------- batches


def fbank_batch(waveforms, *, sampling_rate: int = SAMPLING_RATE, normalize: bool = True,
                padding_value: float = PADDING_VALUE, num_mel_bins: int = NUM_MEL_BINS):
    """Input features and mask of several utterances: a list of [S_i] -> ([B, T, 2M] float32, [B, T] bool), M = 80.

    T = padded_length(S): each item's frames are padded with ``padding_value`` to the longest
    item's frame count rounded up to even, then stacked; mask[b, t] is True where both frames
    of stacked frame t are real. Each item is normalised over its own frames, so its real rows
    are fbank() of it alone. Mirrors SeamlessM4TFeatureExtractor.__call__ on a list (its
    input_features and attention_mask), which it matches for one waveform too.
    """
    if isinstance(waveforms, (str, bytes)) or not hasattr(waveforms, "__len__") or len(waveforms) == 0:
        raise ValueError("fbank_batch needs a non-empty list of waveforms")
    waveforms = [checked_waveform(w, sampling_rate, f"item {i}") for i, w in enumerate(waveforms)]
    sample_lengths = [w.shape[0] for w in waveforms]
    check_long_enough(sample_lengths)
    xp = get_xp(waveforms[0])
    padded = xp.full((len(waveforms), STRIDE * padded_length(sample_lengths), num_mel_bins), padding_value,
                     dtype=np.float32)  # [B, 2T, M]
    for row, waveform in zip(padded, waveforms):
        features = mel_features(waveform, normalize, num_mel_bins)
        row[:features.shape[0]] = features
    mask = xp.arange(padded.shape[1] // STRIDE)[None, :] < xp.asarray(feature_lengths(sample_lengths))[:, None]
    return stack_frames(padded), mask  # [B, T, 2M], [B, T]


# ---------------------------------------------------------------------------- settings


def preprocessor_options(preprocessor: dict) -> dict:
    """fbank_batch's keyword arguments from a preprocessor_config.json of SeamlessM4TFeatureExtractor.

    {"padding_value": ..., "num_mel_bins": ...}, with transformers' defaults (0.0, 80) for
    absent keys; ValueError naming the key for a setting these functions do not compute
    (another extractor, rate, stride or padding side).
    """
    kind = preprocessor.get("feature_extractor_type", "SeamlessM4TFeatureExtractor")
    fixed = {"feature_extractor_type": ("SeamlessM4TFeatureExtractor", kind),
             "sampling_rate": (SAMPLING_RATE, preprocessor.get("sampling_rate", SAMPLING_RATE)),
             "stride": (STRIDE, preprocessor.get("stride", STRIDE)),
             "padding_side": ("right", preprocessor.get("padding_side", "right"))}
    for key, (supported, value) in fixed.items():
        if value != supported:
            raise ValueError(f"preprocessor {key} {value!r} is not supported: w2v-BERT's filter banks "
                             f"are computed with {key} {supported!r}")
    num_mel_bins = preprocessor.get("num_mel_bins", NUM_MEL_BINS)
    if not isinstance(num_mel_bins, int) or isinstance(num_mel_bins, bool) or num_mel_bins < 1:
        raise ValueError(f"preprocessor num_mel_bins must be a positive integer, got {num_mel_bins!r}")
    return {"padding_value": float(preprocessor.get("padding_value", 0.0)), "num_mel_bins": num_mel_bins}


# ---------------------------------------------------------------------------- checks


def checked_waveform(waveform, sampling_rate: int, name: str = "the waveform"):
    """A mono floating-point waveform at 16 kHz as float32 ([S]); ValueError for anything else.

    Float64 is rounded to float32 first, as the extractor does. Integer PCM is refused rather
    than taken as floats: the extractor would multiply int16 samples by 32768 a second time.
    """
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"w2v-BERT's filter banks are defined at {SAMPLING_RATE} Hz, but the audio is at "
                         f"{sampling_rate} Hz: resample it to {SAMPLING_RATE} Hz first")
    xp = get_xp(waveform)
    waveform = xp.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"{name} must be one mono channel [S], got shape {tuple(waveform.shape)}")
    if not np.issubdtype(waveform.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point samples in [-1, 1], got {waveform.dtype} "
                         f"(divide 16-bit PCM by 32768)")
    return waveform.astype(np.float32, copy=False)


def check_long_enough(sample_lengths) -> None:
    """Refuse inputs with no feature vector: fewer than 560 samples (two 25 ms frames 10 ms apart).

    The extractor fails on fewer than 240 samples, returns no frames for 240 to 399, and for
    400 to 559 one frame whose sample variance is 0/0 (NaN features, masked).
    """
    short = [(i, int(n)) for i, n in enumerate(sample_lengths) if n < MIN_SAMPLES]
    if short:
        items = ", ".join(f"item {i} has {n}" for i, n in short)
        raise ValueError(f"input too short: w2v-BERT's filter banks need at least {MIN_SAMPLES} samples "
                         f"({MIN_SAMPLES * 1000 // SAMPLING_RATE} ms) for one feature vector, but {items}")
