"""Simulation report: statistics from per-request rows."""

from __future__ import annotations

import numpy as np

from runtime.client import SimReport


def _report() -> SimReport:
    lat = list(np.linspace(1, 100, 100))
    return SimReport(sent=101, answered=100, duplicates=2, correct=90, per_tier={"edge": 60, "fog": 25, "cloud": 15},
                     degraded=3, latency_ms=lat, wall_s=2.0, request_bytes=101 * 900)


def test_summary_statistics():
    s = _report().summary()
    assert s["missing"] == 1 and s["accuracy"] == 0.9 and s["throughput_rps"] == 50.0
    assert s["p50_ms"] == 50.5 and 98 < s["p99_ms"] < 100
    assert s["request_bytes_per_request"] == 900.0
