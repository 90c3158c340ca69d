"""WavLM: what its forward pass does that wav2vec 2.0's does not.

WavLM keeps wav2vec 2.0's feature encoder, feature projection, positional conv and layer
layout (post-LN for wavlm-base and base-plus, pre-LN ``do_stable_layer_norm`` for
wavlm-large): npw2v2.core.conv_encoder and transformer run them. Its attention scores get an
additive **gated relative position bias**:

    scores[b, h, i, j] = q_i . k_j / sqrt(D/H)  +  gate[b, h, i] * position[h, i, j]

- ``position[h, i, j]`` depends only on the offset j - i (key minus query). Offsets are put
  in ``num_buckets`` buckets (``relative_buckets``: half for keys before the query, half
  after; the nearest offsets one bucket each, farther ones on a log scale up to
  ``max_bucket_distance``), and each bucket has a learned score per head: layer 0's
  ``rel_attn_embed`` [num_buckets, H]. Only layer 0 has that table; every layer uses it.
- ``gate[b, h, i]`` is each layer's own, from what its attention reads (the layer input,
  layer-normed in a pre-LN layer): the frame's slice for head h goes through
  ``gru_rel_pos_linear`` (D/H -> 8), whose 8 outputs are summed in two groups of four and
  squashed, a = sigmoid(first), b = sigmoid(second); gate = a (b c_h - 1) + 2, with the per-head
  constant c_h = ``gru_rel_pos_const``. So a frame scales how much it cares about position.

Both factors are small: the table is [H, 2T - 1] (one score per head and offset), the gate
[B, H, T]; the [H, T, T] bias is a strided view of the table (``position_bias``), and the
attention adds gate times bias row by row (npw2v2.core.layers.attention, fast.attention), so
no [B, H, T, T] bias is ever built beside the scores. Relative offsets do not change when a
batch is padded, and padded keys get no weight, so each item of a padded batch gets its result
alone: no padding leaks here.

Mirrors transformers' WavLMAttention (compute_bias, _relative_positions_bucket, the gate in forward).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_xp, sliding_window_view
from .config import Config
from .layers import linear, split_heads

GATE_OUTPUTS = 8  # gru_rel_pos_linear's width: two groups of four, summed


def relative_buckets(offsets, cfg: Config):
    """The bucket of each relative position (key frame minus query frame). int array -> int array of the same shape.

    Half the buckets (n = num_buckets // 2) are for positive offsets (keys after the query),
    half for the others. Within a half, the e = n // 2 nearest distances get a bucket each;
    farther ones share the other n - e buckets on a log scale, bucket e + (n - e) *
    log(|offset| / e) / log(max_bucket_distance / e) rounded down, all from
    max_bucket_distance on in the last.
    The log runs in float32, as transformers computes it (the float64 value can round across a
    bucket edge).
    """
    xp = get_xp(offsets)
    half = cfg.num_buckets // 2
    exact = half // 2
    distance = xp.abs(offsets)
    # The log branch only matters from ``exact`` on; clipping keeps log(0) out of the cast.
    far = xp.log(xp.maximum(distance, exact).astype(np.float32) / np.float32(exact))
    far = far / np.float32(math.log(cfg.max_bucket_distance / exact)) * np.float32(half - exact)
    far = xp.minimum((exact + far).astype(offsets.dtype), half - 1)
    return (offsets > 0) * half + xp.where(distance < exact, distance, far)


def relative_table(frames: int, embed, cfg: Config):
    """Layer 0's rel_attn_embed [num_buckets, H] looked up for every offset -(T - 1) ... T - 1: [H, 2T - 1].

    Column T - 1 + r holds offset r's score for each head.
    """
    xp = get_xp(embed)
    offsets = xp.arange(1 - frames, frames)  # [2T - 1]
    return xp.ascontiguousarray(embed[relative_buckets(offsets, cfg)].T)  # [H, 2T - 1]


def position_bias(table):
    """The [H, T, T] position bias of a table [H, 2T - 1]: bias[h, i, j] = table[h, T - 1 + j - i], a view.

    Row i is the T table entries from column T - 1 - i on: the windows of the table read
    backwards. Nothing is copied, so even a long input's bias costs only its table.
    """
    frames = (table.shape[1] + 1) // 2
    windows = sliding_window_view(table, frames, axis=1)  # [H, T, T]: windows[h, s] = table[h, s:s + T]
    return windows[:, ::-1]


def gate(x, p, heads: int):
    """Each frame's weight on the position bias, per head. x: [B, T, D] (the attention's input) -> [B, H, T].

    ``p`` is a layer's attention parameters (gru_rel_pos_linear, gru_rel_pos_const [1, H, 1, 1]).
    """
    xp = get_xp(x)
    proj = linear(split_heads(x, heads), **p["gru_rel_pos_linear"])  # [B, H, T, 8]
    summed = proj.reshape(proj.shape[:-1] + (2, GATE_OUTPUTS // 2)).sum(axis=-1)  # [B, H, T, 2]
    squashed = 1.0 / (1.0 + xp.exp(-summed))  # sigmoid
    a, b = squashed[..., 0], squashed[..., 1]  # [B, H, T] each
    const = p["gru_rel_pos_const"].reshape(-1)[:, None]  # [H, 1]
    return a * (b * const - 1.0) + 2.0


def gated_bias(x, p, table, heads: int):
    """The attention bias of one layer: (gate [B, H, T], position [H, T, T] view), to be added as
    gate[b, h, i] * position[h, i, j] (npw2v2.core.layers.attention's ``bias``).

    x: [B, T, D], what the layer's attention reads; ``table`` from relative_table, shared by all layers.
    """
    return gate(x, p, heads), position_bias(table)


def parameter_shapes(cfg: Config, layer: int) -> dict[str, tuple[int, ...]]:
    """A layer's tensors beyond wav2vec 2.0's: the gate's, and layer 0's bucket table."""
    h, prefix = cfg.num_attention_heads, f"encoder.layers.{layer}.attention"
    shapes = {f"{prefix}.gru_rel_pos_const": (1, h, 1, 1),
              f"{prefix}.gru_rel_pos_linear.weight": (GATE_OUTPUTS, cfg.hidden_size // h),
              f"{prefix}.gru_rel_pos_linear.bias": (GATE_OUTPUTS,)}
    if layer == 0:
        shapes[f"{prefix}.rel_attn_embed.weight"] = (cfg.num_buckets, h)
    return shapes
