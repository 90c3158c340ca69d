"""Parameters: from a .safetensors file or a Hugging Face folder to a checked, nested dict.

Tensor names are the Hugging Face state-dict names (``encoder.layers.3.attention.q_proj.weight``),
with or without the ``wav2vec2.`` prefix of the task models. The positional conv's weight
norm may come folded (``weight``) or as its two parts (``weight_g``/``weight_v``, or
``parametrizations.weight.original0``/``original1`` as recent PyTorch names them); it is
folded once, at load time.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .adapters import attention_adapter_shapes, downsample_shapes, language_shapes
from .backend import to_device
from .config import BASE, LARGE, Config
from .heads import head_shapes, model_kind
from .model import Wav2Vec2, fold_weight_norm

# Tensors a model may have or not: the mask embedding (only for mask_time_indices; checkpoints
# trained with mask_time_prob = 0 have none).
OPTIONAL = ("masked_spec_embed",)
# MMS languages bundled in a converted file: "languages.fra.lm_head.weight", ...
LANGUAGES = "languages."

WEIGHT_NORM_SPELLINGS = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


class CheckpointError(ValueError):
    """A model file or folder that cannot be loaded; the message names the file and the problem."""


# ---------------------------------------------------------------------------
# What a model of a given config holds


def expected_shapes(cfg: Config, kind: str | None = None) -> dict[str, tuple[int, ...]]:
    """Every tensor name a model of this config and kind (default: the config's) needs, with its shape."""
    kind = kind or model_kind(cfg)
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
    add("feature_projection.layer_norm", weight=(c,), bias=(c,))
    add("feature_projection.projection", weight=(d, c), bias=(d,))
    pos_in = d // cfg.num_conv_pos_embedding_groups
    add("encoder.pos_conv_embed.conv", weight=(d, pos_in, cfg.num_conv_pos_embeddings), bias=(d,))
    add("encoder.layer_norm", weight=(d,), bias=(d,))
    for i in range(cfg.num_hidden_layers):
        layer = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"{layer}.attention.{proj}", weight=(d, d), bias=(d,))
        add(f"{layer}.layer_norm", weight=(d,), bias=(d,))
        add(f"{layer}.feed_forward.intermediate_dense", weight=(f, d), bias=(f,))
        add(f"{layer}.feed_forward.output_dense", weight=(d, f), bias=(d,))
        add(f"{layer}.final_layer_norm", weight=(d,), bias=(d,))
        shapes.update(attention_adapter_shapes(cfg, i))
    return {**shapes, **downsample_shapes(cfg), **head_shapes(cfg, kind)}


def optional_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    return {"masked_spec_embed": (cfg.hidden_size,)}


