"""confluent-kafka client configurations built from Settings, and topic creation.

Broker quirks (e.g. the embedded broker answering a waiting fetch only at fetch.wait.max.ms) live in
`Settings.kafka`, never in logic, so the same code runs unchanged against Apache Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ml.contract import TOPIC_KINDS
from runtime.settings import KafkaSettings, Settings


class KafkaSecurityError(RuntimeError):
    """The broker and this client disagree on TLS or SASL; retrying will not help (the message says what to check)."""


def security_properties(k: KafkaSettings) -> dict[str, Any]:
    """librdkafka's security.protocol, ssl.* and sasl.* from the typed settings. The result holds secrets in
    clear text: hand it to a client, never log it."""
    props: dict[str, Any] = {"security.protocol": k.security_protocol.lower()}
    if k.security_protocol.endswith("SSL"):
        for key, path in (("ssl.ca.location", k.ssl_ca_location), ("ssl.certificate.location",
                          k.ssl_certificate_location), ("ssl.key.location", k.ssl_key_location)):
            if path:
                if not Path(path).is_file():
                    raise KafkaSecurityError(f"{key} {path} is not a readable file "
                                             f"(TIERFLOW_KAFKA__{key.replace('.', '_').upper()})")
                props[key] = path
        if k.ssl_key_password is not None:
            props["ssl.key.password"] = k.ssl_key_password.get_secret_value()
        props["ssl.endpoint.identification.algorithm"] = "https" if k.ssl_check_hostname else "none"
    if k.security_protocol.startswith("SASL_"):
        props["sasl.mechanism"] = k.sasl_mechanism
        props["sasl.username"] = k.sasl_username
        props["sasl.password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    return props


def _common(settings: Settings, bootstrap: str | None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap or settings.kafka.bootstrap, **security_properties(settings.kafka),
            **settings.kafka.extra}


def producer_config(settings: Settings, bootstrap: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all producer: a retried send never duplicates a record on the broker."""
    k = settings.kafka
    conf = {
        **_common(settings, bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": k.compression,
        "linger.ms": k.linger_ms,
        **k.producer_extra,
    }
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, bootstrap: str | None = None,
                    **overrides: Any) -> dict[str, Any]:
    """Manual-commit consumer (commit after the results are flushed: at-least-once)."""
    k = settings.kafka
    conf = {
        **_common(settings, bootstrap),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": k.fetch_wait_max_ms,
        "fetch.queue.backoff.ms": k.fetch_queue_backoff_ms,
        "session.timeout.ms": k.session_timeout_ms,
        "heartbeat.interval.ms": k.heartbeat_interval_ms,
        "enable.partition.eof": False,
        **k.consumer_extra,
    }
    conf.update(overrides)
    return conf


def admin_config(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    return _common(settings, bootstrap)


def ensure_topics(settings: Settings, topics: Iterable[str], bootstrap: str | None = None,
                  partitions: int | None = None, timeout_s: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created. Idempotent."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    errors: list = []
    admin = AdminClient({**admin_config(settings, bootstrap), "error_cb": errors.append})
    wanted = sorted(set(topics))
    existing = set(_list_topics(admin, errors, bootstrap or settings.kafka.bootstrap, timeout_s))
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    n = partitions or settings.kafka.partitions
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=n, replication_factor=settings.kafka.replication_factor) for t in missing],
        operation_timeout=timeout_s, request_timeout=timeout_s)
    created = []
    for topic, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return sorted(created)


def _list_topics(admin: Any, errors: list, bootstrap: str, timeout_s: float) -> dict:
    """The cluster's topics; a TLS or SASL failure ends the wait at once, as a KafkaSecurityError that says
    what the broker and this client disagree on (a retry would only fail the same way)."""
    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic()))).topics
        except KafkaException:
            admin.poll(0)  # serves error_cb
            refused = [e for e in errors if e.code() in (KafkaError._SSL, KafkaError._AUTHENTICATION)]
            if refused:
                raise KafkaSecurityError(
                    f"{bootstrap} refused this client: {refused[0].str()}; check TIERFLOW_KAFKA__SECURITY_PROTOCOL, "
                    "TIERFLOW_KAFKA__SSL_CA_LOCATION (and the client certificate) or TIERFLOW_KAFKA__SASL_*") from None
            if time.monotonic() >= deadline:
                raise


def app_topics(settings: Settings) -> list[str]:
    """The version-independent topics of the data-plane contract."""
    return [settings.topic(kind) for kind in TOPIC_KINDS]


def link_topics(settings: Settings, version: str, tiers: list[str]) -> list[str]:
    """Activation topics between consecutive tiers of one model version."""
    return [settings.link_topic(version, a, b) for a, b in zip(tiers, tiers[1:], strict=False)]
