"""The pipeline DAG configured the way an Airflow user configures any DAG: by Connections.

The TIERFLOW_* settings point S3, MLflow and Kafka at ports where nothing listens, with wrong S3 keys; the
Airflow Connections `tierflow_s3`, `tierflow_mlflow` and `tierflow_kafka` point at the real services. The
run must read the dataset from S3, log, gate and register in MLflow (the external-python ML tasks) and roll
out workers that serve from that registry and broker (deploy) through the Connections alone, and the S3
secret must never show in the log.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.dags.dagrun import run_dag

pytestmark = pytest.mark.integration


def _put_dataset(settings, n: int = 1500) -> str:
    """One small dataset version in S3 where ingest writes them; returns its manifest URI."""
    from ml.datasets import load_fashion_mnist
    from ml.shards import new_manifest, write_shard
    from plugins.hooks.s3 import DatasetStore

    data = load_fashion_mnist("train").subset(n, seed=3)
    store = DatasetStore.from_settings(settings)
    base = f"{settings.ingest.prefix}/{settings.app}/versions/v00000001"
    manifest = new_manifest(f"{settings.app}-conn", "v00000001", data.class_names, data.x.shape[1:], str(data.x.dtype))
    blob, entry = write_shard(data.x, data.y, f"{base}/shard-0.npz", manifest)
    store.put_bytes(entry.key, blob)
    manifest.shards.append(entry)
    return store.put_bytes(f"{base}/manifest.json", manifest.to_bytes())


def test_pipeline_reaches_s3_mlflow_and_kafka_through_airflow_connections(airflow_db, mlflow_server,
                                                                         kafka_bootstrap, tmp_path):
    import uuid

    from ml.registry import champion_metrics, release_versions
    from plugins.rollout.local import LocalProcessBackend
    from runtime.launcher import free_port
    from runtime.settings import KafkaSettings, MlflowSettings, S3Settings

    real = mlflow_server.model_copy(update={
        "app": f"c{uuid.uuid4().hex[:8]}", "home": tmp_path,
        "kafka": mlflow_server.kafka.model_copy(update={"bootstrap": kafka_bootstrap})})
    manifest_uri = _put_dataset(real)
    nowhere = f"127.0.0.1:{free_port()}"
    broken = real.model_copy(update={
        "kafka": KafkaSettings(bootstrap=nowhere),
        "s3": S3Settings(endpoint_url=f"http://{nowhere}", bucket="no-such-bucket", access_key_id="nobody",
                         secret_access_key="wrong"),
        "mlflow": MlflowSettings(tracking_uri=f"http://{nowhere}")})
    s3 = real.s3
    host, port = real.mlflow.tracking_uri.removeprefix("http://").rsplit(":", 1)
    secret = s3.secret_access_key.get_secret_value()
    connections = {
        "AIRFLOW_CONN_TIERFLOW_S3": json.dumps({
            "conn_type": "aws", "login": s3.access_key_id, "password": secret,
            "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region, "bucket": s3.bucket}}),
        "AIRFLOW_CONN_TIERFLOW_MLFLOW": json.dumps({"conn_type": "http", "host": host, "port": int(port)}),
        "AIRFLOW_CONN_TIERFLOW_KAFKA": json.dumps({"conn_type": "kafka",
                                                   "extra": {"bootstrap.servers": kafka_bootstrap}}),
    }
    conf = {"epochs": 1, "canary_requests": 40, "canary_accuracy_drop": 0.3, "backend": "local"}
    try:
        run = run_dag({**airflow_db, **connections}, broken, "tierflow_pipeline", conf)
        assert run["state"] == "success", run["log"][-6000:]
        assert {t: s for t, s in run["tasks"].items() if t.endswith("_in_pod")} == {  # backend=local
            "train_in_pod": "skipped", "gate_in_pod": "skipped", "register_in_pod": "skipped"}
        assert {s for t, s in run["tasks"].items() if not t.endswith("_in_pod")} == {"success"}
        assert secret not in run["log"]
        # trained on the dataset in S3 (found by listing through the Connection), registered in the real MLflow
        champion = champion_metrics(real.app, real.mlflow.tracking_uri)
        assert champion["release"] == "1"
        assert champion["dataset_version"] == f"{real.app}-conn@v00000001", manifest_uri
        assert set(release_versions(real.app, "1", real.mlflow.tracking_uri)) == {"edge", "fog", "cloud", "full"}
        assert {v: sorted(t) for v, t in LocalProcessBackend(tmp_path).running(real.app).items()} == {
            "1": ["cloud", "edge", "fog"]}
    finally:
        backend = LocalProcessBackend(tmp_path)
        backend.stop_all(real.app, timeout_s=10)
        assert backend.running(real.app) == {}
