"""Comparing npw2v2 with the activations golden/record.py recorded from transformers.

Used by tests/test_golden.py. ``python tests/golden.py`` prints the table of errors on both
paths; ``python tests/golden.py --write docs/verification.md`` puts it into that page.
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
from npw2v2.core.backend import asnumpy  # noqa: E402
from npw2v2.app.cli import DEFAULT_MODEL  # noqa: E402
from npw2v2.app.model import Wav2Vec2  # noqa: E402
from npw2v2.core.hubert import final_projection  # noqa: E402
from npw2v2.core.lengths import conv_lengths  # noqa: E402
from npw2v2.core.ops import FAST, REFERENCE  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "data"
TINY = ["tiny_base", "tiny_stable", "tiny_odd_pos", "tiny_ctc", "tiny_digits"]
# Where a configuration's model is, when not in its golden/data folder: the recordings of
# tiny_digits are of the bundled model itself.
MODEL_FILES = {"tiny_digits": DEFAULT_MODEL}
HEADS = ["tiny_pretraining", "tiny_classifier", "tiny_frame_classifier", "tiny_adapter", "tiny_mms"]
# HuBERT (golden/record_hubert.py): tiny configurations and heads, and the hubert-base architecture.
HUBERT = ["tiny_hubert", "tiny_hubert_stable", "tiny_hubert_bn", "tiny_contentvec", "tiny_hubert_classifier"]
# data2vec-audio (golden/record_data2vec_audio.py): tiny configurations and heads, and its base architecture.
DATA2VEC_AUDIO = ["tiny_data2vec_audio", "tiny_data2vec_audio_ctc", "tiny_data2vec_audio_frame_classifier"]
# WavLM (golden/record_wavlm.py): tiny configurations and heads, and the wavlm-base-plus architecture.
WAVLM = ["tiny_wavlm", "tiny_wavlm_stable", "tiny_wavlm_classifier", "tiny_wavlm_frame_classifier"]
# Wav2Vec2-Conformer (golden/record_conformer.py): tiny configurations (relative, rotary and no positions) and
# heads, and the wav2vec2-conformer-rel-pos-large architecture.
CONFORMER = ["tiny_conformer_rel", "tiny_conformer_rope", "tiny_conformer_nopos", "tiny_conformer_frame_classifier",
             "tiny_conformer_classifier", "tiny_conformer_xvector"]
# w2v-BERT 2.0 (golden/record_w2v_bert.py): filter-bank features in (the extractor's, recorded as input_values),
# tiny configurations (relative_key, relative, rotary and no positions; the adapter) and heads, and the
# w2v-bert-2.0 architecture.
W2V_BERT = ["tiny_w2v_bert_ctc", "tiny_w2v_bert_adapter", "tiny_w2v_bert_adapter_model", "tiny_w2v_bert_classifier",
            "tiny_w2v_bert_frame_classifier", "tiny_w2v_bert_xvector"]
# x-vector heads (golden/record_xvector.py): wav2vec 2.0's, data2vec-audio's and WavLM's.
XVECTOR = ["tiny_xvector", "tiny_xvector_weighted", "tiny_data2vec_audio_xvector", "tiny_wavlm_xvector"]
# UniSpeech and UniSpeech-SAT (golden/record_unispeech.py): tiny heads, and UniSpeech-SAT's base architecture.
UNISPEECH = ["tiny_unispeech_ctc", "tiny_unispeech_sat_frame_classifier", "tiny_unispeech_sat_classifier",
             "tiny_unispeech_sat_xvector"]
# weights regenerated from the seed, last stages recorded
FULL_SIZE = ("base", "hubert_base", "data2vec_audio_base", "unispeech_sat_base", "wavlm_base_plus",
             "conformer_rel_pos_large", "w2v_bert_2_0")
# The manifest of each recording script besides golden/record.py's.
MANIFESTS = {"hubert_base": "hubert_manifest.json", "data2vec_audio_base": "data2vec_audio_manifest.json",
             "unispeech_sat_base": "unispeech_manifest.json", "wavlm_base_plus": "wavlm_manifest.json",
             "conformer_rel_pos_large": "conformer_manifest.json", "w2v_bert_2_0": "w2v_bert_manifest.json"}
TOLERANCE = {"tiny": 1e-4, "base": 5e-4}
INPUTS = ("input_values", "attention_mask", "mask_time_indices", "sampled_negative_indices")
# w2v-BERT's batch case keeps its audio besides its features (its input_values), for the filter-bank tests.
NOT_OUTPUTS = INPUTS + ("frame_mask", "output_frame_mask", "samples", "sample_mask")
# Stages with one row per input (x-vector heads), whatever their rank.
PER_INPUT = ("embeddings",)
# Stages on the frames after the down-sampling adapter; the others are on the encoder's frames.
OUTPUT_FRAMES = ("last_hidden_state", "logits")
# Statistics of a whole batch: compared as they are, never with an item alone.
BATCH_STATISTICS = ("codevector_perplexity", "codevector_perplexity_of_valid_frames")


def tolerance(name: str) -> float:
    return TOLERANCE["base" if name in FULL_SIZE else "tiny"]


def golden_error(ours, ref, valid=None) -> float:
    """max|ours - ref| / max(1, max|ref|), over valid frames only (everything when valid is None).

    Arrays [B, T, ...], valid [B, T]. Infinite reference values (contrastive logits of negatives
    equal to their target) must be matched exactly; an infinity in the wrong place is an infinite error.
    """
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64).reshape(np.shape(ours))
    if valid is not None:
        ours, ref = ours[valid], ref[valid]
    finite = np.isfinite(ref)
    if not np.array_equal(ours[~finite], ref[~finite]) or not np.isfinite(ours[finite]).all():
        return float("inf")
    gap = np.abs(ours[finite] - ref[finite])
    return float(gap.max(initial=0.0) / max(1.0, np.abs(ref[finite]).max(initial=0.0)))


@lru_cache(maxsize=None)
def manifest() -> dict:
    return json.loads((GOLDEN / "manifest.json").read_text())


@lru_cache(maxsize=None)
def other_manifest(file: str) -> dict:
    return json.loads((GOLDEN / file).read_text())


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
def model(name: str, language: str | None = None) -> npw2v2.Wav2Vec2:
    """The tiny models load from their saved folders (tiny_digits: the bundled model); the full-size
    one regenerates its weights. MMS (tiny_mms) loads in English; another ``language`` is switched
    in from its adapter file.
    """
    if name not in FULL_SIZE:
        m = npw2v2.load(MODEL_FILES.get(name, GOLDEN / name))
        if language not in (None, m.language):
            m.set_language(language)
        return m
    cfg = npw2v2.Config.from_json(GOLDEN / name / "config.json")
    seed = (other_manifest(MANIFESTS[name]) if name in MANIFESTS else manifest())["weight_seed"]
    return npw2v2.from_tensors(npw2v2.random_weights(cfg, seed=seed), cfg)


def case_language(name: str, case: str) -> str | None:
    """MMS cases are named LANG.CASE: "fra.batch"."""
    return case.split(".")[0] if name == "tiny_mms" else None


def run_stages(m: npw2v2.Wav2Vec2, input_values, attention_mask=None, norm_over_padding=False, device=None,
               mask_time_indices=None, sampled_negative_indices=None, items_alone=None, reference=False):
    """npw2v2's value of every recorded stage, and the frames each is valid on, as NumPy arrays.

    Returns (stages, masks): masks["encoder"] [B, T] for the encoder's frames, masks["output"]
    for the frames after the down-sampling adapter (the same without one).
    ``device`` (tests/stand_in_device.py) runs the model on that device instead: parameters
    and inputs are moved there, and the results copied back. ``reference`` takes the
    reference path (npw2v2.core.ops).
    """
    params, x = m.params, input_values
    if device is not None:
        params, x = device_params(m, device), device.device.asarray(input_values)
    on_device = Wav2Vec2(params, m.config, m.vocab, m.metadata)
    out = on_device(x, attention_mask, output_hidden_states=True, norm_over_padding=norm_over_padding,
                    mask_time_indices=mask_time_indices, items_alone=items_alone, reference=reference)
    stages = {"extract_features": out.extract_features, "last_hidden_state": out.last_hidden_state}
    stages.update({f"hidden_states.{i}": h for i, h in enumerate(out.hidden_states)})
    stages.update({k: getattr(out, k) for k in ("logits", "embeddings", "projected_states", "projected_quantized_states",
                                                "codevector_perplexity") if getattr(out, k) is not None})
    if "final_proj" in m.params:  # HuBERT's final_proj on each hidden state, as recorded
        stages.update({f"final_proj.{i}": final_projection(h, params["final_proj"]) for i, h in enumerate(out.hidden_states)})
    if sampled_negative_indices is not None:
        stages["contrastive_logits"] = m.contrastive_logits(out, sampled_negative_indices)
    norm_lengths = None
    if attention_mask is not None and not norm_over_padding and m.config.model_type != "wav2vec2-bert":
        norm_lengths = conv_lengths(np.asarray(attention_mask).sum(axis=1), m.config)[0]
    ops = REFERENCE if reference else FAST
    if m.config.model_type != "wav2vec2-bert":  # w2v-BERT has no conv feature encoder: its input is features
        stages["conv_features"] = ops.feature_encoder(x, params["feature_extractor"], m.config, norm_lengths)
    masks = {"encoder": asnumpy(out.encoder_frame_mask), "output": asnumpy(out.frame_mask)}
    return {k: asnumpy(v) for k, v in stages.items()}, masks


def stage_error(stage: str, ours, ref, masks: dict) -> float:
    """golden_error on the frames the stage is valid on: the encoder's, the adapter's output's, or all
    (per-input logits [B, labels] and batch statistics)."""
    if stage in BATCH_STATISTICS + PER_INPUT or np.ndim(ref) < 3 and stage == "logits":
        return golden_error(ours, ref)
    if stage == "contrastive_logits":  # [1 + N, B, T]: to [B, T, 1 + N]
        ours, ref = np.moveaxis(ours, 0, -1), np.moveaxis(ref, 0, -1)
    return golden_error(ours, ref, masks["output" if stage in OUTPUT_FRAMES else "encoder"])


_on_device: dict = {}


def device_params(m: npw2v2.Wav2Vec2, device):
    """The model's parameters on the stand-in device, moved once per model."""
    key = (id(m), id(device.device))
    if key not in _on_device:
        _on_device[key] = device.to_device(m.params)
    return _on_device[key]


