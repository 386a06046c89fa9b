"""A real Prometheus server from the local stack scrapes real tier workers and evaluates the rules."""

from __future__ import annotations

import time
import uuid

import pytest

from infra.prometheus_api import Prometheus, tier_figures
from runtime import scrape_targets
from runtime.client import DeviceClient
from runtime.local import LocalDeployment
from runtime.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration


def test_prometheus_scrapes_local_workers_and_records_per_tier_figures(prometheus_server: Settings,
                                                                       kafka_bootstrap, tiny_bundle, tmp_path):
    from ml.datasets import load_fashion_mnist

    prom = Prometheus(prometheus_server.prometheus.url)
    groups = {g["name"]: g for g in prom.rules()}
    assert {"tierflow.recording", "tierflow.alerts"} <= set(groups)
    assert all(r["health"] != "err" for g in groups.values() for r in g["rules"])

    # Workers of the stack's home are announced to this Prometheus (runtime.scrape_targets).
    app = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(_env_file=None, app=app, home=prometheus_server.home,
                        kafka=KafkaSettings(bootstrap=kafka_bootstrap))
    x = load_fashion_mnist("test").x[:300]
    with LocalDeployment(settings, tiny_bundle, tmp_path / "logs") as dep:
        ours = [t for t in scrape_targets.registered(settings.home) if t["labels"]["app"] == app]
        assert sorted(t["labels"]["tier"] for t in ours) == ["cloud", "edge", "fog"]
        deadline = time.monotonic() + 60
        while True:
            up = {t["labels"].get("tier"): t["health"] for t in prom.targets()
                  if t["labels"].get("app") == app and t["labels"]["job"] == scrape_targets.JOB}
            if up == {"edge": "up", "fog": "up", "cloud": "up"} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert up == {"edge": "up", "fog": "up", "cloud": "up"}
        assert any(t["labels"]["job"] == "prometheus" and t["health"] == "up" for t in prom.targets())

        with DeviceClient(settings) as client:
            for round_ in range(3):  # spread over a few scrapes: a rate needs two samples of a counter
                for i in range(100):
                    client.send(f"r{round_}-{i}", x[round_ * 100 + i])
                assert client.wait_all(120), f"{client.outstanding()} unanswered"
                time.sleep(1.5)
            answered = {t: sum(1 for a in client.answers.values() if a.result["tier"] == t)
                        for t in ("edge", "fog", "cloud")}

        p95 = prom.wait(f'tier:tierflow_tier_latency_seconds:p95_1m{{app="{app}"}}', count=3, timeout_s=60)
        assert {s.labels["tier"] for s in p95} == {"edge", "fog", "cloud"}
        assert all(0 < s.value < 10 for s in p95)
        raw = prom.query(f'sum by (tier) (tierflow_records_total{{app="{app}",outcome="answered"}})')
        assert {s.labels["tier"]: int(s.value) for s in raw} == {t: n for t, n in answered.items() if n}
        figures = tier_figures(prom, app)
        assert set(figures) == {"edge", "fog", "cloud"}
        assert figures["edge"]["degraded_ratio"] == 0
        assert figures["edge"]["tier_p50_ms"] <= figures["edge"]["tier_p95_ms"] <= figures["edge"]["tier_p99_ms"]

        # A stopped tier's file is gone, so Prometheus drops its target (a rollout needs no reload).
        dep["cloud"].stop()
        assert not [t for t in scrape_targets.registered(settings.home)
                    if t["labels"]["app"] == app and t["labels"]["tier"] == "cloud"]
        deadline = time.monotonic() + 30
        while any(t["labels"].get("app") == app and t["labels"].get("tier") == "cloud" for t in prom.targets()):
            assert time.monotonic() < deadline, "the stopped cloud worker is still a target"
            time.sleep(0.5)


def test_cli_stack_status_shows_prometheus(tmp_path):
    """`tierflow stack up --only prometheus`, then `status` shows it healthy with its rules; `down` stops it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from infra.local.process import free_port

    repo = Path(__file__).resolve().parents[3]
    url = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(TIERFLOW_HOME=str(tmp_path), TIERFLOW_PROMETHEUS__URL=url, COLUMNS="200")
    cli = [sys.executable, "-m", "tierflow_cli", "stack"]
    up = subprocess.run([*cli, "up", "--only", "prometheus"], env=env, cwd=repo, capture_output=True, text=True,
                        timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert Prometheus(url).ready()
        status = subprocess.run([*cli, "status"], env=env, cwd=repo, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        (line,) = [x for x in status.stdout.splitlines() if "prometheus" in x and url in x]
        assert "healthy" in line and "unhealthy" not in line
        assert "0/0 tier worker targets up; 15 rules loaded; firing: none" in status.stdout
    finally:
        down = subprocess.run([*cli, "down"], env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "prometheus" in down.stdout, down.stdout + down.stderr
    assert not Prometheus(url).ready()
