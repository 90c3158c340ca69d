"""Adapters: the down-sampling adapter after the encoder, and MMS's attention adapters.

Two unrelated things share transformers' word "adapter":

- The **down-sampling adapter** (``add_adapter``) shortens and reshapes the encoder's output
  for a decoder or a CTC head: an optional Linear(D -> O) + LayerNorm when the widths differ,
  then ``num_adapter_layers`` of Conv1d(O -> 2 O, kernel k, stride s, padding 1) + GLU, each
  halving T with the standard stride 2. Each output frame sees its neighbours, so in a padded
  batch the last real frame would see a padded one: npw2v2 zeroes padded frames before every
  conv, as a lone input's zero padding looks (transformers does not; ``leak=True`` copies it).
- **MMS attention adapters** (``adapter_attn_dim``): a small per-language bottleneck added to
  the output of every pre-LN transformer layer. With the CTC head they are the only weights
  that change between MMS's languages (see npw2v2/io/languages.py for the switching).

Pure functions here; shapes [B, T, D] as everywhere (O = output_hidden_size, A = adapter_attn_dim).
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp
from .config import Config
from .layers import linear, relu
from .lengths import length_mask
from .ops import Ops
from .trace import untraced

# ---------------------------------------------------------------------------
# MMS attention adapters


def attention_adapter(x, p, ops: Ops):
    """LayerNorm, Linear(D -> A), ReLU, Linear(A -> D): what a pre-LN layer adds to its output.

    x: [B, T, D] -> [B, T, D]. Frame by frame, so padding cannot reach real frames.
    Mirrors Wav2Vec2AttnAdapterLayer (its LayerNorm has PyTorch's default eps, 1e-5).
    """
    h = ops.layer_norm(x, **p["norm"], eps=1e-5)
    return linear(relu(linear(h, **p["linear_1"])), **p["linear_2"])  # [B, T, A] in between


def attention_adapter_shapes(cfg: Config, layer: int) -> dict[str, tuple[int, ...]]:
    """The tensors of one layer's attention adapter (none unless pre-LN with adapter_attn_dim)."""
    if cfg.adapter_attn_dim is None or not cfg.do_stable_layer_norm:
        return {}  # transformers gives post-LN layers no adapter, whatever the config says
    d, a, prefix = cfg.hidden_size, cfg.adapter_attn_dim, f"encoder.layers.{layer}.adapter_layer"
    return {f"{prefix}.norm.weight": (d,), f"{prefix}.norm.bias": (d,),
            f"{prefix}.linear_1.weight": (a, d), f"{prefix}.linear_1.bias": (a,),
            f"{prefix}.linear_2.weight": (d, a), f"{prefix}.linear_2.bias": (d,)}


def language_shapes(cfg: Config, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """What one MMS language brings: every layer's attention adapter and a CTC head over its vocabulary."""
    shapes = {name: shape for i in range(cfg.num_hidden_layers) for name, shape in attention_adapter_shapes(cfg, i).items()}
    width = cfg.adapter_width if cfg.add_adapter else cfg.hidden_size
    return {**shapes, "lm_head.weight": (vocab_size, width), "lm_head.bias": (vocab_size,)}


# ---------------------------------------------------------------------------
# The down-sampling adapter


def adapter_length(lengths, cfg: Config):
    """Frames out of one adapter conv: floor((L + 2 - k) / s) + 1 (padding 1). [B] -> [B].

    transformers computes the mask with kernel 1 and no padding, (L - 1) // s + 1, which is
    the same number for its default kernel of 3; this is the convolution's own count.
    """
    return (np.asarray(lengths) + 2 - cfg.adapter_kernel_size) // cfg.adapter_stride + 1


def glu(x):
    """Gated linear unit over the channels: first half * sigmoid(second half). [..., 2 O] -> [..., O]."""
    a, b = get_xp(x).split(x, 2, axis=-1)
    return a / (1.0 + get_xp(x).exp(-b))


def downsample(x, lengths, p, cfg: Config, ops: Ops, masked: bool, leak: bool, trace=untraced):
    """The down-sampling adapter: encoder output to fewer, possibly narrower, frames.

    x: [B, T, D], lengths: [B] valid frames -> ([B, T', O], [B] valid frames of the output).
    With ``masked`` (a padded batch) padded frames are zeroed before each conv, so every
    item gets its lone result; ``leak=True`` lets them in, as transformers does.
    Mirrors Wav2Vec2Adapter with its Wav2Vec2AdapterLayers.
    """
    xp = get_xp(x)
    if "proj" in p:
        x = ops.layer_norm(linear(x, **p["proj"]), **p["proj_layer_norm"], eps=1e-5)  # [B, T, O]
        trace("adapter.proj", x, axes="B T D", note=f"Linear {cfg.hidden_size} -> {cfg.adapter_width}, LayerNorm")
    lengths = np.asarray(lengths)
    for i, layer in enumerate(p["layers"]):
        if masked and not leak:
            x = x * length_mask(lengths, x.shape[1], xp)[:, :, None]
        x = glu(ops.conv1d(x, **layer["conv"], stride=cfg.adapter_stride, padding=1))  # [B, T_i, O]
        lengths = adapter_length(lengths, cfg)
        trace(f"adapter.layers.{i}", x, axes="B T D", lengths=lengths, kernel=cfg.adapter_kernel_size,
              stride=cfg.adapter_stride, padding_zeroed=masked and not leak)
    return x, lengths


def downsample_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """The down-sampling adapter's tensors (none without add_adapter)."""
    if not cfg.add_adapter:
        return {}
    d, o, k = cfg.hidden_size, cfg.adapter_width, cfg.adapter_kernel_size
    shapes = {}
    if o != d:
        shapes.update({"adapter.proj.weight": (o, d), "adapter.proj.bias": (o,),
                       "adapter.proj_layer_norm.weight": (o,), "adapter.proj_layer_norm.bias": (o,)})
    for i in range(cfg.num_adapter_layers):
        shapes.update({f"adapter.layers.{i}.conv.weight": (2 * o, o, k), f"adapter.layers.{i}.conv.bias": (2 * o,)})
    return shapes
