"""The pipeline DAG with `dag.test()` against the real broker, S3 and MLflow server, rolling out real local
tier workers: a tiny training run becomes release 1 and `champion`; a second candidate whose canary cannot
pass is rolled back and `champion` stays on release 1, which keeps answering."""

from __future__ import annotations

import pytest

from tests.integration.dags.dagrun import run_dag

pytestmark = pytest.mark.integration

TINY = {"epochs": 1, "max_train_samples": 1500, "canary_requests": 60, "canary_accuracy_drop": 0.25,
        "dataset": "fashion-mnist", "backend": "local"}


@pytest.fixture
def pipeline_settings(mlflow_server, kafka_bootstrap, tmp_path):
    import uuid

    settings = mlflow_server.model_copy(update={
        "app": f"p{uuid.uuid4().hex[:8]}", "home": tmp_path,
        "kafka": mlflow_server.kafka.model_copy(update={"bootstrap": kafka_bootstrap})})
    yield settings
    from plugins.rollout.local import LocalProcessBackend

    backend = LocalProcessBackend(tmp_path)
    backend.stop_all(settings.app, timeout_s=10)
    assert backend.running(settings.app) == {}


def test_pipeline_registers_rolls_out_promotes_and_rolls_back_a_bad_candidate(airflow_db, pipeline_settings):
    import numpy as np

    from ml.registry import champion_metrics, release_versions
    from plugins.pipeline.deploy import canary_samples, run_canary
    from plugins.rollout.base import Release, TierWorkerSpec
    from plugins.rollout.local import LocalProcessBackend

    settings = pipeline_settings
    first = run_dag(airflow_db, settings, "tierflow_pipeline", TINY)
    assert first["state"] == "success", first["log"][-6000:]
    assert {t: s for t, s in first["tasks"].items() if t.endswith("_in_pod")} == {  # backend=local
        "train_in_pod": "skipped", "gate_in_pod": "skipped", "register_in_pod": "skipped"}
    assert {s for t, s in first["tasks"].items() if not t.endswith("_in_pod")} == {"success"}
    assert set(release_versions(settings.app, "1", settings.mlflow.tracking_uri)) == {"edge", "fog", "cloud", "full"}
    assert champion_metrics(settings.app, settings.mlflow.tracking_uri)["release"] == "1"
    backend = LocalProcessBackend(settings.home)
    assert {v: sorted(t) for v, t in backend.running(settings.app).items()} == {"1": ["cloud", "edge", "fog"]}

    # a candidate whose canary cannot pass (impossible latency bound): rolled back, champion unchanged
    second = run_dag(airflow_db, settings, "tierflow_pipeline", {**TINY, "canary_max_p95_ms": 0.001})
    assert second["state"] == "failed"
    assert second["tasks"]["register"] == "success" and second["tasks"]["deploy"] == "failed"
    assert "rolled back, champion unchanged" in second["log"] and "p95 latency" in second["log"]
    assert champion_metrics(settings.app, settings.mlflow.tracking_uri)["release"] == "1"
    assert set(release_versions(settings.app, "candidate", settings.mlflow.tracking_uri)) == {"edge", "fog", "cloud", "full"}
    assert list(backend.running(settings.app)) == ["1"]

    x, y = canary_samples(30)
    check = run_canary(settings, Release(settings.app, "1", (TierWorkerSpec("edge", ""),)), x, y, timeout_s=60)
    assert check.answered == 30 and check.new_version_answers == 30
    assert check.answers_by_version == {"1": 30}
    assert np.isfinite(check.p95_latency_ms)
