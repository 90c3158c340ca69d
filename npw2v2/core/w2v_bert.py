"""w2v-BERT 2.0: a conformer encoder over filter banks, written as its differences from Wav2Vec2-Conformer.

Its input is not a waveform but w2v-BERT's filter-bank features (npw2v2.core.fbank: 80 log-mel
bins every 10 ms, stacked in pairs, 160 features every 20 ms) with their frame mask. Then:

    feature projection: LayerNorm(160), Linear(160 -> D)     extract_features is the LayerNorm'd input
    zero the padded frames
    conformer layers (below), no final encoder LayerNorm
    intermediate_ffn (use_intermediate_ffn_before_adapter): x + FFN(x) / 2, ReLU, no LayerNorm
    adapter (add_adapter): strided conv + attention + feed-forward layers (``adapter``)
    the head (npw2v2.core.heads): CTC, classifiers, x-vector, as wav2vec 2.0's

Each layer is a conformer block as Wav2Vec2-Conformer's (npw2v2.core.conformer: half-step FFNs,
self-attention, conv module, final LayerNorm), with these differences:

- Its LayerNorms take ``layer_norm_eps`` (the conformer's are fixed at 1e-5).
- ``position_embeddings_type`` "relative_key" (w2v-bert-2.0's): Shaw et al.'s learned offsets. For
  query i and key j the offset j - i is clipped to [-left_max_position_embeddings,
  right_max_position_embeddings] (64 and 8) and picks a row E_r of ``distance_embedding`` ([L + R + 1, d],
  shared by the heads); score(i, j) = (q_i . k_j + q_i . E_{clip(j - i)}) / sqrt(d). "relative",
  "rotary" and null are the conformer's own (transformers shares their code).
- The conv module's depthwise conv is causal: K - 1 zeros on the left, none on the right, so
  frame t reads frames t - K + 1 ... t. After it a LayerNorm (``depthwise_layer_norm``), not batch norm.
  transformers zeroes the padded frames before the pointwise conv (npw2v2 too).

Padded batches: keys are masked, offsets do not depend on padding, and the causal depthwise conv
never reads a later frame, so every real frame of the encoder gets its result alone, in
transformers as here. The adapter's strided convs are centred: an item's last output frame may
read one frame past its end, which alone is zero padding. npw2v2 zeroes the padded frames of each
conv's (layer-normed) input; transformers reads the padded frames' values there.
``padding_leaks`` (``norm_over_padding``) reproduces that.

Mirrors transformers' modeling_wav2vec2_bert.py (Wav2Vec2BertModel, ...FeatureProjection,
...EncoderLayer, ...SelfAttention, ...ConvolutionModule, ...Adapter, ...AdapterLayer).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import conformer
from .backend import asnumpy, get_xp
from .config import Config
from .conformer import glu, half_step, projections
from .fast import LOG2_E, attend
from .heads import apply_head, mask_time
from .layers import linear, softmax
from .lengths import length_mask
from .ops import FAST, REFERENCE
from .trace import untraced


# ---------------------------------------------------------------------------
# Shaw's relative_key positions


def distance_index(queries: int, keys: int, cfg: Config, xp=np):
    """Which row of distance_embedding each (query i, key j) reads: clip(j - i, -L, R) + L. [T, T] ints."""
    left, right = cfg.left_max_position_embeddings, cfg.right_max_position_embeddings
    offsets = xp.arange(keys)[None, :] - xp.arange(queries)[:, None]
    return xp.clip(offsets, -left, right) + left


def relative_key_scores(q, p, cfg: Config):
    """The position term of the scores, q_i . E_{clip(j - i)}, unscaled: q [B, H, T, d] -> [B, H, T, T].

    Each query is scored against the L + R + 1 rows once ([B, H, T, L + R + 1]), then read off by
    offset: the same numbers as transformers' einsum over a [T, T, d] table of gathered rows.
    """
    xp = get_xp(q)
    frames = q.shape[2]
    by_row = q @ p["distance_embedding"]["weight"].T  # [B, H, T, L + R + 1]
    index = distance_index(frames, frames, cfg, xp)  # [T, T]
    return xp.take_along_axis(by_row, xp.broadcast_to(index, by_row.shape[:2] + index.shape), axis=-1)


def attention_weights(q, k, valid, p, cfg: Config):
    """relative_key attention weights, head by head: [B, H, T, T], queries by keys (padded keys get none)."""
    xp = get_xp(q)
    scale = q.shape[-1] ** -0.5
    scores = (q @ k.transpose(0, 1, 3, 2)) * scale + relative_key_scores(q, p, cfg) * scale
    if valid is not None:
        scores = xp.where(valid[:, None, None, :], scores, xp.finfo(scores.dtype).min)
    return softmax(scores)


def self_attention(x, valid, p, cfg: Config, position=None):
    """Multi-head self-attention with relative_key positions, reference version. [B, T, D] -> [B, T, D].

    Mirrors Wav2Vec2BertSelfAttention (position_embeddings_type "relative_key", eager attention).
    """
    batch, frames, dim = x.shape
    q, k, v = projections(x, p, cfg, position)  # [B, H, T, d] each
    context = attention_weights(q, k, valid, p, cfg) @ v  # [B, H, T, d]
    return linear(context.transpose(0, 2, 1, 3).reshape(batch, frames, dim), **p["linear_out"])


def self_attention_fast(x, valid, p, cfg: Config, position=None):
    """self_attention without [B, H, T, T] arrays: each item's queries over its valid keys in blocks
    (npw2v2.core.fast.attend); a block's position term is its rows against the L + R + 1 embeddings,
    read off by offset."""
    xp = get_xp(x)
    batch, frames, dim = x.shape
    q, k, v = projections(x, p, cfg, position)
    q = q * (q.shape[-1] ** -0.5 * LOG2_E)  # attend works in base 2
    table = p["distance_embedding"]["weight"].T  # [d, L + R + 1]
    context = xp.empty((batch, frames) + q.shape[1:2] + q.shape[3:], dtype=x.dtype)  # [B, T, H, d]
    lengths = [frames] * batch if valid is None else [int(n) for n in asnumpy(valid).sum(axis=1).tolist()]
    for b, n in enumerate(lengths):
        def bias(h, start, stop, b=b, n=n):
            index = distance_index(frames, n, cfg, xp)[start:stop]  # [rows, n]
            by_row = q[b, h, start:stop] @ table  # [rows, L + R + 1]
            return xp.take_along_axis(by_row, index, axis=1)
        context[b] = attend(q[b], k[b, :, :n], v[b, :, :n], bias)
    return linear(context.reshape(batch, frames, dim), **p["linear_out"])


ATTENTION = {"reference": self_attention, "fast": self_attention_fast}  # by npw2v2.core.ops.Ops.name


def attend_with_positions(x, valid, p, cfg: Config, ops, position):
    """A block's self-attention with the configured positions: relative_key here, the others the conformer's."""
    if cfg.position_embeddings_type == "relative_key":
        return ATTENTION[ops.name](x, valid, p, cfg, position)
    return conformer.ATTENTION[ops.name](x, valid, p, cfg, position)


# ---------------------------------------------------------------------------
# The convolution module and the block


def convolution_module(x, valid, p, cfg: Config, ops):
    """LayerNorm, padded frames zeroed, pointwise conv + GLU, causal depthwise conv, LayerNorm,
    activation, pointwise conv. [B, T, D] -> [B, T, D]. Mirrors Wav2Vec2BertConvolutionModule.

    Zeroing before the pointwise conv (which has no bias) zeroes the depthwise conv's input there.
    """
    xp = get_xp(x)
    k = cfg.conv_depthwise_kernel_size
    h = ops.layer_norm(x, **p["layer_norm"], eps=cfg.layer_norm_eps)
    if valid is not None:
        h = h * valid[:, :, None]
    h = glu(linear(h, p["pointwise_conv1"]["weight"][:, :, 0]))  # [B, T, 2D] -> [B, T, D]
    h = xp.pad(h, ((0, 0), (k - 1, 0), (0, 0)))  # causal: K - 1 zeros before the first frame, none after the last
    h = ops.conv1d(h, p["depthwise_conv"]["weight"], None, groups=h.shape[-1])  # [B, T, D]
    h = ops.layer_norm(h, **p["depthwise_layer_norm"], eps=cfg.layer_norm_eps)
    h = ops.activation(cfg.hidden_act)(h, out=h)
    return linear(h, p["pointwise_conv2"]["weight"][:, :, 0])


def conformer_layer(x, valid, p, cfg: Config, ops, position):
    """One w2v-BERT conformer block. x: [B, T, D] -> [B, T, D]. Mirrors Wav2Vec2BertEncoderLayer."""
    eps = cfg.layer_norm_eps
    x = half_step(x, p, "ffn1", cfg, ops, eps)
    x = x + attend_with_positions(ops.layer_norm(x, **p["self_attn_layer_norm"], eps=eps), valid, p["self_attn"],
                                  cfg, ops, position)
    x = x + convolution_module(x, valid, p["conv_module"], cfg, ops)
    x = half_step(x, p, "ffn2", cfg, ops, eps)
    return ops.layer_norm(x, **p["final_layer_norm"], eps=eps)


def encoder(x, valid, p, cfg: Config, ops, trace=untraced, keep_states=True):
    """The conformer layers; no positional conv and no final LayerNorm.

    x: [B, T, D], valid: [B, T] bool or None -> (last_hidden_state [B, T, D], hidden_states: the
    input of each layer, then the last layer's output). Mirrors Wav2Vec2BertEncoder.
    """
    xp = get_xp(x)
    if valid is not None:
        x = x * valid[:, :, None]
        trace("masked", x, axes="B T D", note="padded frames set to 0 before the conformer layers")
    position = conformer.positions(x.shape[1], cfg, xp)  # None for relative_key: its table is a parameter
    if cfg.position_embeddings_type == "relative_key":
        trace("relative_key", None, left=cfg.left_max_position_embeddings, right=cfg.right_max_position_embeddings,
              note="each layer's learned distance_embedding row of clip(j - i) scores query i against key j")
    states = []
    for i, layer in enumerate(p["layers"]):
        trace(f"hidden_states.{i}", x, axes="B T D", keys_masked=valid is not None, heads=cfg.num_attention_heads,
              depthwise_kernel=cfg.conv_depthwise_kernel_size, depthwise="causal")
        if keep_states:
            states.append(x)
        x = conformer_layer(x, valid, layer, cfg, ops, position)
    trace(f"hidden_states.{len(p['layers'])}", x, axes="B T D")
    if keep_states:
        states.append(x)
    return x, states


# ---------------------------------------------------------------------------
# The adapter


def adapter_lengths(lengths, cfg: Config):
    """Frames out of one adapter layer: floor((L + 2 (k // 2) - k) / s) + 1. [B] -> [B].
    Mirrors Wav2Vec2BertAdapter._compute_sub_sample_lengths_from_attention_mask."""
    k, s = cfg.adapter_kernel_size, cfg.adapter_stride
    return (np.asarray(lengths) + 2 * (k // 2) - k) // s + 1


def adapter_layer(x, lengths, p, cfg: Config, ops, masked: bool, leak: bool):
    """One adapter layer: [B, T, O] -> [B, T', O], T' = adapter_lengths(T).

    A strided conv + GLU of LN(x) is the residual, another of LN(x) goes through self-attention
    (no positions, padded keys masked), then x + FFN(LN(x)) with ``adapter_act``. With ``masked``
    padded frames of each conv's input are zeroed unless ``leak``. Mirrors Wav2Vec2BertAdapterLayer.
    """
    xp = get_xp(x)
    eps, s = cfg.layer_norm_eps, cfg.adapter_stride
    keep = length_mask(lengths, x.shape[1], xp)[:, :, None] if masked and not leak else None

    def strided(name, conv):
        h = ops.layer_norm(x, **p[name], eps=eps)
        if keep is not None:
            h = h * keep
        return glu(ops.conv1d(h, **p[conv], stride=s, padding=s // 2))  # [B, T', O]

    residual = strided("residual_layer_norm", "residual_conv")
    h = strided("self_attn_layer_norm", "self_attn_conv")
    out_lengths = adapter_lengths(lengths, cfg)
    valid = length_mask(out_lengths, h.shape[1], xp) if masked else None
    plain = dataclasses.replace(cfg, position_embeddings_type=None)  # the adapter's attention has no positions
    h = conformer.ATTENTION[ops.name](h, valid, p["self_attn"], plain, None) + residual
    return h + feed_forward(ops.layer_norm(h, **p["ffn_layer_norm"], eps=eps), p["ffn"], cfg, ops,
                            cfg.adapter_act), out_lengths


def adapter(x, lengths, p, cfg: Config, ops, masked: bool, leak: bool, trace=untraced):
    """Wav2Vec2BertAdapter: Linear + LayerNorm when output_hidden_size differs, then the adapter layers.

    x: [B, T, D], lengths: [B] -> ([B, T', O], [B] valid frames of the output).
    """
    if "proj" in p:
        x = ops.layer_norm(linear(x, **p["proj"]), **p["proj_layer_norm"], eps=cfg.layer_norm_eps)
        trace("adapter.proj", x, axes="B T D", note=f"Linear {cfg.hidden_size} -> {cfg.adapter_width}, LayerNorm")
    for i, layer in enumerate(p["layers"]):
        x, lengths = adapter_layer(x, lengths, layer, cfg, ops, masked, leak)
        trace(f"adapter.layers.{i}", x, axes="B T D", lengths=lengths, kernel=cfg.adapter_kernel_size,
              stride=cfg.adapter_stride, padding_zeroed=masked and not leak)
    return x, lengths


def feed_forward(x, p, cfg: Config, ops, act: str | None = None):
    """npw2v2.core.transformer.feed_forward (imported here: transformer imports params, which imports this file)."""
    from .transformer import feed_forward as shared

    return shared(x, p, cfg, ops, act)


# ---------------------------------------------------------------------------
# The forward pass


def forward(params, cfg: Config, input_features, attention_mask=None, *, output_hidden_states=False,
            norm_over_padding=False, mask_time_indices=None, reference=False, trace=untraced):
    """w2v-BERT's forward pass of a padded batch of filter-bank features. Mirrors Wav2Vec2BertModel and its head.

    input_features: [B, T, 160] float32 (npw2v2.core.fbank.fbank_batch), attention_mask: [B, T]
    bool or 0/1 (True for real frames), right-padded, or None. Returns npw2v2.core.wav2vec2.Output
    (extract_features: the LayerNorm'd features [B, T, 160]). ``norm_over_padding``: the adapter's
    convs read the padded frames, as transformers' do.
    """
    from .wav2vec2 import Output  # here: wav2vec2 imports this module

    ops = REFERENCE if reference else FAST
    xp = get_xp(input_features)
    x = xp.asarray(input_features, dtype=xp.float32)
    if x.ndim != 3 or x.shape[-1] != cfg.feature_projection_input_dim:
        raise ValueError(f"input_features must be [B, T, {cfg.feature_projection_input_dim}] (filter banks stacked in "
                         f"pairs, npw2v2.core.fbank), got shape {x.shape}")
    frames = x.shape[1]
    if attention_mask is None:
        lengths = np.full(x.shape[0], frames)
    else:
        mask = asnumpy(attention_mask).astype(bool)
        lengths = mask.sum(axis=1)
        if mask.shape != x.shape[:2] or (mask != (np.arange(frames)[None, :] < lengths[:, None])).any():
            raise ValueError(f"attention_mask must be [B, T] = {x.shape[:2]} and right-padded, got {mask.shape}")
    if (lengths < 1).any():
        raise ValueError(f"every item needs at least one feature vector, got lengths {lengths.tolist()}")
    trace("input_features", x, axes="B T F", lengths=lengths)
    p = params["feature_projection"]
    extract_features = ops.layer_norm(x, **p["layer_norm"], eps=cfg.layer_norm_eps)
    hidden = linear(extract_features, **p["projection"])  # [B, T, D]
    trace("extract_features", extract_features, axes="B T F")
    trace("projected", hidden, axes="B T D")
    if mask_time_indices is not None:
        hidden = mask_time(hidden, mask_time_indices, params.get("masked_spec_embed"))
    frame_mask = length_mask(lengths, frames, xp)  # [B, T]
    valid = None if attention_mask is None else frame_mask
    keep_states = output_hidden_states or cfg.use_weighted_layer_sum
    last, states = encoder(hidden, valid, params["encoder"], cfg, ops, trace, keep_states)
    if "intermediate_ffn" in params:
        last = last + 0.5 * feed_forward(last, params["intermediate_ffn"], cfg, ops, "relu")
        trace("intermediate_ffn", last, axes="B T D", note="x + FFN(x) / 2, ReLU, before the adapter")
    out_lengths, out_mask = lengths, frame_mask
    if "adapter" in params:
        last, out_lengths = adapter(last, lengths, params["adapter"], cfg, ops, masked=valid is not None,
                                    leak=norm_over_padding, trace=trace)
        out_mask = length_mask(out_lengths, last.shape[1], xp)
    trace("last_hidden_state", last, axes="B T D")
    head = apply_head(params, cfg, last, states, extract_features, None if valid is None else out_mask, None,
                      tdnn=ops.tdnn, padding_leaks=norm_over_padding)
    for name, value in head.items():
        trace(name, value)
    return Output(extract_features=extract_features, last_hidden_state=last, frame_lengths=out_lengths,
                  frame_mask=out_mask, hidden_states=tuple(states) if output_hidden_states else None,
                  encoder_frame_lengths=lengths, encoder_frame_mask=frame_mask, **head)


# ---------------------------------------------------------------------------
# Parameters


def parameter_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of the bare encoder (projection, layers, intermediate_ffn, adapter), by transformers' names."""
    d, f, i = cfg.hidden_size, cfg.intermediate_size, cfg.feature_projection_input_dim
    shapes = {"feature_projection.layer_norm.weight": (i,), "feature_projection.layer_norm.bias": (i,),
              "feature_projection.projection.weight": (d, i), "feature_projection.projection.bias": (d,)}
    for layer in range(cfg.num_hidden_layers):
        prefix = f"encoder.layers.{layer}"
        for name, shape in conformer.parameter_shapes(cfg, layer).items():
            if ".batch_norm." not in name:  # w2v-BERT layer-norms the depthwise conv's output instead
                shapes[name] = shape
        shapes.update({f"{prefix}.conv_module.depthwise_layer_norm.weight": (d,),
                       f"{prefix}.conv_module.depthwise_layer_norm.bias": (d,)})
        if cfg.position_embeddings_type == "relative_key":
            rows = cfg.left_max_position_embeddings + cfg.right_max_position_embeddings + 1
            shapes[f"{prefix}.self_attn.distance_embedding.weight"] = (rows, d // cfg.num_attention_heads)
    if cfg.use_intermediate_ffn_before_adapter:
        shapes.update(_ffn_shapes("intermediate_ffn", d, f))
    if cfg.add_adapter:
        o = cfg.adapter_width
        if o != d:
            shapes.update({"adapter.proj.weight": (o, d), "adapter.proj.bias": (o,),
                           "adapter.proj_layer_norm.weight": (o,), "adapter.proj_layer_norm.bias": (o,)})
        for layer in range(cfg.num_adapter_layers):
            prefix = f"adapter.layers.{layer}"
            for norm in ("residual_layer_norm", "self_attn_layer_norm", "ffn_layer_norm"):
                shapes.update({f"{prefix}.{norm}.weight": (o,), f"{prefix}.{norm}.bias": (o,)})
            for conv in ("residual_conv", "self_attn_conv"):
                shapes.update({f"{prefix}.{conv}.weight": (2 * o, o, cfg.adapter_kernel_size),
                               f"{prefix}.{conv}.bias": (2 * o,)})
            for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
                shapes.update({f"{prefix}.self_attn.{proj}.weight": (o, o), f"{prefix}.self_attn.{proj}.bias": (o,)})
            shapes.update(_ffn_shapes(f"{prefix}.ffn", o, f))
    return shapes


def _ffn_shapes(prefix: str, d: int, f: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.intermediate_dense.weight": (f, d), f"{prefix}.intermediate_dense.bias": (f,),
            f"{prefix}.output_dense.weight": (d, f), f"{prefix}.output_dense.bias": (d,)}
