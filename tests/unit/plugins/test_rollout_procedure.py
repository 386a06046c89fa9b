"""The rollout order, canary verdict and rollback, over an in-memory backend that records calls."""

from __future__ import annotations

import pytest

from plugins.rollout.base import Release, RolloutBackend, RolloutError, TierWorkerSpec
from plugins.rollout.procedure import (
    CanaryPolicy,
    CanaryReport,
    Step,
    canary_problems,
    plan_rollout,
    rollout,
)


def release(version: str = "2", tiers=("edge", "fog", "cloud")) -> Release:
    return Release("app", version, tuple(TierWorkerSpec(t, f"models:/app-{t}/{version}") for t in tiers))


class RecordingBackend(RolloutBackend):
    def __init__(self, running=None, fail_ready=None):
        self.workers: dict[str, list[str]] = {v: list(t) for v, t in (running or {}).items()}
        self.calls: list[tuple[str, str, str]] = []
        self.fail_ready = fail_ready or set()

    def start_tier(self, release, spec):
        self.calls.append(("start", release.version, spec.tier))
        self.workers.setdefault(release.version, []).append(spec.tier)

    def wait_ready(self, release, spec, timeout_s):
        self.calls.append(("wait", release.version, spec.tier))
        if (release.version, spec.tier) in self.fail_ready:
            raise RolloutError(f"v{release.version} {spec.tier} not ready: model not found")

    def stop_tier(self, app, version, tier, timeout_s):
        self.calls.append(("stop", version, tier))
        if tier in self.workers.get(version, []):
            self.workers[version].remove(tier)
            if not self.workers[version]:
                del self.workers[version]

    def running(self, app):
        return {v: list(t) for v, t in self.workers.items()}


def good_report(n=100, version_answers=60, correct=55, p95=40.0) -> CanaryReport:
    return CanaryReport(sent=n, answered=n, new_version_answers=version_answers,
                        new_version_correct=correct, p95_latency_ms=p95)


def test_plan_starts_downstream_first_and_retires_old_edge_first():
    plan = plan_rollout(release("2"), {"1": ["cloud", "edge", "fog"]})
    assert [str(s) for s in plan.bring_up] == [
        "start v2 cloud", "start v2 fog", "wait v2 cloud", "wait v2 fog", "start v2 edge", "wait v2 edge"]
    assert [str(s) for s in plan.retire] == [
        "stop v1 edge", "drain v1 fog", "stop v1 fog", "drain v1 cloud", "stop v1 cloud"]
    assert [s.tier for s in plan.rollback] == ["edge", "fog", "cloud"]


def test_plan_for_a_version_already_running_only_waits_and_never_rolls_it_back():
    plan = plan_rollout(release("2"), {"2": ["edge", "fog", "cloud"]})
    assert all(s.action == "wait" for s in plan.bring_up)
    assert plan.retire == () and plan.rollback == ()


def test_plan_cloud_only_release_retires_every_tier_of_older_versions_in_version_order():
    plan = plan_rollout(release("5", ("cloud",)), {"10": ["edge", "cloud"], "3": ["cloud"]})
    assert plan.bring_up == (Step("start", "5", "cloud"), Step("wait", "5", "cloud"))
    assert [str(s) for s in plan.retire] == ["stop v3 cloud", "stop v10 edge", "drain v10 cloud", "stop v10 cloud"]


def test_canary_passes_within_bounds():
    assert canary_problems(good_report(), CanaryPolicy(min_accuracy=0.8)) == []


@pytest.mark.parametrize(("report", "needle"), [
    (good_report(correct=30), "accuracy 0.500 < 0.800"),
    (good_report(p95=5000.0), "p95 latency 5000 ms > 2000 ms"),
    (good_report(p95=float("nan")), "p95 latency"),
    (CanaryReport(100, 97, 60, 55, 40.0), "3 of 100 canary requests got no answer"),
    (good_report(version_answers=3, correct=3), "answered only 3"),
    (CanaryReport(100, 100, 60, 55, 40.0, degraded=20), "20 of 100 canary answers were degraded"),
    (CanaryReport(100, 100, 60, 55, 40.0, adapted=12), "12 of the new version's 60 canary answers came from adapted"),
])
def test_canary_problems_name_the_bound_that_was_crossed(report, needle):
    problems = canary_problems(report, CanaryPolicy(min_accuracy=0.8))
    assert any(needle in p for p in problems), problems


def test_successful_rollout_retires_old_version_and_promotes():
    backend = RecordingBackend(running={"1": ["edge", "fog", "cloud"]})
    promoted, drained = [], []
    out = rollout(backend, release("2"), canary=lambda r: good_report(), policy=CanaryPolicy(),
                  promote=promoted.append, drain=lambda v, t: drained.append((v, t)), log=lambda m: None)
    assert out.promoted and not out.rolled_back and out.problems == []
    assert promoted == ["2"]
    assert drained == [("1", "fog"), ("1", "cloud")]
    assert backend.running("app") == {"2": ["cloud", "fog", "edge"]}
    starts = [c for c in backend.calls if c[0] == "start"]
    assert [c[2] for c in starts] == ["cloud", "fog", "edge"]
    # cloud and fog start together; the edge starts (joins the shared group) only when both are ready
    edge_start = backend.calls.index(("start", "2", "edge"))
    assert backend.calls.index(("start", "2", "fog")) < backend.calls.index(("wait", "2", "cloud"))
    assert backend.calls.index(("wait", "2", "cloud")) < edge_start
    assert backend.calls.index(("wait", "2", "fog")) < edge_start
    # the old edge leaves only after the new edge is ready
    assert backend.calls.index(("stop", "1", "edge")) > backend.calls.index(("wait", "2", "edge"))
    assert out.retired == ["1/edge", "1/fog", "1/cloud"]


def test_failed_canary_rolls_back_in_reverse_order_and_keeps_champion():
    backend = RecordingBackend(running={"1": ["edge", "fog", "cloud"]})
    promoted = []
    out = rollout(backend, release("2"), canary=lambda r: good_report(correct=10), policy=CanaryPolicy(min_accuracy=0.8),
                  promote=promoted.append, log=lambda m: None)
    assert out.rolled_back and not out.promoted and promoted == []
    assert any("accuracy" in p for p in out.problems)
    stops = [c for c in backend.calls if c[0] == "stop"]
    assert stops == [("stop", "2", "edge"), ("stop", "2", "fog"), ("stop", "2", "cloud")]
    assert backend.running("app") == {"1": ["edge", "fog", "cloud"]}


def test_tier_that_never_gets_ready_is_rolled_back_without_running_the_canary():
    backend = RecordingBackend(running={"1": ["edge", "fog", "cloud"]}, fail_ready={("2", "fog")})
    canaries = []
    out = rollout(backend, release("2"), canary=lambda r: canaries.append(r) or good_report(),
                  policy=CanaryPolicy(), promote=lambda v: None, log=lambda m: None)
    assert out.rolled_back and canaries == []
    assert "model not found" in out.problems[0]
    assert ("start", "2", "edge") not in backend.calls  # the edge never joined the group
    assert backend.running("app") == {"1": ["edge", "fog", "cloud"]}


def test_first_deploy_without_canary_promotes():
    backend = RecordingBackend()
    promoted = []
    out = rollout(backend, release("1"), canary=None, policy=CanaryPolicy(), promote=promoted.append,
                  log=lambda m: None)
    assert out.promoted and promoted == ["1"] and out.retired == []
