"""wav2vec 2.0 as pure functions over a nested parameter dict.

Shapes, everywhere in npw2v2:
    B batch, S samples, T frames, C conv channels, D hidden size, H heads,
    F feed-forward size, V vocabulary, K kernel.

The path of a batch of waveforms, and where its padding mask acts:

    input_values [B, S] ---- sample lengths (from attention_mask) ----.
      feature_encoder: 7 strided convs, T = floor((L - K) / stride) + 1 |  lengths per conv layer;
        -> [B, T, C]                                                  |  group norm uses the valid
      feature_projection: LayerNorm(C), Linear(C -> D)                |  frames of layer 0 only
        -> extract_features [B, T, C], hidden [B, T, D]               |
      zero the padded frames                                          <- frame mask [B, T]
      positional conv (+ LayerNorm for post-LN), transformer layers   <- padded keys masked
        -> last_hidden_state [B, T, D]
      down-sampling adapter, when the config adds one (npw2v2.adapters)  <- padded frames zeroed
      the head (npw2v2.heads): CTC logits [B, T, V], pretraining projections,
        classifier logits [B, labels] (mean over valid frames) or [B, T, labels]

``params`` mirrors the Hugging Face state dict: ``params["encoder"]["layers"][3]["attention"]``
holds what ``encoder.layers.3.attention.*`` names.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adapters import attention_adapter, downsample
from .backend import asnumpy, get_xp
from .config import Config
from .heads import CTC, HEAD_NAMES, apply_head, contrastive_logits, kind_of_names, mask_time, model_kind, \
    perplexity_frames
from .layers import activation, attention, conv1d, conv_windows, layer_norm, linear

# ---------------------------------------------------------------------------
# Lengths and masks


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


# ---------------------------------------------------------------------------
# Feature encoder and projection


def _untraced(name, value, **info):
    """The default trace: record nothing. A trace is called with each stage's name, array and facts."""


def feature_encoder(input_values, p, cfg: Config, layer_lengths=None, trace=_untraced):
    """The convolutional feature encoder: waveform to one C-vector every 20 ms.

    input_values: [B, S] -> [B, T, C]. ``p`` is params["feature_extractor"].
    Each layer is conv -> norm -> activation. "group" models normalise only layer 0,
    each channel over time; with ``layer_lengths`` (from ``conv_lengths``) the time
    statistics use valid frames only, else the padding counts too, as in transformers.
    "layer" models normalise every layer's frames over channels (eps 1e-5).

    Long inputs go through in segments of a few seconds: the convolutions have no padding,
    so a segment of (n - 1) * hop + receptive_field samples gives exactly n output frames,
    and the memory of the first layers' long outputs stays bounded. A trace sees one segment.
    Mirrors Wav2Vec2FeatureEncoder with its GroupNorm/LayerNorm/NoLayerNorm conv layers.
    """
    xp = get_xp(input_values)
    batch, samples = input_values.shape
    whole = conv_lengths([samples], cfg)  # each layer's length for the whole, padded input
    layers = [_conv_layer(layer, i, cfg) for i, layer in enumerate(p["conv_layers"])]
    if cfg.feat_extract_norm == "group":
        first_lengths = layer_lengths[0] if layer_lengths is not None else np.repeat(whole[0], batch)
        layers[0] = _conv_group_norm(input_values, p["conv_layers"][0], cfg, first_lengths, layer_lengths is None)
    frames = int(whole[-1][0])
    hop = cfg.frame_stride
    step = frames if trace is not _untraced else _segment_frames(cfg, batch)
    pieces = []
    for start in range(0, frames, step):
        stop = min(frames, start + step)
        end = samples if stop == frames else (stop - 1) * hop + cfg.receptive_field
        pieces.append(_encode_segment(input_values[:, start * hop:end], layers, cfg, trace))
    return pieces[0] if len(pieces) == 1 else xp.concatenate(pieces, axis=1)


