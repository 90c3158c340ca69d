"""HuBERT and ContentVec against transformers' HubertModel / HubertForCTC / HubertForSequenceClassification,
recorded by golden/record_hubert.py: what differs from wav2vec 2.0 (every stage, padded batches and
frame masks of every family: test_family_golden.py)."""
import json
import shutil

import numpy as np
import pytest

import npw2v2
from convert.cli import main as convert_main
from golden import (GOLDEN, HUBERT, converted_fairseq_models, fairseq_recorded, golden_error, model, recorded,
                    recorded_case, tolerance)
from npw2v2.core import heads
from npw2v2.core.hubert import batch_norm
from npw2v2.io.weights import CheckpointError

PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])


def test_recordings_cover_every_stage_and_each_variant():
    for name in HUBERT:
        stages = set(recorded_case(name, "single"))
        layers = model(name).config.num_hidden_layers
        assert {"conv_features", "extract_features", "last_hidden_state",
                *(f"hidden_states.{i}" for i in range(layers + 1))} <= stages, name
    # feat_proj_layer_norm false: the projection reads the conv features as they are; true: layer-normed
    single = recorded_case("tiny_hubert", "single")
    np.testing.assert_array_equal(single["extract_features"], single["conv_features"])
    stable = recorded_case("tiny_hubert_stable", "single")
    assert golden_error(stable["extract_features"], stable["conv_features"]) > 0.1
    assert "logits" in stable and recorded("tiny_hubert_classifier")["batch.logits"].shape == (3, 3)
    assert {"final_proj.1", "final_proj.2"} <= set(recorded_case("tiny_contentvec", "single"))
    assert model("tiny_hubert_bn").config.conv_pos_batch_norm and "batch_norm" in \
        model("tiny_hubert_bn").params["encoder"]["pos_conv_embed"]


def test_batch_normed_positional_conv_lets_padding_in_upstream():
    """transformers' padded batch differs from the item alone (the batch norm maps padded zeros to
    other values the conv reads), so the vs-alone check above has teeth; norm_over_padding
    reproduces transformers, the default the item alone."""
    batch, alone = recorded_case("tiny_hubert_bn", "batch"), recorded_case("tiny_hubert_bn", "alone.2")
    frames = alone["last_hidden_state"].shape[1]
    assert golden_error(batch["last_hidden_state"][2:3, :frames], alone["last_hidden_state"]) > 1e-3
    m = model("tiny_hubert_bn")
    ours = m(batch["input_values"], batch["attention_mask"], items_alone=False).last_hidden_state
    assert golden_error(ours[2:3, :frames], alone["last_hidden_state"]) <= 1e-4
    assert golden_error(ours, batch["last_hidden_state"], batch["frame_mask"]) > 1e-3


def test_batch_norm_is_the_inference_formula():
    rng = np.random.RandomState(0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    p = {"weight": rng.rand(3) + 0.5, "bias": rng.standard_normal(3), "running_mean": rng.standard_normal(3),
         "running_var": rng.rand(3) + 0.5}
    expected = (x - p["running_mean"]) / np.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]
    np.testing.assert_allclose(batch_norm(x, p), expected, rtol=1e-6, atol=1e-6)


def test_the_full_size_recording_is_the_hubert_base_architecture():
    cfg = model("hubert_base").config
    assert cfg.model_type == "hubert" and (cfg.hidden_size, cfg.num_hidden_layers, cfg.conv_dim[-1]) == (768, 12, 512)
    assert recorded("hubert_base")["single.hidden_states.9"].shape == (1, 49, 768)


def test_heads_are_told_from_the_config_and_tensors():
    assert model("tiny_hubert").kind == heads.BASE
    assert model("tiny_hubert_stable").kind == heads.CTC
    assert model("tiny_hubert_classifier").kind == heads.SEQUENCE_CLASSIFICATION
    assert model("tiny_contentvec").kind == heads.FINAL_PROJ
    cfg = npw2v2.Config(model_type="hubert", architectures=("Wav2Vec2ForPreTraining",))
    with pytest.raises(ValueError, match="hubert models have no pretraining heads"):
        heads.model_kind(cfg)
    with pytest.raises(ValueError, match="wav2vec2 models have no final_proj"):
        heads.model_kind(npw2v2.Config(architectures=("HubertModelWithFinalProj",)))


