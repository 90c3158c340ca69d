"""The record of a run in its output folder (the ray engine's), so that a rerun skips what is done.

Transcripts are a file each beside the record; features are .safetensors shards, a shard
per finished batch, merged into the one output file at the end.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..io.outputs import write_atomically
from .writers import write_features


class ResumeError(ValueError):
    """An output folder holds the results of a run with other settings."""


class Journal:
    """The record of a run in its output folder, so that a rerun skips the inputs already done.

    FOLDER/npw2v2-run.json       the settings that decide the results; a rerun with others is refused
    FOLDER/npw2v2-results.jsonl  a JSON object per input, appended as its batch finishes:
                                 {"path", "output": file in FOLDER, ...} or {"path", "error"}

    An input is done when it has a line with an ``output`` that exists. Errors are not done:
    a rerun tries those files again (and reports them again).
    """

    SETTINGS = "npw2v2-run.json"
    RESULTS = "npw2v2-results.jsonl"

    def __init__(self, folder: Path, settings: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._check_settings(settings)
        self.rows = journal_rows(self.folder)

    def _check_settings(self, settings: dict) -> None:
        path = self.folder / self.SETTINGS
        if path.exists():
            before = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(k for k in before.keys() | settings.keys() if before.get(k) != settings.get(k))
            if changed:
                raise ResumeError(f"{self.folder} holds the results of a run with another "
                                  f"{', '.join(changed)}: give another output folder, or remove this one")
        else:
            write_atomically(path, json.dumps(settings, indent=1) + "\n")

    def done(self) -> dict[str, str]:
        """Path -> its output file, for the inputs that are done."""
        return {row["path"]: row["output"] for row in self.rows
                if "output" in row and (self.folder / row["output"]).exists()}

    def record(self, row: dict) -> None:
        """Add a line, on disk at once, so that a run killed after this keeps it."""
        self.rows.append(row)
        with open(self.folder / self.RESULTS, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def journal_rows(folder: Path) -> list[dict]:
    """The rows of the Journal in FOLDER, [] when there is none."""
    path = Path(folder) / Journal.RESULTS
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short when a run was killed while writing it
            continue
    return rows


def merge_shards(folder: Path, done: dict[str, str], files: list[str], out: Path, metadata: dict) -> int:
    """The done files' features (``done``: path -> shard) into OUT, in the order of ``files``; FOLDER removed.

    Returns how many files' features OUT holds (none written when 0).
    """
    from safetensors import safe_open

    features = {}
    for path in (f for f in files if f in done):
        with safe_open(str(folder / done[path]), "np") as shard:
            features[path] = shard.get_tensor(path)
    if features:
        write_features(out, features, metadata)
    shutil.rmtree(folder)
    return len(features)
