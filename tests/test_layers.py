"""Each operation, on both paths, against a naive version written out here: plain loops or a closed form.

The naive versions never call the function under test (nor a vectorised copy of it); they
accumulate in float64 Python floats, so a float32 result within ~1e-5 is a match. Every
test runs the reference operation (npw2v2.core.layers) and its fast version (npw2v2.core.fast).
"""
import math

import numpy as np
import pytest

import npw2v2
from npw2v2.core import conv_encoder, fast, layers, transformer
from npw2v2.core.lengths import conv_lengths, frame_lengths
from npw2v2.core.ops import FAST, REFERENCE
from npw2v2.core.params import fold_weight_norm, unflatten

RTOL = ATOL = 1e-5


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------
# Naive references


def naive_linear(x, weight, bias):
    """[N, in] -> [N, out], one dot product per row and output."""
    n, d_in = x.shape
    out = np.zeros((n, weight.shape[0]))
    for i in range(n):
        for o in range(weight.shape[0]):
            s = float(bias[o]) if bias is not None else 0.0
            for j in range(d_in):
                s += float(x[i, j]) * float(weight[o, j])
            out[i, o] = s
    return out


def naive_conv1d(x, weight, bias, stride, padding, groups):
    """Channels-last cross-correlation: [B, L, C_in] with [C_out, C_in/G, K] -> [B, T, C_out]."""
    batch, length, c_in = x.shape
    c_out, c_in_g, k = weight.shape
    c_out_g = c_out // groups
    padded = np.zeros((batch, length + 2 * padding, c_in))
    padded[:, padding:padding + length] = x
    frames = (length + 2 * padding - k) // stride + 1
    out = np.zeros((batch, frames, c_out))
    for b in range(batch):
        for t in range(frames):
            for o in range(c_out):
                g = o // c_out_g
                s = float(bias[o]) if bias is not None else 0.0
                for ci in range(c_in_g):
                    for j in range(k):
                        s += padded[b, t * stride + j, g * c_in_g + ci] * float(weight[o, ci, j])
                out[b, t, o] = s
    return out


