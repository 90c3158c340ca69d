"""What w2v-BERT 2.0 does that the rest of the family does not (npw2v2.core.w2v_bert): filter-bank features in
(the recorded audio through npw2v2.core.fbank gives the features transformers was given), Shaw's relative_key
positions, the causal depthwise conv and its LayerNorm, the adapter and where transformers lets the padding into
it, the pipeline from audio, the converter, the config. Every recorded stage against transformers is in
test_family_golden.py (golden/record_w2v_bert.py)."""
import json
import shutil

import numpy as np
import pytest

import npw2v2
from golden import GOLDEN, W2V_BERT, golden_error, model, recorded, recorded_case, run_stages, tolerance
from npw2v2.core import fast, heads, w2v_bert
from npw2v2.core.fbank import fbank_batch, preprocessor_options
from npw2v2.core.lengths import length_mask
from npw2v2.core.ops import FAST, REFERENCE
from test_fast import assert_same
from test_layers import randn

CHECKPOINTS = GOLDEN / "w2v_bert_checkpoints"
PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])


def tiny_config(**changes):
    return npw2v2.Config.from_dict({**dict(model_type="wav2vec2-bert", hidden_size=12, num_hidden_layers=1,
                                           num_attention_heads=3, intermediate_size=16, left_max_position_embeddings=3,
                                           right_max_position_embeddings=1, conv_depthwise_kernel_size=5), **changes})


# ---------------------------------------------------------------------------
# Audio to features: what transformers was given


