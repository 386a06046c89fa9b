"""The deploy step: build a Release from registered tier models, roll it out, canary, promote or roll back.

Runs in the orchestrator environment (no TensorFlow): the backend launches the tier workers, the canary
talks Kafka through the runtime's device client, aliases are set through MLflow's REST API.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ml.contract import CANARY, CANARY_ID_PREFIX, TRAFFIC_HEADER
from plugins.rollout.base import Release, RolloutBackend, TierWorkerSpec
from plugins.rollout.procedure import CanaryPolicy, CanaryReport, RolloutOutcome, rollout

CANARY_SEED = 1  # canary samples: a seeded subset of the test split, different from the gate's subset


def make_release(app: str, release: str, uris: dict[str, str], tiers: list[str], *, backend: str,
                 http_port: int = 9100, replicas: Mapping[str, int] | None = None,
                 env: dict[str, str] | None = None) -> Release:
    """One TierWorkerSpec per tier (edge first) with its pinned models:/ URI, its replicas (1 where
    ``replicas`` names no count) and extra settings ``env``; local workers pick free ports."""
    port = 0 if backend == "local" else http_port
    return Release(app, str(release), tuple(
        TierWorkerSpec(tier=t, model_uri=uris[t], http_port=port, replicas=(replicas or {}).get(t, 1),
                       env=dict(env or {}))
        for t in tiers))


def make_backend(kind: str, settings: Any) -> RolloutBackend:
    if kind == "local":
        from plugins.rollout.local import LocalProcessBackend

        return LocalProcessBackend.from_settings(settings)
    if kind == "kubernetes":
        from plugins.rollout.kubernetes import KubernetesRolloutBackend

        return KubernetesRolloutBackend(settings=settings)
    raise ValueError(f"unknown rollout backend {kind!r}; use 'local' or 'kubernetes'")


# -- canary ------------------------------------------------------------------------------------------
def canary_samples(n: int, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled requests: from the training run's held-out samples (``path``, a .npz the ML step wrote)
    when given, else from the Fashion-MNIST test split."""
    from ml.datasets import load_fashion_mnist, load_npz  # NumPy only

    test = load_npz(path)[0] if path else load_fashion_mnist("test")
    test = test.subset(n, seed=CANARY_SEED)
    return test.x, test.y


def fetch_canary_file(settings: Any, uri: str) -> str:
    """A local copy of the canary samples a trainer pod left in S3."""
    import tempfile

    from plugins.hooks.s3 import DatasetStore, split_uri

    store = DatasetStore.from_settings(settings)
    store.bucket, key = split_uri(uri)
    with tempfile.NamedTemporaryFile(prefix="tierflow-canary-", suffix=".npz", delete=False) as f:
        f.write(store.get_bytes(key))
    return f.name


def run_canary(settings: Any, release: Release, x: np.ndarray, y: np.ndarray, *, timeout_s: float = 60.0,
               rate: float = 100.0, sites: Sequence[Any] = ()) -> CanaryReport:
    """Send labeled requests to APP.requests (round robin over the edge ``sites``' brokers, when given); judge
    the answers the new version gave (by model_version). A site whose edge answers nothing leaves its share
    of the requests unanswered, so the canary fails for all sites."""
    from contextlib import ExitStack

    from runtime.client import DeviceClient

    prefix = f"{CANARY_ID_PREFIX}{release.version}-{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i}" for i in range(len(x))]
    with ExitStack() as stack:
        clients = [stack.enter_context(DeviceClient(settings.at_site(site) if site else settings))
                   for site in (sites or [None])]
        start = time.monotonic()
        for i, rid in enumerate(ids):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            clients[i % len(clients)].send(rid, x[i], extra_headers={TRAFFIC_HEADER: CANARY})
        answers, sent_ms = {}, {}
        for client in clients:
            client.wait_all(max(1.0, timeout_s - (time.monotonic() - start)))
            answers.update(client.answers)
            sent_ms.update(client.sent_ms)
    by_version: Counter[str] = Counter()
    by_tier: Counter[str] = Counter()
    latencies, new_answers, new_correct, degraded, adapted = [], 0, 0, 0, 0
    for i, rid in enumerate(ids):
        ans = answers.get(rid)
        if ans is None:
            continue
        r = ans.result
        version = str(r.get("model_version"))
        by_version[version] += 1
        degraded += bool(r.get("degraded"))
        if version == release.version:
            by_tier[str(r.get("tier"))] += 1
            new_answers += 1
            new_correct += int(r["label"]) == int(y[i])
            adapted += bool(r.get("adapted"))
            latencies.append(ans.received_ms - sent_ms[rid])
    p95 = float(np.percentile(latencies, 95)) if latencies else float("nan")
    return CanaryReport(sent=len(ids), answered=len(answers), new_version_answers=new_answers,
                        new_version_correct=new_correct, p95_latency_ms=p95, degraded=degraded, adapted=adapted,
                        answers_by_version=dict(by_version), answers_by_tier=dict(by_tier))


def deploy(settings: Any, cfg: dict[str, Any], registered: dict[str, Any], offline_accuracy: float, *,
           backend: RolloutBackend | None = None, log: Callable[[str], None] = print,
           promote: Callable[[str], None] | None = None, canary_file: str | None = None) -> RolloutOutcome:
    """Roll out a registered release (ml.registry.RegisteredRelease.as_dict()) and promote it to `champion`
    if the canary passes; otherwise the rollout procedure rolls it back and the champion stays. The canary
    sends ``canary_file``'s samples (the run's own held-out data), else Fashion-MNIST test images."""
    from plugins.hooks.connected import connected_settings
    from plugins.hooks.mlflow import MlflowRegistryHook

    # Workers and the canary use the Kafka, S3 and MLflow of the Airflow Connections, else the settings'.
    settings = connected_settings(settings)
    backend = backend or make_backend(cfg["backend"], settings)
    from plugins.pipeline.params import worker_env

    release = make_release(settings.app, registered["release"], registered["uris"], registered["tiers"],
                           backend=cfg["backend"], http_port=settings.worker.http_port,
                           replicas=settings.k8s.replicas if cfg["backend"] == "kubernetes" else None,
                           env=worker_env(cfg))
    policy = CanaryPolicy(requests=cfg["canary_requests"],
                          min_accuracy=max(0.0, offline_accuracy - cfg["canary_accuracy_drop"]),
                          max_p95_latency_ms=cfg["canary_max_p95_ms"],
                          min_new_version_answers=min(10, max(1, cfg["canary_requests"] // 10)))
    canary = None
    if cfg["canary_requests"] > 0:
        if canary_file and canary_file.startswith("s3://"):  # handed on by a trainer pod
            canary_file = fetch_canary_file(settings, canary_file)
        x, y = canary_samples(cfg["canary_requests"], canary_file)
        sites = settings.k8s.edge_sites if cfg["backend"] == "kubernetes" else ()
        canary = lambda rel: run_canary(settings, rel, x, y, sites=sites)  # noqa: E731
    drain_s = (settings.worker.default_deadline_ms + settings.worker.degrade_grace_ms) / 1000 + 1.0
    return rollout(
        backend, release, canary=canary, policy=policy,
        promote=promote or (lambda v: log(f"champion -> release {v}: {MlflowRegistryHook(settings=settings).promote(v)}")),
        drain=lambda v, t: time.sleep(drain_s), log=log)
