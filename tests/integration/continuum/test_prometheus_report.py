"""The continuum report's per-tier figures come from a real Prometheus scraping the site workers through the
testbed's scrape bridges, and equal what the device counted; without a Prometheus the report says so."""

from __future__ import annotations

import pytest

from infra.continuum.measure import evaluate
from infra.continuum.scenario import load_scenario
from infra.prometheus_api import Prometheus
from runtime import scrape_targets

pytestmark = pytest.mark.integration


def test_per_tier_figures_from_prometheus(prometheus_server, tiny_bundle, tmp_path) -> None:
    from ml.datasets import load_fashion_mnist

    test = load_fashion_mnist("test")
    home, url = prometheus_server.home, prometheus_server.prometheus.url
    result = evaluate(load_scenario("edge-fog-cloud"), tiny_bundle, test.x[:400], test.y[:400], tmp_path / "tb",
                      low_rate=40.0, low_n=160, warmup_n=20, steps=[], prometheus_url=url, announce_home=home)
    assert result["per_tier"]["source"].startswith(f"Prometheus at {url}"), result["per_tier"]
    tiers = result["per_tier"]["tiers"]
    device = result["answers"]
    assert device["answered"] == 160
    # Exact counts: the quiet stretches around the low load put a scrape between phases.
    assert {t: f["answers"] for t, f in tiers.items() if f.get("answers")} == device["per_tier"], tiers
    assert sum(f.get("degraded", 0) for f in tiers.values()) == device["degraded"] == 0
    for tier in device["per_tier"]:
        assert 0 < tiers[tier]["p50_ms"] <= tiers[tier]["p95_ms"] < 10_000, (tier, tiers[tier])
    assert len(device["per_tier"]) >= 2, "the tiny bundle answers at more than one tier"

    # Scraped through the bridges: site labels on the targets; withdrawn at teardown.
    prom = Prometheus(url)
    sites = {s.labels["tier"]: s.labels["site"] for s in
             prom.query('max by (tier, site) (max_over_time(up{scenario="edge-fog-cloud"}[10m]))')}
    assert sites == {"edge": "edge", "fog": "fog", "cloud": "cloud"}
    assert not [t for t in scrape_targets.registered(home) if t["labels"].get("scenario") == "edge-fog-cloud"]


def test_falls_back_to_device_counts_without_prometheus(tiny_bundle, tmp_path) -> None:
    from ml.datasets import load_fashion_mnist
    from runtime.localhost import free_port

    test = load_fashion_mnist("test")
    url = f"http://127.0.0.1:{free_port()}"
    result = evaluate(load_scenario("cloud-only"), tiny_bundle, test.x[:100], test.y[:100], tmp_path / "tb",
                      low_rate=40.0, low_n=40, warmup_n=10, steps=[], prometheus_url=url, announce_home=tmp_path)
    assert result["per_tier"]["source"] == f"the device's own counts: no Prometheus answers at {url}"
    assert result["per_tier"]["tiers"]["full"]["answers"] == 40  # cloud-only serves tier "full"
    assert not scrape_targets.registered(tmp_path)
