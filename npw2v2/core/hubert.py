"""HuBERT (and ContentVec): what its forward pass does that wav2vec 2.0's does not.

HuBERT is wav2vec 2.0's encoder without the quantizer; transformers' HubertModel runs the
same feature encoder, projection and transformer layers (npw2v2.core.conv_encoder,
transformer). Three things differ, each switched by its config or its tensors:

- ``feat_proj_layer_norm`` false: the projection reads the conv features without a LayerNorm
  (npw2v2.core.transformer.feature_projection leaves it out);
- ``conv_pos_batch_norm`` true: the positional conv's input goes through a BatchNorm1d (its
  running statistics at inference), and the conv kernel is plain, not weight-normed
  (``positional_conv_input``, called by npw2v2.core.transformer.encoder);
- ``final_proj``: the pretraining projection D -> P that HuBERT's targets were scored in. RVC v1
  reads ContentVec's layer 9 through it; transformers has no class for it, so npw2v2 names it
  as the converted ContentVec checkpoints do (``HubertModelWithFinalProj``, P =
  classifier_proj_size). fairseq's ``untie_final_proj`` makes it one D -> P * n map for n
  label sets: the same tensor, wider, whose output splits into n chunks of P.

Mirrors transformers' modeling_hubert.py (HubertPositionalConvEmbedding, HubertFeatureProjection).
"""
from __future__ import annotations

from .backend import get_xp
from .layers import linear

BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default, which HubertPositionalConvEmbedding keeps


def batch_norm(x, p, eps: float = BATCH_NORM_EPS):
    """Inference batch norm over the last axis: (x - running_mean) / sqrt(running_var + eps) * weight + bias.

    x: [B, T, D] -> [B, T, D]. The statistics are the stored running ones, so each frame is
    normalised on its own: no frame, padded or not, changes another's result.
    """
    xp = get_xp(x)
    scale = p["weight"] / xp.sqrt(p["running_var"] + eps)  # [D]: folded, one multiply per element
    return (x - p["running_mean"]) * scale + p["bias"]


def positional_conv_input(x, valid, p, padding_leaks: bool = False):
    """What the positional conv reads of x [B, T, D]: x itself, or batch-normed (conv_pos_batch_norm).

    ``p`` is params["encoder"]["pos_conv_embed"]. The encoder zeroes padded frames first, but
    batch norm maps a zero to -mean / std * weight + bias, so in transformers a padded batch's
    conv sees that value past each item's end where the item alone sees the conv's zero
    padding. Unless ``padding_leaks`` (norm_over_padding: transformers' padded numbers), the
    padded frames are zeroed again after the norm, so each item gets its result alone.
    """
    if "batch_norm" not in p:
        return x
    normed = batch_norm(x, p["batch_norm"])
    return normed if valid is None or padding_leaks else normed * valid[:, :, None]


def final_projection(hidden, p):
    """HuBERT's final_proj on any hidden state: [B, T, D] -> [B, T, P] (RVC v1: layer 9, P = 256)."""
    return linear(hidden, **p)
