"""MMS: one model, a language at a time, by swapping small per-language weights.

MMS models (facebook/mms-1b-all and its kin) are pre-LN wav2vec 2.0 CTC models whose every
transformer layer ends with a small attention adapter (npw2v2.core.adapters). Per language, only
those adapters and the CTC head change; the vocabulary (vocab.json) is nested by language.
The hub folder holds the model with one language's adapters (English) and a file per
language beside it, ``adapter.fra.safetensors`` (or ``.bin``), under transformers' names:
``wav2vec2.encoder.layers.N.adapter_layer.*`` and ``lm_head.*``.

``model.set_language("fra")`` swaps them in, like transformers' ``load_adapter``. A
converted file can bundle languages (``npw2v2-convert --languages fra,deu``) as
``languages.fra.*`` tensors; others are looked for beside it. The adapters and the head act
frame by frame, so a padded batch gets each item's lone result in every language.

This module finds and checks a language's weights and puts them into a parameter dict; the
model object (npw2v2.app.model) keeps track of which language it holds.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..core.adapters import language_shapes
from ..core.backend import asnumpy, to_device
from ..core.config import Config
from ..core.params import unflatten
from .weights import CheckpointError, canonical_names, read_safetensors, shape_problems

ADAPTER_FILE = "adapter.{}.safetensors"
ADAPTER_BIN = "adapter.{}.bin"
DEFAULT_LANGUAGE = "eng"  # transformers' default: the MMS hub models hold English's adapters


@dataclasses.dataclass
class LanguageSource:
    """Where a model finds its languages' weights."""

    folder: Path | None
    bundled: dict  # language -> flat tensors (canonical names), NumPy
    vocabularies: dict | None  # language -> {token: id}, from the nested vocab.json
    dtype: object = np.float32
    device: str = "cpu"


def is_nested(vocab) -> bool:
    """Whether a vocabulary is MMS's, one per language: {"eng": {"<pad>": 0, ...}, ...}."""
    return isinstance(vocab, dict) and bool(vocab) and all(isinstance(v, dict) for v in vocab.values())


def open_languages(params, cfg: Config, vocab, metadata: dict, bundled: dict, folder: Path | None, dtype,
                   device: str) -> tuple[LanguageSource, str | None, dict | None]:
    """Where a loaded MMS model finds its languages, the language of the weights it was loaded
    with (None when unknown), and that language's vocabulary."""
    nested = vocab if is_nested(vocab) else None
    source = LanguageSource(folder, dict(bundled), nested, dtype, device)
    language = initial_language(metadata, nested)
    if nested is not None:
        vocab = nested.get(language)
    if language is not None and cfg.adapter_attn_dim is not None:
        source.bundled.setdefault(language, current_weights(params))
    return source, language, vocab


def initial_language(metadata: dict, nested: dict | None) -> str | None:
    """The language of the loaded weights: the file's own note, the tokenizer's target_lang, else English
    when the vocabulary has it (as transformers assumes), else unknown (None)."""
    tokenizer = metadata.get("tokenizer") or {}
    named = [metadata.get("language"), tokenizer.get("target_lang")]
    for language in named + ([DEFAULT_LANGUAGE] if nested else []):
        if isinstance(language, str) and (nested is None or language in nested):
            return language
    return None


def current_weights(params) -> dict:
    """The adapters and CTC head now in the parameters, as flat NumPy tensors."""
    flat = {f"lm_head.{k}": asnumpy(v) for k, v in params["lm_head"].items()}
    for i, layer in enumerate(params["encoder"]["layers"]):
        for part, tensors in layer.get("adapter_layer", {}).items():
            flat.update({f"encoder.layers.{i}.adapter_layer.{part}.{k}": asnumpy(v) for k, v in tensors.items()})
    return flat


def adapter_files(folder: Path | None) -> dict[str, Path]:
    """The adapter.LANG.safetensors (or .bin) files in a folder, by language; safetensors first."""
    found = {}
    for pattern in (ADAPTER_BIN, ADAPTER_FILE):  # a later pattern wins
        prefix, suffix = pattern.split("{}")
        for path in sorted(folder.glob(pattern.format("*"))) if folder is not None else ():
            found[path.name[len(prefix):-len(suffix)]] = path
    return found


def available(source: LanguageSource | None) -> list[str]:
    """Languages set_language can load: bundled ones and adapter files in the model's folder."""
    return [] if source is None else sorted(set(source.bundled) | set(adapter_files(source.folder)))


def read_adapter_file(path: Path) -> dict:
    """A language's weights from its adapter.LANG.safetensors file, under canonical names."""
    if path.suffix == ".bin":
        raise CheckpointError(f"{path}: a PyTorch file, which npw2v2 reads only through its converter: "
                              f"npw2v2-convert {path.parent} OUT.safetensors --languages LANG,...")
    return canonical_names(read_safetensors(path)[0])


def language_weights(source: LanguageSource, cfg: Config, language: str) -> tuple[dict, dict | None]:
    """A language's weights (flat NumPy tensors), checked against the model's config, and its vocabulary."""
    files = adapter_files(source.folder)
    if language in source.bundled:
        flat, origin = source.bundled[language], f"language {language} of the model file"
    elif language in files:
        flat, origin = read_adapter_file(files[language]), str(files[language])
    else:
        where = f"{source.folder}: " if source.folder is not None else ""
        raise CheckpointError(f"{where}no weights for language {language!r}; this model has: "
                              f"{', '.join(available(source)) or 'none'}")
    rows = len(flat.get("lm_head.weight", ()))  # the language's vocabulary size
    problems = shape_problems({n: tuple(v.shape) for n, v in flat.items()}, language_shapes(cfg, rows))
    if problems:
        raise CheckpointError(f"{origin}: the tensors do not match the config:\n  " + "\n  ".join(problems))
    vocab = source.vocabularies.get(language) if source.vocabularies else None
    if source.vocabularies is not None and vocab is None:
        raise CheckpointError(f"{origin}: the vocabulary has no language {language!r}")
    if vocab is not None and max(vocab.values(), default=-1) >= rows:
        raise CheckpointError(f"{origin}: the vocabulary of {language} has ids up to {max(vocab.values())}, "
                              f"but its CTC head has {rows} outputs")
    return flat, vocab


def swap_in(params, flat: dict, source: LanguageSource) -> None:
    """Put a language's attention adapters and CTC head (flat, from language_weights) into params."""
    tree = unflatten({n: to_device(np.asarray(v, dtype=source.dtype), source.device) for n, v in flat.items()})
    for layer, new in zip(params["encoder"]["layers"], tree["encoder"]["layers"]):
        layer["adapter_layer"] = new["adapter_layer"]
    params["lm_head"] = tree["lm_head"]
