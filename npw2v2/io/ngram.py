"""Word n-gram language models: ARPA files read without compiled code, KenLM binaries through kenlm.

An ARPA file lists, for every n-gram it knows, log10 P(last word | the words before) and,
for n-grams that can be extended, a log10 backoff weight. The probability of a word after a
context it has never been seen in backs off to a shorter context:

    log P(w | a b c) = logp(a b c w)                         if "a b c w" is listed
                     = backoff(a b c) + log P(w | b c)       otherwise (backoff 0 when not listed)

down to the unigram logp(w); a word the model does not know is scored as ``<unk>``. This is
what KenLM's ``BaseScore`` computes (its state keeps at most order - 1 words of context, as
``Context`` here does), so an ARPA file gives the same numbers through either, to float32
rounding: KenLM stores and sums them in float32.

Used by the beam search (npw2v2.app.beam). A Hugging Face ``Wav2Vec2ProcessorWithLM``
repository keeps its model in ``language_model/`` beside ``attrs.json`` (alpha, beta,
unk_score_offset, score_boundary) and ``unigrams.txt``: ``read_lm_folder`` reads that.
"""
from __future__ import annotations

import gzip
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
# KenLM's probability for <unk> when an ARPA file lists none (it warns and uses this).
MISSING_UNK_LOG10 = -100.0

Context = tuple  # the words an n-gram model remembers: at most order - 1, oldest first


class LanguageModelError(ValueError):
    """A language model file or folder npw2v2 cannot use; the message names it and the problem."""


class NGramModel:
    """A backoff n-gram model as an ARPA file defines it: log10 probabilities and backoff weights.

    ``unigrams`` are the words the beam search treats as known (npw2v2.app.beam.LMScorer): from an
    ARPA file, as pyctcdecode reads them, the 1-grams written with a backoff weight, <unk> aside;
    in KenLM's files that is every word but </s>.
    """

    def __init__(self, ngrams: dict[tuple[str, ...], tuple[float, float]], order: int, source: str = "<memory>",
                 unigrams: list[str] | None = None):
        self.ngrams = ngrams  # (w1, ..., wn) -> (log10 P(wn | w1..wn-1), log10 backoff of w1..wn)
        self.order = order
        self.source = source
        self.vocabulary = {words[0] for words in ngrams if len(words) == 1}
        self.unigrams = sorted(self.vocabulary - {UNK, EOS}) if unigrams is None else unigrams
        if (UNK,) not in ngrams:
            self.ngrams[(UNK,)] = (MISSING_UNK_LOG10, 0.0)

    def __contains__(self, word: str) -> bool:
        """Whether the model knows the word (<unk> itself counts as unknown, as in KenLM)."""
        return word in self.vocabulary and word != UNK

    def begin_sentence(self) -> Context:
        return (BOS,)

    def null_context(self) -> Context:
        return ()

    def score(self, context: Context, word: str) -> tuple[float, Context]:
        """log10 P(word | context) by backoff, and the context after it (KenLM's BaseScore)."""
        if word not in self.vocabulary:
            word = UNK
        backoff = 0.0
        for start in range(len(context) + 1):  # the longest context first
            history = context[start:]
            found = self.ngrams.get(history + (word,))
            if found is not None:
                return backoff + found[0], self.next_context(context, word)
            known = self.ngrams.get(history)
            backoff += known[1] if known is not None else 0.0
        raise AssertionError("unreachable: <unk> is always a unigram")

    def next_context(self, context: Context, word: str) -> Context:
        keep = self.order - 1
        return (context + (word,))[-keep:] if keep else ()


# ---------------------------------------------------------------------------
# ARPA files


