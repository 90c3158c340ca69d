"""The language model a converted model takes along (npw2v2-convert --lm).

The .safetensors file stays self-contained for the network; an n-gram model is often far
larger than the weights (LibriSpeech's 4-gram: 3 GB), so it is not put inside. Instead the
file's ``language_model`` metadata names it: a file or folder copied beside the output under
its own name, or a hub id, which the Hugging Face cache holds. ``npw2v2 transcribe --lm`` (no
path) and ``model.language_model`` follow that name (npw2v2.io.hub.own_lm).
"""
from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from npw2v2.io.hub import LANGUAGE_MODEL, is_org_name, lm_reference_problem
from npw2v2.io.ngram import LM_SUFFIXES, LanguageModelError, read_lm_folder
from npw2v2.io.outputs import write_atomically

from .errors import ConversionError


def source_lm(src: Path) -> Path | None:
    """The language_model/ folder a Hugging Face model folder comes with (Wav2Vec2ProcessorWithLM), if any."""
    folder = Path(src) / LANGUAGE_MODEL
    return folder if Path(src).is_dir() and folder.is_dir() else None


def lm_reference(lm: str, out: Path) -> tuple[str, Path | None]:
    """The metadata naming ``lm`` for a model written to ``out``, and what to copy beside it (or None).

    A hub id is named as it is; a file (.arpa, .arpa.gz, a KenLM binary) or a language_model/
    folder (or the repository folder holding one) is checked, then copied beside ``out`` under
    its own name, unless it is there already. ConversionError naming ``lm`` otherwise.
    """
    path = Path(lm)
    if not path.exists():
        if is_org_name(lm):
            return lm, None
        raise ConversionError(f"--lm {lm}: no such file or folder (nor a hub id ORG/NAME)")
    if path.is_dir():
        try:
            path = read_lm_folder(path).model_path.parent  # the language_model/ folder itself
        except LanguageModelError as e:
            raise ConversionError(f"--lm {e}") from None
    elif not path.name.lower().endswith(LM_SUFFIXES):
        raise ConversionError(f"--lm {lm}: not a language model file (.arpa, .arpa.gz, or a KenLM .bin/.binary)")
    problem = lm_reference_problem(path.name)
    if problem:
        raise ConversionError(f"--lm {lm}: its name {problem}")
    beside = Path(out).parent / path.name
    if beside.exists() and beside.resolve() == path.resolve():
        return path.name, None  # already beside the output
    if beside.exists() and not _same_contents(beside, path):
        raise ConversionError(f"--lm {lm}: {beside} exists and holds something else; remove it or write the "
                              "model elsewhere")
    return path.name, path


def _same_contents(a: Path, b: Path) -> bool:
    if a.is_dir() != b.is_dir():
        return False
    if a.is_file():
        return filecmp.cmp(a, b, shallow=False)
    compared = filecmp.dircmp(a, b)
    return not (compared.left_only or compared.right_only or compared.diff_files or compared.funny_files)


def copy_beside(path: Path, out: Path) -> Path:
    """Copy a language model file or folder beside ``out``; a file is never half-written there."""
    target = Path(out).parent / path.name
    if target.exists():  # the same contents (lm_reference checked): nothing to do
        return target
    if path.is_dir():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(path, partial)
        partial.rename(target)
    else:
        write_atomically(target, lambda tmp: shutil.copyfile(path, tmp))
    return target
