"""A KEDA ScaledObject per tier Deployment: replicas follow the consumer lag of the tier's group.

The scaler is KEDA's Kafka scaler on exactly what the tier worker consumes (`runtime.route`): the shared
entry group on ``APP.requests`` for the edge, the version's group on its link topic for fog and cloud, on
the bootstrap servers the tier consumes from. One ScaledObject per Deployment, because every version's
tiers are their own Deployments (the version-consistent rollout runs two side by side).

The replica range is the tier's replicas (``k8s.replicas``, never scaled below: the edge must keep
answering) up to ``autoscaling.max_replicas``, which settings cap at ``kafka.partitions``, the partition
count the runtime gives the topics it creates and the production overlay gives its Strimzi KafkaTopics:
a consumer beyond a topic's partitions would get none (KEDA's ``allowIdleConsumers`` stays off).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from plugins.rollout.base import Release, TierWorkerSpec
from runtime.route import plan_route
from runtime.settings import Settings

KEDA_GROUP = "keda.sh"
KEDA_VERSION = "v1alpha1"
SCALED_OBJECTS = "scaledobjects"
TRIGGER_AUTHENTICATIONS = "triggerauthentications"
# librdkafka security.protocol / sasl.mechanism -> the KEDA Kafka scaler's `tls` and `sasl` metadata.
_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


def scaled_object(settings: Settings, release: Release, spec: TierWorkerSpec, *, name: str,
                  labels: Mapping[str, str], bootstrap: str | None = None,
                  authentication: str | None = None) -> dict[str, Any]:
    """The ScaledObject for the Deployment ``name`` running ``spec`` (``bootstrap``: the servers its
    workers consume from, default the tier's; ``authentication``: the TriggerAuthentication of the scaler,
    `plugins.rollout.kubernetes.kafka_scaler_authentication`)."""
    k, ks = settings.kafka, settings.k8s
    route = plan_route(settings, spec.tier, release.version, [s.tier for s in release.tiers])
    meta = {
        "bootstrapServers": bootstrap or k.for_tier(spec.tier),
        "consumerGroup": route.group_id,
        "topic": route.in_topic,
        "lagThreshold": str(ks.autoscaling.lag_threshold),
        "activationLagThreshold": str(ks.autoscaling.activation_lag_threshold),
        "offsetResetPolicy": "earliest",  # what the workers' consumers do without a committed offset
    }
    if k.security_protocol.endswith("SSL"):
        meta["tls"] = "enable"
    if k.sasl_mechanism:
        meta["sasl"] = _SASL[k.sasl_mechanism]
    trigger: dict[str, Any] = {"type": "kafka", "name": "consumer-lag", "metadata": meta}
    if authentication:
        trigger["authenticationRef"] = {"name": authentication}
    return {
        "apiVersion": f"{KEDA_GROUP}/{KEDA_VERSION}",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": ks.namespace, "labels": dict(labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": spec.replicas,
            "maxReplicaCount": ks.max_replicas_for(spec.tier, k.partitions),
            "pollingInterval": ks.autoscaling.polling_interval_s,
            "cooldownPeriod": ks.autoscaling.cooldown_s,
            "triggers": [trigger],
        },
    }


def scaling_problems(scaled_objects: Iterable[Mapping[str, Any]], partitions: Mapping[str, int]) -> list[str]:
    """What is wrong between ScaledObjects and the partition counts of their topics (``partitions``:
    topic name -> partitions, e.g. from Strimzi KafkaTopics): a cap above the partitions, a topic with no
    known partitions, a floor above the cap (KEDA's own admission rule)."""
    problems = []
    for so in scaled_objects:
        name, spec = so["metadata"]["name"], so["spec"]
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if low > high:
            problems.append(f"ScaledObject {name}: minReplicaCount {low} > maxReplicaCount {high}")
        for trig in spec["triggers"]:
            if trig["type"] != "kafka":
                continue
            topic = trig["metadata"].get("topic")
            if topic not in partitions:
                problems.append(f"ScaledObject {name}: topic {topic!r} has no KafkaTopic with a partition count")
            elif high > partitions[topic]:
                problems.append(f"ScaledObject {name}: maxReplicaCount {high} > {partitions[topic]} partitions of "
                                f"{topic}; the replicas beyond them would idle")
    return problems
