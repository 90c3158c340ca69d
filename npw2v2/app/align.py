"""CTC forced alignment: when each character and word of a known transcript is spoken.

Given a model's log-probabilities per frame and the transcript, Viterbi over the CTC trellis
finds the most likely frame-by-frame path that spells exactly that transcript: each frame is
either the blank or one of the transcript's tokens, tokens come in order, a token may last
several frames, and two equal consecutive tokens need a blank between them ("LL" is L, blank, L).

The trellis has a blank state before, between and after the L tokens (2L + 1 states). It is
kept as two arrays, blank states [B, L + 1] and token states [B, L], so each frame's step is a
few whole-array operations over a padded batch, with no strided access.

Ties are broken as torchaudio.functional.forced_align (its CPU kernel, 2.9) breaks them, so the
paths are the same: a state comes from the state before it, or skips a blank, only when that is
strictly better than both other choices, and otherwise stays. At the last frame the path ends on
the last token unless the final blank is strictly better. Sums are in the emissions' own float type,
one addition per frame in the same order, so equal inputs give bit-equal sums and equal ties.

Memory: back-pointers are one byte per state and frame; a batch whose back-pointers for every
frame fit PTR_BUDGET bytes keeps them all. Longer ones keep the forward variables every K
frames (K about 2 sqrt(T)), then recompute one block of K frames at a time while tracing the
path back: about 4 sqrt(T) bytes per state instead of T, for twice the forward work. One hour
(T = 180,000 frames) against 45,000 tokens: about 155 MB, where keeping them all takes 16 GB.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

import numpy as np

from ..core.backend import asnumpy
from . import pipeline

PTR_BUDGET = 256 << 20  # back-pointers kept for every frame up to this many bytes, else blocks


class AlignmentError(ValueError):
    """An input that cannot be aligned; the message names the item."""


# ---------------------------------------------------------------------------
# The trellis: log-probabilities and token ids to the best path


def forced_align(log_probs, targets, frame_lengths=None, target_lengths=None, blank: int = 0,
                 block: int | None = None, names=None) -> tuple[np.ndarray, np.ndarray]:
    """The Viterbi path of each item of a padded batch: (token ids [B, T], their log-probabilities [B, T]).

    ``log_probs`` [B, T, V] (float32 or float64, log-softmax of the logits), ``targets`` [B, L]
    token ids without the blank, ``frame_lengths`` and ``target_lengths`` [B] (default: all).
    Frames past an item's length hold the blank and a log-probability of 0. The path equals
    torchaudio.functional.forced_align's for each item alone. ``block`` forces the block
    length of the recomputing pass (frames), for tests; None chooses by PTR_BUDGET. Errors
    name an item by ``names[b]`` when given, else as "item b".
    """
    log_probs, targets, frame_lengths, target_lengths = check_inputs(log_probs, targets, frame_lengths,
                                                                     target_lengths, blank, names)
    states = best_states(log_probs, targets, frame_lengths, target_lengths, blank, block)  # [B, T]
    tokens, scores = path_scores(log_probs, states, targets, blank)
    past = np.arange(log_probs.shape[1])[None, :] >= frame_lengths[:, None]
    tokens[past], scores[past] = blank, 0
    return tokens, scores


def path_scores(log_probs, states, targets, blank: int):
    """The token ids [B, T] of the paths' states and their log-probabilities [B, T]."""
    tokens = state_tokens(states, targets, blank)
    return tokens, np.take_along_axis(log_probs, tokens[:, :, None], axis=2)[:, :, 0]


