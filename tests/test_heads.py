"""Heads and adapters beyond their golden recordings: model kinds, configs, padded batches
with random weights and lengths, the contrastive logits' indexing, errors."""
import dataclasses

import numpy as np
import pytest
from test_model import padded_batch

import npw2v2
from golden import golden_error
from npw2v2.core.adapters import adapter_length
from npw2v2.core.lengths import frame_lengths
from npw2v2.core.heads import (
    BASE,
    CTC,
    FRAME_CLASSIFICATION,
    PRETRAINING,
    SEQUENCE_CLASSIFICATION,
    codevector_perplexity,
    model_kind,
)

TINY = npw2v2.Config(conv_dim=(8, 8, 12, 12, 12, 16, 16), hidden_size=16, num_attention_heads=4, intermediate_size=32,
                     num_hidden_layers=2, num_conv_pos_embeddings=6, num_conv_pos_embedding_groups=2,
                     num_codevectors_per_group=5, codevector_dim=8, proj_codevector_dim=6, classifier_proj_size=7,
                     id2label={"0": "yes", "1": "no", "2": "up"}, vocab_size=9)
PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
# Each head and adapter, on a group-norm post-LN encoder unless said otherwise.
VARIANTS = {
    "pretraining": dict(architectures=(PRETRAINING,)),
    "sequence": dict(architectures=(SEQUENCE_CLASSIFICATION,)),
    "sequence-weighted-preLN": dict(architectures=(SEQUENCE_CLASSIFICATION,), use_weighted_layer_sum=True, **PRE_LN),
    "frame-weighted": dict(architectures=(FRAME_CLASSIFICATION,), use_weighted_layer_sum=True),
    "adapter-proj-ctc": dict(architectures=(CTC,), add_adapter=True, output_hidden_size=12, num_adapter_layers=2),
    "adapter-kernel5": dict(add_adapter=True, adapter_kernel_size=5, num_adapter_layers=3),
    "mms": dict(architectures=(CTC,), adapter_attn_dim=4, **PRE_LN),
}
# Per-item outputs of a forward pass: frame-wise ones on the encoder's or the output's frames, or whole.
ENCODER_FRAMES = ("extract_features", "projected_states", "projected_quantized_states", "codevector_ids")
OUTPUT_FRAMES = ("last_hidden_state",)


def variant(name, seed=0, **changes):
    cfg = dataclasses.replace(TINY, **VARIANTS[name], **changes)
    weights = npw2v2.random_weights(cfg, seed=seed)
    weights["masked_spec_embed"] = np.random.RandomState(seed).standard_normal(cfg.hidden_size).astype(np.float32)
    return npw2v2.from_tensors(weights, cfg)


def per_item(out, i):
    """Item i's outputs, each cut to its own frames."""
    items = {k: getattr(out, k)[i, :out.encoder_frame_lengths[i]] for k in ENCODER_FRAMES if getattr(out, k) is not None}
    items.update({k: getattr(out, k)[i, :out.frame_lengths[i]] for k in OUTPUT_FRAMES})
    if out.logits is not None:
        items["logits"] = out.logits[i] if out.logits.ndim == 2 else out.logits[i, :out.frame_lengths[i]]
    return items


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("seed", [1, 2])
def test_padded_batch_gives_each_item_its_lone_result(name, seed):
    model = variant(name, seed)
    shortest = model.config.receptive_field
    lengths = [max(n, shortest) for n in np.random.RandomState(seed).randint(400, 7000, size=3)] + [shortest, shortest + 700]
    x, mask = padded_batch(lengths, seed)
    batched = model(x, mask)
    for i, n in enumerate(lengths):
        alone = per_item(model(x[i:i + 1, :n]), 0)
        mine = per_item(batched, i)
        assert alone.keys() == mine.keys()
        for stage, ref in alone.items():
            assert mine[stage].shape == ref.shape, (stage, i)
            err = golden_error(mine[stage], ref)
            assert err < 1e-5, f"item {i} ({n} samples), {stage}: {err:.2e}"


@pytest.mark.parametrize("name", ["adapter-proj-ctc", "adapter-kernel5"])
def test_adapter_lengths_are_the_convolutions_own(name):
    model = variant(name)
    shortest = model.config.receptive_field  # 400 with the default kernel of 3, more with 5
    for n in (shortest, shortest + 319, shortest + 320, shortest + 640, 9000):
        out = model(np.ones((1, n), np.float32))
        frames = frame_lengths([n], model.config)
        for _ in range(model.config.num_adapter_layers):
            frames = adapter_length(frames, model.config)
        assert out.last_hidden_state.shape[1] == out.frame_lengths[0] == frames[0], n
    assert model(np.ones((1, shortest), np.float32)).frame_lengths[0] == 1
    with pytest.raises(ValueError, match=f"at least {shortest} samples"):
        model(np.ones((1, shortest - 1), np.float32))


def test_transformers_padding_leaks_into_the_adapter_unless_masked():
    """norm_over_padding=True lets the padded frames into the adapter convolutions, as transformers does."""
    model = variant("adapter-proj-ctc", 3)
    x, mask = padded_batch([6000, 2500], 3)
    alone = model(x[1:, :2500]).logits[0]
    frames = alone.shape[0]
    ours, upstream = model(x, mask).logits[1, :frames], model(x, mask, norm_over_padding=True).logits[1, :frames]
    assert golden_error(ours, alone) < 1e-5 < golden_error(upstream, alone)


