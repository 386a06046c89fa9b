"""Answers on APP.results as one tier sees them: the answer memory, and the forwards they resolve.

Every tier reads every answer (a small JSON record per request). On start the memory is recalled from the
topic over the last ``worker.answer_memory_s`` *before* the tier consumes any input, so a record replayed
after a crash or a rebalance is known to be answered; afterwards each answer also resolves the tier's
pending forward of that request, if any, so the fallback does not fire and the batch can be committed.
The top tier forwards nothing, so it only recalls at start (its own answers keep its memory current) and
does not read every answer over what may be a WAN link.

Before a tier answers degraded it passes a read barrier (`AnswerWatch.barrier`): it asks the broker for the
topic's high watermarks and reads up to them, so every answer on the broker when the barrier began is seen,
however late this tier's fetches are (a starved process, a slow link).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from runtime import codec
from runtime.kafka import admin_config, consumer_config
from runtime.metrics import WorkerMetrics
from runtime.ownership import AnswerMemory, Pending, PendingForwards, TierClock
from runtime.settings import Settings

log = logging.getLogger("tierflow.worker")

POLL_INTERVAL_S = 0.005
BARRIER_INTERVAL_S = 0.02  # at most this often a new read barrier (degraded answers wait for the next one)
BARRIER_TIMEOUT_S = 30.0  # a barrier not passed by then is given up and asked again


class AnswerWatch:
    def __init__(self, settings: Settings, tier: str, version: str, memory: AnswerMemory,
                 pending: PendingForwards, clock: TierClock, metrics: WorkerMetrics, follow: bool = True):
        self.settings, self.tier, self.version, self.follow = settings, tier, version, follow
        self.memory, self.pending, self.clock, self.metrics = memory, pending, clock, metrics
        self.topic = settings.topic("results")
        self.recalled = False
        self.on_resolved: Callable[[Pending], None] | None = None  # each forward an answer resolves (adaptive exits)
        self._consumer: Any = None
        self._admin: Any = None  # asks for the high watermarks on a connection of its own: the consumer's
        # requests queue behind its waiting fetch, at the broker as in the client
        self._looked = 0.0  # time.monotonic() of the last look at the topic
        self._next: dict[int, int] = {}  # partition -> offset of the next answer to take in
        # The read barrier in progress: (tier clock ms when asked, high-watermark futures, time.monotonic()), the
        # watermarks once known, and the newest barrier passed (`barrier`).
        self._asked: tuple[int, dict, float] | None = None
        self._watermarks: dict[int, int] | None = None
        self._seen_until: int | None = None
        self._barrier_started = self._barrier_failed_logged = 0.0

    def start(self) -> None:
        """Recall the answers of the last ``worker.answer_memory_s``, then keep following the topic."""
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        t0, memory_s = time.monotonic(), self.settings.worker.answer_memory_s
        group = f"{self.settings.app}.v{self.version}.{self.tier}.watch.{uuid.uuid4().hex[:12]}"  # never committed
        self._consumer = c = Consumer(consumer_config(self.settings, group))
        parts = sorted(c.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
        if memory_s > 0:
            since = self.clock.local() - memory_s * 1000
            found = c.offsets_for_times([TopicPartition(self.topic, p, since) for p in parts], timeout=10)
        else:
            found = [TopicPartition(self.topic, p, OFFSET_END) for p in parts]
        assignment = [TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                      for tp in found]
        ends = self._high_watermarks(c, parts)  # what the topic held when the recall began: read up to there
        todo = {tp.partition for tp in assignment if ends is None or 0 <= tp.offset < ends[tp.partition]}
        self._next = {tp.partition: tp.offset if tp.offset >= 0 else (ends or {}).get(tp.partition, 0)
                      for tp in assignment}
        c.assign(assignment)  # no consumer group to join: every tier reads every partition
        while todo and time.monotonic() - t0 < 120:
            msgs = c.consume(1000, timeout=0.5)
            self._note(msgs)
            if ends is not None:  # caught up once every partition's position passed its end at the start,
                # however busy the topic is meanwhile
                todo -= {tp.partition for tp in c.position([TopicPartition(self.topic, p) for p in todo])
                         if tp.offset >= ends[tp.partition]}
            # Else (or a position that never becomes known): caught up when a fetch comes back empty.
            if not msgs and (time.monotonic() - t0 > 2 or all(tp.offset >= 0 for tp in c.position(assignment))):
                break
        self.recalled = True
        self.metrics.answer_memory.set(len(self.memory))
        if self.follow:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(admin_config(self.settings))
        else:  # a top tier forwards nothing: its own answers keep its memory current
            self.close()
        log.info("answers recalled", extra={"tier": self.tier, "answers": len(self.memory),
                                            "seconds": round(time.monotonic() - t0, 2)})

    def _high_watermarks(self, c: Any, parts: list[int]) -> dict[int, int] | None:
        """The high watermark of each partition now (None if the broker does not say)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            return {p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in parts}
        except KafkaException as exc:
            log.warning("no high watermarks; recalling answers until a fetch comes back empty",
                        extra={"tier": self.tier, "error": str(exc)})
            return None

    def poll(self, force: bool = False) -> None:
        """Take in every answer that has arrived since the last look, at most every ``POLL_INTERVAL_S``
        unless ``force``d (a look gives up the GIL, and answers arrive in fetches some ms apart anyway)."""
        if self._consumer is None:
            return
        now = time.monotonic()
        if not force and now - self._looked < POLL_INTERVAL_S:
            return
        self._looked = now
        while True:
            msgs = self._consumer.consume(1000, timeout=0)
            self._note(msgs)
            if len(msgs) < 1000:
                break
        self.metrics.pending.set(len(self.pending))
        self.metrics.answer_memory.set(len(self.memory))
        self.metrics.clock_correction.set(self.clock.correction_ms / 1000)

    def barrier(self) -> int | None:
        """Read barrier, never blocking the worker: the tier-clock time (epoch ms) of the newest barrier passed,
        i.e. the topic's high watermarks were asked for then and every answer up to them has been taken in;
        ``None`` before the first. Each call moves the barrier in progress on (or starts one, at most every
        ``BARRIER_INTERVAL_S``): forwards whose window closed after the time returned wait for a later one."""
        if self._consumer is None:
            return self.clock.now()
        now = time.monotonic()
        if self._asked is not None:
            taken, asked, started = self._asked
            if self._watermarks is None and all(f.done() for f in asked.values()):
                try:
                    self._watermarks = {tp.partition: f.result().offset for tp, f in asked.items()}
                except Exception as exc:  # noqa: BLE001 - KafkaException and what a broker may answer: retry
                    self._barrier_failed(now, f"high watermarks not given: {exc}")
            if self._watermarks is not None:
                self.poll(force=True)
                if self._reached(self._watermarks):
                    self._seen_until, self._asked, self._watermarks = taken, None, None
            if self._asked is not None and now - started > BARRIER_TIMEOUT_S:
                self._barrier_failed(now, f"answers up to {self._watermarks} not read within {BARRIER_TIMEOUT_S:g} s")
        if self._asked is None and now - self._barrier_started >= BARRIER_INTERVAL_S:
            from confluent_kafka import TopicPartition
            from confluent_kafka.admin import OffsetSpec

            self._barrier_started = now
            asked = self._admin.list_offsets({TopicPartition(self.topic, p): OffsetSpec.latest() for p in self._next},
                                             request_timeout=BARRIER_TIMEOUT_S)
            self._asked = (self.clock.now(), asked, now)
        return self._seen_until

    def _barrier_failed(self, now: float, why: str) -> None:
        self._asked, self._watermarks = None, None
        if now - self._barrier_failed_logged > 1:  # at most one line a second
            self._barrier_failed_logged = now
            log.warning("answers on the broker not confirmed; degraded answers wait",
                        extra={"tier": self.tier, "error": why})

    def _reached(self, ends: dict[int, int]) -> bool:
        """Taken in up to ``ends`` on every partition (the consumer's position also counts offsets that hold no
        answer, e.g. transaction markers on Apache Kafka)."""
        from confluent_kafka import TopicPartition

        behind = [p for p, end in ends.items() if self._next[p] < end]
        if behind:
            for tp in self._consumer.position([TopicPartition(self.topic, p) for p in behind]):
                self._next[tp.partition] = max(self._next[tp.partition], tp.offset)
        return all(self._next[p] >= end for p, end in ends.items())

    def _note(self, msgs: list) -> None:
        for m in msgs:
            if m.error():
                continue
            self._next[m.partition()] = m.offset() + 1
            key = m.key()
            rid = key.decode(errors="replace") if key else ""
            if not self.memory.entry_of(rid):  # new here (most answers are this tier's own, known already)
                entry = ""
                for name, value in m.headers() or ():
                    if name == codec.ENTRY and value:
                        entry = value.decode(errors="replace")
                self.memory.add(rid, entry)
            p = self.pending.resolve(rid)
            if p is not None:
                p.batch.unresolved -= 1
                if self.on_resolved is not None:
                    self.on_resolved(p)

    def close(self) -> None:
        self._admin = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
