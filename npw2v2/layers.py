"""Generic pure array operations, each mirroring one PyTorch op, in float32.

Time-series arrays are channels-last, ``[B, T, C]``: one row per frame, so that
a linear layer or a convolution is a plain matrix product with the weight.
Weights keep PyTorch's layout (``[out, in]`` for linear, ``[out, in, K]`` for conv).

Element-wise work goes through ``backend.rowwise``: blocks of rows small enough to stay in cache.
"""
from __future__ import annotations

import math

from .backend import asnumpy, get_xp, rowwise, sliding_window_view

# Elements per im2col block in conv1d (16 MiB of float32): bounds its memory on long inputs.
CONV_BLOCK_ELEMENTS = 1 << 22
# Attention scores per query block of one head, [rows, T] (4 MiB of float32): memory grows linearly
# with T. Measured at T = 2999: blocks of 1M scores took 0.21 s a layer, of 4M 0.25 s (out of cache).
ATTENTION_BLOCK_ELEMENTS = 1 << 20


def as_rows(x):
    """[..., M] -> [N, M], a view when x is contiguous."""
    return x.reshape(-1, x.shape[-1])


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``. x: [..., in], weight: [out, in] -> [..., out]. Mirrors nn.Linear."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def conv1d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """Channels-last 1-d convolution (cross-correlation, as PyTorch computes it).

    x: [B, L, C_in], weight: [C_out, C_in / groups, K] -> [B, T, C_out] with
    T = floor((L + 2 * padding - K) / stride) + 1. Mirrors nn.Conv1d.
    Each group is computed as matrix products (see _conv_products).
    """
    xp = get_xp(x)
    if padding:
        x = xp.pad(x, ((0, 0), (padding, padding), (0, 0)))
    batch, length, _ = x.shape
    c_out, c_in, k = weight.shape  # c_in per group
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
    windows = sliding_window_view(x, width, axis=1)[:, ::stride][:, :frames]  # [B, T, C, width]
    batch, _, channels, _ = windows.shape
    return windows.swapaxes(2, 3).reshape(batch, frames, width * channels)


def conv_windows(x, k, stride):
    """[B, L, C] -> [B, T, K * C]: the K frames under the kernel at each stride, taps outer, channels inner."""
    frames = (x.shape[1] - k) // stride + 1
    # A view of x with overlapping rows when K > stride, which BLAS cannot take: copy it.
    return get_xp(x).ascontiguousarray(tap_rows(x, k, stride, frames))


def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise each vector over its last axis. x: [..., D] -> [..., D]. Mirrors nn.LayerNorm."""
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
    gauss *= -0.5 * _LOG2_E
    xp.exp2(gauss, out=gauss)  # exp(-z^2) = 2^(-z^2 log2 e): NumPy's exp2 takes 0.36 ns a value here, exp 0.57
    half_erfc *= gauss  # ... times exp(-z^2)
    xp.subtract(0.5, half_erfc, out=half_erfc)
    half_erfc *= a  # 0.5 |x| erf(z)
    xp.multiply(x, 0.5, out=out)
    out += half_erfc


def gelu(x, out=None):
    """Exact GELU, ``x * Phi(x)`` in the erf form (not the tanh approximation). Mirrors nn.GELU().

    erf is evaluated as PyTorch does on a CPU (Abramowitz & Stegun 7.1.26, error < 1.5e-7).
    ``out=x`` works in place.
    """
    rows = as_rows(x)
    return rowwise(_gelu_kernel, rows, None if out is None else as_rows(out)).reshape(x.shape)


