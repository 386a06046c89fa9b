"""Tier workers as Kubernetes Deployments whose pod template is built by KubernetesPodOperator.

The operator's own `build_pod_request_obj()` makes the pod (image, command, env, resources, node
selector, tolerations, security context, pod template file, the cluster's `pod_mutation_hook`), so a
tier pod looks exactly like any other pod Airflow launches. Tier workers are long-lived and must
outlive the Airflow task, so the pod spec becomes the template of one Deployment per
(app, version, tier); the task only creates it, waits for the rollout and returns.

On the pods' network: the worker binds its HTTP server to `$(POD_IP)` (status.podIP), which is right on
every cluster and required where pods share the host network (the k8s testbed).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ml.contract import FULL, TIERS
from plugins.rollout.autoscaling import (
    KEDA_GROUP,
    KEDA_VERSION,
    SCALED_OBJECTS,
    TRIGGER_AUTHENTICATIONS,
    scaled_object,
)
from plugins.rollout.base import Release, RolloutBackend, RolloutError, TierWorkerSpec
from runtime.settings import ENV_PREFIX, EdgeSite, Settings, get_settings, settings_env

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

log = logging.getLogger(__name__)

LABEL_APP = "tierflow.io/app"
LABEL_VERSION = "tierflow.io/version"
LABEL_TIER = "tierflow.io/tier"
LABEL_SITE = "tierflow.io/site"
# Container states that never heal by waiting: fail the rollout at once.
FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "NoCommand",
                 "CreateContainerError"}
_SECRET_LIKE = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)


def dns_label(text: str, max_len: int = 63) -> str:
    """A DNS-1123 label made from free text (Deployment names)."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out[:max_len].rstrip("-") or "x"


