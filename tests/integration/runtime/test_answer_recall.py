"""A restarting tier recalls the answers (APP.results) and replies (APP.replies) before it consumes, also while
answers keep arriving; the entry tier publishes the first reply to a forward it holds, and no later one."""

from __future__ import annotations

import threading
import time
import uuid

from confluent_kafka import Producer

from runtime import codec
from runtime.answers import AnswerWatch
from runtime.kafka import ensure_topics, producer_config
from runtime.ledger import CommitLedger
from runtime.metrics import WorkerMetrics
from runtime.ownership import AnswerMemory, Pending, PendingForwards, TierClock
from runtime.settings import KafkaSettings, Settings


def test_recall_ends_at_what_the_topic_held_at_start_while_answers_keep_coming(kafka_bootstrap):
    settings = Settings(app=f"recall{uuid.uuid4().hex[:8]}", kafka=KafkaSettings(bootstrap=kafka_bootstrap))
    topic, replies = settings.topic("results"), settings.topic("replies")
    ensure_topics(settings, [topic, replies])
    producer = Producer(producer_config(settings))
    for i in range(3000):  # answered before the restart
        producer.produce(topic, key=f"old-{i}", value=b"{}", headers=[(codec.ENTRY, f"0/{i}".encode())])
    for i in range(5):  # answered above, not yet published: the request will be consumed again after the restart
        producer.produce(replies, key=f"early-{i}", value=b'{"early": true}')
    producer.produce(replies, key="old-9", value=b"{}")  # a reply to a request answered already
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
    watch = AnswerWatch(settings, "edge", "1", memory, PendingForwards(), TierClock(), WorkerMetrics("edge", "1"),
                        entry=True)
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
    assert [watch.take_early(f"early-{i}").value() for i in range(5)] == [b'{"early": true}'] * 5
    assert watch.take_early("early-0") is None  # taken: it is published once
    assert took < 30, f"recall took {took:.1f} s under steady answers (it used to run into its 120 s cap)"


def test_the_entry_tier_publishes_the_first_reply_to_a_forward_it_holds_and_no_later_one(kafka_bootstrap):
    """A forward held by the entry tier is resolved by the first reply on APP.replies (the cloud's here); the
    fog's degraded reply to the same request, later, is not published: one decision, in one process."""
    settings = Settings(app=f"replies{uuid.uuid4().hex[:8]}", kafka=KafkaSettings(bootstrap=kafka_bootstrap))
    ensure_topics(settings, [settings.topic("results"), settings.topic("replies")])
    memory, pending, ledger = AnswerMemory(), PendingForwards(), CommitLedger()
    watch = AnswerWatch(settings, "edge", "1", memory, pending, TierClock(), WorkerMetrics("edge", "1"), entry=True)
    published: list[tuple[str, bytes]] = []

    def publish(p: Pending, reply) -> None:  # what the worker's outputs do: publish, and remember it answered
        published.append((p.request_id, reply.value()))
        memory.add(p.request_id, p.entry)

    watch.on_reply = publish
    watch.start()
    producer = Producer(producer_config(settings))
    try:
        batch = ledger.open(2)
        for rid in ("r-1", "r-2"):
            pending.add(Pending(rid, 10**13, 3, 0.4, 0, None, None, 0, f"0/{rid}", batch))
            batch.unresolved += 1
        for rid, body in (("r-1", b"cloud"), ("r-1", b"fog degraded"), ("r-2", b"fog"), ("r-3", b"another's")):
            producer.produce(settings.topic("replies"), key=rid, value=body)
            assert producer.flush(10) == 0
        give_up = time.monotonic() + 10
        while len(published) < 2 or time.monotonic() < give_up - 8:  # and a while longer: nothing else comes
            assert time.monotonic() < give_up, f"replies not seen: {published}"
            watch.poll(True)
            time.sleep(0.01)
        assert published == [("r-1", b"cloud"), ("r-2", b"fog")]
        assert batch.unresolved == 0 and len(pending) == 0
        assert watch.take_early("r-3").value() == b"another's"  # not held here (yet): kept, not published
    finally:
        watch.close()
