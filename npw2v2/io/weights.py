"""Weights from files: a .safetensors file or a Hugging Face folder to checked parameters.

Tensor names are the Hugging Face state-dict names (``encoder.layers.3.attention.q_proj.weight``),
with or without the ``wav2vec2.`` (``hubert.``, ``data2vec_audio.``, ``wavlm.``, ``wav2vec2_conformer.``, ...) prefix of the task models. The positional conv's weight
norm may come folded (``weight``) or as its two parts (``weight_g``/``weight_v``, or
``parametrizations.weight.original0``/``original1`` as recent PyTorch names them); it is
folded once, at load time. The model object is built above this layer (npw2v2.app.model).

Everything read is untrusted and checked before anything is built from it: the config
(npw2v2.core.config.check_fields), the counts it claims against the tensors the file holds
(count_problems, before the table of expected tensors is made), and the vocabulary and settings
files (check_settings). Each failure is one CheckpointError naming the file and the key.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.adapters import language_shapes
from ..core.conformer import without_unused
from ..core.backend import to_device
from ..core.config import MAX_VOCAB, Config, show
from ..core.heads import model_kind
from ..core.params import expected_shapes, fold_weight_norm, optional_shapes, unflatten
from .audio import MAX_RATE, MIN_RATE

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


# The encoder's prefix in each family's task models (Wav2Vec2ForCTC's ``wav2vec2.``, ...): transformers'
# base_model_prefix of each.
TASK_PREFIXES = ("wav2vec2.", "hubert.", "data2vec_audio.", "unispeech.", "unispeech_sat.", "wavlm.",
                 "wav2vec2_conformer.", "wav2vec2_bert.")


def without_task_prefix(name: str) -> str:
    """A tensor name without the encoder's prefix of the task models (TASK_PREFIXES)."""
    prefix = next((p for p in TASK_PREFIXES if name.startswith(p)), "")
    return name[len(prefix):]


def canonical_name(name: str) -> str:
    """Without the ``wav2vec2.`` (``hubert.``, ...: TASK_PREFIXES) prefix of the task models, weight norm spelled
    ``weight_g``/``weight_v``."""
    name = without_task_prefix(name)
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
    counts, far_off = count_problems(shapes, cfg)
    if far_off:  # the tensors win: nothing is built from the config's claim
        raise CheckpointError(f"{source}: " + "; ".join(counts))
    try:
        kind = model_kind(cfg, shapes)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    expected = expected_shapes(cfg, kind)
    if (POS_CONV + "weight_g" in shapes or POS_CONV + "weight_v" in shapes) and POS_CONV + "weight" in expected:
        expected[POS_CONV + "weight_v"] = expected.pop(POS_CONV + "weight")
        expected[POS_CONV + "weight_g"] = (1, 1, cfg.num_conv_pos_embeddings)
    problems = counts + shape_problems(shapes, expected, optional_shapes(cfg, kind))
    for language, found in languages.items():
        rows = found.get("lm_head.weight", (0,))[0]
        problems += [f"language {language}: {p}" for p in shape_problems(found, language_shapes(cfg, rows))]
    if problems:
        raise CheckpointError(f"{source}: the tensors do not match the config:\n  " + "\n  ".join(problems))


# Layers a config may claim beyond those in the file and still have each missing tensor listed
# (a truncated file); past that, the count alone is reported.
LISTED_MISSING_LAYERS = 4


def layer_indices(shapes, prefix: str) -> set[int]:
    """The N of every ``PREFIX.N.*`` tensor name."""
    found = set()
    for name in shapes:
        if name.startswith(prefix):
            part = name[len(prefix):].partition(".")[0]
            if part.isascii() and part.isdigit():
                found.add(int(part))
    return found