def random_weights(cfg: Config, seed: int = 0, kind: str | None = None) -> dict[str, np.ndarray]:
    """Reproducible random float32 weights with Hugging Face names, for tests and benchmarks.

    Drawn in sorted name order from ``numpy.random.RandomState(seed)``, whose stream NumPy
    keeps frozen, so the same seed gives the same model on every machine and release.
    Matrices get std 1/sqrt(fan_in), norm scales 1 + N(0, 0.1), biases N(0, 0.1): activations
    stay of order one through any depth. ``kind`` (npw2v2.heads.KINDS) picks the head; by
    default the config's architectures do.
    """
    rng = np.random.RandomState(seed)
    weights = {}
    for name, shape in sorted(expected_shapes(cfg, kind).items()):
        noise = rng.standard_normal(shape)
        if len(shape) > 1:
            value = noise / np.sqrt(np.prod(shape[1:]))
        elif name.endswith("layer_norm.weight"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        weights[name] = value.astype(np.float32)
    return weights


# ---------------------------------------------------------------------------
# From a flat dict of tensors to a model


POS_CONV = "encoder.pos_conv_embed.conv."


def canonical_name(name: str) -> str:
    """Without the ``wav2vec2.`` prefix of the task models, weight norm spelled ``weight_g``/``weight_v``."""
    name = name.removeprefix("wav2vec2.")
    for spelling, short in WEIGHT_NORM_SPELLINGS.items():
        name = name.replace(spelling, short)
    return name


def canonical_names(tensors: dict) -> dict:
    """A new dict under canonical_name's names."""
    return {canonical_name(name): value for name, value in tensors.items()}


def fold_positional_weight_norm(tensors: dict) -> dict:
    """Replace the positional conv's ``weight_g``/``weight_v`` by the plain ``weight`` they make."""
    if POS_CONV + "weight_g" not in tensors:
        return tensors
    folded = dict(tensors)
    folded[POS_CONV + "weight"] = fold_weight_norm(folded.pop(POS_CONV + "weight_g"), folded.pop(POS_CONV + "weight_v"))
    return folded


def check_tensors(tensors: dict, cfg: Config, source: str) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped tensor."""
    check_shapes({name: tuple(value.shape) for name, value in tensors.items()}, cfg, source)


def check_shapes(shapes: dict[str, tuple], cfg: Config, source: str) -> None:
    """check_tensors for tensor names and shapes alone (bundled MMS languages included)."""
    shapes, languages = split_languages(shapes)
    try:
        expected = expected_shapes(cfg, model_kind(cfg, shapes))
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if POS_CONV + "weight_g" in shapes or POS_CONV + "weight_v" in shapes:
        expected[POS_CONV + "weight_v"] = expected.pop(POS_CONV + "weight")
        expected[POS_CONV + "weight_g"] = (1, 1, cfg.num_conv_pos_embeddings)
    problems = shape_problems(shapes, expected, optional_shapes(cfg))
    for language, found in languages.items():
        rows = found.get("lm_head.weight", (0,))[0]
        problems += [f"language {language}: {p}" for p in shape_problems(found, language_shapes(cfg, rows))]
    if problems:
        raise CheckpointError(f"{source}: the tensors do not match the config:\n  " + "\n  ".join(problems))


def shape_problems(shapes: dict, expected: dict, optional: dict | None = None) -> list[str]:
    """Missing, unexpected and mis-shaped tensors, a line each."""
    allowed = {**(optional or {}), **expected}
    problems = [f"missing: {n} {list(s)}" for n, s in expected.items() if n not in shapes]
    problems += [f"unexpected: {n}" for n in shapes if n not in allowed]
    problems += [
        f"wrong shape: {n} is {list(shapes[n])}, the config says {list(s)}"
        for n, s in allowed.items() if n in shapes and tuple(shapes[n]) != tuple(s)
    ]
    return problems


def split_languages(tensors: dict) -> tuple[dict, dict[str, dict]]:
    """The model's own tensors, and the bundled MMS languages' by language ("languages.fra.lm_head.weight")."""
    own, languages = {}, {}
    for name, value in tensors.items():
        if name.startswith(LANGUAGES):
            language, _, rest = name.removeprefix(LANGUAGES).partition(".")
            languages.setdefault(language, {})[rest] = value
        else:
            own[name] = value
    return own, languages


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


def from_tensors(tensors: dict, cfg: Config, source: str = "tensors", vocab=None, metadata=None,
                 dtype=np.float32, device: str = "cpu", folder: Path | None = None) -> Wav2Vec2:
    """A model from a flat dict of Hugging Face-named tensors, checked against the config.

    An MMS model (adapter_attn_dim) finds other languages' adapters among the tensors
    (``languages.LANG.*``) or as adapter.LANG.safetensors files in ``folder``.
    """
    flat = canonical_names({n: np.asarray(v, dtype=dtype) for n, v in tensors.items()})
    check_tensors(flat, cfg, source)
    flat, bundled = split_languages(fold_positional_weight_norm(flat))
    model = Wav2Vec2(unflatten({n: to_device(v, device) for n, v in flat.items()}), cfg, vocab=vocab,
                     metadata=metadata)
    if cfg.adapter_attn_dim is not None or bundled or is_nested(vocab):
        from .languages import attach

        attach(model, bundled, folder, dtype, device)
    return model


def is_nested(vocab) -> bool:
    """Whether a vocabulary is MMS's, one per language: {"eng": {"<pad>": 0, ...}, ...}."""
    return isinstance(vocab, dict) and bool(vocab) and all(isinstance(v, dict) for v in vocab.values())


# ---------------------------------------------------------------------------
# Files


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a .safetensors file, as NumPy arrays and a str -> str dict."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as .safetensors ({e})") from None


