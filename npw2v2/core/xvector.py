"""The x-vector speaker head: one embedding per input, for speaker verification.

transformers' ``*ForXVector`` classes (Wav2Vec2, Data2VecAudio, UniSpeechSat, WavLM: the same
head on each family's encoder) turn the frames of an utterance into one vector:

    hidden [B, T, D] (the last hidden state, or the learned weighted layer sum)
      projector: Linear(D -> tdnn_dim[0])                     [B, T, tdnn_dim[0]]
      TDNN layers: frames t, t + d, ..., t + (K - 1) d side   [B, T - d (K - 1), tdnn_dim[i]]
        by side through a Linear, then ReLU (a dilated conv
        over time without padding; K tdnn_kernel, d tdnn_dilation)
      statistics pooling: mean and standard deviation over   [B, 2 tdnn_dim[-1]]
        each input's valid frames
      feature_extractor: Linear -> embeddings                  [B, xvector_output_dim]
      classifier: Linear -> logits                             [B, xvector_output_dim]

The embeddings are what speaker verification compares (cosine similarity); the logits are
the training classifier's scores, which an AM-softmax loss (``objective``, not run here) reads.

Two things transformers does that matter for a padded batch (Wav2Vec2ForXVector.forward):

- the standard deviation is torch.std's, the unbiased one (divided by n - 1), so an input needs
  two TDNN frames at least (one gives NaN there; npw2v2 refuses it, min_samples);
- its count of each input's valid TDNN frames (_get_tdnn_output_lengths) takes ``kernel - 1``
  frames off per layer, leaving out the dilation. A dilated layer's last frames read past the
  input's end, so in a padded batch a shorter input's statistics take in frames that saw its
  padding, and differ from the input's alone. npw2v2 counts ``dilation * (kernel - 1)`` per
  layer, the frames that see the input only, so each input gets its result alone;
  ``norm_over_padding`` (padding_leaks here) takes transformers' count, to reproduce its numbers.
"""
from __future__ import annotations

import numpy as np

from .backend import asnumpy, get_xp
from .config import Config
from .layers import linear, relu

# torch.std divides by n - 1: the standard deviation of one frame is NaN there.
MIN_POOLED_FRAMES = 2


def tdnn_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """The head's tensors under transformers' names. A TDNN layer's ``kernel`` is an nn.Linear of
    K * in_width inputs (transformers reshapes it into a conv weight); its input width is the
    previous layer's output, the projector's for the first."""
    x, dims = cfg.xvector_output_dim, cfg.tdnn_dim
    shapes = {"projector.weight": (dims[0], cfg.hidden_size), "projector.bias": (dims[0],)}
    for i, (out, k) in enumerate(zip(dims, cfg.tdnn_kernel)):
        width_in = dims[i - 1] if i > 0 else dims[0]
        shapes[f"tdnn.{i}.kernel.weight"] = (out, k * width_in)
        shapes[f"tdnn.{i}.kernel.bias"] = (out,)
    shapes.update({"feature_extractor.weight": (x, 2 * dims[-1]), "feature_extractor.bias": (x,),
                   "classifier.weight": (x, x), "classifier.bias": (x,)})
    return shapes


def training_only_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """The AM-softmax loss's class weights ([xvector_output_dim, labels]): in the checkpoints, unused at inference."""
    return {"objective.weight": (cfg.xvector_output_dim, cfg.num_labels)}


# ---------------------------------------------------------------------------
# TDNN layers


def tdnn_layer(x, weight, bias, kernel: int, dilation: int):
    """One TDNN layer, plainly: each output frame is the Linear of K input frames side by side, then ReLU.

    x: [B, T, I], weight: [O, K * I] -> [B, T - dilation * (K - 1), O]. Output frame t reads
    frames t, t + d, ..., t + (K - 1) d, in that order (the weight's K blocks of I columns), as
    transformers' conv1d with the Linear's weight viewed as [O, K, I] computes it.
    Mirrors TDNNLayer.
    """
    xp = get_xp(x)
    frames = x.shape[1] - dilation * (kernel - 1)
    spliced = xp.concatenate([x[:, j * dilation:j * dilation + frames] for j in range(kernel)], axis=-1)  # [B, T', K I]
    return relu(linear(spliced, weight, bias))


def tdnn_layer_fast(x, weight, bias, kernel: int, dilation: int):
    """tdnn_layer without the spliced copy: the sum over the K taps of a frame slice times its weight block.

    x: [B, T, I], weight: [O, K * I] -> [B, T - dilation * (K - 1), O]; the same numbers up to
    rounding, in K matrix products over views of x, where the plain form copies x K times.
    """
    xp = get_xp(x)
    width = x.shape[-1]
    frames = x.shape[1] - dilation * (kernel - 1)
    y = x[:, :frames] @ weight[:, :width].T  # [B, T', O]
    for j in range(1, kernel):
        y += x[:, j * dilation:j * dilation + frames] @ weight[:, j * width:(j + 1) * width].T
    if bias is not None:
        y += bias
    return xp.maximum(y, 0, out=y)


