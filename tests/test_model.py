"""The whole forward pass: padded batches, masks, input checks."""
import numpy as np
import pytest

import npw2v2
from golden import golden_error

TINY = dict(conv_dim=(8, 8, 12, 12, 12, 16, 16), hidden_size=16, num_attention_heads=4, intermediate_size=32,
            num_hidden_layers=2, num_conv_pos_embeddings=6, num_conv_pos_embedding_groups=2,
            architectures=("Wav2Vec2ForCTC",), vocab_size=12)
KINDS = {
    "group-postLN": dict(feat_extract_norm="group", do_stable_layer_norm=False),
    "layer-preLN": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    "group-preLN": dict(feat_extract_norm="group", do_stable_layer_norm=True, num_conv_pos_embeddings=5),
    "layer-postLN": dict(feat_extract_norm="layer", do_stable_layer_norm=False, conv_bias=True),
}


def tiny_model(kind="group-postLN", seed=0):
    cfg = npw2v2.Config(**{**TINY, **KINDS[kind]})
    return npw2v2.from_tensors(npw2v2.random_weights(cfg, seed=seed), cfg)


def padded_batch(lengths, seed=0):
    """[B, S] float32 with each row's tail zeroed, and its bool mask."""
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((len(lengths), max(lengths))).astype(np.float32)
    mask = np.arange(x.shape[1])[None, :] < np.array(lengths)[:, None]
    return x * mask, mask


def outputs_of(out):
    """Every per-frame output, keyed by name."""
    arrays = {"extract_features": out.extract_features, "last_hidden_state": out.last_hidden_state,
              "logits": out.logits}
    arrays.update({f"hidden_states.{i}": h for i, h in enumerate(out.hidden_states)})
    return arrays


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_padded_batch_gives_each_item_its_lone_result(kind, seed):
    model = tiny_model(kind, seed)
    lengths = list(np.random.RandomState(seed).randint(400, 6000, size=4)) + [400]
    x, mask = padded_batch(lengths, seed)
    batched = outputs_of(model(x, mask, output_hidden_states=True, items_alone=False))
    for i, n in enumerate(lengths):
        alone = outputs_of(model(x[i:i + 1, :n], output_hidden_states=True))
        frames = alone["last_hidden_state"].shape[1]
        for name, ref in alone.items():
            err = golden_error(batched[name][i:i + 1, :frames], ref, np.ones((1, frames), bool))
            assert err < 1e-5, f"item {i} ({n} samples), {name}: {err:.2e}"


def test_padded_batch_by_default_runs_items_alone_and_zeroes_padding():
    """The default computes each item over its valid samples: the batch path's valid frames, zeros after."""
    model = tiny_model("group-postLN")
    x, mask = padded_batch([5000, 1200, 3000])
    default = model(x, mask, output_hidden_states=True)
    batched = outputs_of(model(x, mask, output_hidden_states=True, items_alone=False))
    valid = default.frame_mask
    assert default.frame_lengths.tolist() == [15, 3, 9]
    for name, array in outputs_of(default).items():
        assert array.shape == batched[name].shape, name
        assert (array[~valid] == 0).all(), name
        np.testing.assert_allclose(array[valid], batched[name][valid], rtol=1e-5, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="items_alone"):
        model(x, mask, norm_over_padding=True, items_alone=True)


def test_norm_over_padding_changes_only_group_norm_models():
    x, mask = padded_batch([6000, 1500])
    group, layer = tiny_model("group-postLN"), tiny_model("layer-preLN")
    for model, should_differ in ((group, True), (layer, False)):
        ours = model(x, mask).last_hidden_state
        upstream = model(x, mask, norm_over_padding=True).last_hidden_state
        err = golden_error(ours, upstream, model(x, mask).frame_mask)
        assert (err > 1e-3) == should_differ, err


def test_no_mask_treats_every_sample_as_real():
    model = tiny_model()
    x, _ = padded_batch([5000, 2000])
    no_mask = model(x)
    full_mask = model(x, np.ones(x.shape, dtype=np.int64))
    np.testing.assert_allclose(no_mask.last_hidden_state, full_mask.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert no_mask.frame_lengths.tolist() == [15, 15]
    assert no_mask.frame_mask.all()


def test_frame_lengths_and_mask_follow_the_attention_mask():
    model = tiny_model()
    x, mask = padded_batch([16000, 400, 8000])
    out = model(x, mask)
    assert out.frame_lengths.tolist() == [49, 1, 24]
    assert out.frame_mask.shape == (3, 49)
    assert out.frame_mask.sum(axis=1).tolist() == [49, 1, 24]
    assert out.last_hidden_state.shape == (3, 49, 16)
    assert out.logits.shape == (3, 49, 12)


def test_zero_one_mask_equals_bool_mask():
    model = tiny_model()
    x, mask = padded_batch([4000, 1000])
    np.testing.assert_array_equal(model(x, mask).last_hidden_state, model(x, mask.astype(np.int32)).last_hidden_state)


def test_outputs_are_float32_even_for_float64_input():
    model = tiny_model()
    out = model(np.random.RandomState(0).standard_normal((1, 2000)), output_hidden_states=True)
    assert {a.dtype for a in outputs_of(out).values()} == {np.dtype(np.float32)}


def test_hidden_states_only_when_asked():
    model = tiny_model()
    x, _ = padded_batch([2000])
    assert model(x).hidden_states is None
    states = model(x, output_hidden_states=True).hidden_states
    assert len(states) == model.config.num_hidden_layers + 1


def test_model_without_head_has_no_logits():
    cfg = npw2v2.Config(**dict(TINY, architectures=()))
    model = npw2v2.from_tensors(npw2v2.random_weights(cfg), cfg)
    assert not model.has_ctc_head
    assert model(padded_batch([2000])[0]).logits is None


@pytest.mark.parametrize("samples", [0, 1, 399])
def test_too_short_input_is_a_clear_error(samples):
    with pytest.raises(ValueError, match=f"at least 400 samples.*item 0 has {samples}"):
        tiny_model()(np.zeros((1, samples), np.float32))


def test_too_short_item_in_a_batch_is_named():
    x, mask = padded_batch([5000, 399, 300])
    with pytest.raises(ValueError, match="item 1 has 399, item 2 has 300"):
        tiny_model()(x, mask)


@pytest.mark.parametrize("mask, message", [
    (np.array([[1, 1, 0, 1] * 500]), "right-padded"),
    (np.ones((1, 1999)), "1999 samples"),
    (np.ones(2000), r"\[B, S\]"),
])
def test_bad_attention_mask_is_refused(mask, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(np.zeros((1, 2000), np.float32), mask)


def test_input_must_be_a_batch():
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        tiny_model()(np.zeros(2000, np.float32))
