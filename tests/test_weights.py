"""Reading configs (npw2v2.Config) and loading checkpoints (npw2v2.load, npw2v2.io.weights)."""
import dataclasses
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import npw2v2
from npw2v2.core.params import expected_shapes, fold_weight_norm, unflatten

TINY = npw2v2.Config(conv_dim=(8,) * 7, hidden_size=16, num_attention_heads=2, intermediate_size=32,
                     num_hidden_layers=2, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                     vocab_size=10)
TINY_CTC = dataclasses.replace(TINY, architectures=("Wav2Vec2ForCTC",))
POS_CONV = "encoder.pos_conv_embed.conv."

# Published config.json of facebook/wav2vec2-base-960h (transformers 4.5.1), copied verbatim.
BASE_960H = {
    "activation_dropout": 0.1, "apply_spec_augment": True, "architectures": ["Wav2Vec2ForCTC"],
    "attention_dropout": 0.1, "bos_token_id": 1, "conv_bias": False,
    "conv_dim": [512, 512, 512, 512, 512, 512, 512], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "ctc_loss_reduction": "sum", "ctc_zero_infinity": False,
    "do_stable_layer_norm": False, "eos_token_id": 2, "feat_extract_activation": "gelu",
    "feat_extract_dropout": 0.0, "feat_extract_norm": "group", "feat_proj_dropout": 0.1,
    "final_dropout": 0.1, "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout": 0.1,
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "layerdrop": 0.1, "mask_feature_length": 10, "mask_feature_prob": 0.0,
    "mask_time_length": 10, "mask_time_prob": 0.05, "model_type": "wav2vec2", "num_attention_heads": 12,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
    "num_hidden_layers": 12, "pad_token_id": 0, "transformers_version": "4.5.1", "vocab_size": 32,
}

# Published config.json of facebook/wav2vec2-large-960h-lv60-self (transformers 4.5.1), copied verbatim.
LARGE_960H_LV60_SELF = {
    "activation_dropout": 0.1, "apply_spec_augment": True, "architectures": ["Wav2Vec2ForCTC"],
    "attention_dropout": 0.1, "bos_token_id": 1, "conv_bias": True,
    "conv_dim": [512, 512, 512, 512, 512, 512, 512], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "ctc_loss_reduction": "sum", "ctc_zero_infinity": False,
    "do_stable_layer_norm": True, "eos_token_id": 2, "feat_extract_activation": "gelu",
    "feat_extract_dropout": 0.0, "feat_extract_norm": "layer", "feat_proj_dropout": 0.1,
    "final_dropout": 0.1, "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout": 0.1,
    "hidden_dropout_prob": 0.1, "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 4096,
    "layer_norm_eps": 1e-05, "layerdrop": 0.1, "mask_feature_length": 10, "mask_feature_prob": 0.0,
    "mask_time_length": 10, "mask_time_prob": 0.05, "model_type": "wav2vec2", "num_attention_heads": 16,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
    "num_hidden_layers": 24, "pad_token_id": 0, "transformers_version": "4.5.1", "vocab_size": 32,
}


# ---------------------------------------------------------------------------
# Helpers


def audio(batch=2, samples=2000, seed=0):
    """Random waveforms [B, S] float32; 2000 samples give 6 frames."""
    return np.random.RandomState(seed).standard_normal((batch, samples)).astype(np.float32)


def save_folder(folder, tensors, cfg):
    """A Hugging Face model folder: config.json + model.safetensors."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def save_single(path, tensors, cfg, **metadata):
    """One .safetensors file with the config JSON in its metadata."""
    save_file(tensors, str(path), metadata={"config": json.dumps(cfg.to_dict()), **metadata})
    return path


HEADS = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "projector.", "classifier.", "layer_weights")


def prefixed(tensors):
    """Names as the task models save them: ``wav2vec2.`` on everything but the head."""
    return {n if n.startswith(HEADS) else "wav2vec2." + n: v for n, v in tensors.items()}


def flat_params(tree, prefix=""):
    """The nested parameter tree back to {dotted name: array}."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in items:
        flat.update(flat_params(value, f"{prefix}{key}."))
    return flat