def naive_normalise(values, eps):
    """(v - mean) / sqrt(population var + eps) for a 1-d sequence of numbers."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return [(v - mean) / math.sqrt(var + eps) for v in values]


def naive_gelu(x):
    """Exact GELU, elementwise, with math.erf."""
    flat = [0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in np.asarray(x, np.float64).ravel()]
    return np.array(flat).reshape(np.shape(x))


def naive_attention(x, valid, p, heads):
    """Per batch item, per head, per query: scaled dot products over the valid keys only."""
    batch, frames, dim = x.shape
    hd = dim // heads
    out = np.zeros((batch, frames, dim))
    for b in range(batch):
        q, k, v = (naive_linear(x[b], p[n]["weight"], p[n]["bias"]) for n in ("q_proj", "k_proj", "v_proj"))
        keys = [j for j in range(frames) if valid is None or valid[b, j]]
        context = np.zeros((frames, dim))
        for h in range(heads):
            cols = slice(h * hd, (h + 1) * hd)
            for i in range(frames):
                scores = [float(q[i, cols] @ k[j, cols]) * hd**-0.5 for j in keys]
                top = max(scores)
                e = [math.exp(s - top) for s in scores]
                weights = [w / sum(e) for w in e]
                context[i, cols] = sum(w * v[j, cols] for w, j in zip(weights, keys))
        out[b] = naive_linear(context, p["out_proj"]["weight"], p["out_proj"]["bias"])
    return out


def attention_params(rng, dim):
    return {n: {"weight": randn(rng, dim, dim) / np.float32(math.sqrt(dim)), "bias": 0.1 * randn(rng, dim)}
            for n in ("q_proj", "k_proj", "v_proj", "out_proj")}


def lengths_mask(lengths, frames):
    return np.array([[t < n for t in range(frames)] for n in lengths])


PATHS = pytest.mark.parametrize("ops", [REFERENCE, FAST], ids=lambda ops: ops.name)


# ---------------------------------------------------------------------------
# linear, conv1d


def test_linear_matches_loop():
    """linear(x, w, b) = x @ w.T + b for every leading index, float32 kept."""
    rng = np.random.RandomState(0)
    x, w, b = randn(rng, 2, 3, 5), randn(rng, 4, 5), randn(rng, 4)
    y = layers.linear(x, w, b)
    assert y.shape == (2, 3, 4) and y.dtype == np.float32
    close(y.reshape(6, 4), naive_linear(x.reshape(6, 5), w, b))
    close(layers.linear(x, w), naive_linear(x.reshape(6, 5), w, None).reshape(2, 3, 4))


CONV_CASES = [
    # (L, C_in, C_out, K, stride, padding, groups)
    pytest.param(57, 1, 4, 10, 5, 0, 1, id="wav2vec2-layer0-s5-k10"),
    pytest.param(23, 3, 5, 3, 2, 0, 1, id="s2-k3"),
    pytest.param(20, 4, 4, 2, 2, 0, 1, id="s2-k2-even"),
    pytest.param(13, 8, 8, 4, 1, 2, 4, id="groups4-k4-even-pad2"),
    pytest.param(13, 8, 8, 5, 1, 2, 4, id="groups4-k5-odd-pad2"),
    pytest.param(16, 6, 4, 3, 3, 1, 2, id="groups2-s3-pad1"),
    pytest.param(9, 2, 3, 1, 1, 0, 1, id="k1"),
    # stride * C_in >= 256: the fast path's products over strided views of the input, a run of `stride` taps each
    pytest.param(23, 128, 5, 3, 2, 0, 1, id="wide-s2-k3"),
    pytest.param(20, 128, 5, 2, 2, 0, 1, id="wide-s2-k2"),
    pytest.param(30, 64, 5, 7, 4, 0, 1, id="wide-s4-k7"),
    pytest.param(24, 256, 6, 3, 2, 1, 2, id="wide-groups2-s2-pad1"),
]


@PATHS
@pytest.mark.parametrize("length, c_in, c_out, k, stride, padding, groups", CONV_CASES)
def test_conv1d_matches_loop(ops, length, c_in, c_out, k, stride, padding, groups):
    """conv1d equals a naive quadruple loop; T = floor((L + 2p - K) / s) + 1."""
    rng = np.random.RandomState(1)
    x = randn(rng, 2, length, c_in)
    w, b = randn(rng, c_out, c_in // groups, k), randn(rng, c_out)
    y = ops.conv1d(x, w, b, stride=stride, padding=padding, groups=groups)
    frames = (length + 2 * padding - k) // stride + 1
    assert y.shape == (2, frames, c_out) and y.dtype == np.float32
    close(y, naive_conv1d(x, w, b, stride, padding, groups))
    close(ops.conv1d(x, w, None, stride=stride, padding=padding, groups=groups),
          naive_conv1d(x, w, None, stride, padding, groups))


# ---------------------------------------------------------------------------
# Normalisation


@PATHS
def test_layer_norm_matches_closed_form(ops):
    """Each last-axis vector is (v - mean) / sqrt(var + eps) * weight + bias."""
    rng = np.random.RandomState(2)
    x = 3.0 * randn(rng, 2, 3, 6) + 1.5
    w, b = randn(rng, 6), randn(rng, 6)
    for eps in (1e-5, 0.5):
        y = ops.layer_norm(x, w, b, eps=eps)
        assert y.dtype == np.float32
        for i in np.ndindex(2, 3):
            ref = [n * float(w[c]) + float(b[c]) for c, n in enumerate(naive_normalise(x[i], eps))]
            close(y[i], ref)


def naive_group_norm(x, w, b, lengths, eps):
    """Per item, per channel, normalise over the first lengths[b] frames; NaN elsewhere."""
    batch, frames, channels = x.shape
    out = np.full(x.shape, np.nan)
    for bi in range(batch):
        n = lengths[bi]
        for c in range(channels):
            normed = naive_normalise(x[bi, :n, c], eps)
            out[bi, :n, c] = [v * float(w[c]) + float(b[c]) for v in normed]
    return out


def first_layer(ops, x, w, g, b, stride, lengths):
    """Layer 0 of a "group" model before its activation: conv, then group norm over each item's
    first ``lengths`` frames (None: every frame). The fast path folds the norm into the conv."""
    if ops is REFERENCE:
        return layers.group_norm(layers.conv1d(x[:, :, None], w, stride=stride), g, b, lengths=lengths)
    cfg = npw2v2.Config(conv_dim=(w.shape[0],), conv_kernel=(w.shape[-1],), conv_stride=(stride,))
    p = {"conv": {"weight": w}, "layer_norm": {"weight": g, "bias": b}}
    if lengths is None:
        lengths = [(x.shape[1] - w.shape[-1]) // stride + 1] * x.shape[0]
    return fast.fold_group_norm(x, p, cfg, lengths)(x[:, :, None])


@PATHS
def test_group_norm_without_mask_uses_all_frames(ops):
    """No lengths: each channel of each item is normalised over the whole time axis."""
    rng = np.random.RandomState(3)
    x = 2.0 * randn(rng, 2, 17) - 1.0
    w, g, b = randn(rng, 3, 1, 4), randn(rng, 3), randn(rng, 3)
    y = first_layer(ops, x, w, g, b, 2, None)
    assert y.dtype == np.float32
    close(y, naive_group_norm(naive_conv1d(x[:, :, None], w, None, 2, 0, 1), g, b, [7, 7], 1e-5))


@PATHS
def test_group_norm_with_lengths_uses_valid_frames_only(ops):
    """With lengths, the statistics come from the valid frames; padding never matters."""
    rng = np.random.RandomState(4)
    lengths = [9, 4]  # frames; 9 frames of kernel 4, stride 2 need 20 samples, 4 need 10
    x = 2.0 * randn(rng, 2, 20) + 0.5
    w, g, b = randn(rng, 3, 1, 4), randn(rng, 3), randn(rng, 3)
    valid = lengths_mask(lengths, 9)
    y = first_layer(ops, x, w, g, b, 2, lengths)
    assert y.dtype == np.float32
    ref = naive_group_norm(naive_conv1d(x[:, :, None], w, None, 2, 0, 1), g, b, lengths, 1e-5)
    close(y[valid], ref[valid])

    changed = x.copy()
    changed[1, 10:] = 100.0 * randn(rng, 10)
    close(first_layer(ops, changed, w, g, b, 2, lengths)[valid], y[valid], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# Activations, softmax


@PATHS
def test_gelu_is_exact_erf_form(ops):
    """gelu = 0.5 x (1 + erf(x / sqrt 2)) elementwise, float32, and not the tanh approximation."""
    x = np.linspace(-6, 6, 241, dtype=np.float32).reshape(1, 241)
    y = ops.activation("gelu")(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    close(y, naive_gelu(x))
    assert np.abs(y - layers.gelu_tanh(x)).max() > 1e-4


def test_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="unsupported activation 'mish'"):
        layers.activation("mish")


def test_softmax_matches_exp_over_sum():
    """softmax = exp(x) / sum exp(x) along the axis; rows sum to 1; float32 kept."""
    rng = np.random.RandomState(5)
    x = randn(rng, 3, 4, 6)
    for axis in (-1, 1):
        y = layers.softmax(x, axis=axis)
        assert y.dtype == np.float32
        e = np.exp(x.astype(np.float64))
        close(y, e / e.sum(axis=axis, keepdims=True))
        close(y.sum(axis=axis), np.ones(y.sum(axis=axis).shape))


def test_softmax_is_stable_for_large_inputs():
    """Inputs near 1000 (exp overflows) give finite values: the softmax of x - max."""
    x = np.array([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1000.0]], dtype=np.float32)
    y = layers.softmax(x)
    assert np.isfinite(y).all()
    for row, ref_row in zip(y, ([0.0, -1.0, -2.0], [0.0, -1.0, 0.0])):
        e = [math.exp(v) for v in ref_row]
        close(row, [v / sum(e) for v in e])


# ---------------------------------------------------------------------------
# Attention


@PATHS
def test_attention_matches_loop_without_mask(ops):
    """valid=None: every key counts; equals the per-batch per-head loop."""
    rng = np.random.RandomState(6)
    x, p = randn(rng, 2, 5, 8), attention_params(rng, 8)
    y = ops.attention(x, None, p, heads=2)
    assert y.dtype == np.float32 and y.shape == x.shape
    close(y, naive_attention(x, None, p, heads=2))


@PATHS
def test_attention_with_padding_mask(ops):
    """Valid query rows equal the loop over valid keys, and attention on the truncated item alone."""
    rng = np.random.RandomState(7)
    lengths = [6, 3]
    x, p = randn(rng, 2, 6, 8), attention_params(rng, 8)
    valid = lengths_mask(lengths, 6)
    y = ops.attention(x, valid, p, heads=2)
    close(y[valid], naive_attention(x, valid, p, heads=2)[valid])
    for b, n in enumerate(lengths):
        alone = ops.attention(x[b:b + 1, :n], None, p, heads=2)[0]
        close(y[b, :n], alone)


@PATHS
@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")  # padded rows
def test_attention_gives_padded_keys_no_weight(ops):
    """Padded keys get exactly no weight: padded frames of 1e30 change no valid output at all."""
    rng = np.random.RandomState(8)
    x, p = randn(rng, 2, 5, 4), attention_params(rng, 4)
    valid = lengths_mask([5, 2], 5)
    y = ops.attention(x, valid, p, heads=2)
    changed = x.copy()
    changed[1, 2:] = 1e30  # any weight above 0 on these keys would swamp the output
    y_changed = ops.attention(changed, valid, p, heads=2)
    assert np.isfinite(y_changed[valid]).all()
    close(y_changed[valid], y[valid], rtol=0, atol=1e-6)


@PATHS
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_attention_survives_scores_that_overflow_exp(ops):
    """Scores in the thousands (exp overflows float32) still give finite, normalised attention."""
    rng = np.random.RandomState(29)
    x, p = 300 * randn(rng, 1, 5, 8), attention_params(rng, 8)
    assert np.isfinite(ops.attention(x, None, p, heads=2)).all()


# ---------------------------------------------------------------------------
# Positional convolution


def test_fold_weight_norm_matches_loop():
    """W[:, :, k] = g[k] * v[:, :, k] / ||v[:, :, k]||_F, one norm per kernel tap."""
    rng = np.random.RandomState(9)
    g, v = randn(rng, 1, 1, 3), randn(rng, 6, 3, 3)
    w = fold_weight_norm(g, v)
    assert w.shape == v.shape and w.dtype == np.float32
    for k in range(3):
        norm = math.sqrt(sum(float(a) ** 2 for a in v[:, :, k].ravel()))
        close(w[:, :, k], float(g[0, 0, k]) * v[:, :, k].astype(np.float64) / norm)


@PATHS
@pytest.mark.parametrize("k", [4, 5])
def test_positional_embedding(ops, k):
    """Pad K//2 both sides, grouped conv, drop the last frame for even K, exact GELU; T kept."""
    rng = np.random.RandomState(10 + k)
    cfg = npw2v2.Config(hidden_size=8, num_attention_heads=2, num_conv_pos_embeddings=k,
                        num_conv_pos_embedding_groups=2)
    x = randn(rng, 2, 7, 8)
    g, v, bias = randn(rng, 1, 1, k), randn(rng, 8, 4, k), 0.1 * randn(rng, 8)
    weight = fold_weight_norm(g, v)
    y = transformer.positional_embedding(x, {"weight": weight, "bias": bias}, cfg, ops)
    assert y.shape == x.shape and y.dtype == np.float32

    ref = naive_conv1d(x, weight, bias, stride=1, padding=k // 2, groups=2)
    assert ref.shape[1] == (8 if k % 2 == 0 else 7)
    if k % 2 == 0:
        ref = ref[:, :-1]
    close(y, naive_gelu(ref))

    split = transformer.positional_embedding(x, {"weight_g": g, "weight_v": v, "bias": bias}, cfg, ops)
    close(split, y, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------
# Lengths


def test_conv_lengths_of_one_second():
    """16000 samples -> 3199, 1599, 799, 399, 199, 99, 49 frames with the standard encoder."""
    cfg = npw2v2.Config()
    per_layer = conv_lengths([16000], cfg)
    assert [int(n[0]) for n in per_layer] == [3199, 1599, 799, 399, 199, 99, 49]
    assert frame_lengths([16000, 400, 399], cfg).tolist() == [49, 1, 0]
    assert cfg.receptive_field == 400


@PATHS
def test_frame_lengths_match_feature_encoder_output(ops):
    """For random lengths, frame_lengths equals the time length feature_encoder produces."""
    cfg = npw2v2.Config(conv_dim=(4,) * 7, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, num_hidden_layers=1)
    params = unflatten(npw2v2.random_weights(cfg))
    rng = np.random.RandomState(11)
    lengths = [400, 719, 720] + rng.randint(400, 4000, size=5).tolist()
    for n in lengths:
        features = ops.feature_encoder(randn(rng, 1, n), params["feature_extractor"], cfg)
        assert features.shape == (1, int(frame_lengths([n], cfg)[0]), 4), n
        # one frame every 320 samples after the first 400
        assert features.shape[1] == (n - 400) // 320 + 1


def test_reference_feature_encoder_is_the_plain_one():
    """REFERENCE takes conv_encoder's loop (conv, norm, activation per layer), FAST its own."""
    assert REFERENCE.feature_encoder is conv_encoder.feature_encoder
    assert FAST.feature_encoder is not conv_encoder.feature_encoder
