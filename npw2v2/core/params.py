"""The parameters: which tensors a config needs, under which names, and as a nested dict.

Names are the Hugging Face state-dict names (``encoder.layers.3.attention.q_proj.weight``);
``unflatten`` turns them into the nested dict the blocks read,
``params["encoder"]["layers"][3]["attention"]["q_proj"]["weight"]``.
"""
from __future__ import annotations

import numpy as np

from . import conformer, data2vec_audio, w2v_bert, wavlm
from .adapters import attention_adapter_shapes, downsample_shapes
from .backend import get_xp
from .config import Config
from .heads import XVECTOR, head_shapes, model_kind
from .xvector import training_only_shapes


def expected_shapes(cfg: Config, kind: str | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor name a model of this config and kind (default: the config's) needs, with its shape."""
    kind = kind or model_kind(cfg)
    if cfg.model_type == "wav2vec2-bert":  # filter banks in, no conv encoder (npw2v2.core.w2v_bert)
        return {**w2v_bert.parameter_shapes(cfg), **head_shapes(cfg, kind)}
    shapes = {}

    def add(prefix, **named_shapes):
        for name, shape in named_shapes.items():
            shapes[f"{prefix}.{name}"] = shape

    channels_in = 1
    for i, (c, k) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
        layer = f"feature_extractor.conv_layers.{i}"
        add(f"{layer}.conv", weight=(c, channels_in, k))
        if cfg.conv_bias:
            add(f"{layer}.conv", bias=(c,))
        if cfg.feat_extract_norm == "layer" or i == 0:
            add(f"{layer}.layer_norm", weight=(c,), bias=(c,))
        channels_in = c

    c, d, f = cfg.conv_dim[-1], cfg.hidden_size, cfg.intermediate_size
    if cfg.feat_proj_layer_norm:
        add("feature_projection.layer_norm", weight=(c,), bias=(c,))
    add("feature_projection.projection", weight=(d, c), bias=(d,))
    pos_in = d // cfg.num_conv_pos_embedding_groups
    if cfg.conv_pos_batch_norm:  # HuBERT: a plain conv kernel after BatchNorm1d(D) (npw2v2.core.hubert)
        add("encoder.pos_conv_embed.batch_norm", weight=(d,), bias=(d,), running_mean=(d,), running_var=(d,))
    if cfg.model_type == "data2vec-audio":  # a stack of plain convs (npw2v2.core.data2vec_audio)
        shapes.update(data2vec_audio.positional_shapes(cfg))
    elif cfg.model_type != "wav2vec2-conformer":  # the conformer's is never run: optional (npw2v2.core.conformer)
        add("encoder.pos_conv_embed.conv", weight=(d, pos_in, cfg.num_conv_pos_embeddings), bias=(d,))
    add("encoder.layer_norm", weight=(d,), bias=(d,))
    for i in range(cfg.num_hidden_layers):
        if cfg.model_type == "wav2vec2-conformer":  # conformer blocks (npw2v2.core.conformer)
            shapes.update(conformer.parameter_shapes(cfg, i))
            continue
        layer = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"{layer}.attention.{proj}", weight=(d, d), bias=(d,))
        add(f"{layer}.layer_norm", weight=(d,), bias=(d,))
        add(f"{layer}.feed_forward.intermediate_dense", weight=(f, d), bias=(f,))
        add(f"{layer}.feed_forward.output_dense", weight=(d, f), bias=(d,))
        add(f"{layer}.final_layer_norm", weight=(d,), bias=(d,))
        shapes.update(attention_adapter_shapes(cfg, i))
        if cfg.model_type == "wavlm":  # the gate of the relative position bias; layer 0's buckets (npw2v2.core.wavlm)
            shapes.update(wavlm.parameter_shapes(cfg, i))
    return {**shapes, **downsample_shapes(cfg), **head_shapes(cfg, kind)}


def optional_shapes(cfg: Config, kind: str | None = None) -> dict[str, tuple[int, ...]]:
    """Tensors a model may have or not: the mask embedding (only for mask_time_indices; checkpoints
    trained with mask_time_prob = 0 have none), batch norm's training-only step count, and an
    x-vector head's loss weights (``kind``: the model's, npw2v2.core.heads.KINDS)."""
    optional = {"masked_spec_embed": (cfg.hidden_size,)}
    if kind == XVECTOR:
        optional.update(training_only_shapes(cfg))
    if cfg.conv_pos_batch_norm:
        optional["encoder.pos_conv_embed.batch_norm.num_batches_tracked"] = ()
    if cfg.model_type == "wav2vec2-conformer":
        optional.update(conformer.optional_shapes(cfg))
    return optional


def random_weights(cfg: Config, seed: int = 0, kind: str | None = None) -> dict[str, np.ndarray]:
    """Reproducible random float32 weights with Hugging Face names, for tests and benchmarks.

    Drawn in sorted name order from ``numpy.random.RandomState(seed)``, whose stream NumPy
    keeps frozen, so the same seed gives the same model on every machine and release.
    Matrices get std 1/sqrt(fan_in), norm scales 1 + N(0, 0.1), biases N(0, 0.1): activations
    stay of order one through any depth (batch norm's running variances too: 1 + N(0, 0.1)). ``kind`` (npw2v2.core.heads.KINDS) picks the head; by
    default the config's architectures do.
    """
    rng = np.random.RandomState(seed)
    weights = {}
    for name, shape in sorted(expected_shapes(cfg, kind).items()):
        noise = rng.standard_normal(shape)
        if len(shape) > 1:
            value = noise / np.sqrt(np.prod(shape[1:]))
        elif name.endswith(("layer_norm.weight", "batch_norm.weight", "running_var", "gru_rel_pos_const")):
            # scales, variances > 0, WavLM's gate constants (1 at initialisation)
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        weights[name] = value.astype(np.float32)
    return weights


def fold_weight_norm(weight_g, weight_v):
    """Weight norm over dims (0, 1), as the positional conv uses it: ``g * v / ||v||``.

    weight_g: [1, 1, K], weight_v: [D, D / groups, K] -> weight [D, D / groups, K].
    """
    xp = get_xp(weight_v)
    norm = xp.sqrt((weight_v * weight_v).sum(axis=(0, 1), keepdims=True))
    return (weight_g * weight_v / norm).astype(weight_v.dtype)


def unflatten(flat: dict) -> dict:
    """{"a.0.b": x} -> {"a": [{"b": x}]}: dotted names to nested dicts, numbered parts to lists."""
    tree = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _numbered_to_lists(tree)


def _numbered_to_lists(node):
    if not isinstance(node, dict):
        return node
    children = {k: _numbered_to_lists(v) for k, v in node.items()}
    if children and all(k.isdigit() for k in children):
        return [children[k] for k in sorted(children, key=int)]
    return children
