"""confluent-kafka client configurations built from Settings, and topic creation.

Broker quirks (e.g. the embedded broker answering a waiting fetch only at fetch.wait.max.ms) live in
`Settings.kafka`, never in logic, so the same code runs unchanged against Apache Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ml.contract import TOPIC_KINDS
from runtime.settings import Settings


def _common(settings: Settings, bootstrap: str | None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap or settings.kafka.bootstrap, **settings.kafka.extra}


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

    admin = AdminClient(admin_config(settings, bootstrap))
    wanted = sorted(set(topics))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
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


def app_topics(settings: Settings) -> list[str]:
    """The version-independent topics of the data-plane contract."""
    return [settings.topic(kind) for kind in TOPIC_KINDS]


def link_topics(settings: Settings, version: str, tiers: list[str]) -> list[str]:
    """Activation topics between consecutive tiers of one model version."""
    return [settings.link_topic(version, a, b) for a, b in zip(tiers, tiers[1:], strict=False)]
