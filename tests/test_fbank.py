"""w2v-BERT 2.0's filter-bank front end (npw2v2.core.fbank) against transformers' SeamlessM4TFeatureExtractor,
recorded by golden/record_fbank.py: each input alone, a padded batch, features without normalisation, the
frame counts, and the inputs refused (too short, another rate, not a mono float waveform)."""
import json
from functools import lru_cache

import numpy as np
import pytest
from safetensors.numpy import load_file

import stand_in_device
from golden import GOLDEN
from npw2v2.core import fbank
from npw2v2.core.fbank import fbank_batch, feature_lengths, frame_lengths, padded_length
from stand_in_device import DeviceArray

DATA = GOLDEN / "fbank"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
INPUTS = list(MANIFEST["inputs"])
# Tolerance. With the NumPy that recorded them, npw2v2's features are the extractor's bit for bit
# (test_bit_for_bit_with_the_recording_numpy): it follows the extractor's dtype path step for step (float64
# frames, the spectrum rounded to complex64, float64 mel energies and log, float32 statistics) and sums the
# statistics in its order. Elsewhere the float64 steps (FFT, log, the mel product: NumPy's and BLAS's own code)
# may differ in a last bit, which the cast to float32 almost always absorbs. Log-mel energies are compared within
# 1e-5, five float32 units in the last place of the largest (about 26); normalised features within 1e-5 divided
# by their bin's spread over the utterance, since the normalisation divides any error in the energies by it (the
# spread goes down to 0.07 in the steady synthetic tones, 0.004 for the two-frame input).
LOG_MEL_ATOL = 1e-5


@lru_cache(maxsize=1)
def recorded() -> dict:
    return load_file(str(DATA / "fbank.safetensors"))


def waveform(name: str) -> np.ndarray:
    """The recorded input as the extractor got it: 16-bit PCM / 32768, float32."""
    return recorded()[f"input.{name}"].astype(np.float32) / 32768


def tolerance(names: list[str], normalize: bool, num_mel_bins: int = 80) -> np.ndarray:
    """[B, 1, 2M]: LOG_MEL_ATOL, divided by each bin's spread sqrt(var + 1e-7) when the features are normalised."""
    if not normalize:
        return np.full((len(names), 1, 2 * num_mel_bins), LOG_MEL_ATOL)
    spread = [np.sqrt(fbank.log_mel(waveform(name), num_mel_bins).var(axis=0, ddof=1) + fbank.NORM_EPS)
              for name in names]
    return LOG_MEL_ATOL / np.tile(np.stack(spread), 2)[:, None, :]  # the stacked row is two frames' M bins


def assert_extractors(prefix: str, names: list[str], normalize: bool = True, exact: bool = False,
                      num_mel_bins: int = 80) -> None:
    """fbank_batch of the named inputs against the extractor's recorded features and mask, padding included."""
    features, mask = fbank_batch([waveform(name) for name in names], normalize=normalize,
                                 num_mel_bins=num_mel_bins)
    expected, expected_mask = recorded()[f"{prefix}.input_features"], recorded()[f"{prefix}.attention_mask"]
    assert features.dtype == np.float32 and mask.dtype == bool
    assert features.shape == expected.shape and mask.shape == expected_mask.shape
    np.testing.assert_array_equal(mask, expected_mask.astype(bool))
    if exact:
        np.testing.assert_array_equal(features, expected)
    else:
        error = np.abs(features - expected)
        assert np.all(error <= tolerance(names, normalize, num_mel_bins)), f"{prefix}: max difference {error.max():.3g}"


@pytest.mark.parametrize("name", INPUTS)
def test_each_input_alone_is_the_extractors(name):
    """Features and mask, padding included (an odd last frame half real, half padding value, masked)."""
    assert_extractors(f"single.{name}", [name])


def test_padded_batch_is_the_extractors():
    assert_extractors("batch", MANIFEST["batch"])


def test_forty_mel_bins_are_the_extractors():
    """An extractor built with num_mel_bins 40: 80 features per vector."""
    assert_extractors("narrow", MANIFEST["narrow_batch"], num_mel_bins=MANIFEST["narrow"]["num_mel_bins"])


def test_features_without_normalisation_are_the_extractors():
    """do_normalize_per_mel_bins=False: the log-mel energies as they are."""
    assert_extractors("unnormalized", MANIFEST["unnormalized_batch"], normalize=False)


