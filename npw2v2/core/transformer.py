"""From conv features to the transformer's output: projection, positional conv, transformer layers.

Shared by the family: HuBERT, data2vec-audio and UniSpeech-SAT use these blocks as they
are; a member with its own attention or layer (WavLM's relative position bias, a
conformer's convolution module) writes that block in its own file and reuses the rest.
Each block takes ``ops`` (npw2v2.core.ops): the reference or the fast operations.
"""
from __future__ import annotations

from .adapters import attention_adapter
from . import data2vec_audio, wavlm
from .config import Config
from .hubert import positional_conv_input
from .layers import linear
from .ops import Ops
from .params import fold_weight_norm
from .trace import untraced


def feature_projection(features, p, cfg: Config, ops: Ops):
    """LayerNorm over the C channels, then a linear map C -> D, frame by frame.

    features: [B, T, C] -> (hidden [B, T, D], extract_features [B, T, C]: the projection's input).
    HuBERT's feat_proj_layer_norm false leaves the LayerNorm out (npw2v2.core.hubert).
    Mirrors Wav2Vec2FeatureProjection / HubertFeatureProjection.
    """
    if not cfg.feat_proj_layer_norm:
        return linear(features, **p["projection"]), features
    normed = ops.layer_norm(features, **p["layer_norm"], eps=cfg.layer_norm_eps)
    return linear(normed, **p["projection"]), normed


