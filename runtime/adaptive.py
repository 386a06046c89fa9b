"""Adaptive exits: a forwarding tier answers more itself while its upstream is too slow for the latency
objective, moving along its calibrated operating points (`ml.exit_curve`), never past the accuracy floor.

What the tier sees: the outcome of every request it forwarded (its answer seen on APP.results, with the
time from the request's origin; or no answer by the window close, or no forward possible) and how many
requests it answered itself. The p95 of the requests through this tier stays under the objective while
the share of them slower than the objective stays under 5 %; answers given here are fast, so that share is
``forward share x slow share of forwarded requests``. :func:`next_point` picks the least adapted point
whose forward share (the calibration's, scaled by how much more or less the tier forwards live than the
calibration expected) keeps it under the budget:

* towards more answered here when the current point misses the budget;
* back towards calibrated only when the point to return to keeps it under ``(1 - hysteresis)`` of the
  budget (so the tier does not flap when answering more is what made the upstream fast again);
* at most ``max_step`` points per update; with too few recent outcomes to judge, it holds if any was slow
  and probes one point back if all were in time; with none for ``quiet_s`` (nothing forwarded, nothing to
  learn), it steps back to calibrated.

`next_point` is pure; `AdaptiveExits` keeps the recent outcomes and the point in force for a worker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ml.exit_curve import ExitCurve, OperatingPoint

log = logging.getLogger("tierflow.worker")


@dataclass(frozen=True)
class Policy:
    """How a tier adapts (`runtime.settings.AdaptiveSettings` gives these)."""

    objective_ms: float  # end-to-end latency the quantile must stay under
    quantile: float = 0.95
    hysteresis: float = 0.5  # step back only with this share of the budget to spare
    max_step: int = 3  # operating points per update, either way
    min_samples: int = 10  # forwarded outcomes in the window needed to judge
    quiet_s: float = 30.0  # no forwarded outcome for this long: back to calibrated

    @property
    def budget(self) -> float:
        """Share of requests allowed over the objective."""
        return 1.0 - self.quantile


@dataclass(frozen=True)
class Upstream:
    """What one tier measured over the recent window."""

    forward_ratio: float  # forwarded / what the calibration expects at the points in force (1 = as validated)
    slow_share: float  # of its forwarded requests' outcomes, the share slower than the objective (or lost)
    samples: int  # forwarded outcomes behind slow_share
    quiet_s: float  # seconds since the last forwarded outcome


def next_point(current: int, forward_rates: Sequence[float], up: Upstream, policy: Policy) -> int:
    """The operating point to use next (0 = calibrated; higher = more answered here)."""
    last = len(forward_rates) - 1
    if last <= 0:
        return 0
    if up.samples < policy.min_samples:
        if up.quiet_s >= policy.quiet_s:
            return max(0, current - policy.max_step)
        # an adapted tier forwards little, so evidence comes slowly: a few outcomes all in time are enough to
        # probe one point back; any slow one holds the point
        return max(0, current - 1) if up.samples and up.slow_share == 0 else current

    def predicted(j: int) -> float:  # share of requests over the objective at point j
        return min(up.forward_ratio * forward_rates[j], 1.0) * up.slow_share

    if predicted(current) > policy.budget:
        target = next((j for j in range(current + 1, last + 1) if predicted(j) <= policy.budget), last)
        return min(target, current + policy.max_step)
    target = next((j for j in range(current) if predicted(j) <= (1 - policy.hysteresis) * policy.budget), current)
    return max(target, current - policy.max_step)


class AdaptiveExits:
    """One tier's recent upstream outcomes and the operating point in force.

    Fed by the worker's loop (never from another thread): `decided` per micro-batch, `resolved` per answer
    from above, `lost` per forward that got none; `update` (cheap, acts every ``interval_s``) moves the point
    and calls ``apply`` with the thresholds now in force.
    """

    def __init__(self, curve: ExitCurve, policy: Policy, *, floor_points: float | None = None,
                 window_s: float = 10.0, interval_s: float = 1.0,
                 apply: Callable[[OperatingPoint, int], None] | None = None, tier: str = ""):
        self.points = curve.usable(floor_points)
        self.forward_rates = [1.0 - p.answer_rate for p in self.points]
        self.policy, self.window_s, self.interval_s, self.tier = policy, window_s, interval_s, tier
        self.point = 0
        self._apply = apply
        self._outcomes: deque[tuple[float, bool]] = deque()  # (monotonic s, slower than the objective)
        # (monotonic s, forwards the calibration expects at the point in force, forwarded)
        self._decisions: deque[tuple[float, float, int]] = deque()
        self._expected = 0.0
        self._forwarded = 0
        self._slow = 0
        self._last_outcome = self._last_update = None  # type: float | None

    @property
    def thresholds(self) -> list[float | None]:
        return self.points[self.point].thresholds

    @property
    def adapted(self) -> bool:
        return self.point > 0

    def decided(self, now_s: float, decided: int, forwarded: int, backed_up: int = 0) -> None:
        """A micro-batch: ``decided`` requests, ``forwarded`` of them sent up, ``backed_up`` that could not be
        (the link's queue was full: each is a forwarded request that failed)."""
        if decided:
            expected = decided * self.forward_rates[self.point]
            self._decisions.append((now_s, expected, forwarded + backed_up))
            self._expected += expected
            self._forwarded += forwarded + backed_up
        for _ in range(backed_up):
            self._outcome(now_s, True)

    def outcomes(self, now_s: float, outcomes: Counter) -> None:
        """The outcomes of one micro-batch as `runtime.outputs.Outputs.act` names them: "forwarded", and
        answers ("exit" | "degraded", exit id); a degraded answer at decision time is a forward that could not be
        made (the next tier's window had closed or its link was backed up)."""
        forwarded = backed_up = answered = 0
        for outcome, n in outcomes.items():
            if outcome == "forwarded":
                forwarded += n
            elif isinstance(outcome, tuple):
                if outcome[0] == "degraded":
                    backed_up += n
                else:
                    answered += n
        self.decided(now_s, forwarded + backed_up + answered, forwarded, backed_up)

    def resolved(self, now_s: float, latency_ms: float) -> None:
        """An answer from above to a request this tier forwarded, ``latency_ms`` after the request's origin."""
        self._outcome(now_s, latency_ms > self.policy.objective_ms)

    def lost(self, now_s: float, n: int = 1) -> None:
        """Forwards with no answer by this tier's window close (answered degraded here)."""
        for _ in range(n):
            self._outcome(now_s, True)

    def _outcome(self, now_s: float, slow: bool) -> None:
        self._outcomes.append((now_s, slow))
        self._slow += slow
        self._last_outcome = now_s

    def measured(self, now_s: float) -> Upstream:
        horizon = now_s - self.window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._slow -= self._outcomes.popleft()[1]
        while self._decisions and self._decisions[0][0] < horizon:
            _, e, f = self._decisions.popleft()
            self._expected -= e
            self._forwarded -= f
        n = len(self._outcomes)
        quiet = now_s - self._last_outcome if self._last_outcome is not None else float("inf")
        ratio = self._forwarded / self._expected if self._expected > 1e-9 else 1.0
        return Upstream(forward_ratio=ratio,
                        slow_share=self._slow / n if n else 0.0, samples=n, quiet_s=quiet)

    def update(self, now_s: float) -> bool:
        """Move the operating point if it is time; True when the thresholds in force changed."""
        if self._last_update is not None and now_s - self._last_update < self.interval_s:
            return False
        self._last_update = now_s
        up = self.measured(now_s)
        point = next_point(self.point, self.forward_rates, up, self.policy)
        if point == self.point:
            return False
        log.info("thresholds in force changed", extra={
            "tier": self.tier, "point": point, "thresholds": self.points[point].thresholds,
            "forward_ratio": round(up.forward_ratio, 3), "slow_share": round(up.slow_share, 3),
            "samples": up.samples})
        self.point = point
        if self._apply is not None:
            self._apply(self.points[point], point)
        return True


def attach(settings: Any, model: Any, forwards: bool, inference: Any, encoder: Any, metrics: Any, answers: Any,
           clock: Any) -> AdaptiveExits | None:
    """Put the calibrated thresholds in force on a worker (every result names its threshold) and, when adaptive
    exits are on (``settings``: `runtime.settings.AdaptiveSettings`) and the tier forwards and has a curve, the
    controller that moves them; it sets ``inference.thresholds`` (read once per micro-batch by the inference
    thread) and the gauges, and learns each answer to a forward from ``answers.on_resolved``."""
    calibrated = model.thresholds
    encoder.in_force(model.exit_ids, calibrated, False)
    metrics.thresholds_in_force(model.exit_ids, calibrated, 0)
    if not settings.enabled or not forwards:
        return None
    spec = model.manifest.tier(model.name) if model.manifest is not None else None
    curve = spec.curve if spec is not None else None
    if curve is None:
        log.warning("adaptive exits are on but the bundle has no operating points for this tier (calibrated "
                    "before they existed): the calibrated thresholds stay in force; re-run calibration",
                    extra={"tier": model.name})
        return None
    if curve.points[0].thresholds != list(calibrated):
        log.warning("adaptive exits are on but the tier's thresholds are not its curve's calibrated point (they "
                    "were changed after calibration): the thresholds stay in force; recompute the curve",
                    extra={"tier": model.name, "thresholds": calibrated, "curve": curve.points[0].thresholds})
        return None

    def apply(point: OperatingPoint, index: int) -> None:
        inference.thresholds = calibrated if index == 0 else point.thresholds
        metrics.thresholds_in_force(model.exit_ids, point.thresholds, index)

    policy = Policy(objective_ms=settings.objective_ms, quantile=settings.quantile, hysteresis=settings.hysteresis,
                    max_step=settings.max_step, min_samples=settings.min_samples, quiet_s=settings.quiet_s)
    ctl = AdaptiveExits(curve, policy, floor_points=settings.floor_points, window_s=settings.window_s,
                        interval_s=settings.interval_s, apply=apply, tier=model.name)
    answers.on_resolved = lambda p: ctl.resolved(time.monotonic(), clock.now() - (p.origin_ts or p.received_ts))
    log.info("adaptive exits on", extra={"tier": model.name, "objective_ms": settings.objective_ms,
                                         "points": len(ctl.points), "lowest": ctl.points[-1].thresholds})
    return ctl
