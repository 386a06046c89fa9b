"""Everything a tier worker produces: answers (the entry tier's to APP.results and tf-reply-to, the tiers
above's to APP.replies), forwards and dead letters.

An output of a batch counts against the batch's commit until the broker acknowledges it
(`runtime.ledger`); an answer to a client's ``tf-reply-to`` is best effort (the answer that counts is the
one on APP.results), so a reply-to topic that cannot be written never holds back or stops the worker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import codec, deadletter
from runtime.kafka import producer_config
from runtime.ledger import Batch
from runtime.metrics import WorkerMetrics, observe_many
from runtime.ownership import (
    Action,
    AnswerMemory,
    Pending,
    PendingForwards,
    TierClock,
)
from runtime.route import Route
from runtime.settings import Settings
from runtime.tracing import TierTracer
from runtime.validation import Rejected, Request

log = logging.getLogger("tierflow.worker")


@dataclass(frozen=True)
class _Topic:
    """Stands in for a message in the delivery report of an output that was never produced."""

    name: str

    def topic(self) -> str:
        return self.name


class Outputs:
    """The producers of one worker and the records it sends."""

    def __init__(self, settings: Settings, route: Route, model: Any, metrics: WorkerMetrics, clock: TierClock,
                 memory: AnswerMemory, pending: PendingForwards):
        self.settings, self.route, self.metrics, self.clock = settings, route, metrics, clock
        self.memory, self.pending, self.ws = memory, pending, settings.worker
        self.answers = codec.AnswerEncoder(route.tier, route.version, model.model_name,
                                           getattr(model, "class_name", str))
        self.forward_headers = codec.ForwardHeaders(route.tier, route.version, model.model_name)
        self.bootstrap = settings.kafka.bootstrap
        self.next_bootstrap = settings.kafka.for_tier(route.next_tier or route.tier)
        self.results_topic, self.dlq_topic = settings.topic("results"), settings.topic("dlq")
        # Only the entry tier publishes answers; the tiers above send theirs to it (`runtime.answers`).
        self.answers_topic = self.results_topic if route.is_entry else settings.topic("replies")
        self._producers: dict[str, Any] = {}
        self._bytes_out: Counter[str] = Counter()
        self._tier_latency_ms: list[int] = []  # of answers since the last report, observed there at once
        self._e2e_latency_ms: list[int] = []
        self.tracer = TierTracer.for_worker(settings, route.tier, route.version)  # None: tracing off

    def connect(self) -> None:
        """Connect the producers now: an idempotent producer needs its id before the first send."""
        clusters = {self.bootstrap} if self.route.out_topic is None else {self.bootstrap, self.next_bootstrap}
        for bootstrap in clusters:
            self._producer(bootstrap).list_topics(timeout=10)

    def _producer(self, bootstrap: str) -> Any:
        """One producer per cluster: fewer, fuller produce requests than one per kind of output."""
        if bootstrap not in self._producers:
            from confluent_kafka import Producer

            self._producers[bootstrap] = Producer(producer_config(
                self.settings, bootstrap, **{"client.id": f"{self.route.tier}-{self.route.version}"}))
        return self._producers[bootstrap]

    def serve_deliveries(self, timeout_s: float = 0) -> None:
        """Serve the delivery reports of the producers with records in flight (each poll is a call into
        librdkafka that gives up the GIL, so idle producers are not polled)."""
        busy = [p for p in self._producers.values() if len(p)]
        for p in busy:
            p.poll(timeout_s / len(busy))  # returns as soon as it has served a report
        if not busy and timeout_s:
            time.sleep(timeout_s)

    def flush(self, timeout_s: float = 30) -> None:
        for p in self._producers.values():
            p.flush(timeout_s)
        if self.tracer is not None:
            self.tracer.provider.force_flush(int(timeout_s * 1000))

    def report(self) -> None:
        """Latencies and bytes of what was sent since the last report, into the metrics (once per batch)."""
        if self._tier_latency_ms:
            observe_many(self.metrics.tier_latency, np.asarray(self._tier_latency_ms) / 1000)
            observe_many(self.metrics.e2e_latency, np.asarray(self._e2e_latency_ms) / 1000)
            self._tier_latency_ms.clear()
            self._e2e_latency_ms.clear()
        for topic, n in self._bytes_out.items():
            self.metrics.sent(topic, n)
        self._bytes_out.clear()

    def _send(self, on_delivery: Any, producer: Any, topic: str, key: str | bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]], header_bytes: int, *, timestamp: int = 0, wait: bool = True) -> None:
        """Produce one output; a full local queue is waited out (``wait``) or raises BufferError."""
        self._bytes_out[topic] += len(value or b"") + len(key or b"") + header_bytes
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery,
                                 timestamp=timestamp)
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                if not wait:
                    raise
                producer.poll(0.1)

    def _held(self, batch: Batch, topic: str, key: Any, value: bytes | None,
              headers: list[tuple[str, bytes]], header_bytes: int) -> None:
        """An output of ``batch``: its commit waits for the broker's acknowledgement."""
        self._send(batch.delivered, self._producer(self.bootstrap), topic, key, value, headers, header_bytes)
        batch.outstanding += 1

    def _reply_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:  # the answer is on APP.results; a client's reply-to topic may not exist
            self.metrics.record("reply_to_failed")
            log.warning("answer not delivered to tf-reply-to", extra={"tier": self.route.tier, "topic": msg.topic(),
                                                                       "error": str(err)})

    def _forward_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.metrics.record("forward_failed")

    def answer(self, batch: Batch, rid: str, entry: str, label: int, confidence: float, exit_id: int,
               origin: int | None, reply_to: str | None, received: int, now: int, degraded: bool = False) -> None:
        """Publish one answer (an upper tier: send it to the entry tier); ``now`` is the tier clock when its batch
        was decided (read once per batch)."""
        tier_latency, latency = now - received, (now - origin) if origin is not None else None
        body = self.answers.body(rid, label, confidence, exit_id, tier_latency, latency, degraded)
        rid_b = rid.encode()
        headers, header_bytes = self.answers.headers(rid_b, entry.encode())
        self.memory.add(rid, entry)
        self._held(batch, self.answers_topic, rid_b, body, headers, header_bytes)
        if self.route.is_entry:
            self._reply_to(reply_to, rid_b, body, headers, header_bytes)
        self._tier_latency_ms.append(tier_latency)
        if latency is not None:
            self._e2e_latency_ms.append(max(latency, 0))

    def publish_reply(self, batch: Batch, rid: str, entry: str, reply_to: str | None, reply: Any) -> None:
        """The entry tier publishes an upper tier's answer (its record on APP.replies) as the request's answer,
        held by ``batch`` (the forward's, or the replayed request's). Its latencies stay the answering tier's."""
        value, headers = reply.value(), list(reply.headers() or ())
        header_bytes = sum(len(k) + len(v or b"") for k, v in headers)
        rid_b = rid.encode()
        self.memory.add(rid, entry)
        self._held(batch, self.results_topic, rid_b, value, headers, header_bytes)
        self._reply_to(reply_to, rid_b, value, headers, header_bytes)
        self.metrics.record("relayed")

    def _reply_to(self, reply_to: str | None, rid_b: bytes, body: bytes, headers: list[tuple[str, bytes]],
                  header_bytes: int) -> None:
        if reply_to and reply_to != self.results_topic:
            try:
                self._send(self._reply_delivered, self._producer(self.bootstrap), reply_to, rid_b, body,
                           headers, header_bytes)
            except Exception as exc:  # the answer is on APP.results already
                self._reply_delivered(exc, _Topic(reply_to))

    def act(self, action: Action, batch: Batch, req: Request, activation: bytes | None, label: int,
            confidence: float, exit_id: int, received: int, now: int) -> str | tuple[str, int]:
        """Carry out this tier's decision on one request; returns its outcome, ``("exit", id)`` for answers."""
        trace = None if self.tracer is None else self.tracer.decided(req.record, req.request_id, received,
                                                                     action.value, exit_id, confidence)
        if action is Action.FORWARD:
            try:
                self.forward(batch, req, activation, label, confidence, exit_id, received, now, trace)
                return "forwarded"
            except BufferError:  # the link to the next tier is backed up: answer now rather than wait
                action = Action.DEGRADE
        if action is Action.EXPIRE:
            return "expired"
        self.answer(batch, req.request_id, req.entry, label, confidence, exit_id, req.origin_ts, req.reply_to,
                    received, now, degraded=action is Action.DEGRADE)
        return ("degraded" if action is Action.DEGRADE else "exit", exit_id)

    def forward(self, batch: Batch, req: Request, activation: bytes, label: int, confidence: float, exit_id: int,
                received: int, now: int, trace: tuple[str, bytes] | None = None) -> None:
        """Send the activation to the next tier, stamped with this tier's clock when it decided (``now``), and
        remember this tier's own prediction for the fallback; the batch's offsets wait until the request is
        answered."""
        r = self.route
        headers, header_bytes = self.forward_headers.build(req.request_id.encode(), req.origin_ts, req.deadline,
                                                           req.reply_to, req.entry.encode())
        if trace is not None:  # this tier's span is the parent of the next tier's (runtime.tracing)
            headers, header_bytes = [*headers, trace], header_bytes + len(trace[0]) + len(trace[1])
        # Not held by the batch: a forward that never arrives (a cut link, a full queue) only means no answer
        # from above, and this tier answers degraded when its window closes.
        self._send(self._forward_delivered, self._producer(self.next_bootstrap), r.out_topic,
                   req.record.key(), activation, headers, header_bytes, timestamp=now, wait=False)
        self.pending.add(Pending(req.request_id, req.close_at, label, confidence, exit_id, req.reply_to, req.origin_ts,
                                 received, req.entry, batch))
        batch.unresolved += 1

    def dead_letter(self, batch: Batch, m: Any, rej: Rejected) -> None:
        self.metrics.dead_letter(rej.kind)
        log.warning("dead letter", extra={"tier": self.route.tier, "reason": rej.reason, "topic": m.topic(),
                                          "partition": m.partition(), "offset": m.offset()})
        dl = deadletter.build(m, rej.kind, rej.reason, self.route.tier, self.ws.dlq_max_bytes)
        self._held(batch, self.dlq_topic, dl.key, dl.value, dl.headers,
                   sum(len(k) + len(v) for k, v in dl.headers))

    def answer_overdue(self) -> int:
        """Rule 3 of `runtime.ownership`: a forward whose window closed with no answer seen is answered here,
        degraded, with this tier's own best prediction (an upper tier sends it to the entry tier, which takes
        the first answer it sees). Returns how many."""
        now = self.clock.now()
        due = self.pending.next_close()
        if due is None or due > now:
            return 0
        n = 0
        for p in self.pending.due(now):
            try:
                self.answer(p.batch, p.request_id, p.entry, p.label, p.confidence, p.exit_id, p.origin_ts,
                            p.reply_to, p.received_ts, now, degraded=True)
            except Exception as exc:  # nothing to fall back to here: restart, and the replay answers it
                raise RuntimeError(f"degraded answer to {p.request_id!r} not produced: {exc}") from exc
            p.batch.unresolved -= 1
            self.metrics.exit(p.exit_id)
            n += 1
        if n:
            self.metrics.record("answered", n)
            self.metrics.degraded.inc(n)
            self.metrics.pending.set(len(self.pending))
            log.info("degraded answers published", extra={"tier": self.route.tier, "answers": n,
                                                          "pending": len(self.pending)})
        return n
