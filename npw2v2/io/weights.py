"""Weights from files: a .safetensors file or a Hugging Face folder to checked parameters.

Tensor names are the Hugging Face state-dict names (``encoder.layers.3.attention.q_proj.weight``),
with or without the ``wav2vec2.`` prefix of the task models. The positional conv's weight
norm may come folded (``weight``) or as its two parts (``weight_g``/``weight_v``, or
``parametrizations.weight.original0``/``original1`` as recent PyTorch names them); it is
folded once, at load time. The model object is built above this layer (npw2v2.app.model).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.adapters import language_shapes
from ..core.backend import to_device
from ..core.config import Config
from ..core.heads import model_kind
from ..core.params import expected_shapes, fold_weight_norm, optional_shapes, unflatten

# MMS languages bundled in a converted file: "languages.fra.lm_head.weight", ...
LANGUAGES = "languages."

WEIGHT_NORM_SPELLINGS = {
    "parametrizations.weight.original0": "weight_g",
    "parametrizations.weight.original1": "weight_v",
}


class CheckpointError(ValueError):
    """A model file or folder that cannot be loaded; the message names the file and the problem."""


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


def read(path) -> tuple[dict, Config, dict | None, dict]:
    """(tensors, config, vocabulary, metadata) of a .safetensors file or a Hugging Face model folder.

    The tensors are as stored; ``prepare`` checks them. Raises CheckpointError naming the path.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if path.is_file():
        return _read_file(path)
    raise CheckpointError(f"{path}: no such file or folder")


def prepare(tensors: dict, cfg: Config, source: str, dtype=np.float32, device: str = "cpu") -> tuple[dict, dict]:
    """Checked parameters, as the nested dict the core reads, on the device; and bundled MMS languages.

    Every missing, unexpected and mis-shaped tensor is listed in one CheckpointError. The
    languages ({language: flat tensors}, "languages.LANG.*" in the file) stay flat, on the host.
    """
    flat = canonical_names({n: np.asarray(v, dtype=dtype) for n, v in tensors.items()})
    check_tensors(flat, cfg, source)
    flat, bundled = split_languages(fold_positional_weight_norm(flat))
    return unflatten({n: to_device(v, device) for n, v in flat.items()}), bundled
