"""Adaptive exits: a forwarding tier answers more itself while its upstream is too slow for the latency
objective, moving along its calibrated operating points (`ml.exit_curve`), never past the accuracy floor.

What the tier sees: the outcome of every request it forwarded (its answer seen on APP.results, with the
time from the request's origin; or no answer by the window close, or no forward possible), its forwards still
in flight that are already older than the objective (misses known before their answer comes: after a
slowdown the first answers take a round trip over the slow link, while every forward made meanwhile is
another miss), and how many requests it answered itself. The p95 of the requests through this tier stays under the objective while
the share of them slower than the objective stays under 5 %; answers given here are fast, so that share is
``forward share x slow share of forwarded requests``. :func:`next_point` picks the least adapted point
whose forward share (the calibration's, scaled by how much more or less the tier forwards live than the
calibration expected) keeps it under the budget:

* towards more answered here when the current point misses the budget, at most ``max_step`` points per
  move, except on hard evidence of a slowdown: at least ``react_slow`` misses among the latest
  ``react_outcomes`` requests whose fate is known, latest by origin (the forwards past the objective in flight
  now are the latest as soon as the upstream slows; a window of answers would still be full of fast ones). Then
  the slow share is the larger of that recent one and the window's, and the tier goes straight to the point it
  needs (a fast attack: at 300 ms one way, a tier has about a second before a 10 s window's p95 is lost);
* back towards calibrated only when the point to return to keeps it under ``(1 - hysteresis)`` of the
  budget (so the tier does not flap when answering more is what made the upstream fast again);
* back at most ``max_step`` points per move (slow release); with too few recent outcomes to judge, it holds if any was slow
  and probes one point back if all were in time; with none for ``quiet_s`` (nothing forwarded, nothing to
  learn), it steps back to calibrated.

`next_point` is pure; `AdaptiveExits` keeps the recent outcomes and the point in force for a worker, looks
every ``EVAL_S`` and moves at most every ``interval_s`` unless the evidence is hard.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ml.exit_curve import ExitCurve, OperatingPoint

log = logging.getLogger("tierflow.worker")

EVAL_S = 0.1  # how often the controller looks (a look is cheap: deque ends and one pass over the forwards in flight)


@dataclass(frozen=True)
class Policy:
    """How a tier adapts (`runtime.settings.AdaptiveSettings` gives these)."""

    objective_ms: float  # end-to-end latency the quantile must stay under
    quantile: float = 0.95
    hysteresis: float = 0.5  # step back only with this share of the budget to spare
    max_step: int = 3  # operating points per update, either way
    min_samples: int = 10  # forwarded outcomes in the window needed to judge
    quiet_s: float = 30.0  # no forwarded outcome for this long: back to calibrated
    react_outcomes: int = 6  # latest known outcomes (by origin, late forwards in flight included) ...
    react_slow: int = 3  # ... with this many misses: hard evidence of a slowdown

    @property
    def budget(self) -> float:
        """Share of requests allowed over the objective."""
        return 1.0 - self.quantile


@dataclass(frozen=True)
class Upstream:
    """What one tier measured over the recent window."""

    forward_ratio: float  # forwarded / what the calibration expects at the points in force (1 = as validated)
    slow_share: float  # of its forwarded requests' outcomes, the share slower than the objective (or lost)
    samples: int  # forwarded outcomes behind slow_share (forwards in flight past the objective included)
    quiet_s: float  # seconds since the last forwarded outcome
    recent_slow: int = 0  # misses among the latest react_outcomes known outcomes
    recent_samples: int = 0  # outcomes behind recent_slow


def hard_evidence(up: Upstream, policy: Policy) -> bool:
    """Enough recent misses to act at once, unbounded by ``max_step`` and ``interval_s``."""
    return up.recent_slow >= policy.react_slow


def next_point(current: int, forward_rates: Sequence[float], up: Upstream, policy: Policy) -> int:
    """The operating point to use next (0 = calibrated; higher = more answered here)."""
    last = len(forward_rates) - 1
    if last <= 0:
        return 0
    hard = hard_evidence(up, policy)
    slow = max(up.slow_share, up.recent_slow / up.recent_samples) if hard else up.slow_share
    if up.samples < policy.min_samples and not hard:
        if up.quiet_s >= policy.quiet_s:
            return max(0, current - policy.max_step)
        # an adapted tier forwards little, so evidence comes slowly: a few outcomes all in time are enough to
        # probe one point back; any slow one holds the point
        return max(0, current - 1) if up.samples and up.slow_share == 0 else current

    def predicted(j: int) -> float:  # share of requests over the objective at point j
        return min(up.forward_ratio * forward_rates[j], 1.0) * slow

    if predicted(current) > policy.budget:
        target = next((j for j in range(current + 1, last + 1) if predicted(j) <= policy.budget), last)
        return target if hard else min(target, current + policy.max_step)
    target = next((j for j in range(current) if predicted(j) <= (1 - policy.hysteresis) * policy.budget), current)
    return max(target, current - policy.max_step)


class AdaptiveExits:
    """One tier's recent upstream outcomes and the operating point in force.

    Fed by the worker's loop (never from another thread): `decided` per micro-batch, `resolved` per answer
    from above, `lost` per forward that got none; ``late()`` counts the forwards in flight now that are older
    than the objective. `update` (cheap, looks every ``EVAL_S``) moves the point and calls ``apply`` with the
    thresholds now in force.
    """

    def __init__(self, curve: ExitCurve, policy: Policy, *, floor_points: float | None = None,
                 window_s: float = 10.0, interval_s: float = 1.0,
                 apply: Callable[[OperatingPoint, int], None] | None = None, tier: str = "",
                 late: Callable[[], int] | None = None):
        self.points = curve.usable(floor_points)
        self.forward_rates = [1.0 - p.answer_rate for p in self.points]
        self.policy, self.window_s, self.interval_s, self.tier = policy, window_s, interval_s, tier
        self.point = 0
        self._apply, self._late = apply, late
        # (monotonic s seen, slower than the objective, monotonic s of the request's origin)
        self._outcomes: deque[tuple[float, bool, float]] = deque()
        # (monotonic s, forwards the calibration expects at the point in force, forwarded)
        self._decisions: deque[tuple[float, float, int]] = deque()
        self._expected = 0.0
        self._forwarded = 0
        self._slow = 0
        self._last_outcome = self._last_look = self._last_move = None  # type: float | None

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
            self._outcome(now_s, True, now_s)

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
        self._outcome(now_s, latency_ms > self.policy.objective_ms, now_s - latency_ms / 1000)

    def lost(self, now_s: float, n: int = 1) -> None:
        """Forwards with no answer by this tier's window close (answered degraded here)."""
        for _ in range(n):
            self._outcome(now_s, True, now_s - self.policy.objective_ms / 1000)  # late in flight until now

    def _outcome(self, now_s: float, slow: bool, origin_s: float) -> None:
        self._outcomes.append((now_s, slow, origin_s))
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
        late = self._late() if self._late is not None else 0
        # the latest known outcomes by origin: late forwards in flight originated before now - objective (taken
        # as then), answers arrive roughly in origin order (a slow one late: look a few times further back)
        k = self.policy.react_outcomes
        seen = [(o, slow) for _, slow, o in itertools.islice(reversed(self._outcomes), 4 * k)]
        latest = sorted(seen + [(now_s - self.policy.objective_ms / 1000, True)] * min(late, k), reverse=True)[:k]
        recent, recent_slow = len(latest), sum(slow for _, slow in latest)
        n = len(self._outcomes) + late
        quiet = 0.0 if late else now_s - self._last_outcome if self._last_outcome is not None else float("inf")
        ratio = self._forwarded / self._expected if self._expected > 1e-9 else 1.0
        return Upstream(forward_ratio=ratio, slow_share=(self._slow + late) / n if n else 0.0, samples=n,
                        quiet_s=quiet, recent_slow=recent_slow, recent_samples=recent)

    def update(self, now_s: float) -> bool:
        """Move the operating point if the measurements say so; True when the thresholds in force changed.
        Moves are at least ``interval_s`` apart, except towards more answered here on hard evidence."""
        if self._last_look is not None and now_s - self._last_look < EVAL_S:
            return False
        self._last_look = now_s
        up = self.measured(now_s)
        point = next_point(self.point, self.forward_rates, up, self.policy)
        if point == self.point:
            return False
        rested = self._last_move is None or now_s - self._last_move >= self.interval_s
        if not rested and not (point > self.point and hard_evidence(up, self.policy)):
            return False
        log.info("thresholds in force changed", extra={
            "tier": self.tier, "point": point, "thresholds": self.points[point].thresholds,
            "forward_ratio": round(up.forward_ratio, 3), "slow_share": round(up.slow_share, 3),
            "samples": up.samples, "recent_slow": up.recent_slow, "recent_samples": up.recent_samples})
        self.point, self._last_move = point, now_s
        if self._apply is not None:
            self._apply(self.points[point], point)
        return True


