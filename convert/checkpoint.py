"""What every reader returns, and the conversion itself: check, fold, write, verify."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import npw2v2
from npw2v2.core.conformer import without_unused
from npw2v2.core.config import Config
from npw2v2.core.heads import class_name, model_kind
from npw2v2.io.outputs import write_atomically
from npw2v2.io.weights import (
    SETTINGS_FILES,
    CheckpointError,
    canonical_names,
    check_settings,
    check_shapes,
    check_tensors,
    fold_positional_weight_norm,
    head_rows,
    split_languages,
)

from .errors import ConversionError

FORMAT_VERSION = "1"
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class Checkpoint:
    """A checkpoint as read from its source, before any checking."""

    tensors: dict  # Hugging Face names -> NumPy arrays
    config: dict  # Hugging Face config.json keys
    source_format: str  # e.g. "huggingface-bin", "fairseq"
    vocab: dict | None = None  # token -> id
    preprocessor: dict | None = None  # preprocessor_config.json keys
    extra: dict = field(default_factory=dict)  # other metadata worth keeping (tokenizer settings)


@dataclass
class Summary:
    """What a conversion found and wrote, for the CLI to print."""

    source_format: str
    model_kind: str
    layers: int
    parameters: int
    vocab_size: int | None
    languages: list  # MMS languages bundled in the file
    output: Path


def settings_names(source: str) -> dict[str, str]:
    """How messages name a source's vocabulary and settings: their files in a folder, else the source."""
    files = {"vocab": "vocab.json", **SETTINGS_FILES}
    if Path(source).is_dir():
        return {key: str(Path(source) / name) for key, name in files.items()}
    return {key: f"{source}: {key}" for key in files}


def prepare(checkpoint: Checkpoint, source: str, dtype: str) -> dict:
    """Checked tensors with npw2v2's names, weight norm folded, in the chosen dtype.

    The same checks as npw2v2.load: the config's fields (before anything is built from them),
    its counts against the tensors, every tensor's shape, the vocabulary and the settings.
    Any failure is one ConversionError naming the source (or its file) and the key.
    """
    try:
        cfg = Config.from_dict(checkpoint.config)
        tensors = canonical_names({n: np.asarray(v, dtype=np.float32) for n, v in checkpoint.tensors.items()})
        check_tensors(tensors, cfg, source)
        settings = {"preprocessor": checkpoint.preprocessor, **checkpoint.extra}
        check_settings(checkpoint.vocab, {k: v for k, v in settings.items() if v is not None},
                       head_rows({n: v.shape for n, v in tensors.items()}), settings_names(source))
    except (CheckpointError, ValueError, TypeError) as e:
        raise ConversionError(str(e) if str(e).startswith(source) else f"{source}: {e}") from None
    kept = without_unused(fold_positional_weight_norm(tensors), cfg)  # a conformer's unrun positional conv left out
    return {n: np.asarray(v, dtype=DTYPES[dtype], order="C") for n, v in kept.items()}  # 0-d stays 0-d


def metadata_of(checkpoint: Checkpoint) -> dict[str, str]:
    """The string-to-string metadata that makes the file self-contained."""
    metadata = {
        "config": json.dumps(checkpoint.config, sort_keys=True),
        "source_format": checkpoint.source_format,
        "format_version": FORMAT_VERSION,
        "converter": f"npw2v2 {npw2v2.__version__}",
    }
    if checkpoint.vocab is not None:
        metadata["vocab"] = json.dumps(checkpoint.vocab)
    if checkpoint.preprocessor is not None:
        metadata["preprocessor"] = json.dumps(checkpoint.preprocessor, sort_keys=True)
    metadata.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in checkpoint.extra.items()})
    return metadata


SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def write_safetensors(tensors: dict, metadata: dict, path: Path) -> None:
    """Write the safetensors format, streaming each tensor's bytes (no copy of the whole model).

    Layout: an 8-byte little-endian header size, a JSON header (names, dtypes, shapes, byte
    ranges, and "__metadata__"), padded with spaces to 8 bytes, then the tensors' raw bytes.
    """
    header, offset = {"__metadata__": metadata}, 0
    for name, value in tensors.items():
        header[name] = {"dtype": SAFETENSORS_DTYPES[value.dtype], "shape": list(value.shape),
                        "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with path.open("wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for value in tensors.values():
            f.write(memoryview(np.ascontiguousarray(value)).cast("B"))


def verify_safetensors(tensors: dict, metadata: dict, path: Path) -> None:
    """Read the file back through the safetensors library and compare every tensor with what was meant.

    Tensors are read one at a time, so the check costs little memory.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        if f.metadata() != metadata or set(f.keys()) != set(tensors):
            raise ConversionError(f"{path}: the written file does not hold what was written")
        for name, value in tensors.items():
            written = f.get_tensor(name)
            if written.dtype != value.dtype or not np.array_equal(written, value):
                raise ConversionError(f"{path}: tensor {name} reads back differently")


def check_loadable(path: Path) -> Config:
    """What npw2v2.load will check, from the file's header alone: config, names and shapes."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        cfg = Config.from_dict(json.loads(f.metadata()["config"]))
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    check_shapes(shapes, cfg, str(path))
    return cfg


def write_and_verify(tensors: dict, metadata: dict, out: Path) -> None:
    """Write next to OUT, read back and compare every tensor, then move into place."""
    def write(partial: Path) -> None:
        write_safetensors(tensors, metadata, partial)
        verify_safetensors(tensors, metadata, partial)

    write_atomically(out, write)


def convert(checkpoint: Checkpoint, source: str, out, dtype: str = "float32") -> Summary:
    """Check a checkpoint, write it as one .safetensors file, verify it, and say what happened."""
    if dtype not in DTYPES:
        raise ConversionError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    out = Path(out)
    tensors = prepare(checkpoint, source, dtype)
    write_and_verify(tensors, metadata_of(checkpoint), out)
    try:
        cfg = check_loadable(out)  # the file must be all a user needs
    except (CheckpointError, ValueError) as e:
        raise ConversionError(f"{out}: written, but it would not load: {e}") from None
    own, languages = split_languages(tensors)
    ctc = "lm_head.weight" in tensors
    return Summary(
        source_format=checkpoint.source_format,
        model_kind=class_name(model_kind(cfg, own), cfg.model_type),
        layers=cfg.num_hidden_layers,
        parameters=sum(int(v.size) for v in own.values()),
        vocab_size=cfg.vocab_size if ctc else None,
        languages=sorted(languages),
        output=out,
    )
