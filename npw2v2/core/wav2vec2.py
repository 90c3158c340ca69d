"""wav2vec 2.0 as one pure function over a nested parameter dict: the whole forward pass.

Shapes, everywhere in npw2v2:
    B batch, S samples, T frames, C conv channels, D hidden size, H heads,
    F feed-forward size, V vocabulary, K kernel.

The path of a batch of waveforms, and where its padding mask acts:

    input_values [B, S] ---- sample lengths (from attention_mask) ----.
      feature encoder (conv_encoder): 7 strided convs,                |  lengths per conv layer;
        T = floor((L - K) / stride) + 1 -> [B, T, C]                  |  group norm counts the valid
      feature projection: LayerNorm(C), Linear(C -> D)                |  frames of layer 0 only
        -> extract_features [B, T, C], hidden [B, T, D]               |
      zero the padded frames                                          <- frame mask [B, T]
      positional conv (+ LayerNorm for post-LN), transformer layers   <- padded keys masked
        -> last_hidden_state [B, T, D]
      down-sampling adapter, when the config adds one (adapters)     <- padded frames zeroed
      the head (heads): CTC logits [B, T, V], pretraining projections,
        classifier logits [B, labels] (mean over valid frames) or [B, T, labels],
        x-vector embeddings and logits [B, X] (statistics over valid frames)

``params`` mirrors the Hugging Face state dict: ``params["encoder"]["layers"][3]["attention"]``
holds what ``encoder.layers.3.attention.*`` names (npw2v2.core.params).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adapters import downsample
from .backend import asnumpy, get_xp
from .config import Config
from .heads import CTC, FINAL_PROJ, apply_head, kind_of_names, mask_time, perplexity_frames
from .lengths import check_long_enough, conv_lengths, frame_lengths, length_mask, sample_lengths_from_mask
from .ops import FAST, REFERENCE
from .trace import untraced
from . import conformer, w2v_bert
from .transformer import encoder, feature_projection


@dataclass
class Output:
    """What a forward pass returns, by transformers' names; frames past ``frame_lengths`` are padding.

    ``frame_lengths`` and ``frame_mask`` describe last_hidden_state and frame logits. Only a
    down-sampling adapter makes them differ from ``encoder_frame_lengths``/``encoder_frame_mask``,
    which describe extract_features, hidden_states and the pretraining outputs.
    """

    extract_features: object  # [B, T, C], the LayerNorm'd conv features
    last_hidden_state: object  # [B, T, D] ([B, T', O] after a down-sampling adapter)
    frame_lengths: np.ndarray  # [B] valid frames per item
    frame_mask: object  # [B, T] bool, True for valid frames
    hidden_states: tuple | None = None  # L + 1 arrays of [B, T, D], when asked
    logits: object | None = None  # CTC [B, T, V], sequence classifier [B, labels], frame classifier [B, T, labels],
    #                               x-vector [B, X]
    embeddings: object | None = None  # [B, X], x-vector: each input's speaker embedding
    encoder_frame_lengths: np.ndarray | None = None  # [B], the encoder's frames
    encoder_frame_mask: object | None = None  # [B, T] bool
    projected_states: object | None = None  # [B, T, P], pretraining: context vectors in the target space
    projected_quantized_states: object | None = None  # [B, T, P], pretraining: quantized targets
    codevector_ids: object | None = None  # [B, T, G], pretraining: the codevector picked in each group
    codevector_perplexity: object | None = None  # 0-d, pretraining: codevectors in use over the batch


def forward(params, cfg: Config, input_values, attention_mask=None, *, output_hidden_states=False,
            norm_over_padding=False, mask_time_indices=None, reference=False, trace=untraced) -> Output:
    """The full forward pass of a padded batch. Mirrors Wav2Vec2Model and the head params holds.

    input_values: [B, S] float32; attention_mask: [B, S] bool or 0/1, right-padded, or None.
    w2v-BERT (model_type "wav2vec2-bert") takes filter-bank features [B, T, 160] and a frame mask
    [B, T] instead (npw2v2.core.w2v_bert.forward, npw2v2.core.fbank.fbank_batch).
    With a mask, each utterance gets the result it gets alone (group norm statistics over
    its valid samples, adapter convolutions and classifier pooling over its valid frames).
    ``norm_over_padding=True`` lets the padding in where transformers does (group norm, the
    down-sampling adapter, the x-vector head's count of frames to pool), which reproduces its
    padded-batch numbers exactly. Without a
    mask every sample counts. (HuBERT's batch-normed positional conv input is the third place
    padding leaks into, npw2v2.core.hubert.) ``mask_time_indices`` ([B, T] bool) replaces those frames by
    the learned mask embedding before the encoder, as pretraining does.
    ``reference=True`` takes every operation from the reference path (npw2v2.core.ops).
    ``trace(name, array, **facts)`` is called at every stage (npw2v2.core.trace).
    """
    if cfg.model_type == "wav2vec2-bert":  # filter-bank features in, not samples (npw2v2.core.w2v_bert)
        return w2v_bert.forward(params, cfg, input_values, attention_mask, output_hidden_states=output_hidden_states,
                                norm_over_padding=norm_over_padding, mask_time_indices=mask_time_indices,
                                reference=reference, trace=trace)
    ops = REFERENCE if reference else FAST
    xp = get_xp(input_values)
    x = xp.asarray(input_values, dtype=xp.float32)
    lengths = _sample_lengths(x, attention_mask, cfg)
    trace("input_values", x, axes="B S", lengths=lengths)
    if attention_mask is not None:
        trace("attention_mask", xp.asarray(attention_mask).astype(bool), axes="B S", lengths=lengths)

    per_layer = conv_lengths(lengths, cfg)
    trace("conv_lengths", None, per_layer=per_layer)
    norm_lengths = per_layer[0] if attention_mask is not None and not norm_over_padding else None
    features = ops.feature_encoder(x, params["feature_extractor"], cfg, norm_lengths, trace)  # [B, T, C]
    trace("conv_features", features, axes="B T C", lengths=per_layer[-1])
    hidden, extract_features = feature_projection(features, params["feature_projection"], cfg, ops)
    trace("extract_features", extract_features, axes="B T C")
    trace("projected", hidden, axes="B T D")
    if mask_time_indices is not None:
        hidden = mask_time(hidden, mask_time_indices, params.get("masked_spec_embed"))
    frame_mask = length_mask(per_layer[-1], features.shape[1], xp)  # [B, T]
    trace("frame_mask", frame_mask, axes="B T", lengths=per_layer[-1], used=attention_mask is not None)
    valid = None if attention_mask is None else frame_mask
    keep_states = output_hidden_states or cfg.use_weighted_layer_sum  # a weighted layer sum needs them all
    run_encoder = conformer.encoder if cfg.model_type == "wav2vec2-conformer" else encoder
    last, states = run_encoder(hidden, valid, params["encoder"], cfg, ops, trace, keep_states=keep_states,
                               padding_leaks=norm_over_padding)
    lengths, out_mask = per_layer[-1], frame_mask
    if "adapter" in params:
        last, lengths = downsample(last, lengths, params["adapter"], cfg, ops, masked=valid is not None,
                                   leak=norm_over_padding, trace=trace)
        out_mask = length_mask(lengths, last.shape[1], xp)  # [B, T']
    trace("last_hidden_state", last, axes="B T D")
    counted = perplexity_frames(mask_time_indices, valid, norm_over_padding, xp)
    pooled_over = None if valid is None else out_mask
    head = apply_head(params, cfg, last, states, extract_features, pooled_over, counted, tdnn=ops.tdnn,
                      padding_leaks=norm_over_padding)
    for name, value in head.items():
        trace(name, value)
    return Output(
        extract_features=extract_features,
        last_hidden_state=last,
        frame_lengths=lengths,
        frame_mask=out_mask,
        hidden_states=tuple(states) if output_hidden_states else None,
        encoder_frame_lengths=per_layer[-1],
        encoder_frame_mask=frame_mask,
        **head,
    )


def _sample_lengths(x, attention_mask, cfg: Config):
    """Each item's real samples, [B]; refuses a batch that is not [B, S] or an item too short for a frame."""
    if x.ndim != 2:
        raise ValueError(f"input_values must be [B, S], got shape {x.shape}")
    num_samples = x.shape[1]
    if attention_mask is None:
        lengths = np.full(x.shape[0], num_samples)
    else:
        lengths = sample_lengths_from_mask(asnumpy(attention_mask), num_samples)
    check_long_enough(lengths, cfg)
    return lengths


# ---------------------------------------------------------------------------
# A padded batch, item by item: the same numbers without computing the padding


def can_run_items_alone(params, mask_time_indices=None) -> bool:
    """Whether each item's outputs depend on that item alone and are all per encoder frame.

    True for the bare encoder, the CTC head and HuBERT's final_proj (not part of forward's outputs). Pooled classifiers, pretraining statistics
    and the down-sampling adapter (its own frame count) keep the batch path.
    """
    return "adapter" not in params and kind_of_names(params) in (None, CTC, FINAL_PROJ) and mask_time_indices is None


def forward_items_alone(params, cfg: Config, input_values, attention_mask=None, *,
                        output_hidden_states=False) -> Output:
    """forward's numbers for a padded batch, computing each item over its valid samples only.

    The outputs are padded back with zeros to the batch's frame count. Only for models
    whose outputs are per encoder frame (can_run_items_alone); on the fast path, as a
    padded batch of different lengths otherwise spends work on padding.
    """
    if not can_run_items_alone(params):
        raise ValueError("items run alone only for per-frame outputs: the bare encoder or the CTC head, "
                         "without a down-sampling adapter")
    xp = get_xp(input_values)
    x = xp.asarray(input_values, dtype=xp.float32)
    lengths = _sample_lengths(x, attention_mask, cfg)
    alone = [forward(params, cfg, x[i:i + 1, :n], output_hidden_states=output_hidden_states)
             for i, n in enumerate(lengths.tolist())]
    return _padded_batch(alone, int(frame_lengths([x.shape[1]], cfg)[0]), xp)


def _padded_batch(outputs: list, frames: int, xp) -> Output:
    """Single-item outputs as one batch of ``frames`` frames, zeros past each item's length."""
    def stack(arrays):  # each [1, T_i, ...] -> [B, frames, ...]
        batch = xp.zeros((len(arrays), frames) + arrays[0].shape[2:], dtype=arrays[0].dtype)
        for i, a in enumerate(arrays):
            batch[i, :a.shape[1]] = a[0]
        return batch

    first = outputs[0]
    lengths = np.concatenate([o.frame_lengths for o in outputs])
    mask = length_mask(lengths, frames, xp)
    return Output(
        extract_features=stack([o.extract_features for o in outputs]),
        last_hidden_state=stack([o.last_hidden_state for o in outputs]),
        frame_lengths=lengths,
        frame_mask=mask,
        encoder_frame_lengths=lengths,
        encoder_frame_mask=mask,
        hidden_states=None if first.hidden_states is None else tuple(
            stack([o.hidden_states[layer] for o in outputs]) for layer in range(len(first.hidden_states))),
        logits=None if first.logits is None else stack([o.logits for o in outputs]),
    )
