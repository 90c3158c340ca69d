"""data2vec-audio against transformers' Data2VecAudioModel / ...ForCTC / ...ForAudioFrameClassification,
recorded by golden/record_data2vec_audio.py: what differs from wav2vec 2.0 (every stage, padded batches and
frame masks of every family: test_family_golden.py)."""
import json
import shutil

import pytest

import npw2v2
from golden import (DATA2VEC_AUDIO, GOLDEN, converted_fairseq_models, fairseq_recorded, golden_error, model,
                    recorded, recorded_case, tolerance)
from npw2v2.core import heads
from npw2v2.io.weights import CheckpointError

PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])


def test_recordings_cover_every_stage_and_each_variant():
    for name in DATA2VEC_AUDIO:
        stages = set(recorded_case(name, "single"))
        cfg = model(name).config
        assert {"conv_features", "extract_features", "last_hidden_state",
                *(f"hidden_states.{i}" for i in range(cfg.num_hidden_layers + 1))} <= stages, name
        assert cfg.feat_extract_norm == "layer"  # set for the model type: its config.json has no such key
        assert "feat_extract_norm" not in json.loads((GOLDEN / name / "config.json").read_text())
    kernels = {model(n).config.conv_pos_kernel_size % 2 for n in DATA2VEC_AUDIO}
    assert kernels == {0, 1}  # odd and even kernels (the last frame dropped)
    assert len(model("tiny_data2vec_audio").params["encoder"]["pos_conv_embed"]["layers"]) == 5
    assert recorded("tiny_data2vec_audio_frame_classifier")["batch.logits"].shape == (3, 9, 3)
    assert model("tiny_data2vec_audio_ctc").kind == heads.CTC
    assert model("tiny_data2vec_audio_frame_classifier").kind == heads.FRAME_CLASSIFICATION


def test_the_positional_stack_lets_padding_in_upstream():
    """Each positional conv layer's norm and GELU make the padded frames non-zero for the next conv in
    transformers, so its padded batch differs from the item alone (the vs-alone check has teeth);
    norm_over_padding reproduces transformers, the default the item alone."""
    batch, alone = recorded_case("tiny_data2vec_audio", "batch"), recorded_case("tiny_data2vec_audio", "alone.2")
    frames = alone["last_hidden_state"].shape[1]
    assert golden_error(batch["last_hidden_state"][2:3, :frames], alone["last_hidden_state"]) > 1e-3
    ours = model("tiny_data2vec_audio")(batch["input_values"], batch["attention_mask"], items_alone=False)
    assert golden_error(ours.last_hidden_state[2:3, :frames], alone["last_hidden_state"]) <= 1e-4
    assert golden_error(ours.last_hidden_state, batch["last_hidden_state"], batch["frame_mask"]) > 1e-3


def test_the_full_size_recording_is_the_data2vec_audio_base_architecture():
    cfg = model("data2vec_audio_base").config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_conv_pos_embeddings,
            cfg.conv_pos_kernel_size) == ("data2vec-audio", 768, 12, 5, 19)
    assert recorded("data2vec_audio_base")["single.hidden_states.6"].shape == (1, 49, 768)


def test_configs_it_cannot_be_are_refused():
    with pytest.raises(ValueError, match="feat_extract_norm must be 'layer'"):
        npw2v2.Config.from_dict({"model_type": "data2vec-audio", "feat_extract_norm": "group"})
    with pytest.raises(ValueError, match="post-LN"):
        npw2v2.Config.from_dict({"model_type": "data2vec-audio", "do_stable_layer_norm": True})
    with pytest.raises(ValueError, match="data2vec-audio models have no pretraining heads"):
        heads.model_kind(npw2v2.Config.from_dict({"model_type": "data2vec-audio",
                                                   "architectures": ["Wav2Vec2ForPreTraining"]}))