def count_problems(shapes: dict, cfg: Config) -> tuple[list[str], bool]:
    """Where the config's counts and key widths disagree with the tensors, a line each; and whether
    a claimed count exceeds the file's by more than LISTED_MISSING_LAYERS (the tensors win then:
    no table of expected tensors is built from the claim).

    Read before expected_shapes, so a config claiming 1000 layers for a file of 2 fails at once.
    """
    claims = [("num_hidden_layers", cfg.num_hidden_layers, "encoder.layers.", "encoder layers")]
    if cfg.model_type != "wav2vec2-bert":  # w2v-BERT has no conv feature encoder (npw2v2.core.w2v_bert)
        claims.append(("len(conv_dim)", len(cfg.conv_dim), "feature_extractor.conv_layers.", "conv layers"))
    if cfg.add_adapter:
        claims.append(("num_adapter_layers", cfg.num_adapter_layers, "adapter.layers.", "adapter layers"))
    if cfg.model_type == "data2vec-audio":  # its num_conv_pos_embeddings counts positional conv layers
        claims.append(("num_conv_pos_embeddings", cfg.num_conv_pos_embeddings, POS_CONV.replace("conv.", "layers."),
                       "positional conv layers"))
    if layer_indices(shapes, "tdnn."):  # an x-vector head's TDNN layers (npw2v2.core.xvector)
        claims.append(("len(tdnn_dim)", len(cfg.tdnn_dim), "tdnn.", "TDNN layers"))
    problems, far_off = [], False
    for key, claimed, prefix, what in claims:
        held = len(layer_indices(shapes, prefix))
        if claimed != held:
            problems.append(f"config says {key} {claimed}, the file holds {held} {what}")
            far_off = far_off or claimed > held + LISTED_MISSING_LAYERS
    widths = [("hidden_size", cfg.hidden_size, "encoder.layer_norm.weight", 0, "entries"),
              ("intermediate_size", cfg.intermediate_size, "encoder.layers.0.feed_forward.intermediate_dense.weight",
               0, "rows"),
              ("num_conv_pos_embeddings", cfg.num_conv_pos_embeddings, POS_CONV + "weight", -1, "taps"),
              ("num_conv_pos_embeddings", cfg.num_conv_pos_embeddings, POS_CONV + "weight_v", -1, "taps"),
              ("vocab_size", cfg.vocab_size, "lm_head.weight", 0, "rows")]
    if cfg.model_type == "wav2vec2-bert":
        widths += [("hidden_size", cfg.hidden_size, "feature_projection.projection.weight", 0, "rows"),
                   ("feature_projection_input_dim", cfg.feature_projection_input_dim,
                    "feature_projection.projection.weight", 1, "columns"),
                   ("intermediate_size", cfg.intermediate_size, "encoder.layers.0.ffn1.intermediate_dense.weight", 0,
                    "rows")]
    else:
        widths += [(f"conv_dim[{i}]", c, f"feature_extractor.conv_layers.{i}.conv.weight", 0, "rows")
                   for i, c in enumerate(cfg.conv_dim)]
    widths += [(f"tdnn_dim[{i}]", c, f"tdnn.{i}.kernel.weight", 0, "rows") for i, c in enumerate(cfg.tdnn_dim)]
    for key, claimed, name, axis, what in widths:
        shape = tuple(shapes.get(name, ()))
        if shape and shape[axis] != claimed:
            problems.append(f"config says {key} {claimed}, the file's {name} has {shape[axis]} {what}")
    return problems, far_off


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


def read_safetensors(path: Path, tensors: bool = True) -> tuple[dict, dict]:
    """(tensors, metadata) of a .safetensors file, as NumPy arrays and a str -> str dict.
    ``tensors=False`` reads the header alone (the tensors come back as an empty dict)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()} if tensors else {}, dict(f.metadata() or {})
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as .safetensors ({e})") from None


def read_metadata(path: Path) -> dict:
    """A .safetensors file's metadata alone (its header: no tensor is read)."""
    return read_safetensors(path, tensors=False)[1]