def assert_same_outputs(a, b):
    np.testing.assert_array_equal(a.last_hidden_state, b.last_hidden_state)
    if a.logits is None:
        assert b.logits is None
    else:
        np.testing.assert_array_equal(a.logits, b.logits)


# ---------------------------------------------------------------------------
# Config


def test_from_dict_ignores_unknown_keys_and_makes_tuples():
    """JSON lists become tuples; keys inference does not use are dropped."""
    d = {**TINY_CTC.to_dict(), "mask_time_prob": 0.05, "no_such_key": [1, 2]}
    assert isinstance(d["conv_dim"], list)
    cfg = npw2v2.Config.from_dict(d)
    assert cfg == TINY_CTC
    for name in ("conv_dim", "conv_kernel", "conv_stride", "architectures"):
        assert isinstance(getattr(cfg, name), tuple), name
    hash(cfg)


@pytest.mark.parametrize("change, message", [
    ({"conv_dim": [8] * 6}, "same length"),
    ({"conv_kernel": [10, 3, 3, 3, 3, 2]}, "same length"),
    ({"hidden_size": 18, "num_attention_heads": 4}, "divisible"),
    ({"num_attention_heads": 0}, "num_attention_heads must be a whole number >= 1, got 0"),
    ({"num_conv_pos_embedding_groups": 3}, "num_conv_pos_embedding_groups"),
], ids=["conv_dim", "conv_kernel", "heads", "zero-heads", "pos-groups"])
def test_inconsistent_config_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        npw2v2.Config.from_dict({**TINY.to_dict(), **change})


def test_base_960h_config():
    """Post-LN, group norm, no conv bias, CTC head: exactly npw2v2.BASE plus the head."""
    cfg = npw2v2.Config.from_dict(BASE_960H)
    assert cfg.receptive_field == 400
    assert cfg.frame_stride == 320
    assert cfg.has_ctc_head is True
    assert cfg.do_stable_layer_norm is False
    assert cfg.feat_extract_norm == "group"
    assert cfg.conv_bias is False
    assert cfg == dataclasses.replace(npw2v2.BASE, architectures=("Wav2Vec2ForCTC",))


def test_large_lv60_config_matches_LARGE():
    """Pre-LN, layer norm in every conv layer, conv bias: exactly npw2v2.LARGE plus the head."""
    cfg = npw2v2.Config.from_dict(LARGE_960H_LV60_SELF)
    assert (cfg.receptive_field, cfg.frame_stride) == (400, 320)
    assert cfg.has_ctc_head is True
    assert cfg.do_stable_layer_norm is True
    assert cfg.feat_extract_norm == "layer"
    assert cfg.conv_bias is True
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (1024, 24, 16)
    assert dataclasses.replace(npw2v2.LARGE, architectures=cfg.architectures) == cfg


def test_expected_shapes_follow_conv_bias_and_norm():
    """Group norm: a norm on conv layer 0 only; layer norm: on every layer, with conv biases."""
    base = expected_shapes(npw2v2.Config.from_dict(BASE_960H))
    large = expected_shapes(npw2v2.Config.from_dict(LARGE_960H_LV60_SELF))
    layer = "feature_extractor.conv_layers."
    assert f"{layer}0.layer_norm.weight" in base and f"{layer}1.layer_norm.weight" not in base
    assert not any(n.startswith(layer) and n.endswith("conv.bias") for n in base)
    assert all(f"{layer}{i}.layer_norm.weight" in large and f"{layer}{i}.conv.bias" in large for i in range(7))
    assert base[POS_CONV + "weight"] == (768, 48, 128)
    assert large["lm_head.weight"] == (32, 1024)


# ---------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("cfg", [TINY, TINY_CTC], ids=["no_head", "ctc"])
def test_every_way_of_storing_gives_the_same_model(tmp_path, cfg):
    """Folder or single file, with or without ``wav2vec2.``: same parameters, same outputs."""
    weights = npw2v2.random_weights(cfg, seed=1)
    paths = [
        save_folder(tmp_path / "folder", weights, cfg),
        save_folder(tmp_path / "folder_prefixed", prefixed(weights), cfg),
        save_single(tmp_path / "model.safetensors", weights, cfg),
        save_single(tmp_path / "prefixed.safetensors", prefixed(weights), cfg),
    ]
    expected = npw2v2.from_tensors(weights, cfg)(audio())
    for path in paths:
        model = npw2v2.load(path)
        assert model.config == cfg, path
        params = flat_params(model.params)
        assert params.keys() == weights.keys(), path
        for name, value in weights.items():
            np.testing.assert_array_equal(params[name], value, err_msg=f"{path}: {name}")
        assert_same_outputs(model(audio()), expected)


