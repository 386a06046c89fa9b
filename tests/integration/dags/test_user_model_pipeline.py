"""A user's own multi-exit network through the pipeline DAG (`dag.test()`, real broker, S3, MLflow and local
tier workers): first as an import path, then as a .keras file in S3; each is trained, calibrated, gated,
registered and served, and MLflow records where the network came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.dags.dagrun import run_dag
from tests.integration.dags.test_pipeline_dag import TINY, pipeline_settings  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def test_user_factory_then_user_keras_file_in_s3_are_trained_registered_and_served(
        airflow_db, pipeline_settings, monkeypatch, tmp_path):  # noqa: F811
    import sys

    import mlflow

    from ml.registry import champion_metrics, release_versions
    from plugins.hooks.s3 import DatasetStore
    from plugins.rollout.local import LocalProcessBackend

    settings = pipeline_settings
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))  # "importable in the ML environment"
    conf = {**TINY, "max_train_samples": 2000, "epochs": 2, "min_accuracy": 0.3}
    first = run_dag(airflow_db, settings, "tierflow_pipeline", {**conf, "architecture": "my_exits:build"})
    assert first["state"] == "success", first["log"][-6000:]
    assert set(release_versions(settings.app, "1", settings.mlflow.tracking_uri)) == {"edge", "fog", "cloud", "full"}
    champion = champion_metrics(settings.app, settings.mlflow.tracking_uri)
    assert champion["release"] == "1"
    client = mlflow.MlflowClient(settings.mlflow.tracking_uri)
    run = client.get_run(champion["run_id"])
    assert run.data.tags["tierflow.architecture_kind"] == "factory"
    assert run.data.params["architecture"] == "my_exits:build"

    sys.path.insert(0, str(EXAMPLES))
    try:
        import my_exits
    finally:
        sys.path.remove(str(EXAMPLES))
    saved = tmp_path / "mine.keras"
    my_exits.build((28, 28, 1), 10).save(saved)
    store = DatasetStore.from_settings(settings)
    store.ensure_bucket()
    uri = store.put_bytes(f"user-models/{settings.app}/mine.keras", saved.read_bytes())
    monkeypatch.delenv("PYTHONPATH")  # a saved model needs no code of the user's
    second = run_dag(airflow_db, settings, "tierflow_pipeline", {**conf, "architecture": uri, "gate_margin": 1.0})
    assert second["state"] == "success", second["log"][-6000:]
    champion = champion_metrics(settings.app, settings.mlflow.tracking_uri)
    assert champion["release"] == "2"
    tags = client.get_run(champion["run_id"]).data.tags
    assert tags["tierflow.architecture_kind"] == "file" and tags["tierflow.architecture"] == uri
    assert list(LocalProcessBackend(settings.home).running(settings.app)) == ["2"]


def test_an_ingested_image_folder_through_the_pipeline_then_replayed_by_the_simulator(
        airflow_db, pipeline_settings, monkeypatch, tmp_path):  # noqa: F811
    """Folder → `tierflow publish-training` → ingest → pipeline DAG (tested and canaried on the folder's own
    held-out images) → served; `tierflow simulate` replays the folder and scores answers by class name."""
    from plugins.ingest import ingest
    from tests.integration.plugins.test_image_folder import tierflow, write_folder

    settings = pipeline_settings.model_copy(update={"ingest": pipeline_settings.ingest.model_copy(
        update={"shard_records": 100, "idle_timeout_s": 4.0})})
    folder = write_folder(tmp_path / "images", per_class=80)
    tierflow(settings, "publish-training", "--dataset", str(folder), "--image-size", "16x16")
    manifest_uri = ingest(settings).manifest_uri
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES))
    run = run_dag(airflow_db, settings, "tierflow_pipeline", {
        **TINY, "dataset": manifest_uri, "architecture": "my_exits:build", "epochs": 8, "max_train_samples": 0,
        "canary_requests": 36, "min_accuracy": 0.7})
    assert run["state"] == "success", run["log"][-6000:]
    assert "gate passed" in run["log"]

    out = tmp_path / "sim"
    tierflow(settings, "simulate", "--dataset", str(folder), "--image-size", "16x16", "--concurrency", "8",
             "--out", str(out), "--no-feedback")
    import json

    summary = json.loads((out / "report.json").read_text())["summary"]
    assert summary["answered"] == summary["sent"] == 240
    assert summary["accuracy"] >= 0.7, summary
