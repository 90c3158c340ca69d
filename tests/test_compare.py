"""npw2v2 compare fails closed: NaN or inf in one file, shapes, frame masks, missing stages and
integer stages each fail, named with their stage; equal files and small differences pass.

Two files of stage activations are made in each test (B is the reference); the functions of
npw2v2.app.explain are checked directly, and the command through ``main``.
"""
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from npw2v2.app.cli import main
from npw2v2.app.explain import compare, comparison, failures, report
from golden import GOLDEN

VALID = np.array([[True] * 6, [True] * 4 + [False] * 2])  # [B, T]: item 1 has 2 padded frames


def stages(seed: int = 0) -> dict:
    """A small trace as ``explain --save`` writes it: inputs, masks, frames, a head, codevector ids."""
    rng = np.random.RandomState(seed)
    return {
        "input_values": rng.standard_normal((2, 1920)).astype(np.float32),
        "attention_mask": np.arange(1920)[None, :] < np.array([[1920], [1280]]),
        "frame_mask": VALID.copy(),
        "hidden_states.0": rng.standard_normal((2, 6, 4)).astype(np.float32),
        "last_hidden_state": rng.standard_normal((2, 6, 4)).astype(np.float32),
        "logits": rng.standard_normal((2, 6, 5)).astype(np.float32),
        "codevector_ids": rng.randint(0, 8, (2, 6, 2)).astype(np.int64),
    }


def judged(a: dict, b: dict, tolerance: float = 1e-4) -> tuple[str, bool]:
    return report(comparison(a, b), tolerance)


def run_cli(tmp_path, capsys, a: dict, b: dict, *options) -> tuple[int, str]:
    """``npw2v2 compare A B [options]``: (exit status, stdout)."""
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    try:
        status = main(["compare", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), *options])
    except SystemExit as e:  # a usage error
        status = e.code
    return status, capsys.readouterr().out


def verdict(text: str) -> str:
    return text.splitlines()[-1]


# ---------------------------------------------------------------------------
# NaN and inf


def test_nan_in_a_only_fails_with_its_position():
    a, b = stages(), stages()
    a["last_hidden_state"][0, 1, 2] = np.nan
    (d,) = [d for d in compare(a, b) if d.name == "last_hidden_state"]
    assert d.problem is not None and "(0, 1, 2)" in d.problem and "nan in A" in d.problem
    assert np.isfinite(d.max_abs) and d.max_abs == 0.0  # the finite positions still agree
    text, ok = judged(a, b, tolerance=1.0)
    assert not ok
    assert verdict(text).startswith("first failing stage: last_hidden_state")


def test_nan_in_b_only_fails():
    a, b = stages(), stages()
    b["logits"][1, 3, 0] = np.nan
    text, ok = judged(a, b)
    assert not ok and "first failing stage: logits" in verdict(text)
    assert "nan in B" in text and "(1, 3, 0)" in text


def test_inf_against_a_finite_value_fails():
    a, b = stages(), stages()
    a["hidden_states.0"][1, 0, 0] = np.inf
    (d,) = [d for d in compare(a, b) if d.name == "hidden_states.0"]
    assert not d.comparable and "inf in A" in d.problem
    assert not judged(a, b)[1]


def test_minus_inf_in_both_at_the_same_places_passes_on_the_finite_rest():
    """As golden/'s pretraining recordings have: -inf logits of negatives equal to their target."""
    a, b = stages(), stages()
    for arrays in (a, b):
        arrays["logits"][0, 2, :3] = -np.inf
    a["logits"][1, 0, 4] += 1e-6
    (d,) = [d for d in compare(a, b) if d.name == "logits"]
    assert d.problem is None
    assert 0 < d.max_abs < 1e-5  # taken over the finite positions, not NaN
    assert judged(a, b)[1]


def test_minus_inf_at_different_places_fails():
    a, b = stages(), stages()
    a["logits"][0, 2, 1] = -np.inf
    b["logits"][0, 2, 3] = -np.inf
    (d,) = [d for d in compare(a, b) if d.name == "logits"]
    assert d.problem is not None and "2 of" in d.problem and "(0, 2, 1)" in d.problem
    assert not judged(a, b)[1]