def case_errors(name: str, case: str, device=None, reference=False) -> dict[str, float]:
    """Error of every recorded stage of one case, npw2v2 run as transformers runs it.

    ``codevector_perplexity_of_valid_frames`` is npw2v2's default perplexity of a padded batch,
    checked against transformers' quantizer given the frame mask.
    """
    ref = recorded_case(name, case)
    m = model(name, case_language(name, case))
    inputs = {k: ref[k] for k in INPUTS[2:] if k in ref}
    ours, masks = run_stages(m, ref["input_values"], ref.get("attention_mask"), norm_over_padding=True, device=device,
                             reference=reference, **inputs)
    if "codevector_perplexity_of_valid_frames" in ref:
        ours["codevector_perplexity_of_valid_frames"] = run_stages(
            m, ref["input_values"], ref["attention_mask"], device=device, reference=reference)[0]["codevector_perplexity"]
    return {stage: stage_error(stage, ours[stage], value, masks) for stage, value in ref.items()
            if stage not in NOT_OUTPUTS}


def batch_vs_alone_errors(name: str, device=None, language: str | None = None, items_alone=None,
                          reference=False) -> dict[str, float]:
    """npw2v2's padded batch (default, mask-aware) against each item run alone in transformers.

    Keyed "ITEM:STAGE"; item 0 is the "single" case (the longest input, no padding). Every
    per-item output counts: frame-wise ones on the item's frames, per-input logits whole.
    ``items_alone=False`` computes the batch as one, its masks keeping the padding out.
    """
    prefix = f"{language}." if language else ""
    ref = recorded_case(name, prefix + "batch")
    ours, masks = run_stages(model(name, language), ref["input_values"], ref["attention_mask"], device=device,
                             items_alone=items_alone, reference=reference)
    errors = {}
    for item in range(ref["input_values"].shape[0]):
        alone = recorded_case(name, prefix + ("single" if item == 0 else f"alone.{item}"))
        for stage, value in alone.items():
            if stage in NOT_OUTPUTS or stage in BATCH_STATISTICS:
                continue
            mine = ours[stage][item:item + 1]
            if mine.ndim == 3:  # frame-wise: the item's own frames
                mine = mine[:, :int(masks["output" if stage in OUTPUT_FRAMES else "encoder"][item].sum())]
            errors[f"{item}:{stage}"] = golden_error(mine, value)
    return errors


