"""The Kafka cluster as an Airflow hook: the apache-kafka provider's `KafkaBaseHook`.

Connection ``tierflow_kafka`` (type ``kafka``): extra = a librdkafka config dict, e.g.
``{"bootstrap.servers": "broker:9092", "security.protocol": "SASL_SSL", ...}``. Its properties are laid
over ``Settings.kafka`` (bootstrap servers, raw client properties), so the runtime's client configs
(`runtime.kafka`) stay the one place that builds producers and consumers. Without it, ``Settings.kafka``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook

from plugins.hooks.base import fallback_settings, find_connection

# Properties tierflow sets per client itself; a Connection's values for them are not used.
_PER_CLIENT = {"group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset"}


class KafkaClusterHook(KafkaBaseHook):
    default_conn_name = "tierflow_kafka"
    hook_name = "tierflow Kafka cluster"

    def __init__(self, kafka_config_id: str | None = default_conn_name, *, settings: Any = None) -> None:
        super().__init__(kafka_config_id=kafka_config_id)
        self.settings = fallback_settings(settings)

    def client_settings(self) -> Any:
        """Settings whose ``kafka`` section points at the Connection's cluster (or the settings unchanged)."""
        if find_connection(self.kafka_config_id) is None:
            return self.settings
        config = {k: v for k, v in self._build_config().items() if k not in _PER_CLIENT}
        kafka = self.settings.kafka.model_copy(update={
            "bootstrap": config.pop("bootstrap.servers"), "tier_bootstrap": {},
            "extra": {**self.settings.kafka.extra, **config}})
        return self.settings.model_copy(update={"kafka": kafka})

    def test_connection(self) -> tuple[bool, str]:
        if find_connection(self.kafka_config_id) is not None:
            return super().test_connection()
        from confluent_kafka.admin import AdminClient

        from runtime.kafka import admin_config

        try:
            AdminClient(admin_config(self.settings)).list_topics(timeout=10)
        except Exception as exc:  # noqa: BLE001 - reported to the UI as text
            return False, str(exc)
        return True, f"Kafka at {self.settings.kafka.bootstrap} answers"