def test_plus_and_minus_inf_at_the_same_place_fail():
    a, b = stages(), stages()
    a["logits"][0, 0, 0], b["logits"][0, 0, 0] = np.inf, -np.inf
    assert not judged(a, b)[1]


def test_nan_in_both_at_the_same_place_counts_as_equal():
    a, b = stages(), stages()
    a["logits"][0, 0, 0] = b["logits"][0, 0, 0] = np.nan
    assert judged(a, b)[1]


def test_an_inf_in_the_reference_does_not_shrink_the_relative_error():
    a, b = stages(), stages()
    a["logits"][0, 0, 0] = b["logits"][0, 0, 0] = np.inf
    a["logits"][0, 1, 0] = b["logits"][0, 1, 0] + 0.5
    (d,) = [d for d in compare(a, b) if d.name == "logits"]
    assert d.max_rel > 0.1
    assert not judged(a, b)[1]


def test_nan_in_padded_frames_is_ignored():
    """Padded frames are meaningless (fairseq's are finite noise): only valid frames are compared."""
    a, b = stages(), stages()
    a["last_hidden_state"][1, 5] = np.nan
    assert judged(a, b)[1]


# ---------------------------------------------------------------------------
# Frame masks


def test_frame_masks_differing_in_value_fail_as_a_frame_mismatch():
    a, b = stages(), stages()
    a["frame_mask"][1, 4] = True  # A calls a padded frame real
    result = comparison(a, b)
    (mask,) = result.masks
    assert mask.mismatch == "frame mismatch" and "first at (1, 4)" in mask.detail
    assert "valid frames per item: 6 / 5 in A, 6 / 4 in B" in mask.detail
    (stage,) = [d for d in result.stages if d.name == "frame_mask"]
    assert stage.problem.endswith("1 of 12, first at (1, 4): True in A, False in B")  # compared whole
    text, ok = report(result, 1e-4)
    assert not ok and "frame mismatch in frame_mask" in verdict(text)


def test_where_the_masks_differ_the_frames_either_calls_real_are_compared():
    a, b = stages(), stages()
    b["frame_mask"][1, 4] = True  # real to the reference, padding to A
    a["last_hidden_state"][1, 4] += 1.0
    (d,) = [d for d in compare(a, b) if d.name == "last_hidden_state"]
    assert d.max_abs >= 1.0


def test_frame_masks_differing_in_shape_fail_as_a_length_mismatch():
    a, b = stages(), stages()
    a["frame_mask"] = np.ones((2, 7), bool)
    text, ok = judged(a, b)
    assert not ok
    assert "length mismatch in frame_mask" in verdict(text)
    assert "[2, 7] in A" in text


@pytest.mark.parametrize("lacking", ["A", "B"])
def test_a_mask_in_one_file_only_is_used_and_said(lacking):
    a, b = stages(), stages()
    has = a if lacking == "B" else b
    del (b if lacking == "B" else a)["frame_mask"]
    has["last_hidden_state"][1, 4:] = 99.0  # padded frames: not compared, the one mask says so
    text, ok = judged(a, b)
    assert ok
    assert f"frame_mask: in {'A' if lacking == 'B' else 'B'} only" in text


def test_fairseqs_inverted_padding_mask_stands_for_the_frame_mask():
    a, b = stages(), stages()
    b["frame_padding_mask"] = ~b.pop("frame_mask")
    b["last_hidden_state"][1, 4:] = 99.0
    result = comparison(a, b)
    assert result.missing == [] and result.extra == []
    assert judged(a, b)[1]
    b["frame_padding_mask"] = VALID.copy()  # not inverted: every frame disagrees
    text, ok = judged(a, b)
    assert not ok and "frame mismatch in frame_padding_mask" in verdict(text)


def test_masks_are_per_case():
    a = {f"{case}.{k}": v for case in ("batch", "alone.1") for k, v in stages().items()}
    b = {k: v.copy() for k, v in a.items()}
    b["alone.1.frame_mask"][0, 5] = False
    text, ok = judged(a, b)
    assert not ok and "frame mismatch in alone.1.frame_mask" in verdict(text)
    assert "batch.frame_mask" not in text.split("problems:")[1]


