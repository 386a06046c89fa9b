"""The embedded broker starts, speaks Kafka, and stops with nothing left behind."""

from __future__ import annotations

import os

import pytest

from runtime.broker import BrokerError, EmbeddedBroker, port_open
from runtime.kafka import consumer_config, ensure_topics, producer_config

pytestmark = pytest.mark.integration


def test_broker_round_trip_and_clean_stop(tmp_path):
    from confluent_kafka import Consumer, Producer

    from runtime.settings import KafkaSettings, Settings

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        settings = Settings(app="rt", kafka=KafkaSettings(bootstrap=broker.bootstrap))
        assert ensure_topics(settings, ["rt.x"]) == ["rt.x"]
        assert ensure_topics(settings, ["rt.x"]) == []  # idempotent
        producer = Producer(producer_config(settings))
        producer.produce("rt.x", key=b"k", value=b"hello", headers=[("tf-request-id", b"r1")])
        assert producer.flush(10) == 0
        consumer = Consumer(consumer_config(settings, "g1"))
        consumer.subscribe(["rt.x"])
        msg = None
        for _ in range(100):
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                break
        consumer.close()
        assert msg is not None and msg.value() == b"hello"
        assert dict(msg.headers())["tf-request-id"] == b"r1"
        pid, port = broker.pid, broker.port
    assert not port_open("127.0.0.1", port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_fixed_port_in_use_is_a_clear_error(kafka_bootstrap):
    host, port = kafka_bootstrap.rsplit(":", 1)
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(host=host, port=int(port)).start()
