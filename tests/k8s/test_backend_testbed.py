"""KubernetesRolloutBackend against a real API server (the k8s testbed): placement, readiness, logs."""

from __future__ import annotations

import logging

import pytest

from plugins.rollout.base import Release, RolloutError, TierWorkerSpec
from plugins.rollout.kubernetes import KubernetesRolloutBackend, deployment_name

pytestmark = pytest.mark.k8s


class Lines(logging.Handler):
    """Collects what the backend logs (in Airflow, this goes to the task log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def backend_log():
    handler, logger = Lines(), logging.getLogger("plugins.rollout.kubernetes")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_missing_model_fails_readiness_with_pod_events_and_logs(k8s_settings, tmp_path, backend_log):
    missing = tmp_path / "no-such-bundle"
    release = Release(app=k8s_settings.app, version="9", tiers=(TierWorkerSpec("cloud", str(missing)),))
    backend = KubernetesRolloutBackend(settings=k8s_settings, poll_s=0.5)
    spec = release.tiers[0]
    backend.start_tier(release, spec)
    assert backend.running(release.app) == {"9": ["cloud"]}
    with pytest.raises(RolloutError) as err:
        backend.wait_ready(release, spec, timeout_s=90)
    message = str(err.value)
    name = deployment_name(release.app, "9", "cloud")
    assert f"tier cloud of {release.app} v9 did not become ready" in message
    assert f"--- pod {name}-" in message and " on cloud-1 " in message  # placed on the cloud pool
    assert "event " in message and "restarts=" in message
    assert str(missing) in message  # the worker's own error line, read back through pods/log
    # the pod's output is copied into the task log while waiting
    assert any(line.startswith(f"[pod {name}-") and str(missing) in line for line in backend_log)
    backend.stop_tier(release.app, "9", "cloud", timeout_s=60)
    assert backend.running(release.app) == {}


def test_rollout_identity_cannot_read_secrets_or_touch_other_namespaces(rollout_kubeconfig):
    """The Role is least privilege: tier Deployments yes, Secrets and other namespaces no."""
    from kubernetes import client, config

    api = config.new_client_from_config(rollout_kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    apps.list_namespaced_deployment("tierflow")  # allowed
    for call in (lambda: core.list_namespaced_secret("tierflow"),
                 lambda: core.read_namespaced_secret("tierflow-secrets", "tierflow"),
                 lambda: apps.list_namespaced_deployment("default"),
                 lambda: core.create_namespaced_config_map("tierflow", client.V1ConfigMap(
                     metadata=client.V1ObjectMeta(name="x")))):
        with pytest.raises(client.ApiException) as err:
            call()
        assert err.value.status == 403
