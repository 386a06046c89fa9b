"""The MLflow registry as the orchestrator sees it: releases, aliases, the champion's metrics.

REST only (through `ml.registry`'s loader-side functions), so Airflow's scheduler and task processes in
the orchestrator environment never import mlflow or TensorFlow. Registration itself needs the ML
environment (`ml.registry.register_bundle`, run as an external-python task).
"""

from __future__ import annotations

from typing import Any

from ml.contract import model_name
from runtime.settings import Settings


class MlflowRegistryHook:
    def __init__(self, settings: Settings):
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> MlflowRegistryHook:
        return cls(settings)

    def get_conn(self) -> str:
        return self.settings.mlflow.tracking_uri

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