# ---------------------------------------------------------------------------
# Stages, shapes, integers, tolerance


def test_a_reference_stage_missing_from_a_fails_and_is_listed():
    a, b = stages(), stages()
    del a["logits"]
    a["conv_layers.0"] = np.zeros((2, 20, 3), np.float32)  # in A only: reported, not a failure
    result = comparison(a, b)
    assert result.missing == ["logits"] and result.extra == ["conv_layers.0"]
    text, ok = report(result, 1e-4)
    assert not ok
    assert "missing from A: 1 reference stage: logits" in text
    assert "1 stage in A only, not compared: conv_layers.0" in text
    assert verdict(text) == "1 reference stage missing from A"


def test_a_stage_only_in_a_is_not_a_failure():
    a, b = stages(), stages()
    a["projected"] = np.zeros((2, 6, 4), np.float32)
    text, ok = judged(a, b)
    assert ok and "in A only, not compared: projected" in text


def test_no_common_stage_fails():
    a = {"x": np.zeros(3, np.float32)}
    b = {"y": np.zeros(3, np.float32)}
    result = comparison(a, b)
    assert result.stages == []
    text, ok = report(result, 1e-4)
    assert not ok and "no stage names in common" in verdict(text)


def test_a_shape_mismatch_fails():
    a, b = stages(), stages()
    a["hidden_states.0"] = np.zeros((2, 6, 5), np.float32)
    (d,) = [d for d in compare(a, b) if d.name == "hidden_states.0"]
    assert d.problem == "shapes differ: [2, 6, 5] in A, [2, 6, 4] in B"
    text, ok = judged(a, b, tolerance=1e9)
    assert not ok and "first failing stage: hidden_states.0" in verdict(text)


def test_an_integer_stage_differing_by_one_fails_whatever_the_tolerance():
    a, b = stages(), stages()
    a["codevector_ids"][0, 3, 1] += 1
    (d,) = [d for d in compare(a, b) if d.name == "codevector_ids"]
    assert d.exact and d.problem is not None and "(0, 3, 1)" in d.problem
    text, ok = judged(a, b, tolerance=10.0)
    assert not ok and "first failing stage: codevector_ids" in verdict(text)


def test_integers_are_compared_exactly_past_float64s_precision():
    a = {"codevector_ids": np.array([2 ** 53], np.int64)}
    b = {"codevector_ids": np.array([2 ** 53 + 1], np.int64)}
    assert not judged(a, b, tolerance=10.0)[1]


def test_a_bool_mask_stage_differing_fails():
    a, b = stages(), stages()
    a["attention_mask"][1, 1500] = True
    text, ok = judged(a, b, tolerance=10.0)
    assert not ok and "attention_mask" in verdict(text)


def test_equal_files_pass():
    text, ok = judged(stages(), stages(), tolerance=0)
    assert ok and verdict(text) == "all 7 common stages within 0"
    assert "<- " not in text


def test_within_tolerance_but_not_zero_passes_and_over_it_fails():
    a, b = stages(), stages()
    a["last_hidden_state"][0, 0, 0] += 5e-5
    (d,) = [d for d in compare(a, b) if d.name == "last_hidden_state"]
    assert 0 < d.max_abs < 1e-4
    assert judged(a, b, tolerance=1e-4)[1]
    text, ok = judged(a, b, tolerance=1e-5)
    assert not ok and verdict(text) == "first stage over the tolerance 1e-05: last_hidden_state"
    assert "last_hidden_state" in [line.split()[0] for line in text.splitlines() if line.endswith("<- over")]