@pytest.mark.parametrize("model_type,named", [("sew", "SEW"), ("sew-d", "SEW-D"),
                                              ("whisper", "'whisper' is not a model npw2v2 knows")])
def test_load_refuses_other_families_by_name(model_type, named, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "tiny_hubert", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    with pytest.raises(CheckpointError, match=named) as caught:
        npw2v2.load(folder)
    assert "\n" not in str(caught.value)


def test_hubert_switches_are_refused_for_wav2vec2():
    with pytest.raises(ValueError, match="HuBERT's"):
        npw2v2.Config(conv_pos_batch_norm=True)


@pytest.mark.parametrize("layout", ["hf_bin", "hf_bin_weight_g"])
def test_hugging_face_hubert_bin_folders_convert(layout, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    code, printed = convert_main([str(GOLDEN / "hubert_checkpoints" / layout), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    assert "HubertForCTC, 2 layers" in printed.out
    converted = npw2v2.load(out)
    assert converted.config.model_type == "hubert" and converted.vocab["|"] == 4
    for case in ("single", "batch", "alone.2"):
        ref = recorded_case("tiny_hubert_stable", case)
        got = converted(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        assert golden_error(got.logits, ref["logits"], got.frame_mask) <= tolerance("tiny_hubert_stable"), case


@pytest.mark.filterwarnings("ignore:.*clipped")  # the recorded inputs are normalised: beyond full scale
def test_embed_through_final_proj_gives_the_recorded_projection():
    """Layer 1 then final_proj (RVC v1's recipe, layer 9 of 12 there) as transformers' hidden state through
    the Linear; the recorded inputs are already normalised, so embed's normalisation keeps them."""
    ref = recorded_case("tiny_contentvec", "single")
    m = model("tiny_contentvec")
    (features,) = m.embed([ref["input_values"][0]], layers=[1, 2], final_proj=True)
    assert features.shape == (2, 15, 12)
    assert golden_error(features[0], ref["final_proj.1"][0]) <= 1e-4
    assert golden_error(features[1], ref["final_proj.2"][0]) <= 1e-4
    (last,) = m.embed([ref["input_values"][0]], final_proj=True)
    assert golden_error(last[0], ref["final_proj.2"][0]) <= 1e-4
    with pytest.raises(ValueError, match="final_proj: this model has none"):
        model("tiny_hubert").embed([ref["input_values"][0]], final_proj=True)


@pytest.mark.filterwarnings("ignore:.*clipped")
def test_cli_embed_final_proj(tmp_path, capsys):
    import soundfile as sf
    from safetensors import safe_open

    from npw2v2.app.cli import main as cli

    ref = recorded_case("tiny_contentvec", "single")
    wav = tmp_path / "a.wav"
    sf.write(wav, ref["input_values"][0], 16000, subtype="FLOAT")
    out = tmp_path / "features.safetensors"
    assert cli(["embed", str(wav), "--model", str(GOLDEN / "tiny_contentvec"), "--layers", "1", "--final-proj",
                "-o", str(out)]) == 0
    with safe_open(str(out), "np") as f:
        assert golden_error(f.get_tensor(str(wav))[0], ref["final_proj.1"][0]) <= 1e-4
        assert f.metadata()["layers"] == "1 then final_proj" and f.metadata()["shape"] == "[layers, T, P]"
    assert cli(["embed", str(wav), "--model", str(GOLDEN / "tiny_hubert"), "--final-proj", "-o", str(out)]) == 2
    assert "--final-proj" in capsys.readouterr().err


def test_explain_says_what_differs_from_wav2vec2(capsys):
    from npw2v2.app.cli import main as cli

    assert cli(["explain", "--model", str(GOLDEN / "tiny_hubert_bn"), "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Wav2Vec2(HuBERT, 3 layers" in out and "what differs from wav2vec 2.0" in out
    assert "positional_conv_input [2, 49, 32]" in out and "padded frames zeroed again" in out
    assert float(out.rsplit("largest difference ", 1)[1].split()[0]) < 1e-5
    assert cli(["explain", "--model", str(GOLDEN / "tiny_hubert"), "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "no LayerNorm (HuBERT's feat_proj_layer_norm false)" in out and "positional_conv_input" not in out
    assert cli(["explain", "--model", str(GOLDEN / "tiny_ctc"), "--seconds", "1"]) == 0
    assert "HuBERT" not in capsys.readouterr().out


FAIRSEQ_HUBERT = GOLDEN / "fairseq_hubert"
FAIRSEQ_FIXTURES = ("hubert_pretrained", "hubert_untied", "hubert_args")  # cfg era twice, args era pre-LN
ALONE = ("single", "alone.1", "alone.2")
FAIRSEQ_CASES = [(name, case) for name in FAIRSEQ_FIXTURES for case in ALONE]


@pytest.fixture(scope="module")
def converted_fairseq(tmp_path_factory):
    """Each fairseq HuBERT fixture, converted and loaded."""
    return converted_fairseq_models(FAIRSEQ_HUBERT, FAIRSEQ_FIXTURES + ("hubert_ctc",), tmp_path_factory)


@PATHS
@pytest.mark.parametrize("name,case", FAIRSEQ_CASES)
def test_converted_fairseq_hubert_matches_fairseq(converted_fairseq, name, case, reference):
    """Every layer's output (fairseq's output_layer, 1-based) and final_proj on it, as fairseq computes them."""
    from npw2v2.core.hubert import final_projection

    ref = fairseq_recorded(FAIRSEQ_HUBERT, name, case)
    m = converted_fairseq[name]
    out = m(ref["input_values"], output_hidden_states=True, reference=reference)
    errors = {"last_hidden_state": golden_error(out.last_hidden_state, ref["last_hidden_state"])}
    for layer in range(1, m.config.num_hidden_layers + 1):
        errors[f"hidden_states.{layer}"] = golden_error(out.hidden_states[layer], ref[f"hidden_states.{layer}"])
        errors[f"final_proj.{layer}"] = golden_error(final_projection(out.hidden_states[layer], m.params["final_proj"]),
                                                     ref[f"final_proj.{layer}"])
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: {errors[worst]:.2e}"


def test_converted_fairseq_hubert_keeps_final_proj_and_drops_the_cluster_embeddings(converted_fairseq):
    pretrained, untied = converted_fairseq["hubert_pretrained"], converted_fairseq["hubert_untied"]
    assert pretrained.kind == heads.FINAL_PROJ and pretrained.config.model_type == "hubert"
    assert pretrained.params["final_proj"]["weight"].shape == (12, 32)  # final_dim
    assert untied.params["final_proj"]["weight"].shape == (24, 32)  # untie_final_proj: final_dim x 2 label sets
    assert "label_embs_concat" not in pretrained.params and "masked_spec_embed" in pretrained.params
    assert "project_hid" not in pretrained.params  # wav2vec 2.0's name for fairseq's final_proj
    args_era = converted_fairseq["hubert_args"].config
    assert args_era.do_stable_layer_norm and args_era.feat_extract_norm == "layer" and args_era.conv_bias


@PATHS
@pytest.mark.parametrize("case", ALONE)
def test_converted_fine_tuned_fairseq_hubert_gives_fairseqs_ctc_logits(converted_fairseq, case, reference):
    """hubert_ctc.pt (fairseq's HubertCtc: w2v_encoder.w2v_model.* and w2v_encoder.proj) as fairseq runs it."""
    ref = fairseq_recorded(FAIRSEQ_HUBERT, "hubert_ctc", case)
    logits = converted_fairseq["hubert_ctc"](ref["input_values"], reference=reference).logits
    assert golden_error(logits, ref["logits"]) <= 1e-4


def test_converted_fine_tuned_fairseq_hubert_is_a_hubert_ctc_model_with_its_letters(converted_fairseq):
    m = converted_fairseq["hubert_ctc"]
    assert m.kind == heads.CTC and m.config.architectures == ("HubertForCTC",) and m.config.model_type == "hubert"
    letters = (FAIRSEQ_HUBERT / "dict.ltr.txt").read_text().split()[::2]
    assert m.vocab == {**{s: i for i, s in enumerate(["<s>", "<pad>", "</s>", "<unk>"])},
                       **{s: 4 + i for i, s in enumerate(letters)}}  # fairseq's order: its 4 specials, then the file's
    assert "label_embs_concat" not in m.params and "final_proj" not in m.params
