"""The generic operations in their reference form: what each PyTorch op computes, plainly.

Time-series arrays are channels-last, ``[B, T, C]``: one row per frame, so that a linear
layer or a convolution is a plain matrix product with the weight. Weights keep PyTorch's
layout (``[out, in]`` for linear, ``[out, in, K]`` for conv).

These functions are the reference path. npw2v2.core.fast has faster versions of the
expensive ones (conv1d, layer_norm, gelu, attention) with the same signatures, each tested
against its reference here; a forward pass takes one set or the other (npw2v2.core.ops).
"""
from __future__ import annotations

import math

from .backend import erf, get_xp, sliding_window_view
from .lengths import length_mask


def linear(x, weight, bias=None):
    """``x @ weight.T + bias``. x: [..., in], weight: [out, in] -> [..., out]. Mirrors nn.Linear."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def conv1d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """Channels-last 1-d convolution (cross-correlation, as PyTorch computes it).

    x: [B, L, C_in], weight: [C_out, C_in / groups, K] -> [B, T, C_out] with
    T = floor((L + 2 * padding - K) / stride) + 1. Each output frame of a group is the sum,
    over that group's input channels and the K taps, of window times weight.
    Mirrors nn.Conv1d.
    """
    xp = get_xp(x)
    if padding:
        x = xp.pad(x, ((0, 0), (padding, padding), (0, 0)))
    c_out, c_in, k = weight.shape  # c_in per group
    per_group = c_out // groups
    windows = sliding_window_view(x, k, axis=1)[:, ::stride]  # [B, T, C_in * groups, K]
    y = xp.concatenate([
        xp.tensordot(windows[:, :, g * c_in:(g + 1) * c_in], weight[g * per_group:(g + 1) * per_group],
                     axes=([2, 3], [1, 2]))  # [B, T, C_out / groups]
        for g in range(groups)
    ], axis=-1)
    return y if bias is None else y + bias


def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise each vector over its last axis. x: [..., D] -> [..., D]. Mirrors nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / get_xp(x).sqrt(var + eps) * weight + bias


def group_norm(x, weight, bias, lengths=None, eps=1e-5):
    """Group norm with one group per channel: each channel of each item normalised over time.

    x: [B, T, C], lengths: [B] valid frames, or None to count every frame -> [B, T, C].
    transformers counts every frame, padding included; with ``lengths`` the statistics are
    those the item has alone. Mirrors nn.GroupNorm(num_groups=C, num_channels=C).
    """
    xp = get_xp(x)
    batch, frames, _ = x.shape
    valid = xp.ones((batch, frames), dtype=bool) if lengths is None else length_mask(lengths, frames, xp)
    # Each channel's frames as one contiguous row: NumPy sums a row pairwise, rounding error
    # growing with log T, but a strided axis one value after another, growing with T.
    rows = xp.ascontiguousarray(x.transpose(0, 2, 1))  # [B, C, T]
    weight_of_frame = valid[:, None, :].astype(x.dtype)  # [B, 1, T]
    count = weight_of_frame.sum(axis=-1, keepdims=True)  # [B, 1, 1]
    mean = (rows * weight_of_frame).sum(axis=-1, keepdims=True) / count  # [B, C, 1]
    var = (((rows - mean) * weight_of_frame) ** 2).sum(axis=-1, keepdims=True) / count
    return ((rows - mean) / xp.sqrt(var + eps)).transpose(0, 2, 1) * weight + bias


def gelu(x, out=None):
    """Exact GELU, ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``, not the tanh approximation.

    Mirrors nn.GELU(). ``out`` is accepted for the activations' common signature and ignored.
    """
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


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


def activation(name, table=ACTIVATIONS):
    """The activation function for a Hugging Face ``hidden_act`` name: ``f(x, out=None)``.

    ``out=x`` lets an activation work in place where it can; callers use the returned array.
    """
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r}; known: {', '.join(table)}") from None


def softmax(x, axis=-1):
    """Numerically stable softmax along ``axis``: exp(x - max) / sum."""
    e = get_xp(x).exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def attention_weights(x, valid, p, heads, bias=None):
    """How much each frame attends to each other frame: softmax(q k^T / sqrt(D/H)), head by head.

    x: [B, T, D], valid: [B, T] bool (True = real frame, right padding) or None -> [B, H, T, T],
    queries by keys. Padded keys score the most negative float, so their weights are 0, yet a
    row is never all -inf. ``p`` holds q_proj and k_proj, each {"weight", "bias"}. ``bias``, when
    given, is added to the scores as a pair (rows [B, H, T], table [H, T, T]): score[b, h, i, j]
    gets rows[b, h, i] * table[h, i, j] (WavLM's gated relative position bias, npw2v2.core.wavlm).
    """
    xp = get_xp(x)
    q, k = (split_heads(linear(x, **p[name]), heads) for name in ("q_proj", "k_proj"))  # [B, H, T, D/H]
    scores = (q @ k.transpose(0, 1, 3, 2)) * q.shape[-1]**-0.5  # [B, H, T, T]
    if bias is not None:
        rows, table = bias
        scores = scores + rows[..., None] * table  # [B, H, T, 1] * [H, T, T] -> [B, H, T, T]
    if valid is not None:
        scores = xp.where(valid[:, None, None, :], scores, xp.finfo(scores.dtype).min)
    return softmax(scores)


def attention(x, valid, p, heads, bias=None):
    """Multi-head self-attention over a padded batch: the attention weights times v, head by head.

    x: [B, T, D], valid: [B, T] bool (True = real frame, right padding) or None -> [B, T, D].
    ``p`` holds q_proj, k_proj, v_proj and out_proj, each {"weight", "bias"}. No frame
    attends to padding (attention_weights). Padded query rows are computed like the others
    (meaningless, as in transformers). ``bias``: an additive score bias (attention_weights).
    Mirrors Wav2Vec2Attention with eager attention (and WavLMAttention with a bias).
    """
    batch, frames, dim = x.shape
    v = split_heads(linear(x, **p["v_proj"]), heads)  # [B, H, T, D/H]
    context = attention_weights(x, valid, p, heads, bias) @ v  # [B, H, T, D/H]
    return linear(context.transpose(0, 2, 1, 3).reshape(batch, frames, dim), **p["out_proj"])


def split_heads(h, heads: int):
    """[B, T, D] -> [B, H, T, D/H]: each head's slice of every frame, a view."""
    batch, frames, dim = h.shape
    return h.reshape(batch, frames, heads, dim // heads).transpose(0, 2, 1, 3)
