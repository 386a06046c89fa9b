"""The settings with every tierflow Connection that is defined laid over them, for processes without Airflow.

The ML tasks run in another interpreter (external Python, possibly a venv without Airflow) and the tier
workers are plain processes: neither can ask Airflow for a Connection. The orchestrator side resolves
``tierflow_s3``, ``tierflow_mlflow`` and ``tierflow_kafka`` through the hooks and hands the result on as a
process environment (``TIERFLOW_*`` of the one settings model, plus MLflow's client credentials), never as an
XCom, a templated field or a log line. Where a Connection is not defined its part of the settings stays.
"""

from __future__ import annotations

from typing import Any

from plugins.hooks.base import fallback_settings
from plugins.hooks.datasets import DatasetStoreHook
from plugins.hooks.kafka import KafkaClusterHook
from plugins.hooks.mlflow import MlflowRegistryHook


def connected_settings(settings: Any = None) -> Any:
    """``settings`` (default: the process's) with the Kafka, S3 and MLflow of the Connections, where defined."""
    settings = KafkaClusterHook(settings=fallback_settings(settings)).client_settings()
    mlflow = settings.mlflow.model_copy(update={"tracking_uri": MlflowRegistryHook(settings=settings).get_conn()})
    return settings.model_copy(update={"s3": DatasetStoreHook(settings=settings).s3_settings(), "mlflow": mlflow})


def connected_env(settings: Any = None) -> dict[str, str]:
    """Environment of a child process that reproduces `connected_settings` (secrets in clear: never log it)."""
    from runtime.settings import settings_env

    connected = connected_settings(settings)
    env = settings_env(connected)
    if connected.s3.endpoint_url is None:  # settings_env leaves None out; the child's default is loopback
        env["TIERFLOW_S3__ENDPOINT_URL"] = ""
    return {**env, **MlflowRegistryHook(settings=connected).client_env()}
