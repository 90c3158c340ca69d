"""CTC prefix beam search with a word n-gram language model and hotwords.

Greedy decoding (npw2v2.app.ctc) keeps one reading of the frames; a beam search keeps the
``beam_width`` best prefixes (partial transcripts) frame after frame, extending each by every
likely token, and ranks them by

    logit score  +  LM score  +  hotword score

- logit score: the sum of the chosen tokens' log-probabilities along the frames (prefixes
  that collapse to the same text, word part and last token add up: log-sum-exp);
- LM score: for each finished word, alpha * ln P(word | the words before) + beta, P from the
  n-gram model (npw2v2.io.ngram; a word it does not know costs ``unk_score_offset`` more);
  the unfinished word at the end of a prefix costs ``unk_score_offset`` when it is the start
  of no known word (scaled up past 6 characters); the last word is scored with </s>;
- hotword score: ``weight`` for each hotword spelled out, and a share of it for a word part
  that is a hotword's start.

This is pyctcdecode's algorithm (kensho-technologies/pyctcdecode 0.5, behind transformers'
Wav2Vec2ProcessorWithLM), with its defaults and its scores: the same settings give the same
transcripts (tests/test_beam.py, against its recorded outputs). Its rules are kept where they
decide a transcript or its word frames, each said where it acts below: which merged prefix's
frames are kept, an empty word scored at the end of a prefix that ends in a space.
"""
from __future__ import annotations

import bisect
import heapq
import math
import re
import warnings
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from ..io.hub import locate_lm
from ..io.ngram import EOS, load_ngram_model, read_lm_folder

BLANK, SPACE, UNKNOWN = "", " ", "⁇"  # the alphabet's blank, word boundary and unknown token
# Defaults, pyctcdecode's (its constants.py).
ALPHA, BETA = 0.5, 1.5
UNK_SCORE_OFFSET = -10.0
BEAM_WIDTH = 100
BEAM_PRUNE_LOGP = -10.0  # prefixes this far below the best one are dropped
TOKEN_MIN_LOGP = -5.0  # tokens less likely than this in a frame are not tried (the frame's best always is)
HOTWORD_WEIGHT = 10.0
AVERAGE_WORD_LENGTH = 6  # characters: unknown word parts longer than this cost proportionally more
MIN_PROBABILITY = 1e-15  # log-probabilities are clipped to ln of this
LN_10 = 1.0 / math.log10(math.e)  # log10 -> ln (written as pyctcdecode does, for the same last bit)

NO_FRAMES = (-1, -1)


# ---------------------------------------------------------------------------
# The alphabet