def languages(name: str) -> list:
    """The languages a configuration's cases are recorded in ([None] for all but MMS)."""
    return sorted({case_language(name, c) for c in cases(name)}) if name == "tiny_mms" else [None]


def case_group(name: str, case: str) -> str:
    """The row a case belongs to: "alone.2" counts as "alone", an MMS case's language is dropped."""
    if name == "tiny_mms":
        case = case.split(".", 1)[1]
    return "alone" if case.startswith("alone.") else case


GROUP_LABELS = {"single": "single input", "batch": "padded batch, mask, `norm_over_padding=True`",
                "nomask": "same batch, no mask", "alone": "each input alone",
                "vs alone": "padded batch, mask, vs each input alone"}


def table_rows() -> list[tuple[str, str, int, float, float, float]]:
    """(configuration, case, stages compared, largest error on the fast path, on the reference path,
    tolerance): a row per configuration and kind of case, as docs/verification.md lists them."""
    rows = []
    for name in (TINY + ["base"] + HEADS + HUBERT + ["hubert_base"] + DATA2VEC_AUDIO + ["data2vec_audio_base"] + XVECTOR
                 + UNISPEECH + ["unispeech_sat_base"] + WAVLM + ["wavlm_base_plus"] + CONFORMER
                 + ["conformer_rel_pos_large"] + W2V_BERT + ["w2v_bert_2_0"]):
        groups: dict = {}
        for case in cases(name):
            for reference in (False, True):
                errors = case_errors(name, case, reference=reference)
                groups.setdefault(case_group(name, case), {}).setdefault(reference, []).append(errors)
        for language in languages(name):
            for reference in (False, True):
                errors = batch_vs_alone_errors(name, language=language, items_alone=False, reference=reference)
                groups.setdefault("vs alone", {}).setdefault(reference, []).append(errors)
        order = list(GROUP_LABELS)
        for group, by_path in sorted(groups.items(), key=lambda g: order.index(g[0]) if g[0] in order else len(order)):
            stages = sum(len(e) for e in by_path[False])
            fast, slow = (max(max(e.values()) for e in by_path[path]) for path in (False, True))
            rows.append((name, GROUP_LABELS.get(group, group), stages, fast, slow, tolerance(name)))
    return rows


