"""npw2v2's weights in PyTorch: a transformers model's state dict from npw2v2's tensors.

For ``npw2v2 bench --vs-torch`` and golden/record.py, which run transformers on the same
weights as npw2v2. Needs torch, imported only when these functions run.
"""
from __future__ import annotations

import numpy as np

from ..io.weights import without_task_prefix


def torch_state_dict(model, weights: dict) -> dict:
    """npw2v2's canonical weights under a transformers model's own state-dict names (torch tensors).

    The positional conv is weight-normed there: original0 is g = ||W|| over dims (0, 1), original1 is v = W.
    """
    import torch

    state = {}
    for key, current in model.state_dict().items():
        name = without_task_prefix(key)
        if name in ("masked_spec_embed", "objective.weight") or name.endswith(("num_batches_tracked", "inv_freq")) \
                or name.startswith("encoder.pos_conv_embed.") and "encoder.pos_conv_embed.conv.weight" not in weights:
            # training-only (the x-vector loss's weights among them), computed (the conformer's rotary
            # frequencies) or never run (the conformer's positional conv): the model's own
            value = current.numpy()
        elif ".parametrizations.weight." in name:
            w = weights[name.split(".parametrizations.")[0] + ".weight"]
            value = weight_norm_g(w) if name.endswith("original0") else w
        else:
            value = weights[name]
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    return state


# Each model_type's transformers config class and bare model class.
FAMILY_CLASSES = {"wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"), "hubert": ("HubertConfig", "HubertModel"),
                  "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
                  "unispeech": ("UniSpeechConfig", "UniSpeechModel"),
                  "unispeech-sat": ("UniSpeechSatConfig", "UniSpeechSatModel"), "wavlm": ("WavLMConfig", "WavLMModel"),
                  "wav2vec2-conformer": ("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerModel"),
                  "wav2vec2-bert": ("Wav2Vec2BertConfig", "Wav2Vec2BertModel")}


def bare_model_class(model_type: str):
    """transformers' encoder class of a model_type (Wav2Vec2Model, HubertModel, Data2VecAudioModel)."""
    import transformers

    return getattr(transformers, FAMILY_CLASSES[model_type][1])


def transformers_model(cls, config: dict, weights: dict, **options):
    """A transformers model of class ``cls`` (Wav2Vec2ForCTC, HubertModel, ...) for a config.json dict, holding npw2v2's
    tensors (canonical names, as npw2v2.core.params.random_weights or a converted file has them).

    ``options`` go to the model's constructor (attn_implementation="eager", ...).
    """
    import transformers

    config_class = getattr(transformers, FAMILY_CLASSES[config.get("model_type", "wav2vec2")][0])
    if "rotary_embedding_base" in config and float(config["rotary_embedding_base"]).is_integer():
        # the conformers' strict configs take an int; npw2v2's Config holds a float
        config = {**config, "rotary_embedding_base": int(config["rotary_embedding_base"])}
    model = cls._from_config(config_class(**config), **options)
    model.load_state_dict(torch_state_dict(model, weights), strict=True)
    return model


def weight_norm_g(w: np.ndarray) -> np.ndarray:
    """The magnitude part of weight norm over dims (0, 1): [D, D / groups, K] -> [1, 1, K]."""
    return np.sqrt((w * w).sum(axis=(0, 1), keepdims=True))