@pytest.mark.parametrize("tolerance", [-1e-4, float("nan"), float("inf")])
def test_nonsense_tolerance_is_refused(tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        failures(comparison(stages(), stages()), tolerance)


# ---------------------------------------------------------------------------
# Golden recordings


@pytest.mark.parametrize("name", ["tiny_pretraining", "fairseq"])
def test_golden_recordings_with_minus_inf_logits_match_themselves(name):
    arrays = load_file(str(GOLDEN / name / "activations.safetensors"))
    logits = [k for k in arrays if k.endswith("contrastive_logits")]
    assert logits and all(np.isneginf(arrays[k]).any() for k in logits)  # the case this test is about
    result = comparison(arrays, arrays)
    assert all(d.problem is None and d.max_abs == 0.0 for d in result.stages)
    text, ok = report(result, 0)
    assert ok and verdict(text) == f"all {len(arrays)} common stages within 0"


def test_fairseq_recordings_compare_with_a_port_using_npw2v2s_mask_names():
    ref = load_file(str(GOLDEN / "fairseq" / "activations.safetensors"))
    ours = {(k.removesuffix("frame_padding_mask") + "frame_mask" if k.endswith("frame_padding_mask") else k):
            (~v if k.endswith("frame_padding_mask") else v) for k, v in ref.items()}
    result = comparison(ours, ref)
    assert result.missing == [] and result.extra == []
    assert all(m.mismatch is None and m.detail == "" for m in result.masks) and len(result.masks) >= 7
    assert report(result, 0)[1]


# ---------------------------------------------------------------------------
# The command: npw2v2 compare A B, exit status 1 on any failure


def test_cli_nan_in_a_only_exits_1_naming_the_stage(tmp_path, capsys):
    a, b = stages(), stages()
    a["last_hidden_state"][0, 1, 2] = np.nan
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "first failing stage: last_hidden_state" in out


def test_cli_nan_in_b_only_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    b["logits"][1, 3, 0] = np.nan
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "first failing stage: logits" in out


def test_cli_inf_against_finite_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    a["hidden_states.0"][1, 0, 0] = np.inf
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "first failing stage: hidden_states.0" in out


def test_cli_minus_inf_in_both_at_the_same_places_exits_0(tmp_path, capsys):
    a, b = stages(), stages()
    for arrays in (a, b):
        arrays["logits"][0, 2, :3] = -np.inf
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 0 and "all 7 common stages within 0.0001" in out


def test_cli_minus_inf_at_different_places_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    a["logits"][0, 2, 1] = -np.inf
    b["logits"][0, 2, 3] = -np.inf
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "first failing stage: logits" in out


def test_cli_frame_mismatch_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    a["frame_mask"][1, 4] = True
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "frame mismatch in frame_mask" in out


def test_cli_length_mismatch_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    a["frame_mask"] = np.ones((2, 7), bool)
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "length mismatch in frame_mask" in out


def test_cli_missing_stage_exits_1_listing_it(tmp_path, capsys):
    a, b = stages(), stages()
    del a["logits"]
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "missing from A: 1 reference stage: logits" in out


def test_cli_no_common_stage_exits_1(tmp_path, capsys):
    status, out = run_cli(tmp_path, capsys, {"x": np.zeros(3, np.float32)}, {"y": np.zeros(3, np.float32)})
    assert status == 1 and "no stage names in common" in out


def test_cli_shape_mismatch_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    a["hidden_states.0"] = np.zeros((2, 6, 5), np.float32)
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 1 and "first failing stage: hidden_states.0" in out


def test_cli_integer_stage_off_by_one_exits_1(tmp_path, capsys):
    a, b = stages(), stages()
    a["codevector_ids"][0, 3, 1] += 1
    status, out = run_cli(tmp_path, capsys, a, b, "--tolerance", "10")
    assert status == 1 and "first failing stage: codevector_ids" in out


def test_cli_equal_files_exit_0(tmp_path, capsys):
    status, out = run_cli(tmp_path, capsys, stages(), stages())
    assert status == 0 and out.splitlines()[-1] == "all 7 common stages within 0.0001"


def test_cli_within_tolerance_exits_0(tmp_path, capsys):
    a, b = stages(), stages()
    a["last_hidden_state"][0, 0, 0] += 5e-5
    status, out = run_cli(tmp_path, capsys, a, b)
    assert status == 0 and out.splitlines()[-1] == "all 7 common stages within 0.0001"


@pytest.mark.parametrize("tolerance", ["-1", "nan", "inf"])
def test_cli_refuses_a_nonsense_tolerance(tmp_path, capsys, tolerance):
    status, out = run_cli(tmp_path, capsys, stages(), stages(), "--tolerance", tolerance)
    assert status == 2 and "within" not in out
