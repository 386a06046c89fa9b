"""KubernetesRolloutBackend against a real API server (the k8s testbed): placement, readiness, logs."""

from __future__ import annotations

import logging
import uuid

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


def test_rollout_pods_get_kafka_tls_files_and_sasl_password_from_secrets(k8s_settings, k8s_admin, tiny_bundle,
                                                                         tmp_path):
    """With Kafka SASL_SSL settings, the pod the Deployment's ReplicaSet creates in the API server carries the
    Secret volume for the CA and the password's secretKeyRef, and no value of either. The stand-in kubelet
    resolves secretKeyRef env but mounts no volumes, so the worker finds no CA file and says so."""
    import time

    from kubernetes import client
    from pydantic import SecretStr

    core, _ = k8s_admin
    password = "sasl-" + uuid.uuid4().hex
    kafka = k8s_settings.kafka.model_copy(update={
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "tierflow-tier",
        "sasl_password": SecretStr(password), "ssl_ca_location": str(tmp_path / "orchestrator-ca.pem")})
    k8s = k8s_settings.k8s.model_copy(update={"kafka_secrets": {"ssl_ca_location": "kafka-ca/ca.crt",
                                                                "sasl_password": "kafka-user/password"},
                                              "autoscaling": k8s_settings.k8s.autoscaling.model_copy(
                                                  update={"enabled": True})})
    settings = k8s_settings.model_copy(update={"kafka": kafka, "k8s": k8s})
    secrets = {"kafka-ca": {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}, "kafka-user": {"password": password}}
    for name, data in secrets.items():
        core.create_namespaced_secret("tierflow", client.V1Secret(metadata=client.V1ObjectMeta(name=name),
                                                                  string_data=data))
    backend = KubernetesRolloutBackend(settings=settings, poll_s=0.5)
    release = Release(app=settings.app, version="4", tiers=(TierWorkerSpec("edge", str(tiny_bundle)),))
    try:
        backend.start_tier(release, release.tiers[0])
        deadline = time.monotonic() + 60
        while not (pods := core.list_namespaced_pod("tierflow", label_selector=f"tierflow.io/app={settings.app}").items):
            assert time.monotonic() < deadline, "the ReplicaSet created no pod"
            time.sleep(0.5)
        pod = pods[0]
        (c,) = pod.spec.containers
        env = {e.name: e for e in c.env}
        ref = env["TIERFLOW_KAFKA__SASL_PASSWORD"].value_from.secret_key_ref
        assert (ref.name, ref.key) == ("kafka-user", "password") and env["TIERFLOW_KAFKA__SASL_PASSWORD"].value is None
        assert env["TIERFLOW_KAFKA__SSL_CA_LOCATION"].value == "/etc/tierflow/kafka-tls/ca.crt"
        (volume,) = [v for v in pod.spec.volumes if v.name == "kafka-tls"]
        (source,) = volume.projected.sources
        assert source.secret.name == "kafka-ca" and [(i.key, i.path) for i in source.secret.items] == [("ca.crt", "ca.crt")]
        assert any(m.name == "kafka-tls" and m.mount_path == "/etc/tierflow/kafka-tls" and m.read_only
                   for m in c.volume_mounts)
        assert password not in str(pod.to_dict())
        # The stand-in kubelet started the process (secretKeyRef resolved) without mounting the volume.
        name, log = pod.metadata.name, ""
        while "kafka-tls/ca.crt" not in log and time.monotonic() < deadline + 60:
            time.sleep(1)
            try:
                log = core.read_namespaced_pod_log(name, "tierflow")
            except client.ApiException:
                log = ""
        assert "kafka-tls/ca.crt" in log, log[-2000:]
        assert password not in log
        # KEDA's Kafka scaler gets the same credentials by reference, applied by the rollout identity.
        custom = client.CustomObjectsApi(core.api_client)
        (auth,) = custom.list_namespaced_custom_object("keda.sh", "v1alpha1", "tierflow", "triggerauthentications",
                                                       label_selector=f"tierflow.io/app={settings.app}")["items"]
        assert sorted((r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]) == [
            ("ca", "kafka-ca", "ca.crt"), ("password", "kafka-user", "password")]
        scaled = custom.get_namespaced_custom_object("keda.sh", "v1alpha1", "tierflow", "scaledobjects",
                                                     deployment_name(settings.app, "4", "edge"))
        assert scaled["spec"]["triggers"][0]["authenticationRef"] == {"name": auth["metadata"]["name"]}
        assert password not in str(auth) + str(scaled)
    finally:
        backend.stop_tier(release.app, "4", "edge", timeout_s=60)
        for name in secrets:
            core.delete_namespaced_secret(name, "tierflow")
        custom = client.CustomObjectsApi(core.api_client)
        for item in custom.list_namespaced_custom_object("keda.sh", "v1alpha1", "tierflow", "triggerauthentications",
                                                         label_selector=f"tierflow.io/app={settings.app}")["items"]:
            custom.delete_namespaced_custom_object("keda.sh", "v1alpha1", "tierflow", "triggerauthentications",
                                                   item["metadata"]["name"])
