"""Strict offline validation of custom resources against their CRDs' openAPI schemas (vendored in crds/).

The API server prunes unknown fields of a custom resource silently, so a misspelt field would simply not
take effect; here every object schema that lists its properties rejects any other (what the API server's
strict field validation does), and ``metadata`` is checked as a Kubernetes ObjectMeta.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

CRDS = Path(__file__).resolve().parent / "crds"
# The keys KEDA's Kafka scaler reads from a trigger's metadata (pkg/scalers/kafka_scaler.go, KEDA v2.20.2,
# tags with order=triggerMetadata; the *FromEnv forms are its resolvedEnv lookups). See crds/README.md.
KAFKA_TRIGGER_METADATA = frozenset((
    "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "version", "tls", "unsafeSsl", "sasl",
    "saslTokenProvider", "awsRegion", "bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv"))


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def _schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict schema, for every served version of every vendored CRD."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served"):
                out[(f"{group}/{v['name']}", kind)] = _strict(v["schema"]["openAPIV3Schema"])
    return out


def crd_problems(manifest: dict, k8s_version: str = "1.29") -> list[str]:
    """Why ``manifest`` is not a valid instance of its vendored CRD (empty: valid)."""
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    schema = _schemas().get(key)
    if schema is None:
        return [f"no vendored CRD serves {key[0]} {key[1]} (tests/k8s/crds)"]
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in validator.iter_errors(manifest)]
    meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": copy.deepcopy(manifest.get("metadata", {}))}
    try:
        kubernetes_validate.validate(meta, desired_version=k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        problems.append(f"metadata: {e.message}")
    if key[1] == "ScaledObject":
        spec = manifest.get("spec", {})
        # the CRD's x-kubernetes-validations rule (CEL, which jsonschema does not run)
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            problems.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
        for trig in spec.get("triggers", []):
            if trig.get("type") == "kafka":
                unknown = sorted(set(trig.get("metadata", {})) - KAFKA_TRIGGER_METADATA)
                if unknown:
                    problems.append(f"spec/triggers: the Kafka scaler does not read metadata {unknown}")
    return problems
