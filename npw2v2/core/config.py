"""The model configuration: the Hugging Face ``config.json`` keys that inference needs.

Field names are the Hugging Face keys, so a ``config.json`` loads with
``Config.from_dict(json.load(f))``; keys that inference does not use (dropouts,
masking probabilities, training switches, ...) are ignored. Defaults are those of
``transformers.Wav2Vec2Config``, i.e. the wav2vec2-base architecture.

A config file is untrusted. Every Config is checked when made (``check_fields``, the one place
for it): each field's type (whole numbers are ints, not bools, floats, strings or null), its
range (sizes >= 1 and below plausible bounds, ``MAX_*``) and the fields' consistency (heads
divide the width, ...). A ValueError names the key: "config: num_hidden_layers must be ...".
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------
# Plausible bounds. A config.json is untrusted: its numbers decide how many tensors are
# expected and how big the arrays of a forward pass are, so nothing beyond these is accepted.
# Each bound is far (at least 10x) above the largest value of any published wav2vec 2.0
# checkpoint, so only a careless or hostile file meets one; the tensors' own shapes are
# compared with the config's counts besides (npw2v2.io.weights.count_problems).

MAX_LAYERS = 1_000  # num_hidden_layers: 48 in the deepest published models (xls-r-1b, xls-r-2b, mms-1b); 20x
MAX_WIDTH = 65_536  # hidden_size and the other widths: 1920 is the widest published (xls-r-2b); 34x
MAX_FEED_FORWARD = 262_144  # intermediate_size: 7680 (xls-r-2b) is the largest published; 34x
MAX_HEADS = 1_024  # num_attention_heads: 16 in large models (xls-r-2b included); 64x
MAX_CONV_LAYERS = 100  # len(conv_dim): 7 in every published model (len(tdnn_dim): 5); 14x
MAX_CONV_KERNEL = 1_024  # conv_kernel, adapter_kernel_size, tdnn_kernel and tdnn_dilation: 10 (the first conv
#                         layer), 3 (adapter), 5 and 3 (TDNN); 100x
MAX_CONV_STRIDE = 1_024  # conv_stride and adapter_stride: 5 (the first conv layer), 2 (adapter); 200x
MAX_POS_KERNEL = 4_096  # num_conv_pos_embeddings: 128 in every published model; 32x
MAX_VOCAB = 1_000_000  # vocab_size (and pad_token_id): characters, up to ~21k (Chinese CTC models reusing
#                        BERT's 21128-token vocabulary); 47x
MAX_LABELS = 100_000  # num_labels, from which id2label is built before any tensor is seen: 4017
#                      (mms-lid-4017 languages), 7205 (VoxCeleb1+2 speakers); 13x
MAX_CODEVECTORS = 65_536  # num_codevectors_per_group: 320 in every published model; 200x
MAX_CODEVECTOR_GROUPS = 1_024  # num_codevector_groups: 2 in every published model; 512x
MAX_ADAPTER_LAYERS = 100  # num_adapter_layers: transformers' default 3; 33x
MAX_BUCKETS = 100_000  # WavLM's num_buckets: 320 in every published model; 312x
MAX_BUCKET_DISTANCE = 1_000_000  # WavLM's max_bucket_distance, in frames: 800 published; 1250x
MAX_SAMPLES = 10_000_000  # receptive field and (output) frame stride, in samples: 400 and 320 for every
#                           published encoder (2560 with a 3-layer down-sampling adapter); 10 minutes at
#                           16 kHz, far past anything a model could be fed in one piece


@dataclass(frozen=True)
class Config:
    # Convolutional feature encoder (fairseq: conv_feature_layers, extractor_mode, conv_bias).
    conv_dim: tuple[int, ...] = (512,) * 7  # C of each layer; base and large: 512
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False  # base: False, large-lv60 / XLS-R: True
    feat_extract_norm: str = "group"  # "group" (base) or "layer" (large-lv60, XLS-R)
    feat_extract_activation: str = "gelu"  # also used by the positional conv
    # Transformer (fairseq: encoder_embed_dim, encoder_layers, encoder_attention_heads, ...).
    hidden_size: int = 768  # D; base 768, large 1024
    num_hidden_layers: int = 12  # base 12, large 24
    num_attention_heads: int = 12  # H; base 12, large 16
    intermediate_size: int = 3072  # F; base 3072, large 4096
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False  # pre-LN (fairseq layer_norm_first); large-lv60, XLS-R
    # HuBERT (npw2v2.core.hubert): the projection's LayerNorm may be absent; the positional conv may
    # batch-norm its input instead of weight-norming its kernel. wav2vec 2.0 is always True / False.
    feat_proj_layer_norm: bool = True
    conv_pos_batch_norm: bool = False
    # data2vec-audio (npw2v2.core.data2vec_audio): num_conv_pos_embeddings convs of this kernel, stacked.
    conv_pos_kernel_size: int = 19
    # WavLM (npw2v2.core.wavlm): the relative position buckets of its attention bias (fairseq:
    # num_buckets, max_distance); 320 and 800 in every published model.
    num_buckets: int = 320
    max_bucket_distance: int = 800
    # Wav2Vec2-Conformer (npw2v2.core.conformer): where positions enter each layer's attention, "relative"
    # (Transformer-XL's, rel-pos-large), "rotary" (rope-large) or null (none), the rotary angles' base,
    # and the conv module's depthwise kernel (fairseq: pos_enc_type rel_pos / rope, depthwise_conv_kernel_size).
    position_embeddings_type: str | None = "relative"
    rotary_embedding_base: float = 10000.0
    conv_depthwise_kernel_size: int = 31
    # w2v-BERT 2.0 (npw2v2.core.w2v_bert): its input width (stacked filter banks, 2 x 80), the clipping of
    # its Shaw-style "relative_key" offsets (keys at most left_max frames before, right_max after the query),
    # its adapter layers' feed-forward activation, and the half-step feed-forward before the adapter.
    feature_projection_input_dim: int = 160
    left_max_position_embeddings: int = 64
    right_max_position_embeddings: int = 8
    adapter_act: str = "relu"
    use_intermediate_ffn_before_adapter: bool = False
    # Positional convolution (fairseq: conv_pos, conv_pos_groups); the conformer has it but never runs it.
    num_conv_pos_embeddings: int = 128  # K; even K drops the last output frame
    num_conv_pos_embedding_groups: int = 16
    # Heads.
    vocab_size: int = 32  # V of the CTC head
    architectures: tuple[str, ...] = ()  # the head: Wav2Vec2ForCTC, ...ForPreTraining, ...ForSequenceClassification, ...
    pad_token_id: int = 0  # the CTC blank in Hugging Face checkpoints
    model_type: str = "wav2vec2"
    # Pretraining quantizer and projections (fairseq: latent_vars, latent_groups, latent_dim or
    # final_dim, final_dim, logit_temp). base: 320 x 2 codevectors, 256 wide; large: 768.
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    codevector_dim: int = 256  # the concatenated group codevectors
    proj_codevector_dim: int = 256  # project_q and project_hid outputs
    contrastive_logits_temperature: float = 0.1
    # Classification heads: label names by id (config.json: {"0": "yes", ...}), kept as (id, name) pairs.
    id2label: tuple[tuple[int, str], ...] = ((0, "LABEL_0"), (1, "LABEL_1"))
    classifier_proj_size: int = 256  # the sequence classifier's projector width
    use_weighted_layer_sum: bool = False  # classify a learned softmax-weighted sum of all hidden states
    # X-vector speaker heads (npw2v2.core.xvector): TDNN layers (dilated convs over time, no padding),
    # statistics pooling, embeddings of xvector_output_dim. transformers' defaults (and the -sv models').
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)  # each TDNN layer's output width
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512  # the speaker embedding's width
    # Down-sampling adapter after the encoder: Linear(D -> output_hidden_size) + LayerNorm when the
    # widths differ, then num_adapter_layers of Conv1d(k, stride, padding 1) + GLU.
    add_adapter: bool = False
    output_hidden_size: int | None = None  # None: hidden_size
    num_adapter_layers: int = 3
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    # MMS attention adapters in pre-LN layers (LayerNorm, Linear(D -> dim), ReLU, Linear(dim -> D)).
    adapter_attn_dim: int | None = None

    def __post_init__(self):
        # Every field checked and normalised (JSON lists to tuples, so the config stays hashable
        # and immutable); a ValueError names the first bad key. See check_fields.
        for name, value in check_fields(self).items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Build from a ``config.json`` dict, ignoring keys inference does not use.

        Raises ValueError naming the key and the problem ("config: num_hidden_layers must be
        ..."); callers put the file's name in front.
        """
        if not isinstance(d, dict):
            raise ValueError(f"config: must be a JSON object of keys and values, got {_kind(d)}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if d.get("model_type") in ("wav2vec2-conformer", "wav2vec2-bert"):  # null in Wav2Vec2ConformerConfig's and
            for key in ("vocab_size", "pad_token_id"):  # Wav2Vec2BertConfig's defaults (no CTC head to size); other
                if key in values and values[key] is None:  # families' configs must hold numbers
                    del values[key]
        if d.get("model_type") == "wav2vec2-bert":  # Wav2Vec2BertConfig's defaults (w2v-bert-2.0's) where they differ
            values = {**W2V_BERT_DEFAULTS, **values}
        if d.get("model_type") == "data2vec-audio" and "feat_extract_norm" not in d:
            values["feat_extract_norm"] = "layer"  # its conv layers are always layer-normed; the key is not in its config
        if "id2label" not in d and "num_labels" in d:  # as transformers names them
            count = whole("num_labels", d["num_labels"], 1, MAX_LABELS)
            values["id2label"] = {i: f"LABEL_{i}" for i in range(count)}
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        """The config.json form: lists for tuples, and id2label as {"0": name, ...}."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d["id2label"] = {str(i): name for i, name in self.id2label}
        return d

    @property
    def labels(self) -> list[str]:
        """The classification labels' names, indexed by label id."""
        return [name for _, name in self.id2label]

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def has_ctc_head(self) -> bool:
        return any(a.endswith("ForCTC") for a in self.architectures)

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for the standard encoder: 25 ms at 16 kHz).

        A down-sampling adapter's convs (padding 1) make a frame of any input with the
        default kernel of 3; wider kernels need more frames.
        """
        if self.model_type == "wav2vec2-bert":  # two 25 ms frames 10 ms apart (npw2v2.core.fbank.MIN_SAMPLES)
            return W2V_BERT_MIN_SAMPLES
        return receptive_field(self.conv_kernel, self.conv_stride, self.num_adapter_layers if self.add_adapter else 0,
                               self.adapter_kernel_size, self.adapter_stride)

    @property
    def frame_stride(self) -> int:
        """Samples between consecutive frames (320 for the standard encoder: 20 ms at 16 kHz; w2v-BERT's
        stacked pairs of 10 ms filter-bank frames too)."""
        if self.model_type == "wav2vec2-bert":
            return W2V_BERT_FRAME_STRIDE
        return _product(self.conv_stride)

    @property
    def adapter_width(self) -> int:
        """The down-sampling adapter's output width (output_hidden_size, which defaults to D)."""
        return self.output_hidden_size or self.hidden_size

    @property
    def output_frame_stride(self) -> int:
        """Samples between consecutive output frames: the down-sampling adapter multiplies frame_stride."""
        return self.frame_stride * (self.adapter_stride ** self.num_adapter_layers if self.add_adapter else 1)


