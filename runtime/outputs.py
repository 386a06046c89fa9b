"""Everything a tier worker produces: answers (APP.results and tf-reply-to), forwards and dead letters.

An output of a batch counts against the batch's commit until the broker acknowledges it
(`runtime.ledger`); an answer to a client's ``tf-reply-to`` is best effort (the answer that counts is the
one on APP.results), so a reply-to topic that cannot be written never holds back or stops the worker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
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
    answer_timeout,
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
        self._producers: dict[tuple[str, str], Any] = {}
        self._bytes_out: Counter[str] = Counter()
        self._tier_latency_ms: list[int] = []  # of answers since the last report, observed there at once
        self._e2e_latency_ms: list[int] = []
        self._withdrawn_logged = 0.0
        # Timed answer producers of an upper tier, timeout ms -> kind: an eighth of a grace times 1, 4, 16, 64, 256.
        eighth = max(1, self.ws.degrade_grace_ms // 8)
        self._timed_kinds = {eighth * 4 ** k: f"answers-{eighth * 4 ** k}" for k in range(5)}
        self._timeouts = tuple(sorted(self._timed_kinds))
        self.tracer = TierTracer.for_worker(settings, route.tier, route.version)  # None: tracing off

    def connect(self) -> None:
        """Connect the producers now: an idempotent producer needs its id before the first send."""
        answers = ["answers"] if self.route.is_entry else list(self._timed_kinds.values())
        forwards = [(self.next_bootstrap, "forwards")] if self.route.out_topic is not None else []
        for bootstrap, kind in {*((self.bootstrap, a) for a in answers), (self.bootstrap, "outputs"), *forwards}:
            self._producer(bootstrap, kind).list_topics(timeout=10)

    def _producer(self, bootstrap: str, kind: str) -> Any:
        """One producer per cluster and kind ("outputs", "forwards", "answers", or "answers-<ms>", see
        `_answer_kind`)."""
        if (bootstrap, kind) not in self._producers:
            from confluent_kafka import Producer

            extra = {}
            if kind.startswith("answers-"):  # sent once within the timeout (no retries, so no idempotence,
                # whose epoch bump after a timeout some brokers answer with a fence)
                extra = {"message.timeout.ms": int(kind.split("-")[1]), "enable.idempotence": False,
                         "message.send.max.retries": 0, "reconnect.backoff.max.ms": 500}
            self._producers[(bootstrap, kind)] = Producer(producer_config(
                self.settings, bootstrap, **{"client.id": f"{self.route.tier}-{self.route.version}"}, **extra))
        return self._producers[(bootstrap, kind)]

    def _answer_kind(self, close_at: int, now: int) -> str | None:
        """The producer for an answer (its delivery timeout from `runtime.ownership.answer_timeout`), ``None``
        if it is too late to publish: the tier below answers instead."""
        if self.route.is_entry:
            return "answers"
        timeout = answer_timeout(close_at, now, self.ws.degrade_grace_ms, self._timeouts)
        return None if timeout is None else self._timed_kinds[timeout]

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

    def _held(self, batch: Batch, kind: str, topic: str, key: Any, value: bytes | None,
              headers: list[tuple[str, bytes]], header_bytes: int) -> None:
        """An output of ``batch``: its commit waits for the broker's acknowledgement."""
        if kind.startswith("answers-"):
            def on_delivery(err: Any, msg: Any) -> None:
                batch.withdrawable(err, msg)
                if err is not None:
                    self._withdrawn(err)
        else:
            on_delivery = batch.delivered
        self._send(on_delivery, self._producer(self.bootstrap, kind), topic, key, value, headers, header_bytes)
        batch.outstanding += 1

    def _reply_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:  # the answer is on APP.results; a client's reply-to topic may not exist
            self.metrics.record("reply_to_failed")
            log.warning("answer not delivered to tf-reply-to", extra={"tier": self.route.tier, "topic": msg.topic(),
                                                                       "error": str(err)})

    def _withdrawn(self, err: Any) -> None:
        self.metrics.record("withdrawn")
        now = time.monotonic()
        if now - self._withdrawn_logged > 1:  # at most one line a second
            self._withdrawn_logged = now
            log.warning("answers withdrawn: not on the broker before the tier below answers",
                        extra={"tier": self.route.tier, "error": str(err)})

    def _forward_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.metrics.record("forward_failed")

    def answer(self, batch: Batch, rid: str, entry: str, label: int, confidence: float, exit_id: int,
               origin: int | None, reply_to: str | None, received: int, close_at: int, now: int,
               degraded: bool = False) -> None:
        """Publish one answer; ``now`` is the tier clock when its batch was decided (read once per batch)."""
        tier_latency, latency = now - received, (now - origin) if origin is not None else None
        body = self.answers.body(rid, label, confidence, exit_id, tier_latency, latency, degraded)
        rid_b = rid.encode()
        headers, header_bytes = self.answers.headers(rid_b, entry.encode())
        kind = self._answer_kind(close_at, now)
        self.memory.add(rid, entry)
        if kind is None:  # too late to be on the broker before the tier below answers: it answers instead
            self._withdrawn("too late to publish")
            return
        self._held(batch, kind, self.results_topic, rid_b, body, headers, header_bytes)
        if reply_to and reply_to != self.results_topic:
            try:
                self._send(self._reply_delivered, self._producer(self.bootstrap, "outputs"), reply_to, rid_b, body,
                           headers, header_bytes)
            except Exception as exc:  # the answer is on APP.results already
                self._reply_delivered(exc, _Topic(reply_to))
        self._tier_latency_ms.append(tier_latency)
        if latency is not None:
            self._e2e_latency_ms.append(max(latency, 0))

    def act(self, action: Action, batch: Batch, req: Request, activation: bytes | None, label: int,
            confidence: float, exit_id: int, received: int, now: int) -> str | tuple[str, int]:
        """Carry out this tier's decision on one request; returns its outcome, ``("exit", id)`` for answers."""
        trace = None if self.tracer is None else self.tracer.decided(req.record, req.request_id, received,
                                                                     action.value, exit_id, confidence)
        if action is Action.FORWARD:
            try:
                self.forward(batch, req, activation, label, confidence, exit_id, received, trace)
                return "forwarded"
            except BufferError:  # the link to the next tier is backed up: answer now rather than wait
                action = Action.DEGRADE
        if action is Action.EXPIRE:
            return "expired"
        self.answer(batch, req.request_id, req.entry, label, confidence, exit_id, req.origin_ts, req.reply_to,
                    received, req.close_at, now, degraded=action is Action.DEGRADE)
        return ("degraded" if action is Action.DEGRADE else "exit", exit_id)

    def forward(self, batch: Batch, req: Request, activation: bytes, label: int, confidence: float, exit_id: int,
                received: int, trace: tuple[str, bytes] | None = None) -> None:
        """Send the activation to the next tier, stamped with this tier's clock, and remember this tier's own
        prediction for the fallback; the batch's offsets wait until the request is answered."""
        r = self.route
        headers, header_bytes = self.forward_headers.build(req.request_id.encode(), req.origin_ts, req.deadline,
                                                           req.reply_to, req.entry.encode())
        if trace is not None:  # this tier's span is the parent of the next tier's (runtime.tracing)
            headers, header_bytes = [*headers, trace], header_bytes + len(trace[0]) + len(trace[1])
        # Not held by the batch: a forward that never arrives (a cut link, a full queue) only means no answer
        # from above, and this tier answers degraded when its window closes.
        self._send(self._forward_delivered, self._producer(self.next_bootstrap, "forwards"), r.out_topic,
                   req.record.key(), activation, headers, header_bytes, timestamp=self.clock.now(), wait=False)
        self.pending.add(Pending(req.request_id, req.close_at, label, confidence, exit_id, req.reply_to, req.origin_ts,
                                 received, req.entry, batch))
        batch.unresolved += 1

    def dead_letter(self, batch: Batch, m: Any, rej: Rejected) -> None:
        self.metrics.dead_letter(rej.kind)
        log.warning("dead letter", extra={"tier": self.route.tier, "reason": rej.reason, "topic": m.topic(),
                                          "partition": m.partition(), "offset": m.offset()})
        dl = deadletter.build(m, rej.kind, rej.reason, self.route.tier, self.ws.dlq_max_bytes)
        self._held(batch, "outputs", self.dlq_topic, dl.key, dl.value, dl.headers,
                   sum(len(k) + len(v) for k, v in dl.headers))

    def answer_overdue(self, barrier: Callable[[], int | None]) -> int:
        """Rule 3 of `runtime.ownership`: a forward whose window closed with no answer seen is answered here,
        degraded, with this tier's own best prediction. Only forwards whose window closed before a read
        ``barrier`` (`AnswerWatch.barrier`: every answer on the broker then has been seen) are. Returns how many."""
        due = self.pending.next_close()
        if due is None or due > self.clock.now():
            return 0
        seen_until = barrier()
        if seen_until is None:
            return 0
        n, now = 0, self.clock.now()
        for p in self.pending.due(seen_until):
            try:
                self.answer(p.batch, p.request_id, p.entry, p.label, p.confidence, p.exit_id, p.origin_ts,
                            p.reply_to, p.received_ts, p.close_at, now, degraded=True)
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