def gelu_tanh(x, out=None):
    """The tanh approximation of GELU ("gelu_new" in Hugging Face configs)."""
    xp = get_xp(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def relu(x, out=None):
    return get_xp(x).maximum(x, 0)


def silu(x, out=None):
    return x / (1.0 + get_xp(x).exp(-x))


ACTIVATIONS = {
    "gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu, "silu": silu, "swish": silu,
}


def activation(name):
    """The activation function for a Hugging Face ``hidden_act`` name: ``f(x, out=None)``.

    ``out=x`` lets an activation work in place where it can (GELU does); the others ignore it.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def softmax(x, axis=-1):
    """Numerically stable softmax along ``axis``: exp(x - max) / sum. (Attention has its own, in attend.)"""
    e = get_xp(x).exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _exp2_kernel(subtract_max: bool):
    """2^s for each row, in place; less the row's maximum first when the scores could overflow."""
    def kernel(rows, out, xp):
        if subtract_max:
            xp.subtract(rows, rows.max(axis=-1, keepdims=True), out=out)
            rows = out
        xp.exp2(rows, out=out)

    return kernel


# 2^s is safe without subtracting the row maximum while |s| <= 60: no overflow even summed
# over millions of keys (2^60 ~ 1e18), and no row of zeros (2^-60 ~ 1e-18 is a normal float).
_EXP_SAFE = 60.0
_LOG2_E = 1.0 / math.log(2.0)


def attention(x, valid, p, heads):
    """Multi-head self-attention over a padded batch.

    x: [B, T, D], valid: [B, T] bool (True = real frame, right padding) or None -> [B, T, D].
    ``p`` holds q_proj, k_proj, v_proj and out_proj, each {"weight", "bias"}.
    Each item's queries attend over its own valid frames only: exactly what transformers
    computes by giving padded keys the most negative float, without computing those keys.
    Padded query rows are computed as in transformers (meaningless, but transformers lets
    them leak into its down-sampling adapter, and norm_over_padding reproduces that).
    Mirrors Wav2Vec2Attention (eager).
    """
    xp = get_xp(x)
    batch, frames, dim = x.shape
    head_dim = dim // heads

    def split_heads(h):  # [B, T, D] -> [B, H, T, D/H]
        return h.reshape(batch, frames, heads, head_dim).transpose(0, 2, 1, 3)

    q = linear(x, **p["q_proj"])
    # Scaling q rather than the [T, T] scores: fewer multiplications. The extra log2(e) lets
    # attend take base-2 exponentials, 2^(s log2 e) = e^s: NumPy's exp2 is faster than its exp.
    q *= head_dim**-0.5 * _LOG2_E
    q, k, v = split_heads(q), split_heads(linear(x, **p["k_proj"])), split_heads(linear(x, **p["v_proj"]))
    context = xp.empty((batch, frames, heads, head_dim), dtype=x.dtype)
    lengths = [frames] * batch if valid is None else [int(n) for n in valid.sum(axis=1).tolist()]
    for b, n in enumerate(lengths):
        context[b] = attend(q[b], k[b, :, :n], v[b, :, :n])
    return linear(context.reshape(batch, frames, dim), **p["out_proj"])


def attend(q, k, v):
    """Softmax attention of one item's heads in base 2: 2^(q k^T), normalised by rows, times v.

    q: [H, m, D/H], scaled by log2(e) / sqrt(D/H); k, v: [H, n, D/H] -> [m, H, D/H].
    With that scaling 2^(q k^T) = e^(q' k^T) for the usual q' = q_proj / sqrt(D/H): the
    weights are the usual softmax.

    One head at a time, queries in blocks, so that the [rows, n] scores stay in cache (and
    small on long inputs); one buffer serves every block. The softmax is left unnormalised,
    2^(s - c): the weighted values and the weights' row sums (a product with a vector of
    ones) come from the same scores, and one division per output value normalises. c is
    each row's maximum, or 0 when |s| <= |q| |k| cannot reach _EXP_SAFE, which saves a pass
    over the scores (any c gives the same softmax; the maximum only guards the range).
    """
    xp = get_xp(q)
    heads, m, head_dim = q.shape
    n = k.shape[1]
    keys_t = xp.ascontiguousarray(k.transpose(0, 2, 1))  # [H, D/H, n]
    bound = float(asnumpy(_norms(q).max() * _norms(k).max()))
    exp_rows = _exp2_kernel(subtract_max=not bound <= _EXP_SAFE)  # a NaN bound takes the careful path
    context = xp.empty((m, heads, head_dim), dtype=q.dtype)
    rows = max(1, min(m, ATTENTION_BLOCK_ELEMENTS // n))
    scores = xp.empty((rows, n), dtype=q.dtype)
    weighted = xp.empty((rows, head_dim), dtype=q.dtype)
    sums = xp.empty((rows, 1), dtype=q.dtype)
    ones = xp.ones((n, 1), dtype=q.dtype)
    for h in range(heads):
        for start in range(0, m, rows):
            stop = min(m, start + rows)
            block, block_weighted, block_sums = scores[:stop - start], weighted[:stop - start], sums[:stop - start]
            xp.matmul(q[h, start:stop], keys_t[h], out=block)
            rowwise(exp_rows, block, block, threaded=False)  # between products: BLAS's threads still spin
            xp.matmul(block, v[h], out=block_weighted)
            xp.matmul(block, ones, out=block_sums)
            xp.divide(block_weighted, block_sums, out=context[start:stop, h])
    return context


def _norms(a):
    """Euclidean norm of each vector along the last axis. [..., D] -> [...]."""
    return get_xp(a).sqrt((a * a).sum(axis=-1))
