"""Hub ids: models the Hugging Face tools downloaded, found in their local cache, offline.

transformers and huggingface_hub keep what they download in one cache folder:

    CACHE/models--ORG--NAME/refs/REVISION              the commit a branch or tag points to (40 hex digits)
    CACHE/models--ORG--NAME/snapshots/COMMIT/FILE      the files of that commit, symlinks into blobs/
    CACHE/models--ORG--NAME/blobs/HASH                 the files' contents

CACHE is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its old name), else $HF_HOME/hub, else
$XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub, as huggingface_hub decides.
A snapshot folder is a Hugging Face model folder like any other (MMS adapter files beside
the weights included), so ``resolve`` only finds it. With the optional huggingface_hub
installed (``pip install "npw2v2[hub]"``), a model that is not in the cache is downloaded,
unless HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) says not to.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from .ngram import LM_SUFFIXES
from .weights import CheckpointError

COMMIT = re.compile(r"[0-9a-f]{40}")
# ORG/NAME or NAME: letters, digits, '-', '_' and '.', not starting or ending with '-' or '.'
PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
HUB_ID = re.compile(rf"(?:{PART}/)?{PART}")
# What a download fetches: the files npw2v2 (and its converter) read, not every file of the repository
# (an MMS repository holds an adapter file for each of 1000+ languages).
DOWNLOAD_PATTERNS = ["config.json", "*.safetensors.index.json", "model.safetensors", "model-*.safetensors",
                     "pytorch_model*.bin", "pytorch_model.bin.index.json", "vocab.json", "preprocessor_config.json",
                     "tokenizer_config.json"]
FETCH_HINT = ("fetch it with `hf download {id}` (huggingface_hub's command), or pip install \"npw2v2[hub]\" and "
              "npw2v2 fetches it")
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".json")  # names of files: a missing one is no hub id


class NotCached(CheckpointError):
    """A hub id that the local cache does not hold (and could not be downloaded)."""


class ModelNameWarning(UserWarning):
    """A model name that could mean two things; the message says which one was taken."""


def locate(name: str, revision: str | None = None) -> Path:
    """The folder or file a model name means: an existing path first, then a hub id in the local
    cache (or downloaded, see ``snapshot``). A name that is both says which it took."""
    path = Path(name)
    if path.exists():
        if revision:
            raise CheckpointError(f"{name}: a file or folder here, which has no revisions: --revision is for hub ids")
        if is_hub_id(name) and cached_snapshot(name) is not None:
            warnings.warn(f"{name} is a file or folder here and a model in the Hugging Face cache: took the "
                          "file or folder", ModelNameWarning, stacklevel=2)
        return path
    if not is_hub_id(name) or name.lower().endswith(MODEL_SUFFIXES):
        raise CheckpointError(f"{name}: no such file or folder")
    return snapshot(name, revision)


def cache_folder() -> Path:
    """The Hugging Face hub cache, as the environment sets it."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return _expand(os.environ[variable])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return _expand(home) / "hub"


def _expand(path: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(path)))


def is_hub_id(name: str) -> bool:
    """Whether a name has the form of a hub id, ORG/NAME or NAME."""
    return bool(HUB_ID.fullmatch(name)) and "--" not in name and ".." not in name


def is_org_name(name: str) -> bool:
    """Whether a name is a full hub id, ORG/NAME (a bare NAME could as well be a file's name)."""
    return name.count("/") == 1 and is_hub_id(name)


