"""Wav2Vec2-Conformer against transformers' Wav2Vec2ConformerModel / ...ForCTC / ...ForSequenceClassification /
...ForAudioFrameClassification / ...ForXVector, recorded by golden/record_conformer.py: what is the conformer's own
(the position tables, the rel-shift, both attentions, the depthwise conv, the conv module's view of the padding,
the unrun positional conv, the converter, the config's checks). Every stage, padded batches and frame masks:
test_family_golden.py."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import npw2v2
from golden import CONFORMER, GOLDEN, golden_error, model, recorded, recorded_case, run_stages, tolerance
from npw2v2.core import conformer, fast, heads, layers
from npw2v2.core.lengths import length_mask
from npw2v2.io.weights import CheckpointError
from test_fast import assert_same
from test_layers import randn

PATHS = pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
CHECKPOINTS = GOLDEN / "conformer_checkpoints"
POSITIONS = GOLDEN / "conformer_rel_pos_large" / "positions.safetensors"


# ---------------------------------------------------------------------------
# Positions


def test_relative_sinusoids_are_transformers_table():
    """D = 1024 over 100 frames (offsets 99 ... -99), as transformers' Wav2Vec2ConformerRelPositionalEmbedding
    makes them: to float32 rounding of the angles (relative_sinusoids says why not bit for bit)."""
    table = load_file(str(POSITIONS))["relative"]
    ours = conformer.relative_sinusoids(100, 1024)
    assert ours.shape == table.shape == (199, 1024) and ours.dtype == np.float32
    assert np.abs(ours - table).max() < 1e-5


def test_relative_sinusoids_follow_the_formula():
    frames, dim = 7, 6
    table = conformer.relative_sinusoids(frames, dim)
    for row in range(2 * frames - 1):
        offset = frames - 1 - row
        for c in range(dim // 2):
            angle = offset * 10000.0 ** (-2 * c / dim)
            assert abs(table[row, 2 * c] - np.sin(angle)) < 1e-6 and abs(table[row, 2 * c + 1] - np.cos(angle)) < 1e-6


def test_relative_sinusoids_do_not_depend_on_the_padding():
    """An item's offsets read the same rows in a longer (padded) batch's table: its middle."""
    short, padded = conformer.relative_sinusoids(9, 16), conformer.relative_sinusoids(30, 16)
    np.testing.assert_array_equal(padded[30 - 9:30 + 8], short)


def test_rotary_angles_are_transformers():
    recorded_positions = load_file(str(POSITIONS))
    cos, sin = conformer.rotary_angles(100, 64, 10000.0)
    assert cos.shape == sin.shape == (100, 64) and cos.dtype == np.float32
    assert np.abs(cos - recorded_positions["rotary_cos"]).max() < 1e-6  # the frequencies as torch rounds them
    assert np.abs(sin - recorded_positions["rotary_sin"]).max() < 1e-6


def test_rotary_scores_depend_only_on_the_offset():
    """The point of rotating: a rotated query at frame i dotted with a rotated key at frame j depends on j - i only."""
    rng = np.random.RandomState(3)
    heads_, head_dim, frames = 2, 8, 12
    q, k = randn(rng, heads_ * head_dim), randn(rng, heads_ * head_dim)
    cos, sin = conformer.rotary_angles(frames, head_dim, 50.0)
    qs = conformer.rotate(np.tile(q, (1, frames, 1)), cos, sin, heads_).reshape(frames, heads_, head_dim)
    ks = conformer.rotate(np.tile(k, (1, frames, 1)), cos, sin, heads_).reshape(frames, heads_, head_dim)
    scores = np.einsum("ihd,jhd->hij", qs, ks)
    for offset in range(-frames + 1, frames):
        diagonal = np.stack([np.diagonal(s, offset) for s in scores])
        assert np.abs(diagonal - diagonal[:, :1]).max() < 1e-4
    # and it is a rotation: each head's norm is kept
    np.testing.assert_allclose(np.linalg.norm(qs, axis=-1), np.linalg.norm(q.reshape(heads_, head_dim), axis=-1)[None]
                               .repeat(frames, 0), rtol=1e-5)


def test_rel_shift_reads_each_offset():
    """out[i, j] is the score against offset i - j, column T - 1 - (i - j) of the [T, 2T - 1] product."""
    rng = np.random.RandomState(4)
    frames = 6
    scores = randn(rng, 2, 3, frames, 2 * frames - 1)
    shifted = conformer.rel_shift(scores)
    assert shifted.shape == (2, 3, frames, frames)
    for i in range(frames):
        for j in range(frames):
            np.testing.assert_array_equal(shifted[:, :, i, j], scores[:, :, i, frames - 1 - (i - j)])


# ---------------------------------------------------------------------------
# The fast path against the reference


def attention_case(rng, lengths, heads_, kind, head_dim=4):
    dim = heads_ * head_dim
    frames = max(lengths)
    cfg = npw2v2.Config(model_type="wav2vec2-conformer", hidden_size=dim, num_attention_heads=heads_,
                        num_conv_pos_embedding_groups=1, position_embeddings_type=kind, rotary_embedding_base=100.0)
    p = {name: {"weight": randn(rng, dim, dim) / np.float32(np.sqrt(dim)), "bias": randn(rng, dim)}
         for name in ("linear_q", "linear_k", "linear_v", "linear_out")}
    p.update(linear_pos={"weight": randn(rng, dim, dim) / np.float32(np.sqrt(dim))}, pos_bias_u=randn(rng, heads_, head_dim),
             pos_bias_v=randn(rng, heads_, head_dim))
    return randn(rng, len(lengths), frames, dim), length_mask(lengths, frames), p, cfg


@pytest.mark.parametrize("kind", ["relative", "rotary", None])
@pytest.mark.parametrize("lengths, heads_", [([7, 5], 2), ([1, 9, 4], 3), ([6], 1), ([1, 1], 2), ([13, 2, 8], 4)])
def test_fast_attention_is_the_reference(lengths, heads_, kind):
    rng = np.random.RandomState(sum(lengths) + heads_)
    x, valid, p, cfg = attention_case(rng, lengths, heads_, kind)
    position = conformer.positions(x.shape[1], cfg)
    reference = conformer.self_attention(x, valid, p, cfg, position)
    for mask in (valid, None):
        got = conformer.self_attention_fast(x, mask, p, cfg, position)
        want = reference if mask is valid else conformer.self_attention(x, None, p, cfg, position)
        assert_same(got[valid] if mask is valid else got, want[valid] if mask is valid else want)


@pytest.mark.parametrize("kind", ["relative", "rotary"])
def test_fast_attention_in_query_blocks(monkeypatch, kind):
    """Blocks of a few query rows: the relative term's diagonal read starts anew in each block."""
    monkeypatch.setattr(fast, "ATTENTION_BLOCK_ELEMENTS", 20)
    rng = np.random.RandomState(5)
    x, valid, p, cfg = attention_case(rng, [17, 11, 3], 2, kind)
    position = conformer.positions(x.shape[1], cfg)
    assert_same(conformer.self_attention_fast(x, valid, p, cfg, position)[valid],
                conformer.self_attention(x, valid, p, cfg, position)[valid])


