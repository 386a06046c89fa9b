"""The version-consistent rollout over any `RolloutBackend`, with a canary gate and automatic rollback.

Order (DESIGN "Versioned rollout"): the new version's downstream tiers start first (cloud and fog at the
same time: they only read their own version's topics) and must all be ready before its edge starts and
joins the shared edge consumer group on ``APP.requests``; so no activation of
the new network ever waits for a tier that is not there. The canary runs while the old version still
serves its share of the traffic: if it fails, removing the new edge hands its partitions back to the old
edge and nothing has to be restarted (no cold start, champion unchanged). Only after the canary passes
do the old edge workers leave the group, and the old fog/cloud drain their version's topics and stop,
upstream first so that every forwarded activation still finds its tier.

The plan and the verdict are pure functions (unit-tested); all I/O goes through the backend and the
injected callables (canary, promote, drain wait, progress log).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

from ml.contract import TIERS
from plugins.rollout.base import Release, RolloutBackend, RolloutError

Action = Literal["start", "wait", "drain", "stop"]


@dataclass(frozen=True)
class Step:
    action: Action
    version: str
    tier: str

    def __str__(self) -> str:
        return f"{self.action} v{self.version} {self.tier}"


@dataclass(frozen=True)
class RolloutPlan:
    bring_up: tuple[Step, ...]  # new version: downstream starts, their waits, then the edge's start and wait
    retire: tuple[Step, ...]  # old versions: edge leaves, then fog/cloud drain and stop
    rollback: tuple[Step, ...]  # new version in reverse order (edge first), used on failure


def plan_rollout(release: Release, running: dict[str, Sequence[str]]) -> RolloutPlan:
    """What to start, retire and (on failure) undo, given the versions that have workers now."""
    already = set(running.get(release.version, ()))
    # The downstream tiers only consume their own version's link topics, so they start together (their
    # process start and group join overlap) and must all be ready before the entry tier (the edge) starts
    # and joins the shared group.
    *downstream, entry = release.downstream_first()
    bring_up: list[Step] = [Step("start", release.version, s.tier) for s in downstream if s.tier not in already]
    bring_up += [Step("wait", release.version, s.tier) for s in downstream]
    if entry.tier not in already:
        bring_up.append(Step("start", release.version, entry.tier))
    bring_up.append(Step("wait", release.version, entry.tier))
    retire: list[Step] = []
    order = list(TIERS) + [s.tier for s in release.tiers if s.tier not in TIERS]
    for version in sorted((v for v in running if v != release.version), key=_version_key):
        tiers = sorted(running[version], key=lambda t: order.index(t) if t in order else len(order))
        for i, tier in enumerate(tiers):
            if i > 0:  # the tier above stopped: let this one drain what it already forwarded
                retire.append(Step("drain", version, tier))
            retire.append(Step("stop", version, tier))
    rollback = tuple(Step("stop", release.version, s.tier) for s in release.tiers if s.tier not in already)
    return RolloutPlan(tuple(bring_up), tuple(retire), rollback)


def _version_key(v: str) -> tuple[int, int | str]:
    return (0, int(v)) if v.isdigit() else (1, v)


@dataclass(frozen=True)
class CanaryPolicy:
    """Bounds a new version must meet on labeled canary requests before it becomes champion."""

    requests: int = 200
    min_accuracy: float = 0.5  # accuracy on the requests the new version answered
    max_p95_latency_ms: float = 2000.0
    max_unanswered: int = 0  # requests with no answer at all (any version) by the timeout
    min_new_version_answers: int = 10  # the new version must answer at least this many
    max_degraded_fraction: float = 0.05
    # A release is judged on its calibrated thresholds: when more of the new version's answers than this came
    # from adapted exits (`runtime.adaptive`: a slow upstream during the canary) its calibrated behaviour was
    # not seen, and the canary fails rather than pass a release it could not judge.
    max_adapted_fraction: float = 0.05
    timeout_s: float = 60.0


@dataclass
class CanaryReport:
    """What the canary saw; `answers_by_version` counts answers by the model version that gave them."""

    sent: int
    answered: int
    new_version_answers: int
    new_version_correct: int
    p95_latency_ms: float
    degraded: int = 0
    adapted: int = 0  # answers of the new version given at adapted thresholds
    answers_by_version: dict[str, int] = field(default_factory=dict)
    answers_by_tier: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.new_version_correct / self.new_version_answers if self.new_version_answers else 0.0


def canary_problems(report: CanaryReport, policy: CanaryPolicy) -> list[str]:
    """Reasons the canary failed, each saying which bound was crossed; empty means pass."""
    problems = []
    unanswered = report.sent - report.answered
    if unanswered > policy.max_unanswered:
        problems.append(f"{unanswered} of {report.sent} canary requests got no answer "
                        f"(allowed {policy.max_unanswered})")
    if report.new_version_answers < policy.min_new_version_answers:
        problems.append(f"the new version answered only {report.new_version_answers} canary requests "
                        f"(need {policy.min_new_version_answers}); its edge may not have joined the group")
    elif report.accuracy < policy.min_accuracy:
        problems.append(f"canary accuracy {report.accuracy:.3f} < {policy.min_accuracy:.3f}")
    if not math.isfinite(report.p95_latency_ms) or report.p95_latency_ms > policy.max_p95_latency_ms:
        problems.append(f"canary p95 latency {report.p95_latency_ms:.0f} ms > {policy.max_p95_latency_ms:.0f} ms")
    if report.new_version_answers and report.adapted / report.new_version_answers > policy.max_adapted_fraction:
        problems.append(f"{report.adapted} of the new version's {report.new_version_answers} canary answers came "
                        f"from adapted exits (allowed fraction {policy.max_adapted_fraction}): its upstream was "
                        "slower than the latency objective, so its calibrated behaviour could not be judged; "
                        "retry the rollout when the links are healthy")
    if report.answered and report.degraded / report.answered > policy.max_degraded_fraction:
        problems.append(f"{report.degraded} of {report.answered} canary answers were degraded "
                        f"(allowed fraction {policy.max_degraded_fraction})")
    return problems


@dataclass
class RolloutOutcome:
    version: str
    promoted: bool
    rolled_back: bool
    problems: list[str]
    canary: CanaryReport | None
    retired: list[str]
    seconds_to_serving: float  # from the start of the rollout until the new edge was ready
    seconds_total: float

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.canary is not None:
            d["canary"]["accuracy"] = self.canary.accuracy
        return d


def bring_up(backend: RolloutBackend, release: Release, plan: RolloutPlan, *, ready_timeout_s: float = 180.0,
             log: Callable[[str], None] = print) -> None:
    """The plan's bring-up: downstream tiers start together, all ready before the entry tier starts;
    raises `RolloutError` when a tier does not become ready."""
    specs = {s.tier: s for s in release.tiers}
    for step in plan.bring_up:
        if step.action == "start":
            log(f"starting {step}")
            backend.start_tier(release, specs[step.tier])
        else:
            backend.wait_ready(release, specs[step.tier], ready_timeout_s)
            log(f"ready: v{release.version} {step.tier}")


def rollout(
    backend: RolloutBackend,
    release: Release,
    *,
    canary: Callable[[Release], CanaryReport] | None,
    policy: CanaryPolicy,
    promote: Callable[[str], None],
    drain: Callable[[str, str], None] | None = None,
    ready_timeout_s: float = 180.0,
    stop_timeout_s: float = 30.0,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> RolloutOutcome:
    """Bring `release` up, check it, then retire the old versions and promote, or roll back.

    Never raises for a failed candidate: the outcome says `rolled_back` with the reasons, so the
    caller decides whether the task fails. Raises only if the rollback itself fails.
    """
    t0 = clock()
    plan = plan_rollout(release, backend.running(release.app))
    log(f"rollout v{release.version}: bring up {[str(s) for s in plan.bring_up]}, "
        f"then retire {[str(s) for s in plan.retire]}")
    problems: list[str] = []
    report: CanaryReport | None = None
    serving_at = math.nan
    try:
        bring_up(backend, release, plan, ready_timeout_s=ready_timeout_s, log=log)
        serving_at = clock() - t0
        if canary is not None:
            report = canary(release)
            problems = canary_problems(report, policy)
            log(f"canary: {report.new_version_answers} answers by v{release.version}, accuracy "
                f"{report.accuracy:.3f}, p95 {report.p95_latency_ms:.0f} ms, answered "
                f"{report.answered}/{report.sent}" + (f"; problems: {problems}" if problems else ""))
    except RolloutError as exc:
        problems = [str(exc)]
    if problems:
        log(f"rolling back v{release.version}: {'; '.join(problems)}")
        for step in plan.rollback:
            backend.stop_tier(release.app, step.version, step.tier, stop_timeout_s)
            log(f"stopped {step.version} {step.tier}")
        return RolloutOutcome(release.version, False, True, problems, report, [], serving_at, clock() - t0)
    retired = []
    for step in plan.retire:
        if step.action == "drain":
            if drain is not None:
                drain(step.version, step.tier)
            continue
        backend.stop_tier(release.app, step.version, step.tier, stop_timeout_s)
        retired.append(f"{step.version}/{step.tier}")
        log(f"retired v{step.version} {step.tier}")
    promote(release.version)
    log(f"v{release.version} promoted")
    return RolloutOutcome(release.version, True, False, [], report, retired, serving_at, clock() - t0)
