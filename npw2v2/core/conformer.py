"""Wav2Vec2-Conformer: what its forward pass does that wav2vec 2.0's does not.

The feature encoder and the feature projection are wav2vec 2.0's (npw2v2.core.conv_encoder,
transformer.feature_projection). The encoder is different: no positional convolution runs
(transformers builds ``pos_conv_embed`` and fairseq saves ``pos_conv``, but neither calls it: a
file's tensors for it are accepted and left out, ``UNUSED``), positions enter each layer's attention instead, and every
layer is a conformer block:

    x = x + 0.5 * FFN1(LN(x))                     half-step feed-forward
    x = x + SelfAttention(LN(x), positions)       relative or rotary positions, padded keys masked
    x = x + ConvModule(x)                         the only block that mixes neighbouring frames
    x = x + 0.5 * FFN2(LN(x))
    x = LN(x)                                     final_layer_norm

and the last layer's output goes through ``encoder.layer_norm`` (``layer_norm_eps``). The layer
norms inside a block are torch's default (eps 1e-5), as transformers builds them.

``position_embeddings_type`` says where positions enter:

- ``"relative"`` (Transformer-XL, wav2vec2-conformer-rel-pos-large): a table of sinusoids for
  every offset i - j from T - 1 down to -(T - 1) goes through ``linear_pos`` (per head, P_r);
  score(i, j) = ((q_i + u) . k_j + (q_i + v) . P_{i-j}) / sqrt(D/H), with the learned per-head
  biases u = ``pos_bias_u`` and v = ``pos_bias_v``. transformers reads the second term out of a
  [T, 2T - 1] product with the "rel-shift" (pad, reshape, drop a row: ``rel_shift``).
- ``"rotary"`` (...-rope-large): the attention's input (not its projections) is rotated frame by
  frame, pairs of channels (c, c + d/2) of each head by the angle t * base^(-2c/d); queries and
  keys are projected from the rotated input, values from the unrotated one.
- null: no positions at all.

The conv module: LayerNorm, pointwise conv D -> 2D, GLU, depthwise conv (kernel
``conv_depthwise_kernel_size``, zero padding (K - 1) / 2), batch norm with its running statistics,
``hidden_act``, pointwise conv D -> D (no biases in the convs).

Padded batches: offsets do not change with padding and padded keys get no weight, so attention
keeps each item to itself; everything else is frame by frame but the depthwise conv. transformers
zeroes the padded frames only at the encoder's input, so in every layer the depthwise conv reads
the padded frames' (nonzero) values past an item's end, where the item alone reads zero padding.
npw2v2 zeroes the conv's input on padded frames, so each item gets its result alone;
``padding_leaks`` (norm_over_padding) keeps transformers' padded-batch numbers.

Mirrors transformers' modeling_wav2vec2_conformer.py (Wav2Vec2ConformerEncoder, ...EncoderLayer,
...SelfAttention, ...ConvolutionModule, ...RelPositionalEmbedding, ...RotaryPositionalEmbedding).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_xp, sliding_window_view
from .config import Config
from .fast import LOG2_E, attend
from .hubert import batch_norm
from .layers import linear, softmax, split_heads
from .trace import untraced

BLOCK_NORM_EPS = 1e-5  # nn.LayerNorm's default: the norms inside a conformer block do not take layer_norm_eps
RELATIVE_BASE = 10000.0  # the sinusoids' base, fixed in Wav2Vec2ConformerRelPositionalEmbedding


# ---------------------------------------------------------------------------
# Positions


def relative_sinusoids(frames: int, dim: int, xp=np):
    """The sinusoid of every offset r = i - j from T - 1 down to -(T - 1): [2T - 1, D], row T - 1 - r.

    Channel 2c is sin(r w_c), 2c + 1 is cos(r w_c), w_c = 10000^(-2c/D). Computed in float32 as
    transformers does: w_c = exp(2c * float32(-ln(10000) / D)), the product in float32, the exp
    rounded from float64; r * w_c rounded to float32, then sin/cos. torch's float32 exp rounds a
    few w_c (7 of 512 for D = 1024) one unit differently, which moves r * w_c by up to r units of
    6e-8: under 1e-5 for the first hundred offsets, up to float32's spacing at 5000 frames (5e-4),
    where neither is nearer the exact sinusoid than the other.
    Mirrors Wav2Vec2ConformerRelPositionalEmbedding.extend_pe and forward.
    """
    exponents = np.arange(0, dim, 2, dtype=np.float32) * np.float32(-(math.log(RELATIVE_BASE) / dim))
    rate = np.exp(exponents.astype(np.float64)).astype(np.float32)  # [D/2]
    angles = np.arange(frames, dtype=np.float32)[:, None] * rate  # [T, D/2], offsets 0 ... T-1
    table = np.empty((2 * frames - 1, dim), dtype=np.float32)
    # offsets T-1 ... 0 (the positive half, reversed), then -1 ... -(T-1): sin(-a) = -sin(a), cos(-a) = cos(a)
    table[:frames, 0::2], table[:frames, 1::2] = np.sin(angles[::-1]), np.cos(angles[::-1])
    table[frames:, 0::2], table[frames:, 1::2] = -np.sin(angles[1:]), np.cos(angles[1:])
    return xp.asarray(table)


def rotary_angles(frames: int, head_dim: int, base: float, xp=np):
    """cos and sin of frame t's rotation angles, each [T, d] (d = D/H): t * f_c for c < d/2, repeated.

    f_c = 1 / base^(2c/d) as transformers computes it in float32: the exponent 2c/d in float32, the
    power rounded from float64 (torch's float32 pow differs in the last bit for a few c, 1 of 48 for
    d = 96; see relative_sinusoids), its reciprocal and the products in float32.
    Mirrors Wav2Vec2ConformerRotaryPositionalEmbedding.
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    rate = np.float32(1.0) / (np.float64(base) ** exponents.astype(np.float64)).astype(np.float32)  # [d/2]
    angles = np.arange(frames, dtype=np.float32)[:, None] * rate  # [T, d/2]
    angles = np.concatenate([angles, angles], axis=1)  # [T, d]
    return xp.asarray(np.cos(angles)), xp.asarray(np.sin(angles))


