"""Kafka clients for tasks, built from Settings (the broker quirks live in Settings.kafka, not here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runtime.settings import Settings


class KafkaHook:
    def __init__(self, settings: Settings):
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaHook:
        return cls(settings)

    def get_conn(self) -> str:
        return self.settings.kafka.bootstrap

    def producer(self, **overrides: Any) -> Any:
        """Idempotent acks=all producer (runtime.kafka.producer_config)."""
        from confluent_kafka import Producer

        from runtime.kafka import producer_config

        return Producer(producer_config(self.settings, **overrides))

    def consumer(self, group_id: str, **overrides: Any) -> Any:
        """Manual-commit consumer (runtime.kafka.consumer_config): commit after the work is durable."""
        from confluent_kafka import Consumer

        from runtime.kafka import consumer_config

        return Consumer(consumer_config(self.settings, group_id, **overrides))

    def ensure_topics(self, kinds: Iterable[str] = ("training", "dlq")) -> list[str]:
        """Create the application's topics of these kinds if missing; returns the ones created."""
        from runtime.kafka import ensure_topics

        return ensure_topics(self.settings, [self.settings.topic(k) for k in kinds])