@pytest.mark.skipif(np.__version__ != MANIFEST["versions"]["numpy"], reason="recorded with another NumPy")
def test_bit_for_bit_with_the_recording_numpy():
    """Same NumPy, same numbers: nothing is left to the tolerance (the complex64 rounding of the spectrum,
    the float64 steps, the order of the sums)."""
    for name in INPUTS:
        assert_extractors(f"single.{name}", [name], exact=True)
    assert_extractors("batch", MANIFEST["batch"], exact=True)
    assert_extractors("unnormalized", MANIFEST["unnormalized_batch"], normalize=False, exact=True)
    assert_extractors("narrow", MANIFEST["narrow_batch"], num_mel_bins=MANIFEST["narrow"]["num_mel_bins"], exact=True)


@pytest.mark.parametrize("normalize", [True, False])
def test_each_item_of_a_batch_is_its_features_alone(normalize):
    """The real rows of a padded item are fbank() of it alone, exactly; the fully padded rows hold the padding value."""
    names = MANIFEST["batch"]
    features, mask = fbank_batch([waveform(name) for name in names], normalize=normalize)
    for i, name in enumerate(names):
        alone = fbank.fbank(waveform(name), normalize=normalize)
        assert alone.shape == (feature_lengths(len(waveform(name))), 160)
        np.testing.assert_array_equal(features[i][mask[i]], alone)
        half_real = frame_lengths(len(waveform(name))) % 2  # an odd last frame: its row is half padding
        assert np.all(features[i, mask[i].sum() + half_real:] == fbank.PADDING_VALUE)


def test_padding_value_changes_only_the_padding():
    """Fine-tunes of w2v-BERT often say padding_value 0.0: the same features, other padding."""
    waveforms = [waveform(name) for name in MANIFEST["batch"]]
    ones, mask = fbank_batch(waveforms)
    zeros, same_mask = fbank_batch(waveforms, padding_value=0.0)
    np.testing.assert_array_equal(mask, same_mask)
    padding = ones != zeros
    assert padding.any() and np.all(ones[padding] == 1) and np.all(zeros[padding] == 0)
    assert not padding[mask].any()


def test_options_from_the_preprocessor_config():
    """facebook/w2v-bert-2.0's preprocessor_config.json (as recorded) gives padding 1 and 80 bins; transformers'
    defaults fill absent keys; what these functions do not compute is refused, naming the key."""
    assert fbank.preprocessor_options(MANIFEST["preprocessor"]) == {"padding_value": 1.0, "num_mel_bins": 80}
    assert fbank.preprocessor_options({}) == {"padding_value": 0.0, "num_mel_bins": 80}
    assert fbank.preprocessor_options({**MANIFEST["preprocessor"], **MANIFEST["narrow"]})["num_mel_bins"] == 40
    for key, value in [("stride", 3), ("sampling_rate", 8000), ("padding_side", "left"),
                       ("feature_extractor_type", "Wav2Vec2FeatureExtractor")]:
        with pytest.raises(ValueError, match=f"preprocessor {key} {value!r} is not supported"):
            fbank.preprocessor_options({**MANIFEST["preprocessor"], key: value})
    for bad in (0, 80.0, True, "80"):
        with pytest.raises(ValueError, match="num_mel_bins must be a positive integer"):
            fbank.preprocessor_options({"num_mel_bins": bad})


def test_frame_counts_are_the_extractors():
    """samples -> frames -> feature vectors: the extractor's shapes and masks, for every recorded input."""
    for name in INPUTS:
        n = MANIFEST["inputs"][name]["samples"]
        mask = recorded()[f"single.{name}.attention_mask"]
        assert padded_length([n]) == mask.shape[1] and feature_lengths([n])[0] == mask.sum()
    lengths = [MANIFEST["inputs"][name]["samples"] for name in MANIFEST["batch"]]
    mask = recorded()["batch.attention_mask"]
    assert padded_length(lengths) == mask.shape[1]
    np.testing.assert_array_equal(feature_lengths(lengths), mask.sum(axis=1))
    for n, outcome in MANIFEST["short_inputs"].items():  # those the extractor did not fail on
        if "shape" in outcome:
            assert padded_length([int(n)]) == outcome["shape"][1]
            assert feature_lengths([int(n)])[0] == np.sum(outcome["attention_mask"])


def test_frame_count_formula():
    """1 + floor((S - 400) / 160) frames of 25 ms every 10 ms, 0 below 400 samples; half as many feature vectors."""
    samples = [0, 239, 399, 400, 559, 560, 719, 720, 4800, 16000, 16079, 16080, 21923]
    np.testing.assert_array_equal(frame_lengths(samples), [0, 0, 0, 1, 1, 2, 2, 3, 28, 98, 98, 99, 135])
    np.testing.assert_array_equal(feature_lengths(samples), [0, 0, 0, 0, 0, 1, 1, 1, 14, 49, 49, 49, 67])
    assert padded_length(samples) == 68  # 135 frames, padded to 136
    assert fbank.MIN_SAMPLES == 560


