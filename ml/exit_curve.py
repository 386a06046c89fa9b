"""Each forwarding tier's accuracy/cost curve: the operating points a tier may move its thresholds along.

Calibration picks one set of thresholds for one link and load. When a tier's upstream slows, the tier can
answer more requests itself by lowering its own thresholds (`runtime.adaptive`); this module computes,
on the validation split and at calibration time, how far that may go. A tier's curve starts at its
calibrated thresholds (point 0) and lowers them step by step, each point giving the share of the requests
reaching the tier that it answers, the cascade accuracy and the expected cost with every other tier at its
calibrated thresholds. The curve ends before the first point whose accuracy, less ``margin_se`` standard
errors of its paired difference to the final exit, falls below the floor (``final - floor_points``), so a
tier moving point by point never crosses the floor. Curves are then trimmed until every forwarding tier at
its last point at once still meets the floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from ml.cascade import NEVER
from ml.confidence import confidence
from ml.evaluation import simulate_cascade
from ml.partition import normalize_tier_map


class OperatingPoint(BaseModel):
    """Thresholds of one tier's exits and what they give on the validation split."""

    thresholds: list[float | None]  # one per exit of the tier, like ManifestTier.thresholds
    answer_rate: float  # share of the requests reaching this tier that it answers
    accuracy: float  # cascade accuracy, every other tier at its calibrated thresholds
    expected_cost: float  # mean cost per request (the calibration objective's exit costs)


class ExitCurve(BaseModel):
    """A tier's operating points, calibrated first, each answering more here; all meet the floor."""

    final_accuracy: float  # final exit alone, validation split
    floor_points: float  # accuracy points below the final exit the cascade may fall to
    floor_accuracy: float  # final_accuracy - floor_points / 100
    points: list[OperatingPoint]

    def usable(self, floor_points: float | None = None) -> list[OperatingPoint]:
        """The points a controller may use: all, or those meeting a stricter floor (never a looser one)."""
        if floor_points is None or floor_points >= self.floor_points:
            return self.points
        bound = self.final_accuracy - floor_points / 100
        out = self.points[:1]
        for p in self.points[1:]:
            if p.accuracy < bound - 1e-12:
                break
            out.append(p)
        return out


def _paired_lower(label: np.ndarray, y: np.ndarray, final_correct: np.ndarray, margin_se: float) -> tuple[float, float]:
    """(accuracy, accuracy - margin_se * standard error of its paired difference to the final exit)."""
    correct = label == y
    d = correct.astype(float) - final_correct
    acc = float(correct.mean())
    return acc, acc - margin_se * float(d.std() / np.sqrt(len(d)))


def exit_curves(
    exit_probs: Sequence[np.ndarray],
    y: np.ndarray,
    tier_map: Mapping[str, Sequence[int | str]] | str | None,
    thresholds: Sequence[float | None],
    exit_costs: Sequence[float | None],
    *,
    measure: str = "max_softmax",
    floor_points: float = 2.0,
    margin_se: float = 2.0,
    steps: int = 40,
) -> dict[str, ExitCurve]:
    """One curve per tier that forwards (every tier but the last), from calibrated ``thresholds`` (one
    per global exit) down to the accuracy floor; see the module docstring."""
    if floor_points < 0:
        raise ValueError(f"floor_points must be >= 0 accuracy points, got {floor_points}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    y = np.asarray(y)
    E = len(exit_probs)
    tmap = normalize_tier_map(tier_map, E)
    names = list(tmap)
    cost = np.array([np.nan if c is None else float(c) for c in exit_costs])
    if len(cost) != E:
        raise ValueError(f"need one exit cost per exit ({E}), got {len(cost)}")
    cost = np.where(np.isfinite(cost), cost, 0.0)
    final_correct = (exit_probs[-1].argmax(axis=1) == y).astype(float)
    final_acc = float(final_correct.mean())
    bound = final_acc - floor_points / 100
    base = [None if t is None else float(t) for t in thresholds]
    tier_calibrated, _, _ = simulate_cascade(exit_probs, base, tmap, measure)

    def evaluate(ths: list[float | None], t: int) -> tuple[OperatingPoint, float]:
        tier_of, exit_of, label = simulate_cascade(exit_probs, ths, tmap, measure)
        reach = tier_of >= t
        acc, lower = _paired_lower(label, y, final_correct, margin_se)
        rate = float((tier_of[reach] == t).mean()) if reach.any() else 0.0
        point = OperatingPoint(thresholds=[ths[e] for e in tmap[names[t]]], answer_rate=rate, accuracy=acc,
                               expected_cost=float(cost[exit_of].mean()))
        return point, lower

    curves: dict[str, ExitCurve] = {}
    for t, name in enumerate(names[:-1]):
        exits = tmap[name]
        reach = tier_calibrated >= t
        confs = {e: confidence(exit_probs[e][reach], measure) if reach.any() else np.ones(1) for e in exits}
        calibrated, _ = evaluate(base, t)
        points = [calibrated]
        for s in np.linspace(0.0, 1.0, steps + 1)[1:]:
            ths = list(base)
            for e in exits:
                cal = NEVER if base[e] is None else base[e]
                ths[e] = float(min(cal, np.quantile(confs[e], 1.0 - s)))
            point, lower = evaluate(ths, t)
            if point.answer_rate <= points[-1].answer_rate + 1e-12:
                continue  # no more answered here than the point before
            if lower < bound - 1e-12:
                break
            points.append(point)
        curves[name] = ExitCurve(final_accuracy=final_acc, floor_points=float(floor_points), floor_accuracy=bound,
                                 points=points)
    _trim_jointly(curves, exit_probs, y, tmap, base, measure, final_correct, margin_se, bound)
    return curves


def _trim_jointly(curves: dict[str, ExitCurve], exit_probs: Sequence[np.ndarray], y: np.ndarray,
                  tmap: Mapping[str, Sequence[int]], base: list[float | None], measure: str,
                  final_correct: np.ndarray, margin_se: float, bound: float) -> None:
    """Drop the last point of the longest curve until all tiers at their last points meet the floor."""
    while True:
        ths = list(base)
        for name, curve in curves.items():
            for e, th in zip(tmap[name], curve.points[-1].thresholds, strict=True):
                ths[e] = th
        _, _, label = simulate_cascade(exit_probs, ths, tmap, measure)
        _, lower = _paired_lower(label, y, final_correct, margin_se)
        longest = max(curves.values(), key=lambda c: len(c.points), default=None)
        if lower >= bound - 1e-12 or longest is None or len(longest.points) <= 1:
            return
        longest.points.pop()
