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
    architectures: tuple[str, ...] = ()
    pad_token_id: int = 0  # the CTC blank in Hugging Face checkpoints
    model_type: str = "wav2vec2"

    def __post_init__(self):
        # JSON gives lists; keep tuples so the config stays hashable and immutable.
        for name in ("conv_dim", "conv_kernel", "conv_stride", "architectures"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
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

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Build from a ``config.json`` dict, ignoring keys inference does not use."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def has_ctc_head(self) -> bool:
        return any(a.endswith("ForCTC") for a in self.architectures)

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame (400 for the standard encoder: 25 ms at 16 kHz)."""
        samples = 1
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


# The two published architectures, for random-weight models (benchmarks, explain).
BASE = Config()
LARGE = Config(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
)
