"""Every manifest we ship, validated offline against the Kubernetes 1.29 schema in strict mode.

Rendering uses `kubectl kustomize` (kustomize built into kubectl). Custom resources have no schema in
kubernetes-validate: KafkaTopics and the tiers' KEDA ScaledObjects are validated strictly against the CRD
schemas vendored in tests/k8s/crds (crd_schema.py); Strimzi's Kafka/KafkaNodePool are checked against what
Strimzi requires of them (apiVersion, cluster label, KRaft roles).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from plugins.pipeline.deploy import make_release
from plugins.rollout.autoscaling import scaled_object, scaling_problems
from plugins.rollout.base import Release, TierWorkerSpec
from plugins.rollout.kubernetes import (
    deployment_name,
    kafka_scaler_authentication,
    tier_deployment,
    tier_labels,
)
from runtime.route import plan_route
from runtime.settings import AutoscalingSettings, KafkaSettings, KubernetesSettings, Settings
from tests.k8s.crd_schema import crd_problems

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
SCHEMA_VERSION = "1.29"
STRIMZI = "kafka.strimzi.io/v1beta2"
MONITORING = "monitoring.coreos.com/v1"
RULES = ROOT / "infra" / "prometheus" / "tierflow.rules.yml"
PROMETHEUS_RULE = K8S / "monitoring" / "prometheusrule.yaml"
CONTRACT_TOPICS = ("requests", "results", "dlq", "training", "feedback")


def render(overlay: str, k8s_dir: Path = K8S) -> list[dict]:
    exe = shutil.which("kubectl")
    assert exe, "kubectl (with built-in kustomize) is needed to render infra/k8s overlays"
    out = subprocess.run([exe, "kustomize", str(k8s_dir / "overlays" / overlay)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [m for m in yaml.safe_load_all(out.stdout) if m]


def validate(manifest: dict) -> None:
    try:
        kubernetes_validate.validate(manifest, desired_version=SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
        pytest.fail(f"{name} is not valid Kubernetes {SCHEMA_VERSION}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("overlay", ["testbed", "production", "production-sasl-tls"])
def test_overlay_renders_and_every_builtin_manifest_is_valid(overlay):
    manifests = render(overlay)
    builtin = [m for m in manifests if not m["apiVersion"].startswith(("kafka.strimzi.io/", "monitoring.coreos.com/"))]
    for m in builtin:
        validate(m)
        assert m["metadata"].get("namespace", "tierflow") == "tierflow" or m["kind"] == "Namespace"
    kinds = {m["kind"] for m in builtin}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"} <= kinds
    if overlay.startswith("production"):
        assert {"StatefulSet", "Deployment", "Service", "Job"} <= kinds  # MinIO, PostgreSQL, MLflow


def test_production_kafka_resources_cover_the_data_plane_contract():
    manifests = render("production")
    strimzi = [m for m in manifests if m["apiVersion"].startswith("kafka.strimzi.io/")]
    assert all(m["apiVersion"] == STRIMZI for m in strimzi)
    (kafka,) = [m for m in strimzi if m["kind"] == "Kafka"]
    cluster = kafka["metadata"]["name"]
    pools = [m for m in strimzi if m["kind"] == "KafkaNodePool"]
    assert pools and all(p["metadata"]["labels"]["strimzi.io/cluster"] == cluster for p in pools)
    assert {r for p in pools for r in p["spec"]["roles"]} == {"controller", "broker"}  # KRaft, no ZooKeeper
    topics = {m["spec"]["topicName"]: m for m in strimzi if m["kind"] == "KafkaTopic"}
    settings = Settings(_env_file=None, app="fmnist")
    expected = {settings.topic(k) for k in CONTRACT_TOPICS}
    expected |= {settings.link_topic(1, "edge", "fog"), settings.link_topic(1, "fog", "cloud")}
    assert expected <= set(topics)
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster, name
        assert topic["spec"]["partitions"] >= 1 and topic["spec"]["replicas"] >= 1, name
        # a Kubernetes object name must be a DNS label even though the topic name has dots
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", topic["metadata"]["name"]), name


def test_rollout_role_is_least_privilege_and_covers_what_the_backend_calls():
    manifests = render("production")
    (role,) = [m for m in manifests if m["kind"] == "Role" and m["metadata"]["name"] == "tierflow-rollout"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    for g, r, v in granted:
        assert "*" not in (g, r, v)
        assert r not in {"secrets", "pods/exec", "pods/attach", "pods/portforward", "roles", "rolebindings"}
    needed = {("apps", "deployments", v) for v in ("get", "list", "create", "update", "delete")}
    needed |= {("", "pods", "list"), ("", "pods/log", "get"), ("", "events", "list")}
    assert needed <= granted
    (binding,) = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert {"name": "airflow-worker", "kind": "ServiceAccount", "namespace": "airflow"} in binding["subjects"]


def test_tier_pod_template_is_a_valid_nonroot_pod():
    pod = yaml.safe_load((K8S / "base" / "tier-pod-template.yaml").read_text())
    validate(pod)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False


@pytest.mark.parametrize("template", [None, str(K8S / "base" / "tier-pod-template.yaml")])
def test_backend_deployment_is_valid_and_places_each_tier_on_its_pool(template):
    settings = Settings(_env_file=None, app="fmnist", k8s=KubernetesSettings(pod_template_file=template))
    release = Release(app="fmnist", version="3", tiers=tuple(
        TierWorkerSpec(t, f"models:/fmnist-{t}/3", env={"TIERFLOW_WORKER__MAX_BATCH": "32"}) for t in ("edge", "fog", "cloud")))
    for spec in release.tiers:
        dep = client.ApiClient().sanitize_for_serialization(tier_deployment(settings, release, spec))
        validate(dep)
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert pod["nodeSelector"] == {"tier": spec.tier}
        assert pod["tolerations"][0] == {"key": "tier", "operator": "Equal", "value": spec.tier,
                                         "effect": "NoSchedule"}
        assert pod["restartPolicy"] == "Always" and pod["securityContext"]["runAsNonRoot"] is True
        assert c["command"] + c["args"] == spec.worker_command()
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": spec.http_port}
        env = {e["name"]: e for e in c["env"]}
        assert env["TIERFLOW_WORKER__HTTP_HOST"]["value"] == "$(POD_IP)"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["TIERFLOW_WORKER__VERSION"]["value"] == "3"
        assert env["TIERFLOW_WORKER__MAX_BATCH"]["value"] == "32"
        for name in settings.k8s.secret_env:
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "tierflow-secrets"
        if template:  # the template's hardening survives the operator's merge
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert pod["serviceAccountName"] == "tierflow-tier"


def test_secret_values_never_enter_the_pod_spec():
    from pydantic import SecretStr

    from runtime.settings import S3Settings

    settings = Settings(_env_file=None, s3=S3Settings(access_key_id="AK", secret_access_key=SecretStr("hunter2")))
    release = Release(app="fmnist", version="1", tiers=(TierWorkerSpec("edge", "/b"),))
    text = yaml.safe_dump(client.ApiClient().sanitize_for_serialization(
        tier_deployment(settings, release, release.tiers[0])))
    assert "hunter2" not in text
    leaky = Release(app="fmnist", version="1", tiers=(TierWorkerSpec("edge", "/b", env={"TIERFLOW_DB_PASSWORD": "x"}),))
    with pytest.raises(ValueError, match="Kubernetes Secret"):
        tier_deployment(settings, leaky, leaky.tiers[0])


def _deployment_text(settings: Settings, tier: str = "edge") -> tuple[dict, str]:
    release = Release(app="fmnist", version="1", tiers=(TierWorkerSpec(tier, "/b"),))
    dep = client.ApiClient().sanitize_for_serialization(tier_deployment(settings, release, release.tiers[0]))
    validate(dep)
    return dep, yaml.safe_dump(dep)


def test_kafka_sasl_tls_overlay_gives_tier_pods_secret_refs_only(monkeypatch):
    """The production-sasl-tls overlay's settings, as Airflow's workers see them (ConfigMap + the password from
    their Secret): the tier pods mount the cluster CA from Strimzi's Secret and read the KafkaUser's password by
    secretKeyRef; neither the password nor the orchestrator's CA path is in the Deployment."""
    manifests = render("production-sasl-tls")
    (kafka,) = [m for m in manifests if m["kind"] == "Kafka"]
    (tls,) = [x for x in kafka["spec"]["kafka"]["listeners"] if x["name"] == "tls"]
    assert tls["tls"] is True and tls["authentication"] == {"type": "scram-sha-512"} and tls["port"] == 9093
    (user,) = [m for m in manifests if m["kind"] == "KafkaUser"]
    assert user["apiVersion"] == STRIMZI and user["metadata"]["labels"]["strimzi.io/cluster"] == "tierflow"
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    (cm,) = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "tierflow-settings"]
    for key in [k for k in os.environ if k.startswith("TIERFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in {**cm["data"], "TIERFLOW_KAFKA__SASL_PASSWORD": "sasl-hunter2"}.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.kafka.bootstrap.endswith(":9093")
    dep, text = _deployment_text(settings)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TIERFLOW_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "tierflow-tier",
                                                                                 "key": "password"}
    assert env["TIERFLOW_KAFKA__SASL_USERNAME"]["value"] == "tierflow-tier"
    assert env["TIERFLOW_KAFKA__SSL_CA_LOCATION"]["value"] == "/etc/tierflow/kafka-tls/ca.crt"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
    assert volume["projected"]["sources"] == [{"secret": {"name": "tierflow-cluster-ca-cert",
                                                          "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
    assert {"name": "kafka-tls", "mountPath": "/etc/tierflow/kafka-tls", "readOnly": True} in c["volumeMounts"]
    assert "sasl-hunter2" not in text


def test_kafka_scaler_on_a_sasl_tls_broker_gets_a_trigger_authentication_with_the_pods_secret_refs(monkeypatch):
    """With the production-sasl-tls settings and autoscaling on, the rollout's TriggerAuthentication (valid
    against KEDA's CRD) gives the Kafka scaler the KafkaUser's password and the cluster CA from the same
    Secrets the tier pods read, and the user name from the tier container's env; every ScaledObject uses it.
    A TriggerAuthentication named in the settings is used instead, and none is rendered."""
    (cm,) = [m for m in render("production-sasl-tls")
             if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "tierflow-settings"]
    for key in [k for k in os.environ if k.startswith("TIERFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in {**cm["data"], "TIERFLOW_KAFKA__SASL_PASSWORD": "sasl-hunter2",
                       "TIERFLOW_K8S__AUTOSCALING__ENABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)
    name, auth = kafka_scaler_authentication(settings)
    assert auth is not None and name == auth["metadata"]["name"] and crd_problems(auth) == []
    assert sorted(auth["spec"]["secretTargetRef"], key=lambda r: r["parameter"]) == [
        {"parameter": "ca", "name": "tierflow-cluster-ca-cert", "key": "ca.crt"},
        {"parameter": "password", "name": "tierflow-tier", "key": "password"}]
    assert auth["spec"]["env"] == [{"parameter": "username", "name": "TIERFLOW_KAFKA__SASL_USERNAME"}]
    assert "sasl-hunter2" not in json.dumps(auth)
    scaled = release_scaled_objects(settings)
    assert {so["spec"]["triggers"][0]["authenticationRef"]["name"] for so in scaled} == {auth["metadata"]["name"]}
    assert all(so["spec"]["triggers"][0]["metadata"]["sasl"] == "scram_sha512" for so in scaled)
    assert all(crd_problems(so) == [] for so in scaled)
    monkeypatch.setenv("TIERFLOW_K8S__AUTOSCALING__TRIGGER_AUTHENTICATION", "my-kafka-auth")
    own = Settings(_env_file=None)
    assert kafka_scaler_authentication(own) == ("my-kafka-auth", None)
    assert {so["spec"]["triggers"][0]["authenticationRef"]["name"] for so in release_scaled_objects(own)} == {
        "my-kafka-auth"}
    for key in [k for k in os.environ if k.startswith("TIERFLOW_")]:
        monkeypatch.delenv(key)
    plain = Settings(_env_file=None, k8s=KubernetesSettings(autoscaling=AutoscalingSettings(enabled=True)))
    assert kafka_scaler_authentication(plain) == (None, None)
    assert all("authenticationRef" not in so["spec"]["triggers"][0] for so in release_scaled_objects(plain))


def test_mutual_tls_files_and_key_password_come_from_the_tier_secret():
    """Defaults: CA, client certificate and key from keys of the tier Secret, mounted as files; the key's
    password by secretKeyRef; the orchestrator's own file paths and the password stay out of the pod spec."""
    from pydantic import SecretStr

    from runtime.settings import KafkaSettings

    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_location="/home/airflow/kafka/ca.pem",
                          ssl_certificate_location="/home/airflow/kafka/client.pem",
                          ssl_key_location="/home/airflow/kafka/client.key", ssl_key_password=SecretStr("key-hunter2"))
    dep, text = _deployment_text(Settings(_env_file=None, kafka=kafka), tier="cloud")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    for setting, name in (("CA", "ca.crt"), ("CERTIFICATE", "tls.crt"), ("KEY", "tls.key")):
        assert env[f"TIERFLOW_KAFKA__SSL_{setting}_LOCATION"]["value"] == f"/etc/tierflow/kafka-tls/{name}"
    assert env["TIERFLOW_KAFKA__SSL_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "tierflow-secrets", "key": "kafka-ssl-key-password"}
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
    assert volume["projected"] == {"defaultMode": 0o440, "sources": [{"secret": {"name": "tierflow-secrets", "items": [
        {"key": "kafka-ssl-ca", "path": "ca.crt"}, {"key": "kafka-ssl-certificate", "path": "tls.crt"},
        {"key": "kafka-ssl-key", "path": "tls.key"}]}}]}
    assert "key-hunter2" not in text and "/home/airflow/kafka" not in text
    plain, _ = _deployment_text(Settings(_env_file=None))
    assert [v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]] == ["tmp"]  # no TLS, no volume


def test_airflow_helm_values():
    values = yaml.safe_load((K8S / "airflow" / "values.yaml").read_text())
    assert values["executor"] in {"KubernetesExecutor", "CeleryExecutor", "CeleryKubernetesExecutor"}
    assert values["airflowVersion"] == "3.3.2"
    env = {e["name"]: e["value"] for e in values["env"]}
    assert '"in_cluster": true' in env["AIRFLOW_CONN_KUBERNETES_DEFAULT"]
    assert values["workers"]["serviceAccount"]["name"] == "airflow-worker"  # bound by the production overlay
    assert values["securityContexts"]["pod"]["runAsNonRoot"] is True


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfile_lints_clean_and_runs_non_root(dockerfile):
    """The images cannot be built here (no Docker engine): lint them with hadolint instead."""
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    out = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}


def test_dockerignore_keeps_the_build_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", ".tierflow"} <= set(ignored)


def write_prometheus_rule() -> None:
    """Rewrite infra/k8s/monitoring/prometheusrule.yaml from the embedded stack's rule file."""
    head = [line for line in PROMETHEUS_RULE.read_text().splitlines(keepends=True) if line.startswith("#")]
    doc = {"apiVersion": MONITORING, "kind": "PrometheusRule",
           "metadata": {"name": "tierflow", "labels": {"app.kubernetes.io/name": "tierflow"}},
           "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]}}
    PROMETHEUS_RULE.write_text("".join(head) + yaml.safe_dump(doc, sort_keys=False, width=110))


def test_production_monitors_the_tier_pods_with_the_embedded_stacks_rules():
    """Prometheus Operator CRs (no schema offline): checked against what the operator and the tier pods
    need. The PodMonitor selects the pods the rollout builds, on their container port; the PrometheusRule
    holds exactly the rules the embedded stack's Prometheus loads."""
    monitoring = {m["kind"]: m for m in render("production") if m["apiVersion"].startswith("monitoring.coreos.com/")}
    assert set(monitoring) == {"PodMonitor", "PrometheusRule"}
    assert all(m["apiVersion"] == MONITORING and m["metadata"]["namespace"] == "tierflow" for m in monitoring.values())
    rule = monitoring["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "prometheusrule.yaml differs from infra/prometheus/tierflow.rules.yml: run write_prometheus_rule()")

    settings = Settings(_env_file=None, app="fmnist", k8s=KubernetesSettings())
    spec = TierWorkerSpec("edge", "models:/fmnist-edge/3")
    deployment = tier_deployment(settings, Release(app="fmnist", version="3", tiers=(spec,)), spec)
    pod_labels = deployment.spec.template.metadata.labels
    monitor = monitoring["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    ports = {p.name for c in deployment.spec.template.spec.containers for p in c.ports or []}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "tierflow-workers"  # what TierflowTierDown selects
    for target in ("app", "tier", "version"):
        (source,) = relabel[target]["sourceLabels"]
        pod_label = re.sub(r"[^a-zA-Z0-9_]", "_", f"tierflow.io/{target}")
        assert source == f"__meta_kubernetes_pod_label_{pod_label}" and f"tierflow.io/{target}" in pod_labels


# -- tier replicas and autoscaling ----------------------------------------------------------------------
def overlay_settings(manifests: list[dict], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings Airflow's tasks get from the overlay's ConfigMap tierflow-settings (envFrom)."""
    import os

    (cm,) = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "tierflow-settings"]
    for key in [k for k in os.environ if k.startswith("TIERFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in cm["data"].items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)


def topic_partitions(manifests: list[dict]) -> dict[str, int]:
    return {m["spec"]["topicName"]: m["spec"]["partitions"] for m in manifests if m["kind"] == "KafkaTopic"}


def release_scaled_objects(settings: Settings, version: str = "1") -> list[dict]:
    """What the Kubernetes rollout creates beside each tier Deployment of a release."""
    tiers = ["edge", "fog", "cloud"]
    release = make_release(settings.app, version, {t: f"models:/fmnist-{t}/{version}" for t in tiers}, tiers,
                           backend="kubernetes", replicas=settings.k8s.replicas)
    auth, _ = kafka_scaler_authentication(settings)
    return [scaled_object(settings, release, spec, name=deployment_name(release.app, version, spec.tier),
                          labels=tier_labels(release.app, version, spec.tier), authentication=auth)
            for spec in release.tiers]


def test_production_kafka_topics_are_valid_strimzi_kafkatopics():
    topics = [m for m in render("production") if m["kind"] == "KafkaTopic"]
    assert len(topics) >= 7
    for topic in topics:
        assert crd_problems(topic) == [], topic["metadata"]["name"]


def test_production_tier_scaled_objects_are_valid_and_capped_by_their_topics_partitions(monkeypatch):
    manifests = render("production")
    settings = overlay_settings(manifests, monkeypatch)
    assert settings.k8s.autoscaling.enabled and settings.k8s.replicas
    scaled = release_scaled_objects(settings)
    partitions = topic_partitions(manifests)
    for so in scaled:
        assert crd_problems(so) == [], so["metadata"]["name"]
        tier = so["metadata"]["labels"]["tierflow.io/tier"]
        route = plan_route(settings, tier, "1", ["edge", "fog", "cloud"])
        (trigger,) = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == route.group_id and trigger["metadata"]["topic"] == route.in_topic
        assert trigger["metadata"]["lagThreshold"] == str(settings.k8s.autoscaling.lag_threshold)
        assert so["spec"]["scaleTargetRef"]["name"] == deployment_name("fmnist", "1", tier)
        assert so["spec"]["minReplicaCount"] == settings.k8s.replicas_for(tier)
        assert so["spec"]["maxReplicaCount"] == partitions[route.in_topic] == settings.kafka.partitions
    assert scaling_problems(scaled, partitions) == []


def test_consumed_topics_take_their_partitions_from_the_one_setting(tmp_path, monkeypatch):
    """Change TIERFLOW_KAFKA__PARTITIONS in a copy of the production overlay: every topic a tier consumes
    follows, the others keep theirs, and the ScaledObjects' cap moves with it."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays" / "production" / "kustomization.yaml"
    text = kustomization.read_text()
    assert "TIERFLOW_KAFKA__PARTITIONS=12" in text
    kustomization.write_text(text.replace("TIERFLOW_KAFKA__PARTITIONS=12", "TIERFLOW_KAFKA__PARTITIONS=5"))
    before, after = topic_partitions(render("production")), topic_partitions(render("production", copy))
    consumed = {m["spec"]["topicName"] for m in render("production", copy)
                if m["kind"] == "KafkaTopic" and m["metadata"]["labels"].get("tierflow.io/consumed-by") == "tier"}
    assert {"fmnist.requests", "fmnist.v1.edge-fog", "fmnist.v1.fog-cloud"} == consumed
    assert all(after[t] == 5 for t in consumed)
    assert {t: n for t, n in after.items() if t not in consumed} == {t: n for t, n in before.items() if t not in consumed}
    settings = overlay_settings(render("production", copy), monkeypatch)
    assert {so["spec"]["maxReplicaCount"] for so in release_scaled_objects(settings)} == {5}


def test_a_cap_above_the_partitions_or_an_unknown_field_fails(monkeypatch):
    manifests = render("production")
    settings = overlay_settings(manifests, monkeypatch)
    partitions = topic_partitions(manifests)
    good = release_scaled_objects(settings)
    too_many = yaml.safe_load(yaml.safe_dump(good))
    too_many[1]["spec"]["maxReplicaCount"] = partitions["fmnist.v1.edge-fog"] + 1
    (problem,) = scaling_problems(too_many, partitions)
    assert "maxReplicaCount 13 > 12 partitions of fmnist.v1.edge-fog" in problem
    assert scaling_problems(good, {**partitions, "fmnist.requests": 3})  # a topic with fewer partitions
    misspelt = {**good[0], "spec": {**good[0]["spec"], "maxReplicas": 4}}
    assert any("maxReplicas" in p for p in crd_problems(misspelt))
    trigger = {**good[0]["spec"]["triggers"][0]}
    trigger["metadata"] = {**trigger["metadata"], "lagTreshold": "5"}
    assert any("lagTreshold" in p for p in crd_problems({**good[0], "spec": {**good[0]["spec"], "triggers": [trigger]}}))
    inverted = {**good[0], "spec": {**good[0]["spec"], "minReplicaCount": 9, "maxReplicaCount": 2}}
    assert crd_problems(inverted) and scaling_problems([inverted], partitions)
    topic = next(m for m in manifests if m["kind"] == "KafkaTopic")
    assert any("partition" in p for p in crd_problems({**topic, "spec": {**topic["spec"], "partition": 3}}))
    assert any("partitions" in p for p in crd_problems({**topic, "spec": {**topic["spec"], "partitions": "3"}}))
    assert any("metadata" in p for p in crd_problems({**topic, "metadata": {**topic["metadata"], "lables": {}}}))


def test_scaled_object_takes_the_tiers_replica_range_and_input():
    ok = Settings(_env_file=None, kafka=KafkaSettings(partitions=6), k8s=KubernetesSettings(
        replicas={"cloud": 2}, autoscaling=AutoscalingSettings(enabled=True, max_replicas={"cloud": 4})))
    spec = TierWorkerSpec("cloud", "models:/fmnist-cloud/2", replicas=2)
    release = Release("fmnist", "2", (TierWorkerSpec("edge", "e"), TierWorkerSpec("fog", "f"), spec))
    so = scaled_object(ok, release, spec, name="x", labels={})
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 4)
    assert so["spec"]["triggers"][0]["metadata"]["topic"] == "fmnist.v2.fog-cloud"


def test_backend_deployment_gets_the_tiers_replicas():
    settings = Settings(_env_file=None, k8s=KubernetesSettings(replicas={"cloud": 3}))
    release = make_release("fmnist", "4", {t: f"models:/fmnist-{t}/4" for t in ("edge", "fog", "cloud")},
                           ["edge", "fog", "cloud"], backend="kubernetes", replicas=settings.k8s.replicas)
    assert [tier_deployment(settings, release, s).spec.replicas for s in release.tiers] == [1, 1, 3]


# -- the trainer pod (backend=kubernetes) ------------------------------------------------------------------
def test_trainer_pod_is_valid_on_its_pool_with_gpu_and_secrets_only_by_reference():
    from pydantic import SecretStr

    from plugins.pipeline.trainer_pod import trainer_operator
    from runtime.settings import S3Settings, TrainerPodSettings

    trainer = TrainerPodSettings(node_selector={"tierflow.io/pool": "gpu"}, gpus=1, tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    settings = Settings(_env_file=None, app="fmnist", k8s=KubernetesSettings(trainer=trainer),
                        s3=S3Settings(access_key_id="AK", secret_access_key=SecretStr("hunter2")))
    op = trainer_operator(settings, "train", "s3://tierflow/ml-steps/i.json", "s3://tierflow/ml-steps/r.json",
                          task_id="train-pod")
    pod = client.ApiClient().sanitize_for_serialization(op.build_pod_request_obj(None, dry_run=True))
    validate(pod)
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert c["image"] == trainer.image and c["command"] + c["args"] == [
        "tierflow", "ml-step", "train", "--input", "s3://tierflow/ml-steps/i.json",
        "--output", "s3://tierflow/ml-steps/r.json"]
    assert spec["nodeSelector"] == {"tierflow.io/pool": "gpu"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" == c["resources"]["requests"]["nvidia.com/gpu"]
    assert spec["restartPolicy"] == "Never" and spec["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in c["env"]}
    for name in settings.k8s.secret_env:
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "tierflow-secrets"
    assert "hunter2" not in yaml.safe_dump(pod)
    assert env["TIERFLOW_MLFLOW__TRACKING_URI"]["value"] == settings.mlflow.tracking_uri
    cpu_only = trainer_operator(Settings(_env_file=None), "gate", "s3://b/i", "s3://b/r", task_id="g")
    assert "nvidia.com/gpu" not in (cpu_only.build_pod_request_obj(None, dry_run=True).spec.containers[0].resources.limits or {})
