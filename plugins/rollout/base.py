"""What a rollout backend must do, so that one rollout procedure serves local processes and Kubernetes.

The version-consistent order (downstream tiers first, then the edge joins the shared consumer group,
then old versions drain and stop; rollback in reverse) lives in one function over this interface
(`plugins.rollout.procedure`), not in each backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class RolloutError(RuntimeError):
    """A tier did not become ready or a canary failed; the message carries logs/events for the task log."""


@dataclass(frozen=True)
class TierWorkerSpec:
    """What to run for one tier of a release: the worker command, its model, replicas, port, env."""

    tier: str  # "edge", "fog", "cloud", or "full" (the unpartitioned model, cloud-only serving)
    model_uri: str  # bundle directory or models:/APP-tier/VERSION
    replicas: int = 1
    http_port: int = 9100  # /healthz, /readyz, /metrics
    env: dict[str, str] = field(default_factory=dict)  # extra TIERFLOW_* settings, never secrets

    def worker_command(self) -> list[str]:
        """The tier worker command line; rollout backends launch exactly this."""
        return ["tierflow", "worker", "--tier", self.tier, "--model-uri", self.model_uri,
                "--http-port", str(self.http_port)]


@dataclass(frozen=True)
class Release:
    app: str
    version: str
    tiers: tuple[TierWorkerSpec, ...]  # ordered from the first tier (edge) to the last (cloud)

    def downstream_first(self) -> tuple[TierWorkerSpec, ...]:
        return tuple(reversed(self.tiers))


class RolloutBackend(ABC):
    @abstractmethod
    def start_tier(self, release: Release, spec: TierWorkerSpec) -> None:
        """Start (or scale up) the workers of one tier of one version; returns without waiting."""

    @abstractmethod
    def wait_ready(self, release: Release, spec: TierWorkerSpec, timeout_s: float) -> None:
        """Block until every replica answers /readyz; raise RolloutError with logs/events otherwise."""

    @abstractmethod
    def stop_tier(self, app: str, version: str, tier: str, timeout_s: float) -> None:
        """Graceful stop (SIGTERM: finish the batch, flush, commit), then remove."""

    @abstractmethod
    def running(self, app: str) -> dict[str, list[str]]:
        """Versions that have workers, with their tiers: {"3": ["edge", "fog", "cloud"]}."""