def alphabet(id_to_token: list[str], delimiter: str = "|") -> list[str]:
    """A CTC vocabulary (token by id) as the beam search reads it: the blank "" (``<pad>`` or
    ``[pad]``; else ``_``), the word delimiter as a space, ``<unk>`` as ⁇; other tokens as they are.

    Raises ValueError for a vocabulary without blank or with sub-word (BPE) tokens, which
    this search does not decode yet.
    """
    labels = list(id_to_token)
    if any(t.startswith(("##", "▁")) for t in labels):
        raise ValueError("the vocabulary has sub-word (BPE) tokens: the beam search decodes character vocabularies")
    if delimiter in labels and SPACE not in labels:
        labels[labels.index(delimiter)] = SPACE
    labels = [BLANK if re.fullmatch(r"[<\[]pad[>\]]", t, re.IGNORECASE) else t for t in labels]
    if "_" in labels and BLANK not in labels:
        labels[labels.index("_")] = BLANK
    if BLANK not in labels:
        raise ValueError("the vocabulary has no CTC blank (<pad>, [pad] or _)")
    return [UNKNOWN if re.fullmatch(r"[<\[]unk[>\]]", t, re.IGNORECASE) else t for t in labels]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Each frame's log-probabilities, clipped below at ln 1e-15. [T, V] -> [T, V], in the logits' dtype."""
    logits = np.asarray(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        result = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return np.clip(result, result.dtype.type(np.log(MIN_PROBABILITY)), 0)


# ---------------------------------------------------------------------------
# Scores beyond the acoustic model's


class LMScorer:
    """A word n-gram model's share of a prefix's score (pyctcdecode's LanguageModel).

    ``model``: an npw2v2.io.ngram model (log10 scores). ``unigrams``: the words that count as
    known (default: the model's own list; none known for a KenLM binary without unigrams.txt),
    kept only where the model knows them too.
    """

    def __init__(self, model, unigrams=None, alpha: float = ALPHA, beta: float = BETA,
                 unk_score_offset: float = UNK_SCORE_OFFSET, score_boundary: bool = True):
        self.model, self.order = model, model.order
        self.alpha, self.beta, self.unk_score_offset, self.score_boundary = alpha, beta, unk_score_offset, score_boundary
        words = model.unigrams if unigrams is None else unigrams
        self.known = sorted({w for w in words if w in model}) if words is not None else []
        self._known_set = set(self.known)

    def start(self):
        """The state before the first word: the start of a sentence, or no context at all."""
        return self.model.begin_sentence() if self.score_boundary else self.model.null_context()

    def word(self, state, word: str, last: bool = False) -> tuple[float, object]:
        """alpha * ln P(word | state) + beta (with </s> after it when ``last``), and the state after."""
        log10, after = self.model.score(state, word)
        if (self._known_set and word not in self._known_set) or word not in self.model:
            log10 += self.unk_score_offset
        if last and self.score_boundary:
            log10 += self.model.score(after, EOS)[0]
        return self.alpha * log10 * LN_10 + self.beta, after

    def partial(self, word_part: str) -> float:
        """What an unfinished word costs: nothing if it starts a known word, else unk_score_offset
        (times len / 6 past 6 characters). Not scaled by alpha."""
        cost = 0.0 if starts_a_word(self.known, word_part) else self.unk_score_offset
        return cost * len(word_part) / AVERAGE_WORD_LENGTH if len(word_part) > AVERAGE_WORD_LENGTH else cost


def starts_a_word(sorted_words: list[str], prefix: str) -> bool:
    """Whether any of the sorted words starts with ``prefix``: the first word >= prefix does if any does."""
    i = bisect.bisect_left(sorted_words, prefix)
    return i < len(sorted_words) and sorted_words[i].startswith(prefix)


class Hotwords:
    """Words to favour: ``weight`` for each one spelled out as a whole word, and for an unfinished
    word that starts one, weight * its length / the length of the shortest hotword it starts.

    ``phrases`` may hold several words each: every word counts on its own (pyctcdecode's HotwordScorer).
    """

    def __init__(self, phrases=(), weight: float = HOTWORD_WEIGHT):
        words = [w for phrase in phrases for w in phrase.split()]
        self.weight = weight
        self.words = sorted(set(words))
        # whole words only: a hotword between spaces or the text's ends; the longest tried first
        alternatives = [rf"(?<!\S){re.escape(w)}(?!\S)" for w in sorted(words, key=len, reverse=True)]
        self.pattern = re.compile("|".join(alternatives)) if alternatives else None

    def __bool__(self) -> bool:
        return bool(self.words)

    def __contains__(self, word_part: str) -> bool:
        return starts_a_word(self.words, word_part)

    def score(self, text: str) -> float:
        return self.weight * len(self.pattern.findall(text)) if self.pattern else 0.0

    def partial(self, word_part: str) -> float:
        shortest = min((len(w) for w in self.words if w.startswith(word_part)), default=0)
        return self.weight * len(word_part) / shortest if shortest else 0.0


# ---------------------------------------------------------------------------
# The search


class Prefix(NamedTuple):
    """A partial transcript. ``text`` holds the finished, LM-scored words; ``next_word`` a word
    finished this frame, not scored yet; ``word_part`` the unfinished word; frames are
    [start, end) frame numbers of each finished word and of the word part."""

    text: str
    next_word: str
    word_part: str
    last_token: str | None
    word_frames: tuple
    part_frames: tuple
    logit_score: float


EMPTY = Prefix("", "", "", None, (), NO_FRAMES, 0.0)
# Prefix(*fields) without the keyword handling of a NamedTuple's __new__: the search makes a
# million prefixes a minute of audio, and this is a third of the cost of making one.
_prefix = tuple.__new__


@dataclass
class Hypothesis:
    """One transcript the search ends with: its words with their frames, and its scores."""

    text: str
    words: list[tuple[str, tuple[int, int]]]  # (word, (first frame, last frame + 1))
    logit_score: float  # the acoustic model's share
    score: float  # what the search ranked by: logit + LM + hotword scores


def _join(text: str, word: str) -> str:
    return text if not word else word if not text else text + SPACE + word


def extend(prefix: Prefix, token: str, logp: float, frame: int) -> Prefix:
    """The prefix after one more frame that reads ``token`` with log-probability ``logp``."""
    text, next_word, part, last, words, part_frames, score = prefix
    score += logp
    if token == BLANK or token == last:  # a blank, or the same token again: the text stays
        part_frames = part_frames if token == BLANK else (part_frames[0], frame + 1)
        return _prefix(Prefix, (text, next_word, part, token, words, part_frames, score))
    if token == SPACE:  # the word part is finished, to be LM-scored
        words = words + (part_frames,) if part else words
        return _prefix(Prefix, (text, part, "", token, words, NO_FRAMES, score))
    part_frames = (frame, frame + 1) if part_frames[0] < 0 else (part_frames[0], frame + 1)
    return _prefix(Prefix, (text, next_word, part + token, token, words, part_frames, score))


def merge(prefixes: list[Prefix]) -> list[Prefix]:
    """Prefixes with the same text, word part and last token as one, their probabilities added.

    The merged prefix takes the first one's place in the list but the last one's words and
    frames (pyctcdecode's rule).
    """
    merged: dict[tuple, Prefix] = {}
    for p in prefixes:
        key = (_join(p.text, p.next_word), p.word_part, p.last_token)
        seen = merged.get(key)
        merged[key] = p if seen is None else _prefix(Prefix, (*p[:-1], _log_add(seen.logit_score, p.logit_score)))
    return list(merged.values())


def _log_add(a: float, b: float) -> float:
    return a + math.log(1 + math.exp(b - a)) if a >= b else b + math.log(1 + math.exp(a - b))


class _Scores:
    """The LM and hotword share of prefixes, cached by text: one n-gram lookup per new word."""

    def __init__(self, lm: LMScorer | None, hotwords: Hotwords):
        self.lm, self.hotwords = lm, hotwords
        self.words = {("", False): (0.0, 0.0, lm.start() if lm else None)}  # (text, last) -> (with hotwords, LM, state)
        self.parts: dict[str, float] = {}

    def rank(self, p: Prefix, last: bool = False) -> tuple[Prefix, float]:
        """The prefix with its new word moved into its text, and the score it is ranked by."""
        if p.next_word:
            text = _join(p.text, p.next_word)
            scored = _prefix(Prefix, (text, "", p.word_part, p.last_token, p.word_frames, p.part_frames, p.logit_score))
        else:
            text, scored = p.text, p
        if self.lm is None:
            if not self.hotwords:
                return scored, p.logit_score
            return scored, p.logit_score + self.hotwords.score(text) + self.hotwords.partial(p.word_part)
        key = (text, last)
        if key not in self.words:
            _, before, state = self.words[(p.text, False)]
            # pyctcdecode scores next_word even when it is empty (a prefix ending in a space, at
            # the end): an unknown word, which costs unk_score_offset. Kept, for its transcripts.
            score, state = self.lm.word(state, p.next_word, last)
            self.words[key] = (before + score + self.hotwords.score(text), before + score, state)
        total = self.words[key][0]
        if p.word_part:
            total += self._part(p.word_part)
        return scored, p.logit_score + total

    def _part(self, word_part: str) -> float:
        if word_part not in self.parts:
            in_hotword = self.hotwords and word_part in self.hotwords
            self.parts[word_part] = self.hotwords.partial(word_part) if in_hotword else self.lm.partial(word_part)
        return self.parts[word_part]


def _best(ranked: list[tuple[Prefix, float]], beam_width: int, prune_logp: float) -> list[tuple[Prefix, float]]:
    """Those within prune_logp of the best, then the beam_width best of them."""
    top = max(score for _, score in ranked)
    kept = [r for r in ranked if r[1] >= top + prune_logp]
    return heapq.nlargest(beam_width, kept, key=itemgetter(1))


def _forget_old_words(ranked: list[tuple[Prefix, float]], order: int) -> list[Prefix]:
    """prune_history: of prefixes alike in their last order - 1 words (all the LM still sees), the best."""
    keep_words = max(1, order - 1)
    seen, kept = set(), []
    for p, _ in ranked:
        key = (tuple(p.text.split()[-keep_words:]), p.word_part, p.last_token)
        if key not in seen:
            seen.add(key)
            kept.append(p)
    return kept


def candidates(log_probs_of_frame: np.ndarray, token_min_logp: float) -> list[int]:
    """The token ids tried in a frame: those at least token_min_logp likely, and the best one in any case.

    (Their order does not matter: only prefixes extended by the same token can merge.)
    """
    ids = set(np.flatnonzero(log_probs_of_frame >= token_min_logp).tolist())
    ids.add(int(log_probs_of_frame.argmax()))
    return sorted(ids)


def beam_search(log_probs: np.ndarray, labels: list[str], lm: LMScorer | None = None,
                hotwords: Hotwords | None = None, beam_width: int = BEAM_WIDTH,
                beam_prune_logp: float = BEAM_PRUNE_LOGP, token_min_logp: float = TOKEN_MIN_LOGP,
                prune_history: bool = False) -> list[Hypothesis]:
    """The best transcripts of one input's frames, best first (at most beam_width).

    log_probs: [T, V] log-probabilities (``log_softmax`` of the logits); labels: ``alphabet``'s V tokens.
    """
    if log_probs.ndim != 2 or log_probs.shape[1] != len(labels):
        raise ValueError(f"log_probs must be [T, {len(labels)}] (frames, tokens), got shape {log_probs.shape}")
    scores = _Scores(lm, hotwords or Hotwords())
    order = lm.order if lm is not None else 1
    prefixes = [EMPTY]
    for frame, column in enumerate(log_probs):
        grown = [extend(p, labels[i], float(column[i]), frame)
                 for i in candidates(column, token_min_logp) for p in prefixes]
        ranked = _best([scores.rank(p) for p in merge(grown)], beam_width, beam_prune_logp)
        prefixes = _forget_old_words(ranked, order) if prune_history else [p for p, _ in ranked]
    return _finish(prefixes, scores, beam_width, beam_prune_logp)


def _finish(prefixes: list[Prefix], scores: _Scores, beam_width: int, prune_logp: float) -> list[Hypothesis]:
    """The last word part becomes a word, scored with the end of the sentence; the best, ranked."""
    ended = [Prefix(p.text, p.word_part, "", None, p.word_frames + (p.part_frames,) if p.word_part else p.word_frames,
                    NO_FRAMES, p.logit_score) for p in prefixes]
    ranked = _best([scores.rank(p, last=True) for p in merge(ended)], beam_width, prune_logp)
    return [Hypothesis(" ".join(p.text.split()), list(zip(p.text.split(), p.word_frames)), p.logit_score, score)
            for p, score in ranked]


# ---------------------------------------------------------------------------
# A decoder: the search bound to a vocabulary, a language model and settings


@dataclass
class BeamDecoder:
    """``decode(logits)``: an input's transcripts, best first, by the beam search with these settings."""

    labels: list[str]  # alphabet(...) of the model's vocabulary
    lm: LMScorer | None = None
    hotwords: Hotwords = field(default_factory=Hotwords)
    beam_width: int = BEAM_WIDTH
    beam_prune_logp: float = BEAM_PRUNE_LOGP
    token_min_logp: float = TOKEN_MIN_LOGP
    prune_history: bool = False

    def decode(self, logits) -> list[Hypothesis]:
        """logits: [T, V], one input's (its valid frames) -> its hypotheses, best first."""
        return beam_search(log_softmax(np.asarray(logits, dtype=np.float32)), self.labels, self.lm, self.hotwords,
                           self.beam_width, self.beam_prune_logp, self.token_min_logp, self.prune_history)


def load_lm(path, alpha: float | None = None, beta: float | None = None, unk_score_offset: float | None = None,
            score_boundary: bool | None = None) -> LMScorer:
    """A language model from an .arpa / .arpa.gz file, a KenLM binary (with the kenlm module), or a
    Hugging Face ``language_model/`` folder (or the repository folder holding one, or its hub id:
    npw2v2.io.hub.locate_lm), whose attrs.json gives the weights not given here and whose
    unigrams.txt the known words.

    Raises LanguageModelError naming the file and the problem.
    """
    path = locate_lm(str(path))
    unigrams, attrs = None, {}
    if path.is_dir():
        folder = read_lm_folder(path)
        path, unigrams, attrs = folder.model_path, folder.unigrams, folder.attrs
    model = load_ngram_model(path)
    given = {"alpha": alpha, "beta": beta, "unk_score_offset": unk_score_offset, "score_boundary": score_boundary}
    weights = {**attrs, **{k: v for k, v in given.items() if v is not None}}
    return LMScorer(model, unigrams, **weights)


LM_WEIGHTS = ("alpha", "beta", "unk_score_offset", "score_boundary")


def decoder_for(id_to_token: list[str], delimiter: str = "|", lm=None, hotwords=(),
                hotword_weight: float = HOTWORD_WEIGHT, **settings) -> BeamDecoder:
    """A BeamDecoder for a CTC vocabulary (token by id).

    ``lm``: a path (load_lm, which takes the LM_WEIGHTS among ``settings``), an LMScorer, or
    None; the other ``settings`` are BeamDecoder's (beam_width, beam_prune_logp, ...). Warns when
    the LM's words are spelled with characters the vocabulary lacks (a lowercase LM for an
    uppercase vocabulary, say): every word would be unknown to it.
    """
    weights = {k: settings.pop(k) for k in LM_WEIGHTS if k in settings}
    if lm is None or isinstance(lm, LMScorer):
        if weights:
            raise ValueError(f"{', '.join(weights)}: weights of a language model read from a path; "
                             "a loaded one (load_lm) takes them when it is read")
    else:
        lm = load_lm(lm, **weights)
    labels = alphabet(id_to_token, delimiter)
    if lm is not None:
        _check_spelling(lm, labels)
    return BeamDecoder(labels, lm, Hotwords(hotwords, hotword_weight), **settings)


def _check_spelling(lm: LMScorer, labels: list[str]) -> None:
    letters = set("".join(lm.known))
    missing = sorted(letters - set(labels))
    if letters and len(missing) > 0.2 * len(letters):
        warnings.warn(f"{lm.model.source}: its words use characters the model's vocabulary lacks "
                      f"({' '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}): a different case or alphabet?",
                      stacklevel=3)

