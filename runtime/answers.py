"""Answers as one tier sees them: the answer memory, the forwards they resolve, and the replies of the tiers above.

Only the entry tier publishes to APP.results (`runtime.ownership`, rule 1). The tiers above send their answers
to APP.replies; the entry tier publishes the first reply it sees for a request it still holds, and a reply
that comes after it answered (degraded, at its window's close) is dropped.
One process decides for each request, so no timing or watermark assumption is needed for "one answer".

The entry tier reads APP.results (every answer, its own and other replicas', so that a record replayed
after a crash or a rebalance is known to be answered) and APP.replies; a tier in the middle reads
APP.replies (the answers that resolve its forwards); the top tier forwards nothing and only recalls its
own replies at start. Everything is recalled over the last ``worker.answer_memory_s`` *before* the tier
consumes, and a reply for a request the entry tier does not hold yet (it restarted and has not consumed the
request again) is kept until it does.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from runtime import codec
from runtime.kafka import consumer_config
from runtime.metrics import WorkerMetrics
from runtime.ownership import AnswerMemory, Pending, PendingForwards, TierClock
from runtime.settings import Settings

log = logging.getLogger("tierflow.worker")

POLL_INTERVAL_S = 0.005
MAX_EARLY_REPLIES = 200_000  # replies kept for requests not (yet) held; the oldest go first


class AnswerWatch:
    def __init__(self, settings: Settings, tier: str, version: str, memory: AnswerMemory,
                 pending: PendingForwards, clock: TierClock, metrics: WorkerMetrics, *, entry: bool,
                 follow: bool = True):
        self.settings, self.tier, self.version, self.follow = settings, tier, version, follow
        self.memory, self.pending, self.clock, self.metrics = memory, pending, clock, metrics
        self.results, self.replies = settings.topic("results"), settings.topic("replies")
        self.entry = entry
        self.topics = [self.results, self.replies] if entry else [self.replies]
        self.recalled = False
        self.on_resolved: Callable[[Pending], None] | None = None  # each forward an answer resolves (adaptive exits)
        # The entry tier: publish a reply (the record from APP.replies) to the request of a pending forward.
        self.on_reply: Callable[[Pending, Any], None] | None = None
        self._consumer: Any = None
        self._looked = 0.0  # time.monotonic() of the last look at the topics
        self._early: OrderedDict[str, Any] = OrderedDict()  # replies to requests not held (yet), oldest first

    def start(self) -> None:
        """Recall the answers and replies of the last ``worker.answer_memory_s``, then keep following them
        (a top tier stops after the recall: it forwards nothing, and its own replies keep its memory current)."""
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        t0, memory_s = time.monotonic(), self.settings.worker.answer_memory_s
        group = f"{self.settings.app}.v{self.version}.{self.tier}.watch.{uuid.uuid4().hex[:12]}"  # never committed
        self._consumer = c = Consumer(consumer_config(self.settings, group))
        parts = [(t, p) for t in self.topics for p in sorted(c.list_topics(t, timeout=10).topics[t].partitions)]
        if memory_s > 0:
            since = self.clock.local() - memory_s * 1000
            found = c.offsets_for_times([TopicPartition(t, p, since) for t, p in parts], timeout=10)
        else:
            found = [TopicPartition(t, p, OFFSET_END) for t, p in parts]
        assignment = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                      for tp in found]
        ends = self._high_watermarks(c, parts)  # what the topics held when the recall began: read up to there
        todo = {(tp.topic, tp.partition) for tp in assignment
                if ends is None or 0 <= tp.offset < ends[(tp.topic, tp.partition)]}
        c.assign(assignment)  # no consumer group to join: every tier reads every partition
        while todo and time.monotonic() - t0 < 120:
            msgs = c.consume(1000, timeout=0.5)
            self._note(msgs)
            if ends is not None:  # caught up once every partition's position passed its end at the start,
                # however busy the topic is meanwhile
                todo -= {(tp.topic, tp.partition) for tp in c.position([TopicPartition(t, p) for t, p in todo])
                         if tp.offset >= ends[(tp.topic, tp.partition)]}
            # Else (or a position that never becomes known): caught up when a fetch comes back empty.
            if not msgs and (time.monotonic() - t0 > 2 or all(tp.offset >= 0 for tp in c.position(assignment))):
                break
        self.recalled = True
        self.metrics.answer_memory.set(len(self.memory))
        if not self.follow:
            self.close()
        log.info("answers recalled", extra={"tier": self.tier, "answers": len(self.memory),
                                            "early_replies": len(self._early),
                                            "seconds": round(time.monotonic() - t0, 2)})

    def _high_watermarks(self, c: Any, parts: list[tuple[str, int]]) -> dict[tuple[str, int], int] | None:
        """The high watermark of each (topic, partition) now (None if the broker does not say)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1] for t, p in parts}
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

    def take_early(self, request_id: str) -> Any | None:
        """The reply to a request that came before this (entry) tier held it, if any (then it is this reply's
        to publish)."""
        return self._early.pop(request_id, None)

    def _note(self, msgs: list) -> None:
        for m in msgs:
            if m.error():
                continue
            key = m.key()
            rid = key.decode(errors="replace") if key else ""
            if not rid:
                continue
            if m.topic() == self.results:  # an answer published (by this entry replica or another)
                if not self.memory.entry_of(rid):  # new here (most answers are this replica's own, known already)
                    self.memory.add(rid, _entry_header(m))
                    self._early.pop(rid, None)
                p = self.pending.resolve(rid)
                if p is not None:  # another replica answered it (after a rebalance): nothing left to publish
                    p.batch.unresolved -= 1
            else:
                p = self.pending.resolve(rid)
                if p is None:  # answered already (a late reply: dropped), held by another entry replica, or
                    # not consumed (again) yet
                    if not self.entry:
                        self.memory.add(rid, _entry_header(m))
                    elif self.memory.entry_of(rid) is None:
                        self._keep_early(rid, m)
                    continue
                if self.entry and self.on_reply is not None:
                    self.on_reply(p, m)  # published, held by the forward's batch
                else:
                    self.memory.add(rid, p.entry)
                p.batch.unresolved -= 1
            if p is not None and self.on_resolved is not None:
                self.on_resolved(p)

    def _keep_early(self, rid: str, m: Any) -> None:
        self._early[rid] = m
        while len(self._early) > MAX_EARLY_REPLIES:
            self._early.popitem(last=False)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def _entry_header(m: Any) -> str:
    """Where the answered request entered (``tf-entry-offset``), "" if the record does not say."""
    for name, value in m.headers() or ():
        if name == codec.ENTRY and value:
            return value.decode(errors="replace")
    return ""