# ---------------------------------------------------------------------------
# Checking the fields


def show(value) -> str:
    """A value for an error message, cut short: a hostile file's value may be anything."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr
        return "a number too large to print"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value) -> str:
    """What JSON calls a value's type, for messages about the wrong one."""
    names = {dict: "an object", list: "an array", tuple: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return f"{names.get(type(value), type(value).__name__)} ({show(value)})"


def whole(key: str, value, low: int, high: int) -> int:
    """An int in [low, high]: not a bool, float, string or None. Raises ValueError naming the key."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"config: {key} must be a whole number >= {low}, got {show(value)}")
    if value > high:
        raise ValueError(f"config: {key} must be at most {high} (far beyond any published model), got {show(value)}")
    return int(value)


def _optional_whole(key: str, value, low: int, high: int) -> int | None:
    return None if value is None else whole(key, value, low, high)


def _number(key: str, value, high: float) -> float:
    """A finite float in (0, high]; ints are accepted (JSON writes 1.0 as 1 at times)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not 0 < value <= high:
        raise ValueError(f"config: {key} must be a finite number above 0 and at most {high:g}, got {show(value)}")
    return float(value)


def _flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"config: {key} must be true or false, got {_kind(value)}")
    return value


def _text(key: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"config: {key} must be a non-empty string, got {_kind(value)}")
    return value


