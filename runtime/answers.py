"""Answers on APP.results as one tier sees them: the answer memory, and the forwards they resolve.

Every tier reads every answer (a small JSON record per request). On start the memory is recalled from the
topic over the last ``worker.answer_memory_s`` *before* the tier consumes any input, so a record replayed
after a crash or a rebalance is known to be answered; afterwards each answer also resolves the tier's
pending forward of that request, if any, so the fallback does not fire and the batch can be committed.
The top tier forwards nothing, so it only recalls at start (its own answers keep its memory current) and
does not read every answer over what may be a WAN link.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from runtime import codec
from runtime.kafka import consumer_config
from runtime.metrics import WorkerMetrics
from runtime.ownership import AnswerMemory, Pending, PendingForwards, TierClock
from runtime.settings import Settings

log = logging.getLogger("tierflow.worker")

POLL_INTERVAL_S = 0.005


class AnswerWatch:
    def __init__(self, settings: Settings, tier: str, version: str, memory: AnswerMemory,
                 pending: PendingForwards, clock: TierClock, metrics: WorkerMetrics, follow: bool = True):
        self.settings, self.tier, self.version, self.follow = settings, tier, version, follow
        self.memory, self.pending, self.clock, self.metrics = memory, pending, clock, metrics
        self.topic = settings.topic("results")
        self.recalled = False
        self.on_resolved: Callable[[Pending], None] | None = None  # each forward an answer resolves (adaptive exits)
        self._consumer: Any = None
        self._looked = 0.0  # time.monotonic() of the last look at the topic

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
        ends = self._ends(c, parts)  # what the topic held when the recall began: read up to there
        todo = {tp.partition for tp in assignment if ends is None or 0 <= tp.offset < ends[tp.partition]}
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
        if not self.follow:  # a top tier forwards nothing: its own answers keep its memory current
            self.close()
        log.info("answers recalled", extra={"tier": self.tier, "answers": len(self.memory),
                                            "seconds": round(time.monotonic() - t0, 2)})

    def _ends(self, c: Any, parts: list[int]) -> dict[int, int] | None:
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

    def _note(self, msgs: list) -> None:
        for m in msgs:
            if m.error():
                continue
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
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