def state_tokens(states, targets, blank: int) -> np.ndarray:
    """Token ids of trellis states [B, T]: even states are blanks, state 2k + 1 is targets[k]."""
    k = np.clip((states - 1) // 2, 0, max(targets.shape[1] - 1, 0))
    return np.where(states % 2 == 1, np.take_along_axis(targets, k, axis=1), blank)


def check_inputs(log_probs, targets, frame_lengths, target_lengths, blank: int, names=None):
    """The inputs as arrays of the right types, or AlignmentError naming the first item that cannot align."""
    log_probs = np.asarray(log_probs)
    if log_probs.dtype not in (np.float32, np.float64):
        log_probs = log_probs.astype(np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    if log_probs.ndim != 3 or targets.ndim != 2 or len(targets) != len(log_probs):
        raise AlignmentError(f"log_probs must be [B, T, V] and targets [B, L] for the same B, got "
                             f"{log_probs.shape} and {targets.shape}")
    B, T, V = log_probs.shape
    frame_lengths = np.full(B, T) if frame_lengths is None else np.asarray(frame_lengths, dtype=np.int64)
    target_lengths = np.full(B, targets.shape[1]) if target_lengths is None else \
        np.asarray(target_lengths, dtype=np.int64)
    if not 0 <= blank < V:
        raise AlignmentError(f"blank {blank} is not a token id of a {V}-token vocabulary")
    for b in range(B):
        name = names[b] if names is not None else f"item {b}"
        check_item(name, log_probs[b], targets[b], int(frame_lengths[b]), int(target_lengths[b]), blank)
    return log_probs, targets, frame_lengths, target_lengths


def check_item(name: str, log_probs, targets, frames: int, length: int, blank: int) -> None:
    """One item of a batch: log_probs [T, V] over ``frames``, targets [L] over ``length``."""
    (T, V), L = log_probs.shape, len(targets)
    if not 0 < frames <= T:
        raise AlignmentError(f"{name}: {frames} frames, outside 1 .. {T}")
    if length == 0:
        raise AlignmentError(f"{name}: an empty transcript (no tokens to align)")
    if not 0 < length <= L:
        raise AlignmentError(f"{name}: {length} tokens, outside 1 .. {L} (the targets' columns)")
    if np.isnan(log_probs[:frames]).any() or np.isposinf(log_probs[:frames]).any():
        raise AlignmentError(f"{name}: log-probabilities hold NaN or +inf")
    target = targets[:length]
    if ((target < 0) | (target >= V) | (target == blank)).any():
        bad = sorted(set(target[(target < 0) | (target >= V) | (target == blank)].tolist()))
        raise AlignmentError(f"{name}: token ids {bad} are not tokens of a {V}-token vocabulary besides "
                             f"the blank ({blank})")
    problem = too_few_frames(name, target, frames)
    if problem:
        raise AlignmentError(problem)


def too_few_frames(name: str, target, frames: int) -> str | None:
    """Why ``frames`` cannot spell ``target``, or None when they can."""
    needed = needed_frames(target)
    if needed <= frames:
        return None
    repeats = f", {needed - len(target)} of them repeating the one before (a blank between)," \
        if needed > len(target) else ""
    return (f"{name}: {len(target)} tokens{repeats} need at least {needed} frames; it has {frames} "
            "(is this the transcript of this audio?)")


def needed_frames(target) -> int:
    """The fewest frames that can spell ``target``: a frame per token, one more per repeat."""
    target = np.asarray(target)
    return len(target) + int((target[1:] == target[:-1]).sum())


def best_states(log_probs, targets, frame_lengths, target_lengths, blank: int, block: int | None = None):
    """The trellis state of every frame on the best path [B, T] (-1 past an item's frames).

    Items are run longest first, so the items still running at frame t are the first n rows
    and each step works on views of them. Inputs are checked already (check_inputs).
    """
    order = np.argsort(-frame_lengths, kind="stable")
    if (order != np.arange(len(order))).any():  # sorted already (one item, say): no copy of the emissions
        log_probs, targets, frame_lengths, target_lengths = (a[order] for a in (log_probs, targets, frame_lengths,
                                                                                 target_lengths))
    trellis = _Trellis(log_probs, targets, frame_lengths, target_lengths, blank)
    T = log_probs.shape[1]
    K = _block_length(T, trellis.bytes_per_frame) if block is None else max(1, block)
    states = trellis.backtrack(K)
    out = np.empty_like(states)
    out[order] = states
    return out


def _bands(targets, frame_lengths, target_lengths, T: int) -> np.ndarray:
    """[T, 2]: at each frame, the states some running item can be in and still finish from, as
    (lo, hi): blanks lo .. hi - 1 and tokens lo .. min(hi, L) - 1.

    Token k is reached at the earliest at frame k + (repeats before it) and must be left by
    T_b - 1 - (tokens after it) - (repeats after it); the blank before it lives one frame less
    late, the blank after it one frame later. Only these states matter: a state on a path that
    finishes takes its values from states on such paths too, so the others are never read
    while they matter, and skipping them changes no path (the first and last L frames of an
    item, where the band is narrow, cost about half).
    """
    B, L = targets.shape
    lo = np.full((B, T), L + 1)  # frames past an item's: no states (frames past all items' are skipped)
    hi = np.zeros((B, T), np.int64)
    for b in range(B):
        n, frames = int(target_lengths[b]), int(frame_lengths[b])
        repeats = np.concatenate([[0], np.cumsum(targets[b, 1:n] == targets[b, :n - 1])])  # [n]
        earliest = np.arange(n) + repeats
        latest = frames - 1 - (n - 1 - np.arange(n)) - (repeats[-1] - repeats)
        t = np.arange(frames)
        lo[b, :frames] = np.searchsorted(latest, t, side="left")
        hi[b, :frames] = np.minimum(n + 1, 1 + np.searchsorted(earliest, t - 1, side="right"))
    return np.stack([lo.min(axis=0), hi.max(axis=0)], axis=1)


def _block_length(T: int, bytes_per_frame: int) -> int:
    """Frames per block of back-pointers: all of them within PTR_BUDGET, else about 2 sqrt(T).

    With blocks of K frames the pass keeps T / K checkpoints (4 or 8 bytes a state) and one
    block of back-pointers (1 byte a state): 4 T / K + K is least at K = 2 sqrt(T).
    """
    if T * bytes_per_frame <= PTR_BUDGET:
        return T
    return max(1, math.ceil(2 * math.sqrt(T)))


class _Trellis:
    """The Viterbi forward variables of a padded batch sorted by frame length, longest first.

    ``blank_a`` [B, L + 1]: the best log-probability of a path ending at frame t in the blank
    before token k (k = L: after the last); ``token_a`` [B, L]: ending in token k. Padded token
    states read an impossible token (-inf), so they and the blanks after them stay -inf.
    """

    def __init__(self, log_probs, targets, frame_lengths, target_lengths, blank: int):
        B, T, V = log_probs.shape
        L = targets.shape[1]
        self.log_probs, self.frame_lengths, self.target_lengths, self.blank = log_probs, frame_lengths, \
            target_lengths, blank
        padded = np.arange(L)[None, :] >= target_lengths[:, None]  # [B, L]
        self.targets = np.where(padded, V, targets)  # V: the impossible token, a -inf column below
        self.dtype = log_probs.dtype
        # a blank may be skipped between two different tokens only: -inf where it may not
        skip = np.zeros((B, L), self.dtype)
        skip[:, 0] = -np.inf
        skip[:, 1:][targets[:, 1:] == targets[:, :-1]] = -np.inf
        self.skip = skip
        self.bytes_per_frame = B * (2 * L + 1)
        self.running = [int((frame_lengths > t).sum()) for t in range(T)]  # rows still running at frame t
        self.band = _bands(targets, frame_lengths, target_lengths, T)  # [T, 2]
        # where each token's log-probability sits in a frame's rows of V + 1 (the last: impossible)
        self.flat_targets = self.targets + (V + 1) * np.arange(B)[:, None]  # [B, L]
        self.row = np.empty((B, V + 1), self.dtype)
        self.row[:, -1] = -np.inf
        # scratch arrays for step, sliced to the running rows and the band: no allocation per frame
        self.values = {name: np.empty((B, L), self.dtype) for name in ("e_token", "skip", "new")}
        self.masks = {name: np.empty((B, L), bool) for name in ("skips", "from_blank", "tie", "other")}

    def start(self):
        """Forward variables at frame 0: the first blank and the first token."""
        B, L = self.targets.shape
        blank_a = np.full((B, L + 1), -np.inf, self.dtype)
        token_a = np.full((B, L), -np.inf, self.dtype)
        self.row[:, :-1] = self.log_probs[:, 0]
        blank_a[:, 0], token_a[:, 0] = self.row[:, self.blank], np.take(self.row, self.flat_targets[:, 0])
        return blank_a, token_a

    def step(self, blank_a, token_a, t: int, ptr_blank=None, ptr_token=None) -> None:
        """Advance the running items' forward variables from frame t - 1 to t, in place.

        Only the band of states some running item can be in at frame t, and still finish from,
        is computed (see _bands): blank states lo .. hi - 1 and token states lo .. min(hi, L) - 1.
        The back-pointers (0 stay, 1 from the state before, 2 skip a blank) go to the band of
        ``ptr_blank`` [B, L + 1] and ``ptr_token`` [B, L] when given. As in torchaudio, the
        state before or the skip wins only when strictly better than both others; otherwise
        the path stays, even when the two others tie above staying (then its sum is not the
        largest: a rare exact tie, kept so the paths are torchaudio's).
        """
        n, L = self.running[t], token_a.shape[1]
        if n == 0:  # padding past every item's frames
            return
        lo, hi = self.band[t]
        end, first = min(hi, L), max(lo, 1)  # the band's token states end; the first state with one before
        width = end - lo
        b_all, k_all = blank_a[:n], token_a[:n]  # frame t - 1
        self.row[:n, :-1] = self.log_probs[:n, t]
        e_blank = self.row[:n, self.blank:self.blank + 1]  # [n, 1]
        # token k: stay (k), from its blank (b[k]), or skip from token k - 1 over a blank
        k, before = k_all[:, lo:end], b_all[:, lo:end]
        skip, new, e_token = (self.values[name][:n, :width] for name in ("skip", "new", "e_token"))
        tie, other = self.masks["tie"][:n, :width], self.masks["other"][:n, :width]
        skip[:, :first - lo] = -np.inf  # token 0 has no token before it
        np.add(k_all[:, first - 1:end - 1], self.skip[:n, first:end], out=skip[:, first - lo:])
        if ptr_token is not None:  # the choices, read before the values change
            self._choices(k, before, skip, ptr_token[:n, lo:end])
            ptr_blank[:n, lo:first] = 0
            np.greater(k_all[:, first - 1:hi - 1], b_all[:, first:hi], out=ptr_blank[:n, first:hi])
        # the chosen value is the largest of the three, except where the state before and the skip
        # tie above staying: then it is staying's. Maxima and a mostly-false mask, not a selection
        # by the (random) choices themselves, whose branches the CPU cannot predict: 3.5x faster.
        np.maximum(k, before, out=new)
        np.maximum(new, skip, out=new)
        np.equal(before, skip, out=tie)
        tie &= np.greater(before, k, out=other)
        if tie.any():
            np.copyto(new, k, where=tie)
        # blank k: stay, or from token k - 1 (read before token k's new values go in)
        np.maximum(b_all[:, first:hi], k_all[:, first - 1:hi - 1], out=b_all[:, first:hi])
        b_all[:, lo:hi] += e_blank
        np.take(self.row, self.flat_targets[:n, lo:end], out=e_token)
        np.add(new, e_token, out=k)

    def _choices(self, k, before, skip, ptr_token) -> None:
        """One frame's back-pointers of the token states in the band [n, width] (see step)."""
        n, width = k.shape
        skips, from_blank, other = (self.masks[name][:n, :width] for name in ("skips", "from_blank", "other"))
        np.greater(skip, before, out=skips)
        skips &= np.greater(skip, k, out=other)
        np.greater(before, k, out=from_blank)
        from_blank &= np.greater(before, skip, out=other)  # not >=: a tie with the skip stays (torchaudio's)
        np.left_shift(skips.view(np.uint8), 1, out=ptr_token)
        ptr_token |= from_blank.view(np.uint8)  # never both

    def final_states(self, blank_a, token_a) -> np.ndarray:
        """Each item's state at its last frame: the last token, or the final blank if strictly better. [B]"""
        rows = np.arange(len(blank_a))
        L = self.target_lengths
        after = blank_a[rows, L] > token_a[rows, L - 1]
        return np.where(after, 2 * L, 2 * L - 1)

    def backtrack(self, K: int) -> np.ndarray:
        """The best path's states [B, T]: a forward pass keeping checkpoints every K frames, then
        block by block from the end, each block recomputed from its checkpoint with back-pointers."""
        B, T, _ = self.log_probs.shape
        L = self.targets.shape[1]
        blank_a, token_a = self.start()
        blocks = [(t0, min(t0 + K, T)) for t0 in range(1, T, K)]  # frames 1 .. T - 1
        # one block's back-pointers, reused by every block. A path that finishes only visits states
        # in the bands, whose pointers each block writes; the rest is read only on the way back from
        # a final state of -inf (no path finishes), whose "path" is no path (align refuses it).
        ptr_blank = np.zeros((min(K, T - 1), B, L + 1), np.uint8)
        ptr_token = np.zeros((min(K, T - 1), B, L), np.uint8)
        checkpoints = []
        for t0, t1 in blocks:
            if len(blocks) == 1:  # one block: keep its back-pointers now rather than recompute them
                self._run(blank_a, token_a, t0, t1, ptr_blank, ptr_token)
            else:
                checkpoints.append((blank_a.copy(), token_a.copy()))
                self._run(blank_a, token_a, t0, t1)
        state = self.final_states(blank_a, token_a)  # [B]
        states = np.full((B, T), -1, np.int64)
        rows = np.arange(B)
        for t0, t1 in reversed(blocks):
            if checkpoints:
                self._run(*checkpoints.pop(), t0, t1, ptr_blank, ptr_token)  # its memory goes as it is used
            for t in range(t1 - 1, t0 - 1, -1):
                n = self.running[t]  # the items whose frames reach t
                s = state[:n]
                states[:n, t] = s
                token = s // 2
                back = np.where(s % 2 == 1, ptr_token[t - t0, rows[:n], np.minimum(token, L - 1)],
                                ptr_blank[t - t0, rows[:n], token])
                state[:n] = np.maximum(s - back, 0)  # >= 0 on a path that finishes; no path: anything
        states[:, 0] = state
        return states

    def _run(self, blank_a, token_a, t0: int, t1: int, ptr_blank=None, ptr_token=None) -> None:
        """Steps t0 .. t1 - 1 in place, their back-pointers into ``ptr_blank`` [K, B, L + 1] and
        ``ptr_token`` [K, B, L] from row 0 when given."""
        for t in range(t0, t1):
            if ptr_token is None:
                self.step(blank_a, token_a, t)
            else:
                self.step(blank_a, token_a, t, ptr_blank[t - t0], ptr_token[t - t0])


# ---------------------------------------------------------------------------
# Text to token ids


@dataclass
class Transcript:
    """A transcript as the vocabulary spells it: token ids, and the word each token belongs to."""

    words: list[str]  # as aligned: case folded to the vocabulary, punctuation it lacks dropped
    tokens: np.ndarray  # [L] token ids, the word delimiter between words when the vocabulary has one
    word_of: np.ndarray  # [L] the word of each token, -1 for a delimiter, -2 for a <star>


STAR = -2  # word_of's mark of a <star> token


def with_star(transcript: Transcript, star: int) -> Transcript:
    """The transcript between two <star> tokens (id ``star``): any audio before or after it.

    As MMS's alignment recipe does, the <star> token has log-probability 0 in every frame
    (a column the aligner adds), so frames the transcript does not cover go to it, not to
    the first or last word.
    """
    tokens = np.concatenate([[star], transcript.tokens, [star]])
    return Transcript(transcript.words, tokens, np.concatenate([[STAR], transcript.word_of, [STAR]]))


def tokenize(text: str, vocab: dict, delimiter: str = "|", name: str = "the transcript") -> Transcript:
    """Token ids of ``text``: whitespace separates words, each character becomes its token.

    A character the vocabulary lacks is taken in the other case if the vocabulary has that
    (an upper-case vocabulary aligns lower-case text), a typographic apostrophe as "'", dropped
    if it is punctuation or a symbol, and refused otherwise: AlignmentError names ``name`` and
    every such character. Text is put in Unicode's composed form (NFC) first.
    """
    if not isinstance(text, str):
        raise AlignmentError(f"{name}: a transcript must be text, got {type(text).__name__}")
    words, unknown = [], []
    for word in unicodedata.normalize("NFC", text).split():  # é as one character, as vocabularies have it
        spelled = "".join(_spell(ch, vocab, unknown) for ch in word)
        if spelled:
            words.append(spelled)
    if unknown:
        shown = ", ".join(repr(ch) for ch in dict.fromkeys(unknown))
        raise AlignmentError(f"{name}: the model's vocabulary cannot spell {shown} (spell numbers and symbols "
                             "out in words, or romanise the text)")
    if not words:
        raise AlignmentError(f"{name}: an empty transcript (nothing the vocabulary spells)")
    tokens, word_of = [], []
    for w, word in enumerate(words):
        if w and delimiter in vocab:
            tokens.append(vocab[delimiter])
            word_of.append(-1)
        tokens += [vocab[ch] for ch in word]
        word_of += [w] * len(word)
    return Transcript(words, np.array(tokens, np.int64), np.array(word_of, np.int64))


APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'"}  # typographic ones, as the ASCII one


def _spell(ch: str, vocab: dict, unknown: list) -> str:
    """The vocabulary's form of one character, "" to drop it; what it cannot spell goes to ``unknown``."""
    for form in (ch, ch.upper(), ch.lower(), APOSTROPHES.get(ch, "")):
        if len(form) == 1 and form in vocab:
            return form
    if unicodedata.category(ch)[0] not in "PS":  # letters, digits, marks: words would change
        unknown.append(ch)
    return ""


# ---------------------------------------------------------------------------
# Paths to times


@dataclass(frozen=True)
class AlignedSpan:
    """A token, character or word, when it is spoken (seconds from the input's start) and how surely.

    ``score`` is the mean probability the model gives the span's token over its frames (for a
    word, over all its characters' frames): near 1 where the audio clearly says it.
    """

    text: str
    start: float
    end: float
    score: float


@dataclass
class Alignment:
    """One input aligned to its transcript."""

    source: str
    text: str  # the transcript as aligned: its words, spaced
    seconds: float
    words: list[AlignedSpan]
    chars: list[AlignedSpan]  # every token of the transcript but the word delimiters
    frame_tokens: np.ndarray  # [T] the token id of every frame on the path
    frame_scores: np.ndarray  # [T] its log-probability
    score: float  # the mean probability over all the transcript's tokens' frames
    error: str | None = None  # why this input could not be aligned, with errors="keep"


def spans(states, frame_scores, transcript: Transcript, id_to_token: list[str], seconds_per_frame: float):
    """(chars, words, score) of one item's path: its trellis states [T] and their log-probabilities [T].

    The path never goes back, so token k's frames are the one run of state 2k + 1, found by
    binary search; a span's score is a difference of cumulative sums of probabilities.
    """
    L = len(transcript.tokens)
    odd = 2 * np.arange(L) + 1
    first = np.searchsorted(states, odd, side="left")  # [L]
    end = np.searchsorted(states, odd, side="right")
    cumulative = np.concatenate([[0.0], np.cumsum(np.exp(frame_scores.astype(np.float64)))])
    mass, frames = cumulative[end] - cumulative[first], end - first  # [L]
    starts, ends = (first * seconds_per_frame).tolist(), (end * seconds_per_frame).tolist()
    chars = [AlignedSpan(id_to_token[transcript.tokens[k]], starts[k], ends[k], float(mass[k] / frames[k]))
             for k in range(L) if transcript.word_of[k] >= 0]
    words = []
    for w, word in enumerate(transcript.words):
        mine = np.flatnonzero(transcript.word_of == w)
        words.append(AlignedSpan(word, starts[mine[0]], ends[mine[-1]], float(mass[mine].sum() / frames[mine].sum())))
    spoken = transcript.word_of != STAR
    return chars, words, float(mass[spoken].sum() / frames[spoken].sum())


def line_spans(model, result: Alignment, text: str, pad: float = 0.0) -> list[AlignedSpan]:
    """Each line of ``text`` that has words, from its first word's start to its last word's end
    (its score: the mean of its words'), for cutting a recording into utterances.

    ``pad`` seconds are added on each side, as far as the audio's edges and the middle of the
    gap to the next line allow: a CTC model marks a character where it is recognised, often
    before its sound has died away, so cuts at the words' ends can clip them.
    """
    lines = _lines(model, result, text)
    bounds = [0.0] + [(a.end + b.start) / 2 for a, b in zip(lines, lines[1:])] + [result.seconds]
    return [AlignedSpan(s.text, max(bounds[k], s.start - pad), min(bounds[k + 1], s.end + pad), s.score)
            if pad else s for k, s in enumerate(lines)]


def _lines(model, result: Alignment, text: str) -> list[AlignedSpan]:
    lines, first = [], 0
    for line in text.splitlines():
        try:
            count = len(tokenize(line, model.vocab, model.word_delimiter).words)
        except AlignmentError:  # a line of nothing the vocabulary spells: no words (the whole text spelled)
            count = 0
        words = result.words[first:first + count]
        first += count
        if words:
            lines.append(AlignedSpan(" ".join(w.text for w in words), words[0].start, words[-1].end,
                                     float(np.mean([w.score for w in words]))))
    return lines


def log_softmax(logits) -> np.ndarray:
    """log p of every token of every frame, [..., V], in the logits' float type."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------
# Audio and transcripts to alignments


def align(model, inputs, transcripts, batch_size: int = 8, chunk_seconds: float | None = None,
          stride_seconds: float | None = None, star: bool = False, errors: str = "raise",
          progress=None) -> list[Alignment]:
    """Align each file or 1-d array to its transcript: a list of Alignment in their order.

    Inputs up to ``chunk_seconds`` run in padded batches sorted by length, and each batch is
    aligned in one call; longer ones run window by window with ``stride_seconds`` of context
    on each side, as transcribe does, and are aligned alone with bounded memory (see the
    module's note). Transcripts are checked against the vocabulary before any audio is read.
    ``star`` lets audio before and after the transcript go unaligned (see with_star); its
    frames' token id in ``frame_tokens`` is the vocabulary's size. An input that cannot be
    aligned (audio, text, too short for its text) raises, or with ``errors="keep"`` comes back
    with its ``error`` set while the others are aligned. ``progress(done, total, detail=None)``
    hears of each input aligned and each window of a long one read (as transcribe's).
    """
    pipeline.check_can_transcribe(model)
    pipeline._check_batch_size(batch_size)
    inputs, transcripts = list(inputs), list(transcripts)
    if len(inputs) != len(transcripts):
        raise AlignmentError(f"{len(inputs)} inputs and {len(transcripts)} transcripts: one transcript each")
    names = [_describe(i, x) for i, x in enumerate(inputs)]
    chunk, stride = pipeline.chunking(model, chunk_seconds or pipeline.DEFAULT_CHUNK_SECONDS, stride_seconds)
    spelled, failed = _spell_all(model, names, transcripts, star, errors)
    items = pipeline.prepare(inputs, model.sampling_rate, model.config.receptive_field, chunk, errors)
    results = [None] * len(items)
    for i, item in enumerate(items):
        if item.error or i in failed:
            results[i] = _failure(model, item, failed.get(i) or item.error)  # the text's error first, as raise
    run = _Run(model, items, spelled, names, results, star, errors)
    counter = pipeline._Counter(len(items), progress)
    short = [i for i, item in enumerate(items) if results[i] is None and not item.long]
    for group in pipeline.audio.batches_by_length([items[i].samples for i in short], batch_size):
        indices = [short[j] for j in group]
        out = pipeline._forward(model, [items[i].array for i in indices])
        run.batch(log_softmax(asnumpy(out.logits)), np.asarray(out.frame_lengths), indices)  # [B, T, V]
        for _ in indices:
            counter.finished()
    for i, item in enumerate(items):
        if results[i] is None and item.long:
            try:
                logits = np.concatenate(list(pipeline.window_logits(model, item, model.sampling_rate, chunk, stride,
                                                                    counter.window)))
            except pipeline.audio.AudioError as e:
                if errors == "raise":
                    raise
                results[i] = _failure(model, item, str(e))
                continue
            run.batch(log_softmax(logits)[None], np.array([len(logits)]), [i])  # [1, T, V]
            counter.finished()
    return results


def _spell_all(model, names, transcripts, star: bool, errors: str):
    """Each transcript's tokens (None where it fails), and {index: error} of those that fail."""
    if errors not in ("raise", "keep"):
        raise ValueError(f'errors must be "raise" or "keep", got {errors!r}')
    spelled, failed = [], {}
    for i, (name, text) in enumerate(zip(names, transcripts)):
        try:
            spelled.append(tokenize(text, model.vocab, model.word_delimiter, name))
        except AlignmentError as e:
            if errors == "raise":
                raise
            spelled.append(None)
            failed[i] = str(e)
    if star:
        spelled = [t and with_star(t, model.config.vocab_size) for t in spelled]
    return spelled, failed


def _failure(model, item, error: str) -> Alignment:
    return Alignment(item.name, "", item.samples / model.sampling_rate, [], [], np.zeros(0, np.int64),
                     np.zeros(0, np.float32), 0.0, error=error)


def _describe(i: int, x) -> str:
    return f"input {i} ({x})" if isinstance(x, (str, bytes)) or hasattr(x, "__fspath__") else f"input {i}"


@dataclass
class _Run:
    """What align's batches share: the model, the inputs, their transcripts and names, where results go."""

    model: object
    items: list
    spelled: list
    names: list[str]
    results: list
    star: bool
    errors: str

    def batch(self, log_probs, frame_lengths, indices: list[int]) -> None:
        """Align one padded batch of emissions [B, T, V] to its inputs' transcripts, into ``results``.

        An input too short for its transcript raises, or with errors="keep" gets its error and
        leaves the batch.
        """
        rows = []
        for row, i in enumerate(indices):
            problem = too_few_frames(self.names[i], self.spelled[i].tokens, int(frame_lengths[row]))
            if problem:
                self._fail(i, problem)
            else:
                rows.append(row)
        if rows:
            self._align(log_probs[rows], frame_lengths[rows], [indices[row] for row in rows])

    def _fail(self, i: int, problem: str) -> None:
        if self.errors == "raise":
            raise AlignmentError(problem)
        self.results[i] = _failure(self.model, self.items[i], problem)

    def _align(self, log_probs, frame_lengths, indices: list[int]) -> None:
        model = self.model
        paths = align_log_probs(model, log_probs, frame_lengths, [self.spelled[i] for i in indices],
                                [self.names[i] for i in indices], self.star)
        for i, path in zip(indices, paths):
            if isinstance(path, str):
                self._fail(i, path)
                continue
            item = self.items[i]
            self.results[i] = Alignment(item.name, " ".join(self.spelled[i].words), item.samples / model.sampling_rate,
                                        path.words, path.chars, path.frame_tokens, path.frame_scores, path.score)


@dataclass
class Path:
    """One item's best path through its transcript: the spans, and every frame's token on it."""

    chars: list[AlignedSpan]
    words: list[AlignedSpan]
    score: float
    frame_tokens: np.ndarray  # [T] token ids
    frame_scores: np.ndarray  # [T] their log-probabilities


def align_log_probs(model, log_probs, frame_lengths, transcripts: list[Transcript], names: list[str],
                    star: bool = False) -> list[Path | str]:
    """Each item's path through its transcript (``tokenize``; ``with_star`` when ``star``) in a padded
    batch of the model's log-probabilities [B, T, V] with ``frame_lengths`` [B]; or, where every path
    is impossible, why (a str naming the item by ``names``). Inputs that cannot be aligned at all
    (too few frames, bad ids) raise AlignmentError.
    """
    if star:  # the <star> token's column: log-probability 0 in every frame
        log_probs = np.concatenate([log_probs, np.zeros_like(log_probs[..., :1])], axis=-1)  # [B, T, V + 1]
    targets = np.ones((len(transcripts), max(len(t.tokens) for t in transcripts)), np.int64)  # padding: any id
    for row, t in enumerate(transcripts):
        targets[row, :len(t.tokens)] = t.tokens
    lengths = np.array([len(t.tokens) for t in transcripts])
    blank = model.config.pad_token_id
    log_probs, targets, frame_lengths, lengths = check_inputs(log_probs, targets, frame_lengths, lengths, blank, names)
    states = best_states(log_probs, targets, frame_lengths, lengths, blank)  # [B, T]
    tokens, scores = path_scores(log_probs, states, targets, blank)
    seconds_per_frame = model.config.output_frame_stride / model.sampling_rate
    paths = []
    for row, transcript in enumerate(transcripts):
        n = int(frame_lengths[row])
        # Every path -inf (a token the model gives no chance where it must be said): the
        # back-pointers then only stay, and the "path" sits in its last state from frame 0.
        if states[row, 0] > 1 or np.isneginf(scores[row, :n]).any():
            paths.append(f"{names[row]}: the aligned path has a log-probability of -inf")
            continue
        chars, words, score = spans(states[row, :n], scores[row, :n], transcript, model.id_to_token,
                                    seconds_per_frame)
        paths.append(Path(chars, words, score, tokens[row, :n].copy(), scores[row, :n].copy()))
    return paths