def json_file(path: Path):
    """A JSON file's value; CheckpointError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: cannot read JSON (nested too deeply)") from None


def config_of(d, where: str, keep_prefix: bool = True) -> Config:
    """Config.from_dict with a CheckpointError naming ``where`` (and the key) on failure."""
    try:
        return Config.from_dict(d)
    except ValueError as e:
        message = str(e) if keep_prefix else str(e).removeprefix("config: ")
        raise CheckpointError(f"{where}: {message}") from None


def shard_files(index: Path) -> list[Path]:
    """The weight files a sharded checkpoint's index names; each must be a plain name in its folder."""
    weight_map = json_file(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no weight_map in the index")
    files = sorted(set(weight_map.values()))
    if not all(isinstance(f, str) and "/" not in f and "\\" not in f and f not in ("", ".", "..") for f in files):
        raise CheckpointError(f"{index}: shard names must be plain file names in the folder")
    return [index.parent / f for f in files]


# Settings besides the weights: the feature extractor's and the tokenizer's.
SETTINGS_FILES = {"preprocessor": "preprocessor_config.json", "tokenizer": "tokenizer_config.json"}
# Metadata of a speaker verification model: the cosine score from which two recordings are the same
# speaker (npw2v2-convert --speaker-threshold; npw2v2.app.speaker reads it).
SPEAKER_THRESHOLD = "speaker_threshold"


def speaker_threshold(value, where: str) -> float:
    """A speaker threshold is a finite number in [-1, 1] (a cosine's range); ValueError naming ``where`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not -1.0 <= number <= 1.0:  # NaN fails too
        raise ValueError(f"{where}: a speaker threshold must be a number from -1 to 1 (a cosine), got {show(value)}")
    return number


def check_preprocessor(settings) -> None:
    """preprocessor_config.json's keys npw2v2 reads; ValueError naming the key."""
    if not isinstance(settings, dict):
        raise ValueError(f"must be a JSON object, got {show(settings)}")
    low, high = MIN_RATE, MAX_RATE  # the rates an audio file's header may claim, for the same reasons
    rate = settings.get("sampling_rate", 16000)
    if isinstance(rate, bool) or not isinstance(rate, int) or not low <= rate <= high:
        raise ValueError(f"sampling_rate must be a whole number of samples a second from {low} to {high}, "
                         f"got {show(rate)}")
    if not isinstance(settings.get("do_normalize", True), bool):
        raise ValueError(f"do_normalize must be true or false, got {show(settings['do_normalize'])}")


def check_tokenizer(settings) -> None:
    """tokenizer_config.json's keys npw2v2 reads; ValueError naming the key."""
    if not isinstance(settings, dict):
        raise ValueError(f"must be a JSON object, got {show(settings)}")
    if not isinstance(settings.get("word_delimiter_token", "|"), str):
        raise ValueError(f"word_delimiter_token must be a string, got {show(settings['word_delimiter_token'])}")


def _check_token_ids(vocab, where: str) -> None:
    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"{where}must be a non-empty JSON object of tokens and their ids, got {show(vocab)}")
    for token, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < MAX_VOCAB:
            raise ValueError(f"{where}token {show(token)} must have a whole-number id from 0 to {MAX_VOCAB - 1}, "
                             f"got {show(i)}")


def check_vocab(vocab, rows: int | None, metadata: dict) -> None:
    """vocab.json: {token: id}, or MMS's {language: {token: id}}. Ids below the CTC head's ``rows``
    (None: no head): the flat vocabulary's, or in the nested one the vocabulary of the language
    the model loads with (npw2v2.io.languages.initial_language of ``metadata``), whose head the
    file holds. ValueError naming the key."""
    from .languages import initial_language, is_nested  # languages imports this module

    if not isinstance(vocab, dict) or not vocab:
        raise ValueError(f"must be a non-empty JSON object of tokens and their ids, got {show(vocab)}")
    nested = is_nested(vocab)
    for language_, tokens in (vocab.items() if nested else [(None, vocab)]):
        _check_token_ids(tokens, f"language {language_!r}: " if nested else "")
    language = initial_language(metadata, vocab) if nested else None
    ids = vocab.get(language) if nested else vocab
    if rows is not None and ids and max(ids.values()) >= rows:
        top = max(ids, key=ids.get)
        where = f"language {language!r}: " if nested else ""
        raise ValueError(f"{where}token {show(top)} has id {ids[top]}, but the CTC head has {rows} outputs "
                         f"(ids 0 to {rows - 1})")