def test_ctc_head_gives_logits(tmp_path):
    out = npw2v2.load(save_single(tmp_path / "m.safetensors", npw2v2.random_weights(TINY_CTC), TINY_CTC))(audio())
    assert out.last_hidden_state.shape == (2, 6, 16)
    assert out.logits.shape == (2, 6, 10)


def test_lm_head_in_the_file_gives_logits_without_ctc_architecture(tmp_path):
    """A head in the file is used even when config.json does not name a ForCTC architecture."""
    weights = npw2v2.random_weights(TINY, kind="Wav2Vec2ForCTC")
    model = npw2v2.load(save_folder(tmp_path / "m", weights, TINY))
    assert model.has_ctc_head
    assert model(audio()).logits.shape == (2, 6, 10)


def test_no_head_gives_no_logits(tmp_path):
    model = npw2v2.load(save_single(tmp_path / "m.safetensors", npw2v2.random_weights(TINY), TINY))
    assert not model.has_ctc_head
    out = model(audio())
    assert out.logits is None
    assert out.last_hidden_state.shape == (2, 6, 16)


def test_vocab_comes_from_metadata_or_vocab_json(tmp_path):
    vocab = {"<pad>": 0, "|": 1, "A": 2}
    weights = npw2v2.random_weights(TINY_CTC)
    single = save_single(tmp_path / "m.safetensors", weights, TINY_CTC, vocab=json.dumps(vocab))
    folder = save_folder(tmp_path / "hf", weights, TINY_CTC)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    assert npw2v2.load(single).vocab == vocab
    assert npw2v2.load(folder).vocab == vocab


