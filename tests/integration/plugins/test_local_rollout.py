"""The rollout procedure over the local process backend, with real `tierflow worker` processes on the real
broker: first deploy with canary, crash restart, redeploy under load with no lost request, and a broken
candidate rolled back while the serving version keeps answering."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from plugins.pipeline.deploy import canary_samples, run_canary
from plugins.rollout.base import Release, TierWorkerSpec
from plugins.rollout.local import LocalProcessBackend
from plugins.rollout.procedure import CanaryPolicy, rollout
from runtime import scrape_targets
from runtime.settings import settings_env

pytestmark = pytest.mark.integration
TIERS = ("edge", "fog", "cloud")


def release(settings, version: str, model_uri) -> Release:
    return Release(settings.app, version, tuple(TierWorkerSpec(t, str(model_uri), http_port=0) for t in TIERS))


@pytest.fixture
def backend(kafka_settings):
    b = LocalProcessBackend(kafka_settings.home, env=settings_env(kafka_settings))
    yield b
    b.stop_all(kafka_settings.app, timeout_s=10)
    assert b.running(kafka_settings.app) == {}
    assert scrape_targets.registered(kafka_settings.home) == []  # Prometheus stops scraping them


def announced(settings) -> dict[tuple[str, str], str]:
    """(version, tier) -> address of the workers announced to Prometheus (runtime.scrape_targets)."""
    return {(g["labels"]["version"], g["labels"]["tier"]): g["targets"][0]
            for g in scrape_targets.registered(settings.home) if g["labels"]["app"] == settings.app}


def test_rollouts_with_canary_crash_restart_load_and_rollback(kafka_settings, tiny_bundle, backend):
    settings = kafka_settings
    app = settings.app
    x, y = canary_samples(60)
    promoted: list[str] = []
    log: list[str] = []

    def canary(rel):
        return run_canary(settings, rel, x, y, timeout_s=60)

    # 1. first deploy: downstream first, canary through the real tiers, promoted
    out1 = rollout(backend, release(settings, "1", tiny_bundle), canary=canary,
                   policy=CanaryPolicy(min_accuracy=0.3, max_p95_latency_ms=10_000), promote=promoted.append,
                   log=log.append)
    assert out1.promoted, out1.problems
    assert out1.canary.new_version_answers == 60 and out1.canary.answered == 60
    assert backend.running(app) == {"1": ["cloud", "edge", "fog"]} or sorted(backend.running(app)["1"]) == sorted(TIERS)
    assert announced(settings) == {("1", w["tier"]): f"127.0.0.1:{w['port']}" for w in backend.workers(app, "1")}

    # 2. kill -9 the fog worker: its supervisor restarts it and it gets ready again
    (fog,) = backend.workers(app, "1", "fog")
    os.kill(fog["worker_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (backend.workers(app, "1", "fog")[0]["worker_pid"] == fog["worker_pid"]):
        time.sleep(0.2)
    backend.wait_ready(release(settings, "1", tiny_bundle), TierWorkerSpec("fog", str(tiny_bundle)), 120)
    (fog_after,) = backend.workers(app, "1", "fog")
    assert fog_after["restarts"] == 1 and fog_after["worker_pid"] != fog["worker_pid"]

    # 3. redeploy under load: the simulator keeps sending while v2 rolls out -> nothing lost or failed
    from ml.datasets import load_fashion_mnist
    from runtime.client import simulate

    load_x = load_fashion_mnist("test").subset(1500, seed=3).x
    reports = []
    sim = threading.Thread(target=lambda: reports.append(
        simulate(settings, load_x, None, rate=40, timeout_s=120, progress=False, deadline_ms=10_000)))
    sim.start()
    time.sleep(3)
    out2 = rollout(backend, release(settings, "2", tiny_bundle), canary=canary,
                   policy=CanaryPolicy(min_accuracy=0.3, max_p95_latency_ms=10_000, min_new_version_answers=5),
                   promote=promoted.append, log=log.append)
    sim.join(300)
    assert out2.promoted, out2.problems
    assert out2.retired == ["1/edge", "1/fog", "1/cloud"]
    assert sorted(backend.running(app)) == ["2"]
    assert set(announced(settings)) == {("2", t) for t in TIERS}
    (report,) = reports
    assert report.missing == 0 and report.answered == len(load_x), report.summary()
    # A consumer-group rebalance pauses the edge for ~3 s on the embedded broker; with a deadline above
    # that pause no tier has to fall back to a degraded answer.
    assert report.degraded == 0, report.summary()
    versions = {row.get("request_id"): row for row in report.rows}
    assert len(versions) == len(load_x)

    # 4. a broken candidate (its model does not exist) never gets ready: rolled back, v2 keeps serving
    out3 = rollout(backend, release(settings, "3", tiny_bundle.parent / "missing-bundle"), canary=canary,
                   policy=CanaryPolicy(), promote=promoted.append, log=log.append, ready_timeout_s=120)
    assert out3.rolled_back and not out3.promoted
    assert "crashed" in out3.problems[0] or "not ready" in out3.problems[0]
    assert sorted(backend.running(app)) == ["2"]
    # (a candidate failing the canary's bounds is rolled back in tests/integration/dags/test_pipeline_dag.py)
    assert promoted == ["1", "2"]
    check = run_canary(settings, release(settings, "2", tiny_bundle), x[:20], y[:20], timeout_s=60)
    assert check.new_version_answers == 20  # the champion still answers everything
