"""The model configuration: the Hugging Face ``config.json`` keys that inference needs.

Field names are the Hugging Face keys, so a ``config.json`` loads with
``Config.from_dict(json.load(f))``; keys that inference does not use (dropouts,
masking probabilities, training switches, ...) are ignored. Defaults are those of
``transformers.Wav2Vec2Config``, i.e. the wav2vec2-base architecture.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


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
    # Positional convolution (fairseq: conv_pos, conv_pos_groups).
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
        # JSON gives lists; keep tuples so the config stays hashable and immutable.
        for name in ("conv_dim", "conv_kernel", "conv_stride", "architectures"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        object.__setattr__(self, "id2label", _label_pairs(self.id2label))
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError(
                "config: conv_dim, conv_kernel and conv_stride must have the same length, got "
                f"{len(self.conv_dim)}, {len(self.conv_kernel)} and {len(self.conv_stride)}"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(
                f"config: feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}"
            )
        for divisor in ("num_attention_heads", "num_conv_pos_embedding_groups"):
            value = getattr(self, divisor)
            if value < 1 or self.hidden_size % value:
                raise ValueError(f"config: hidden_size {self.hidden_size} is not divisible by {divisor} {value}")

        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError(f"config: codevector_dim {self.codevector_dim} is not divisible by "
                             f"num_codevector_groups {self.num_codevector_groups}")

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Build from a ``config.json`` dict, ignoring keys inference does not use."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        if "id2label" not in d and isinstance(d.get("num_labels"), int):  # as transformers names them
            values["id2label"] = {i: f"LABEL_{i}" for i in range(d["num_labels"])}
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
        samples = 1
        for _ in range(self.num_adapter_layers if self.add_adapter else 0):
            samples = max(1, (samples - 1) * self.adapter_stride + self.adapter_kernel_size - 2)
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            samples = (samples - 1) * s + k
        return samples

    @property
    def frame_stride(self) -> int:
        """Samples between consecutive frames (320 for the standard encoder: 20 ms at 16 kHz)."""
        stride = 1
        for s in self.conv_stride:
            stride *= s
        return stride

    @property
    def adapter_width(self) -> int:
        """The down-sampling adapter's output width (output_hidden_size, which defaults to D)."""
        return self.output_hidden_size or self.hidden_size

    @property
    def output_frame_stride(self) -> int:
        """Samples between consecutive output frames: the down-sampling adapter multiplies frame_stride."""
        return self.frame_stride * (self.adapter_stride ** self.num_adapter_layers if self.add_adapter else 1)


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


# The two published architectures, for random-weight models (benchmarks, explain).
BASE = Config()
LARGE = Config(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
)