def test_contrastive_logits_of_a_batch_are_each_items_alone():
    """Negatives index the batch's B * T frames; item i's frame j is i * T + j there, j alone."""
    model = variant("pretraining", 4)
    lengths = [6000, 3000]
    x, mask = padded_batch(lengths, 4)
    out = model(x, mask)
    frames = out.encoder_frame_lengths
    rng = np.random.RandomState(4)
    alone_indices = [rng.randint(0, t, size=(1, t, 5)) for t in frames]
    batch_indices = np.zeros((2, out.projected_states.shape[1], 5), np.int64)
    for i, (t, idx) in enumerate(zip(frames, alone_indices)):
        batch_indices[i, :t] = idx[0] + i * out.projected_states.shape[1]
    batched = model.contrastive_logits(out, batch_indices)  # [1 + N, B, T]
    for i, n in enumerate(lengths):
        alone_out = model(x[i:i + 1, :n])
        alone = model.contrastive_logits(alone_out, alone_indices[i])
        assert np.isneginf(alone).any() or i == 1  # some negatives share their target's codevectors
        assert golden_error(batched[:, i:i + 1, :frames[i]], alone) < 1e-5


def test_codevector_perplexity_counts_codevectors_in_use():
    cfg = dataclasses.replace(TINY, num_codevector_groups=2, num_codevectors_per_group=4)
    same = np.zeros((1, 6, 2), np.int64)
    spread = np.stack([np.arange(8) % 4, np.arange(8) // 2], axis=-1)[None]  # each code twice per group
    assert float(codevector_perplexity(same, None, cfg)) == pytest.approx(2.0)
    assert float(codevector_perplexity(spread, None, cfg)) == pytest.approx(8.0)
    counted = np.zeros((1, 8), bool)
    counted[0, :2] = True  # codes 0, 1 and 0, 0: two and one in use
    assert float(codevector_perplexity(spread, counted, cfg)) == pytest.approx(3.0)


def test_mask_time_indices_replace_frames_by_the_mask_embedding():
    model = variant("pretraining", 5)
    x = np.random.RandomState(5).standard_normal((1, 4000)).astype(np.float32)
    hidden = np.zeros((1, 12), bool)
    hidden[0, 3:6] = True
    plain, masked = model(x, output_hidden_states=True), model(x, output_hidden_states=True, mask_time_indices=hidden)
    np.testing.assert_array_equal(plain.projected_quantized_states, masked.projected_quantized_states)  # targets kept
    assert golden_error(plain.projected_states, masked.projected_states) > 1e-3
    del model.params["masked_spec_embed"]
    with pytest.raises(ValueError, match="masked_spec_embed"):
        model(x, mask_time_indices=hidden)


# ---------------------------------------------------------------------------
# Model kinds and configs


def test_kind_comes_from_architectures_or_from_the_head_in_the_file():
    base = dataclasses.replace(TINY, architectures=("Wav2Vec2Model",))
    assert model_kind(base) == BASE
    assert model_kind(base, ["quantizer.codevectors", "project_q.weight"]) == PRETRAINING
    assert model_kind(base, ["projector.weight", "classifier.weight"]) == SEQUENCE_CLASSIFICATION
    assert model_kind(base, ["classifier.weight"]) == FRAME_CLASSIFICATION
    assert model_kind(dataclasses.replace(TINY, architectures=()), ["lm_head.weight"]) == CTC
    pretraining = dataclasses.replace(TINY, architectures=(PRETRAINING,))
    assert model_kind(pretraining) == PRETRAINING
    assert model_kind(pretraining, ["encoder.layer_norm.weight"]) == BASE  # saved without its heads


def test_unsupported_heads_are_named(tmp_path):
    from test_weights import save_single

    cfg = dataclasses.replace(TINY, architectures=("UniSpeechSatForPreTraining",))
    path = save_single(tmp_path / "m.safetensors", npw2v2.random_weights(TINY, kind=BASE), cfg)
    with pytest.raises(npw2v2.CheckpointError,
                       match=f"{path}: UniSpeechSatForPreTraining: npw2v2 does not run UniSpeech-SAT's pretraining"):
        npw2v2.load(path)
    with pytest.raises(ValueError, match="add_adapter with Wav2Vec2ForSequenceClassification"):
        model_kind(dataclasses.replace(TINY, architectures=(SEQUENCE_CLASSIFICATION,), add_adapter=True))


def test_missing_head_tensors_are_listed(tmp_path):
    from test_weights import save_single

    cfg = dataclasses.replace(TINY, architectures=(SEQUENCE_CLASSIFICATION,), use_weighted_layer_sum=True)
    weights = npw2v2.random_weights(cfg)
    del weights["layer_weights"], weights["projector.bias"]
    with pytest.raises(npw2v2.CheckpointError, match=r"missing: projector.bias \[7\]\n  missing: layer_weights \[3\]"):
        npw2v2.load(save_single(tmp_path / "m.safetensors", weights, cfg))


def test_labels_come_from_id2label():
    assert TINY.labels == ["yes", "no", "up"] and TINY.num_labels == 3
    assert npw2v2.Config.from_dict(TINY.to_dict()) == TINY
    assert TINY.to_dict()["id2label"] == {"0": "yes", "1": "no", "2": "up"}
    assert npw2v2.Config.from_dict({"num_labels": 3}).labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert npw2v2.Config().labels == ["LABEL_0", "LABEL_1"]  # transformers' default
    with pytest.raises(ValueError, match="number its labels 0, 1, 2"):
        npw2v2.Config.from_dict({"id2label": {"0": "a", "2": "b"}})


def test_classifier_logits_are_per_input_and_per_frame():
    x, mask = padded_batch([5000, 2000])
    assert variant("sequence")(x, mask).logits.shape == (2, 3)
    assert variant("frame-weighted")(x, mask).logits.shape == (2, 15, 3)
    assert variant("sequence").kind == SEQUENCE_CLASSIFICATION
    assert "sequence classifier" in repr(variant("sequence"))
