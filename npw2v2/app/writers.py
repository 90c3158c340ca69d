"""Output writers: transcripts as text, TSV, JSON lines or subtitles; alignments also as Praat TextGrids and
Audacity labels; label scores; feature files.

Each renders or writes one result; the command line decides where results go.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io.outputs import write_atomically

# ---------------------------------------------------------------------------
# Transcripts


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def srt(words, max_words: int = 10, max_seconds: float = 5.0) -> str:
    """Subtitles from timed words: cues of at most ``max_words`` words and ``max_seconds``."""
    cues, cue = [], []
    for word in words:
        if cue and (len(cue) >= max_words or word.end - cue[0].start > max_seconds):
            cues.append(cue)
            cue = []
        cue.append(word)
    if cue:
        cues.append(cue)
    return "".join(f"{i}\n{_timestamp(c[0].start)} --> {_timestamp(c[-1].end)}\n{' '.join(w.text for w in c)}\n\n"
                   for i, c in enumerate(cues, 1))


def render(result, fmt: str, timestamps: bool) -> str:
    """One transcription in the chosen format, ending with a newline."""
    if fmt == "text":
        return result.text + "\n"
    if fmt == "tsv":
        return f"{result.source}\t{result.seconds:.2f}\t{result.text}\n"
    if fmt == "srt":
        return srt(result.words)
    return json.dumps(record(result, timestamps), ensure_ascii=False) + "\n"


def record(result, timestamps: bool) -> dict:
    """One transcription as the json format writes it: path, text, seconds, and words with times."""
    out = {"path": result.source, "text": result.text, "seconds": round(result.seconds, 3)}
    if timestamps:
        out["words"] = [{"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)} for w in result.words]
    return out


def render_classification(result, fmt: str) -> str:
    """One input's label scores: "path<TAB>label score<TAB>..." or a JSON object, ending with a newline."""
    if fmt == "json":
        labels = [{"label": label, "score": round(score, 6)} for label, score in result.scores]
        return json.dumps({"path": result.source, "seconds": round(result.seconds, 3), "labels": labels},
                          ensure_ascii=False) + "\n"
    return "\t".join([result.source, *(f"{label} {score:.4f}" for label, score in result.scores)]) + "\n"


# ---------------------------------------------------------------------------
# Alignments (npw2v2.app.align.Alignment)

ALIGNMENT_FORMATS = {"json": "json", "srt": "srt", "textgrid": "TextGrid", "audacity": "txt"}


def render_alignment(result, fmt: str, chars: bool = False) -> str:
    """One alignment as JSON (a line), SRT subtitles, a Praat TextGrid or Audacity labels.

    ``chars`` adds the characters: to the JSON, as a second TextGrid tier, as labels of their own.
    """
    if fmt == "json":
        return json.dumps(alignment_record(result, chars), ensure_ascii=False) + "\n"
    if fmt == "srt":
        return srt(result.words)
    if fmt == "textgrid":
        tiers = [("words", result.words)] + ([("chars", result.chars)] if chars else [])
        return textgrid(tiers, result.seconds)
    return audacity_labels(result.words + (result.chars if chars else []))


def alignment_record(result, chars: bool = False) -> dict:
    """path, text, seconds, score, and each word (and character) with start, end and score."""
    def spans(items, key):
        return [{key: s.text, "start": round(s.start, 3), "end": round(s.end, 3), "score": round(s.score, 4)}
                for s in items]

    out = {"path": result.source, "text": result.text, "seconds": round(result.seconds, 3),
           "score": round(result.score, 4), "words": spans(result.words, "word")}
    if chars:
        out["chars"] = spans(result.chars, "char")
    return out


def textgrid(tiers, seconds: float) -> str:
    """Praat's TextGrid (long text format): an interval tier per (name, spans), the gaps as empty intervals."""
    end = max([seconds] + [s.end for _, spans in tiers for s in spans])
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {end:.3f}",
             "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for number, (name, spans) in enumerate(tiers, 1):
        intervals = _intervals(spans, end)
        lines += [f"    item [{number}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {end:.3f}", f"        intervals: size = {len(intervals)}"]
        for k, (start, stop, text) in enumerate(intervals, 1):
            text = text.replace('"', '""')  # Praat doubles a quote inside a string
            lines += [f"        intervals [{k}]:", f"            xmin = {start:.3f}", f"            xmax = {stop:.3f}",
                      f'            text = "{text}"']
    return "\n".join(lines) + "\n"


def _intervals(spans, end: float) -> list[tuple[float, float, str]]:
    """Spans and the silences between them as (start, end, text), covering 0 .. end without gaps."""
    intervals, now = [], 0.0
    for s in spans:
        if s.start > now:
            intervals.append((now, s.start, ""))
        intervals.append((s.start, s.end, s.text))
        now = s.end
    if now < end:
        intervals.append((now, end, ""))
    return intervals


def audacity_labels(spans) -> str:
    """Audacity's label track: "start<TAB>end<TAB>label" a line, seconds, in order of start."""
    return "".join(f"{s.start:.6f}\t{s.end:.6f}\t{s.text}\n" for s in sorted(spans, key=lambda s: (s.start, -s.end)))


# ---------------------------------------------------------------------------
# Files


def output_paths(sources: list[str], folder: Path, suffix: str) -> list[Path]:
    """One output file per input in FOLDER, named after the input; clashing names get -2, -3, ..."""
    taken, paths = set(), []
    for source in sources:
        stem, n = Path(source).stem, 1
        name = f"{stem}.{suffix}"
        while name in taken:
            n += 1
            name = f"{stem}-{n}.{suffix}"
        taken.add(name)
        paths.append(folder / name)
    return paths


def write_features(out: Path, features: dict, metadata: dict) -> None:
    """Features ({path: [layers, T, D]}) to OUT.npy (one input) or OUT.safetensors (a tensor per path), whole."""
    if out.suffix.lower() == ".npy":
        def write(tmp):
            with open(tmp, "wb") as f:  # a file object: np.save would add .npy to the temporary name
                np.save(f, next(iter(features.values())))
    else:
        from safetensors.numpy import save_file

        def write(tmp):
            save_file({f: np.ascontiguousarray(r) for f, r in features.items()}, str(tmp), metadata=metadata)
    write_atomically(out, write)