def _segment_frames(cfg: Config, batch: int) -> int:
    """Output frames per segment: the first layer's output for a segment stays near 4M values."""
    first_layer_values = cfg.frame_stride // cfg.conv_stride[0] * cfg.conv_dim[0]  # per output frame
    return max(1, (1 << 22) // (batch * first_layer_values))


def _encode_segment(x, layers, cfg: Config, trace):
    """[B, L] samples -> [B, T, C] through every conv layer: conv + norm, then activation."""
    act = activation(cfg.feat_extract_activation)
    h = x[:, :, None]  # [B, L, 1]
    for i, (conv_and_norm, stride) in enumerate(zip(layers, cfg.conv_stride)):
        h, norm = conv_and_norm(h)  # [B, T_i, C]
        h = act(h, out=h)
        trace(f"conv_layers.{i}", h, axes="B T C", kernel=cfg.conv_kernel[i], stride=stride, norm=norm)
    return h


def _conv_layer(p, i: int, cfg: Config):
    """Layer i as a function [B, L, C_in] -> ([B, T, C], what its norm did)."""
    def conv_and_norm(x):
        h = conv1d(x, **p["conv"], stride=cfg.conv_stride[i])
        if cfg.feat_extract_norm == "layer":
            return layer_norm(h, **p["layer_norm"], eps=1e-5), "layer norm over the channels of each frame"
        return h, None

    return conv_and_norm


def _conv_group_norm(input_values, p, cfg: Config, lengths, over_padding: bool):
    """Layer 0 of a "group" model, with its group norm folded into the convolution.

    Group norm right after a linear conv needs no pass over the conv's output: for output
    channel c = w_c . window + b_c, the mean over frames is w_c . mu + b_c and the variance
    is w_c^T Sigma w_c, where mu and Sigma are the mean and covariance of the input windows
    (K values each), per item, over its ``lengths`` valid frames. So each item's normalised
    output is (window - mu) . (w_c g_c / sqrt(var_c + eps)) + beta_c: one product per frame.
    Returns the layer as a function [B, L, 1] -> ([B, T, C], what the norm did).
    """
    xp = get_xp(input_values)
    weight, k, stride = p["conv"]["weight"], cfg.conv_kernel[0], cfg.conv_stride[0]
    w = asnumpy(weight).reshape(weight.shape[0], -1).astype(np.float64)  # [C, K] (C_in = 1)
    windows = conv_windows(asnumpy(input_values)[:, :, None], k, stride)  # [B, T_0, K]
    mu = np.stack([windows[b, :n].mean(axis=0, dtype=np.float64) for b, n in enumerate(lengths)])  # [B, K]
    sigma = np.stack([np.cov(windows[b, :n], rowvar=False, bias=True, dtype=np.float64)
                      for b, n in enumerate(lengths)]).reshape(len(lengths), k, k)  # [B, K, K]
    var = np.einsum("ck,bkj,cj->bc", w, sigma, w)  # [B, C]
    gain = asnumpy(p["layer_norm"]["weight"]).astype(np.float64)
    folded = w[None] * (gain / np.sqrt(var + 1e-5))[:, :, None]  # [B, C, K]
    folded_t = xp.asarray(folded.transpose(0, 2, 1).astype(np.float32))  # [B, K, C]
    mu = xp.asarray(mu.astype(np.float32))[:, None, :]  # [B, 1, K]
    shift = p["layer_norm"]["bias"]
    norm = "group norm: each channel over time, " + ("padding included" if over_padding else "valid frames only")

    def conv_and_norm(x):
        centred = conv_windows(x, k, stride) - mu  # [B, T, K]
        h = centred @ folded_t  # [B, T, C]
        h += shift
        return h, norm

    return conv_and_norm


def feature_projection(features, p, cfg: Config):
    """LayerNorm over the C channels, then a linear map C -> D, frame by frame.

    features: [B, T, C] -> (hidden [B, T, D], extract_features [B, T, C]).
    Mirrors Wav2Vec2FeatureProjection.
    """
    normed = layer_norm(features, **p["layer_norm"], eps=cfg.layer_norm_eps)
    return linear(normed, **p["projection"]), normed


# ---------------------------------------------------------------------------
# Transformer encoder


def fold_weight_norm(weight_g, weight_v):
    """Weight norm over dims (0, 1), as the positional conv uses it: ``g * v / ||v||``.

    weight_g: [1, 1, K], weight_v: [D, D / groups, K] -> weight [D, D / groups, K].
    """
    xp = get_xp(weight_v)
    norm = xp.sqrt((weight_v * weight_v).sum(axis=(0, 1), keepdims=True))
    return (weight_g * weight_v / norm).astype(weight_v.dtype)


def positional_embedding(x, p, cfg: Config):
    """Relative position information from a wide grouped convolution over time.

    x: [B, T, D] -> [B, T, D] (to be added to x). ``p`` is pos_conv_embed["conv"], with a
    plain ``weight`` or weight norm's ``weight_g``/``weight_v``. Zero padding of K // 2
    on both sides gives T + 1 frames for even K, so the last is dropped.
    Mirrors Wav2Vec2PositionalConvEmbedding with Wav2Vec2SamePadLayer.
    """
    k = cfg.num_conv_pos_embeddings
    weight = p["weight"] if "weight" in p else fold_weight_norm(p["weight_g"], p["weight_v"])
    y = conv1d(x, weight, p["bias"], padding=k // 2, groups=cfg.num_conv_pos_embedding_groups)
    if k % 2 == 0:
        y = y[:, :-1]
    return activation(cfg.feat_extract_activation)(y, out=y)


def feed_forward(x, p, cfg: Config):
    """Two linear layers with the activation between. [B, T, D] -> [B, T, F] -> [B, T, D].

    Mirrors Wav2Vec2FeedForward.
    """
    h = linear(x, **p["intermediate_dense"])  # [B, T, F]
    h = activation(cfg.hidden_act)(h, out=h)
    return linear(h, **p["output_dense"])


def encoder_layer(x, valid, p, cfg: Config):
    """One transformer block; pre-LN when cfg.do_stable_layer_norm, else post-LN.

    x: [B, T, D], valid: [B, T] bool or None -> [B, T, D].
    Mirrors Wav2Vec2EncoderLayer / Wav2Vec2EncoderLayerStableLayerNorm.
    """
    def norm(h, name):
        return layer_norm(h, **p[name], eps=cfg.layer_norm_eps)

    def attend(h):
        return attention(h, valid, p["attention"], heads=cfg.num_attention_heads)

    if cfg.do_stable_layer_norm:
        x = x + attend(norm(x, "layer_norm"))
        x = x + feed_forward(norm(x, "final_layer_norm"), p["feed_forward"], cfg)
        return x + attention_adapter(x, p["adapter_layer"]) if "adapter_layer" in p else x
    x = norm(x + attend(x), "layer_norm")
    return norm(x + feed_forward(x, p["feed_forward"], cfg), "final_layer_norm")


def encoder(x, valid, p, cfg: Config, trace=_untraced, keep_states=True):
    """Positional conv, then the transformer layers.

    x: [B, T, D], valid: [B, T] bool or None -> (last_hidden_state [B, T, D], hidden_states).
    ``hidden_states`` is a list of L + 1 arrays [B, T, D]: the input of each layer, then
    the output of the last one, as transformers 5 returns them. Post-LN: LN(x + pos) feeds
    layer 1. Pre-LN: x + pos feeds layer 1 and a final LN follows the last layer;
    ``hidden_states[-1]`` is before that LN, ``last_hidden_state`` after (transformers 4
    repeated the latter as the last entry; see golden/README.md). With ``keep_states=False``
    the list is empty, and each layer's input is freed as soon as it has been used.
    Mirrors Wav2Vec2Encoder / Wav2Vec2EncoderStableLayerNorm.
    """
    def norm(h):
        return layer_norm(h, **p["layer_norm"], eps=cfg.layer_norm_eps)

    if valid is not None:
        # The positional conv must see zeros where there is no audio, as a lone input does.
        x = x * valid[:, :, None]
        trace("masked", x, axes="B T D", note="padded frames set to 0 before the positional conv")
    position = positional_embedding(x, p["pos_conv_embed"]["conv"], cfg)
    trace("positional_embedding", position, axes="B T D", kernel=cfg.num_conv_pos_embeddings,
          groups=cfg.num_conv_pos_embedding_groups)
    x = x + position
    if not cfg.do_stable_layer_norm:
        x = norm(x)
    states = []
    for i, layer in enumerate(p["layers"]):
        trace(f"hidden_states.{i}", x, axes="B T D", keys_masked=valid is not None, heads=cfg.num_attention_heads)
        if keep_states:
            states.append(x)
        x = encoder_layer(x, valid, layer, cfg)
    trace(f"hidden_states.{len(p['layers'])}", x, axes="B T D")
    if keep_states:
        states.append(x)
    last = norm(x) if cfg.do_stable_layer_norm else x
    return last, states


# ---------------------------------------------------------------------------
# The whole model


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
    logits: object | None = None  # CTC [B, T, V], sequence classifier [B, labels], frame classifier [B, T, labels]
    encoder_frame_lengths: np.ndarray | None = None  # [B], the encoder's frames
    encoder_frame_mask: object | None = None  # [B, T] bool
    projected_states: object | None = None  # [B, T, P], pretraining: context vectors in the target space
    projected_quantized_states: object | None = None  # [B, T, P], pretraining: quantized targets
    codevector_ids: object | None = None  # [B, T, G], pretraining: the codevector picked in each group
    codevector_perplexity: object | None = None  # 0-d, pretraining: codevectors in use over the batch


def forward(params, cfg: Config, input_values, attention_mask=None, output_hidden_states=False,
            norm_over_padding=False, trace=_untraced, mask_time_indices=None, items_alone=None) -> Output:
    """The full forward pass. Mirrors Wav2Vec2Model and the head params holds (npw2v2.heads).

    input_values: [B, S] float32; attention_mask: [B, S] bool or 0/1, right-padded, or None.
    With a mask, each utterance gets the result it gets alone (group norm statistics over
    its valid samples, adapter convolutions and classifier pooling over its valid frames).
    ``norm_over_padding=True`` lets the padding in where transformers does (group norm, the
    down-sampling adapter), which reproduces its padded-batch numbers exactly. Without a
    mask every sample counts. ``mask_time_indices`` ([B, T] bool) replaces those frames by
    the learned mask embedding before the encoder, as pretraining does.
    ``trace(name, array, **facts)`` is called at every stage (see npw2v2.explain).

    ``items_alone``: how a padded batch is computed. False: as one batch, the masks keeping
    padding out (the path ``trace`` shows). True: item by item over its valid samples only,
    then padded back with zeros; the same numbers for valid frames, without computing the
    padding. None (default): item by item when that saves work, that is when a mask pads
    items of different lengths and neither a trace nor ``norm_over_padding`` asks for the batch.
    Only models whose every output is per encoder frame (no head, or CTC) run item by item:
    pooled classifiers, pretraining statistics and adapters keep the batch path.
    """
    xp = get_xp(input_values)
    x = xp.asarray(input_values, dtype=xp.float32)
    if x.ndim != 2:
        raise ValueError(f"input_values must be [B, S], got shape {x.shape}")
    num_samples = x.shape[1]
    if attention_mask is None:
        lengths = np.full(x.shape[0], num_samples)
    else:
        lengths = sample_lengths_from_mask(asnumpy(attention_mask), num_samples)
    check_long_enough(lengths, cfg)
    per_frame = "adapter" not in params and kind_of_names(params) in (None, CTC) and mask_time_indices is None
    if items_alone is None:
        items_alone = (attention_mask is not None and len(set(lengths.tolist())) > 1
                       and not norm_over_padding and trace is _untraced and per_frame)
    if items_alone:
        if norm_over_padding or trace is not _untraced or not per_frame:
            raise ValueError("items_alone=True runs each item on its own: it cannot let group norm see "
                             "the padding (norm_over_padding), trace the padded batch, or run heads, "
                             "adapters or time masks other than per-frame CTC")
        alone = [forward(params, cfg, x[i:i + 1, :n], output_hidden_states=output_hidden_states)
                 for i, n in enumerate(lengths.tolist())]
        return _padded_batch(alone, int(frame_lengths([num_samples], cfg)[0]), xp)
    trace("input_values", x, axes="B S", lengths=lengths)
    if attention_mask is not None:
        trace("attention_mask", xp.asarray(attention_mask).astype(bool), axes="B S", lengths=lengths)

    per_layer = conv_lengths(lengths, cfg)
    trace("conv_lengths", None, per_layer=per_layer)
    use_valid_stats = attention_mask is not None and not norm_over_padding
    features = feature_encoder(x, params["feature_extractor"], cfg, per_layer if use_valid_stats else None, trace)
    trace("conv_features", features, axes="B T C", lengths=per_layer[-1])
    hidden, extract_features = feature_projection(features, params["feature_projection"], cfg)
    trace("extract_features", extract_features, axes="B T C")
    trace("projected", hidden, axes="B T D")
    if mask_time_indices is not None:
        hidden = mask_time(hidden, mask_time_indices, params.get("masked_spec_embed"))
    frame_mask = length_mask(per_layer[-1], features.shape[1], xp)  # [B, T]
    trace("frame_mask", frame_mask, axes="B T", lengths=per_layer[-1], used=attention_mask is not None)
    valid = None if attention_mask is None else frame_mask
    keep_states = output_hidden_states or cfg.use_weighted_layer_sum  # a weighted layer sum needs them all
    last, states = encoder(hidden, valid, params["encoder"], cfg, trace, keep_states=keep_states)
    lengths, out_mask = per_layer[-1], frame_mask
    if "adapter" in params:
        last, lengths = downsample(last, lengths, params["adapter"], cfg, masked=valid is not None,
                                   leak=norm_over_padding, trace=trace)
        out_mask = length_mask(lengths, last.shape[1], xp)  # [B, T']
    trace("last_hidden_state", last, axes="B T D")
    counted = perplexity_frames(mask_time_indices, valid, norm_over_padding, xp)
    pooled_over = None if valid is None else out_mask
    head = apply_head(params, cfg, last, states, extract_features, pooled_over, counted)
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


def _padded_batch(outputs: list, frames: int, xp) -> Output:
    """Single-item outputs as one batch of ``frames`` frames, zeros past each item's length."""
    def stack(arrays):  # each [1, T_i, ...] -> [B, frames, ...]
        batch = xp.zeros((len(arrays), frames) + arrays[0].shape[2:], dtype=arrays[0].dtype)
        for i, a in enumerate(arrays):
            batch[i, :a.shape[1]] = a[0]
        return batch

    first = outputs[0]
    frame_lengths = np.concatenate([o.frame_lengths for o in outputs])
    frame_mask = length_mask(frame_lengths, frames, xp)
    return Output(
        extract_features=stack([o.extract_features for o in outputs]),
        last_hidden_state=stack([o.last_hidden_state for o in outputs]),
        frame_lengths=frame_lengths,
        frame_mask=frame_mask,
        encoder_frame_lengths=frame_lengths,
        encoder_frame_mask=frame_mask,
        hidden_states=None if first.hidden_states is None else tuple(
            stack([o.hidden_states[layer] for o in outputs]) for layer in range(len(first.hidden_states))),
        logits=None if first.logits is None else stack([o.logits for o in outputs]),
    )


class Wav2Vec2:
    """A loaded model: parameters plus config, called like a transformers model.

    >>> out = model(input_values, attention_mask=mask)   # doctest: +SKIP
    >>> out.last_hidden_state.shape                       # [B, T, D]
    """

    def __init__(self, params, config: Config, vocab=None, metadata=None):
        self.params = params
        self.config = config
        self.vocab = vocab
        self.metadata = metadata or {}
        self.language = None  # MMS models: whose adapters and head are loaded (npw2v2.languages)
        self.languages_source = None  # MMS models: where other languages' adapters come from

    def __call__(self, input_values, attention_mask=None, output_hidden_states=False,
                 norm_over_padding=False, trace=_untraced, mask_time_indices=None, items_alone=None) -> Output:
        return forward(self.params, self.config, input_values, attention_mask,
                       output_hidden_states, norm_over_padding, trace, mask_time_indices, items_alone)

    @property
    def kind(self) -> str:
        """The transformers class this model is: Wav2Vec2Model, Wav2Vec2ForCTC, ...ForPreTraining, ..."""
        return model_kind(self.config, self.params)

    @property
    def has_ctc_head(self) -> bool:
        return "lm_head" in self.params

    @property
    def labels(self) -> list[str]:
        """A classifier's label names by label id (config.json's id2label)."""
        return self.config.labels

    @property
    def languages(self) -> list[str]:
        """MMS models: the languages whose adapters can be loaded with set_language."""
        from .languages import available

        return available(self)

    def set_language(self, language: str) -> None:
        """MMS models: swap in a language's attention adapters, CTC head and vocabulary."""
        from .languages import set_language

        set_language(self, language)

    @property
    def xp(self):
        """The array module the parameters live in (numpy, or cupy on a GPU): inputs follow it."""
        return get_xp(self.params["feature_projection"]["projection"]["weight"])

    @property
    def preprocessor(self) -> dict:
        """The feature extractor's settings (preprocessor_config.json), or {} when unknown."""
        return self.metadata.get("preprocessor") or {}

    @property
    def sampling_rate(self) -> int:
        return int(self.preprocessor.get("sampling_rate", 16000))

    @property
    def do_normalize(self) -> bool:
        """Whether inputs are normalised per utterance; transformers' feature extractor defaults to yes."""
        return bool(self.preprocessor.get("do_normalize", True))

    @property
    def word_delimiter(self) -> str:
        return (self.metadata.get("tokenizer") or {}).get("word_delimiter_token", "|")

    @property
    def id_to_token(self) -> list[str]:
        """The vocabulary as a list indexed by token id."""
        tokens = [""] * (max(self.vocab.values()) + 1 if self.vocab else 0)
        for token, i in (self.vocab or {}).items():
            tokens[i] = token
        return tokens

    def transcribe(self, inputs, batch_size: int = 8, timestamps: bool = False, **options):
        """Text of each file or 1-d array (see npw2v2.pipeline.transcribe)."""
        from .pipeline import transcribe

        return transcribe(self, inputs, batch_size=batch_size, timestamps=timestamps, **options)

    def embed(self, inputs, layers=None, batch_size: int = 8, **options):
        """Hidden states of each file or 1-d array (see npw2v2.pipeline.embed)."""
        from .pipeline import embed

        return embed(self, inputs, layers=layers, batch_size=batch_size, **options)

    def contrastive_logits(self, out: Output, negative_indices):
        """Pretraining's scores of each frame's target against negatives: [1 + N, B, T] (npw2v2.heads)."""
        return contrastive_logits(out.projected_states, out.projected_quantized_states, negative_indices,
                                  self.config.contrastive_logits_temperature, out.codevector_ids)

    def classify(self, inputs, batch_size: int = 8, **options):
        """Label scores of each file or 1-d array (see npw2v2.pipeline.classify)."""
        from .pipeline import classify

        return classify(self, inputs, batch_size=batch_size, **options)

    def __repr__(self):
        c = self.config
        head = HEAD_NAMES[self.kind] + (f", language {self.language}" if self.language else "")
        return (f"Wav2Vec2({c.num_hidden_layers} layers, D={c.hidden_size}, C={c.conv_dim[-1]}, "
                f"{'pre' if c.do_stable_layer_norm else 'post'}-LN, {c.feat_extract_norm} norm, {head})")
