"""Speaker verification with an x-vector model: are two recordings of the same speaker?

The score is the cosine similarity of the two speaker embeddings (model.embed_speaker), as the
wavlm-base-plus-sv model card computes it: torch.nn.functional.normalize on each embedding, then
torch.nn.CosineSimilarity. Scores near 1 mean the same voice; a threshold turns the score into a
verdict. Where the threshold comes from, first found first: the caller's, the model file's metadata
(``speaker_threshold``, as ``npw2v2-convert --speaker-threshold`` writes it), a published model's
card (KNOWN_THRESHOLDS, by its hub name); otherwise there is no verdict, only the score.
"""
from __future__ import annotations

import numpy as np

from ..core.heads import cosine_similarity
from ..io.weights import SPEAKER_THRESHOLD

# The thresholds the model cards give with their example (tuned on their own data: a starting point).
KNOWN_THRESHOLDS = {"microsoft/wavlm-base-plus-sv": 0.86}


def normalize(x, eps: float = 1e-12):
    """x / max(|x|, eps) over the last axis. Mirrors torch.nn.functional.normalize."""
    return x / np.maximum(np.sqrt((x * x).sum(axis=-1, keepdims=True)), eps)


def similarity(a, b) -> float:
    """The cosine similarity of two embeddings [X], normalised first, as the model cards compute it."""
    a, b = normalize(np.asarray(a, dtype=np.float32)), normalize(np.asarray(b, dtype=np.float32))
    return float(cosine_similarity(a, b))


def known_threshold(model, name: str = "") -> tuple[float | None, str]:
    """The threshold a model carries or is published with, and where it comes from: (None, "") when none.

    ``name``: what the model was loaded as (a hub id, or its folder in the Hugging Face cache,
    models--ORG--NAME).
    """
    if SPEAKER_THRESHOLD in model.metadata:  # checked when the file was read (npw2v2.io.weights)
        return float(model.metadata[SPEAKER_THRESHOLD]), "the model file's metadata"
    for hub_id, value in KNOWN_THRESHOLDS.items():
        if hub_id in name or "models--" + hub_id.replace("/", "--") in name:
            return value, f"the {hub_id} model card"
    return None, ""


def verdict(score: float, threshold: float) -> str:
    """ "same speaker" at or above the threshold, "different speakers" below."""
    return "same speaker" if score >= threshold else "different speakers"
