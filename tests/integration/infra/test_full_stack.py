"""Full stack through Airflow's REST API: a running Airflow (standalone, LocalExecutor) with the real broker,
S3 and MLflow. Training samples go into Kafka, the ingest DAG and then the pipeline DAG are triggered over
REST (POST /auth/token, POST /api/v2/dags/{id}/dagRuns); the registered versions and the answers on Kafka
are checked. Then a second release rolls out while a device keeps sending: no request is lost or fails."""

from __future__ import annotations

import json
import threading
import time

import pytest

pytestmark = pytest.mark.integration

TINY = {"epochs": 1, "max_train_samples": 1500, "canary_requests": 60, "canary_accuracy_drop": 0.25,
        "gate_margin": 0.5}


@pytest.fixture
def airflow_api(airflow_stack):
    from plugins.pipeline.airflow_rest import AirflowClient
    from plugins.rollout.local import LocalProcessBackend

    client = AirflowClient.from_settings(airflow_stack)
    yield airflow_stack, client
    backend = LocalProcessBackend(airflow_stack.home)
    backend.stop_all(airflow_stack.app, timeout_s=10)
    assert backend.running(airflow_stack.app) == {}


def _run(client, dag_id: str, conf: dict | None = None, timeout_s: float = 900) -> tuple[str, dict]:
    run_id = client.trigger(dag_id, conf)
    run = client.wait_run(dag_id, run_id, timeout_s)
    assert run["state"] == "success", client.failure_report(dag_id, run_id)
    return run_id, run


def test_pipeline_through_the_rest_api_then_redeploy_under_load(airflow_api):
    from infra.local.demo import ingest_through_airflow
    from ml.datasets import load_fashion_mnist
    from ml.registry import champion_metrics, release_versions
    from plugins.pipeline.common import INGEST_DAG, PIPELINE_DAG
    from runtime.client import DeviceClient, publish_training

    settings, client = airflow_api
    for dag_id in (INGEST_DAG, PIPELINE_DAG):
        client.wait_dag(dag_id, timeout_s=180)
    assert client.import_errors() == []
    client.set_paused(PIPELINE_DAG, True)  # no Asset-triggered run: this test triggers the pipeline itself

    train = load_fashion_mnist("train").subset(1500, seed=0)
    publish_training(settings, train.x, train.y, progress=False)
    # the demo's ingest step: our manual run, not the catch-up run unpausing queues, drains the topic
    ingested = ingest_through_airflow(client, len(train))
    assert ingested["new_records"] == 1500
    from plugins.hooks.s3 import DatasetStore, split_uri
    from plugins.pipeline.datasets import resolve_dataset_uri

    manifest_uri = resolve_dataset_uri("", None, settings)
    assert manifest_uri == ingested["manifest_uri"]  # the catch-up run wrote no newer version
    manifest = json.loads(DatasetStore.from_settings(settings).get_bytes(split_uri(manifest_uri)[1]))
    assert sum(s["count"] for s in manifest["shards"]) == 1500
    runs = client.runs(INGEST_DAG)
    assert all(r["state"] == "success" for r in runs)  # none left queued/running beside the pipeline
    for r in runs:  # a catch-up run the unpause queued (if any) ran after ours and found nothing new
        if r["dag_run_id"] != ingested["run_id"]:
            (ti,) = client.task_instances(INGEST_DAG, r["dag_run_id"])
            assert ti["state"] == "skipped", ti

    client.set_paused(PIPELINE_DAG, False)
    run_id, run = _run(client, PIPELINE_DAG, {**TINY, "dataset": ingested["manifest_uri"]})
    assert run["conf"]["dataset"] == ingested["manifest_uri"]
    registered = client.xcom(PIPELINE_DAG, run_id, "register")
    release = registered["release"]
    assert set(release_versions(settings.app, release, settings.mlflow.tracking_uri)) == {"edge", "fog", "cloud", "full"}
    assert champion_metrics(settings.app, settings.mlflow.tracking_uri)["release"] == release
    trained = client.xcom(PIPELINE_DAG, run_id, "train_calibrate_partition")
    assert trained["dataset_version"].endswith(ingested["version"])

    # answers on Kafka come from the new release; then release 2 rolls out while requests keep flowing
    test = load_fashion_mnist("test").subset(4000, seed=5)
    with DeviceClient(settings, deadline_ms=10_000) as device:
        for i in range(50):
            device.send(f"warm-{i}", test.x[i])
        assert device.wait_all(60)
        assert {a.result["model_version"] for a in device.answers.values()} == {release}

        stop = threading.Event()
        sent = []

        def keep_sending():
            i = 50
            while not stop.is_set():  # for as long as the second run takes (samples reused on a slow machine)
                device.send(f"load-{i}", test.x[i % len(test.x)])
                sent.append(i)
                i += 1
                time.sleep(0.05)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            run2, _ = _run(client, PIPELINE_DAG, {**TINY, "dataset": ingested["manifest_uri"]})
        finally:
            time.sleep(2)
            stop.set()
            sender.join()
        assert device.wait_all(60), f"{device.outstanding()} requests never answered"
        answers = [device.answers[f"load-{i}"].result for i in sent]
    release2 = client.xcom(PIPELINE_DAG, run2, "register")["release"]
    assert release2 != release
    assert champion_metrics(settings.app, settings.mlflow.tracking_uri)["release"] == release2
    versions = {a["model_version"] for a in answers}
    assert versions == {release, release2}, versions  # served by both releases, none lost
    assert sum(a["degraded"] for a in answers) == 0
    assert len(sent) > 100
