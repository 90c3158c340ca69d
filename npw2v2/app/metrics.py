"""Error rates for transcripts: word and character error rates by edit distance."""
from __future__ import annotations


def edit_distance(reference, hypothesis) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions)."""
    row = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, h in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (r != h))
    return row[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Word edits over reference words, summed over all pairs."""
    errors = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True))
    return errors / max(1, sum(len(r.split()) for r in references))


def char_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Character edits over reference characters, summed over all pairs."""
    errors = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    return errors / max(1, sum(len(r) for r in references))