def read_arpa(path) -> NGramModel:
    """An ARPA file (plain text, or gzip'd: .arpa.gz), any order. LanguageModelError names the line at fault."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            return _parse_arpa(lines, str(path))
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise LanguageModelError(f"{path}: cannot read the language model ({e})") from None


def _parse_arpa(lines, source: str) -> NGramModel:
    counts: dict[int, int] = {}
    ngrams: dict[tuple[str, ...], tuple[float, float]] = {}
    unigrams = []  # 1-grams written with a backoff weight (see NGramModel)
    section = None  # None before \data\, 0 in it, n in \n-grams:
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = 0
        elif line == "\\end\\":
            break
        elif line.startswith("\\") and line.endswith("-grams:"):
            if section is None:
                break  # n-grams before any \data\ section
            section = _whole(line[1:-len("-grams:")], source, number)
        elif section == 0 and line.startswith("ngram "):
            n, _, count = line[len("ngram "):].partition("=")
            counts[_whole(n, source, number)] = _whole(count, source, number)
        elif section:
            words, entry, has_backoff = _ngram_line(line, section, source, number)
            ngrams[words] = entry
            if section == 1 and has_backoff:
                unigrams.append(words[0])
    else:
        if section is not None:
            raise LanguageModelError(f"{source}: the file ends before \\end\\ (truncated?)")
    if section is None:
        raise LanguageModelError(f"{source}: not an ARPA file (no \\data\\ section first)")
    _check_counts(ngrams, counts, source)
    return NGramModel(ngrams, max(counts), source, sorted(set(unigrams) - {UNK}))


def _ngram_line(line: str, n: int, source: str, number: int) -> tuple[tuple[str, ...], tuple[float, float], bool]:
    """One n-gram line: "logp<TAB>w1 ... wn[<TAB>backoff]" (spaces tolerated) -> words, (logp, backoff),
    whether the backoff was written."""
    fields = line.split()
    if len(fields) not in (n + 1, n + 2):
        raise LanguageModelError(f"{source}:{number}: a {n}-gram line needs log10 p, {n} words and an optional "
                                 f"backoff, got {line[:80]!r}")
    logp = _log10(fields[0], source, number, "a log10 probability (a number <= 0)", 0.0)
    backoff = _log10(fields[n + 1], source, number, "a log10 backoff weight") if len(fields) == n + 2 else 0.0
    return tuple(sys.intern(w) for w in fields[1:n + 1]), (logp, backoff), len(fields) == n + 2


def _log10(text: str, source: str, number: int, what: str, highest: float = math.inf) -> float:
    """A log10 number of an n-gram line, at most ``highest`` (probabilities: 0; backoff weights may exceed 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or value == math.inf or value > highest:  # -inf is allowed (usually written -99)
        raise LanguageModelError(f"{source}:{number}: {text[:40]!r} is not {what}")
    return value


def _whole(text: str, source: str, number: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise LanguageModelError(f"{source}:{number}: {text[:40]!r} is not a whole number") from None
    if value < 1:
        raise LanguageModelError(f"{source}:{number}: {value} must be at least 1")
    return value


def _check_counts(ngrams: dict, counts: dict[int, int], source: str) -> None:
    """The \\data\\ section's counts against the n-grams found: a mismatch means a damaged file."""
    if not counts:
        raise LanguageModelError(f"{source}: the \\data\\ section lists no 'ngram N=count' lines")
    found = {n: 0 for n in counts}
    for words in ngrams:
        found[len(words)] = found.get(len(words), 0) + 1
    for n in sorted(found):
        if found[n] != counts.get(n, 0):
            raise LanguageModelError(f"{source}: \\data\\ announces {counts.get(n, 0)} {n}-grams, "
                                     f"the file lists {found[n]}")


# ---------------------------------------------------------------------------
# KenLM binaries (optional: pip install kenlm)


class KenLMModel:
    """A KenLM model (binary or ARPA) through the kenlm module, with NGramModel's interface."""

    def __init__(self, path):
        try:
            import kenlm
        except ImportError:
            raise LanguageModelError(f"{path}: a KenLM binary needs the kenlm module (pip install kenlm), "
                                     "or use the ARPA file it was built from") from None
        self._kenlm = kenlm
        try:
            self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError) as e:
            raise LanguageModelError(f"{path}: kenlm cannot read it ({e})") from None
        self.order = self.model.order
        self.source = str(path)

    def __contains__(self, word: str) -> bool:
        return word in self.model

    def begin_sentence(self):
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def null_context(self):
        state = self._kenlm.State()
        self.model.NullContextWrite(state)
        return state

    def score(self, context, word: str):
        after = self._kenlm.State()
        return self.model.BaseScore(context, word, after), after

    unigrams = None  # a binary does not list its words: unigrams.txt beside it does


def load_ngram_model(path) -> NGramModel | KenLMModel:
    """An .arpa / .arpa.gz file read here; anything else (a KenLM .bin) through kenlm."""
    path = Path(path)
    if not path.is_file():
        raise LanguageModelError(f"{path}: no such language model file")
    if path.name.endswith((".arpa", ".arpa.gz")):
        return read_arpa(path)
    return KenLMModel(path)


# ---------------------------------------------------------------------------
# Hugging Face language_model/ folders


@dataclass
class LMFolder:
    """What a Wav2Vec2ProcessorWithLM repository's language_model/ folder holds."""

    model_path: Path  # the .arpa or KenLM binary
    unigrams: list[str] | None  # unigrams.txt, one word a line (None when absent)
    attrs: dict  # attrs.json: alpha, beta, unk_score_offset, score_boundary


LM_SUFFIXES = (".arpa", ".arpa.gz", ".bin", ".binary")


def read_lm_folder(folder) -> LMFolder:
    """A language_model/ folder (or a repository folder holding one): its model file, unigrams and attrs."""
    folder = Path(folder)
    if (folder / "language_model").is_dir():
        folder = folder / "language_model"
    models = sorted(p for p in folder.iterdir() if p.name.endswith(LM_SUFFIXES)) if folder.is_dir() else []
    if len(models) != 1:
        found = ", ".join(p.name for p in models) or "none"
        raise LanguageModelError(f"{folder}: a language model folder holds one .arpa or KenLM .bin file; found {found}")
    attrs = _read_attrs(folder / "attrs.json")
    unigrams_file = folder / "unigrams.txt"
    unigrams = None
    if unigrams_file.is_file():
        unigrams = [w for w in unigrams_file.read_text(encoding="utf-8").splitlines() if w]
    return LMFolder(models[0], unigrams, attrs)


ATTRS = {"alpha": float, "beta": float, "unk_score_offset": float, "score_boundary": bool}


def _read_attrs(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        attrs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LanguageModelError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(attrs, dict):
        raise LanguageModelError(f"{path}: must be a JSON object")
    checked = {}
    for key, kind in ATTRS.items():
        if key not in attrs:
            continue
        value = attrs[key]
        ok = isinstance(value, bool) if kind is bool else (isinstance(value, (int, float))
                                                           and not isinstance(value, bool) and math.isfinite(value))
        if not ok:
            raise LanguageModelError(f"{path}: {key} must be {'true or false' if kind is bool else 'a number'}, "
                                     f"got {value!r:.40}")
        checked[key] = kind(value)
    return checked
