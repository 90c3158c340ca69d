"""The two paths through a forward pass: the reference operations and the fast ones.

A forward pass takes every operation whose fast version differs from its reference from
one ``Ops``. REFERENCE says what the model computes in the fewest lines, next to
transformers' modeling_wav2vec2.py (npw2v2.core.layers, conv_encoder.feature_encoder);
FAST computes the same numbers in less time and memory (npw2v2.core.fast), each function
tested against its reference. The blocks take ``ops`` as an argument, and
``forward(..., reference=True)`` runs a whole pass on the reference path.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import conv_encoder, fast, layers, xvector


@dataclass(frozen=True)
class Ops:
    """One path's operations; the signatures are those of npw2v2.core.layers."""

    name: str
    conv1d: Callable  # (x [B, L, C_in], weight, bias, stride, padding, groups) -> [B, T, C_out]
    layer_norm: Callable  # (x [..., D], weight, bias, eps) -> [..., D]
    activation: Callable  # hidden_act name -> f(x, out=None)
    attention: Callable  # (x [B, T, D], valid [B, T] bool or None, p, heads, bias=None) -> [B, T, D]
    feature_encoder: Callable  # (input_values [B, S], p, cfg, norm_lengths, trace) -> [B, T, C]
    tdnn: Callable  # x-vector TDNN layer: (x [B, T, I], weight [O, K * I], bias, kernel, dilation) -> [B, T', O]


REFERENCE = Ops("reference", layers.conv1d, layers.layer_norm, layers.activation, layers.attention,
                conv_encoder.feature_encoder, xvector.tdnn_layer)
FAST = Ops("fast", fast.conv1d, fast.layer_norm, fast.activation, fast.attention, fast.feature_encoder,
           xvector.tdnn_layer_fast)