def _wholes(key: str, value, high: int) -> tuple[int, ...]:
    """A list of 1 to MAX_CONV_LAYERS ints in [1, high]."""
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_CONV_LAYERS:
        raise ValueError(f"config: {key} must be a list of 1 to {MAX_CONV_LAYERS} whole numbers, got {_kind(value)}")
    return tuple(whole(f"{key}[{i}]", v, 1, high) for i, v in enumerate(value))


def _choice(key: str, value, choices: tuple):
    """One of ``choices`` (None among them for JSON null)."""
    if value not in choices or isinstance(value, bool):
        raise ValueError(f"config: {key} must be one of {', '.join(map(json.dumps, choices))}, got {show(value)}")
    return value


# The conformer's position_embeddings_type values transformers knows ("relative_key": w2v-BERT's only).
POSITION_EMBEDDINGS = ("relative", "rotary", None, "relative_key")


def _names(key: str, value) -> tuple[str, ...]:
    if value is None:  # "architectures": null in some configs
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"config: {key} must be a list of strings, got {_kind(value)}")
    return tuple(value)


# Each field's check: (key, value) -> the normalised value, or ValueError naming the key.
FIELD_CHECKS = {
    "conv_dim": lambda k, v: _wholes(k, v, MAX_WIDTH),
    "conv_kernel": lambda k, v: _wholes(k, v, MAX_CONV_KERNEL),
    "conv_stride": lambda k, v: _wholes(k, v, MAX_CONV_STRIDE),
    "conv_bias": _flag,
    "feat_extract_norm": _text,
    "feat_extract_activation": _text,
    "hidden_size": lambda k, v: whole(k, v, 1, MAX_WIDTH),
    "num_hidden_layers": lambda k, v: whole(k, v, 0, MAX_LAYERS),  # 0: the encoder without layers runs too
    "num_attention_heads": lambda k, v: whole(k, v, 1, MAX_HEADS),
    "intermediate_size": lambda k, v: whole(k, v, 1, MAX_FEED_FORWARD),
    "hidden_act": _text,
    "layer_norm_eps": lambda k, v: _number(k, v, 1.0),  # a variance floor: 1e-5 in every published model
    "do_stable_layer_norm": _flag,
    "num_conv_pos_embeddings": lambda k, v: whole(k, v, 1, MAX_POS_KERNEL),
    "num_conv_pos_embedding_groups": lambda k, v: whole(k, v, 1, MAX_WIDTH),
    "vocab_size": lambda k, v: whole(k, v, 1, MAX_VOCAB),
    "architectures": _names,
    "pad_token_id": lambda k, v: whole(k, v, 0, MAX_VOCAB),
    "model_type": lambda k, v: _model_type(v),
    "feat_proj_layer_norm": _flag,
    "conv_pos_batch_norm": _flag,
    "conv_pos_kernel_size": lambda k, v: whole(k, v, 1, MAX_POS_KERNEL),
    "num_buckets": lambda k, v: whole(k, v, 4, MAX_BUCKETS),  # fewer than 4 leaves no exact bucket: log(d / 0)
    "max_bucket_distance": lambda k, v: whole(k, v, 1, MAX_BUCKET_DISTANCE),
    "position_embeddings_type": lambda k, v: _choice(k, v, POSITION_EMBEDDINGS),
    "rotary_embedding_base": lambda k, v: _number(k, v, 1e12),  # 10000 published
    "conv_depthwise_kernel_size": lambda k, v: whole(k, v, 1, MAX_CONV_KERNEL),  # 31 published
    "feature_projection_input_dim": lambda k, v: whole(k, v, 1, MAX_WIDTH),  # 160 published
    "left_max_position_embeddings": lambda k, v: whole(k, v, 0, MAX_BUCKET_DISTANCE),  # 64 published
    "right_max_position_embeddings": lambda k, v: whole(k, v, 0, MAX_BUCKET_DISTANCE),  # 8 published
    "adapter_act": _text,
    "use_intermediate_ffn_before_adapter": _flag,
    "num_codevectors_per_group": lambda k, v: whole(k, v, 1, MAX_CODEVECTORS),
    "num_codevector_groups": lambda k, v: whole(k, v, 1, MAX_CODEVECTOR_GROUPS),
    "codevector_dim": lambda k, v: whole(k, v, 1, MAX_WIDTH),
    "proj_codevector_dim": lambda k, v: whole(k, v, 1, MAX_WIDTH),
    "contrastive_logits_temperature": lambda k, v: _number(k, v, 1e6),  # divides the logits: 0.1 published
    "id2label": lambda k, v: _label_pairs(v),
    "classifier_proj_size": lambda k, v: whole(k, v, 1, MAX_WIDTH),
    "use_weighted_layer_sum": _flag,
    "tdnn_dim": lambda k, v: _wholes(k, v, MAX_WIDTH),
    "tdnn_kernel": lambda k, v: _wholes(k, v, MAX_CONV_KERNEL),
    "tdnn_dilation": lambda k, v: _wholes(k, v, MAX_CONV_KERNEL),
    "xvector_output_dim": lambda k, v: whole(k, v, 1, MAX_WIDTH),
    "add_adapter": _flag,
    "output_hidden_size": lambda k, v: _optional_whole(k, v, 1, MAX_WIDTH),
    "num_adapter_layers": lambda k, v: whole(k, v, 0, MAX_ADAPTER_LAYERS),
    "adapter_kernel_size": lambda k, v: whole(k, v, 1, MAX_CONV_KERNEL),
    "adapter_stride": lambda k, v: whole(k, v, 1, MAX_CONV_STRIDE),
    "adapter_attn_dim": lambda k, v: _optional_whole(k, v, 1, MAX_WIDTH),
}