@pytest.mark.parametrize("name", W2V_BERT + ["w2v_bert_2_0"])
def test_the_recorded_audio_gives_the_recorded_features(name):
    """npw2v2.core.fbank on the batch's audio, set up by the folder's preprocessor_config.json, gives the
    extractor's features and frame mask that the recordings fed transformers (golden/record_w2v_bert.py)."""
    batch = recorded_case(name, "batch")
    items = [row[:n] for row, n in zip(batch["samples"], batch["sample_mask"].sum(axis=1))]
    options = preprocessor_options(json.loads((GOLDEN / name / "preprocessor_config.json").read_text()))
    features, mask = fbank_batch(items, **options)
    np.testing.assert_array_equal(mask, batch["attention_mask"])
    np.testing.assert_allclose(features[mask], batch["input_values"][mask], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(features[~mask], batch["input_values"][~mask])  # the padding value, 1


def test_the_pipeline_runs_audio_through_the_filter_banks():
    """model.transcribe's batches (pipeline.model_inputs) are the recorded features: the logits transformers
    computed from them, each item's own frames."""
    from npw2v2.app import pipeline

    name = "tiny_w2v_bert_ctc"
    batch = recorded_case(name, "batch")
    items = [row[:n] for row, n in zip(batch["samples"], batch["sample_mask"].sum(axis=1))]
    m = model(name)
    out = pipeline._forward(m, items)
    for item in range(len(items)):
        alone = recorded_case(name, "single" if item == 0 else f"alone.{item}")["logits"]
        assert golden_error(out.logits[item:item + 1, :out.frame_lengths[item]], alone) <= tolerance(name)


@pytest.mark.filterwarnings("ignore::npw2v2.io.audio.AudioWarning")  # the recorded signals have unit variance
def test_a_converted_folder_transcribes_audio(tmp_path, capsys):
    """The Hugging Face .bin folder converts, keeps its preprocessor settings, and transcribes audio arrays
    to the recorded logits' greedy tokens."""
    from convert.cli import main as convert_main

    out = tmp_path / "model.safetensors"
    code, printed = convert_main([str(CHECKPOINTS / "hf_bin"), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    assert "Wav2Vec2BertForCTC, 2 layers" in printed.out
    converted = npw2v2.load(out)
    assert converted.config.model_type == "wav2vec2-bert" and converted.vocab
    assert converted.preprocessor["padding_value"] == 1 and converted.preprocessor["stride"] == 2
    assert "w2v-BERT, 2 layers, D=32, 160 filter-bank features, relative_key positions" in repr(converted)
    batch = recorded_case("tiny_w2v_bert_ctc", "batch")
    items = [row[:n] for row, n in zip(batch["samples"], batch["sample_mask"].sum(axis=1))]
    for item, result in enumerate(converted.transcribe(items)):
        alone = recorded_case("tiny_w2v_bert_ctc", "single" if item == 0 else f"alone.{item}")["logits"]
        np.testing.assert_array_equal(result.frame_tokens, alone[0].argmax(axis=-1))


# ---------------------------------------------------------------------------
# relative_key positions


def test_distance_index_clips_offsets():
    cfg = tiny_config(left_max_position_embeddings=2, right_max_position_embeddings=1)
    np.testing.assert_array_equal(w2v_bert.distance_index(4, 4, cfg),
                                  [[2, 3, 3, 3], [1, 2, 3, 3], [0, 1, 2, 3], [0, 0, 1, 2]])  # row L = offset 0


def test_relative_key_scores_are_shaws():
    """q_i . E[clip(j - i)] for every pair, written out as transformers' einsum over gathered rows."""
    rng = np.random.RandomState(1)
    cfg = tiny_config()
    q = randn(rng, 2, 3, 9, 4)
    table = randn(rng, 5, 4)
    rows = table[w2v_bert.distance_index(9, 9, cfg)]  # [T, T, d]
    np.testing.assert_allclose(w2v_bert.relative_key_scores(q, {"distance_embedding": {"weight": table}}, cfg),
                               np.einsum("bhld,lrd->bhlr", q, rows), rtol=1e-5, atol=1e-5)


def attention_case(rng, lengths, cfg):
    d = cfg.hidden_size
    p = {name: {"weight": randn(rng, d, d) / np.float32(np.sqrt(d)), "bias": randn(rng, d)}
         for name in ("linear_q", "linear_k", "linear_v", "linear_out")}
    rows = cfg.left_max_position_embeddings + cfg.right_max_position_embeddings + 1
    p["distance_embedding"] = {"weight": randn(rng, rows, d // cfg.num_attention_heads)}
    frames = max(lengths)
    return randn(rng, len(lengths), frames, d), length_mask(lengths, frames), p


@pytest.mark.parametrize("lengths", [[7, 5], [1, 9, 4], [6], [1, 1], [13, 2, 8]])
def test_fast_relative_key_attention_is_the_reference(lengths):
    cfg = tiny_config()
    x, valid, p = attention_case(np.random.RandomState(sum(lengths)), lengths, cfg)
    reference = w2v_bert.self_attention(x, valid, p, cfg)
    assert_same(w2v_bert.self_attention_fast(x, valid, p, cfg)[valid], reference[valid])
    assert_same(w2v_bert.self_attention_fast(x, None, p, cfg), w2v_bert.self_attention(x, None, p, cfg))


def test_fast_relative_key_attention_in_query_blocks(monkeypatch):
    monkeypatch.setattr(fast, "ATTENTION_BLOCK_ELEMENTS", 20)
    cfg = tiny_config()
    x, valid, p = attention_case(np.random.RandomState(3), [17, 11, 3], cfg)
    assert_same(w2v_bert.self_attention_fast(x, valid, p, cfg)[valid], w2v_bert.self_attention(x, valid, p, cfg)[valid])


# ---------------------------------------------------------------------------
# The conv module: causal, layer-normed


def conv_module_case(rng, cfg):
    d, k = cfg.hidden_size, cfg.conv_depthwise_kernel_size
    p = {"layer_norm": {"weight": 1 + randn(rng, d) / 10, "bias": randn(rng, d) / 10},
         "pointwise_conv1": {"weight": randn(rng, 2 * d, d, 1) / np.float32(np.sqrt(d))},
         "depthwise_conv": {"weight": randn(rng, d, 1, k) / np.float32(np.sqrt(k))},
         "depthwise_layer_norm": {"weight": 1 + randn(rng, d) / 10, "bias": randn(rng, d) / 10},
         "pointwise_conv2": {"weight": randn(rng, d, d, 1) / np.float32(np.sqrt(d))}}
    return p


@PATHS
def test_the_depthwise_conv_reads_no_later_frame(reference):
    """Frame t's output depends on frames t - K + 1 ... t only: changing frame 6 changes frames 6 ... 6 + K - 1."""
    cfg = tiny_config()
    ops = REFERENCE if reference else FAST
    rng = np.random.RandomState(4)
    p = conv_module_case(rng, cfg)
    x = randn(rng, 1, 15, cfg.hidden_size)
    changed = x.copy()
    changed[0, 6] += randn(rng, cfg.hidden_size)
    moved = np.abs(w2v_bert.convolution_module(changed, None, p, cfg, ops)
                   - w2v_bert.convolution_module(x, None, p, cfg, ops)).max(axis=-1)[0]
    k = cfg.conv_depthwise_kernel_size
    assert (moved[:6] == 0).all() and (moved[6:6 + k] > 1e-4).all() and (moved[6 + k:] == 0).all()


@PATHS
def test_the_conv_module_is_transformers_formula(reference):
    """LayerNorm, GLU of the pointwise conv, K - 1 zeros on the left, the depthwise taps, LayerNorm
    (layer_norm_eps), swish, pointwise conv: written out frame by frame."""
    cfg = tiny_config(layer_norm_eps=0.1, hidden_act="swish")
    ops = REFERENCE if reference else FAST
    rng = np.random.RandomState(5)
    p = conv_module_case(rng, cfg)
    x = randn(rng, 1, 8, cfg.hidden_size).astype(np.float64)

    def norm(h, q):
        return (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 0.1) * q["weight"] + q["bias"]

    h = norm(x[0], p["layer_norm"]) @ p["pointwise_conv1"]["weight"][:, :, 0].T
    h = h[:, :12] / (1 + np.exp(-h[:, 12:]))
    w, k = p["depthwise_conv"]["weight"][:, 0], cfg.conv_depthwise_kernel_size
    padded = np.concatenate([np.zeros((k - 1, 12)), h])
    h = np.stack([(padded[t:t + k].T * w).sum(-1) for t in range(8)])
    h = norm(h, p["depthwise_layer_norm"])
    h = h / (1 + np.exp(-h)) @ p["pointwise_conv2"]["weight"][:, :, 0].T
    np.testing.assert_allclose(w2v_bert.convolution_module(x.astype(np.float32), None, p, cfg, ops)[0], h,
                               rtol=0, atol=1e-5)


@PATHS
def test_garbage_in_the_padding_changes_no_valid_frame(reference):
    """A whole layer: attention gives padded keys no weight, the conv module zeroes them and reads no later frame."""
    m = model("tiny_w2v_bert_ctc")
    batch = recorded_case("tiny_w2v_bert_ctc", "batch")
    cfg, p = m.config, m.params["encoder"]["layers"][0]
    valid = batch["attention_mask"]
    ops = REFERENCE if reference else FAST
    rng = np.random.RandomState(7)
    x = randn(rng, *valid.shape, cfg.hidden_size)
    noisy = np.where(valid[:, :, None], x, 100.0 * randn(rng, *x.shape))
    clean = w2v_bert.conformer_layer(x, valid, p, cfg, ops, None)
    assert_same(w2v_bert.conformer_layer(noisy, valid, p, cfg, ops, None)[valid], clean[valid])


# ---------------------------------------------------------------------------
# The adapter and the padding


def test_transformers_lets_the_padding_into_the_adapter():
    """What the adapter's masking is for: an item whose frame count is odd at an adapter layer reads one padded
    frame there in transformers' batch (a layer-normed padded frame, not zero), far beyond the tolerance;
    npw2v2 with norm_over_padding gives transformers' batch, without it the item alone. The encoder itself
    does not leak: its last hidden state in the batch is each item's alone."""
    for name in ("tiny_w2v_bert_adapter", "tiny_w2v_bert_adapter_model"):
        batch = recorded_case(name, "batch")
        m = model(name)
        leaky, masks = run_stages(m, batch["input_values"], batch["attention_mask"], norm_over_padding=True)
        honest, _ = run_stages(m, batch["input_values"], batch["attention_mask"])
        layers = m.config.num_hidden_layers
        for item in (1, 2):  # 1 and 9 feature vectors: odd
            alone = recorded_case(name, f"alone.{item}")
            frames, out_frames = alone[f"hidden_states.{layers}"].shape[1], alone["last_hidden_state"].shape[1]
            assert golden_error(batch[f"hidden_states.{layers}"][item:item + 1, :frames],
                                alone[f"hidden_states.{layers}"]) <= tolerance(name)
            theirs = batch["last_hidden_state"][item:item + 1, :out_frames]
            assert golden_error(theirs, alone["last_hidden_state"]) > 100 * tolerance(name)
            assert golden_error(leaky["last_hidden_state"][item:item + 1, :out_frames], theirs) <= tolerance(name)
            assert golden_error(honest["last_hidden_state"][item:item + 1, :out_frames],
                                alone["last_hidden_state"]) <= tolerance(name)


def test_adapter_lengths_are_transformers():
    cfg = tiny_config(add_adapter=True, num_adapter_layers=2)
    np.testing.assert_array_equal(w2v_bert.adapter_lengths([1, 2, 9, 14], cfg), [1, 1, 5, 7])
    even = tiny_config(add_adapter=True, adapter_kernel_size=2, adapter_stride=3)  # padding 1 each side
    np.testing.assert_array_equal(w2v_bert.adapter_lengths([1, 2, 9, 14], even), [1, 1, 4, 5])
    ref = recorded_case("tiny_w2v_bert_adapter", "batch")
    assert (ref["output_frame_mask"].sum(axis=1)
            == w2v_bert.adapter_lengths(w2v_bert.adapter_lengths(ref["attention_mask"].sum(axis=1), cfg), cfg)).all()


# ---------------------------------------------------------------------------
# Recordings, configs, refusals


def test_recordings_cover_each_variant():
    """Every position scheme, both adapters, the intermediate FFN, each head, and a layer_norm_eps that matters."""
    configs = {name: npw2v2.Config.from_json(GOLDEN / name / "config.json") for name in W2V_BERT}
    assert {c.position_embeddings_type for c in configs.values()} == {"relative_key", "relative", "rotary", None}
    assert {heads.model_kind(c) for c in configs.values()} == {heads.BASE, heads.CTC, heads.SEQUENCE_CLASSIFICATION,
                                                             heads.FRAME_CLASSIFICATION, heads.XVECTOR}
    adapters = [c for c in configs.values() if c.add_adapter]
    assert {c.adapter_width == c.hidden_size for c in adapters} == {True, False}
    assert any(c.use_intermediate_ffn_before_adapter for c in adapters)
    assert any(c.layer_norm_eps > 1e-2 for c in configs.values())
    assert all(recorded(name)["batch.attention_mask"].sum(axis=1).min() == 1 for name in W2V_BERT[:5])  # one vector


def test_w2v_bert_2_0_is_the_recorded_architecture():
    """The built-in architecture is Wav2Vec2BertConfig's defaults, which a config.json of only a model_type reads as."""
    from npw2v2.core.config import W2V_BERT as BUILT_IN

    recorded_config = npw2v2.Config.from_json(GOLDEN / "w2v_bert_2_0" / "config.json")
    assert npw2v2.Config.from_dict({"model_type": "wav2vec2-bert"}) == BUILT_IN
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                  "position_embeddings_type", "left_max_position_embeddings", "right_max_position_embeddings",
                  "conv_depthwise_kernel_size", "feature_projection_input_dim", "layer_norm_eps", "num_adapter_layers",
                  "classifier_proj_size"):
        assert getattr(recorded_config, field) == getattr(BUILT_IN, field), field
    assert recorded_config.frame_stride == 320 and recorded_config.receptive_field == 560


def test_configs_it_cannot_be_are_refused():
    conf = {"model_type": "wav2vec2-bert"}
    with pytest.raises(ValueError, match="conv_depthwise_kernel_size must be odd"):
        npw2v2.Config.from_dict(dict(conf, conv_depthwise_kernel_size=30))
    with pytest.raises(ValueError, match="'relative_key' is w2v-BERT's"):
        npw2v2.Config.from_dict({"model_type": "wav2vec2-conformer", "position_embeddings_type": "relative_key"})
    with pytest.raises(ValueError, match="must agree, got kernel 5 and stride 2"):
        npw2v2.Config.from_dict(dict(conf, add_adapter=True, adapter_kernel_size=5))
    with pytest.raises(ValueError, match="use_intermediate_ffn_before_adapter is w2v-BERT's, and needs add_adapter"):
        npw2v2.Config.from_dict(dict(conf, use_intermediate_ffn_before_adapter=True))
    assert heads.class_name(heads.XVECTOR, "wav2vec2-bert") == "Wav2Vec2BertForXVector"
    with pytest.raises(ValueError, match="Wav2Vec2BertForPreTraining: npw2v2 does not run"):
        heads.model_kind(npw2v2.Config.from_dict(dict(conf, architectures=["Wav2Vec2BertForPreTraining"])))


def test_pretraining_is_refused_by_name(tmp_path, capsys):
    from convert.cli import main as convert_main

    folder = tmp_path / "pretraining"
    shutil.copytree(CHECKPOINTS / "hf_bin", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["Wav2Vec2BertForPreTraining"])))
    assert convert_main([str(folder), str(tmp_path / "out.safetensors")]) != 0
    assert "Wav2Vec2BertForPreTraining: npw2v2 does not run w2v-BERT's pretraining heads" in capsys.readouterr().err


def test_inputs_it_cannot_take_are_refused():
    m = model("tiny_w2v_bert_ctc")
    batch = recorded_case("tiny_w2v_bert_ctc", "batch")
    with pytest.raises(ValueError, match=r"input_features must be \[B, T, 160\]"):
        m(batch["input_values"][..., :80])
    with pytest.raises(ValueError, match="right-padded"):
        m(batch["input_values"], batch["attention_mask"][:, ::-1])
    with pytest.raises(ValueError, match="w2v-BERT takes filter-bank features"):
        m(batch["input_values"], batch["attention_mask"], items_alone=True)


@PATHS
def test_w2v_bert_on_the_stand_in_device(reference):
    """relative_key attention, the causal conv and the adapter take no NumPy (host) call on device arrays."""
    import stand_in_device
    from golden import batch_vs_alone_errors, case_errors

    for name in ("tiny_w2v_bert_ctc", "tiny_w2v_bert_adapter"):
        for case in ("single", "batch"):
            errors = case_errors(name, case, device=stand_in_device, reference=reference)
            worst = max(errors, key=errors.get)
            assert errors[worst] <= tolerance(name), f"{name} {case} {worst}: error {errors[worst]:.2e}"
        assert max(batch_vs_alone_errors(name, device=stand_in_device, reference=reference).values()) \
            <= tolerance(name)


# ---------------------------------------------------------------------------
# bench's built-in architecture (its work counted, its inputs; not timed here)


def test_bench_knows_w2v_bert_and_feeds_it_features():
    from npw2v2.app import bench
    from npw2v2.app.model import BUILT_IN
    from npw2v2.core.config import W2V_BERT as BUILT_IN_CONFIG
    from npw2v2.core.fbank import feature_lengths

    assert BUILT_IN["w2v-bert"] is BUILT_IN_CONFIG
    x, mask = bench.make_inputs([0.5, 0.3])
    features, frames = bench.model_inputs(BUILT_IN_CONFIG, x, mask)
    assert features.shape == (2, 24, 160) and (frames.sum(axis=1) == feature_lengths([8000, 4800])).all()
    np.testing.assert_array_equal(features[1:, :14], fbank_batch([x[1, :4800]])[0])
    assert bench.model_inputs(BUILT_IN_CONFIG, *bench.make_inputs([0.5, 0.5]))[1] is None
    assert bench.model_inputs(npw2v2.Config(), x, mask)[0] is x  # others read the samples


def test_flops_count_w2v_bert():
    """The projection of 160 features, per block two feed-forwards, attention, the L + R + 1 distance scores of each
    query, the conv module; the adapter's two strided convs, attention and feed-forward on its shorter frames."""
    from npw2v2.app import bench
    from npw2v2.core.config import W2V_BERT as BUILT_IN_CONFIG

    t, d, f, k = 499, 1024, 4096, 31  # 10 s: 998 frames, 499 vectors
    block = (8.0 * t * d * f + 8.0 * t * d * d + 4.0 * t * t * d + 2.0 * t * 73 * d
             + 4.0 * t * d * d + 2.0 * t * d * k + 2.0 * t * d * d)
    assert bench.forward_flops(BUILT_IN_CONFIG, [160000]) == pytest.approx(2.0 * t * 160 * d + 24 * block)
    adapted = tiny_config(add_adapter=True, num_adapter_layers=1, output_hidden_size=8)
    plain = tiny_config()
    u, o = 250, 8  # 499 vectors -> 250 after the adapter's stride-2 conv
    adapter = 2.0 * t * 12 * o + 4.0 * u * 3 * o * 2 * o + 8.0 * u * o * o + 4.0 * u * u * o + 4.0 * u * o * 16
    assert bench.forward_flops(adapted, [160000]) - bench.forward_flops(plain, [160000]) == pytest.approx(adapter)


def test_explain_refuses_w2v_bert_in_one_line(capsys):
    from npw2v2.app.cli import main as cli

    assert cli(["explain", "--model", str(GOLDEN / "tiny_w2v_bert_ctc"), "--seconds", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npw2v2: error: explain does not trace w2v-BERT models yet") and "Traceback" not in err
