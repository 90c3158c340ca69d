"""npw2v2 explain (a trace taken from the forward pass itself) and npw2v2 compare."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from npw2v2.app.cli import main
from npw2v2.app.explain import Trace, compare
from golden import GOLDEN, model, recorded_case


def frames_of(samples: int) -> int:
    """The standard encoder's frame count in closed form: one frame per 320 samples after the first 400."""
    return (samples - 400) // 320 + 1 if samples >= 400 else 0


def test_explain_prints_the_frames_of_each_input(capsys):
    assert main(["explain", "--seconds", "1.3", "2.7"]) == 0
    out = capsys.readouterr().out
    assert frames_of(20800) == 64 and frames_of(43200) == 134
    assert "item 0: 64 frames + 70 padding frames" in out
    assert "item 1: 134 frames" in out
    assert "(20800 - 10) // 5 + 1 = 4159" in out  # the first conv layer's arithmetic
    assert "conv_features         [2, 134, 512]" in out
    assert "Linear 512 -> 768" in out
    assert "True for 64 / 134 frames" in out


@pytest.mark.parametrize("samples", [[400, 401, 719, 720], [5000, 3217]])
def test_traced_lengths_are_the_closed_form_ones(samples):
    m = model("tiny_stable")
    x = np.zeros((len(samples), max(samples)), np.float32)
    mask = np.arange(x.shape[1])[None, :] < np.array(samples)[:, None]
    trace = Trace()
    m(x, mask, trace=trace)
    assert [int(t) for t in trace["conv_lengths"].facts["per_layer"][-1]] == [frames_of(n) for n in samples]
    assert trace["conv_features"].shape[1] == frames_of(max(samples))


def test_trace_shapes_are_the_outputs_shapes():
    m = model("tiny_ctc")
    ref = recorded_case("tiny_ctc", "batch")
    trace = Trace()
    out = m(ref["input_values"], ref["attention_mask"], output_hidden_states=True, trace=trace)
    assert trace["extract_features"].shape == list(out.extract_features.shape)
    assert trace["last_hidden_state"].shape == list(out.last_hidden_state.shape)
    assert trace["logits"].shape == list(out.logits.shape)
    for i, h in enumerate(out.hidden_states):
        np.testing.assert_array_equal(trace[f"hidden_states.{i}"].array, h)
    np.testing.assert_array_equal(trace["frame_mask"].array, out.frame_mask)


@pytest.mark.parametrize("name", ["tiny_base", "tiny_stable", "tiny_adapter"])
def test_both_paths_trace_the_same_stages(name):
    """The reference path shows every stage the fast path shows, with the same facts and numbers."""
    ref = recorded_case(name, "batch")
    traces = {}
    for reference in (False, True):
        traces[reference] = Trace()
        model(name)(ref["input_values"], ref["attention_mask"], trace=traces[reference], reference=reference)
    fast, slow = traces[False], traces[True]
    assert [s.name for s in fast.stages] == [s.name for s in slow.stages]
    for a, b in zip(fast.stages, slow.stages):
        assert a.facts.keys() == b.facts.keys() and a.shape == b.shape, a.name
        if a.array is not None and a.array.dtype == np.float32:
            np.testing.assert_allclose(a.array, b.array, rtol=0, atol=1e-4 * max(1, np.abs(b.array).max()))


def test_explain_names_the_path_it_traced(capsys):
    assert main(["explain", "--samples", "800", "--reference"]) == 0
    assert "the reference path" in capsys.readouterr().out.splitlines()[0]
    assert main(["explain", "--samples", "800", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "fast"


def traced_golden_batch(name="tiny_base"):
    """npw2v2's stages for golden's padded batch, run as transformers runs it."""
    ref = recorded_case(name, "batch")
    trace = Trace()
    model(name)(ref["input_values"], ref["attention_mask"], norm_over_padding=True, trace=trace)
    return trace.arrays(), ref


def test_compare_agrees_with_golden_and_finds_a_perturbed_stage():
    ours, ref = traced_golden_batch()
    diffs = {d.name: d for d in compare(ours, ref)}
    assert {"conv_features", "extract_features", "hidden_states.1", "last_hidden_state"} <= set(diffs)
    assert all(d.max_rel <= 1e-4 for d in diffs.values())
    broken = dict(ours)
    broken["hidden_states.1"] = ours["hidden_states.1"] + 1e-2
    over = [d.name for d in compare(broken, ref) if d.max_rel > 1e-4]
    assert over[0] == "hidden_states.1"


def test_compare_ignores_padded_frames(tmp_path):
    ours, ref = traced_golden_batch()
    noisy = dict(ours)
    padded = ~ours["frame_mask"]
    noisy["last_hidden_state"] = np.where(padded[..., None], 99.0, ours["last_hidden_state"]).astype(np.float32)
    (d,) = [d for d in compare(noisy, ref) if d.name == "last_hidden_state"]
    assert d.max_rel <= 1e-4


def test_compare_cli_on_golden_files_with_case_prefixes(tmp_path, capsys):
    golden = GOLDEN / "tiny_ctc" / "activations.safetensors"
    arrays = load_file(str(golden))
    arrays["alone.1.hidden_states.2"] = arrays["alone.1.hidden_states.2"] * 1.01
    perturbed = tmp_path / "perturbed.safetensors"
    save_file(arrays, str(perturbed))
    assert main(["compare", str(golden), str(perturbed)]) == 1
    out = capsys.readouterr().out
    assert "first stage over the tolerance 0.0001: alone.1.hidden_states.2" in out
    assert main(["compare", str(golden), str(golden)]) == 0
    assert "common stages within" in capsys.readouterr().out


def test_explain_json_and_save(tmp_path, capsys):
    saved = tmp_path / "acts.safetensors"
    assert main(["explain", "--model", str(GOLDEN / "tiny_odd_pos"), "--samples", "1000", "400",
                 "--json", "--save", str(saved)]) == 0
    data = json.loads(capsys.readouterr().out)
    stages = {s["stage"]: s for s in data["stages"]}
    assert stages["conv_features"]["shape"] == [2, 2, 32]
    assert stages["conv_lengths"]["per_layer"][-1] == [frames_of(1000), frames_of(400)]
    arrays = load_file(str(saved))
    assert {"input_values", "attention_mask", "frame_mask", "hidden_states.3", "last_hidden_state"} <= set(arrays)
    assert arrays["input_values"].shape == (2, 1000)


def test_explain_walks_through_the_adapter_and_the_head(capsys):
    assert main(["explain", "--model", str(GOLDEN / "tiny_adapter"), "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "adapter.layers.0      [2, 25, 24]" in out and "(24 + 2 - 3) // 2 + 1 = 12" in out
    assert "last_hidden_state     [2, 13, 24]" in out and "logits                [2, 13, 32]" in out
    assert main(["explain", "--model", str(GOLDEN / "tiny_classifier"), "--seconds", "1", "0.5"]) == 0
    assert "3 label scores per input, from the mean of its valid frames" in capsys.readouterr().out
    assert main(["explain", "--model", str(GOLDEN / "tiny_pretraining"), "--seconds", "1"]) == 0
    assert "projected_quantized_states [1, 49, 12]" in capsys.readouterr().out
