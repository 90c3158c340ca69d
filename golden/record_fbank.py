"""Record transformers' w2v-BERT 2.0 feature extractor for npw2v2's filter-bank tests (golden/data/fbank/).

Run in the golden environment (transformers 5, torch), from the repository root:

    python golden/record_fbank.py    # rewrites golden/data/fbank/ (a second, 0.4 MB)

The extractor is SeamlessM4TFeatureExtractor built from facebook/w2v-bert-2.0's
preprocessor_config.json (its settings are below: no download), called as the model card
calls it, ``extractor(audio, sampling_rate=16000)``: padding to the longest item, to a
multiple of 2 frames, features normalised per mel bin. Recorded, in ``fbank.safetensors``:

- ``input.NAME``: each input, as int16 PCM (the extractor gets ``pcm / 32768`` in float32,
  exactly what a 16-bit WAV file gives);
- ``single.NAME.input_features`` / ``.attention_mask``: the extractor on that input alone;
- ``batch.*``: on a padded batch of four of them (one with an odd number of frames);
- ``unnormalized.*``: on a padded batch of two, ``do_normalize_per_mel_bins=False``.
- ``narrow.*``: the same batch through an extractor with 40 mel bins instead of 80.

``manifest.json`` holds the versions, the command, the settings, the inputs' lengths, and what
the extractor does with inputs too short for one feature vector and with other sampling rates
(it refuses them). tests/test_fbank.py compares npw2v2.core.fbank with all of it.
"""
from __future__ import annotations

import datetime
import json
import platform
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import SeamlessM4TFeatureExtractor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from signals import speech_like_batch  # noqa: E402

OUT = Path(__file__).resolve().parent / "data" / "fbank"
INPUT_SEED = 5678
# facebook/w2v-bert-2.0's preprocessor_config.json (the hub file, keys as published).
PREPROCESSOR = {
    "feature_extractor_type": "SeamlessM4TFeatureExtractor",
    "feature_size": 80,
    "num_mel_bins": 80,
    "padding_side": "right",
    "padding_value": 1,
    "processor_class": "Wav2Vec2BertProcessor",
    "return_attention_mask": True,
    "sampling_rate": 16000,
    "stride": 2,
}
# name: (samples, what it covers)
INPUTS = {
    "min_560": (560, "the shortest input with a feature vector: 2 frames"),
    "s0_3": (4800, "0.3 s: 28 frames"),
    "s1": (16000, "1 s: 98 frames"),
    "s1_37_odd": (21923, "1.37 s and 3 samples: 135 frames (odd), 123 samples past the last frame's hop"),
    "silence": (4000, "0.25 s of zeros: every energy at the floor, every bin constant (23 frames)"),
    "gap": (9700, "0.61 s with 0.2 s of zeros inside: some frames at the floor (59 frames, odd)"),
}
BATCH = ["s0_3", "s1", "min_560", "gap"]
UNNORMALIZED_BATCH = ["min_560", "s0_3"]
# An extractor with 40 mel bins (80 features per vector), on the batch of two.
NARROW = {"feature_size": 40, "num_mel_bins": 40}
NARROW_BATCH = UNNORMALIZED_BATCH
SHORT_LENGTHS = [0, 1, 239, 240, 399, 400, 559, 560]
OTHER_RATES = [8000, 22050, 44100]


def make_inputs() -> dict:
    """Each input as int16 PCM: speech-like signals at a tenth of full scale, and digital silence."""
    inputs = {}
    for i, (name, (samples, _)) in enumerate(INPUTS.items()):
        signal, _ = speech_like_batch([samples], INPUT_SEED + i)
        signal = 0.1 * signal[0]
        if name == "silence":
            signal[:] = 0.0
        if name == "gap":
            signal[3200:6400] = 0.0
        inputs[name] = np.round(signal * 32767).astype(np.int16)
    return inputs


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768


def extract(extractor, waveforms: list[np.ndarray], prefix: str, **options) -> dict:
    """The extractor's input_features and attention_mask on a list of waveforms."""
    out = extractor(waveforms, sampling_rate=16000, return_tensors="np", **options)
    return {f"{prefix}.input_features": np.ascontiguousarray(out["input_features"]),
            f"{prefix}.attention_mask": np.ascontiguousarray(out["attention_mask"])}


def short_inputs(extractor) -> dict:
    """What the extractor gives for inputs with no feature vector, and just one: an error, or shapes and NaNs."""
    outcomes = {}
    for n in SHORT_LENGTHS:
        waveform = np.random.RandomState(n).uniform(-0.1, 0.1, n).astype(np.float32)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # mean of an empty slice, 0/0 variance
                out = extractor([waveform], sampling_rate=16000, return_tensors="np")
        except Exception as error:  # noqa: BLE001  (recording what it raises)
            outcomes[str(n)] = {"error": f"{type(error).__name__}: {error}"}
            continue
        features, mask = out["input_features"], out["attention_mask"]
        outcomes[str(n)] = {"shape": list(features.shape), "attention_mask": mask.tolist(),
                            "nan_features": int(np.isnan(features).sum())}
    return outcomes


def other_rates(extractor, waveform: np.ndarray) -> dict:
    """The error the extractor raises for audio said to be at another rate (its repr left out)."""
    outcomes = {}
    for rate in OTHER_RATES:
        try:
            extractor([waveform], sampling_rate=rate)
            outcomes[str(rate)] = "accepted"
        except ValueError as error:
            outcomes[str(rate)] = f"ValueError: {str(error).replace(str(extractor), '<extractor>')}"
    return outcomes


def main() -> None:
    extractor = SeamlessM4TFeatureExtractor.from_dict(PREPROCESSOR)
    pcm = make_inputs()
    audio = {name: as_float(x) for name, x in pcm.items()}
    tensors = {f"input.{name}": x for name, x in pcm.items()}
    for name, waveform in audio.items():
        tensors.update(extract(extractor, [waveform], f"single.{name}"))
    tensors.update(extract(extractor, [audio[name] for name in BATCH], "batch"))
    tensors.update(extract(extractor, [audio[name] for name in UNNORMALIZED_BATCH], "unnormalized",
                           do_normalize_per_mel_bins=False))
    narrow = SeamlessM4TFeatureExtractor.from_dict({**PREPROCESSOR, **NARROW})
    tensors.update(extract(narrow, [audio[name] for name in NARROW_BATCH], "narrow"))
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    save_file(tensors, str(OUT / "fbank.safetensors"))
    manifest = {
        "command": "python golden/record_fbank.py",
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "transformers": transformers.__version__,
                     "torch": torch.__version__, "numpy": np.__version__},
        "extractor": "SeamlessM4TFeatureExtractor.from_dict(preprocessor), called as "
                     "extractor(waveforms, sampling_rate=16000, return_tensors='np')",
        "preprocessor": PREPROCESSOR,
        "input_seed": INPUT_SEED,
        "inputs": {name: {"samples": samples, "what": what} for name, (samples, what) in INPUTS.items()},
        "batch": BATCH,
        "unnormalized_batch": UNNORMALIZED_BATCH,
        "narrow": NARROW,
        "narrow_batch": NARROW_BATCH,
        "short_inputs": short_inputs(extractor),
        "other_rates": other_rates(extractor, audio["s0_3"]),
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