@pytest.mark.parametrize("n", [int(n) for n in MANIFEST["short_inputs"]])
def test_inputs_without_a_feature_vector_are_refused(n):
    """The extractor fails below 240 samples, gives no frame up to 399, and a NaN frame, masked, up to 559:
    npw2v2 refuses exactly the inputs for which it gives no real feature vector, naming the item."""
    outcome = MANIFEST["short_inputs"][str(n)]
    no_vector = "error" in outcome or not np.any(outcome["attention_mask"])
    x = np.random.RandomState(n).uniform(-0.1, 0.1, n).astype(np.float32)
    if not no_vector:
        assert fbank.fbank(x).shape == (1, 160) and np.isfinite(fbank_batch([x])[0]).all()
        return
    with pytest.raises(ValueError, match=f"at least 560 samples .* but item 0 has {n}$"):
        fbank.fbank(x)
    with pytest.raises(ValueError, match=f"but item 1 has {n}$"):
        fbank_batch([waveform("s0_3"), x])


def test_an_empty_batch_is_refused():
    for empty in ([], (), np.zeros((0, 16000), np.float32)):
        with pytest.raises(ValueError, match="non-empty list of waveforms"):
            fbank_batch(empty)


@pytest.mark.parametrize("rate", [int(rate) for rate in MANIFEST["other_rates"]])
def test_other_rates_are_refused_as_the_extractor_refuses_them(rate):
    assert MANIFEST["other_rates"][str(rate)].startswith("ValueError")
    with pytest.raises(ValueError, match=f"defined at 16000 Hz, but the audio is at {rate} Hz: resample"):
        fbank.fbank(waveform("s0_3"), sampling_rate=rate)
    with pytest.raises(ValueError, match=f"at {rate} Hz"):
        fbank_batch([waveform("s0_3")], sampling_rate=rate)


def test_only_mono_floating_point_waveforms():
    """Stereo (the extractor would silently take the first channel) and integer PCM (it would scale int16
    samples by 32768 a second time) are refused."""
    x = waveform("s0_3")
    with pytest.raises(ValueError, match=r"the waveform must be one mono channel \[S\], got shape \(2, 4800\)"):
        fbank.fbank(np.stack([x, x]))
    with pytest.raises(ValueError, match="item 1 must be one mono channel"):
        fbank_batch([x, np.stack([x, x])])
    with pytest.raises(ValueError, match=r"floating-point samples .* got int16 \(divide 16-bit PCM by 32768\)"):
        fbank.fbank(recorded()["input.s0_3"])


def test_float64_is_rounded_to_float32_first():
    """As the extractor does: float64 audio gives what its float32 rounding gives."""
    x = np.random.RandomState(0).uniform(-0.5, 0.5, 4000)
    features = fbank.fbank(x)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, fbank.fbank(x.astype(np.float32)))


def test_blocks_of_frames_change_no_number():
    """log_mel takes long audio a block of frames at a time (bounded memory): any block size gives the same
    numbers, which are the extractor's (s0_3's 28 frames in blocks of 5, the last one short)."""
    x = waveform("s0_3")
    whole = fbank.log_mel(x)
    for block in (1, 5, 27):
        np.testing.assert_array_equal(fbank.log_mel(x, block=block), whole)
    expected = recorded()["unnormalized.input_features"][MANIFEST["unnormalized_batch"].index("s0_3")]
    assert np.abs(fbank.stack_frames(fbank.log_mel(x, block=5)) - expected).max() <= LOG_MEL_ATOL


def test_digital_silence_sits_on_the_floor():
    """Zeros have no energy: every log-mel value is ln(float32 epsilon) = -15.94, never -inf."""
    logs = fbank.log_mel(np.zeros(1000, np.float32))
    assert logs.shape == (4, 80) and np.all(logs == np.float32(np.log(np.finfo(np.float32).eps)))


def test_on_the_stand_in_device():
    """The whole front end takes its array module from the waveform (CuPy's functions by name): on the strict
    stand-in, which refuses any NumPy call on a device array, it gives the host's numbers."""
    names = MANIFEST["batch"]
    features, mask = fbank_batch([stand_in_device.device.asarray(waveform(name)) for name in names])
    assert isinstance(features, DeviceArray) and isinstance(mask, DeviceArray)
    host_features, host_mask = fbank_batch([waveform(name) for name in names])
    np.testing.assert_array_equal(features.get(), host_features)
    np.testing.assert_array_equal(mask.get(), host_mask)
    alone = fbank.fbank(stand_in_device.device.asarray(waveform("s0_3")))
    np.testing.assert_array_equal(alone.get(), fbank.fbank(waveform("s0_3")))
