"""One answer per request whatever fails, counted on APP.results after the system went quiet.

Real worker processes of the tiny 3-tier bundle on the real broker: kill -9 or SIGTERM of each tier under
load with a restart, short and already-past deadlines, a tier whose clock is skewed. The issue-size runs
(10,000 requests, 30 s outages) are `python -m tests.bench.bench_reliability`.
"""

from __future__ import annotations

import signal
import urllib.request

import pytest

from .conftest import make_settings
from .scenarios import stream_with_fault

pytestmark = pytest.mark.integration


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        lines = resp.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


@pytest.fixture(scope="module")
def deployed(kafka_bootstrap, deployment_factory):
    settings = make_settings(kafka_bootstrap)
    return settings, deployment_factory(settings)


@pytest.mark.parametrize(("tier", "sig"), [("fog", signal.SIGKILL), ("edge", signal.SIGKILL),
                                           ("cloud", signal.SIGKILL), ("edge", signal.SIGTERM),
                                           ("fog", signal.SIGTERM)],
                         ids=["kill-9-fog", "kill-9-edge", "kill-9-cloud", "sigterm-edge", "sigterm-fog"])
def test_one_answer_per_request_across_a_tier_restart(deployed, fmnist_test, tier, sig):
    settings, deployment = deployed
    run = stream_with_fault(settings, deployment, fmnist_test[0], n=1200, rate=200, deadline_ms=1000, tier=tier,
                            sig=sig, down_s=4)
    audit = run.audit
    assert audit.unanswered == 0, audit.summary()
    assert audit.duplicated_ids == [], (audit.summary(), {r: audit.answers[r] for r in audit.duplicated_ids[:3]})
    assert audit.degraded > 0, "requests whose deadline passed while the tier was down are answered degraded"
    late = run.degraded_outside_outage()
    assert late == [], (audit.summary(), run.down_at, run.up_at, [(r, run.deadlines[run.ids.index(r)] / 1000 - run.down_at, [(a["tier"], a["tier_latency_ms"], a["latency_ms"]) for a in audit.answers[r]]) for r in late[:5]])
    for name, w in deployment.workers.items():
        assert w.ready(), f"{name} not serving after the run:\n{w.log_tail()}"


def test_degraded_answers_while_the_fog_is_down_are_the_edge_prediction(deployed, fmnist_test, tiny_bundle):
    from ml.bundle import load_bundle_tier

    settings, deployment = deployed
    x = fmnist_test[0][:600]
    run = stream_with_fault(settings, deployment, x, n=600, rate=200, deadline_ms=800, tier="fog", down_s=3)
    degraded = {int(rid.rsplit("-", 1)[1]): a[0] for rid, a in run.audit.answers.items() if a[0]["degraded"]}
    assert degraded and {a["tier"] for a in degraded.values()} == {"edge"}  # the live tier below the dead one
    edge = load_bundle_tier(tiny_bundle, "edge")
    idx = sorted(degraded)
    probs, _ = edge.predict(x[idx])
    assert edge.decide(probs).label.tolist() == [degraded[i]["label"] for i in idx]


@pytest.mark.parametrize("deadline_ms", [20, -500], ids=["deadline-20ms", "deadline-already-past"])
def test_short_and_past_deadlines_are_answered_exactly_once(deployed, fmnist_test, deadline_ms):
    settings, deployment = deployed
    run = stream_with_fault(settings, deployment, fmnist_test[0], n=800, rate=200, deadline_ms=deadline_ms)
    audit = run.audit
    assert audit.unanswered == 0 and audit.duplicated_ids == [], audit.summary()
    if deadline_ms < 0:  # no upper tier's window is open: the entry tier answers every request itself
        assert set(audit.per_tier()) == {"edge"}, audit.summary()


@pytest.mark.parametrize("skew_ms", [-3000, 3000], ids=["fog-clock-behind", "fog-clock-ahead"])
def test_a_tier_with_a_skewed_clock_never_causes_a_second_answer(deployed, fmnist_test, skew_ms):
    settings, deployment = deployed
    fog = deployment["fog"]
    fog.stop(60)
    fog.env["TIERFLOW_WORKER__CLOCK_SKEW_MS"] = str(skew_ms)
    try:
        fog.start().wait_ready(300)
        run = stream_with_fault(settings, deployment, fmnist_test[0], n=600, rate=200, deadline_ms=400)
        audit = run.audit
        assert audit.unanswered == 0 and audit.duplicated_ids == [], audit.summary()
        correction = _metric(fog.http_port, "tierflow_clock_correction_seconds")
        if skew_ms < 0:  # behind the edge: the fog moves its clock forward to the edge's stamps
            assert correction >= 2.5, correction
            assert audit.per_tier()["fog"] > 0, audit.summary()
        else:  # ahead: its windows close early, so it answers nothing and the edge answers degraded
            assert correction == 0
            assert "fog" not in audit.per_tier() and "cloud" not in audit.per_tier(), audit.summary()
            assert audit.degraded > 0
    finally:
        fog.stop(60)
        fog.env.pop("TIERFLOW_WORKER__CLOCK_SKEW_MS")
        fog.start().wait_ready(300)
