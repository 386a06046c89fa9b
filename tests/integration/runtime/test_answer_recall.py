"""A restarting tier recalls the answers on APP.results before it consumes, also while answers keep arriving."""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Producer

from runtime import codec
from runtime.answers import AnswerWatch
from runtime.kafka import ensure_topics, producer_config
from runtime.metrics import WorkerMetrics
from runtime.ownership import AnswerMemory, PendingForwards, TierClock
from runtime.settings import KafkaSettings, Settings


def test_recall_ends_at_what_the_topic_held_at_start_while_answers_keep_coming(kafka_bootstrap):
    settings = Settings(app=f"recall{uuid.uuid4().hex[:8]}", kafka=KafkaSettings(bootstrap=kafka_bootstrap))
    topic = settings.topic("results")
    ensure_topics(settings, [topic])
    producer = Producer(producer_config(settings))
    for i in range(3000):  # answered before the restart
        producer.produce(topic, key=f"old-{i}", value=b"{}", headers=[(codec.ENTRY, f"0/{i}".encode())])
    producer.flush(30)

    stop = threading.Event()

    def steady_answers() -> None:  # other tiers keep answering while this one starts: no fetch comes back empty
        i = 0
        while not stop.is_set():
            producer.produce(topic, key=f"new-{i}", value=b"{}")
            producer.poll(0)
            i += 1
            time.sleep(0.005)
        producer.flush(30)

    load = threading.Thread(target=steady_answers, daemon=True)
    load.start()
    time.sleep(1)
    memory = AnswerMemory()
    watch = AnswerWatch(settings, "fog", "1", memory, PendingForwards(), TierClock(), WorkerMetrics("fog", "1"))
    t0 = time.monotonic()
    try:
        watch.start()
        took = time.monotonic() - t0
    finally:
        stop.set()
        load.join(30)
        watch.close()
    assert watch.recalled
    assert all(f"old-{i}" in memory for i in range(3000))
    assert memory.entry_of("old-7") == "0/7"
    assert took < 30, f"recall took {took:.1f} s under steady answers (it used to run into its 120 s cap)"


def test_the_read_barrier_sees_every_answer_on_the_broker_before_it_however_slow_the_fetches(kafka_bootstrap):
    """A tier about to answer degraded must know of an upper tier's answer already on the broker, even when
    its own fetches lag (here each waits 600 ms at the broker, as a starved or distant tier's would)."""
    settings = Settings(app=f"barrier{uuid.uuid4().hex[:8]}", kafka=KafkaSettings(
        bootstrap=kafka_bootstrap, fetch_wait_max_ms=600, consumer_extra={"fetch.min.bytes": "10000000"}))
    topic = settings.topic("results")
    ensure_topics(settings, [topic])
    memory = AnswerMemory()
    watch = AnswerWatch(settings, "edge", "1", memory, PendingForwards(), TierClock(), WorkerMetrics("edge", "1"))
    watch.start()
    producer = Producer(producer_config(settings))
    try:
        for round_ in range(5):
            time.sleep(0.3)  # a fetch is waiting at the broker
            ids = [f"up-{round_}-{i}" for i in range(20)]
            for rid in ids:
                producer.produce(topic, key=rid, value=b"{}", headers=[(codec.ENTRY, f"0/{rid}".encode())])
            assert producer.flush(10) == 0
            acknowledged, give_up = watch.clock.now(), time.monotonic() + 10
            while (seen_until := watch.barrier()) is None or seen_until < acknowledged:  # never blocks: call again
                assert time.monotonic() < give_up, "no read barrier passed within 10 s"
                time.sleep(0.002)
            assert [rid for rid in ids if rid not in memory] == []
    finally:
        watch.close()