def tdnn_reduction(cfg: Config) -> int:
    """Frames the TDNN layers take off an input: dilation * (kernel - 1) per layer (14 with the defaults)."""
    return sum(d * (k - 1) for k, d in zip(cfg.tdnn_kernel, cfg.tdnn_dilation))


def tdnn_lengths(frame_lengths, cfg: Config, as_transformers: bool = False):
    """Each input's valid frames after the TDNN layers: [B] encoder frames -> [B].

    ``as_transformers``: its count (_get_tdnn_output_lengths), which takes ``kernel - 1`` per
    layer whatever the dilation, so counts frames that read past a shorter input's end.
    """
    lengths = np.asarray(frame_lengths, dtype=np.int64)
    if as_transformers:
        return lengths - sum(k - 1 for k in cfg.tdnn_kernel)
    return lengths - tdnn_reduction(cfg)


def min_frames(cfg: Config) -> int:
    """Encoder frames an input needs for the x-vector head: MIN_POOLED_FRAMES after the TDNN layers."""
    return tdnn_reduction(cfg) + MIN_POOLED_FRAMES


def min_samples(cfg: Config) -> int:
    """Samples an input needs for the x-vector head (5200, 0.325 s at 16 kHz, with the standard encoder and TDNN)."""
    return cfg.receptive_field + (min_frames(cfg) - 1) * cfg.frame_stride


# ---------------------------------------------------------------------------
# Statistics pooling and the head


def statistics_pooling(x, lengths=None):
    """Mean and unbiased standard deviation over each input's first ``lengths`` frames, side by side.

    x: [B, T, O], lengths: [B] ints (a count past T counts T, as a slice does) or None for
    every frame -> [B, 2 O]. The deviation divides by n - 1, as torch.std does.
    """
    xp = get_xp(x)
    if lengths is None:
        lengths = np.full(x.shape[0], x.shape[1])
    counts = np.minimum(np.asarray(lengths), x.shape[1])
    weight = (xp.arange(x.shape[1])[None, :] < xp.asarray(counts)[:, None]).astype(x.dtype)[:, :, None]  # [B, T, 1]
    n = xp.asarray(counts, dtype=x.dtype)[:, None]  # [B, 1]
    mean = (x * weight).sum(axis=1) / n  # [B, O]
    var = (((x - mean[:, None]) * weight) ** 2).sum(axis=1) / (n - 1)
    return xp.concatenate([mean, xp.sqrt(var)], axis=-1)


def check_long_enough(lengths, cfg: Config) -> None:
    """Refuse inputs with fewer than MIN_POOLED_FRAMES frames after the TDNN layers, naming them."""
    short = [(i, int(n)) for i, n in enumerate(lengths) if n < MIN_POOLED_FRAMES]
    if short:
        items = ", ".join(f"item {i} has {n + tdnn_reduction(cfg)}" for i, n in short)
        raise ValueError(f"input too short for the x-vector head: it needs at least {min_frames(cfg)} frames "
                         f"({min_samples(cfg)} samples) for a standard deviation over {MIN_POOLED_FRAMES} frames "
                         f"after the TDNN layers, but {items}")


def xvector_head(x, valid, params, cfg: Config, tdnn=tdnn_layer, padding_leaks: bool = False) -> dict:
    """Each input's speaker embedding and the classifier's logits.

    x: [B, T, D] (the classifier input: last hidden state or weighted layer sum), valid: [B, T]
    bool or None (every frame counts) -> {"embeddings": [B, X], "logits": [B, X]}, X =
    xvector_output_dim. ``tdnn`` is tdnn_layer or tdnn_layer_fast (the path's, npw2v2.core.ops);
    ``padding_leaks``: pool over transformers' count of frames (tdnn_lengths).
    Mirrors Wav2Vec2ForXVector.forward after the encoder.
    """
    h = linear(x, **params["projector"])  # [B, T, tdnn_dim[0]]
    lengths = None
    frames = np.full(h.shape[0], h.shape[1]) if valid is None else asnumpy(valid).sum(axis=1)
    check_long_enough(tdnn_lengths(frames, cfg), cfg)
    for layer, kernel, dilation in zip(params["tdnn"], cfg.tdnn_kernel, cfg.tdnn_dilation):
        h = tdnn(h, layer["kernel"]["weight"], layer["kernel"]["bias"], kernel, dilation)  # [B, T - d (K - 1), O]
    if valid is not None:
        lengths = tdnn_lengths(frames, cfg, as_transformers=padding_leaks)
    # The head's feature_extractor shares its name's first part with the conv feature encoder's
    # (feature_extractor.conv_layers.*, once wav2vec2. is stripped): its own tensors are these two.
    p = params["feature_extractor"]
    embeddings = linear(statistics_pooling(h, lengths), p["weight"], p["bias"])  # [B, X]
    return {"embeddings": embeddings, "logits": linear(embeddings, **params["classifier"])}