def test_fast_relative_attention_never_makes_a_t_by_t_array(monkeypatch):
    """Each item's rows meet only a block of (rows + n - 1) positional keys; no [T, 2T - 1] product of a head."""
    rng = np.random.RandomState(6)
    x, valid, p, cfg = attention_case(rng, [40, 25], 2, "relative")
    monkeypatch.setattr(fast, "ATTENTION_BLOCK_ELEMENTS", 8 * 40)  # 8 query rows a block of 40 keys, 12 of 25
    sizes = []
    window = conformer.sliding_window_view
    monkeypatch.setattr(conformer, "sliding_window_view",
                        lambda block, n, axis: sizes.append(block.shape) or window(block, n, axis=axis))
    conformer.self_attention_fast(x, valid, p, cfg, conformer.positions(40, cfg))
    keys = [width - rows + 1 for rows, width in sizes]  # each block's n
    assert sorted(set(keys)) == [25, 40] and all(rows * n <= 8 * 40 for (rows, _), n in zip(sizes, keys))
    assert max(width for _, width in sizes) < 2 * 40 - 1


@pytest.mark.parametrize("length, channels, k, stride", [(20, 6, 5, 1), (9, 3, 3, 2), (31, 16, 31, 1), (4, 2, 1, 1)])
def test_fast_depthwise_conv_is_the_reference(length, channels, k, stride):
    rng = np.random.RandomState(length + k)
    x, w = randn(rng, 2, length, channels), randn(rng, channels, 1, k)
    for bias in (None, randn(rng, channels)):
        padding = (k - 1) // 2
        assert_same(fast.conv1d(x, w, bias, stride, padding, groups=channels),
                    layers.conv1d(x, w, bias, stride, padding, groups=channels))


