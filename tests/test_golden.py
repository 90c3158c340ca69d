"""npw2v2 against activations recorded from PyTorch transformers, stage by stage."""
import numpy as np
import pytest

from golden import (TINY, batch_vs_alone_errors, case_errors, cases, golden_error, model, recorded,
                    recorded_case, tolerance)

ALL = TINY + ["base"]
GOLDEN_CASES = [(name, case) for name in ALL for case in cases(name)]


@pytest.mark.parametrize("name,case", GOLDEN_CASES, ids=[f"{n}-{c}" for n, c in GOLDEN_CASES])
def test_every_recorded_stage_matches_transformers(name, case):
    errors = case_errors(name, case)
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


@pytest.mark.parametrize("name", ALL)
def test_frame_mask_matches_transformers(name):
    ref = recorded_case(name, "batch")
    out = model(name)(ref["input_values"], ref["attention_mask"])
    np.testing.assert_array_equal(out.frame_mask, ref["frame_mask"])


@pytest.mark.parametrize("items_alone", [False, None], ids=["as-one-batch", "default"])
@pytest.mark.parametrize("name", ALL)
def test_padded_batch_item_equals_the_item_alone(name, items_alone):
    errors = batch_vs_alone_errors(name, items_alone=items_alone)
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
