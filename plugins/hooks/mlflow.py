"""The MLflow registry as the orchestrator sees it: releases, aliases, the champion's metrics.

An Airflow hook over Connection ``tierflow_mlflow`` (type ``http``: host, port, schema ``http``/``https``,
or the whole URL in the host field), else ``Settings.mlflow.tracking_uri`` (the embedded stack).
REST only (through `ml.registry`'s loader-side functions), so Airflow's scheduler and task processes in
the orchestrator environment never import mlflow or TensorFlow. Registration itself needs the ML
environment (`ml.registry.register_bundle`, run as an external-python task).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from airflow.sdk.bases.hook import BaseHook

from ml.contract import model_name
from plugins.hooks.base import fallback_settings, find_connection


def tracking_uri_of(conn: Any) -> str:
    """``http://host:port[/path]`` of an http Connection (a full URL in ``host`` is taken as it is)."""
    host = (conn.host or "").rstrip("/")
    if host.startswith(("http://", "https://")):
        return host
    scheme = conn.schema if conn.schema in ("http", "https") else "http"
    return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")


class MlflowRegistryHook(BaseHook):
    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "tierflow_mlflow"
    conn_type = "http"
    hook_name = "tierflow MLflow registry"

    def __init__(self, mlflow_conn_id: str | None = default_conn_name, *, settings: Any = None) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self.settings = fallback_settings(settings)

    @classmethod
    def from_settings(cls, settings: Any) -> MlflowRegistryHook:
        return cls(settings=settings)

    def get_conn(self) -> str:
        """The tracking URI: the Connection's, else the settings'."""
        conn = find_connection(self.mlflow_conn_id)
        return tracking_uri_of(conn) if conn is not None else self.settings.mlflow.tracking_uri

    def client_env(self) -> dict[str, str]:
        """The Connection's login/password as the MLflow client reads them (``MLFLOW_TRACKING_USERNAME``,
        ``..._PASSWORD``), for the ML tasks' processes; empty without a Connection or a login."""
        conn = find_connection(self.mlflow_conn_id)
        if conn is None or not conn.login:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": conn.login, "MLFLOW_TRACKING_PASSWORD": conn.password or ""}

    def test_connection(self) -> tuple[bool, str]:
        uri = self.get_conn()
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=10) as resp:  # noqa: S310 - configured URL
                ok = resp.status == 200
        except (urllib.error.URLError, OSError) as exc:
            return False, f"MLflow server {uri}: {exc}"
        return ok, f"MLflow server {uri} " + ("healthy" if ok else "answered but is not healthy")

    def release_versions(self, ref: str) -> dict[str, str]:
        """{tier: model version} of a release number or alias ("candidate", "champion")."""
        from ml.registry import release_versions

        return release_versions(self.settings.app, ref, self.get_conn())

    def uris(self, ref: str) -> dict[str, str]:
        """{tier: "models:/APP-tier/<version>"}: pinned URIs for the tier workers of a release."""
        return {t: f"models:/{model_name(self.settings.app, t)}/{v}" for t, v in self.release_versions(ref).items()}

    def set_alias(self, ref: str, alias: str) -> dict[str, str]:
        from ml.registry import set_release_alias

        return set_release_alias(self.settings.app, ref, alias, self.get_conn())

    def promote(self, ref: str) -> dict[str, str]:
        """`champion` -> every model of the release (after a healthy rollout)."""
        from ml.registry import promote

        return promote(self.settings.app, ref, self.get_conn())

    def champion_metrics(self) -> dict[str, Any] | None:
        """The champion release's run metrics for the gate, or None before the first promotion."""
        from ml.registry import champion_metrics

        return champion_metrics(self.settings.app, self.get_conn())
