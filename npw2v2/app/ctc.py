"""Greedy CTC decoding: frame-wise best tokens to text, with character and word times.

Greedy decoding takes the best token of every frame, merges runs of the same token, then
drops the blank: "HH-EE-LL-LL-OO" gives HELLO with its double L, because a blank separates
the two runs of L. The word delimiter (``|``) becomes a space.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPECIAL_TOKENS = {"<s>", "</s>", "<pad>", "<unk>"}


@dataclass(frozen=True)
class Span:
    """A character or word and when it is spoken, in seconds from the start of the input."""

    text: str
    start: float
    end: float


@dataclass
class Decoded:
    text: str
    chars: list[Span]
    words: list[Span]


def best_tokens(logits) -> np.ndarray:
    """The most likely token of every frame. [T, V] -> [T] int."""
    return np.asarray(logits).argmax(axis=-1)


def token_runs(frame_tokens, blank: int) -> list[tuple[int, int, int]]:
    """Runs of equal tokens that are not blank: (token, first frame, last frame + 1)."""
    frame_tokens = np.asarray(frame_tokens)
    if frame_tokens.size == 0:
        return []
    starts = np.flatnonzero(np.diff(frame_tokens, prepend=-1))  # where a new run begins
    ends = np.append(starts[1:], frame_tokens.size)
    return [(int(frame_tokens[s]), int(s), int(e)) for s, e in zip(starts, ends) if frame_tokens[s] != blank]


def decode(frame_tokens, id_to_token: list[str], blank: int, seconds_per_frame: float,
           delimiter: str = "|") -> Decoded:
    """Text, characters and words of frame-wise token ids (greedy CTC)."""
    chars, words, word = [], [], []
    for token, start, end in token_runs(frame_tokens, blank):
        symbol = id_to_token[token] if token < len(id_to_token) else ""
        if symbol in SPECIAL_TOKENS or not symbol:  # ids the vocabulary does not name are dropped too
            continue
        if symbol == delimiter:
            _close_word(word, words)
            continue
        span = Span(symbol, start * seconds_per_frame, end * seconds_per_frame)
        chars.append(span)
        word.append(span)
    _close_word(word, words)
    return Decoded(" ".join(w.text for w in words), chars, words)


def _close_word(word: list[Span], words: list[Span]) -> None:
    if word:
        words.append(Span("".join(c.text for c in word), word[0].start, word[-1].end))
        word.clear()