def rotate(x, cos, sin, heads: int):
    """Each head's slice of each frame rotated by that frame's angles. x: [B, T, D] -> [B, T, D].

    Within a head, channel c < d/2 pairs with c + d/2: (a, b) -> (a cos - b sin, b cos + a sin).
    Mirrors Wav2Vec2ConformerSelfAttention._apply_rotary_embedding.
    """
    xp = get_xp(x)
    batch, frames, dim = x.shape
    h = x.reshape(batch, frames, heads, dim // heads)  # [B, T, H, d]
    half = h.shape[-1] // 2
    turned = xp.concatenate([-h[..., half:], h[..., :half]], axis=-1)
    return (h * cos[:frames, None, :] + turned * sin[:frames, None, :]).reshape(batch, frames, dim)


def positions(frames: int, cfg: Config, xp=np):
    """What a layer's attention needs to place frames, for T frames: the relative sinusoids
    [2T - 1, D], the rotary (cos, sin), or None (position_embeddings_type null)."""
    if cfg.position_embeddings_type == "relative":
        return relative_sinusoids(frames, cfg.hidden_size, xp)
    if cfg.position_embeddings_type == "rotary":
        return rotary_angles(frames, cfg.hidden_size // cfg.num_attention_heads, cfg.rotary_embedding_base, xp)
    return None


# ---------------------------------------------------------------------------
# Self-attention


def rel_shift(scores):
    """[B, H, T, 2T - 1] scores against offsets T - 1 ... -(T - 1) -> [B, H, T, T]: out[i, j] = scores[i, T - 1 - i + j].

    transformers' (Transformer-XL's) skew: pad one zero column on the left, read the [T, 2T]
    block as [2T, T], drop the first row, read back as [T, 2T - 1], keep the first T columns.
    """
    xp = get_xp(scores)
    batch, heads, frames, width = scores.shape
    padded = xp.pad(scores, ((0, 0), (0, 0), (0, 0), (1, 0)))  # [B, H, T, 2T]
    skewed = padded.reshape(batch, heads, width + 1, frames)[:, :, 1:]  # [B, H, 2T - 1, T]
    return skewed.reshape(batch, heads, frames, width)[..., :frames]


def projections(x, p, cfg: Config, position):
    """q, k, v of the attention input x [B, T, D], each [B, H, T, d]; with rotary positions q and k
    are projected from the rotated input."""
    heads = cfg.num_attention_heads
    rotated = rotate(x, *position, heads) if cfg.position_embeddings_type == "rotary" else x
    return (split_heads(linear(rotated, **p["linear_q"]), heads), split_heads(linear(rotated, **p["linear_k"]), heads),
            split_heads(linear(x, **p["linear_v"]), heads))


def positional_keys(sinusoids, p, heads: int):
    """linear_pos of the relative sinusoids [2T - 1, D], per head: [H, 2T - 1, d]."""
    return split_heads(linear(sinusoids[None], p["linear_pos"]["weight"]), heads)[0]


def attention_weights(q, k, valid, p, cfg: Config, position):
    """How much each frame attends to each other frame, head by head: [B, H, T, T], queries by keys.

    q, k: [B, H, T, d] (``projections``), valid: [B, T] bool or None. Relative positions add the
    offset term to the content term, each scaled by 1 / sqrt(d); padded keys get the most negative float.
    """
    xp = get_xp(q)
    scale = q.shape[-1] ** -0.5
    if cfg.position_embeddings_type == "relative":
        keys = positional_keys(position, p, cfg.num_attention_heads)  # [H, 2T - 1, d]
        content = (q + p["pos_bias_u"][:, None]) @ k.transpose(0, 1, 3, 2)  # [B, H, T, T]
        placed = rel_shift((q + p["pos_bias_v"][:, None]) @ keys.transpose(0, 2, 1))  # [B, H, T, 2T-1] -> [B, H, T, T]
        scores = content * scale + placed * scale
    else:
        scores = (q @ k.transpose(0, 1, 3, 2)) * scale
    if valid is not None:
        scores = xp.where(valid[:, None, None, :], scores, xp.finfo(scores.dtype).min)
    return softmax(scores)


def self_attention(x, valid, p, cfg: Config, position):
    """Multi-head self-attention with the configured positions, reference version.

    x: [B, T, D] (layer-normed), valid: [B, T] bool or None, ``position`` from ``positions`` ->
    [B, T, D]. The weights are built whole, [B, H, T, T] (attention_weights).
    Mirrors Wav2Vec2ConformerSelfAttention with eager attention.
    """
    batch, frames, dim = x.shape
    q, k, v = projections(x, p, cfg, position)  # [B, H, T, d] each
    context = attention_weights(q, k, valid, p, cfg, position) @ v  # [B, H, T, d]
    return linear(context.transpose(0, 2, 1, 3).reshape(batch, frames, dim), **p["linear_out"])


def self_attention_fast(x, valid, p, cfg: Config, position):
    """self_attention without [B, H, T, T] arrays: each item's queries over its valid keys, in
    query blocks (npw2v2.core.fast.attend), the relative term computed block by block.

    For query rows [s, e) and the item's n keys, the offsets run from s - (n - 1) to e - 1: a
    block of (e - s) + n - 1 positional keys, whose product with the rows is read diagonally
    (row i's n scores start at column e - s - 1 - i): no rel-shift copy of the whole.
    """
    xp = get_xp(x)
    batch, frames, dim = x.shape
    q, k, v = projections(x, p, cfg, position)
    scale = q.shape[-1] ** -0.5 * LOG2_E  # attend works in base 2
    relative = cfg.position_embeddings_type == "relative"
    if relative:
        keys = positional_keys(position, p, cfg.num_attention_heads)  # [H, 2T - 1, d]
        q_pos = (q + p["pos_bias_v"][:, None]) * scale
        q = (q + p["pos_bias_u"][:, None]) * scale
    else:
        q = q * scale
    context = xp.empty((batch, frames) + q.shape[1:2] + q.shape[3:], dtype=x.dtype)  # [B, T, H, d]
    lengths = [frames] * batch if valid is None else [int(n) for n in valid.sum(axis=1).tolist()]
    for b, n in enumerate(lengths):
        bias = None
        if relative:
            def bias(h, start, stop, b=b, n=n):
                rows = stop - start
                block = q_pos[b, h, start:stop] @ keys[h, frames - stop:frames - start + n - 1].T  # [rows, rows + n - 1]
                diagonal = xp.arange(rows)
                return sliding_window_view(block, n, axis=1)[diagonal, rows - 1 - diagonal]  # [rows, n]
        context[b] = attend(q[b], k[b, :, :n], v[b, :, :n], bias)
    return linear(context.reshape(batch, frames, dim), **p["linear_out"])


ATTENTION = {"reference": self_attention, "fast": self_attention_fast}  # by npw2v2.core.ops.Ops.name


# ---------------------------------------------------------------------------
# The convolution module


def glu(x):
    """Gated linear unit over the last axis: first half times sigmoid(second half). [..., 2D] -> [..., D]."""
    a, b = x[..., :x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return a / (1.0 + get_xp(x).exp(-b))


def convolution_module(x, valid, p, cfg: Config, ops, padding_leaks: bool = False):
    """LayerNorm, pointwise conv + GLU, depthwise conv, batch norm, activation, pointwise conv. [B, T, D] -> [B, T, D].

    The depthwise conv's input is zeroed on padded frames (``valid`` False), as the item alone
    sees zero padding there; ``padding_leaks`` leaves the padded frames' values in, as transformers
    does. Mirrors Wav2Vec2ConformerConvolutionModule.
    """
    k = cfg.conv_depthwise_kernel_size
    h = ops.layer_norm(x, **p["layer_norm"], eps=BLOCK_NORM_EPS)
    h = glu(linear(h, p["pointwise_conv1"]["weight"][:, :, 0]))  # [B, T, 2D] -> [B, T, D]
    if valid is not None and not padding_leaks:
        h = h * valid[:, :, None]
    h = ops.conv1d(h, p["depthwise_conv"]["weight"], None, padding=(k - 1) // 2, groups=h.shape[-1])
    h = batch_norm(h, p["batch_norm"])
    h = ops.activation(cfg.hidden_act)(h, out=h)
    return linear(h, p["pointwise_conv2"]["weight"][:, :, 0])


# ---------------------------------------------------------------------------
# The block and the encoder


def conformer_layer(x, valid, p, cfg: Config, ops, position, padding_leaks: bool = False):
    """One conformer block. x: [B, T, D] -> [B, T, D]. Mirrors Wav2Vec2ConformerEncoderLayer."""
    x = half_step(x, p, "ffn1", cfg, ops)
    x = x + ATTENTION[ops.name](block_norm(x, p, "self_attn_layer_norm", ops), valid, p["self_attn"], cfg, position)
    x = x + convolution_module(x, valid, p["conv_module"], cfg, ops, padding_leaks)
    x = half_step(x, p, "ffn2", cfg, ops)
    return block_norm(x, p, "final_layer_norm", ops)


def block_norm(x, p, name: str, ops, eps: float = BLOCK_NORM_EPS):
    """One of a block's LayerNorms (eps 1e-5, whatever layer_norm_eps says; w2v-BERT's blocks pass
    layer_norm_eps). [B, T, D] -> [B, T, D]."""
    return ops.layer_norm(x, **p[name], eps=eps)


def half_step(x, p, name: str, cfg: Config, ops, eps: float = BLOCK_NORM_EPS):
    """x + FFN(LN(x)) / 2 for a block's ffn1 or ffn2. [B, T, D] -> [B, T, D]."""
    from .transformer import feed_forward  # here, not above: params imports this file, transformer imports params

    return x + 0.5 * feed_forward(block_norm(x, p, f"{name}_layer_norm", ops, eps), p[name], cfg, ops)


def attention_input(x, p, cfg: Config, ops):
    """What a block's attention reads of the block's input x [B, T, D]: LN(x + FFN1(LN(x)) / 2)."""
    return block_norm(half_step(x, p, "ffn1", cfg, ops), p, "self_attn_layer_norm", ops)


def encoder(x, valid, p, cfg: Config, ops, trace=untraced, keep_states=True, padding_leaks=False):
    """The conformer layers, then the encoder's LayerNorm. No positional conv.

    x: [B, T, D], valid: [B, T] bool or None -> (last_hidden_state [B, T, D], hidden_states): the
    input of each layer, then the last layer's output before the LayerNorm (as transformers 5
    returns them). ``padding_leaks``: the depthwise convs read the padding (convolution_module).
    Mirrors Wav2Vec2ConformerEncoder.
    """
    xp = get_xp(x)
    if valid is not None:
        x = x * valid[:, :, None]
        trace("masked", x, axes="B T D", note="padded frames set to 0 before the conformer layers")
    position = positions(x.shape[1], cfg, xp)
    if cfg.position_embeddings_type == "relative":
        trace("relative_positions", position, axes="R D", note="sinusoids of offsets T-1 ... -(T-1), "
              "through each layer's linear_pos into its attention scores")
    elif cfg.position_embeddings_type == "rotary":
        trace("rotary_cos", position[0], axes="T K", base=cfg.rotary_embedding_base,
              note="each layer's attention input rotated by these angles before q_proj and k_proj")
    states = []
    for i, layer in enumerate(p["layers"]):
        trace(f"hidden_states.{i}", x, axes="B T D", keys_masked=valid is not None, heads=cfg.num_attention_heads,
              depthwise_kernel=cfg.conv_depthwise_kernel_size, conv_sees_padding=valid is None or padding_leaks)
        if keep_states:
            states.append(x)
        x = conformer_layer(x, valid, layer, cfg, ops, position, padding_leaks)
    trace(f"hidden_states.{len(p['layers'])}", x, axes="B T D")
    if keep_states:
        states.append(x)
    return ops.layer_norm(x, **p["layer_norm"], eps=cfg.layer_norm_eps), states


# ---------------------------------------------------------------------------
# Parameters


def parameter_shapes(cfg: Config, layer: int) -> dict[str, tuple[int, ...]]:
    """A conformer layer's tensors, by transformers' names."""
    d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    prefix = f"encoder.layers.{layer}"
    shapes = {}
    for norm in ("ffn1_layer_norm", "self_attn_layer_norm", "conv_module.layer_norm", "ffn2_layer_norm",
                 "final_layer_norm"):
        shapes.update({f"{prefix}.{norm}.weight": (d,), f"{prefix}.{norm}.bias": (d,)})
    for ffn in ("ffn1", "ffn2"):
        shapes.update({f"{prefix}.{ffn}.intermediate_dense.weight": (f, d), f"{prefix}.{ffn}.intermediate_dense.bias": (f,),
                       f"{prefix}.{ffn}.output_dense.weight": (d, f), f"{prefix}.{ffn}.output_dense.bias": (d,)})
    for proj in ("linear_q", "linear_k", "linear_v", "linear_out"):
        shapes.update({f"{prefix}.self_attn.{proj}.weight": (d, d), f"{prefix}.self_attn.{proj}.bias": (d,)})
    if cfg.position_embeddings_type == "relative":
        shapes.update({f"{prefix}.self_attn.linear_pos.weight": (d, d), f"{prefix}.self_attn.pos_bias_u": (h, d // h),
                       f"{prefix}.self_attn.pos_bias_v": (h, d // h)})
    conv = f"{prefix}.conv_module"
    shapes.update({f"{conv}.pointwise_conv1.weight": (2 * d, d, 1),
                   f"{conv}.depthwise_conv.weight": (d, 1, cfg.conv_depthwise_kernel_size),
                   f"{conv}.pointwise_conv2.weight": (d, d, 1)})
    shapes.update({f"{conv}.batch_norm.{name}": (d,) for name in ("weight", "bias", "running_mean", "running_var")})
    return shapes


# What a conformer file holds that no forward pass reads: the positional conv transformers builds and never
# runs (fairseq's pos_conv too), and the rotary frequencies it saves as a buffer (computed here from
# rotary_embedding_base). The loader and the converter leave them out.
UNUSED = ("encoder.pos_conv_embed.", "encoder.embed_positions.")


def optional_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Tensors a conformer file may hold or not: batch norm's step counts, and the UNUSED ones."""
    d, k = cfg.hidden_size, cfg.num_conv_pos_embeddings
    conv = "encoder.pos_conv_embed.conv"
    shapes = {f"{conv}.weight": (d, d // cfg.num_conv_pos_embedding_groups, k), f"{conv}.weight_g": (1, 1, k),
              f"{conv}.weight_v": (d, d // cfg.num_conv_pos_embedding_groups, k), f"{conv}.bias": (d,)}
    shapes.update({f"encoder.layers.{i}.conv_module.batch_norm.num_batches_tracked": ()
                   for i in range(cfg.num_hidden_layers)})
    if cfg.position_embeddings_type == "rotary":
        shapes["encoder.embed_positions.inv_freq"] = (cfg.hidden_size // cfg.num_attention_heads // 2,)
    return shapes


def without_unused(tensors: dict, cfg: Config) -> dict:
    """A flat dict of tensors without those a conformer never reads (UNUSED); others' unchanged."""
    if cfg.model_type != "wav2vec2-conformer":
        return tensors
    return {name: value for name, value in tensors.items() if not name.startswith(UNUSED)}
