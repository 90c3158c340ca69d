"""npw2v2 against activations recorded from PyTorch transformers, stage by stage."""
import numpy as np
import pytest

from golden import (HEADS, TINY, batch_vs_alone_errors, case_errors, cases, golden_error, languages, model,
                    recorded, recorded_case, tolerance)

ALL = TINY + ["base"] + HEADS
GOLDEN_CASES = [(name, case) for name in ALL for case in cases(name)]
PADDED = [(name, language) for name in ALL for language in languages(name)]
PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])


@PATHS
@pytest.mark.parametrize("name,case", GOLDEN_CASES, ids=[f"{n}-{c}" for n, c in GOLDEN_CASES])
def test_every_recorded_stage_matches_transformers(name, case, reference):
    errors = case_errors(name, case, reference=reference)
    assert errors, "no stage compared"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"{worst}: error {errors[worst]:.2e}"


def test_tiny_recordings_cover_every_stage():
    for name in TINY:
        stages = set(recorded_case(name, "single"))
        num_layers = model(name).config.num_hidden_layers
        needed = {"conv_features", "extract_features", "last_hidden_state"}
        needed |= {f"hidden_states.{i}" for i in range(num_layers + 1)}
        assert needed <= stages, f"{name} lacks {needed - stages}"
    assert "logits" in recorded_case("tiny_ctc", "single")


@pytest.mark.parametrize("name,language", PADDED)
def test_frame_mask_matches_transformers(name, language):
    """The encoder's frames, and after a down-sampling adapter its output's frames."""
    ref = recorded_case(name, f"{language}.batch" if language else "batch")
    out = model(name, language)(ref["input_values"], ref["attention_mask"])
    np.testing.assert_array_equal(out.encoder_frame_mask, ref["frame_mask"])
    np.testing.assert_array_equal(out.frame_mask, ref.get("output_frame_mask", ref["frame_mask"]))


@pytest.mark.parametrize("path", ["fast-as-one-batch", "fast-default", "reference"])
@pytest.mark.parametrize("name,language", PADDED)
def test_padded_batch_item_equals_the_item_alone(name, language, path):
    items_alone = None if path == "fast-default" else False
    errors = batch_vs_alone_errors(name, language=language, items_alone=items_alone, reference=path == "reference")
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"item {worst}: error {errors[worst]:.2e}"


def test_group_norm_upstream_padding_really_differs():
    """The two padded behaviours must differ for a group-norm model, or the tests above prove nothing."""
    ref = recorded_case("tiny_base", "batch")
    m = model("tiny_base")
    ours = m(ref["input_values"], ref["attention_mask"]).last_hidden_state
    valid = ref["frame_mask"]
    assert golden_error(ours, ref["last_hidden_state"], valid) > 1e-2


def test_layer_norm_model_has_one_padded_behaviour():
    ref = recorded_case("tiny_stable", "batch")
    m = model("tiny_stable")
    ours = m(ref["input_values"], ref["attention_mask"]).last_hidden_state
    assert golden_error(ours, ref["last_hidden_state"], ref["frame_mask"]) <= tolerance("tiny_stable")


def test_full_size_recording_is_the_base_architecture():
    cfg = model("base").config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.conv_dim[-1]) == (768, 12, 3072, 512)
    assert recorded("base")["single.logits"].shape == (1, 49, 32)


HEAD_STAGES = {
    "tiny_pretraining": {"projected_states", "projected_quantized_states", "codevector_perplexity"},
    "tiny_classifier": {"logits"}, "tiny_frame_classifier": {"logits"}, "tiny_adapter": {"logits"},
    "tiny_mms": {"logits"},
}


@pytest.mark.parametrize("name", HEADS)
def test_head_recordings_cover_the_heads(name):
    for case in cases(name):
        assert HEAD_STAGES[name] <= set(recorded_case(name, case)), case
    assert set(HEADS) == set(HEAD_STAGES)


def test_head_recordings_have_their_shapes():
    """Per-input classifier logits, the adapter's shorter output, masked pretraining's -inf logits."""
    assert recorded("tiny_classifier")["batch.logits"].shape == (3, 3)
    assert recorded("tiny_frame_classifier")["batch.logits"].shape == (3, 9, 4)
    adapter = recorded_case("tiny_adapter", "batch")
    assert adapter["last_hidden_state"].shape == (3, 3, 24) and adapter["output_frame_mask"].sum(axis=1).tolist() == [3, 1, 2]
    masked = recorded_case("tiny_pretraining", "masked")
    assert masked["contrastive_logits"].shape == (6, 2, 9) and np.isneginf(masked["contrastive_logits"]).any()
    assert {c.split(".")[0] for c in cases("tiny_mms")} == {"eng", "fra", "deu"}


def test_codevector_perplexity_differs_with_padding():
    """transformers' padded-batch perplexity counts padded frames; npw2v2's default must not, or the check proves nothing."""
    ref = recorded_case("tiny_pretraining", "batch")
    assert abs(ref["codevector_perplexity"] - ref["codevector_perplexity_of_valid_frames"]).max() > 0.1


def test_adapter_convolutions_see_padding_in_transformers():
    """transformers' padded adapter output differs from the inputs alone, so the vs-alone check has teeth."""
    ref, alone = recorded_case("tiny_adapter", "batch"), recorded_case("tiny_adapter", "alone.2")
    frames = alone["logits"].shape[1]
    assert golden_error(ref["logits"][2:3, :frames], alone["logits"]) > 1e-3
