"""Generic pure array operations, each mirroring one PyTorch op, in float32.

Time-series arrays are channels-last, ``[B, T, C]``: one row per frame, so that
a linear layer or a convolution is a plain matrix product with the weight.
Weights keep PyTorch's layout (``[out, in]`` for linear, ``[out, in, K]`` for conv).
"""
from __future__ import annotations

import math

from .backend import erf, get_xp, sliding_window_view


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
    """
    xp = get_xp(x)
    if padding:
        x = xp.pad(x, ((0, 0), (padding, padding), (0, 0)))
    c_in = x.shape[-1] // groups
    c_out = weight.shape[0] // groups
    outputs = [
        _conv1d_one_group(x[..., g * c_in:(g + 1) * c_in], weight[g * c_out:(g + 1) * c_out], stride)
        for g in range(groups)
    ]
    y = outputs[0] if groups == 1 else xp.concatenate(outputs, axis=-1)
    if bias is not None:
        y += bias
    return y


def _conv1d_one_group(x, weight, stride):
    """x: [B, L, C_in], weight: [C_out, C_in, K] -> [B, T, C_out], as one matrix product."""
    c_out, c_in, k = weight.shape
    windows = sliding_window_view(x, k, axis=1)[:, ::stride]  # [B, T, C_in, K], a view
    batch, frames = windows.shape[:2]
    return windows.reshape(batch, frames, c_in * k) @ weight.reshape(c_out, c_in * k).T


def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise each vector over its last axis. x: [..., D] -> [..., D]. Mirrors nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / get_xp(x).sqrt(var + eps) * weight + bias


def group_norm(x, weight, bias, valid=None, eps=1e-5):
    """GroupNorm with one group per channel: each channel normalised over time.

    x: [B, T, C], valid: [B, T] bool or None -> [B, T, C]. With ``valid``, the mean
    and (population) variance are taken over the valid frames only, so padding
    cannot change the result for real frames. Mirrors nn.GroupNorm(C, C) (which,
    given a padded batch, sees the padding: pass ``valid=None`` for that).
    """
    xp = get_xp(x)
    if valid is None:
        mean = x.mean(axis=1, keepdims=True)  # [B, 1, C]
        centred = x - mean
        var = (centred * centred).mean(axis=1, keepdims=True)
    else:
        w = valid[:, :, None].astype(x.dtype)  # [B, T, 1]
        count = w.sum(axis=1, keepdims=True)  # [B, 1, 1]
        mean = (x * w).sum(axis=1, keepdims=True) / count
        centred = x - mean
        var = (centred * centred * w).sum(axis=1, keepdims=True) / count
    return centred / xp.sqrt(var + eps) * weight + bias


def gelu(x):
    """Exact GELU, ``x * Phi(x)`` with the erf form (not the tanh approximation). Mirrors nn.GELU()."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def gelu_tanh(x):
    """The tanh approximation of GELU ("gelu_new" in Hugging Face configs)."""
    xp = get_xp(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def relu(x):
    return get_xp(x).maximum(x, 0)


def silu(x):
    return x / (1.0 + get_xp(x).exp(-x))


ACTIVATIONS = {
    "gelu": gelu, "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh,
    "relu": relu, "silu": silu, "swish": silu,
}


def activation(name):
    """The activation function for a Hugging Face ``hidden_act`` name."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def softmax(x, axis=-1):
    """Numerically stable softmax along ``axis``, computed in place on a fresh array."""
    xp = get_xp(x)
    e = x - x.max(axis=axis, keepdims=True)
    xp.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def attention(x, valid, p, heads):
    """Multi-head self-attention over a padded batch.

    x: [B, T, D], valid: [B, T] bool (True = real frame) or None -> [B, T, D].
    ``p`` holds q_proj, k_proj, v_proj and out_proj, each {"weight", "bias"}.
    Padded keys get the most negative float, as transformers adds to the scores,
    so a query never attends to padding; padded queries are computed but meaningless.
    Mirrors Wav2Vec2Attention (eager).
    """
    batch, frames, dim = x.shape
    head_dim = dim // heads

    def split_heads(h):  # [B, T, D] -> [B, H, T, D/H]
        return h.reshape(batch, frames, heads, head_dim).transpose(0, 2, 1, 3)

    q = split_heads(linear(x, **p["q_proj"]))
    k = split_heads(linear(x, **p["k_proj"]))
    v = split_heads(linear(x, **p["v_proj"]))
    scores = q @ k.transpose(0, 1, 3, 2)  # [B, H, T, T]
    scores *= head_dim**-0.5
    if valid is not None:
        scores += key_padding_bias(valid, scores.dtype)
    context = softmax(scores) @ v  # [B, H, T, D/H]
    context = context.transpose(0, 2, 1, 3).reshape(batch, frames, dim)  # [B, T, D]
    return linear(context, **p["out_proj"])


def key_padding_bias(valid, dtype):
    """0 for real keys, the most negative finite float for padded ones. [B, T] -> [B, 1, 1, T]."""
    xp = get_xp(valid)
    bias = xp.where(valid, 0.0, xp.finfo(dtype).min).astype(dtype)
    return bias[:, None, None, :]
