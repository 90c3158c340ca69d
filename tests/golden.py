"""Comparing npw2v2 with the activations golden/record.py recorded from transformers.

Used by tests/test_golden.py; ``python tests/golden.py`` prints the table of errors that
the README quotes.
"""
from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `python tests/golden.py` from a checkout
import npw2v2  # noqa: E402
from npw2v2.backend import asnumpy  # noqa: E402
from npw2v2.model import conv_lengths, feature_encoder, forward  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "data"
TINY = ["tiny_base", "tiny_stable", "tiny_odd_pos", "tiny_ctc", "tiny_digits"]
TOLERANCE = {"tiny": 1e-4, "base": 5e-4}
NOT_OUTPUTS = ("input_values", "attention_mask", "frame_mask")


def tolerance(name: str) -> float:
    return TOLERANCE["base" if name == "base" else "tiny"]


def golden_error(ours, ref, valid) -> float:
    """max|ours - ref| / max(1, max|ref|), over valid frames only. Arrays [B, T, ...], valid [B, T]."""
    ours, ref = np.asarray(ours, dtype=np.float64)[valid], np.asarray(ref, dtype=np.float64)[valid]
    return float(np.abs(ours - ref).max() / max(1.0, np.abs(ref).max()))


@lru_cache(maxsize=None)
def manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


@lru_cache(maxsize=None)
def recorded(name: str) -> dict:
    """All recorded arrays of one configuration, keyed "CASE.STAGE"."""
    return load_file(str(GOLDEN / name / "activations.safetensors"))


def cases(name: str) -> list[str]:
    return sorted(k.removesuffix(".input_values") for k in recorded(name) if k.endswith(".input_values"))


def recorded_case(name: str, case: str) -> dict:
    """One case's arrays, keyed by stage."""
    prefix = case + "."
    return {k.removeprefix(prefix): v for k, v in recorded(name).items()
            if k.startswith(prefix) and not k.removeprefix(prefix)[0].isdigit()}


@lru_cache(maxsize=None)
def model(name: str) -> npw2v2.Wav2Vec2:
    """The tiny models load from their saved folders; the full-size one regenerates its weights."""
    if name != "base":
        return npw2v2.load(GOLDEN / name)
    cfg = npw2v2.Config.from_json(GOLDEN / name / "config.json")
    return npw2v2.from_tensors(npw2v2.random_weights(cfg, seed=manifest()["weight_seed"]), cfg)


def run_stages(m: npw2v2.Wav2Vec2, input_values, attention_mask=None, norm_over_padding=False, device=None,
               items_alone=None):
    """npw2v2's value of every recorded stage, and the frame mask, as NumPy arrays [B, T, ...].

    ``device`` (tests/stand_in_device.py) runs the model on that device instead: parameters
    and inputs are moved there, and the results copied back.
    """
    params, x = m.params, input_values
    if device is not None:
        params, x = device_params(m, device), device.device.asarray(input_values)
    out = forward(params, m.config, x, attention_mask, output_hidden_states=True,
                  norm_over_padding=norm_over_padding, items_alone=items_alone)
    stages = {"extract_features": out.extract_features, "last_hidden_state": out.last_hidden_state}
    stages.update({f"hidden_states.{i}": h for i, h in enumerate(out.hidden_states)})
    if out.logits is not None:
        stages["logits"] = out.logits
    per_layer = None
    if attention_mask is not None and not norm_over_padding:
        per_layer = conv_lengths(np.asarray(attention_mask).sum(axis=1), m.config)
    stages["conv_features"] = feature_encoder(x, params["feature_extractor"], m.config, per_layer)
    return {k: asnumpy(v) for k, v in stages.items()}, asnumpy(out.frame_mask)


_on_device: dict = {}


def device_params(m: npw2v2.Wav2Vec2, device):
    """The model's parameters on the stand-in device, moved once per model."""
    key = (id(m), id(device.device))
    if key not in _on_device:
        _on_device[key] = device.to_device(m.params)
    return _on_device[key]


def case_errors(name: str, case: str, device=None) -> dict[str, float]:
    """Error of every recorded stage of one case, npw2v2 run as transformers runs it."""
    ref = recorded_case(name, case)
    ours, valid = run_stages(model(name), ref["input_values"], ref.get("attention_mask"), norm_over_padding=True,
                             device=device)
    return {stage: golden_error(ours[stage], value, valid) for stage, value in ref.items() if stage not in NOT_OUTPUTS}


def batch_vs_alone_errors(name: str, device=None, items_alone=None) -> dict[str, float]:
    """npw2v2's padded batch (default, mask-aware) against each item run alone in transformers.

    Keyed "ITEM:STAGE"; item 0 is the "single" case (the longest input, no padding).
    ``items_alone=False`` computes the batch as one, its masks keeping the padding out.
    """
    ref = recorded_case(name, "batch")
    ours, valid = run_stages(model(name), ref["input_values"], ref["attention_mask"], device=device,
                             items_alone=items_alone)
    errors = {}
    for item in range(ref["input_values"].shape[0]):
        alone = recorded_case(name, "single" if item == 0 else f"alone.{item}")
        frames = int(valid[item].sum())
        for stage, value in alone.items():
            if stage not in NOT_OUTPUTS:
                mine = ours[stage][item:item + 1, :frames]
                errors[f"{item}:{stage}"] = golden_error(mine, value, np.ones(value.shape[:2], bool))
    return errors


def report() -> None:
    """Print the largest error per configuration and case, as the README quotes it."""
    versions = manifest()["versions"]
    print(f"golden data: transformers {versions['transformers']}, torch {versions['torch']}")
    print(f"{'config':<14}{'case':<28}{'stages':>7}{'max error':>12}{'tolerance':>11}")
    for name in TINY + ["base"]:
        rows = [(case, case_errors(name, case)) for case in cases(name)]
        rows.append(("batch with mask vs alone", batch_vs_alone_errors(name, items_alone=False)))
        for case, errors in rows:
            print(f"{name:<14}{case:<28}{len(errors):>7}{max(errors.values()):>12.1e}{tolerance(name):>11.0e}")


if __name__ == "__main__":
    report()