def test_a_claimed_stack_deeper_than_the_file_is_refused_before_building(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "tiny_data2vec_audio", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_conv_pos_embeddings": 4000}))
    with pytest.raises(CheckpointError, match="num_conv_pos_embeddings 4000, the file holds 5 positional conv layers"):
        npw2v2.load(folder)


def test_explain_shows_the_positional_stack(capsys):
    from npw2v2.app.cli import main as cli

    assert cli(["explain", "--model", str(GOLDEN / "tiny_data2vec_audio"), "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Wav2Vec2(data2vec-audio, 2 layers" in out and "what differs from wav2vec 2.0" in out
    assert "5 convs K=7" in out
    assert float(out.rsplit("largest difference ", 1)[1].split()[0]) < 1e-5


def test_a_hugging_face_bin_folder_converts(tmp_path, capsys):
    from convert.cli import main as convert_main

    out = tmp_path / "model.safetensors"
    code, printed = convert_main([str(GOLDEN / "data2vec_audio_checkpoints" / "hf_bin"), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    assert "Data2VecAudioForCTC, 2 layers" in printed.out
    converted = npw2v2.load(out)
    assert converted.config.model_type == "data2vec-audio" and converted.config.feat_extract_norm == "layer"
    for case in ("single", "batch", "alone.2"):
        ref = recorded_case("tiny_data2vec_audio_ctc", case)
        got = converted(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        assert golden_error(got.logits, ref["logits"], got.frame_mask) <= tolerance("tiny_data2vec_audio_ctc"), case


# ---------------------------------------------------------------------------
# fairseq's own data2vec-audio checkpoints (golden/fairseq_data2vec_fixtures.py)

FAIRSEQ_DATA2VEC = GOLDEN / "fairseq_data2vec"
ALONE = ("single", "alone.1", "alone.2")


@pytest.fixture(scope="module")
def converted_fairseq(tmp_path_factory):
    """The pretrained and the fine-tuned fixture, converted and loaded."""
    return converted_fairseq_models(FAIRSEQ_DATA2VEC, ("data2vec_pretrained", "data2vec_ctc"), tmp_path_factory)


@PATHS
@pytest.mark.parametrize("case", ALONE)
def test_converted_fairseq_data2vec_matches_fairseq_at_every_layer(converted_fairseq, case, reference):
    ref = fairseq_recorded(FAIRSEQ_DATA2VEC, "data2vec_pretrained", case)
    m = converted_fairseq["data2vec_pretrained"]
    out = m(ref["input_values"], output_hidden_states=True, reference=reference)
    errors = {"last_hidden_state": golden_error(out.last_hidden_state, ref["last_hidden_state"])}
    for layer in range(1, m.config.num_hidden_layers + 1):  # fairseq's layer N: the output of the N-th layer
        errors[f"hidden_states.{layer}"] = golden_error(out.hidden_states[layer], ref[f"hidden_states.{layer}"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: {errors[worst]:.2e}"


@PATHS
@pytest.mark.parametrize("case", ALONE)
def test_converted_fine_tuned_fairseq_data2vec_gives_fairseqs_ctc_logits(converted_fairseq, case, reference):
    ref = fairseq_recorded(FAIRSEQ_DATA2VEC, "data2vec_ctc", case)
    logits = converted_fairseq["data2vec_ctc"](ref["input_values"], reference=reference).logits
    assert golden_error(logits, ref["logits"]) <= 1e-4


def test_converted_fairseq_data2vec_counts_its_positional_convs_and_drops_what_pretraining_alone_reads(
        converted_fairseq):
    pretrained, ctc = converted_fairseq["data2vec_pretrained"], converted_fairseq["data2vec_ctc"]
    assert pretrained.config.model_type == "data2vec-audio" and pretrained.kind == heads.BASE
    # pos_conv_depth convs of kernel max(3, conv_pos // pos_conv_depth): 21 // 3 and 12 // 2
    assert (pretrained.config.num_conv_pos_embeddings, pretrained.config.conv_pos_kernel_size) == (3, 7)
    assert (ctc.config.num_conv_pos_embeddings, ctc.config.conv_pos_kernel_size) == (2, 6)
    assert ctc.kind == heads.CTC and ctc.config.architectures == ("Data2VecAudioForCTC",) and len(ctc.vocab) == 32
    assert "final_proj" not in pretrained.params and "_ema" not in pretrained.params  # the regression head, the teacher
    assert "masked_spec_embed" in pretrained.params


def test_a_fairseq_data2vec_with_one_positional_conv_is_refused_by_name():
    from convert.errors import ConversionError
    from convert.fairseq import hf_config

    with pytest.raises(ConversionError, match="pos_conv_depth=1"):
        hf_config({"_name": "data2vec_audio", "extractor_mode": "layer_norm", "pos_conv_depth": 1}, None)
