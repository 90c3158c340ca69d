"""WavLM against transformers' WavLMModel / ...ForCTC / ...ForSequenceClassification /
...ForAudioFrameClassification, recorded by golden/record_wavlm.py: what is WavLM's own (the buckets,
the gate, the table shared by every layer, the biased attention on both paths, the original .pt
converter, the config's checks). Every stage, padded batches and frame masks: test_family_golden.py."""
import json
import math
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

import npw2v2
from golden import GOLDEN, WAVLM, golden_error, model, recorded, recorded_case, tolerance
from npw2v2.core import fast, heads, layers, wavlm
from npw2v2.core.lengths import length_mask
from npw2v2.io.weights import CheckpointError
from test_fast import assert_same
from test_layers import attention_params, randn

PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
CHECKPOINTS = GOLDEN / "wavlm_checkpoints"


def direct_bucket(offset: int, num_buckets: int, max_distance: int) -> int:
    """One offset's bucket, straight from the formula (WavLMAttention._relative_positions_bucket), in Python floats."""
    half = num_buckets // 2
    exact = half // 2
    side = half if offset > 0 else 0
    distance = abs(offset)
    if distance < exact:
        return side + distance
    far = exact + int(math.log(distance / exact) / math.log(max_distance / exact) * (half - exact))
    return side + min(far, half - 1)