# config.json's model_type: the families npw2v2 runs, and those of the family it knows but does not run yet.
# UniSpeech and UniSpeech-SAT run wav2vec 2.0's encoder unchanged at inference (their own parts are
# pretraining heads, which npw2v2 does not run: npw2v2.core.heads.NOT_SUPPORTED).
MODEL_TYPES = ("wav2vec2", "hubert", "data2vec-audio", "unispeech", "unispeech-sat", "wavlm", "wav2vec2-conformer",
               "wav2vec2-bert")
NOT_YET = {
    "sew": "SEW (its squeezed transformer)", "sew-d": "SEW-D (its disentangled attention)",
}


def _model_type(value) -> str:
    """One of MODEL_TYPES; a ValueError naming any other (the family members not run yet by name)."""
    value = _text("model_type", value)
    if value in NOT_YET:
        raise ValueError(f"config: model_type {value!r}: npw2v2 does not run {NOT_YET[value]} models yet; "
                         f"it runs {', '.join(MODEL_TYPES)}")
    if value not in MODEL_TYPES:
        raise ValueError(f"config: model_type {show(value)} is not a model npw2v2 knows; it runs "
                         f"{', '.join(MODEL_TYPES)}")
    return value


def check_fields(cfg: Config) -> dict:
    """Every field of a config checked, by type, range and consistency: the normalised values.

    The one place a config's values are validated; raises ValueError naming the first bad key.
    """
    values = {f.name: FIELD_CHECKS[f.name](f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if not len(values["conv_dim"]) == len(values["conv_kernel"]) == len(values["conv_stride"]):
        raise ValueError(
            "config: conv_dim, conv_kernel and conv_stride must have the same length, got "
            f"{len(values['conv_dim'])}, {len(values['conv_kernel'])} and {len(values['conv_stride'])}"
        )
    if values["feat_extract_norm"] not in ("group", "layer"):
        raise ValueError(f"config: feat_extract_norm must be 'group' or 'layer', got {show(values['feat_extract_norm'])}")
    if values["model_type"] != "hubert" and (not values["feat_proj_layer_norm"] or values["conv_pos_batch_norm"]):
        raise ValueError("config: feat_proj_layer_norm false and conv_pos_batch_norm true are HuBERT's "
                         f"(model_type 'hubert'), not {values['model_type']!r}'s")
    if values["model_type"] == "data2vec-audio" and (values["feat_extract_norm"] != "layer"
                                                     or values["do_stable_layer_norm"]):
        raise ValueError("config: data2vec-audio layer-norms every conv layer and its transformer is post-LN: "
                         "feat_extract_norm must be 'layer' and do_stable_layer_norm false")
    if not len(values["tdnn_dim"]) == len(values["tdnn_kernel"]) == len(values["tdnn_dilation"]):
        raise ValueError(
            "config: tdnn_dim, tdnn_kernel and tdnn_dilation must have the same length, got "
            f"{len(values['tdnn_dim'])}, {len(values['tdnn_kernel'])} and {len(values['tdnn_dilation'])}"
        )
    if values["model_type"] in ("unispeech", "unispeech-sat") and (values["add_adapter"]
                                                                   or values["adapter_attn_dim"] is not None):
        raise ValueError(f"config: add_adapter and adapter_attn_dim are wav2vec 2.0's adapters, which "
                         f"{values['model_type']!r} models do not have in transformers")
    if values["max_bucket_distance"] <= values["num_buckets"] // 4:
        # WavLM's log-spaced buckets run from num_buckets // 4 to max_bucket_distance: the log of their ratio divides
        raise ValueError(f"config: max_bucket_distance {values['max_bucket_distance']} must be above num_buckets // 4 "
                         f"({values['num_buckets'] // 4}), where the log-spaced buckets start")
    if values["model_type"] == "wavlm" and values["adapter_attn_dim"] is not None:
        raise ValueError("config: adapter_attn_dim (MMS attention adapters) is wav2vec 2.0's; WavLM's layers have none")
    if values["position_embeddings_type"] == "relative_key" and values["model_type"] != "wav2vec2-bert":
        raise ValueError("config: position_embeddings_type 'relative_key' is w2v-BERT's (model_type 'wav2vec2-bert')")
    if values["model_type"] == "wav2vec2-bert" and values["add_adapter"] \
            and values["adapter_kernel_size"] // 2 != values["adapter_stride"] // 2:
        # transformers pads the adapter's convs by stride // 2 but counts their frames with kernel // 2
        raise ValueError(f"config: w2v-BERT's adapter convs pad adapter_stride // 2 frames and its masks count "
                         f"adapter_kernel_size // 2: they must agree, got kernel {values['adapter_kernel_size']} "
                         f"and stride {values['adapter_stride']}")
    if values["use_intermediate_ffn_before_adapter"] and not (values["model_type"] == "wav2vec2-bert"
                                                              and values["add_adapter"]):
        raise ValueError("config: use_intermediate_ffn_before_adapter is w2v-BERT's, and needs add_adapter")
    if values["model_type"] in ("wav2vec2-conformer", "wav2vec2-bert"):
        if values["conv_depthwise_kernel_size"] % 2 == 0:
            raise ValueError(f"config: conv_depthwise_kernel_size must be odd (the conv module pads (K - 1) / 2 "
                             f"each side), got {values['conv_depthwise_kernel_size']}")
        if values["adapter_attn_dim"] is not None:
            raise ValueError("config: adapter_attn_dim (MMS attention adapters) is wav2vec 2.0's; "
                             "the conformer's layers have none")
        head_dim = values["hidden_size"] // values["num_attention_heads"]
        if values["position_embeddings_type"] == "rotary" and head_dim % 2:
            raise ValueError(f"config: rotary positions turn pairs of a head's channels: hidden_size / "
                             f"num_attention_heads must be even, got {head_dim}")
    hidden = values["hidden_size"]
    divisors = ("num_attention_heads",) if values["model_type"] == "wav2vec2-bert" else (  # no positional conv
        "num_attention_heads", "num_conv_pos_embedding_groups")
    for divisor in divisors:
        if hidden % values[divisor]:
            raise ValueError(f"config: hidden_size {hidden} is not divisible by {divisor} {values[divisor]}")
    if values["codevector_dim"] % values["num_codevector_groups"]:
        raise ValueError(f"config: codevector_dim {values['codevector_dim']} is not divisible by "
                         f"num_codevector_groups {values['num_codevector_groups']}")
    # The encoder's geometry, in samples: bounded so that no length computed from it is absurd.
    adapter_layers = values["num_adapter_layers"] if values["add_adapter"] else 0
    frame_stride = _product(values["conv_stride"])
    geometry = {
        "receptive field": receptive_field(values["conv_kernel"], values["conv_stride"], adapter_layers,
                                           values["adapter_kernel_size"], values["adapter_stride"]),
        "frame stride": frame_stride,
        "output frame stride": frame_stride * values["adapter_stride"] ** adapter_layers,
    }
    for what, samples in geometry.items():
        if samples > MAX_SAMPLES:
            keys = "conv_kernel and conv_stride" if what == "receptive field" else "conv_stride"
            raise ValueError(f"config: {keys}{' with the adapter' if adapter_layers else ''} make a {what} of "
                             f"{show(samples)} samples, more than {MAX_SAMPLES}")
    return values


def _product(factors) -> int:
    result = 1
    for n in factors:
        result *= n
    return result


def receptive_field(kernels, strides, adapter_layers: int = 0, adapter_kernel: int = 3, adapter_stride: int = 2) -> int:
    """Samples needed for one output frame (Config.receptive_field)."""
    samples = 1
    for _ in range(adapter_layers):
        samples = max(1, (samples - 1) * adapter_stride + adapter_kernel - 2)
    for k, s in zip(reversed(kernels), reversed(strides)):
        samples = (samples - 1) * s + k
    return samples


def _label_pairs(id2label) -> tuple[tuple[int, str], ...]:
    """config.json's id2label ({"0": "yes", ...}, keys as strings or ints) as (id, name) pairs 0, 1, ...."""
    pairs = id2label.items() if isinstance(id2label, dict) else id2label
    try:
        pairs = tuple(sorted((int(i), str(name)) for i, name in pairs))
    except (TypeError, ValueError):
        raise ValueError(f"config: id2label must map label ids to names, got {id2label!r}") from None
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise ValueError(f"config: id2label must number its labels 0, 1, 2, ..., got ids {[i for i, _ in pairs]}")
    return pairs


# The published architectures, for random-weight models (benchmarks, explain).
BASE = Config()
HUBERT_BASE = Config(model_type="hubert")  # hubert-base-ls960: HubertConfig's defaults, wav2vec2-base's widths
DATA2VEC_AUDIO_BASE = Config(model_type="data2vec-audio", feat_extract_norm="layer", num_conv_pos_embeddings=5,
                             conv_pos_kernel_size=19)  # data2vec-audio-base: Data2VecAudioConfig's defaults
WAVLM_BASE_PLUS = Config(model_type="wavlm")  # wavlm-base(-plus): WavLMConfig's defaults, post-LN, group norm
# wav2vec2-conformer-rel-pos-large: layer-normed conv layers with bias, 24 conformer blocks of 1024, swish,
# relative positions, depthwise kernel 31 (golden/record_conformer.py records it)
CONFORMER_LARGE = Config(model_type="wav2vec2-conformer", hidden_size=1024, num_hidden_layers=24,
                         num_attention_heads=16, intermediate_size=4096, conv_bias=True, feat_extract_norm="layer",
                         do_stable_layer_norm=True, hidden_act="swish", position_embeddings_type="relative",
                         conv_depthwise_kernel_size=31)
# w2v-BERT 2.0 (npw2v2.core.w2v_bert): Wav2Vec2BertConfig's defaults, which are facebook/w2v-bert-2.0's
# architecture: 24 conformer layers of 1024 over 160 filter-bank features, swish, Shaw's relative_key
# positions clipped to 64 frames left and 8 right, causal depthwise kernel 31 (golden/record_w2v_bert.py)
W2V_BERT_DEFAULTS = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                     "hidden_act": "swish", "classifier_proj_size": 768, "num_adapter_layers": 1,
                     "position_embeddings_type": "relative_key"}
W2V_BERT_FRAME_STRIDE = 320  # samples per feature vector: two 10 ms filter-bank frames
W2V_BERT_MIN_SAMPLES = 560  # the shortest input with a feature vector (npw2v2.core.fbank.MIN_SAMPLES)
LARGE = Config(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
)
W2V_BERT = Config(model_type="wav2vec2-bert", **W2V_BERT_DEFAULTS)
