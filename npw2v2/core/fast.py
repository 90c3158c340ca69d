"""The fast path: the reference operations of npw2v2.core.layers, computed faster.

Each function here has the signature of its reference and gives the same numbers to
float32 rounding (tests/test_fast.py checks each against its reference on padded batches
and odd shapes). What each one does differently:

- ``conv1d``: strided convolutions as a few matrix products that read the input in place;
  others copy their windows out in blocks of bounded size.
- ``layer_norm`` and ``gelu``: element-wise chains over cache-sized blocks of rows, shared
  among threads (npw2v2.core.threads); GELU's erf evaluated as PyTorch's CPU kernels do
  (Abramowitz & Stegun 7.1.26, error < 1.5e-7), with base-2 exponentials.
- ``attention``: each item's queries over its valid keys only, one head at a time, in
  query blocks that keep the scores in cache; a base-2, unnormalised softmax; an additive
  bias (WavLM's) added block by block from a [B, H, T] gate and an [H, T, T] view, or a
  function's block of scores (the conformer's relative positions).
- ``conv1d`` of a depthwise convolution (one input channel per group, the conformer's): K
  shifted multiply-adds over the whole [B, T, C] array instead of C products of one channel.
- ``feature_encoder``: group norm folded into the first convolution; long inputs in
  segments, so the first layers' long outputs never exist whole.

docs/performance.md has the measurements behind each choice.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import asnumpy, get_xp, sliding_window_view
from .config import Config
from .conv_encoder import trace_conv_layer
from .layers import ACTIVATIONS, linear, split_heads
from .layers import activation as reference_activation
from .lengths import conv_lengths
from .threads import rowwise
from .trace import untraced

CONV_BLOCK_ELEMENTS = 1 << 22  # values per block of copied conv windows (16 MiB of float32)
ATTENTION_BLOCK_ELEMENTS = 1 << 20  # scores per query block of one head, [rows, T] (4 MiB): stays in cache
SEGMENT_ELEMENTS = 1 << 22  # values of the first conv layer's output per feature-encoder segment
LOG2_E = 1.0 / math.log(2.0)
# 2^s is safe without subtracting the row maximum while |s| <= 60: no overflow even summed
# over millions of keys (2^60 ~ 1e18), and no row of zeros (2^-60 ~ 1e-18 is a normal float).
EXP2_SAFE = 60.0


# ---------------------------------------------------------------------------
# Convolution


def conv1d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """layers.conv1d, as matrix products over channels-last memory. x: [B, L, C_in] -> [B, T, C_out]."""
    xp = get_xp(x)
    if padding:
        x = xp.pad(x, ((0, 0), (padding, padding), (0, 0)))
    batch, length, _ = x.shape
    c_out, c_in, k = weight.shape  # c_in per group
    if groups > 1 and c_in == 1 and groups == c_out == x.shape[-1]:
        return depthwise_conv1d(x, weight, bias, stride)
    c_out //= groups
    frames = (length - k) // stride + 1
    taps_last = weight.transpose(0, 2, 1)  # [C_out, K, C_in]: the order of a window's values
    y = xp.empty((batch, frames, c_out * groups), dtype=x.dtype)
    for g in range(groups):
        # The group's channels as an array of their own: its windows are then single runs of memory.
        x_group = xp.ascontiguousarray(x[..., g * c_in:(g + 1) * c_in]) if groups > 1 else x
        y[..., g * c_out:(g + 1) * c_out] = _conv_products(x_group, taps_last[g * c_out:(g + 1) * c_out], stride,
                                                           frames)
    if bias is not None:
        y += bias
    return y


def depthwise_conv1d(x, weight, bias=None, stride=1):
    """A convolution with one input channel per output channel (groups = C), x already padded.

    x: [B, L, C], weight: [C, 1, K] -> [B, T, C]: the sum over taps t of x[:, t + s * i] * weight[:, 0, t].
    """
    xp = get_xp(x)
    k = weight.shape[-1]
    frames = (x.shape[1] - k) // stride + 1
    taps = xp.ascontiguousarray(weight[:, 0, :].T)  # [K, C]
    reach = (frames - 1) * stride + 1
    y = x[:, 0:reach:stride] * taps[0]
    for t in range(1, k):
        y += x[:, t:t + reach:stride] * taps[t]
    return y if bias is None else y + bias


def _conv_products(x, w, stride, frames):
    """One group's convolution. x: [B, L, C_in], w: [C_out, K, C_in] -> [B, T, C_out].

    In channels-last memory the K frames under the kernel are one run of K * C_in values,
    starting every ``stride`` frames. With a stride of 2 or more and enough channels, a run
    of ``stride`` taps is a matrix row that BLAS reads in place (rows ``stride * C_in`` apart),
    so the output is a sum of ceil(K / stride) products and nothing is copied. Otherwise the
    windows are copied out ("im2col"), a block of output frames at a time to bound memory,
    for one product each.
    """
    c_out, k, c_in = w.shape
    if stride > 1 and stride * c_in >= 256:
        def product(first):  # taps first ... first + width - 1, for every output frame
            width = min(stride, k - first)
            taps = tap_rows(x[:, first:], width, stride, frames)  # [B, T, width * C_in], a view
            return taps @ w[:, first:first + width].reshape(c_out, width * c_in).T

        y = product(0)
        for first in range(stride, k, stride):
            y += product(first)
        return y
    y = get_xp(x).empty((x.shape[0], frames, c_out), dtype=x.dtype)
    step = max(1, CONV_BLOCK_ELEMENTS // (x.shape[0] * k * c_in))
    w = w.reshape(c_out, k * c_in)
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        windows = conv_windows(x[:, start * stride:(stop - 1) * stride + k], k, stride)
        y[:, start:stop] = windows @ w.T
    return y


def tap_rows(x, width, stride, frames):
    """[B, L, C] -> [B, T, width * C]: frames t * stride ... + width - 1 of x, a view when width <= stride."""
    taps = sliding_window_view(x, width, axis=1)[:, ::stride][:, :frames]  # [B, T, C, width]
    batch, _, channels, _ = taps.shape
    return taps.swapaxes(2, 3).reshape(batch, frames, width * channels)


def conv_windows(x, k, stride):
    """[B, L, C] -> [B, T, K * C]: the K frames under the kernel at each stride, taps outer, channels inner."""
    frames = (x.shape[1] - k) // stride + 1
    # A view of x with overlapping rows when K > stride, which BLAS cannot take: copy it.
    return get_xp(x).ascontiguousarray(tap_rows(x, k, stride, frames))


# ---------------------------------------------------------------------------
# Element-wise chains: layer norm and GELU


def as_rows(x):
    """[..., M] -> [N, M], a view when x is contiguous."""
    return x.reshape(-1, x.shape[-1])


def layer_norm(x, weight, bias, eps=1e-5):
    """layers.layer_norm over cache-sized blocks of rows, shared among threads. [..., D] -> [..., D]."""
    def kernel(rows, out, xp):
        mean = rows.mean(axis=-1, keepdims=True)
        xp.subtract(rows, mean, out=out)
        var = (out * out).mean(axis=-1, keepdims=True)
        out *= 1.0 / xp.sqrt(var + eps)
        out *= weight
        out += bias

    return rowwise(kernel, as_rows(x)).reshape(x.shape)


# Abramowitz & Stegun 7.1.26, for z >= 0: erfc(z) ~= t * A(t) * exp(-z^2), t = 1 / (1 + P z),
# A a quartic; |error| < 1.5e-7. PyTorch's vectorised CPU GELU evaluates the same formula.
_ERFC_P = 0.3275911
_ERFC_A = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)  # highest power first


def _gelu_kernel(x, out, xp):
    """out = x * Phi(x) = 0.5 x + 0.5 |x| erf(|x| / sqrt 2), with erf = 1 - erfc (A&S 7.1.26)."""
    a = xp.abs(x)
    t = a * (_ERFC_P / math.sqrt(2.0))
    t += 1.0
    xp.divide(1.0, t, out=t)
    half_erfc = t * (0.5 * _ERFC_A[0])  # 0.5 erfc(z), z = |x| / sqrt 2: the quartic by Horner ...
    for c in _ERFC_A[1:]:
        half_erfc += 0.5 * c
        half_erfc *= t
    gauss = a * a
    gauss *= -0.5 * LOG2_E
    xp.exp2(gauss, out=gauss)  # exp(-z^2) = 2^(-z^2 log2 e): NumPy's exp2 is faster than its exp
    half_erfc *= gauss  # ... times exp(-z^2)
    xp.subtract(0.5, half_erfc, out=half_erfc)
    half_erfc *= a  # 0.5 |x| erf(z)
    xp.multiply(x, 0.5, out=out)
    out += half_erfc


def gelu(x, out=None):
    """layers.gelu with erf as PyTorch's CPU kernels evaluate it, over blocks of rows. ``out=x`` works in place."""
    rows = as_rows(x)
    return rowwise(_gelu_kernel, rows, None if out is None else as_rows(out)).reshape(x.shape)


