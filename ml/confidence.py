"""Confidence measures of an exit's class probabilities, always in [0, 1] (higher = surer).

"Confident" everywhere in tierflow means ``confidence >= threshold``.
"""

from __future__ import annotations

import numpy as np

MEASURES = ("max_softmax", "entropy")
_ALIASES = {"max_softmax": "max_softmax", "softmax": "max_softmax", "entropy": "entropy",
            "normalized_entropy": "entropy", "normalised_entropy": "entropy"}


def canonical_measure(measure: str) -> str:
    """Map accepted spellings to the manifest names ``max_softmax`` / ``entropy``."""
    try:
        return _ALIASES[measure]
    except KeyError:
        raise ValueError(f"unknown confidence measure {measure!r}; use one of {MEASURES}") from None


def _as_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (n, K) with K >= 2, got {p.shape}")
    return p


def max_softmax(probs: np.ndarray) -> np.ndarray:
    """Largest class probability per row (BranchyNet/Kafka-ML 'limit' style)."""
    return _as_probs(probs).max(axis=1)


def normalized_entropy_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - H(p) / log K`` per row: 1 for a one-hot row, 0 for the uniform distribution."""
    p = _as_probs(probs)
    k = p.shape[1]
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    h = -terms.sum(axis=1)
    return np.clip(1.0 - h / np.log(k), 0.0, 1.0)


def confidence(probs: np.ndarray, measure: str) -> np.ndarray:
    """Confidence per row under ``measure`` (``max_softmax`` or ``entropy``)."""
    m = canonical_measure(measure)
    return max_softmax(probs) if m == "max_softmax" else normalized_entropy_confidence(probs)