def _json_file(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({e})") from None


def shard_files(index: Path) -> list[Path]:
    """The weight files a sharded checkpoint's index names; each must be a plain name in its folder."""
    weight_map = _json_file(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no weight_map in the index")
    files = sorted(set(weight_map.values()))
    if not all(isinstance(f, str) and "/" not in f and "\\" not in f and f not in ("", ".", "..") for f in files):
        raise CheckpointError(f"{index}: shard names must be plain file names in the folder")
    return [index.parent / f for f in files]


# Settings besides the weights: the feature extractor's and the tokenizer's.
SETTINGS_FILES = {"preprocessor": "preprocessor_config.json", "tokenizer": "tokenizer_config.json"}


def _read_folder(folder: Path) -> tuple[dict, Config, dict | None, dict]:
    """A Hugging Face model folder: config.json with model.safetensors or sharded safetensors."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json in this folder")
    cfg = Config.from_dict(_json_file(folder / "config.json"))
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        tensors = read_safetensors(folder / "model.safetensors")[0]
    elif index.is_file():
        tensors = {}
        for shard in shard_files(index):
            tensors.update(read_safetensors(shard)[0])
    else:
        raise CheckpointError(
            f"{folder}: no model.safetensors; convert PyTorch or fairseq checkpoints with npw2v2-convert"
        )
    vocab = _json_file(folder / "vocab.json") if (folder / "vocab.json").is_file() else None
    settings = {key: _json_file(folder / name) for key, name in SETTINGS_FILES.items() if (folder / name).is_file()}
    return tensors, cfg, vocab, {"source_format": "huggingface-folder", **settings}


def _read_file(path: Path) -> tuple[dict, Config, dict | None, dict]:
    """A single .safetensors file whose metadata holds the config (as npw2v2-convert writes it)."""
    tensors, metadata = read_safetensors(path)
    if "config" not in metadata:
        raise CheckpointError(
            f"{path}: no config in the file's metadata; load its folder (with config.json) instead, "
            "or convert it with npw2v2-convert"
        )
    json_keys = ["config", "vocab", *SETTINGS_FILES]
    try:
        parsed = {k: json.loads(v) if k in json_keys else v for k, v in metadata.items()}
        cfg = Config.from_dict(parsed.pop("config"))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad config or settings in the metadata ({e})") from None
    return tensors, cfg, parsed.pop("vocab", None), parsed


def load(path, dtype=np.float32, device: str = "cpu") -> Wav2Vec2:
    """Load a model from a .safetensors file or a Hugging Face model folder.

    Raises CheckpointError naming the path and every problem found.
    """
    path = Path(path)
    if path.is_dir():
        tensors, cfg, vocab, metadata = _read_folder(path)
    elif path.is_file():
        tensors, cfg, vocab, metadata = _read_file(path)
    else:
        raise CheckpointError(f"{path}: no such file or folder")
    return from_tensors(tensors, cfg, str(path), vocab=vocab, metadata=metadata, dtype=dtype, device=device,
                        folder=path if path.is_dir() else path.parent)


BUILT_IN = {"base": BASE, "large": LARGE}  # architectures the command line knows by name


def load_model(name: str, seed: int = 0, device: str = "cpu") -> tuple[Wav2Vec2, str]:
    """A model file or folder, or a built-in architecture name with random weights, on the device.

    Returns the model and a description of it for messages and metadata.
    """
    if name in BUILT_IN:
        cfg = BUILT_IN[name]
        return from_tensors(random_weights(cfg, seed=seed), cfg, device=device), \
            f"{name} architecture, random weights (seed {seed})"
    return load(name, device=device), name