TABLE_START, TABLE_END = "<!-- generated by python tests/golden.py: start -->", "<!-- generated: end -->"


def table() -> str:
    """The error table in Markdown, with the versions of the recording."""
    versions = manifest()["versions"]
    for file in MANIFESTS.values():
        other = other_manifest(file)["versions"]
        assert (other["transformers"], other["torch"]) == (versions["transformers"], versions["torch"]), \
            f"{file}: recorded with other versions: rerun {other_manifest(file)['command']}"
    lines = [f"Recorded with transformers {versions['transformers']}, torch {versions['torch']}; "
             f"npw2v2 run with NumPy {np.__version__}.", "",
             "| configuration | case | stages | fast path | reference path | tolerance |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {case} | {stages} | {fast:.1e} | {slow:.1e} | {tol:.0e} |"
              for name, case, stages, fast, slow, tol in table_rows()]
    return "\n".join(lines)


def write_table(path: Path) -> None:
    """Replace the generated table in ``path`` (between TABLE_START and TABLE_END) with a fresh one."""
    text = path.read_text()
    before, _, rest = text.partition(TABLE_START)
    _, found, after = rest.partition(TABLE_END)
    if not found:
        raise SystemExit(f"{path}: no {TABLE_START} ... {TABLE_END} markers")
    path.write_text(f"{before}{TABLE_START}\n{table()}\n{TABLE_END}{after}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"] and len(sys.argv) == 3:
        write_table(Path(sys.argv[2]))
    else:
        print(table())


# ---------------------------------------------------------------------------
# fairseq's own checkpoints (golden/fairseq_*_fixtures.py): converted, and what fairseq computed


def converted_fairseq_models(folder: Path, names, tmp_path_factory) -> dict:
    """Each NAME.pt of a fixture folder through npw2v2-convert (the restricted pickle reader), loaded."""
    from convert.cli import main as convert_main

    models = {}
    for name in names:
        out = tmp_path_factory.mktemp(name) / "model.safetensors"
        assert convert_main([str(folder / f"{name}.pt"), str(out)]) == 0
        models[name] = npw2v2.load(out)
    return models


def fairseq_recorded(folder: Path, name: str, case: str) -> dict:
    """One fixture's arrays recorded from fairseq for one input, by stage name."""
    prefix = f"{name}.{case}."
    return {k.removeprefix(prefix): v for k, v in load_file(str(folder / "activations.safetensors")).items()
            if k.startswith(prefix)}
