"""The convolutional feature encoder: a waveform to one C-vector per 20 ms frame.

Shared by every model of the family (wav2vec 2.0, HuBERT, WavLM, data2vec-audio, ...):
seven strided convolutions without padding, each followed by its norm and an activation.
This is the reference version; npw2v2.core.fast.feature_encoder computes the same numbers
in less time and bounded memory.
"""
from __future__ import annotations

from .config import Config
from .layers import activation, conv1d, group_norm, layer_norm
from .trace import untraced


def feature_encoder(input_values, p, cfg: Config, norm_lengths=None, trace=untraced):
    """The feature encoder. input_values: [B, S] -> [B, T, C]; ``p`` is params["feature_extractor"].

    Each layer is conv -> norm -> activation, and makes floor((L - K) / stride) + 1 frames
    of its input's L. "group" models normalise only layer 0, each channel over time: over
    each item's first ``norm_lengths`` frames ([B], npw2v2.core.lengths.conv_lengths()[0]),
    or over every frame when None, padding included, as transformers does. "layer" models
    normalise every layer's frames over their channels. Both norms use eps 1e-5.
    Mirrors Wav2Vec2FeatureEncoder with its GroupNorm/LayerNorm/NoLayerNorm conv layers.
    """
    act = activation(cfg.feat_extract_activation)
    h = input_values[:, :, None]  # [B, S, 1]: one input channel
    for i, layer in enumerate(p["conv_layers"]):
        h = conv1d(h, **layer["conv"], stride=cfg.conv_stride[i])  # [B, T_i, C]
        if cfg.feat_extract_norm == "layer":
            h = layer_norm(h, **layer["layer_norm"], eps=1e-5)
        elif i == 0:
            h = group_norm(h, **layer["layer_norm"], lengths=norm_lengths, eps=1e-5)
        h = act(h)
        trace_conv_layer(trace, i, h, cfg, norm_lengths)
    return h


def trace_conv_layer(trace, i: int, h, cfg: Config, norm_lengths) -> None:
    """Show conv layer i's output [B, T_i, C] with its kernel, stride and what its norm did."""
    norm = None
    if cfg.feat_extract_norm == "layer":
        norm = "layer norm over the channels of each frame"
    elif i == 0:
        norm = "group norm: each channel over time, " + ("padding included" if norm_lengths is None
                                                         else "valid frames only")
    trace(f"conv_layers.{i}", h, axes="B T C", kernel=cfg.conv_kernel[i], stride=cfg.conv_stride[i], norm=norm)