def test_sharded_folder(tmp_path):
    """model.safetensors.index.json with two shards loads like one file."""
    weights = npw2v2.random_weights(TINY_CTC)
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CTC.to_dict()))
    names = sorted(weights)
    shards = {"model-1.safetensors": names[::2], "model-2.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_file({n: weights[n] for n in shard_names}, str(folder / shard))
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert_same_outputs(npw2v2.load(folder)(audio()), npw2v2.from_tensors(weights, TINY_CTC)(audio()))


def weight_norm_spellings(weight):
    """The positional conv weight W as each spelling stores it; v = 2.5 W, so g must rescale it."""
    g = np.sqrt((weight ** 2).sum(axis=(0, 1), keepdims=True))  # [1, 1, K]
    v = 2.5 * weight
    wn = "parametrizations.weight."
    return {
        "folded": {POS_CONV + "weight": weight},
        "weight_g_v": {POS_CONV + "weight_g": g, POS_CONV + "weight_v": v},
        "parametrizations": {POS_CONV + wn + "original0": g, POS_CONV + wn + "original1": v},
        "prefixed_parametrizations": {"wav2vec2." + POS_CONV + wn + "original0": g,
                                      "wav2vec2." + POS_CONV + wn + "original1": v},
    }


@pytest.mark.parametrize("spelling", list(weight_norm_spellings(np.ones((1, 1, 1)))))
def test_weight_norm_spellings_load_alike(tmp_path, spelling):
    weights = npw2v2.random_weights(TINY_CTC, seed=2)
    folded = weights[POS_CONV + "weight"]
    assert folded.shape == (16, 8, 4)
    stored = {n: w for n, w in weights.items() if n != POS_CONV + "weight"}
    stored.update(weight_norm_spellings(folded)[spelling])
    model = npw2v2.load(save_single(tmp_path / "m.safetensors", stored, TINY_CTC))
    conv = model.params["encoder"]["pos_conv_embed"]["conv"]
    assert set(conv) == {"weight", "bias"}
    assert conv["weight"].dtype == np.float32
    np.testing.assert_allclose(conv["weight"], folded, rtol=1e-5, atol=1e-7)
    expected = npw2v2.from_tensors(weights, TINY_CTC)(audio())
    np.testing.assert_allclose(model(audio()).logits, expected.logits, rtol=1e-4, atol=1e-5)


def test_float16_tensors_load_as_float32(tmp_path):
    weights = npw2v2.random_weights(TINY_CTC, seed=3)
    half = {n: v.astype(np.float16) for n, v in weights.items()}
    model = npw2v2.load(save_single(tmp_path / "m.safetensors", half, TINY_CTC))
    params = flat_params(model.params)
    for name, value in half.items():
        assert params[name].dtype == np.float32, name
        np.testing.assert_array_equal(params[name], value.astype(np.float32), err_msg=name)
    out = model(audio())
    assert out.last_hidden_state.dtype == np.float32 and out.logits.dtype == np.float32


def test_float16_weight_norm_folds_like_float32():
    """Base-sized float16 weight_g/weight_v fold to what float32 folding of the same values gives."""
    cfg = dataclasses.replace(TINY, hidden_size=768, num_attention_heads=12, num_conv_pos_embedding_groups=16,
                              num_conv_pos_embeddings=8, num_hidden_layers=0)
    v = (0.0064 * np.random.RandomState(0).standard_normal((768, 48, 8))).astype(np.float16)
    g = np.sqrt((v.astype(np.float32) ** 2).sum(axis=(0, 1), keepdims=True)).astype(np.float16)
    tensors = {n: w.astype(np.float16) for n, w in npw2v2.random_weights(cfg).items() if n != POS_CONV + "weight"}
    tensors.update({POS_CONV + "weight_g": g, POS_CONV + "weight_v": v})
    folded = npw2v2.from_tensors(tensors, cfg).params["encoder"]["pos_conv_embed"]["conv"]["weight"]
    expected = fold_weight_norm(g.astype(np.float32), v.astype(np.float32))
    np.testing.assert_allclose(folded, expected, rtol=2e-3, atol=1e-6)


def test_pretraining_tensors_in_the_file_make_a_pretraining_model(tmp_path):
    """quantizer.*, project_q.* and project_hid.* are used even when config.json names no head
    (wav2vec2-xls-r-300m's says Wav2Vec2Model), and leave the encoder's outputs as they were."""
    weights = npw2v2.random_weights(TINY, seed=4, kind="Wav2Vec2ForPreTraining")
    encoder_only = {n: w for n, w in weights.items() if not n.startswith(("quantizer.", "project_"))}
    model = npw2v2.load(save_single(tmp_path / "m.safetensors", prefixed(weights), TINY))
    assert model.kind == "Wav2Vec2ForPreTraining"
    assert flat_params(model.params).keys() == weights.keys()
    out = model(audio())
    assert out.projected_states.shape == out.projected_quantized_states.shape == (2, 6, TINY.proj_codevector_dim)
    assert_same_outputs(out, npw2v2.from_tensors(encoder_only, TINY)(audio()))


# ---------------------------------------------------------------------------
# Errors


def test_mis_shaped_weight_g_is_named():
    """Weight norm parts are checked before they are folded."""
    tensors = dict(npw2v2.random_weights(TINY))
    weight = tensors.pop("encoder.pos_conv_embed.conv.weight")
    tensors["encoder.pos_conv_embed.conv.weight_g"] = np.ones((1, 1, 5), np.float32)
    tensors["encoder.pos_conv_embed.conv.weight_v"] = weight
    with pytest.raises(npw2v2.CheckpointError, match=r"weight_g is \[1, 1, 5\], the config says \[1, 1, 4\]"):
        npw2v2.from_tensors(tensors, TINY)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(npw2v2.CheckpointError, ValueError)


def test_one_error_names_every_problem_and_the_file(tmp_path):
    """A missing, an unexpected and a mis-shaped tensor are all reported at once."""
    weights = npw2v2.random_weights(TINY_CTC)
    del weights["encoder.layers.1.attention.k_proj.bias"]
    weights["encoder.layers.1.attention.extra_proj.weight"] = np.zeros((16, 16), np.float32)
    weights["feature_projection.projection.weight"] = np.zeros((16, 9), np.float32)
    path = save_single(tmp_path / "broken.safetensors", weights, TINY_CTC)
    with pytest.raises(npw2v2.CheckpointError) as error:
        npw2v2.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "encoder.layers.1.attention.k_proj.bias" in message
    assert "encoder.layers.1.attention.extra_proj.weight" in message
    assert "feature_projection.projection.weight" in message


def test_ctc_config_without_lm_head_is_refused(tmp_path):
    weights = npw2v2.random_weights(TINY)
    with pytest.raises(npw2v2.CheckpointError, match="lm_head.weight"):
        npw2v2.load(save_single(tmp_path / "m.safetensors", weights, TINY_CTC))


def test_missing_path(tmp_path):
    with pytest.raises(npw2v2.CheckpointError, match="no such file") as error:
        npw2v2.load(tmp_path / "nowhere.safetensors")
    assert "nowhere.safetensors" in str(error.value)


@pytest.mark.parametrize("content", [b"", b"abc", b"\x00" * 100, b"\xff" * 100, b'{"config": "x"}'],
                         ids=["empty", "short", "zeros", "huge_header", "json"])
def test_garbage_file_names_the_file(tmp_path, content):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(npw2v2.CheckpointError, match="safetensors") as error:
        npw2v2.load(path)
    assert str(path) in str(error.value)


def test_folder_without_config_json(tmp_path):
    save_file(npw2v2.random_weights(TINY), str(tmp_path / "model.safetensors"))
    with pytest.raises(npw2v2.CheckpointError, match="config.json") as error:
        npw2v2.load(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_file_without_config_metadata_points_to_folder_or_converter(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(npw2v2.random_weights(TINY), str(path), metadata={"format": "pt"})
    with pytest.raises(npw2v2.CheckpointError) as error:
        npw2v2.load(path)
    message = str(error.value)
    assert str(path) in message
    assert "folder" in message and "npw2v2-convert" in message


def test_bad_config_metadata_names_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(npw2v2.random_weights(TINY), str(path), metadata={"config": "{not json"})
    with pytest.raises(npw2v2.CheckpointError) as error:
        npw2v2.load(path)
    assert str(path) in str(error.value)


def test_folder_with_only_pytorch_bin_points_to_converter(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(npw2v2.CheckpointError, match="npw2v2-convert") as error:
        npw2v2.load(tmp_path)
    assert str(tmp_path) in str(error.value)


# ---------------------------------------------------------------------------
# unflatten and random_weights


def test_unflatten_makes_numbered_parts_lists_in_numeric_order():
    flat = {f"encoder.layers.{i}.w": i for i in sorted(range(12), key=str)}  # 0, 1, 10, 11, 2, ...
    tree = unflatten({**flat, "encoder.layer_norm.bias": "b"})
    assert isinstance(tree["encoder"]["layers"], list)
    assert [layer["w"] for layer in tree["encoder"]["layers"]] == list(range(12))
    assert tree["encoder"]["layer_norm"] == {"bias": "b"}
    assert unflatten({"a.0.b": 1}) == {"a": [{"b": 1}]}


def test_random_weights_are_reproducible():
    a, b = npw2v2.random_weights(TINY_CTC, seed=5), npw2v2.random_weights(TINY_CTC, seed=5)
    c = npw2v2.random_weights(TINY_CTC, seed=6)
    assert a.keys() == b.keys() == c.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert not np.array_equal(a[name], c[name]), name


@pytest.mark.parametrize("cfg, kind, has_head", [
    (TINY, None, False), (TINY_CTC, None, True), (TINY, "Wav2Vec2ForCTC", True), (TINY_CTC, "Wav2Vec2Model", False),
])
def test_random_weights_match_expected_shapes(cfg, kind, has_head):
    weights = npw2v2.random_weights(cfg, kind=kind)
    shapes = expected_shapes(cfg, kind)
    assert ("lm_head.weight" in shapes) == has_head
    assert {n: w.shape for n, w in weights.items()} == shapes
    assert all(w.dtype == np.float32 for w in weights.values())


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/model.safetensors", ".."])
def test_shard_names_must_stay_in_the_folder(tmp_path, shard):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": shard}}))
    with pytest.raises(npw2v2.CheckpointError, match="plain file names"):
        npw2v2.load(tmp_path)
