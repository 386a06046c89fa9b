"""One typed settings model for every part of tierflow.

Values come from environment variables prefixed ``TIERFLOW_`` (nested with ``__``, e.g.
``TIERFLOW_KAFKA__BOOTSTRAP=broker:9092``), then from ``$TIERFLOW_HOME/stack.env`` (written by
``tierflow stack up`` with generated credentials), then the defaults below, which fit the embedded
single-machine stack. Secrets are ``SecretStr`` and have no defaults in code.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from ml import contract

ENV_PREFIX = "TIERFLOW_"


def default_home() -> Path:
    """$TIERFLOW_HOME, else ./.tierflow: where the stack, workers, logs and model cache live."""
    return Path(os.environ.get(f"{ENV_PREFIX}HOME", Path.cwd() / ".tierflow")).resolve()


class KafkaSettings(BaseModel):
    """Broker addresses, security and client tuning; every link may have its own cluster (edge/fog/cloud sites)."""

    model_config = ConfigDict(hide_input_in_errors=True)  # a validation error never echoes a password

    bootstrap: str = "127.0.0.1:19092"
    # Per-tier override of the bootstrap servers a tier *consumes* from, e.g. {"fog": "fog-site:9092"}.
    tier_bootstrap: dict[str, str] = Field(default_factory=dict)
    # Latency-relevant client settings. Apache Kafka defaults are fine in production; the embedded
    # broker answers a waiting fetch only at fetch.wait.max.ms, so keep it small here.
    fetch_wait_max_ms: int = 10
    # Once a consumer's local queue is full (queued.max.messages.kbytes: ~10,000 activations of 6 KB),
    # librdkafka stops fetching for fetch.queue.backoff.ms (1 s by default), so a worker working off a backlog
    # drains its queue and sits idle: half the time of a backlog of activations went there.
    fetch_queue_backoff_ms: int = 50
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    compression: str = "lz4"
    linger_ms: int = 2
    # Partitions of topics the runtime creates; a tier scales out to at most this many workers.
    partitions: int = 3
    replication_factor: int = 1
    # Security of every client (runtime.kafka.security_properties maps these to librdkafka's
    # security.protocol, ssl.* and sasl.*). CA/certificate/key are PEM file paths; without a CA file the
    # system's CAs are trusted. On Kubernetes the secrets come from the tier Secret (KubernetesSettings).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None  # client certificate, for brokers that require mutual TLS
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True  # the broker's certificate must name the host in bootstrap
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # Raw librdkafka properties for every client, then per client kind (override the above).
    extra: dict[str, str] = Field(default_factory=dict)
    producer_extra: dict[str, str] = Field(default_factory=dict)
    consumer_extra: dict[str, str] = Field(default_factory=dict)

    def for_tier(self, tier: str) -> str:
        return self.tier_bootstrap.get(tier, self.bootstrap)

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        """Half a security configuration fails here, not as a broker refusing connections later."""
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and "
                             "sasl_password (TIERFLOW_KAFKA__SASL_*)")
        if not sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError(f"sasl_* settings are unused with security_protocol {self.security_protocol}: "
                             "choose SASL_SSL or SASL_PLAINTEXT")
        tls = self.ssl_ca_location or self.ssl_certificate_location or self.ssl_key_location or self.ssl_key_password
        if tls and not self.security_protocol.endswith("SSL"):
            raise ValueError(f"ssl_* settings are unused with security_protocol {self.security_protocol}: "
                             "choose SSL or SASL_SSL")
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            raise ValueError("a client certificate needs its key and the other way round (ssl_certificate_location, "
                             "ssl_key_location)")
        return self


class AdaptiveSettings(BaseModel):
    """Adaptive exits (`runtime.adaptive`, README "Adaptive exits"): a forwarding tier lowers its thresholds
    along the calibrated operating points while its upstream makes the p95 miss ``objective_ms``.

    Off (``objective_ms`` 0) by default: the objective belongs to one deployment's links and service level,
    and with it on a tier trades accuracy (down to the floor) for latency without being asked to.
    """

    objective_ms: float = 0.0  # end-to-end p95 objective; 0 = off, the calibrated thresholds always
    # Accuracy points below the final exit the tier may go (validation split); None = the bundle's floor.
    # Only a stricter floor than the bundle's has an effect: the curve stops at the bundle's.
    floor_points: float | None = None
    quantile: float = 0.95
    window_s: float = 10.0  # outcomes of forwarded requests judged over this window
    interval_s: float = 1.0  # the operating point moves at most this often
    max_step: int = 3  # operating points per move (except towards answering more on a slowdown, react_slow)
    hysteresis: float = 0.5  # return towards calibrated only with this share of the latency budget to spare
    min_samples: int = 10  # forwarded outcomes in the window needed before moving
    quiet_s: float = 30.0  # nothing forwarded for this long: calibrated again
    react_outcomes: int = 6  # latest known outcomes of forwards (late ones in flight included) ...
    react_slow: int = 3  # ... with this many misses: a slowdown, answered at once (no step bound, no interval)

    @model_validator(mode="after")
    def _check(self) -> AdaptiveSettings:
        p = "TIERFLOW_WORKER__ADAPTIVE__"
        problems = []
        if self.objective_ms < 0:
            problems.append(f"{p}OBJECTIVE_MS={self.objective_ms:g}: give the p95 objective in ms (> 0), or 0 for off")
        if self.floor_points is not None and not 0 <= self.floor_points <= 50:
            problems.append(f"{p}FLOOR_POINTS={self.floor_points:g}: give accuracy points from 0 to 50 below the "
                            "final exit (e.g. 2), or leave it unset for the bundle's floor")
        if not 0.5 <= self.quantile < 1:
            problems.append(f"{p}QUANTILE={self.quantile:g}: give the latency quantile as a fraction in [0.5, 1), "
                            "e.g. 0.95")
        for name in ("window_s", "interval_s", "quiet_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{p}{name.upper()}={getattr(self, name):g}: give seconds > 0")
        if self.interval_s > self.window_s:
            problems.append(f"{p}INTERVAL_S={self.interval_s:g} is longer than {p}WINDOW_S={self.window_s:g}: "
                            "move at most once per window")
        if self.max_step < 1:
            problems.append(f"{p}MAX_STEP={self.max_step}: give a whole number of operating points >= 1")
        if not 0 <= self.hysteresis < 1:
            problems.append(f"{p}HYSTERESIS={self.hysteresis:g}: give a fraction in [0, 1), e.g. 0.5")
        if self.min_samples < 1:
            problems.append(f"{p}MIN_SAMPLES={self.min_samples}: give a whole number >= 1")
        if not 1 <= self.react_slow <= self.react_outcomes:
            problems.append(f"{p}REACT_SLOW={self.react_slow} with {p}REACT_OUTCOMES={self.react_outcomes}: give a "
                            "whole number of misses from 1 to REACT_OUTCOMES (e.g. 3 of 6)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def enabled(self) -> bool:
        return self.objective_ms > 0


class WorkerSettings(BaseModel):
    """Tier worker tuning (micro-batching, deadlines, limits, HTTP port)."""

    max_batch: int = 64
    max_wait_ms: int = 5
    # Deadline given to a request whose client set none (tf-deadline); deadlines further ahead than
    # max_deadline_ms are clamped (a forwarding tier holds a request's offset until it is answered).
    default_deadline_ms: int = 2000
    max_deadline_ms: int = 60_000
    # Answer ownership (README "Who answers"): tier i of n publishes for a request only until
    # deadline + degrade_grace_ms * (n-1-i); a tier that forwarded and saw no answer by then answers
    # degraded. Must exceed the time an answer takes to reach the tier below on APP.results.
    degrade_grace_ms: int = 250
    # Values larger than this are dead-lettered; dead-letter copies are cut to dlq_max_bytes (below the
    # producer's and brokers' 1 MB message.max.bytes defaults).
    max_record_bytes: int = 4 * 1024 * 1024
    dlq_max_bytes: int = 256 * 1024
    # Answers remembered (read back from APP.results on start) so that a replayed record is not answered
    # twice: must exceed the longest outage of a tier plus max_deadline_ms.
    answer_memory_s: int = 600
    # On SIGTERM or a rebalance a worker waits this long at most for answers to what it forwarded (keep
    # it below the pod's termination grace); what is still open is replayed, harmlessly, by the next owner.
    drain_timeout_s: float = 20.0
    # Fault injection: shift this worker's clock by this many ms (tests of clock skew across sites).
    clock_skew_ms: int = 0
    # How often the consumer lag gauge is refreshed from librdkafka statistics (0 = off).
    lag_interval_ms: int = 5000
    # Activations between tiers: "float32" keeps decisions identical to the offline evaluation,
    # "float16" halves the bytes on each link (decisions near a threshold may then differ).
    activation_dtype: str = "float32"
    # Address the HTTP server (/healthz, /readyz, /metrics) binds; Kubernetes pods set $(POD_IP).
    http_host: str = "0.0.0.0"
    http_port: int = 9100
    # Serve this model version (default: the bundle manifest's version).
    version: str | None = None
    json_logs: bool = True
    log_level: str = "INFO"
    adaptive: AdaptiveSettings = Field(default_factory=AdaptiveSettings)


class S3Settings(BaseModel):
    endpoint_url: str | None = "http://127.0.0.1:8333"
    bucket: str = "tierflow"
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None  # temporary credentials (an assumed role's)


class MlflowSettings(BaseModel):
    tracking_uri: str = "http://127.0.0.1:5000"


class AirflowSettings(BaseModel):
    api_url: str = "http://127.0.0.1:8080"
    username: str = "admin"
    password: SecretStr | None = None


class PrometheusSettings(BaseModel):
    """The Prometheus server that scrapes the tier workers (the embedded stack starts one on loopback)."""

    # Not 9090: where Debian's package starts its own system service on machines with systemd.
    url: str = "http://127.0.0.1:19090"
    scrape_interval_s: float = 5.0
    # Retention of the embedded server's time series database.
    retention: str = "2d"


class TracingSettings(BaseModel):
    """OpenTelemetry spans per tier with W3C traceparent across tiers (runtime.tracing); off by default."""

    enabled: bool = False
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)  # of new traces; a traced parent's choice is followed
    exporter: Literal["otlp", "file"] = "otlp"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"  # OTLP over HTTP
    file: str | None = None  # exporter "file": JSON lines; "{tier}" is replaced; default $TIERFLOW_HOME/traces/


class AutoscalingSettings(BaseModel):
    """A KEDA ScaledObject per tier Deployment (plugins.rollout.autoscaling): the Kafka scaler on the tier's
    consumer group and input topic adds a replica per ``lag_threshold`` records of lag, between the tier's
    replicas (``k8s.replicas``) and ``max_replicas`` (at most ``kafka.partitions``: a consumer beyond the
    topic's partitions gets none and idles)."""

    enabled: bool = False
    lag_threshold: int = Field(100, ge=1)  # target lag per replica
    activation_lag_threshold: int = Field(0, ge=0)  # lag above which KEDA acts at all
    # Per tier, e.g. {"cloud": 6}; a tier not named may grow to kafka.partitions.
    max_replicas: dict[str, int] = Field(default_factory=dict)
    polling_interval_s: int = Field(15, ge=1)
    cooldown_s: int = Field(300, ge=0)
    # A TriggerAuthentication of your own (tier namespace) for the Kafka scaler. Unset, the rollout applies one
    # with the Secret references the tier pods use (k8s.kafka_secrets) when the broker needs credentials.
    trigger_authentication: str | None = None


class EdgeSite(BaseModel):
    """One edge site of a release (a factory, a cell): its own edge Deployment, on its own nodes, consuming
    ``APP.requests`` from its own brokers; every site forwards to the shared fog and cloud tiers."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$")  # part of Deployment names
    bootstrap: str  # the site's bootstrap servers (its broker or listener)
    # Labels of the site's nodes, e.g. {"site": "factory-a"}, required besides <node_label>=edge.
    node_selector: dict[str, str] = Field(default_factory=dict)


class TrainerPodSettings(BaseModel):
    """Where the pipeline's ML steps run with backend=kubernetes (plugins.pipeline.trainer_pod): the trainer
    image, on a node pool of its own, with its own resources; credentials only from the Secret
    ``k8s.secret_name`` (``k8s.secret_env``), and the worker command ``k8s.command``."""

    image: str = "ghcr.io/tierflow/tierflow-trainer:0.1.0"
    node_selector: dict[str, str] = Field(default_factory=lambda: {"tierflow.io/pool": "trainer"})
    # e.g. [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    cpu_request: str = "2"
    memory_request: str = "4Gi"
    cpu_limit: str = "4"
    memory_limit: str = "12Gi"
    gpus: int = Field(0, ge=0)  # nvidia.com/gpu per pod (requests = limits)
    startup_timeout_s: int = 600  # pending (scheduling, image pull) at most this long
    # Inputs and results of each step: s3://<s3.bucket>/<result_prefix>/<app>/<dag run>/<step>/
    result_prefix: str = "ml-steps"


class KubernetesSettings(BaseModel):
    """How the Kubernetes rollout backend builds tier Deployments (plugins.rollout.kubernetes)."""

    namespace: str = "tierflow"
    # Airflow connection (cncf-kubernetes); kube_config_path, when set, is used instead of it.
    conn_id: str | None = "kubernetes_default"
    kube_config_path: str | None = None
    image: str = "ghcr.io/tierflow/tierflow-tier:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    # Replaces argv[0] ("tierflow") of the worker command, e.g. an absolute path where no image runs.
    command: list[str] = Field(default_factory=lambda: ["tierflow"])
    service_account: str = "tierflow-tier"
    # Nodes of each pool carry the label <node_label>=<tier>; tier pools may be tainted the same way.
    node_label: str = "tier"
    tolerate_tier_taint: bool = True
    # Container env var -> key in the Kubernetes Secret `secret_name`, or "<secret>/<key>" in another Secret
    # (never literal values).
    secret_name: str = "tierflow-secrets"
    secret_env: dict[str, str] = Field(default_factory=lambda: {
        "TIERFLOW_S3__ACCESS_KEY_ID": "s3-access-key-id",
        "TIERFLOW_S3__SECRET_ACCESS_KEY": "s3-secret-access-key",
        "AWS_ACCESS_KEY_ID": "s3-access-key-id",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-access-key",
    })
    # Where the tier pods get each Kafka secret the kafka settings use: "<key>" of secret_name or
    # "<secret>/<key>". TLS files (ssl_ca_location, ssl_certificate_location, ssl_key_location) are mounted
    # read-only at kafka_tls_dir, passwords (sasl_password, ssl_key_password) are env by secretKeyRef.
    # Default keys of secret_name: kafka-ssl-ca, kafka-ssl-certificate, kafka-ssl-key, kafka-sasl-password,
    # kafka-ssl-key-password. Strimzi keeps the cluster CA and a KafkaUser's credentials in Secrets of their own.
    kafka_secrets: dict[Literal["ssl_ca_location", "ssl_certificate_location", "ssl_key_location", "sasl_password",
                                "ssl_key_password"], str] = Field(default_factory=dict)
    kafka_tls_dir: str = "/etc/tierflow/kafka-tls"
    cpu_request: str = "250m"
    memory_request: str = "512Mi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    run_as_user: int = 10001
    readiness_period_s: int = 2
    termination_grace_s: int = 30
    # A pod restarted this often while rolling out fails the rollout at once (no need to wait).
    max_restarts: int = 2
    # Seconds between one entry-tier pod of a stopped release leaving and the next (the entry tier's consumer
    # group outlives releases); 0 stops them together, which Kafka copes with. The embedded broker loses the group
    # for good (no member is assigned again) when the group's leader leaves while the group re-forms after another
    # member left, so where it runs, space them by more than a group's re-forming (the testbed: 10 s).
    entry_retire_interval_s: float = 0.0
    # Optional KubernetesPodOperator pod template file merged under the generated pod.
    pod_template_file: str | None = None
    # Plain env of every tierflow pod (tiers, trainer), e.g. a proxy; never secrets (see secret_env).
    extra_env: dict[str, str] = Field(default_factory=dict)
    # Replicas of each tier's Deployment, e.g. {"edge": 2, "cloud": 3}; a tier not named gets 1.
    replicas: dict[str, int] = Field(default_factory=dict)
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    # Edge sites: one edge Deployment per site (none: one edge Deployment on kafka.for_tier("edge")).
    edge_sites: list[EdgeSite] = Field(default_factory=list)
    trainer: TrainerPodSettings = Field(default_factory=TrainerPodSettings)

    @model_validator(mode="after")
    def _sites_are_distinct(self) -> KubernetesSettings:
        names = [s.name for s in self.edge_sites]
        if len(set(names)) != len(names):
            raise ValueError(f"TIERFLOW_K8S__EDGE_SITES names a site twice: {names}")
        return self

    def replicas_for(self, tier: str) -> int:
        return self.replicas.get(tier, 1)

    def max_replicas_for(self, tier: str, partitions: int) -> int:
        return self.autoscaling.max_replicas.get(tier, partitions)


class StackSettings(BaseModel):
    """The embedded local stack (`tierflow stack up`): its extra listeners and timeouts.

    The main ports come from the service URLs above (kafka.bootstrap, s3.endpoint_url,
    mlflow.tracking_uri, airflow.api_url, prometheus.url). SeaweedFS opens more listeners; each is a port here,
    0 meaning "a free loopback port chosen at start" (recorded in the stack state). Airflow runs without its
    log servers (infra.local.airflow_standalone), so it has no listener beyond its API server.
    """

    services: list[str] = Field(default_factory=lambda: ["broker", "s3", "mlflow", "airflow", "prometheus"])
    # weed mini: master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, admin, admin_grpc.
    weed_ports: dict[str, int] = Field(default_factory=dict)
    airflow_parallelism: int = 4
    # Artifacts of the MLflow server go to s3://<s3.bucket>/<mlflow_artifacts_prefix>.
    mlflow_artifacts_prefix: str = "mlflow"
    startup_timeout_s: float = 180.0


class IngestSettings(BaseModel):
    """Kafka training topic -> dataset shards in S3 (plugins.ingest)."""

    group_id: str = "tierflow-ingest"
    prefix: str = "datasets"  # s3://<bucket>/<prefix>/<app>/...
    shard_records: int = 2048  # records per shard; shards are aligned to offset blocks of this size
    upload_concurrency: int = 2  # shard uploads in flight while consuming goes on (commits stay in order)
    idle_timeout_s: float = 3.0  # a run ends when no record arrived for this long
    max_records: int = 0  # 0 = until the topic is drained
    # zlib-compressed NPZ shards: ~0.6x the bytes for Fashion-MNIST, but zlib runs at a fraction of the
    # consume rate on small machines; off by default (same reader either way).
    compress: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=str(default_home() / "stack.env"),
        extra="ignore",
        hide_input_in_errors=True,
    )

    app: str = "fmnist"
    home: Path = Field(default_factory=default_home)
    # Python interpreter of the ML environment, used by Airflow's external-python tasks.
    ml_python: str | None = None
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    k8s: KubernetesSettings = Field(default_factory=KubernetesSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)

    @model_validator(mode="after")
    def _replicas_fit_partitions(self) -> Settings:
        """More consumers in a group than its topic has partitions idle: say so before a rollout starts."""
        parts, ks = self.kafka.partitions, self.k8s
        problems = []
        for tier, n in sorted(ks.replicas.items()):
            if not 1 <= n <= parts:
                problems.append(f"TIERFLOW_K8S__REPLICAS {tier}={n}: give 1 to TIERFLOW_KAFKA__PARTITIONS={parts}")
        for tier, n in sorted(ks.autoscaling.max_replicas.items()):
            if not ks.replicas_for(tier) <= n <= parts:
                problems.append(f"TIERFLOW_K8S__AUTOSCALING__MAX_REPLICAS {tier}={n}: give "
                                f"{ks.replicas_for(tier)} (the tier's replicas) to TIERFLOW_KAFKA__PARTITIONS={parts}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def topic(self, kind: str) -> str:
        """Topic of the data-plane contract: requests, results, dlq, training, feedback."""
        return contract.topic(self.app, kind)

    def link_topic(self, version: str | int, src: str, dst: str) -> str:
        return contract.link_topic(self.app, version, src, dst)

    def at_site(self, site: EdgeSite) -> Settings:
        """These settings as seen at one edge site: its edge workers consume, and its devices send, on the
        site's brokers; results, fog and cloud stay where they are."""
        edge = contract.TIERS[0]
        kafka = self.kafka.model_copy(update={"tier_bootstrap": {**self.kafka.tier_bootstrap, edge: site.bootstrap}})
        return self.model_copy(update={"kafka": kafka})


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """TIERFLOW_* variables that reproduce `settings` in a child process (worker, ingest, Airflow task).

    Secrets are included in clear text: pass the result as a process environment, never log it.
    Fields set to None are left out (the child then falls back to its own default).
    """
    out: dict[str, str] = {}

    def walk(name: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for field in type(value).model_fields:
                walk(f"{name}__{field.upper()}", getattr(value, field))
        elif value is None:
            return
        elif isinstance(value, SecretStr):
            out[name] = value.get_secret_value()
        elif isinstance(value, dict | list):  # of plain values or models (e.g. k8s.edge_sites)
            out[name] = json.dumps(to_jsonable_python(value))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)

    for field in type(settings).model_fields:
        walk(f"{ENV_PREFIX}{field.upper()}", getattr(settings, field))
    return out
