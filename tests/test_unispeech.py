"""UniSpeech and UniSpeech-SAT against transformers' UniSpeech* / UniSpeechSat* classes, recorded by
golden/record_unispeech.py: at inference wav2vec 2.0's encoder under other names, so what is theirs is
the names, the task classes and the pretraining heads refused (every stage, padded batches and frame
masks: test_family_golden.py)."""
import json
import shutil

import pytest

import npw2v2
from convert.cli import main as convert_main
from golden import GOLDEN, UNISPEECH, golden_error, model, recorded, recorded_case, tolerance
from npw2v2.core import heads
from npw2v2.io.weights import CheckpointError

KINDS = {"tiny_unispeech_ctc": heads.CTC, "tiny_unispeech_sat_frame_classifier": heads.FRAME_CLASSIFICATION,
         "tiny_unispeech_sat_classifier": heads.SEQUENCE_CLASSIFICATION, "tiny_unispeech_sat_xvector": heads.XVECTOR}


def test_recordings_cover_every_stage_both_layer_norm_placements_and_every_head():
    for name in UNISPEECH:
        cfg = model(name).config
        stages = set(recorded_case(name, "single"))
        assert {"conv_features", "extract_features", "last_hidden_state", "logits",
                *(f"hidden_states.{i}" for i in range(cfg.num_hidden_layers + 1))} <= stages, name
        assert model(name).kind == KINDS[name]
        class_name = json.loads((GOLDEN / name / "config.json").read_text())["architectures"][0]
        assert heads.class_name(model(name).kind, cfg.model_type) == class_name
    assert {model(n).config.do_stable_layer_norm for n in UNISPEECH} == {False, True}
    assert {model(n).config.model_type for n in UNISPEECH} == {"unispeech", "unispeech-sat"}
    assert "embeddings" in recorded_case("tiny_unispeech_sat_xvector", "batch")


def test_the_saved_folders_name_tensors_with_the_family_prefix():
    """What the loader strips: unispeech. and unispeech_sat. (transformers' base_model_prefix)."""
    from safetensors import safe_open
    for name, prefix in (("tiny_unispeech_ctc", "unispeech."), ("tiny_unispeech_sat_xvector", "unispeech_sat.")):
        with safe_open(str(GOLDEN / name / "model.safetensors"), "np") as f:
            names = list(f.keys())
        assert f"{prefix}encoder.layer_norm.weight" in names, name
        assert not any(n.startswith("wav2vec2.") for n in names)


def test_the_full_size_recording_is_unispeech_sat_base_with_the_sv_head():
    m = model("unispeech_sat_base")
    cfg = m.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.tdnn_dim, cfg.xvector_output_dim) == \
        ("unispeech-sat", 768, 12, (512, 512, 512, 512, 1500), 512)
    assert m.kind == heads.XVECTOR
    assert recorded("unispeech_sat_base")["single.embeddings"].shape == (1, 512)


@pytest.mark.parametrize("name", ["tiny_unispeech_ctc", "tiny_unispeech_sat_xvector"])
def test_hugging_face_bin_folders_convert(name, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    code, printed = convert_main([str(GOLDEN / "unispeech_checkpoints" / name), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    assert heads.class_name(KINDS[name], model(name).config.model_type) in printed.out
    converted = npw2v2.load(out)
    assert converted.config.model_type == model(name).config.model_type
    for case in ("single", "batch", "alone.2"):
        ref = recorded_case(name, case)
        got = converted(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        assert golden_error(got.logits, ref["logits"], got.frame_mask if got.logits.ndim == 3 else None) \
            <= tolerance(name), case


def test_safetensors_folders_convert(tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    assert convert_main([str(GOLDEN / "tiny_unispeech_sat_classifier"), str(out)]) == 0, capsys.readouterr().err
    ref = recorded_case("tiny_unispeech_sat_classifier", "batch")
    got = npw2v2.load(out)(ref["input_values"], ref["attention_mask"])
    assert golden_error(got.logits, ref["logits"]) <= tolerance("tiny_unispeech_sat_classifier")


@pytest.mark.parametrize("architecture,named", [("UniSpeechForPreTraining", "UniSpeech's pretraining heads"),
                                                ("UniSpeechSatForPreTraining", "UniSpeech-SAT's pretraining heads")])
def test_pretraining_classes_are_refused_by_name(architecture, named, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "tiny_unispeech_ctc", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    with pytest.raises(CheckpointError, match=f"{architecture}: npw2v2 does not run {named}") as caught:
        npw2v2.load(folder)
    assert "\n" not in str(caught.value)


def test_heads_they_do_not_have_and_adapters_are_refused():
    with pytest.raises(ValueError, match="unispeech models have no x-vector head"):
        heads.model_kind(npw2v2.Config(model_type="unispeech", architectures=("Wav2Vec2ForXVector",)))
    with pytest.raises(ValueError, match="unispeech models have no frame classifier"):
        heads.model_kind(npw2v2.Config(model_type="unispeech",
                                       architectures=("UniSpeechSatForAudioFrameClassification",)))
    with pytest.raises(ValueError, match="add_adapter and adapter_attn_dim are wav2vec 2.0's"):
        npw2v2.Config(model_type="unispeech-sat", add_adapter=True)
    assert heads.class_name(heads.CTC, "unispeech") == "UniSpeechForCTC"
    assert heads.class_name(heads.CTC, "unispeech-sat") == "UniSpeechSatForCTC"
    # UniSpeech has no frame classifier: not UniSpeechSat's, whose name begins with "UniSpeech"
    assert heads.class_name(heads.FRAME_CLASSIFICATION, "unispeech") == heads.FRAME_CLASSIFICATION


def test_explain_says_the_encoder_is_wav2vec2s(capsys):
    from npw2v2.app.cli import main
    assert main(["explain", "--model", str(GOLDEN / "tiny_unispeech_sat_xvector"), "--seconds", "0.6", "0.4"]) == 0
    out = capsys.readouterr().out
    assert "Wav2Vec2(UniSpeech-SAT, 2 layers" in out and "no stage differs at inference" in out
    assert "embeddings            [2, 6]" in out and "5 TDNN layers (14 frames off)" in out
    difference = float(out.split("same valid frames and speaker embedding: largest difference ", 1)[1].split()[0])
    assert difference < 1e-5
    # transformers' numbers: a layer-normed pre-LN encoder keeps the frames honest, the head's count does not
    assert main(["explain", "--model", str(GOLDEN / "tiny_unispeech_sat_xvector"), "--seconds", "0.6", "0.4",
                 "--norm-over-padding"]) == 0
    out = capsys.readouterr().out
    assert float(out.rsplit("largest difference ", 1)[1].split()[0]) > 1e-3