FAST_ACTIVATIONS = {**ACTIVATIONS, "gelu": gelu}


def activation(name):
    """layers.activation, with the fast GELU."""
    return reference_activation(name, FAST_ACTIVATIONS)


# ---------------------------------------------------------------------------
# Attention


def attention(x, valid, p, heads, bias=None):
    """layers.attention, each item's queries over its own valid keys, without computing padded ones.

    x: [B, T, D], valid: [B, T] bool or None -> [B, T, D]. The padded keys' weights are
    exactly 0 in the reference too (2^(most negative float) underflows), so leaving them
    out changes nothing. Padded query rows are computed like the others, as in the reference.
    ``bias`` (rows [B, H, T], table [H, T, T], as layers.attention_weights takes it) is added
    to each block of scores as it is computed; the table may be a strided view (WavLM's,
    npw2v2.core.wavlm.position_bias), read a block of rows at a time.
    """
    xp = get_xp(x)
    batch, frames, dim = x.shape
    head_dim = dim // heads
    q = linear(x, **p["q_proj"])
    # Scaling q rather than the [T, T] scores: fewer multiplications. The extra log2(e) lets
    # attend take base-2 exponentials, 2^(s log2 e) = e^s.
    q *= head_dim**-0.5 * LOG2_E
    q, k, v = (split_heads(h, heads) for h in (q, linear(x, **p["k_proj"]), linear(x, **p["v_proj"])))
    context = xp.empty((batch, frames, heads, head_dim), dtype=x.dtype)
    lengths = [frames] * batch if valid is None else [int(n) for n in valid.sum(axis=1).tolist()]
    for b, n in enumerate(lengths):
        # The bias in base 2 too: its rows scaled by log2(e), as q was.
        item_bias = None if bias is None else (bias[0][b] * LOG2_E, bias[1])
        context[b] = attend(q[b], k[b, :, :n], v[b, :, :n], item_bias)
    return linear(context.reshape(batch, frames, dim), **p["out_proj"])


