"""Offline cascade evaluation with given thresholds, using the same decision rule as the tier workers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ml.cascade import decide
from ml.partition import normalize_tier_map


def simulate_cascade(exit_probs: Sequence[np.ndarray], thresholds: Sequence[float | None],
                     tier_map: Mapping[str, Sequence[int | str]] | str | None, measure: str
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request: (tier index, global exit id, label) of the answer, tier by tier via ``ml.cascade.decide``."""
    E = len(exit_probs)
    tmap = normalize_tier_map(tier_map, E)
    n = exit_probs[0].shape[0]
    tier_of = np.full(n, -1)
    exit_of = np.full(n, -1)
    label = np.full(n, -1)
    rows = np.arange(n)
    names = list(tmap)
    for t, name in enumerate(names):
        exits = tmap[name]
        is_last = t == len(names) - 1
        ths = [None if (is_last and e == E - 1) else thresholds[e] for e in exits]
        d = decide([exit_probs[e][rows] for e in exits], ths, measure, is_last, exits)
        done = rows[d.answered]
        tier_of[done] = t
        exit_of[done] = d.exit_id[d.answered]
        label[done] = d.label[d.answered]
        rows = rows[d.forwarded]
        if len(rows) == 0:
            break
    return tier_of, exit_of, label


def evaluate_cascade(
    exit_probs: Sequence[np.ndarray],
    y: np.ndarray,
    thresholds: Sequence[float | None],
    tier_map: Mapping[str, Sequence[int | str]] | str | None,
    *,
    measure: str = "max_softmax",
    tier_flops: Sequence[int] | None = None,
    full_flops: int | None = None,
    link_bytes: Sequence[float] | None = None,
    input_bytes: float | None = None,
    tier_costs: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Accuracy, answers per tier/exit, mean FLOPs relative to the full network, bytes per request on
    every link (device→first tier included), expected cost, and the cloud-only baseline."""
    y = np.asarray(y)
    E = len(exit_probs)
    tmap = normalize_tier_map(tier_map, E)
    names = list(tmap)
    tier_of, exit_of, label = simulate_cascade(exit_probs, thresholds, tmap, measure)
    n = len(y)
    tier_frac = {name: float((tier_of == t).mean()) for t, name in enumerate(names)}
    reached = [float((tier_of >= t).mean()) for t in range(len(names))]  # fraction that runs tier t
    out: dict[str, Any] = {
        "n": int(n),
        "accuracy": float((label == y).mean()),
        "final_exit_accuracy": float((exit_probs[-1].argmax(axis=1) == y).mean()),
        "tier_fractions": tier_frac,
        "exit_fractions": [float((exit_of == e).mean()) for e in range(E)],
        "tier_accuracy": {name: float((label[tier_of == t] == y[tier_of == t]).mean()) if (tier_of == t).any() else None
                          for t, name in enumerate(names)},
        "thresholds": [None if t is None else float(t) for t in thresholds],
        "tier_map": tmap,
        "measure": measure,
    }
    if tier_flops is not None:
        cum = np.cumsum(np.asarray(tier_flops, dtype=float))
        mean_flops = float(np.mean(cum[tier_of]))
        out["mean_flops"] = mean_flops
        out["full_flops"] = int(full_flops) if full_flops else int(cum[-1])
        out["relative_compute"] = mean_flops / out["full_flops"]
        out["tier_load"] = {name: reached[t] for t, name in enumerate(names)}  # share of requests each tier runs
    links = [f"{a}-{b}" for a, b in zip(names[:-1], names[1:], strict=True)]
    if link_bytes is not None:
        per_link = {"device-" + names[0]: float(input_bytes or 0.0)}
        for i, link in enumerate(links):
            per_link[link] = float(reached[i + 1] * link_bytes[i])
        out["bytes_per_request"] = per_link
        out["total_bytes_per_request"] = float(sum(per_link.values()))
    if tier_costs is not None:
        out["expected_cost"] = float(np.mean(np.asarray(tier_costs, dtype=float)[tier_of]))
    out["cloud_only"] = {
        "accuracy": out["final_exit_accuracy"],
        "relative_compute": 1.0,
        "bytes_per_request": {"device-cloud": float(input_bytes or 0.0)},
    }
    if full_flops:
        out["cloud_only"]["mean_flops"] = int(full_flops)
    return out


CHANCE_MARGIN_SE = 3.0  # a model that guesses beats chance by this many standard errors ~0.1 % of the time
CHANCE_MARGIN_MIN = 0.02  # and by at least this much accuracy, however large the test split


def sanity_check(accuracy: float, num_classes: int, n: int, min_accuracy: float = 0.0) -> dict[str, Any]:
    """Pure: is a candidate good enough to register at all, whatever the champion?

    It must beat chance (1/K) by a margin (``CHANCE_MARGIN_SE`` standard errors of a guessing model's
    accuracy on ``n`` test samples, at least ``CHANCE_MARGIN_MIN``) and reach the absolute floor
    ``min_accuracy``. Returns ``passed``, the ``required`` accuracy and a ``reason`` that says what to
    look at when it fails.
    """
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if n < 1:
        raise ValueError("the sanity check needs a non-empty test split")
    chance = 1.0 / num_classes
    margin = max(CHANCE_MARGIN_MIN, CHANCE_MARGIN_SE * float(np.sqrt(chance * (1 - chance) / n)))
    above_chance = chance + margin
    required = max(above_chance, float(min_accuracy))
    passed = float(accuracy) >= required
    if passed:
        reason = (f"test accuracy {accuracy:.4f} >= {required:.4f} (chance {chance:.4f} + margin {margin:.4f}, "
                  f"floor min_accuracy={min_accuracy})")
    elif accuracy < above_chance:
        reason = (f"test accuracy {accuracy:.4f} is not above chance ({chance:.4f} for {num_classes} classes, "
                  f"+ margin {margin:.4f} on {n} test samples): the model has not learnt the task; check the "
                  "labels and the input scaling, train longer or with a smaller batch size")
    else:
        reason = (f"test accuracy {accuracy:.4f} is below the floor min_accuracy={min_accuracy}: train longer, "
                  "on more data or with another architecture, or lower min_accuracy")
    return {"passed": passed, "reason": reason, "accuracy": float(accuracy), "required": required,
            "chance": chance, "margin": margin, "min_accuracy": float(min_accuracy), "n": int(n)}
