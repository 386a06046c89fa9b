"""Per-exit threshold calibration on validation predictions.

The cascade answers at the first exit whose confidence reaches its threshold (see ``ml.cascade``).
Calibration searches a grid of thresholds (quantiles of each exit's confidences, plus "disabled") and
keeps the thresholds with the lowest expected cost per request among those whose cascade accuracy is
at least ``final-exit accuracy - tolerance``:

* objective ``"early"``: cost of an answer = position of its exit (0, 1, ...) → as many requests as
  early as possible;
* objective ``"cost"``: cost of an answer = the tier cost profile (``ml.costs.TierCosts``: compute,
  link latency, bytes) up to the tier holding its exit.

Ties go to the more accurate choice. The search is exhaustive over the grid, so the result is the true
optimum on the grid (tested on a constructed case with a known answer).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.cascade import NEVER
from ml.confidence import confidence
from ml.partition import normalize_tier_map


@dataclass
class Calibration:
    thresholds: list[float | None]  # one per global exit; None = final; NEVER = disabled/unserved
    objective: str
    tolerance: float  # accuracy points
    accuracy: float  # cascade accuracy on the calibration data
    final_accuracy: float
    exit_fractions: list[float]  # per global exit
    tier_fractions: dict[str, float]
    expected_cost: float
    exit_costs: list[float]  # cost of an answer at each global exit
    feasible: bool = True
    margin_se: float = 0.0
    curve: dict[str, list[float]] = field(default_factory=dict)  # candidates for the trade-off plot

    def to_dict(self, with_curve: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_curve:
            d.pop("curve")
        return d


def _grid(c: np.ndarray, size: int) -> np.ndarray:
    qs = np.unique(np.quantile(c, np.linspace(0.0, 1.0, size)))
    return np.concatenate([qs, [NEVER]])


def exit_costs_for(tier_map: Mapping[str, Sequence[int]], num_exits: int, objective: str,
                   tier_costs: Sequence[float] | None = None) -> np.ndarray:
    """Cost of answering at each global exit (unserved exits: +inf)."""
    costs = np.full(num_exits, np.inf)
    if objective == "early":
        served = [e for exits in tier_map.values() for e in exits]
        for pos, e in enumerate(served):
            costs[e] = pos
    elif objective == "cost":
        if tier_costs is None or len(tier_costs) != len(tier_map):
            raise ValueError(f"objective 'cost' needs one cost per tier ({len(tier_map)}), got {tier_costs}")
        for t, exits in enumerate(tier_map.values()):
            costs[exits] = tier_costs[t]
    else:
        raise ValueError(f"unknown calibration objective {objective!r}; use 'early' or 'cost'")
    return costs


def calibrate(
    exit_probs: Sequence[np.ndarray],
    y: np.ndarray,
    tier_map: Mapping[str, Sequence[int | str]] | str | None = None,
    *,
    measure: str = "max_softmax",
    tolerance: float = 1.0,
    objective: str = "early",
    tier_costs: Sequence[float] | None = None,
    grid_size: int = 101,
    margin_se: float = 2.0,
) -> Calibration:
    """Pick per-exit thresholds (see module docstring). ``tolerance`` is in accuracy points.

    ``margin_se`` keeps a safety margin of that many standard errors of the (paired) accuracy
    difference between cascade and final exit, so the constraint still holds on unseen data: the
    calibration set's estimate and the test set's are both noisy (about ±0.3 points each for
    Fashion-MNIST's 6k/10k), and calibrating exactly at the tolerance misses it on test half the time.
    """
    y = np.asarray(y)
    E = len(exit_probs)
    if E == 0 or len(y) == 0:
        raise ValueError("calibration needs predictions of at least one exit on a non-empty set")
    if any(p.shape[0] != len(y) for p in exit_probs):
        raise ValueError("every exit needs one prediction per calibration label")
    if margin_se < 0:
        raise ValueError(f"margin_se must be >= 0, got {margin_se}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 accuracy points, got {tolerance}")
    tmap = normalize_tier_map(tier_map, E)
    costs = exit_costs_for(tmap, E, objective, tier_costs)
    served = [e for exits in tmap.values() for e in exits]
    final = E - 1
    gated = served[:-1]  # exits that get a threshold; the final exit always answers
    n = len(y)
    conf = np.stack([confidence(p, measure) for p in exit_probs])
    correct = np.stack([p.argmax(axis=1) == y for p in exit_probs])
    final_acc = float(correct[final].mean())
    target = final_acc - tolerance / 100.0

    if not gated:
        combos = np.zeros((1, 0))
        fractions = np.zeros((1, E))
        fractions[0, final] = 1.0
        accs = np.array([final_acc])
        diffs = np.zeros(1)
    else:
        # exhaustive search is G^(gated exits); keep it near 20k threshold sets for deep models
        g = grid_size if len(gated) <= 2 else max(5, min(grid_size, int(round(20000 ** (1 / (len(gated) - 1))))))
        grids = [_grid(conf[e], g) for e in gated]
        outer = list(itertools.product(*grids[:-1]))
        last = gated[-1]
        g_last = grids[-1]
        differs = correct != correct[final][None, :]  # (E, n): answer's correctness differs from final's
        combo_rows, frac_rows, acc_rows, diff_rows = [], [], [], []
        for ts in outer:
            remaining = np.ones(n, dtype=bool)
            counts = np.zeros(E)
            hits = 0.0
            diff = 0.0
            for e, t in zip(gated[:-1], ts, strict=True):
                ans = remaining & (conf[e] >= t)
                counts[e] = ans.sum()
                hits += correct[e][ans].sum()
                diff += differs[e][ans].sum()
                remaining &= ~ans
            # vectorised over the last gated exit's thresholds
            c_last = conf[last][remaining]
            ans = c_last[None, :] >= g_last[:, None]  # (G, r)
            n_last = ans.sum(axis=1)
            hit_last = (ans & correct[last][remaining][None, :]).sum(axis=1)
            hit_final = (~ans & correct[final][remaining][None, :]).sum(axis=1)
            diff_last = (ans & differs[last][remaining][None, :]).sum(axis=1)
            f = np.tile(counts, (len(g_last), 1))
            f[:, last] = n_last
            f[:, final] = remaining.sum() - n_last
            combo_rows.append(np.column_stack([np.tile(ts, (len(g_last), 1)), g_last]) if ts else g_last[:, None])
            frac_rows.append(f / n)
            acc_rows.append((hits + hit_last + hit_final) / n)
            diff_rows.append((diff + diff_last) / n)
        combos = np.concatenate(combo_rows)
        fractions = np.concatenate(frac_rows)
        accs = np.concatenate(acc_rows)
        diffs = np.concatenate(diff_rows)

    finite = np.where(np.isfinite(costs), costs, 0.0)
    exp_cost = fractions @ finite
    # paired difference d_i = cascade correct - final correct: mean = acc - final_acc, E[d^2] = diffs
    se = np.sqrt(np.maximum(diffs - (accs - final_acc) ** 2, 0.0) / n)
    ok = accs - margin_se * se >= target - 1e-12
    feasible = bool(ok.any())
    # lowest cost among feasible; ties -> higher accuracy
    cand = np.flatnonzero(ok) if feasible else np.array([int(np.argmax(accs))])
    order = np.lexsort((-accs[cand], np.round(exp_cost[cand], 12)))
    best = int(cand[order[0]])

    thresholds: list[float | None] = [NEVER] * E
    for e, t in zip(gated, combos[best], strict=True):
        thresholds[e] = float(t)
    thresholds[final] = None
    tier_fracs = {name: float(fractions[best, exits].sum()) for name, exits in tmap.items()}
    curve = _pareto(exp_cost, accs)
    curve["early_fraction"] = fractions[:, served[0]].tolist() if len(accs) <= 20000 else []
    curve["all_accuracy"] = accs.tolist() if len(accs) <= 20000 else []
    return Calibration(
        thresholds=thresholds, objective=objective, tolerance=float(tolerance), accuracy=float(accs[best]),
        final_accuracy=final_acc, exit_fractions=fractions[best].tolist(), tier_fractions=tier_fracs,
        expected_cost=float(exp_cost[best]), exit_costs=[float(c) if np.isfinite(c) else None for c in costs],
        feasible=feasible, curve=curve, margin_se=float(margin_se),
    )


def _pareto(cost: np.ndarray, acc: np.ndarray) -> dict[str, list[float]]:
    """Accuracy/cost frontier: for increasing cost, the best accuracy reachable."""
    order = np.lexsort((-acc, cost))
    best = -np.inf
    xs, ys = [], []
    for i in order:
        if acc[i] > best + 1e-12:
            best = acc[i]
            xs.append(float(cost[i]))
            ys.append(float(acc[i]))
    return {"pareto_cost": xs, "pareto_accuracy": ys}
