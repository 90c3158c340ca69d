"""Outputs: checked before any work, written whole, never in place of an input.

Every command that writes (npw2v2 transcribe -o, embed -o, explain --save, npw2v2-convert)
asks ``output_problem`` about each path before it computes anything, and writes through
``write_atomically``: a temporary file beside the target, then a rename, so a reader (or an
interrupted run) never sees half a file. Files get the mode the user's umask gives a new
file, whatever the library that wrote them chose.
"""
from __future__ import annotations

import os
from pathlib import Path

PARTIAL = ".partial"  # the suffix of a file being written
INPUT = "it is one of the inputs, which an output never replaces"


def output_problem(path, inputs=()) -> str | None:
    """Why ``path`` cannot be written as an output, or None when it can.

    Refused: a path that is (or would replace) one of ``inputs`` (models, checkpoints, audio),
    a folder, a name too long for its file system, a parent folder that is missing, not a
    folder, or not writable.
    """
    path = Path(path)
    if any(_same_file(path, Path(i)) for i in inputs if str(i)):
        return INPUT
    if path.is_dir():
        return "a folder: give a file name"
    parent = path.parent
    if not parent.exists():
        return f"no folder {parent}"
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"permission denied: cannot write into {parent}"
    if len(os.fsencode(path.name + PARTIAL)) > _name_max(parent):
        return f"the name is longer than the file system allows ({_name_max(parent)} bytes)"
    return None


def with_contents(paths) -> list[Path]:
    """The paths, and for each folder among them the files directly in it (a model folder's weights)."""
    found = []
    for path in map(Path, paths):
        found.append(path)
        if path.is_dir():
            found += [p for p in path.iterdir() if p.is_file()]
    return found


def folder_problem(folder, inputs=()) -> str | None:
    """Why ``folder`` cannot take output files (it will be made if missing), or None when it can."""
    folder = Path(folder)
    if any(_same_file(folder, Path(i)) for i in inputs if str(i)):
        return INPUT
    if folder.exists():
        if not folder.is_dir():
            return "not a folder"
        return None if os.access(folder, os.W_OK | os.X_OK) else "permission denied: cannot write into it"
    existing = next(p for p in folder.absolute().parents if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    return None if os.access(existing, os.W_OK | os.X_OK) else f"permission denied: cannot make it in {existing}"


def write_atomically(path, write) -> None:
    """``write(temporary path)``, then move the file into place: never half a file at ``path``.

    ``write`` may be a str (written as UTF-8 text). The file gets the user's umask's mode.
    """
    path = Path(path)
    tmp = path.with_name(path.name + PARTIAL)
    try:
        if isinstance(write, str):
            tmp.write_text(write, encoding="utf-8")
        else:
            write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) make their files private
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cause(error: OSError) -> str:
    """A file-system error's cause in words ("permission denied"), without Python's [Errno N]."""
    return (error.strerror or str(error) or type(error).__name__).lower()


def file_error(error: OSError) -> str:
    """A file-system error as "PATH: cause" (the cause alone when it names no file)."""
    return f"{error.filename}: {cause(error)}" if error.filename else cause(error)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