def cached_snapshot(repo_id: str, revision: str | None = None, cache: Path | None = None,
                    holding: str = "config.json") -> Path | None:
    """The snapshot folder of a model in the local cache at ``revision`` (a branch, a tag or a
    commit; default main), or None when the cache does not hold it (with ``holding`` in it)."""
    repo = (cache or cache_folder()) / ("models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    commit = revision if COMMIT.fullmatch(revision) else _read_ref(repo / "refs" / revision)
    if commit is None:
        return None
    snapshot = repo / "snapshots" / commit
    return snapshot if (snapshot / holding).exists() else None


def _read_ref(path: Path) -> str | None:
    try:
        commit = path.read_text().strip()
    except OSError:
        return None
    return commit if COMMIT.fullmatch(commit) else None


def offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def snapshot(repo_id: str, revision: str | None = None, patterns=tuple(DOWNLOAD_PATTERNS),
             holding: str = "config.json", what: str = "a model") -> Path:
    """The snapshot folder of a hub id (one ``holding`` that file or folder): from the cache, else
    downloaded (the files ``patterns`` match) when huggingface_hub is installed and not told to
    stay offline, else NotCached saying how to fetch it (``what`` it was looking for)."""
    found = cached_snapshot(repo_id, revision, holding=holding)
    if found is not None:
        return found
    where = f"{repo_id}" + (f" at revision {revision}" if revision else "")
    try:
        import huggingface_hub
    except ImportError:
        raise NotCached(f"{where}: no such file or folder, nor {what} in the Hugging Face cache ({cache_folder()}); "
                        + FETCH_HINT.format(id=repo_id)) from None
    if offline():
        raise NotCached(f"{where}: not in the Hugging Face cache ({cache_folder()}), and HF_HUB_OFFLINE is set")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=str(cache_folder()),
                                                      allow_patterns=list(patterns)))
    except Exception as e:  # noqa: BLE001 - the client raises many kinds (network, 404, auth): one line each
        raise NotCached(f"{where}: not in the Hugging Face cache, and downloading it failed: "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


# A Wav2Vec2ProcessorWithLM repository keeps its n-gram model in this folder (npw2v2.io.ngram.read_lm_folder).
LANGUAGE_MODEL = "language_model"


def locate_lm(name: str, revision: str | None = None) -> Path:
    """The language model a name means: an existing file or folder, else the language_model/
    folder of a hub id's snapshot in the cache (downloading that folder alone, as ``snapshot``)."""
    path = Path(name)
    if path.exists() or not is_hub_id(name) or name.lower().endswith(LM_SUFFIXES):
        return path  # a path (a missing one is reported by the reader, which names it)
    folder = snapshot(name, revision, patterns=(f"{LANGUAGE_MODEL}/*",), holding=LANGUAGE_MODEL,
                      what=f"a repository with a {LANGUAGE_MODEL}/ folder") / LANGUAGE_MODEL
    if not folder.is_dir():  # the download found no such folder in the repository
        raise NotCached(f"{name}: the repository has no {LANGUAGE_MODEL}/ folder (no Wav2Vec2ProcessorWithLM)")
    return folder


# ---------------------------------------------------------------------------
# The language model a model comes with

# A model file's metadata key naming its language model (npw2v2-convert --lm writes it).
LM_METADATA = "language_model"


def lm_reference_problem(name) -> str | None:
    """Why a model file's language_model metadata cannot be followed, or None.

    It names a file or folder beside the model file (a plain name) or a hub id (ORG/NAME). The
    file is untrusted input, so a path anywhere else ("../x", "/etc/x") is refused.
    """
    if not isinstance(name, str) or not name.strip():
        return "must name a file or folder beside the model, or a hub id (ORG/NAME)"
    plain = not any(c in name for c in "/\\") and name not in (".", "..")
    if plain or is_org_name(name):
        return None
    return f"must be a plain name beside the model or a hub id (ORG/NAME), not a path: {name!r}"


def own_lm(model: Path, metadata: dict | None = None) -> str | None:
    """The language model a model comes with, as a path or a hub id; None when it has none.

    A .safetensors file: the one its ``language_model`` metadata names (beside it, or a hub id),
    else an .arpa or .arpa.gz of the same stem beside it (npw2v2/bundled/digits.arpa for the
    bundled model). A Hugging Face folder: its language_model/ folder, as Wav2Vec2ProcessorWithLM
    repositories have it. ``metadata``: the file's, when already read (else its header is read).
    """
    model = Path(model)
    if model.is_dir():
        folder = model / LANGUAGE_MODEL
        return str(folder) if folder.is_dir() else None
    if metadata is None:
        from .weights import read_metadata

        metadata = read_metadata(model)
    name = metadata.get(LM_METADATA)
    if name is not None:
        problem = lm_reference_problem(name)
        if problem:
            raise CheckpointError(f"{model}: {LM_METADATA} in the metadata {problem}")
        beside = model.parent / name
        return str(beside) if "/" not in name else name
    for suffix in (".arpa", ".arpa.gz"):
        beside = model.with_name(model.stem + suffix)
        if beside.is_file():
            return str(beside)
    return None
