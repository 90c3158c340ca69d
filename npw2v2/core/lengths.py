"""Lengths and masks: how many samples and frames of each padded item are real.

Masks are [B, S] or [B, T] bool, True for real data, right padding only. A padded batch
carries its sample lengths in; every layer's frame lengths follow from them by the
convolutions' arithmetic, so nothing downstream needs to guess where the padding starts.
"""
from __future__ import annotations

import numpy as np

from .config import Config


def conv_lengths(sample_lengths, cfg: Config) -> list:
    """Valid length after each conv layer: L -> floor((L - K) / stride) + 1, no padding.

    sample_lengths: [B] ints -> a list of [B] int arrays, one per conv layer.
    16000 samples give 3199, 1599, 799, 399, 199, 99, 49 with the standard encoder.
    Mirrors Wav2Vec2Model._get_feat_extract_output_lengths (one step per layer).
    """
    lengths, per_layer = np.asarray(sample_lengths, dtype=np.int64), []
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        lengths = (lengths - k) // s + 1
        per_layer.append(lengths)
    return per_layer


def frame_lengths(sample_lengths, cfg: Config):
    """Number of frames the feature encoder makes from each input. [B] -> [B]."""
    return conv_lengths(sample_lengths, cfg)[-1]


def length_mask(lengths, size: int, xp=np):
    """[B] lengths -> [B, size] bool, True for the first ``length`` positions (right padding)."""
    return xp.arange(size)[None, :] < xp.asarray(lengths)[:, None]


def sample_lengths_from_mask(attention_mask, num_samples: int):
    """Lengths of a right-padded [B, S] mask (bool or 0/1); a mask with holes is refused."""
    mask = np.asarray(attention_mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"attention_mask must be [B, S], got shape {mask.shape}")
    if mask.shape[1] != num_samples:
        raise ValueError(f"attention_mask has {mask.shape[1]} samples, input_values has {num_samples}")
    lengths = mask.sum(axis=1)
    if not np.array_equal(mask, length_mask(lengths, num_samples)):
        raise ValueError("attention_mask must be right-padded: ones, then zeros, in every row")
    return lengths


def check_long_enough(sample_lengths, cfg: Config):
    """Refuse inputs too short to make a single frame (fewer than 400 samples, 25 ms at 16 kHz)."""
    short = [(i, int(n)) for i, n in enumerate(sample_lengths) if n < cfg.receptive_field]
    if short:
        items = ", ".join(f"item {i} has {n}" for i, n in short)
        raise ValueError(
            f"input too short: the model needs at least {cfg.receptive_field} samples "
            f"for one frame, but {items}"
        )
