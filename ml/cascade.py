"""The one early-exit decision rule, shared by offline evaluation and the Kafka tier workers.

A tier computes the probabilities of each of its exits for a batch. Row by row, the first exit whose
confidence reaches its threshold answers; a threshold of ``None`` means "always answer" (the final
exit). On the last tier the last exit always answers. Rows no exit answered go to the next tier; for
them the decision still carries the tier's best guess (its last exit), which a tier publishes as a
``degraded`` answer when the upper tiers miss the deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml.confidence import confidence

NEVER = 2.0
"""A threshold no confidence reaches: the exit is disabled (confidences are <= 1)."""


@dataclass(frozen=True)
class TierDecision:
    """Per-row outcome of one tier for a batch (all arrays have length n)."""

    answered: np.ndarray  # bool: answered here, else forward to the next tier
    exit_index: np.ndarray  # int: index within the tier of the answering exit (last exit if forwarded)
    exit_id: np.ndarray  # int: global exit id of that exit
    label: np.ndarray  # int: predicted class of that exit
    confidence: np.ndarray  # float: its confidence

    @property
    def forwarded(self) -> np.ndarray:
        return ~self.answered

    def __len__(self) -> int:
        return int(self.answered.shape[0])


def decide(
    exit_probs: Sequence[np.ndarray],
    thresholds: Sequence[float | None],
    measure: str,
    is_last: bool,
    exit_ids: Sequence[int] | None = None,
) -> TierDecision:
    """Decide, for every row of a batch, whether this tier answers and with which exit."""
    if len(exit_probs) == 0:
        raise ValueError("a tier needs at least one exit")
    if len(thresholds) != len(exit_probs):
        raise ValueError(f"{len(exit_probs)} exits but {len(thresholds)} thresholds")
    ids = list(range(len(exit_probs))) if exit_ids is None else list(exit_ids)
    if len(ids) != len(exit_probs):
        raise ValueError(f"{len(exit_probs)} exits but {len(ids)} exit ids")
    probs = [np.asarray(p) for p in exit_probs]
    n = probs[0].shape[0]
    if any(p.ndim != 2 or p.shape[0] != n for p in probs):
        raise ValueError(f"exit probabilities must be (n, K) with equal n, got {[p.shape for p in probs]}")

    confs = np.stack([confidence(p, measure) for p in probs])  # (E, n)
    labels = np.stack([p.argmax(axis=1) for p in probs])  # (E, n)
    gates = np.array([-np.inf if t is None else float(t) for t in thresholds])[:, None]
    confident = confs >= gates
    if is_last:
        confident[-1, :] = True
    answered = confident.any(axis=0)
    first = np.where(answered, confident.argmax(axis=0), len(probs) - 1)
    cols = np.arange(n)
    return TierDecision(
        answered=answered,
        exit_index=first.astype(np.int64),
        exit_id=np.asarray(ids, dtype=np.int64)[first],
        label=labels[first, cols].astype(np.int64),
        confidence=confs[first, cols].astype(np.float64),
    )