def attend(q, k, v, bias=None):
    """Softmax attention of one item's heads in base 2: 2^(q k^T), normalised by rows, times v.

    q: [H, m, D/H], scaled by log2(e) / sqrt(D/H); k, v: [H, n, D/H] -> [m, H, D/H].
    With that scaling 2^(q k^T) = e^(q' k^T) for the usual q' = q_proj / sqrt(D/H): the
    weights are the usual softmax. ``bias`` (rows [H, m], table [H, >= m, >= n]), both in
    base 2, adds rows[h, i] * table[h, i, j] to the scores; or, a function bias(h, start, stop)
    -> [stop - start, n] in base 2, adds its block to query rows start ... stop - 1 of head h
    (the conformer's relative positions, npw2v2.core.conformer.self_attention_fast).

    One head at a time, queries in blocks, so that the [rows, n] scores stay in cache (and
    small on long inputs); one buffer serves every block. The softmax is left unnormalised,
    2^(s - c): the weighted values and the weights' row sums (a product with a vector of
    ones) come from the same scores, and one division per output value normalises. c is
    each row's maximum, or 0 when |s| <= |q| |k| cannot reach EXP2_SAFE, which saves a pass
    over the scores (any c gives the same softmax; the maximum only guards the range). With
    a bias the maximum is always taken: bounding the bias would cost a pass over it.
    """
    xp = get_xp(q)
    heads, m, head_dim = q.shape
    n = k.shape[1]
    keys_t = xp.ascontiguousarray(k.transpose(0, 2, 1))  # [H, D/H, n]
    bound = float(asnumpy(_norms(q).max() * _norms(k).max()))
    exp_rows = _exp2_kernel(subtract_max=bias is not None or not bound <= EXP2_SAFE)  # NaN: the careful path
    context = xp.empty((m, heads, head_dim), dtype=q.dtype)
    rows = max(1, min(m, ATTENTION_BLOCK_ELEMENTS // n))
    scores = xp.empty((rows, n), dtype=q.dtype)
    biased = None if bias is None or callable(bias) else xp.empty((rows, n), dtype=q.dtype)
    weighted = xp.empty((rows, head_dim), dtype=q.dtype)
    sums = xp.empty((rows, 1), dtype=q.dtype)
    ones = xp.ones((n, 1), dtype=q.dtype)
    for h in range(heads):
        for start in range(0, m, rows):
            stop = min(m, start + rows)
            block, block_weighted, block_sums = scores[:stop - start], weighted[:stop - start], sums[:stop - start]
            xp.matmul(q[h, start:stop], keys_t[h], out=block)
            if callable(bias):
                block += bias(h, start, stop)
            elif bias is not None:
                block_bias = biased[:stop - start]
                xp.multiply(bias[1][h, start:stop, :n], bias[0][h, start:stop, None], out=block_bias)
                block += block_bias
            rowwise(exp_rows, block, block, threaded=False)  # between products: BLAS's threads still spin
            xp.matmul(block, v[h], out=block_weighted)
            xp.matmul(block, ones, out=block_sums)
            xp.divide(block_weighted, block_sums, out=context[start:stop, h])
    return context


def _exp2_kernel(subtract_max: bool):
    """2^s for each row, in place; less the row's maximum first when the scores could overflow."""
    def kernel(rows, out, xp):
        if subtract_max:
            xp.subtract(rows, rows.max(axis=-1, keepdims=True), out=out)
            rows = out
        xp.exp2(rows, out=out)

    return kernel


def _norms(a):
    """Euclidean norm of each vector along the last axis. [..., D] -> [...]."""
    return get_xp(a).sqrt((a * a).sum(axis=-1))


# ---------------------------------------------------------------------------
# The feature encoder


def feature_encoder(input_values, p, cfg: Config, norm_lengths=None, trace=untraced):
    """conv_encoder.feature_encoder in less time and bounded memory. [B, S] -> [B, T, C].

    A group-norm model's first layer has its norm folded into the convolution
    (fold_group_norm), with statistics taken from the whole input up front. Then long
    inputs go through in segments of a few seconds: the convolutions have no padding, so a
    segment of (n - 1) * hop + receptive_field samples gives exactly n output frames, and
    the first layers' long outputs never exist whole. A trace sees one segment: the whole.
    """
    xp = get_xp(input_values)
    batch, samples = input_values.shape
    whole = conv_lengths([samples], cfg)  # each layer's length for the whole, padded input
    first = None
    if cfg.feat_extract_norm == "group":
        lengths = np.repeat(whole[0], batch) if norm_lengths is None else norm_lengths
        first = fold_group_norm(input_values, p["conv_layers"][0], cfg, lengths)
    frames, hop = int(whole[-1][0]), cfg.frame_stride
    step = frames if trace is not untraced else _segment_frames(cfg, batch)
    pieces = []
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        end = samples if stop == frames else (stop - 1) * hop + cfg.receptive_field
        pieces.append(_encode_segment(input_values[:, start * hop:end], p, cfg, first, norm_lengths, trace))
    return pieces[0] if len(pieces) == 1 else xp.concatenate(pieces, axis=1)


def _segment_frames(cfg: Config, batch: int) -> int:
    """Output frames per segment: the first layer's output for a segment stays near SEGMENT_ELEMENTS values."""
    first_layer_values = cfg.frame_stride // cfg.conv_stride[0] * cfg.conv_dim[0]  # per output frame
    return max(1, SEGMENT_ELEMENTS // (batch * first_layer_values))


def _encode_segment(x, p, cfg: Config, first, norm_lengths, trace):
    """[B, L] samples -> [B, T, C] through every conv layer; ``first`` replaces layer 0 when given."""
    act = activation(cfg.feat_extract_activation)
    h = x[:, :, None]  # [B, L, 1]
    for i, layer in enumerate(p["conv_layers"]):
        if i == 0 and first is not None:
            h = first(h)
        else:
            h = conv1d(h, **layer["conv"], stride=cfg.conv_stride[i])  # [B, T_i, C]
            if cfg.feat_extract_norm == "layer":
                h = layer_norm(h, **layer["layer_norm"], eps=1e-5)
        h = act(h, out=h)
        trace_conv_layer(trace, i, h, cfg, norm_lengths)
    return h


def fold_group_norm(input_values, p, cfg: Config, lengths):
    """Layer 0 of a "group" model, conv and group norm in one product. Returns [B, L, 1] -> [B, T, C].

    Group norm right after a linear conv needs no pass over the conv's output: for output
    channel c = w_c . window + b_c, the mean over frames is w_c . mu + b_c and the variance
    is w_c^T Sigma w_c, where mu and Sigma are the mean and covariance of the input windows
    (K values each), per item, over its ``lengths`` valid frames. So each item's normalised
    output is (window - mu) . (w_c g_c / sqrt(var_c + eps)) + beta_c: one product per frame.
    The statistics are taken in float64, over the whole input.
    """
    xp = get_xp(input_values)
    weight, k, stride = p["conv"]["weight"], cfg.conv_kernel[0], cfg.conv_stride[0]
    w = asnumpy(weight).reshape(weight.shape[0], -1).astype(np.float64)  # [C, K] (C_in = 1)
    windows = conv_windows(asnumpy(input_values)[:, :, None], k, stride)  # [B, T_0, K]
    mu = np.stack([windows[b, :n].mean(axis=0, dtype=np.float64) for b, n in enumerate(lengths)])  # [B, K]
    sigma = np.stack([np.cov(windows[b, :n], rowvar=False, bias=True, dtype=np.float64)
                      for b, n in enumerate(lengths)]).reshape(len(lengths), k, k)  # [B, K, K]
    var = np.einsum("ck,bkj,cj->bc", w, sigma, w)  # [B, C]
    gain = asnumpy(p["layer_norm"]["weight"]).astype(np.float64)
    folded = w[None] * (gain / np.sqrt(var + 1e-5))[:, :, None]  # [B, C, K]
    folded_t = xp.asarray(folded.transpose(0, 2, 1).astype(np.float32))  # [B, K, C]
    mu = xp.asarray(mu.astype(np.float32))[:, None, :]  # [B, 1, K]
    shift = p["layer_norm"]["bias"]

    def conv_and_norm(x):
        centred = conv_windows(x, k, stride) - mu  # [B, T, K]
        h = centred @ folded_t  # [B, T, C]
        h += shift
        return h

    return conv_and_norm