def positional_embedding(x, p, cfg: Config, ops: Ops):
    """Relative position information from a wide grouped convolution over time.

    x: [B, T, D] -> [B, T, D] (to be added to x). ``p`` is pos_conv_embed["conv"], with a
    plain ``weight`` or weight norm's ``weight_g``/``weight_v``. Zero padding of K // 2
    on both sides gives T + 1 frames for even K, so the last is dropped.
    Mirrors Wav2Vec2PositionalConvEmbedding with Wav2Vec2SamePadLayer.
    """
    k = cfg.num_conv_pos_embeddings
    weight = p["weight"] if "weight" in p else fold_weight_norm(p["weight_g"], p["weight_v"])
    y = ops.conv1d(x, weight, p["bias"], padding=k // 2, groups=cfg.num_conv_pos_embedding_groups)
    if k % 2 == 0:
        y = y[:, :-1]
    return ops.activation(cfg.feat_extract_activation)(y, out=y)


def feed_forward(x, p, cfg: Config, ops: Ops, act: str | None = None):
    """Two linear layers with the activation between. [B, T, D] -> [B, T, F] -> [B, T, D].

    ``act``: the activation's name, cfg.hidden_act unless given (w2v-BERT's adapter and
    intermediate feed-forwards take their own). Mirrors Wav2Vec2FeedForward.
    """
    h = linear(x, **p["intermediate_dense"])  # [B, T, F]
    h = ops.activation(act or cfg.hidden_act)(h, out=h)
    return linear(h, **p["output_dense"])


def encoder_layer(x, valid, p, cfg: Config, ops: Ops, table=None):
    """One transformer block; pre-LN when cfg.do_stable_layer_norm, else post-LN.

    x: [B, T, D], valid: [B, T] bool or None -> [B, T, D]. A pre-LN layer of an MMS
    model ends with its language's attention adapter. ``table``: WavLM's relative
    position table [H, 2T - 1], which this layer's gate weighs into the attention scores
    (npw2v2.core.wavlm). Mirrors Wav2Vec2EncoderLayer / Wav2Vec2EncoderLayerStableLayerNorm
    (and WavLM's).
    """
    def norm(h, name):
        return ops.layer_norm(h, **p[name], eps=cfg.layer_norm_eps)

    def attend(h):
        h = attention_input(h, p, cfg, ops)
        bias = None if table is None else wavlm.gated_bias(h, p["attention"], table, cfg.num_attention_heads)
        return ops.attention(h, valid, p["attention"], heads=cfg.num_attention_heads, bias=bias)

    if cfg.do_stable_layer_norm:
        x = x + attend(x)
        x = x + feed_forward(norm(x, "final_layer_norm"), p["feed_forward"], cfg, ops)
        return x + attention_adapter(x, p["adapter_layer"], ops) if "adapter_layer" in p else x
    x = norm(x + attend(x), "layer_norm")
    return norm(x + feed_forward(x, p["feed_forward"], cfg, ops), "final_layer_norm")


def attention_input(x, p, cfg: Config, ops: Ops):
    """What a layer's attention reads of the layer's input x [B, T, D]: x itself (post-LN), or
    x layer-normed (pre-LN)."""
    return ops.layer_norm(x, **p["layer_norm"], eps=cfg.layer_norm_eps) if cfg.do_stable_layer_norm else x


def encoder(x, valid, p, cfg: Config, ops: Ops, trace=untraced, keep_states=True, padding_leaks=False):
    """Positional conv, then the transformer layers.

    x: [B, T, D], valid: [B, T] bool or None -> (last_hidden_state [B, T, D], hidden_states).
    ``hidden_states`` is a list of L + 1 arrays [B, T, D]: the input of each layer, then
    the output of the last one, as transformers 5 returns them. Post-LN: LN(x + pos) feeds
    layer 1. Pre-LN: x + pos feeds layer 1 and a final LN follows the last layer;
    ``hidden_states[-1]`` is before that LN, ``last_hidden_state`` after (transformers 4
    repeated the latter as the last entry; see golden/README.md). With ``keep_states=False``
    the list is empty, and each layer's input is freed as soon as it has been used.
    HuBERT's conv_pos_batch_norm batch-norms the positional conv's input; ``padding_leaks``
    lets padded frames into it as transformers does (npw2v2.core.hubert.positional_conv_input), as
    into data2vec-audio's stack of positional convs (npw2v2.core.data2vec_audio). WavLM's layers
    share one relative position table, made here from layer 0's rel_attn_embed (npw2v2.core.wavlm).
    Mirrors Wav2Vec2Encoder / Wav2Vec2EncoderStableLayerNorm (and HuBERT's).
    """
    def norm(h):
        return ops.layer_norm(h, **p["layer_norm"], eps=cfg.layer_norm_eps)

    if valid is not None:
        # The positional conv must see zeros where there is no audio, as a lone input does.
        x = x * valid[:, :, None]
        trace("masked", x, axes="B T D", note="padded frames set to 0 before the positional conv")
    if cfg.model_type == "data2vec-audio":
        position = data2vec_audio.positional_embedding(x, valid, p["pos_conv_embed"], cfg, ops, padding_leaks)
        trace("positional_embedding", position, axes="B T D", kernel=cfg.conv_pos_kernel_size,
              groups=cfg.num_conv_pos_embedding_groups, layers=cfg.num_conv_pos_embeddings)
    else:
        conv_input = positional_conv_input(x, valid, p["pos_conv_embed"], padding_leaks)
        if conv_input is not x:
            trace("positional_conv_input", conv_input, axes="B T D",
                  note="HuBERT conv_pos_batch_norm: batch norm with running statistics before the positional conv")
        position = positional_embedding(conv_input, p["pos_conv_embed"]["conv"], cfg, ops)
        trace("positional_embedding", position, axes="B T D", kernel=cfg.num_conv_pos_embeddings,
              groups=cfg.num_conv_pos_embedding_groups)
    x = x + position
    if not cfg.do_stable_layer_norm:
        x = norm(x)
    table = None
    if cfg.model_type == "wavlm" and p["layers"]:  # one table from layer 0's buckets, for every layer
        table = wavlm.relative_table(x.shape[1], p["layers"][0]["attention"]["rel_attn_embed"]["weight"], cfg)
        trace("position_bias_table", table, axes="H R", buckets=cfg.num_buckets,
              max_distance=cfg.max_bucket_distance)
    states = []
    for i, layer in enumerate(p["layers"]):
        trace(f"hidden_states.{i}", x, axes="B T D", keys_masked=valid is not None, heads=cfg.num_attention_heads)
        if keep_states:
            states.append(x)
        x = encoder_layer(x, valid, layer, cfg, ops, table)
    trace(f"hidden_states.{len(p['layers'])}", x, axes="B T D")
    if keep_states:
        states.append(x)
    last = norm(x) if cfg.do_stable_layer_norm else x
    return last, states
