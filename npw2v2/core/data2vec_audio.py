"""data2vec-audio: what its forward pass does that wav2vec 2.0's does not.

The conv feature encoder layer-norms every conv layer (wav2vec 2.0's feat_extract_norm
"layer", which npw2v2.core.config sets for this model_type), the projection and the post-LN
transformer layers are wav2vec 2.0's. The positional embedding differs: instead of one wide
weight-normed conv, a stack of ``num_conv_pos_embeddings`` (5) convs of kernel
``conv_pos_kernel_size`` (19), each followed by a LayerNorm without parameters and GELU.

Mirrors transformers' Data2VecAudioPositionalConvEmbedding / Data2VecAudioPositionalConvLayer.
"""
from __future__ import annotations

from .config import Config
from .ops import Ops

POS_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which the positional conv layers keep (not layer_norm_eps)


def positional_embedding(x, valid, p, cfg: Config, ops: Ops, padding_leaks: bool = False):
    """The stack of positional convs. x: [B, T, D] (padded frames zero), valid: [B, T] bool or None -> [B, T, D].

    ``p`` is params["encoder"]["pos_conv_embed"] (``layers.N.conv``). Each layer's norm and GELU
    turn the padded frames' zeros into other values, which the next conv would read past an
    item's end where the item alone reads its zero padding; unless ``padding_leaks``
    (norm_over_padding: transformers' padded numbers), they are zeroed between layers.
    """
    k = cfg.conv_pos_kernel_size
    h = x
    for i, layer in enumerate(p["layers"]):
        if i > 0 and valid is not None and not padding_leaks:
            h = h * valid[:, :, None]
        h = ops.conv1d(h, layer["conv"]["weight"], layer["conv"]["bias"], padding=k // 2,
                       groups=cfg.num_conv_pos_embedding_groups)  # [B, T (+ 1 for even K), D]
        if k % 2 == 0:
            h = h[:, :-1]
        h = ops.layer_norm(h, 1.0, 0.0, eps=POS_LAYER_NORM_EPS)  # no learned scale or shift
        h = ops.activation(cfg.feat_extract_activation)(h, out=h)
    return h


def positional_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """The stack's tensors: a plain (not weight-normed) conv per layer."""
    d, k = cfg.hidden_size, cfg.conv_pos_kernel_size
    shapes = {}
    for i in range(cfg.num_conv_pos_embeddings):
        shapes[f"encoder.pos_conv_embed.layers.{i}.conv.weight"] = (d, d // cfg.num_conv_pos_embedding_groups, k)
        shapes[f"encoder.pos_conv_embed.layers.{i}.conv.bias"] = (d,)
    return shapes