def attach(settings: Any, model: Any, forwards: bool, inference: Any, encoder: Any, metrics: Any, answers: Any,
           clock: Any) -> AdaptiveExits | None:
    """Put the calibrated thresholds in force on a worker (every result names its threshold) and, when adaptive
    exits are on (``settings``: `runtime.settings.AdaptiveSettings`) and the tier forwards and has a curve, the
    controller that moves them; it sets ``inference.thresholds`` (read once per micro-batch by the inference
    thread) and the gauges, learns each answer to a forward from ``answers.on_resolved`` and the forwards still in
    flight from ``answers.pending``."""
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
                    max_step=settings.max_step, min_samples=settings.min_samples, quiet_s=settings.quiet_s,
                    react_outcomes=settings.react_outcomes, react_slow=settings.react_slow)
    pending = answers.pending
    ctl = AdaptiveExits(curve, policy, floor_points=settings.floor_points, window_s=settings.window_s,
                        interval_s=settings.interval_s, apply=apply, tier=model.name,
                        late=lambda: pending.started_before(clock.now() - settings.objective_ms))
    answers.on_resolved = lambda p: ctl.resolved(time.monotonic(), clock.now() - (p.origin_ts or p.received_ts))
    log.info("adaptive exits on", extra={"tier": model.name, "objective_ms": settings.objective_ms,
                                         "points": len(ctl.points), "lowest": ctl.points[-1].thresholds})
    return ctl
