"""The simulator's PNG plots and summary logged to a real MLflow store (SQLite backend, local artifacts)."""

from __future__ import annotations

import pytest

from runtime.client import log_to_mlflow, save_plots
from tests.unit.runtime.test_report import _report

pytestmark = pytest.mark.integration


def test_plots_are_pngs_and_land_in_mlflow(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # a SQLite store puts artifacts under ./mlruns of the working directory

    plots = save_plots(_report(), tmp_path / "plots")
    assert [p.name for p in plots] == ["latency_hist.png", "answers_per_tier.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_to_mlflow(_report(), plots, uri, "sim-test", {"rate": 100})
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.metrics["answered"] == 100 and run.data.metrics["answers_edge"] == 60
    assert run.data.params["rate"] == "100"
    assert sorted(a.path for a in client.list_artifacts(run_id, "plots")) == \
        ["plots/answers_per_tier.png", "plots/latency_hist.png"]
