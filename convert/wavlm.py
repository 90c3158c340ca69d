"""Original WavLM checkpoints (.pt) as microsoft/unilm's wavlm/WavLM.py saves them.

Such a file is a torch pickle of a plain dict: ``cfg``, the WavLMConfig fields as a dict of
plain values (fairseq's option names: encoder_layers, layer_norm_first, conv_feature_layers,
conv_pos, ..., and WavLM's relative_position_embedding, num_buckets, max_distance, gru_rel_pos),
and ``model``, the state dict. The encoder is wav2vec 2.0's under fairseq's names, so those
convert by convert/names.py; WavLM's attention adds three tensors, renamed here (WAVLM_TO_HF),
as transformers' convert_wavlm_original_pytorch_checkpoint_to_pytorch.py maps them. The
published files are pretrained encoders (no head): they become WavLMModel.
"""
from __future__ import annotations

import re

from npw2v2.core.config import Config

from .checkpoint import Checkpoint
from .errors import ConversionError
from .fairseq import _whole, plain
from .fairseq import hf_config as wav2vec2_config
from .names import fairseq_to_hf

# Whole-name rules for WavLM's own tensors, tried before fairseq's; \1 keeps the layer index.
WAVLM_TO_HF = [
    # encoder.layers.5.self_attn.grep_linear.weight [8, D/H] -> encoder.layers.5.attention.gru_rel_pos_linear.weight
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)", r"encoder.layers.\1.attention.gru_rel_pos_linear.\2"),
    # encoder.layers.5.self_attn.grep_a [1, H, 1, 1] -> encoder.layers.5.attention.gru_rel_pos_const
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    # encoder.layers.0.self_attn.relative_attention_bias.weight [num_buckets, H] (layer 0 only)
    #   -> encoder.layers.0.attention.rel_attn_embed.weight
    (r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight",
     r"encoder.layers.\1.attention.rel_attn_embed.weight"),
]
_RULES = [(re.compile(pattern + r"\Z"), repl) for pattern, repl in WAVLM_TO_HF]
# The config fields only WavLM's config has, and the tensor names only its attention has: either marks a file as WavLM's.
WAVLM_FIELDS = ("relative_position_embedding", "gru_rel_pos")
WAVLM_TENSORS = re.compile(r"encoder\.layers\.\d+\.self_attn\.(grep_linear|grep_a|relative_attention_bias)")
# unilm's WavLMConfig defaults, for a cfg that leaves a field out (its released files set all four).
DEFAULTS = {"relative_position_embedding": False, "gru_rel_pos": False, "num_buckets": 320, "max_distance": 1280}


def is_original(state: dict) -> bool:
    """Whether a checkpoint's top-level dict is an original WavLM's: a flat ``cfg`` with WavLM's fields, or its tensors."""
    cfg = state.get("cfg")
    return (isinstance(cfg, dict) and any(key in cfg for key in WAVLM_FIELDS)) or any(
        isinstance(name, str) and WAVLM_TENSORS.match(name) for name in state["model"])


def wavlm_to_hf(name: str) -> str | None:
    """The Hugging Face name of an original WavLM tensor name, or None. No fine-tuned (w2v_encoder.) names:
    the published WavLM files are pretrained encoders."""
    for pattern, repl in _RULES:
        if pattern.match(name):
            return pattern.sub(repl, name)
    return None if name.startswith("w2v_encoder.") else fairseq_to_hf(name)


def rename(weights: dict, source: str) -> dict:
    """Original names to Hugging Face names; any unknown name is an error, listed."""
    tensors, unknown = {}, []
    for name, value in weights.items():
        hf = wavlm_to_hf(name) if isinstance(name, str) else None
        if hf is None:
            unknown.append(str(name))
        else:
            tensors[hf] = value
    if unknown:
        raise ConversionError(f"{source}: tensors with no known Hugging Face name: {', '.join(sorted(unknown))}")
    return tensors


def hf_config(cfg: dict) -> dict:
    """The Hugging Face config.json (WavLMModel) of an original WavLMConfig dict; ConversionError naming the field."""
    cfg = {**DEFAULTS, **cfg}
    for field, what in (("relative_position_embedding", "the relative position bias"), ("gru_rel_pos", "its gate")):
        if cfg[field] is not True:
            raise ConversionError(f"the WavLM configuration's {field} is {cfg[field]!r:.60}: a WavLM without {what}, "
                                  "which transformers' WavLM (and npw2v2's) always has")
    config = wav2vec2_config({k: v for k, v in cfg.items() if k not in ("_name", "arch")}, None)
    for key in ("num_codevectors_per_group", "num_codevector_groups", "codevector_dim", "proj_codevector_dim",
                "contrastive_logits_temperature"):  # no quantizer in WavLM's files
        del config[key]
    config.update(model_type="wavlm", architectures=["WavLMModel"], num_buckets=_whole(cfg, "num_buckets", 320),
                  max_bucket_distance=_whole(cfg, "max_distance", 1280))
    try:
        Config.from_dict(config)
    except ValueError as e:
        option = {"max_bucket_distance": "max_distance", "num_buckets": "num_buckets"}
        named = [option[key] for key in option if key in str(e)]
        raise ConversionError(f"{e} (from WavLM's {', '.join(named)})" if named else str(e)) from None
    return config


def read_state(state: dict, source: str, sampling_rate: int) -> Checkpoint:
    """An original WavLM checkpoint, already unpickled (convert/fairseq.py reads the file), as a Checkpoint."""
    cfg = plain(state.get("cfg"))
    if not isinstance(cfg, dict):
        raise ConversionError(f"{source}: an original WavLM checkpoint without its 'cfg' dict of WavLMConfig fields")
    tensors = rename(state["model"], source)
    try:
        config = hf_config(cfg)
    except ConversionError as e:
        raise ConversionError(f"{source}: {e}") from None
    normalize = cfg.get("normalize", False) is True  # wavlm-large: True (per-utterance normalisation)
    preprocessor = {"do_normalize": normalize, "sampling_rate": sampling_rate, "feature_size": 1,
                    "padding_value": 0.0, "padding_side": "right", "return_attention_mask": normalize}
    return Checkpoint(tensors=tensors, config=config, source_format="wavlm-original", preprocessor=preprocessor)
