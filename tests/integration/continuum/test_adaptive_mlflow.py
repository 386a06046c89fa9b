"""The adaptive-exits benchmark's MLflow run, logged to the real tracking server (SQLite + S3 artifacts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.bench_adaptive import log_mlflow, plot, summarize

pytestmark = pytest.mark.integration


def _rows(latency_ms: float, adapted: bool) -> list[dict]:
    """20 req/s for 40 s (10 healthy, 20 slow, 10 recovered), label 0 = right; slow ones take ``latency_ms``."""
    rows = []
    for i in range(800):
        slow = 10_000 <= i * 50 < 30_000
        result = {"label": 0, "tier": "edge", "threshold": 0.6 if slow and adapted else 0.9,
                  "adapted": slow and adapted, "degraded": False}
        rows.append({"sent_ms": i * 50.0, "index": i, "latency_ms": latency_ms if slow else 40.0, "result": result})
    return rows


def test_the_plot_and_both_modes_figures_land_in_mlflow(mlflow_server, tmp_path):
    import numpy as np
    from mlflow.tracking import MlflowClient

    y = np.zeros(800, dtype=int)
    marks = {"healthy": 0.0, "slow": 10_000.0, "recovered": 30_000.0}
    results = {mode: summarize(_rows(lat, mode == "adaptive"), y, marks, 250, 2000)
               for mode, lat in (("static", 600.0), ("adaptive", 60.0))}
    png = plot(results, {m: marks for m in results}, tmp_path, "test", 250)
    report = {"experiment": "wan", "objective_ms": 250, "rate": 20, "slow_ms": 300, "results": results}
    (tmp_path / "adaptive.json").write_text(json.dumps(report, default=float))
    uri = mlflow_server.mlflow.tracking_uri
    run_id = log_mlflow(report, [png, tmp_path / "adaptive.json"], uri, experiment="adaptive-mlflow-test")
    client = MlflowClient(uri)
    m = client.get_run(run_id).data.metrics
    assert m["static_worst_sliding_p95_ms"] == 600 and m["adaptive_worst_sliding_p95_ms"] == 60
    assert m["static_slow_windows_over_objective"] == 2 and m["adaptive_slow_windows_over_objective"] == 0
    assert client.get_run(run_id).data.params["experiment"] == "wan"
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["adaptive.json", "adaptive_exits.png"]
    (tmp_path / "back").mkdir()
    local = client.download_artifacts(run_id, "adaptive_exits.png", str(tmp_path / "back"))
    assert Path(local).read_bytes() == png.read_bytes()