def label_value(text: str) -> str:
    """A valid label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends)."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", out) or "x"


def deployment_name(app: str, version: str, tier: str, site: EdgeSite | None = None) -> str:
    return dns_label(f"{app}-v{version}-{tier}" + (f"-{site.name}" if site else ""))


def tier_labels(app: str, version: str, tier: str, site: EdgeSite | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "tierflow",
        "app.kubernetes.io/component": "tier-worker",
        "app.kubernetes.io/managed-by": "tierflow-rollout",
        LABEL_APP: label_value(app),
        LABEL_VERSION: label_value(str(version)),
        LABEL_TIER: label_value(tier),
    }
    if site:
        labels[LABEL_SITE] = label_value(site.name)
    return labels


def tier_sites(settings: Settings, tier: str) -> list[EdgeSite | None]:
    """The Deployments of one tier of a release: one per edge site for the edge, else one (None)."""
    return list(settings.k8s.edge_sites) if tier == TIERS[0] and settings.k8s.edge_sites else [None]


# Settings sections that describe the orchestrator, not the worker: never forwarded to tier pods.
_NOT_FORWARDED = ("TIERFLOW_K8S__", "TIERFLOW_AIRFLOW__", "TIERFLOW_HOME", "TIERFLOW_ML_PYTHON", "TIERFLOW_STACK__")


def public_settings_env(settings: Settings) -> dict[str, str]:
    """The orchestrator's TIERFLOW_* settings for a worker pod, without any secret value."""
    from pydantic import BaseModel, SecretStr

    secret: set[str] = set()

    def walk(name: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for f in type(value).model_fields:
                walk(f"{name}__{f.upper()}", getattr(value, f))
        elif isinstance(value, SecretStr):
            secret.add(name)

    for f in type(settings).model_fields:
        walk(f"{ENV_PREFIX}{f.upper()}", getattr(settings, f))
    return {k: v for k, v in settings_env(settings).items()
            if k not in secret and not k.startswith(_NOT_FORWARDED)}


def kafka_secret_env(settings: Settings) -> dict[str, str]:
    """The Kafka passwords the orchestrator uses, as pod env -> Secret reference (`secret_ref`; the pods read
    them by secretKeyRef; TIERFLOW_K8S__KAFKA_SECRETS names the references, TIERFLOW_K8S__SECRET_ENV overrides)."""
    k, refs = settings.kafka, settings.k8s.kafka_secrets
    return {f"{ENV_PREFIX}KAFKA__{field_name.upper()}": refs.get(field_name, key)
            for field_name, key in (("sasl_password", "kafka-sasl-password"),
                                    ("ssl_key_password", "kafka-ssl-key-password"))
            if getattr(k, field_name) is not None}


def secret_ref(settings: Settings, ref: str) -> tuple[str, str]:
    """(Secret, key) of a reference: "<key>" in the tier Secret or "<secret>/<key>" (keys have no "/")."""
    name, _, key = ref.rpartition("/")
    return name or settings.k8s.secret_name, key


# Kafka TLS file setting -> (default key in the tier Secret, file name in the pods' kafka_tls_dir).
_TLS_FILES = {"ssl_ca_location": ("kafka-ssl-ca", "ca.crt"),
              "ssl_certificate_location": ("kafka-ssl-certificate", "tls.crt"),
              "ssl_key_location": ("kafka-ssl-key", "tls.key")}


def kafka_tls_files(settings: Settings) -> dict[str, tuple[str, str, str]]:
    """The Kafka TLS files the settings name, as setting -> (Secret, key, file name in kafka_tls_dir): the
    orchestrator's own paths mean nothing in a pod, which reads the same files from Secrets."""
    k, ks = settings.kafka, settings.k8s
    return {f: (*secret_ref(settings, ks.kafka_secrets.get(f, key)), name)
            for f, (key, name) in _TLS_FILES.items() if getattr(k, f)}


def kafka_tls_volume(settings: Settings) -> tuple[k8s.V1Volume, k8s.V1VolumeMount] | None:
    """One projected volume of every Kafka TLS file (from one Secret or several), mounted read-only."""
    from kubernetes.client import models as k8s

    files = kafka_tls_files(settings)
    if not files:
        return None
    by_secret: dict[str, list[k8s.V1KeyToPath]] = {}
    for secret, key, name in files.values():
        by_secret.setdefault(secret, []).append(k8s.V1KeyToPath(key=key, path=name))
    volume = k8s.V1Volume(name="kafka-tls", projected=k8s.V1ProjectedVolumeSource(default_mode=0o440, sources=[
        k8s.V1VolumeProjection(secret=k8s.V1SecretProjection(name=secret, items=items))
        for secret, items in by_secret.items()]))
    return volume, k8s.V1VolumeMount(name="kafka-tls", mount_path=settings.k8s.kafka_tls_dir, read_only=True)


# Kafka credential setting -> the KEDA Kafka scaler's authentication parameter that takes the same secret.
_SCALER_AUTH_PARAMS = {"sasl_password": "password", "ssl_key_password": "keyPassword", "ssl_ca_location": "ca",
                       "ssl_certificate_location": "cert", "ssl_key_location": "key"}


def kafka_scaler_authentication(settings: Settings) -> tuple[str | None, dict[str, Any] | None]:
    """The TriggerAuthentication KEDA's Kafka scaler uses (its name, or None) and the one the rollout applies
    (or None): the one the settings name, else, when the broker needs credentials, one with the Secret
    references the tier pods read (password, CA, client certificate and key) and the SASL user name from the
    tier container's own env (a plain setting, not a secret)."""
    named = settings.k8s.autoscaling.trigger_authentication
    if named:
        return named, None
    files = {f: (secret, key) for f, (secret, key, _) in kafka_tls_files(settings).items()}
    passwords = {env.removeprefix(f"{ENV_PREFIX}KAFKA__").lower(): secret_ref(settings, ref)
                 for env, ref in kafka_secret_env(settings).items()}
    refs = {**files, **passwords}
    if not refs:
        return None, None
    name = dns_label(f"{settings.app}-kafka-scaler")
    spec: dict[str, Any] = {"secretTargetRef": [{"parameter": param, "name": refs[f][0], "key": refs[f][1]}
                                                for f, param in _SCALER_AUTH_PARAMS.items() if f in refs]}
    if settings.kafka.sasl_username:
        spec["env"] = [{"parameter": "username", "name": f"{ENV_PREFIX}KAFKA__SASL_USERNAME"}]
    return name, {"apiVersion": f"{KEDA_GROUP}/{KEDA_VERSION}", "kind": "TriggerAuthentication",
                  "metadata": {"name": name, "namespace": settings.k8s.namespace,
                               "labels": {"app.kubernetes.io/part-of": "tierflow", "tierflow.io/app": settings.app}},
                  "spec": spec}


def hardened_pod(settings: Settings) -> dict[str, Any]:
    """KubernetesPodOperator arguments every tierflow pod shares: its service account without a mounted token,
    non-root with the RuntimeDefault seccomp profile, read-only root, no privilege escalation, no capabilities."""
    from kubernetes.client import models as k8s

    ks = settings.k8s
    return {
        "service_account_name": ks.service_account,
        "automount_service_account_token": False,
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=ks.run_as_user, run_as_group=ks.run_as_user,
            fs_group=ks.run_as_user, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True, run_as_non_root=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"])),
    }


def pod_env(settings: Settings, extra: dict[str, str]) -> list[k8s.V1EnvVar]:
    """Env of a tierflow pod: the public TIERFLOW_* settings, ``k8s.extra_env``, then ``extra``; every secret
    only by secretKeyRef to the Secret ``k8s.secret_name``."""
    from kubernetes.client import models as k8s

    secret_env = {**kafka_secret_env(settings), **settings.k8s.secret_env}
    bad = sorted(name for name in settings.k8s.extra_env if _SECRET_LIKE.search(name) or name in secret_env)
    if bad:
        raise ValueError(f"TIERFLOW_K8S__EXTRA_ENV names secret-like variables {bad}: put them in the Kubernetes "
                         f"Secret {settings.k8s.secret_name!r} and map them in TIERFLOW_K8S__SECRET_ENV")
    plain = public_settings_env(settings)
    if settings.s3.endpoint_url:
        plain["MLFLOW_S3_ENDPOINT_URL"] = settings.s3.endpoint_url
    for field_name, (_, _, file_name) in kafka_tls_files(settings).items():  # where kafka_tls_volume mounts them
        plain[f"{ENV_PREFIX}KAFKA__{field_name.upper()}"] = f"{settings.k8s.kafka_tls_dir}/{file_name}"
    plain.update(settings.k8s.extra_env)
    plain.update(extra)
    env = [
        k8s.V1EnvVar(name="POD_NAME", value_from=k8s.V1EnvVarSource(
            field_ref=k8s.V1ObjectFieldSelector(field_path="metadata.name"))),
        k8s.V1EnvVar(name="POD_IP", value_from=k8s.V1EnvVarSource(
            field_ref=k8s.V1ObjectFieldSelector(field_path="status.podIP"))),
    ]
    env += [k8s.V1EnvVar(name=k, value=v) for k, v in plain.items() if k not in secret_env]
    for name, ref in sorted(secret_env.items()):
        secret, key = secret_ref(settings, ref)
        env.append(k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name=secret, key=key))))
    return env