def head_rows(shapes: dict) -> int | None:
    """The CTC head's outputs (lm_head.weight's rows), or None when there is no head."""
    shape = next((tuple(v) for n, v in shapes.items() if canonical_name(n) == "lm_head.weight"), ())
    return int(shape[0]) if shape else None


def check_settings(vocab, settings: dict, rows: int | None, names: dict[str, str]) -> None:
    """The vocabulary and the settings files (preprocessor, tokenizer), where present.

    ``rows``: the CTC head's outputs (head_rows); ``names``: how messages name each of
    "vocab", "preprocessor" and "tokenizer" (the file, or the file and its metadata key).
    One CheckpointError, naming the file and the key, for the first problem.
    """
    present = {key: settings[key] for key in SETTINGS_FILES if key in settings}
    if vocab is not None:
        present["vocab"] = vocab  # after the tokenizer, whose target_lang it reads
    checks = {"preprocessor": check_preprocessor, "tokenizer": check_tokenizer,
              "vocab": lambda v: check_vocab(v, rows, settings)}
    for key, value in present.items():
        try:
            checks[key](value)
        except ValueError as e:
            raise CheckpointError(f"{names[key]}: {e}") from None


def _read_folder(folder: Path) -> tuple[dict, Config, dict | None, dict]:
    """A Hugging Face model folder: config.json with model.safetensors or sharded safetensors."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json in this folder")
    cfg = config_of(json_file(folder / "config.json"), str(folder / "config.json"), keep_prefix=False)
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
    vocab = json_file(folder / "vocab.json") if (folder / "vocab.json").is_file() else None
    settings = {key: json_file(folder / name) for key, name in SETTINGS_FILES.items() if (folder / name).is_file()}
    names = {"vocab": str(folder / "vocab.json"), **{key: str(folder / name) for key, name in SETTINGS_FILES.items()}}
    check_settings(vocab, settings, head_rows({n: v.shape for n, v in tensors.items()}), names)
    return tensors, cfg, vocab, {"source_format": "huggingface-folder", **settings}


def _read_file(path: Path) -> tuple[dict, Config, dict | None, dict]:
    """A single .safetensors file whose metadata holds the config (as npw2v2-convert writes it)."""
    tensors, metadata = read_safetensors(path)
    if "config" not in metadata:
        raise CheckpointError(
            f"{path}: no config in the file's metadata; load its folder (with config.json) instead, "
            "or convert it with npw2v2-convert"
        )
    parsed = {}
    for key, value in metadata.items():
        if key not in ["config", "vocab", *SETTINGS_FILES]:
            parsed[key] = value
            continue
        try:
            parsed[key] = json.loads(value)
        except (ValueError, TypeError, RecursionError) as e:
            reason = "nested too deeply" if isinstance(e, RecursionError) else e
            raise CheckpointError(f"{path}: bad {key} in the metadata: not JSON ({reason})") from None
    cfg = config_of(parsed.pop("config"), str(path))
    if SPEAKER_THRESHOLD in parsed:
        try:
            parsed[SPEAKER_THRESHOLD] = speaker_threshold(parsed[SPEAKER_THRESHOLD], f"{path}: {SPEAKER_THRESHOLD} "
                                                          "in the metadata")
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    vocab = parsed.pop("vocab", None)
    names = {key: f"{path}: {key} in the metadata" for key in ["vocab", *SETTINGS_FILES]}
    check_settings(vocab, parsed, head_rows({n: v.shape for n, v in tensors.items()}), names)
    return tensors, cfg, vocab, parsed


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
    flat, bundled = split_languages(without_unused(fold_positional_weight_norm(flat), cfg))
    return unflatten({n: to_device(v, device) for n, v in flat.items()}), bundled
