"""The ingest and monitor DAGs run with `dag.test()` against the real broker and S3 (and MLflow)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.dags.dagrun import run_dag

pytestmark = pytest.mark.integration


def test_ingest_dag_writes_a_dataset_version_and_skips_when_nothing_is_new(airflow_db, stack_settings):
    from ml.datasets import load_fashion_mnist
    from plugins.hooks.s3 import DatasetStore
    from runtime.client import publish_training

    settings = stack_settings
    data = load_fashion_mnist("train").subset(300, seed=0)
    publish_training(settings, data.x, data.y, progress=False)
    result = run_dag(airflow_db, settings, "tierflow_ingest")
    assert result["state"] == "success", result["log"][-4000:]
    assert result["tasks"] == {"ingest": "success"}
    store = DatasetStore.from_settings(settings)
    manifests = [k for k in store.keys(f"{settings.ingest.prefix}/{settings.app}/") if k.endswith("manifest.json")]
    assert len(manifests) == 1
    manifest = json.loads(store.get_bytes(manifests[0]))
    assert sum(s["count"] for s in manifest["shards"]) == 300

    again = run_dag(airflow_db, settings, "tierflow_ingest")  # nothing new: skipped, no new version
    assert again["tasks"] == {"ingest": "skipped"}, again["log"][-3000:]
    assert len([k for k in store.keys(f"{settings.ingest.prefix}/{settings.app}/")
                if k.endswith("manifest.json")]) == 1


def _publish_results(settings, rows: list[dict]) -> None:
    from confluent_kafka import Producer

    from runtime.kafka import ensure_topics, producer_config

    ensure_topics(settings, [settings.topic("results")])
    p = Producer(producer_config(settings))
    for r in rows:
        p.produce(settings.topic("results"), key=r["request_id"], value=json.dumps(r).encode())
    assert p.flush(30) == 0


def test_monitor_dag_triggers_retraining_only_when_live_accuracy_drops(airflow_db, stack_settings):
    from runtime.client import publish_feedback

    settings = stack_settings
    rows = [{"request_id": f"r{i}-{uuid.uuid4().hex[:4]}", "label": i % 10, "class_name": "x", "confidence": 0.9,
             "exit": 0, "tier": "edge", "model_version": "1", "degraded": False} for i in range(120)]
    _publish_results(settings, rows)
    # ground truth: every answer right -> healthy, nothing triggered
    publish_feedback(settings, {r["request_id"]: r["label"] for r in rows})
    healthy = run_dag(airflow_db, settings, "tierflow_monitor")
    assert healthy["state"] == "success", healthy["log"][-4000:]
    assert healthy["tasks"]["retrain_and_redeploy"] == "skipped"
    assert healthy["tasks"]["needs_retraining"] == "success"  # short-circuit ran and said "no"

    rows2 = [{**r, "request_id": r["request_id"] + "b"} for r in rows]
    _publish_results(settings, rows2)
    # now most answers are wrong -> live accuracy under the bound -> the pipeline is triggered
    publish_feedback(settings, {r["request_id"]: (r["label"] + (1 if i % 4 else 0)) % 10
                                for i, r in enumerate(rows2)})
    sick = run_dag(airflow_db, settings, "tierflow_monitor")
    assert sick["tasks"]["needs_retraining"] == "success"
    # the trigger ran (not skipped); dag.test has only this DAG in its DB, so the target run may not start
    assert sick["tasks"]["retrain_and_redeploy"] != "skipped", sick["log"][-4000:]
    assert "tierflow_pipeline" in sick["log"]