def worker_env(settings: Settings, release: Release, spec: TierWorkerSpec,
               site: EdgeSite | None = None) -> list[k8s.V1EnvVar]:
    """Tier pod env: runtime settings (as seen at the edge ``site``), the served version, pod IP binding;
    secrets only by secretKeyRef."""
    settings = settings.at_site(site) if site else settings
    secret_env = {**kafka_secret_env(settings), **settings.k8s.secret_env}
    bad = sorted(name for name in spec.env if _SECRET_LIKE.search(name) or name in secret_env)
    if bad:
        raise ValueError(f"TierWorkerSpec.env of tier {spec.tier!r} carries secret-like settings {bad}: put them in the "
                         f"Kubernetes Secret {settings.k8s.secret_name!r} and map them in TIERFLOW_K8S__SECRET_ENV")
    return pod_env(settings, {
        "TIERFLOW_APP": release.app,
        "TIERFLOW_HOME": "/tmp/tierflow",
        "TIERFLOW_WORKER__VERSION": str(release.version),
        "TIERFLOW_WORKER__HTTP_HOST": "$(POD_IP)",
        **spec.env,
    })


def tier_pod(settings: Settings, release: Release, spec: TierWorkerSpec,
             site: EdgeSite | None = None) -> k8s.V1Pod:
    """The tier pod exactly as KubernetesPodOperator builds it, plus the readiness probe on /readyz; an edge
    ``site``'s pod runs on that site's nodes against its brokers."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    ks = settings.k8s
    argv = spec.worker_command()
    volumes = [k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())]
    mounts = [k8s.V1VolumeMount(name="tmp", mount_path="/tmp")]
    tls = kafka_tls_volume(settings)
    if tls is not None:
        volumes.append(tls[0])
        mounts.append(tls[1])
    op = KubernetesPodOperator(
        task_id=f"tier-{dns_label(spec.tier)}",
        name=deployment_name(release.app, release.version, spec.tier, site),
        random_name_suffix=False,
        namespace=ks.namespace,
        kubernetes_conn_id=ks.conn_id,
        config_file=ks.kube_config_path,
        image=ks.image,
        image_pull_policy=ks.image_pull_policy,
        cmds=list(ks.command),
        arguments=argv[1:],
        env_vars=worker_env(settings, release, spec, site),
        labels=tier_labels(release.app, release.version, spec.tier, site),
        annotations={"tierflow.io/model-uri": spec.model_uri},
        ports=[k8s.V1ContainerPort(name="http", container_port=spec.http_port)],
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": ks.cpu_request, "memory": ks.memory_request},
            limits={"cpu": ks.cpu_limit, "memory": ks.memory_limit}),
        node_selector={ks.node_label: spec.tier, **(site.node_selector if site else {})},
        tolerations=[k8s.V1Toleration(key=ks.node_label, operator="Equal", value=spec.tier,
                                      effect="NoSchedule")] if ks.tolerate_tier_taint else None,
        **hardened_pod(settings),
        termination_grace_period=ks.termination_grace_s,
        pod_template_file=ks.pod_template_file,
        volumes=volumes,
        volume_mounts=mounts,
    )
    pod = op.build_pod_request_obj(None, dry_run=True)
    container = pod.spec.containers[0]
    container.readiness_probe = k8s.V1Probe(
        http_get=k8s.V1HTTPGetAction(path="/readyz", port=spec.http_port),
        initial_delay_seconds=1, period_seconds=ks.readiness_period_s, timeout_seconds=2,
        failure_threshold=3)
    container.liveness_probe = k8s.V1Probe(
        http_get=k8s.V1HTTPGetAction(path="/healthz", port=spec.http_port),
        initial_delay_seconds=30, period_seconds=10, timeout_seconds=2, failure_threshold=6)
    return pod


def tier_deployment(settings: Settings, release: Release, spec: TierWorkerSpec,
                    site: EdgeSite | None = None) -> k8s.V1Deployment:
    """A Deployment per (app, version, tier[, edge site]) whose pod template is the operator's pod."""
    from kubernetes.client import models as k8s

    pod = tier_pod(settings, release, spec, site)
    pod.spec.restart_policy = "Always"  # long-lived workers: the Deployment restarts them
    selector = tier_labels(release.app, release.version, spec.tier, site)
    name = deployment_name(release.app, release.version, spec.tier, site)
    return k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=name, namespace=settings.k8s.namespace, labels=selector,
                                  annotations=pod.metadata.annotations),
        spec=k8s.V1DeploymentSpec(
            replicas=spec.replicas,
            selector=k8s.V1LabelSelector(match_labels=selector),
            strategy=k8s.V1DeploymentStrategy(type="RollingUpdate", rolling_update=k8s.V1RollingUpdateDeployment(
                max_surge=1, max_unavailable=0)),
            progress_deadline_seconds=600,
            revision_history_limit=2,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=pod.metadata.labels, annotations=pod.metadata.annotations),
                spec=pod.spec),
        ),
    )


