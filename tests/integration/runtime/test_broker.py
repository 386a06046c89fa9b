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


class _Member:
    """A group consumer that remembers its assignments and, from librdkafka's group log, the group's leader."""

    def __init__(self, settings, group: str, topic: str, name: str):
        import logging
        import re

        from confluent_kafka import Consumer

        member = self
        self.assignments: list[list[int]] = []
        self.leader: str | None = None

        class GroupLog(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if found := re.search(r"LeaderId (\S+), my MemberId", record.getMessage()):
                    member.leader = found.group(1).rstrip(",")

        log = logging.getLogger(f"tierflow.test.group.{name}")
        log.addHandler(GroupLog())
        log.propagate = False
        log.setLevel(logging.DEBUG)
        self.consumer = Consumer(consumer_config(settings, group, **{"client.id": name, "debug": "cgrp",
                                                                        "logger": log}))
        self.consumer.subscribe([topic], on_assign=lambda c, ps: self.assignments.append([p.partition for p in ps]))

    def poll(self) -> None:
        self.consumer.poll(0.05)


def _settle(members: list[_Member], partitions: int, timeout_s: float = 60.0) -> None:
    """Poll until every member was assigned since the call and together they hold every partition."""
    import time

    seen = [len(m.assignments) for m in members]
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        for m in members:
            m.poll()
        if all(len(m.assignments) > n for m, n in zip(members, seen, strict=True)) and \
                sorted(p for m in members for p in m.assignments[-1]) == list(range(partitions)):
            return
    raise AssertionError(f"group not re-formed within {timeout_s:g} s: {[m.assignments for m in members]}")


def _leader_first_of(members: list[_Member]) -> list[_Member]:
    """The members with the group's leader (as the last JoinGroup response named it) first."""
    named = {m.leader for m in members} - {None}
    assert len(named) == 1, [m.leader for m in members]
    leader = named.pop()
    return sorted(members, key=lambda m: m.consumer.memberid() != leader)


def _settled_group(kafka_settings) -> list[_Member]:
    """Three members of one group on a 3-partition topic, settled, the leader first."""
    topic = kafka_settings.topic("group")
    ensure_topics(kafka_settings, [topic], partitions=3)
    group = f"{kafka_settings.app}.g"
    members = [_Member(kafka_settings, group, topic, f"m{i}") for i in range(3)]
    _settle(members, 3)
    return _leader_first_of(members)


def test_consumer_group_survives_its_leader_leaving_after_it_re_formed(kafka_settings):
    """Members that leave one at a time, each after the group re-formed, leave a working group, also when the
    leader leaves: what stopping the entry tier's pods one at a time (``k8s.entry_retire_interval_s``) relies on."""
    leader, *others = _settled_group(kafka_settings)
    others[0].consumer.close()  # a member leaves; the leader stays and the group re-forms
    _settle([leader, others[1]], 3)
    leader.consumer.close()  # then the leader leaves: the last member takes every partition
    _settle([others[1]], 3)
    others[1].consumer.close()


@pytest.mark.skipif(bool(os.environ.get("TIERFLOW_TEST_KAFKA")), reason="a quirk of the embedded broker")
def test_embedded_broker_loses_a_group_whose_leader_leaves_while_it_re_forms(kafka_settings):
    """The embedded broker keeps a departed leader while the group re-forms: no member is assigned again, ever
    (the remaining members' JoinGroup responses name the gone leader, SyncGroup answers "rebalance in
    progress"). Kafka's coordinator elects a new leader. When this fails the broker was fixed, and the testbed no
    longer needs ``k8s.entry_retire_interval_s``."""
    import time

    leader, *others = _settled_group(kafka_settings)
    gone = leader.consumer.memberid()
    others[0].consumer.close()  # a member leaves, and the leader leaves before the group re-formed
    leader.consumer.close()
    last, assigned = others[1], len(others[1].assignments)
    give_up = time.monotonic() + 30  # five session timeouts
    while time.monotonic() < give_up:
        last.poll()
    assert last.assignments[assigned:] == [], last.assignments
    assert last.leader == gone
    last.consumer.close()