@pytest.mark.parametrize("buckets,distance", [(320, 800), (16, 10), (12, 778), (52, 432)])
def test_buckets_are_transformers_buckets(buckets, distance):
    """Every offset of a minute each way, bucketed by transformers (float32 log) and by npw2v2. In the last
    two geometries float32 puts offsets 122 (147, 252) one bucket above what float64 gives: transformers' bucket."""
    recorded_buckets = load_file(str(GOLDEN / "wavlm_base_plus" / "buckets.safetensors"))
    offsets = recorded_buckets["offsets"]
    cfg = npw2v2.Config(model_type="wavlm", num_buckets=buckets, max_bucket_distance=distance)
    ours = wavlm.relative_buckets(offsets, cfg)
    np.testing.assert_array_equal(ours, recorded_buckets[f"buckets.{buckets}.{distance}"])
    # every bucket reached, the log branch and the clip included, but "distance 0 after the query", which no offset is
    assert set(np.unique(ours).tolist()) == set(range(buckets)) - {buckets // 2}


@pytest.mark.parametrize("buckets,distance", [(320, 800), (16, 10), (8, 5), (100, 30)])
def test_buckets_follow_the_formula(buckets, distance):
    cfg = npw2v2.Config(model_type="wavlm", num_buckets=buckets, max_bucket_distance=distance)
    offsets = np.arange(-2 * distance - 5, 2 * distance + 6)
    expected = [direct_bucket(int(r), buckets, distance) for r in offsets]
    np.testing.assert_array_equal(wavlm.relative_buckets(offsets, cfg), expected)


def test_float32_and_float64_buckets_differ_where_recorded():
    """The recorded geometries that tell a float32 log (transformers') from a float64 one (the direct formula)."""
    recorded_buckets = load_file(str(GOLDEN / "wavlm_base_plus" / "buckets.safetensors"))
    offsets = recorded_buckets["offsets"]
    for buckets, distance, offset in ((12, 778, 122), (52, 432, 147), (52, 432, 252)):
        found = recorded_buckets[f"buckets.{buckets}.{distance}"][offsets == offset][0]
        assert found == direct_bucket(offset, buckets, distance) + 1


def test_position_bias_is_the_table_read_by_offset_without_a_copy():
    cfg = npw2v2.Config(model_type="wavlm", num_buckets=16, max_bucket_distance=10, num_attention_heads=3,
                        hidden_size=12, num_conv_pos_embedding_groups=1)
    embed = np.random.RandomState(0).standard_normal((16, 3)).astype(np.float32)
    frames = 23
    table = wavlm.relative_table(frames, embed, cfg)
    bias = wavlm.position_bias(table)
    assert table.shape == (3, 2 * frames - 1) and bias.shape == (3, frames, frames) and bias.dtype == np.float32
    assert np.shares_memory(bias, table)  # a view: no [H, T, T] array is made
    for i in range(frames):
        for j in range(frames):
            np.testing.assert_array_equal(bias[:, i, j], embed[direct_bucket(j - i, 16, 10)])


def test_position_bias_does_not_depend_on_the_padding():
    """An item's frames see the same bias in a longer (padded) batch: offsets do not move."""
    cfg = npw2v2.Config(model_type="wavlm", num_buckets=16, max_bucket_distance=10)
    embed = np.random.RandomState(1).standard_normal((16, 12)).astype(np.float32)
    short = wavlm.position_bias(wavlm.relative_table(9, embed, cfg))
    padded = wavlm.position_bias(wavlm.relative_table(30, embed, cfg))
    np.testing.assert_array_equal(padded[:, :9, :9], short)


def test_gate_is_computed_frame_by_frame_and_head_by_head():
    rng = np.random.RandomState(2)
    heads_, head_dim = 3, 4
    x = rng.standard_normal((2, 5, heads_ * head_dim)).astype(np.float32)
    p = {"gru_rel_pos_linear": {"weight": rng.standard_normal((8, head_dim)).astype(np.float32),
                                "bias": rng.standard_normal(8).astype(np.float32)},
         "gru_rel_pos_const": rng.standard_normal((1, heads_, 1, 1)).astype(np.float32)}
    gate = wavlm.gate(x, p, heads_)
    assert gate.shape == (2, heads_, 5) and gate.dtype == np.float32
    for b in range(2):
        for h in range(heads_):
            for t in range(5):
                proj = p["gru_rel_pos_linear"]["weight"] @ x[b, t, h * head_dim:(h + 1) * head_dim] \
                    + p["gru_rel_pos_linear"]["bias"]
                a, g = (1 / (1 + math.exp(-float(proj[:4].sum()))), 1 / (1 + math.exp(-float(proj[4:].sum()))))
                expected = a * (g * float(p["gru_rel_pos_const"][0, h, 0, 0]) - 1.0) + 2.0
                assert abs(gate[b, h, t] - expected) < 1e-5


@PATHS
def test_every_layer_uses_layer_0s_table(monkeypatch, reference):
    """One table, from layer 0's rel_attn_embed, reaches every layer's attention; the other layers have none."""
    m = model("tiny_wavlm_frame_classifier")
    assert [("rel_attn_embed" in layer["attention"]) for layer in m.params["encoder"]["layers"]] == [True, False, False]
    tables = []
    gated = wavlm.gated_bias
    monkeypatch.setattr(wavlm, "gated_bias", lambda x, p, table, h: tables.append(table) or gated(x, p, table, h))
    ref = recorded_case("tiny_wavlm_frame_classifier", "single")
    m(ref["input_values"], reference=reference)
    assert len(tables) == 3 and all(t is tables[0] for t in tables)
    embed = m.params["encoder"]["layers"][0]["attention"]["rel_attn_embed"]["weight"]
    np.testing.assert_array_equal(tables[0], wavlm.relative_table(tables[0].shape[1] // 2 + 1, embed, m.config))


def biased_case(rng, lengths, heads_, scale=1.0):
    dim = 4 * heads_
    frames = max(lengths)
    x, p = randn(rng, len(lengths), frames, dim), attention_params(rng, dim)
    rows = (1.0 + rng.uniform(0, 2, (len(lengths), heads_, frames))).astype(np.float32)  # gates lie in (0, 3)
    table = (scale * rng.standard_normal((heads_, 2 * frames - 1))).astype(np.float32)
    return x, p, length_mask(lengths, frames), (rows, wavlm.position_bias(table))


@pytest.mark.parametrize("lengths, heads_", [([7, 5], 2), ([1, 9, 4], 3), ([6], 1), ([1, 1], 2)])
def test_fast_attention_with_a_bias_is_the_reference(lengths, heads_):
    rng = np.random.RandomState(sum(lengths) + heads_)
    x, p, valid, bias = biased_case(rng, lengths, heads_)
    assert_same(fast.attention(x, valid, p, heads_, bias), layers.attention(x, valid, p, heads_, bias))
    assert_same(fast.attention(x, None, p, heads_, bias), layers.attention(x, None, p, heads_, bias))
    if max(lengths) > 1:  # one key has all the weight, whatever its score
        assert not np.allclose(layers.attention(x, valid, p, heads_, bias), layers.attention(x, valid, p, heads_))


def test_fast_attention_with_a_bias_in_query_blocks_and_far_out_of_exp2_range(monkeypatch):
    """Blocks of 3 query rows read the table view a block at a time; a bias of hundreds in the scores
    still gives the reference's softmax (the row maximum is always taken with a bias)."""
    rng = np.random.RandomState(5)
    x, p, valid, bias = biased_case(rng, [7, 5], 2, scale=300.0)
    monkeypatch.setattr(fast, "ATTENTION_BLOCK_ELEMENTS", 3 * 7)
    y = fast.attention(x, valid, p, 2, bias)
    assert np.isfinite(y).all()
    assert_same(y, layers.attention(x, valid, p, 2, bias))


def test_fast_attention_with_a_bias_never_makes_a_t_by_t_array_per_head(monkeypatch):
    """The bias is read from the [H, 2T - 1] table a block of query rows at a time: the fast path's peak
    stays far below even one [H, T, T] float32 array (the reference's scores are [B, H, T, T])."""
    import tracemalloc

    rng = np.random.RandomState(7)
    lengths, heads_ = [1600, 1100], 2
    x, p, valid, bias = biased_case(rng, lengths, heads_)
    monkeypatch.setattr(fast, "ATTENTION_BLOCK_ELEMENTS", 1 << 18)  # blocks of 1 MiB of scores
    tracemalloc.start()
    try:
        fast.attention(x, valid, p, heads_, bias)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_head_set = heads_ * 1600 * 1600 * 4  # bytes of an [H, T, T] float32 array
    assert peak < one_head_set / 4, f"{peak:,} bytes"


def test_recordings_cover_each_variant():
    cfgs = {name: model(name).config for name in WAVLM}
    assert {c.do_stable_layer_norm for c in cfgs.values()} == {False, True}
    assert any(c.use_weighted_layer_sum for c in cfgs.values())
    for name in WAVLM:  # inputs long enough for the log-spaced buckets and the clipped last one
        frames = recorded_case(name, "single")["last_hidden_state"].shape[1]
        assert frames - 1 >= cfgs[name].max_bucket_distance, name
    assert model("tiny_wavlm").kind == heads.BASE and model("tiny_wavlm_stable").kind == heads.CTC
    assert model("tiny_wavlm_classifier").kind == heads.SEQUENCE_CLASSIFICATION
    assert model("tiny_wavlm_frame_classifier").kind == heads.FRAME_CLASSIFICATION
    cfg = model("wavlm_base_plus").config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_buckets, cfg.max_bucket_distance,
            cfg.do_stable_layer_norm) == ("wavlm", 768, 12, 320, 800, False)
    assert recorded("wavlm_base_plus")["single.hidden_states.6"].shape == (1, 49, 768)


def test_configs_it_cannot_be_are_refused():
    with pytest.raises(ValueError, match="num_buckets must be a whole number >= 4"):
        npw2v2.Config.from_dict({"model_type": "wavlm", "num_buckets": 3})
    with pytest.raises(ValueError, match="max_bucket_distance 20 must be above num_buckets // 4 \\(80\\)"):
        npw2v2.Config.from_dict({"model_type": "wavlm", "max_bucket_distance": 20})
    with pytest.raises(ValueError, match="max_bucket_distance must be a whole number"):
        npw2v2.Config.from_dict({"model_type": "wavlm", "max_bucket_distance": 800.5})
    with pytest.raises(ValueError, match="adapter_attn_dim .* WavLM's layers have none"):
        npw2v2.Config.from_dict({"model_type": "wavlm", "do_stable_layer_norm": True, "adapter_attn_dim": 16})
    assert heads.model_kind(npw2v2.Config.from_dict({"model_type": "wavlm", "architectures": ["WavLMForXVector"]})) \
        == heads.XVECTOR  # wavlm-base-plus-sv: the x-vector head (test_xvector.py, tiny_wavlm_xvector)
    with pytest.raises(ValueError, match="wavlm models have no pretraining heads"):
        heads.model_kind(npw2v2.Config.from_dict({"model_type": "wavlm", "architectures": ["Wav2Vec2ForPreTraining"]}))


def test_a_file_without_the_bucket_table_is_refused(tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "tiny_wavlm", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["encoder.layers.0.attention.rel_attn_embed.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="rel_attn_embed"):
        npw2v2.load(folder)
    config = json.loads((GOLDEN / "tiny_wavlm" / "config.json").read_text())
    assert (config["num_buckets"], config["max_bucket_distance"]) == (16, 10)


def test_a_hugging_face_bin_folder_converts(tmp_path, capsys):
    from convert.cli import main as convert_main

    out = tmp_path / "model.safetensors"
    code, printed = convert_main([str(CHECKPOINTS / "hf_bin"), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    assert "WavLMForCTC, 2 layers" in printed.out
    converted = npw2v2.load(out)
    assert converted.config.model_type == "wavlm" and converted.config.num_buckets == 20
    for case in ("single", "batch", "alone.2"):
        ref = recorded_case("tiny_wavlm_stable", case)
        got = converted(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        assert golden_error(got.logits, ref["logits"], got.frame_mask) <= tolerance("tiny_wavlm_stable"), case


ORIGINALS = {"tiny_wavlm": "tiny_wavlm_original.pt", "tiny_wavlm_stable": "tiny_wavlm_stable_original.pt"}


@pytest.fixture(scope="module")
def converted_originals(tmp_path_factory):
    """Each original .pt fixture through npw2v2-convert, loaded, by the configuration it was made from."""
    from convert.cli import main as convert_main

    models = {}
    for name, file in ORIGINALS.items():
        out = tmp_path_factory.mktemp(name) / "model.safetensors"
        assert convert_main([str(CHECKPOINTS / file), str(out)]) == 0
        models[name] = npw2v2.load(out)
    return models


@pytest.fixture(scope="module")
def converted_original(converted_originals):
    return converted_originals["tiny_wavlm"]


@PATHS
@pytest.mark.parametrize("case", ["single", "batch", "alone.2"])
@pytest.mark.parametrize("name", ORIGINALS)
def test_an_original_wavlm_pt_converts_to_the_recorded_model(converted_originals, name, case, reference):
    """tiny_wavlm (group norm, post-LN) and tiny_wavlm_stable's encoder (layer norm, pre-LN) saved under the
    original WavLM's names and config (golden/record_wavlm.py renames them back, independently of
    convert/wavlm.py): converted, each gives transformers' activations."""
    ref = recorded_case(name, case)
    got = converted_originals[name](ref["input_values"], ref.get("attention_mask"), norm_over_padding=True,
                                    output_hidden_states=True, reference=reference)
    errors = {"last_hidden_state": golden_error(got.last_hidden_state, ref["last_hidden_state"], got.frame_mask)}
    for i, h in enumerate(got.hidden_states):
        errors[f"hidden_states.{i}"] = golden_error(h, ref[f"hidden_states.{i}"], got.frame_mask)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"{worst}: {errors[worst]:.2e}"


def test_the_converted_original_is_a_wavlm_model_with_its_settings(converted_original, converted_originals):
    cfg = converted_original.config
    assert (cfg.model_type, cfg.num_buckets, cfg.max_bucket_distance, cfg.feat_extract_norm,
            cfg.do_stable_layer_norm, cfg.num_conv_pos_embeddings) == ("wavlm", 16, 10, "group", False, 16)
    assert converted_original.kind == heads.BASE and "masked_spec_embed" in converted_original.params
    assert converted_original.metadata["source_format"] == "wavlm-original"
    assert converted_original.do_normalize is False  # the original cfg's normalize
    stable = converted_originals["tiny_wavlm_stable"]
    assert (stable.config.do_stable_layer_norm, stable.config.feat_extract_norm, stable.config.conv_bias,
            stable.config.num_buckets, stable.config.max_bucket_distance, stable.do_normalize, stable.kind) == \
        (True, "layer", True, 20, 12, True, heads.BASE)


@pytest.mark.parametrize("change,named", [
    ({"relative_position_embedding": False}, "relative_position_embedding is False: a WavLM without the relative"),
    ({"gru_rel_pos": False}, "gru_rel_pos is False: a WavLM without its gate"),
    ({"max_distance": 2}, "max_bucket_distance 2 must be above num_buckets // 4 (4), where the log-spaced buckets start "
                             "(from WavLM's max_distance, num_buckets)"),
    ({"encoder_layers": "2"}, "encoder_layers must be a whole number"),
])
def test_an_original_wavlm_with_a_config_npw2v2_cannot_run_is_one_line(change, named, tmp_path, capsys, monkeypatch):
    from convert import fairseq
    from convert.cli import main as convert_main

    source = CHECKPOINTS / "tiny_wavlm_original.pt"
    state = fairseq.load_torch_file(source)
    state["cfg"].update(change)
    monkeypatch.setattr(fairseq, "load_torch_file", lambda path: state)
    assert convert_main([str(source), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert named in err and str(source) in err and "Traceback" not in err, err


def test_an_original_wavlm_with_unknown_tensors_is_refused(tmp_path, capsys, monkeypatch):
    from convert import fairseq
    from convert.cli import main as convert_main

    source = CHECKPOINTS / "tiny_wavlm_original.pt"
    state = fairseq.load_torch_file(source)
    state["model"]["encoder.layers.0.self_attn.grep_b"] = state["model"]["encoder.layers.0.self_attn.grep_a"]
    state["model"]["w2v_encoder.proj.weight"] = state["model"]["encoder.layers.0.self_attn.grep_a"]
    monkeypatch.setattr(fairseq, "load_torch_file", lambda path: state)
    assert convert_main([str(source), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "no known Hugging Face name: encoder.layers.0.self_attn.grep_b, w2v_encoder.proj.weight" in err


def test_the_original_files_names_are_those_transformers_converts():
    """The fixture's names (golden/record_wavlm.py's inverse renaming) against the original names the
    transformers converter's MAPPING lists (self_attn.grep_linear, grep_a, relative_attention_bias, ...)."""
    from convert.wavlm import wavlm_to_hf

    manifest = json.loads((GOLDEN / "wavlm_manifest.json").read_text())
    names = manifest["checkpoints"]["original_names"]
    assert "encoder.layers.0.self_attn.relative_attention_bias.weight" in names
    assert "encoder.layers.1.self_attn.relative_attention_bias.weight" not in names
    assert {"encoder.layers.1.self_attn.grep_a", "encoder.layers.1.self_attn.grep_linear.weight",
            "encoder.pos_conv.0.weight_g", "post_extract_proj.weight", "mask_emb"} <= set(names)
    assert wavlm_to_hf("encoder.layers.1.self_attn.grep_a") == "encoder.layers.1.attention.gru_rel_pos_const"
    assert wavlm_to_hf("encoder.layers.3.fc1.bias") == "encoder.layers.3.feed_forward.intermediate_dense.bias"


def test_an_original_wavlm_file_needs_no_global_beyond_the_tensor_rebuilders():
    """What torch.save writes for {"cfg": plain dict, "model": state dict}: the restricted reader's base
    allowlist covers it, and nothing was added to the allowlist for WavLM."""
    import pickletools
    import zipfile

    from convert import torch_pickle

    with zipfile.ZipFile(CHECKPOINTS / "tiny_wavlm_original.pt") as archive:
        pickle_bytes = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for opcode, arg, _ in pickletools.genops(pickle_bytes):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            found.add((strings[-2], strings[-1]))
        elif opcode.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
    assert found == {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage")}
    assert found <= set(torch_pickle.ALLOWED)
    assert not any("wavlm" in f"{module}.{name}".lower() for module, name in torch_pickle.ALLOWED)


def test_explain_says_what_differs_and_shows_the_table(capsys):
    from npw2v2.app.cli import main as cli

    assert cli(["explain", "--model", str(GOLDEN / "tiny_wavlm_stable"), "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Wav2Vec2(WavLM, 2 layers" in out and "what differs from wav2vec 2.0" in out
    assert "position_bias_table   [4, 97]" in out and "from 20 buckets (one per distance below 5" in out
    assert float(out.rsplit("largest difference ", 1)[1].split()[0]) < 1e-5
    assert cli(["explain", "--model", "wavlm-base-plus", "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "wavlm-base-plus architecture" in out and "320 buckets up to 800 frames" in out


@PATHS
@pytest.mark.parametrize("name", ["tiny_wavlm", "tiny_wavlm_stable"])
def test_wavlm_on_the_stand_in_device(name, reference):
    """The buckets, the table view, the gate and the biased attention take no NumPy (host) call on device
    arrays (tests/stand_in_device.py refuses them as CuPy does): every stage, and the padded batch."""
    import stand_in_device
    from golden import batch_vs_alone_errors, case_errors

    for case in ("single", "batch"):
        errors = case_errors(name, case, device=stand_in_device, reference=reference)
        worst = max(errors, key=errors.get)
        assert errors[worst] <= tolerance(name), f"{case} {worst}: error {errors[worst]:.2e}"
    assert max(batch_vs_alone_errors(name, device=stand_in_device, reference=reference).values()) <= tolerance(name)