def rollout_status(deployment: k8s.V1Deployment, pods: list[k8s.V1Pod], max_restarts: int) -> tuple[str, str]:
    """("ready" | "progressing" | "failed", why) from a Deployment and its pods."""
    want = deployment.spec.replicas or 0
    st = deployment.status
    for cond in st.conditions or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            return "failed", f"progress deadline exceeded: {cond.message}"
    for pod in pods:
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in FATAL_WAITING:
                return "failed", f"pod {pod.metadata.name}: {waiting.reason}: {waiting.message or ''}".strip()
            # Judge a crash loop between two runs, when the dead run's log is still the current one.
            if cs.restart_count >= max_restarts and waiting is not None:
                return "failed", (f"pod {pod.metadata.name}: container restarted {cs.restart_count} times "
                                  f"({waiting.reason})")
    if (st.observed_generation or 0) < (deployment.metadata.generation or 0):
        return "progressing", "controller has not seen the latest spec"
    counts = (st.updated_replicas or 0, st.ready_replicas or 0, st.available_replicas or 0)
    if all(c >= want for c in counts) and (st.replicas or 0) == want:
        return "ready", f"{want}/{want} replicas ready"
    return "progressing", f"updated/ready/available {counts} of {want}"


@dataclass
class KubernetesRolloutBackend(RolloutBackend):
    """Rollout backend over the cncf-kubernetes provider (KubernetesHook, KubernetesPodOperator)."""

    settings: Settings = field(default_factory=get_settings)
    poll_s: float = 1.0
    _log_lines: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def namespace(self) -> str:
        return self.settings.k8s.namespace

    def _hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        ks = self.settings.k8s
        if ks.kube_config_path:  # an explicit kubeconfig wins over the Airflow connection
            return KubernetesHook(conn_id=None, config_file=ks.kube_config_path)
        return KubernetesHook(conn_id=ks.conn_id)

    @cached_property
    def apps(self) -> Any:
        return self._hook().apps_v1_client

    @cached_property
    def core(self) -> Any:
        return self._hook().core_v1_client

    @cached_property
    def custom(self) -> Any:
        return self._hook().custom_object_client

    def start_tier(self, release: Release, spec: TierWorkerSpec) -> None:
        for site in tier_sites(self.settings, spec.tier):
            self._start_deployment(release, spec, site)

    def _start_deployment(self, release: Release, spec: TierWorkerSpec, site: EdgeSite | None) -> None:
        from kubernetes.client.exceptions import ApiException

        body = tier_deployment(self.settings, release, spec, site)
        name = body.metadata.name
        try:
            self.apps.create_namespaced_deployment(self.namespace, body)
            log.info("created Deployment %s/%s (image %s, nodes %s)", self.namespace, name,
                     self.settings.k8s.image, body.spec.template.spec.node_selector)
        except ApiException as e:
            if e.status != 409:
                raise RolloutError(f"cannot create Deployment {self.namespace}/{name}: {e.status} {e.reason}: "
                                   f"{e.body}") from e
            self.apps.replace_namespaced_deployment(name, self.namespace, body)
            log.info("replaced Deployment %s/%s", self.namespace, name)
        if self.settings.k8s.autoscaling.enabled:
            auth_name, auth = kafka_scaler_authentication(self.settings)
            if auth is not None:
                self._apply_keda(TRIGGER_AUTHENTICATIONS, auth)
            self._apply_scaled_object(scaled_object(self.settings, release, spec, name=name,
                                                    labels=body.metadata.labels,
                                                    bootstrap=site.bootstrap if site else None,
                                                    authentication=auth_name))

    def _apply_keda(self, plural: str, body: dict[str, Any]) -> None:
        """Create or replace a KEDA object of this namespace."""
        from kubernetes.client.exceptions import ApiException

        name, args = body["metadata"]["name"], (KEDA_GROUP, KEDA_VERSION, self.namespace, plural)
        try:
            self.custom.create_namespaced_custom_object(*args, body)
        except ApiException as e:
            if e.status != 409:
                raise RolloutError(f"cannot create {body['kind']} {self.namespace}/{name} (is KEDA installed?): "
                                   f"{e.status} {e.reason}: {e.body}") from e
            current = self.custom.get_namespaced_custom_object(*args, name)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.custom.replace_namespaced_custom_object(*args, name, body)

    def _apply_scaled_object(self, body: dict[str, Any]) -> None:
        """Create or replace the tier's KEDA ScaledObject (KEDA then owns the Deployment's replica count)."""
        self._apply_keda(SCALED_OBJECTS, body)
        spec = body["spec"]
        log.info("ScaledObject %s/%s: %d..%d replicas on the lag of group %s on %s", self.namespace, body["metadata"]["name"],
                 spec["minReplicaCount"], spec["maxReplicaCount"], spec["triggers"][0]["metadata"]["consumerGroup"],
                 spec["triggers"][0]["metadata"]["topic"])

    def _pods(self, selector: dict[str, str]) -> list[Any]:
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        return self.core.list_namespaced_pod(self.namespace, label_selector=sel).items

    def _read_log(self, pod_name: str, tail: int) -> str:
        resp = self.core.read_namespaced_pod_log(pod_name, self.namespace, tail_lines=tail, _preload_content=False)
        return resp.data.decode("utf-8", errors="replace")

    def _stream_logs(self, pods: list[Any]) -> None:
        """Copy new pod output lines into this task's log (the Airflow task log when run in a task)."""
        for pod in pods:
            key = f"{pod.metadata.uid}/{_restarts(pod)}"
            try:
                text = self._read_log(pod.metadata.name, tail=2000)
            except Exception:  # no container started yet, or it is between restarts
                continue
            lines = text.splitlines()
            seen = self._log_lines.get(key, 0)
            for line in lines[seen:]:
                log.info("[pod %s] %s", pod.metadata.name, line)
            self._log_lines[key] = max(seen, len(lines))

    def wait_ready(self, release: Release, spec: TierWorkerSpec, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for site in tier_sites(self.settings, spec.tier):  # every edge site, within the one timeout
            self._wait_deployment(release, spec, site, deadline, timeout_s)

    def _wait_deployment(self, release: Release, spec: TierWorkerSpec, site: EdgeSite | None, deadline: float,
                         timeout_s: float) -> None:
        name = deployment_name(release.app, release.version, spec.tier, site)
        selector = tier_labels(release.app, release.version, spec.tier, site)
        where = f" at site {site.name}" if site else ""
        state, why = "progressing", "not looked yet"
        while True:
            dep = self.apps.read_namespaced_deployment(name, self.namespace)
            pods = self._pods(selector)
            self._stream_logs(pods)
            state, why = rollout_status(dep, pods, self.settings.k8s.max_restarts)
            if state == "ready":
                log.info("Deployment %s ready on nodes %s: %s", name,
                         sorted({p.spec.node_name for p in pods if p.spec.node_name}), why)
                return
            if state == "failed" or time.monotonic() > deadline:
                if state != "failed":
                    why = f"not ready after {timeout_s:.0f}s ({why})"
                text = (f"tier {spec.tier}{where} of {release.app} v{release.version} did not become ready: "
                        f"{why}\n{self.describe(name, selector)}")
                log.error("%s", text)
                raise RolloutError(text)
            time.sleep(self.poll_s)

    def describe(self, name: str, selector: dict[str, str], tail: int = 40) -> str:
        """Deployment conditions, each pod's state, events and last log lines (for the error and task log)."""
        out: list[str] = []
        try:
            dep = self.apps.read_namespaced_deployment(name, self.namespace)
            for c in dep.status.conditions or []:
                out.append(f"deployment {name}: {c.type}={c.status} {c.reason}: {c.message}")
        except Exception as e:
            out.append(f"deployment {name}: cannot read ({e})")
        for pod in self._pods(selector):
            pn = pod.metadata.name
            out.append(f"--- pod {pn} on {pod.spec.node_name} phase {pod.status.phase} ip {pod.status.pod_ip}")
            for cs in pod.status.container_statuses or []:
                out.append(f"container {cs.name}: ready={cs.ready} restarts={cs.restart_count} "
                           f"state={_state(cs.state)} last={_state(cs.last_state)}")
            events = self.core.list_namespaced_event(
                self.namespace, field_selector=f"involvedObject.name={pn}").items
            for ev in sorted(events, key=lambda e: str(e.last_timestamp or e.event_time or "")):
                out.append(f"event {ev.type} {ev.reason}: {ev.message}")
            try:
                text = self._read_log(pn, tail=tail)
                out.append(f"log (last {tail} lines):")
                out += [f"  {line}" for line in text.splitlines()]
            except Exception as e:
                out.append(f"log: unavailable ({getattr(e, 'reason', e)})")
        return "\n".join(out)

    def stop_tier(self, app: str, version: str, tier: str, timeout_s: float) -> None:
        """Stops every Deployment of the tier (all edge sites, also sites no longer in the settings)."""
        from kubernetes.client import models as k8s
        from kubernetes.client.exceptions import ApiException

        selector = tier_labels(app, version, tier)
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        names = [d.metadata.name for d in self.apps.list_namespaced_deployment(self.namespace, label_selector=sel).items]
        interval = self.settings.k8s.entry_retire_interval_s if tier in (TIERS[0], FULL) else 0
        left = None  # time.monotonic() the last pod left, when they leave one at a time
        for name in names:
            if self.settings.k8s.autoscaling.enabled:  # first, so KEDA stops scaling what is being removed
                try:
                    self.custom.delete_namespaced_custom_object(KEDA_GROUP, KEDA_VERSION, self.namespace,
                                                                SCALED_OBJECTS, name)
                except ApiException as e:
                    if e.status != 404:
                        raise
            if interval > 0:
                left = self._scale_down_one_by_one(name, interval, left, timeout_s)
            try:
                self.apps.delete_namespaced_deployment(
                    name, self.namespace, body=k8s.V1DeleteOptions(propagation_policy="Foreground"))
            except ApiException as e:
                if e.status != 404:
                    raise
        deadline = time.monotonic() + timeout_s
        while pods := self._pods(selector):
            if time.monotonic() > deadline:
                raise RolloutError(f"pods of {names} still running after {timeout_s:.0f}s: "
                                   f"{[p.metadata.name for p in pods]}")
            time.sleep(self.poll_s)
        log.info("stopped Deployments %s in %s (pods got SIGTERM and exited)", names, self.namespace)

    def _scale_down_one_by_one(self, name: str, interval_s: float, left: float | None,
                               timeout_s: float) -> float | None:
        """Takes a Deployment's pods away one at a time (each gets ``timeout_s`` to exit), each ``interval_s`` after
        the previous one left (also one of another Deployment: ``left``), so the consumer group re-forms between
        two leaves; returns when the last one left."""
        from kubernetes.client.exceptions import ApiException

        try:
            dep = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            return left
        selector = dict(dep.spec.selector.match_labels)
        replicas = len(self._pods(selector))
        while replicas > 0:
            if left is not None:
                time.sleep(max(0.0, left + interval_s - time.monotonic()))
            replicas -= 1
            self.apps.patch_namespaced_deployment(name, self.namespace, {"spec": {"replicas": replicas}})
            deadline = time.monotonic() + timeout_s
            while len(self._pods(selector)) > replicas:
                if time.monotonic() > deadline:
                    raise RolloutError(f"pods of {name} still running after {timeout_s:.0f}s of scaling it down "
                                       f"to {replicas}")
                time.sleep(self.poll_s)
            left = time.monotonic()
            log.info("Deployment %s scaled down to %d (its pods leave one at a time)", name, replicas)
        return left

    def running(self, app: str) -> dict[str, list[str]]:
        deps = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=f"{LABEL_APP}={label_value(app)}").items
        out: dict[str, list[str]] = {}
        for d in deps:
            if d.metadata.deletion_timestamp:
                continue
            tiers = out.setdefault(d.metadata.labels[LABEL_VERSION], [])
            if d.metadata.labels[LABEL_TIER] not in tiers:  # one entry for all of a tier's edge sites
                tiers.append(d.metadata.labels[LABEL_TIER])
        rank = {t: i for i, t in enumerate(TIERS)}
        return {v: sorted(ts, key=lambda t: rank.get(t, len(rank))) for v, ts in out.items()}


def _restarts(pod: Any) -> int:
    return sum(cs.restart_count for cs in (pod.status.container_statuses or [])) if pod.status else 0


def _state(state: Any) -> str:
    if state is None:
        return "-"
    for kind in ("running", "waiting", "terminated"):
        s = getattr(state, kind, None)
        if s is not None:
            detail = getattr(s, "reason", None) or ""
            code = getattr(s, "exit_code", None)
            return f"{kind}({detail}{'' if code is None else f' exit {code}'})"
    return "-"
