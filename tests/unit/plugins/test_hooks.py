"""The hooks over Airflow Connections: a defined Connection wins, otherwise the settings (embedded stack)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.bases.hook import BaseHook

from plugins.hooks.datasets import DatasetStoreHook
from plugins.hooks.kafka import KafkaClusterHook
from plugins.hooks.mlflow import MlflowRegistryHook
from runtime.settings import Settings


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, _env_file=None)


def _conn(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_hooks_are_airflow_hooks_with_their_own_default_connections():
    for hook, conn_id in ((DatasetStoreHook, "tierflow_s3"), (KafkaClusterHook, "tierflow_kafka"),
                          (MlflowRegistryHook, "tierflow_mlflow")):
        assert issubclass(hook, BaseHook)
        assert hook.default_conn_name == conn_id
        assert hasattr(hook(settings=Settings(_env_file=None)), hook.conn_name_attr)


def test_without_connections_the_settings_are_used(settings):
    assert MlflowRegistryHook(settings=settings).get_conn() == settings.mlflow.tracking_uri
    assert KafkaClusterHook(settings=settings).client_settings() is settings
    hook = DatasetStoreHook(settings=settings)
    assert hook.connection is None and hook.bucket() == settings.s3.bucket
    assert hook.get_conn().meta.endpoint_url == settings.s3.endpoint_url


def test_connections_override_the_settings(monkeypatch, settings):
    _conn(monkeypatch, "tierflow_mlflow", conn_type="http", host="mlflow.example", port=5001, schema="https")
    assert MlflowRegistryHook(settings=settings).get_conn() == "https://mlflow.example:5001"
    _conn(monkeypatch, "tierflow_kafka", conn_type="kafka",
          extra={"bootstrap.servers": "kafka.example:9093", "security.protocol": "SSL", "group.id": "ignored"})
    kafka = KafkaClusterHook(settings=settings).client_settings().kafka
    assert kafka.bootstrap == "kafka.example:9093" and kafka.extra["security.protocol"] == "SSL"
    assert "group.id" not in kafka.extra and settings.kafka.bootstrap != kafka.bootstrap
    _conn(monkeypatch, "tierflow_s3", conn_type="aws", login="key", password="secret",
          extra={"endpoint_url": "http://s3.example:9000", "region_name": "eu-west-1", "bucket": "datasets"})
    hook = DatasetStoreHook(settings=settings)
    store = hook.store()
    assert store.bucket == "datasets"
    assert store.client.meta.endpoint_url == "http://s3.example:9000"
    assert store.client.meta.region_name == "eu-west-1"


def test_test_connection_reports_an_unreachable_server(settings):
    settings = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
        update={"tracking_uri": "http://127.0.0.1:9"})})
    ok, message = MlflowRegistryHook(settings=settings).test_connection()
    assert not ok and "127.0.0.1:9" in message


def test_airflow_plugin_loader_imports_no_tierflow_module():
    """Airflow's plugin loader would register plugins/hooks/mlflow.py as sys.modules["mlflow"] (and kafka.py
    as "kafka"): plugins/.airflowignore keeps it out; the code is imported as the `plugins` package."""
    from pathlib import Path

    from airflow._shared.module_loading.file_discovery import find_path_from_directory

    folder = Path(__file__).resolve().parents[3] / "plugins"
    assert list(find_path_from_directory(str(folder), ".airflowignore", "glob")) == []


def test_connected_env_reproduces_the_connections_in_a_child_process(monkeypatch, settings):
    """What the ML tasks' interpreter receives: TIERFLOW_* of the Connections, read back by the settings model."""
    from plugins.hooks.connected import connected_env

    _conn(monkeypatch, "tierflow_s3", conn_type="aws", login="key", password="s3cret",
          extra={"endpoint_url": "http://s3.example:9000", "region_name": "eu-west-1", "bucket": "datasets"})
    _conn(monkeypatch, "tierflow_mlflow", conn_type="http", host="mlflow.example", port=5001, login="u",
          password="p")
    env = connected_env(settings)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = Settings(_env_file=None)
    assert child.s3.endpoint_url == "http://s3.example:9000" and child.s3.bucket == "datasets"
    assert child.s3.region == "eu-west-1" and child.s3.access_key_id == "key"
    assert child.s3.secret_access_key.get_secret_value() == "s3cret"
    assert child.mlflow.tracking_uri == "http://mlflow.example:5001"
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("u", "p")
    assert child.kafka.bootstrap == settings.kafka.bootstrap  # no Kafka Connection: the settings' own


def test_an_s3_connection_without_endpoint_means_the_providers_own(monkeypatch, settings):
    from plugins.hooks.connected import connected_env

    _conn(monkeypatch, "tierflow_s3", conn_type="aws", login="key", password="s3cret",
          extra={"region_name": "eu-west-1"})
    env = connected_env(settings)
    assert env["TIERFLOW_S3__ENDPOINT_URL"] == ""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from plugins.hooks.s3 import s3_client

    assert s3_client(Settings(_env_file=None)).meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
