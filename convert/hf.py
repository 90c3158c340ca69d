"""Hugging Face model folders: config.json plus weights in any of the layouts the hub uses.

Weights: model.safetensors, pytorch_model.bin, or either sharded with its index file.
Alongside: vocab.json, preprocessor_config.json, tokenizer_config.json when present, and
for MMS models adapter.LANG.safetensors (or .bin) per language, of which the chosen ones
are bundled as ``languages.LANG.*`` tensors.
"""
from __future__ import annotations

from pathlib import Path

from npw2v2.io.languages import adapter_files
from npw2v2.io.weights import (
    LANGUAGES,
    CheckpointError,
    canonical_name,
    json_file,
    read_safetensors,
    shard_files,
)

from .checkpoint import Checkpoint
from .errors import ConversionError
from .torch_pickle import load_torch_file

WEIGHT_FILES = {  # file -> (reader, sharded, source format)
    "model.safetensors": ("safetensors", False),
    "model.safetensors.index.json": ("safetensors", True),
    "pytorch_model.bin": ("torch", False),
    "pytorch_model.bin.index.json": ("torch", True),
}


def _json(path: Path):
    try:
        return json_file(path)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None


def _read_weights(path: Path, kind: str) -> dict:
    if kind == "torch":
        state = load_torch_file(path)
        if not isinstance(state, dict):
            raise ConversionError(f"{path}: holds a {type(state).__name__}, not a state dict")
        return state
    try:
        return read_safetensors(path)[0]
    except CheckpointError as e:
        raise ConversionError(str(e)) from None


def _shard_files(index: Path) -> list[Path]:
    try:
        return shard_files(index)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None


def language_tensors(folder: Path, languages: list[str]) -> dict:
    """The chosen MMS languages' adapter files, as ``languages.LANG.NAME`` tensors; ["all"] takes every one."""
    files = adapter_files(folder)
    if languages == ["all"]:
        languages = sorted(files)
    missing = [lang for lang in languages if lang not in files]
    if missing:
        raise ConversionError(f"{folder}: no adapter file for {', '.join(missing)} "
                              f"(adapter.LANG.safetensors or .bin; found: {', '.join(sorted(files)) or 'none'})")
    tensors = {}
    for language in languages:
        kind = "torch" if files[language].suffix == ".bin" else "safetensors"
        weights = _read_weights(files[language], kind)
        tensors.update({f"{LANGUAGES}{language}.{canonical_name(n)}": v for n, v in weights.items()})
    return tensors


def read_folder(folder: Path, languages: list[str] | None = None) -> Checkpoint:
    """Read a Hugging Face model folder, bundling the MMS ``languages`` given."""
    if not (folder / "config.json").is_file():
        raise ConversionError(f"{folder}: no config.json in this folder")
    found = [f for f in WEIGHT_FILES if (folder / f).is_file()]
    if not found:
        raise ConversionError(f"{folder}: no weights ({', '.join(WEIGHT_FILES)})")
    kind, sharded = WEIGHT_FILES[found[0]]
    files = _shard_files(folder / found[0]) if sharded else [folder / found[0]]
    tensors = {}
    for file in files:
        tensors.update(_read_weights(file, kind))
    if languages:
        tensors.update(language_tensors(folder, languages))

    def optional(name):
        return _json(folder / name) if (folder / name).is_file() else None

    tokenizer = optional("tokenizer_config.json")
    return Checkpoint(
        tensors=tensors,
        config=_json(folder / "config.json"),
        source_format="huggingface-" + ("safetensors" if kind == "safetensors" else "bin"),
        vocab=optional("vocab.json"),
        preprocessor=optional("preprocessor_config.json"),
        extra={"tokenizer": tokenizer} if tokenizer else {},
    )