def test_glu_gates_the_first_half_by_the_second():
    x = np.array([[1.0, -2.0, 0.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(conformer.glu(x), [[1.0 * 0.5, -2.0 / (1 + np.exp(-3.0))]], rtol=1e-6)


# ---------------------------------------------------------------------------
# Padded batches: the depthwise conv and its view of the padding


def test_transformers_lets_the_padding_into_the_depthwise_conv():
    """What the mask handling is for: in transformers' padded batch the short items differ from themselves alone,
    far beyond the tolerance, and only because the conv module reads the padded frames: npw2v2 with
    norm_over_padding gives transformers' batch, without it each item alone."""
    name = "tiny_conformer_rel"
    batch = recorded_case(name, "batch")
    m = model(name)
    leaky, _ = run_stages(m, batch["input_values"], batch["attention_mask"], norm_over_padding=True, items_alone=False)
    honest, masks = run_stages(m, batch["input_values"], batch["attention_mask"], items_alone=False)
    for item in (1, 2):
        alone = recorded_case(name, f"alone.{item}")["logits"]
        frames = alone.shape[1]
        assert golden_error(batch["logits"][item:item + 1, :frames], alone) > 100 * tolerance(name)
        assert golden_error(leaky["logits"][item:item + 1, :frames], batch["logits"][item:item + 1, :frames]) \
            <= tolerance(name)
        assert golden_error(honest["logits"][item:item + 1, :frames], alone) <= tolerance(name)


@PATHS
def test_only_the_depthwise_conv_reads_the_padding(reference):
    """Garbage in the padded frames of every layer changes no valid frame: the conv module zeroes its
    depthwise conv's input there, and attention gives padded keys no weight."""
    m = model("tiny_conformer_rope")
    batch = recorded_case("tiny_conformer_rope", "batch")
    out = m(batch["input_values"], batch["attention_mask"], items_alone=False, reference=reference)
    cfg, p, valid = m.config, m.params["encoder"]["layers"][0], out.frame_mask
    ops = npw2v2.core.ops.REFERENCE if reference else npw2v2.core.ops.FAST
    rng = np.random.RandomState(7)
    x = randn(rng, *out.last_hidden_state.shape)
    noisy = np.where(valid[:, :, None], x, 100.0 * randn(rng, *x.shape))
    position = conformer.positions(x.shape[1], cfg)
    clean = conformer.conformer_layer(x, valid, p, cfg, ops, position)
    assert_same(conformer.conformer_layer(noisy, valid, p, cfg, ops, position)[valid], clean[valid])
    leaky = conformer.conformer_layer(noisy, valid, p, cfg, ops, position, padding_leaks=True)
    assert np.abs(leaky[valid] - clean[valid]).max() > 1e-2


# ---------------------------------------------------------------------------
# Recordings, files, configs


def test_recordings_cover_each_variant():
    cfgs = {name: model(name).config for name in CONFORMER}
    assert {c.position_embeddings_type for c in cfgs.values()} == {"relative", "rotary", None}
    assert {c.hidden_act for c in cfgs.values()} == {"gelu", "swish"}
    assert {c.feat_extract_norm for c in cfgs.values()} == {"group", "layer"}
    assert any(c.use_weighted_layer_sum for c in cfgs.values())
    assert any(c.rotary_embedding_base != 10000 for c in cfgs.values() if c.position_embeddings_type == "rotary")
    assert {model(name).kind for name in CONFORMER} == {heads.BASE, heads.CTC, heads.SEQUENCE_CLASSIFICATION,
                                                        heads.FRAME_CLASSIFICATION, heads.XVECTOR}
    for name in CONFORMER:  # a short item's depthwise conv reaches into the batch's padding
        lengths = recorded_case(name, "batch")["frame_mask"].sum(axis=1)
        frames = len(recorded_case(name, "batch")["frame_mask"][0])
        assert frames - lengths.min() >= cfgs[name].conv_depthwise_kernel_size // 2, name
    cfg = model("conformer_rel_pos_large").config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.position_embeddings_type, cfg.conv_depthwise_kernel_size, cfg.hidden_act) == \
        ("wav2vec2-conformer", 1024, 24, 16, 4096, "relative", 31, "swish")
    assert recorded("conformer_rel_pos_large")["single.hidden_states.12"].shape == (1, 49, 1024)


def test_the_positional_conv_is_loaded_and_left_unused(tmp_path):
    """transformers saves pos_conv_embed (never run) and the rotary inv_freq buffer: a file loads with or without
    them, they are left out of the parameters, and garbage in them changes nothing."""
    m = model("tiny_conformer_rope")
    assert "pos_conv_embed" not in m.params["encoder"] and "embed_positions" not in m.params["encoder"]
    tensors = load_file(str(CHECKPOINTS / "rope_safetensors" / "model.safetensors"))
    assert {"encoder.embed_positions.inv_freq", "encoder.pos_conv_embed.conv.bias"} <= set(tensors)
    ref = recorded_case("tiny_conformer_rope", "single")
    for change in ("garbage", "absent"):
        folder = tmp_path / change
        shutil.copytree(CHECKPOINTS / "rope_safetensors", folder)
        changed = {n: (np.full_like(v, 1e6) if change == "garbage" else None) if n.startswith(conformer.UNUSED) else v
                   for n, v in tensors.items()}
        save_file({n: v for n, v in changed.items() if v is not None}, str(folder / "model.safetensors"))
        out = npw2v2.load(folder)(ref["input_values"])
        assert golden_error(out.last_hidden_state, ref["last_hidden_state"]) <= tolerance("tiny_conformer_rope")


def test_a_file_without_a_conv_module_tensor_is_refused(tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(GOLDEN / "tiny_conformer_rel", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    del tensors["wav2vec2_conformer.encoder.layers.1.conv_module.depthwise_conv.weight"]
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing: encoder.layers.1.conv_module.depthwise_conv.weight"):
        npw2v2.load(folder)


def test_a_hugging_face_bin_folder_converts(tmp_path, capsys):
    from convert.cli import main as convert_main

    out = tmp_path / "model.safetensors"
    code, printed = convert_main([str(CHECKPOINTS / "hf_bin"), str(out)]), capsys.readouterr()
    assert code == 0, printed.err
    assert "Wav2Vec2ConformerForCTC, 2 layers" in printed.out
    assert not [n for n in load_file(str(out)) if n.startswith(conformer.UNUSED)]  # the unrun conv left out
    converted = npw2v2.load(out)
    assert converted.config.model_type == "wav2vec2-conformer" and converted.vocab
    for case in ("single", "batch", "alone.2"):
        ref = recorded_case("tiny_conformer_rel", case)
        got = converted(ref["input_values"], ref.get("attention_mask"), norm_over_padding=True)
        assert golden_error(got.logits, ref["logits"], got.frame_mask) <= tolerance("tiny_conformer_rel"), case


def test_pretraining_is_refused_by_name(tmp_path, capsys):
    from convert.cli import main as convert_main

    folder = tmp_path / "pretraining"
    shutil.copytree(CHECKPOINTS / "hf_bin", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["Wav2Vec2ConformerForPreTraining"])))
    assert convert_main([str(folder), str(tmp_path / "out.safetensors")]) != 0
    assert "Wav2Vec2ConformerForPreTraining: npw2v2 does not run Wav2Vec2-Conformer's pretraining heads" \
        in capsys.readouterr().err


def test_configs_it_cannot_be_are_refused():
    conf = {"model_type": "wav2vec2-conformer"}
    with pytest.raises(ValueError, match="conv_depthwise_kernel_size must be odd"):
        npw2v2.Config.from_dict(dict(conf, conv_depthwise_kernel_size=30))
    with pytest.raises(ValueError, match='position_embeddings_type must be one of "relative", "rotary", null'):
        npw2v2.Config.from_dict(dict(conf, position_embeddings_type="absolute"))
    with pytest.raises(ValueError, match="must be even, got 3"):
        npw2v2.Config.from_dict(dict(conf, position_embeddings_type="rotary", hidden_size=24, num_attention_heads=8,
                                     num_conv_pos_embedding_groups=8))
    with pytest.raises(ValueError, match="rotary_embedding_base must be a finite number above 0"):
        npw2v2.Config.from_dict(dict(conf, rotary_embedding_base=0))
    with pytest.raises(ValueError, match="adapter_attn_dim .* the conformer's layers have none"):
        npw2v2.Config.from_dict(dict(conf, adapter_attn_dim=16))
    assert npw2v2.Config.from_dict(dict(conf, vocab_size=None, pad_token_id=None)).vocab_size == 32  # the defaults'
    with pytest.raises(ValueError, match="vocab_size must be a whole number"):  # only the conformer's config has null
        npw2v2.Config.from_dict({"model_type": "wavlm", "vocab_size": None})
    assert heads.model_kind(npw2v2.Config.from_dict(dict(conf, architectures=["Wav2Vec2ConformerForXVector"]))) \
        == heads.XVECTOR
    assert heads.class_name(heads.CTC, "wav2vec2-conformer") == "Wav2Vec2ConformerForCTC"
    with pytest.raises(ValueError, match="Wav2Vec2ConformerForPreTraining: npw2v2 does not run"):
        heads.model_kind(npw2v2.Config.from_dict(dict(conf, architectures=["Wav2Vec2ConformerForPreTraining"])))


@PATHS
@pytest.mark.parametrize("name", ["tiny_conformer_rel", "tiny_conformer_rope"])
def test_conformer_on_the_stand_in_device(name, reference):
    """The position tables, both attentions, the depthwise conv and the batch norm take no NumPy (host) call on
    device arrays (tests/stand_in_device.py refuses them as CuPy does): every stage, and the padded batch."""
    import stand_in_device
    from golden import batch_vs_alone_errors, case_errors

    for case in ("single", "batch"):
        errors = case_errors(name, case, device=stand_in_device, reference=reference)
        worst = max(errors, key=errors.get)
        assert errors[worst] <= tolerance(name), f"{case} {worst}: error {errors[worst]:.2e}"
    assert max(batch_vs_alone_errors(name, device=stand_in_device, reference=reference).values()) <= tolerance(name)


# ---------------------------------------------------------------------------
# The applications: explain, bench's built-in architecture


@pytest.mark.parametrize("name, where", [
    ("tiny_conformer_rel", "relative_positions    [97, 32]"), ("tiny_conformer_rope", "rotary_cos            [49, 8]"),
    ("tiny_conformer_nopos", "no positions (position_embeddings_type null)")])
def test_explain_shows_where_positions_enter_and_what_the_conv_module_sees(name, where, capsys):
    from npw2v2.app.cli import main as cli

    assert cli(["explain", "--model", str(GOLDEN / name), "--seconds", "1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Wav2Vec2(Wav2Vec2-Conformer, 2 layers" in out and "what differs from wav2vec 2.0" in out
    assert where in out and "no positional conv" in out and "Conformer: 2 blocks of 4 heads" in out
    assert "(reads zeros on padded frames, as each item alone)" in out
    assert float(out.rsplit("largest difference ", 1)[1].split()[0]) < 1e-5
    assert cli(["explain", "--model", str(GOLDEN / name), "--seconds", "1", "0.5", "--norm-over-padding"]) == 0
    assert "(reads the padded frames' values, as transformers)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["tiny_conformer_rel", "tiny_conformer_rope"])
def test_explain_page_draws_a_conformer_blocks_attention(name, tmp_path):
    """The page's attention figure: the block's own weights (its positions, its layer-normed input after FFN1/2),
    each row a softmax over the item's valid keys, padded keys zero."""
    from npw2v2.app import explain_page
    from npw2v2.app.explain import Trace

    m = model(name)
    batch = recorded_case(name, "batch")
    trace = Trace()
    m(batch["input_values"], batch["attention_mask"], trace=trace, items_alone=False)
    b = explain_page.Batch.of(trace, m)
    weights = explain_page.head_weights(b, 1, 2)
    valid = batch["frame_mask"]
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
    assert (weights[~valid[:, None, :].repeat(valid.shape[1], 1)] == 0).all()
    # the weights of the block's attention: with every head's, times v, the block rebuilt on them gives the
    # traced next state
    p, cfg, ops = m.params["encoder"]["layers"][1], m.config, npw2v2.core.ops.REFERENCE
    block_input = trace["hidden_states.1"].array
    x = conformer.attention_input(block_input, p, cfg, ops)
    position = conformer.positions(x.shape[1], cfg)
    q, k, v = conformer.projections(x, p["self_attn"], cfg, position)
    all_heads = conformer.attention_weights(q, k, valid, p["self_attn"], cfg, position)
    np.testing.assert_allclose(all_heads[:, 2], weights, atol=1e-6)
    context = (all_heads @ v).transpose(0, 2, 1, 3).reshape(x.shape)
    h = conformer.half_step(block_input, p, "ffn1", cfg, ops) + layers.linear(context, **p["self_attn"]["linear_out"])
    h = h + conformer.convolution_module(h, valid, p["conv_module"], cfg, ops)
    h = conformer.block_norm(conformer.half_step(h, p, "ffn2", cfg, ops), p, "final_layer_norm", ops)
    assert_same(h[valid], trace["hidden_states.2"].array[valid])
    assert "the conformer's depthwise convs" in explain_page.padding_leaks(m)


def test_conformer_large_is_the_recorded_architecture():
    import dataclasses

    from npw2v2.app.model import BUILT_IN
    from npw2v2.core.config import CONFORMER_LARGE

    recorded_cfg = npw2v2.Config.from_json(GOLDEN / "conformer_rel_pos_large" / "config.json")
    assert BUILT_IN["conformer-large"] is CONFORMER_LARGE
    assert dataclasses.replace(recorded_cfg, architectures=(), output_hidden_size=None) == CONFORMER_LARGE


def test_flops_count_conformer_blocks():
    """Per block: two feed-forwards, attention, linear_pos and the offset scores, the conv module; no positional conv."""
    from npw2v2.app import bench
    from npw2v2.core.config import CONFORMER_LARGE, LARGE

    frames, d, f, k = 499, 1024, 4096, 31
    block = (8.0 * frames * d * f + 8.0 * frames * d * d + 4.0 * frames * frames * d
             + 2.0 * (2 * frames - 1) * d * d + 2.0 * frames * (2 * frames - 1) * d
             + 4.0 * frames * d * d + 2.0 * frames * d * k + 2.0 * frames * d * d)
    large = bench.forward_flops(LARGE, [160000])  # the same feature encoder and projection, ...
    large_blocks = 24 * (4 * 2.0 * frames * d * d + 2 * 2.0 * frames * frames * d + 2 * 2.0 * frames * d * f)
    large_pos_conv = 2.0 * frames * 128 * d * d / 16
    assert bench.forward_flops(CONFORMER_LARGE, [160000]) == pytest.approx(
        large - large_blocks - large_pos_conv + 24 * block)  # ... but conformer blocks and no positional conv


# ---------------------------------------------------------------------------
# fairseq's own conformer checkpoints (golden/fairseq_conformer_fixtures.py)

FAIRSEQ_CONFORMER = GOLDEN / "fairseq_conformer"
FAIRSEQ_FIXTURES = ("conformer_rel_pos", "conformer_rope")


@pytest.fixture(scope="module")
def fairseq_models(tmp_path_factory):
    from golden import converted_fairseq_models

    return converted_fairseq_models(FAIRSEQ_CONFORMER, FAIRSEQ_FIXTURES + ("conformer_ctc",), tmp_path_factory)


@PATHS
@pytest.mark.parametrize("case", ["single", "alone.1", "alone.2"])
@pytest.mark.parametrize("name", FAIRSEQ_FIXTURES)
def test_a_fairseq_conformer_converts_to_what_fairseq_computes(fairseq_models, name, case, reference):
    """fairseq's Wav2Vec2Model with conformer layers (ESPnet attention, relative or rotary positions), through
    npw2v2-convert: every block's output and the last hidden state, as fairseq computed them."""
    from golden import fairseq_recorded

    ref = fairseq_recorded(FAIRSEQ_CONFORMER, name, case)
    out = fairseq_models[name](ref["input_values"], output_hidden_states=True, reference=reference)
    errors = {"last_hidden_state": golden_error(out.last_hidden_state, ref["last_hidden_state"])}
    errors.update({f"hidden_states.{i}": golden_error(out.hidden_states[i], ref[f"hidden_states.{i}"])
                   for i in range(1, len(out.hidden_states))})
    assert len(errors) == 3 and max(errors.values()) <= tolerance("tiny_conformer_rel"), errors


@PATHS
@pytest.mark.parametrize("case", ["single", "alone.1", "alone.2"])
def test_a_fine_tuned_fairseq_conformer_gives_fairseqs_ctc_logits(fairseq_models, case, reference):
    """fairseq's Wav2VecCtc over the rel_pos conformer, with its letter dictionary: Wav2Vec2ConformerForCTC."""
    from golden import fairseq_recorded

    m = fairseq_models["conformer_ctc"]
    assert m.kind == heads.CTC and m.config.model_type == "wav2vec2-conformer" and len(m.vocab) == 32
    ref = fairseq_recorded(FAIRSEQ_CONFORMER, "conformer_ctc", case)
    assert golden_error(m(ref["input_values"], reference=reference).logits, ref["logits"]) <= tolerance("tiny_conformer_rel")


def test_a_fairseq_conformer_is_its_encoder_with_fairseqs_settings(fairseq_models):
    """Pretraining heads and rotary buffers left out, the unrun positional conv too; swish, the kernel, the positions."""
    manifest = json.loads((FAIRSEQ_CONFORMER / "manifest.json").read_text())["fixtures"]
    for name, kind, kernel in (("conformer_rel_pos", "relative", 7), ("conformer_rope", "rotary", 5)):
        m, names = fairseq_models[name], manifest[name]["names"]
        assert {"quantizer.vars", "project_q.weight", "final_proj.weight", "encoder.pos_conv.0.weight_g"} <= set(names)
        assert m.kind == heads.BASE and "quantizer" not in m.params and "pos_conv_embed" not in m.params["encoder"]
        cfg = m.config
        assert (cfg.model_type, cfg.position_embeddings_type, cfg.conv_depthwise_kernel_size, cfg.hidden_act) == \
            ("wav2vec2-conformer", kind, kernel, "swish")
    assert "encoder.layers.0.self_attn.rotary_emb.inv_freq" in manifest["conformer_rope"]["names"]


@pytest.mark.parametrize("change,named", [
    ({"pos_enc_type": "abs"}, "pos_enc_type='abs': fairseq then runs its positional conv"),
    ({"attn_type": ""}, "attn_type='': fairseq's own attention in conformer layers"),
    ({"layer_norm_first": False}, "layer_norm_first=False: fairseq layer-norms before the first block"),
    ({"depthwise_conv_kernel_size": 6}, "conv_depthwise_kernel_size must be odd"),
])
def test_a_fairseq_conformer_transformers_cannot_hold_is_one_line(change, named, tmp_path, capsys, monkeypatch):
    from convert import fairseq
    from convert.cli import main as convert_main

    source = FAIRSEQ_CONFORMER / "conformer_rel_pos.pt"
    state = fairseq.load_torch_file(source)
    state["cfg"]["model"].update(change)
    monkeypatch.setattr(fairseq, "load_torch_file", lambda path: state)
    assert convert_main([str(source), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert named in err and str(source) in err and "Traceback" not in err, err
