"""The tier worker: consume a micro-batch, run the tier's sub-model once, answer or forward, then commit.

One process serves one tier of one model version (`runtime.route`). Who may answer a request, and until
when, is `runtime.ownership`; which offsets may be committed is `runtime.ledger`; what a record must look
like is `runtime.validation`; dead letters are `runtime.deadletter`. The loop in `TierWorker.run` reads top
to bottom: fetch, stage (validate, start inference), publish (answer, forward or drop, in consumption
order), watch answers, answer overdue forwards degraded, commit.

Inference overlaps Kafka I/O: the sub-model runs micro-batch k on an inference thread (TensorFlow releases
the GIL) while the main thread publishes the outputs of batch k-1 and decodes batch k+1.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime import codec, deadletter
from runtime.health import HealthServer
from runtime.kafka import consumer_config, ensure_topics, producer_config
from runtime.ledger import Batch, BrokerRejected, CommitLedger
from runtime.metrics import WorkerMetrics, observe_many
from runtime.ownership import Action, AnswerMemory, Pending, PendingForwards, TierClock, decide, window_close
from runtime.route import plan_route
from runtime.settings import Settings
from runtime.validation import Limits, RecordReader, Rejected, Request

log = logging.getLogger("tierflow.worker")

MAX_UNACKNOWLEDGED_BATCHES = 8
PIPELINE_DEPTH = 1  # micro-batches inferring while the main thread decodes the next one


class WorkerError(RuntimeError):
    """The worker cannot go on safely (e.g. the broker rejected a result); it exits without committing."""


@dataclass
class Inference:
    """What the inference thread returns for a micro-batch: per-row decisions as Python lists."""

    labels: list[int]
    confidences: list[float]
    exits: list[int]
    confident: list[bool]
    forwards: list[bytes]  # encoded activations of the rows no exit answered, in row order
    seconds: float


@dataclass
class Staged:
    """A micro-batch whose inference runs (or ran) on the inference thread, not yet published."""

    batch: Batch
    requests: list[Request]
    received: int
    inference: Future | None


@dataclass(frozen=True)
class _Topic:
    """Stands in for a message in a delivery report of an output that was never produced."""

    name: str

    def topic(self) -> str:
        return self.name


class TierWorker:
    """Serves one tier; `run()` blocks until `stop()` (or SIGTERM/SIGINT) and returns after a clean drain."""

    def __init__(self, settings: Settings, model: Any, *, http_port: int | None = None,
                 http_host: str | None = None):
        self.settings, self.model, self.ws = settings, model, settings.worker
        version = str(self.ws.version or model.version)
        tier_names = model.manifest.tier_names if model.manifest is not None else [model.name]
        self.route = plan_route(settings, model.name, version, tier_names)
        self.tier, self.version = self.route.tier, version
        self.metrics = WorkerMetrics(self.tier, version)
        self.clock = TierClock(skew_ms=self.ws.clock_skew_ms)
        self.memory = AnswerMemory()
        self.pending = PendingForwards()
        self.ledger = CommitLedger()
        self.reader = RecordReader(is_entry=self.route.is_entry, version=version, input_shape=model.input_shape,
                                   input_dtype=model.input_dtype, app=settings.app,
                                   limits=Limits(self.ws.max_record_bytes, self.ws.default_deadline_ms,
                                                 self.ws.max_deadline_ms))
        self.answers = codec.AnswerEncoder(self.tier, version, model.model_name, getattr(model, "class_name", str))
        self.forward_headers = codec.ForwardHeaders(self.tier, version, model.model_name)
        self.consumed = 0  # input records done with (answered, forwarded, dropped or dead-lettered)
        self._stop = threading.Event()
        self._assigned = self._recalled = False
        self._heartbeat = time.monotonic()
        self._in_progress: dict[str, str] = {}  # request id -> entry, staged and not yet published
        self._staged: deque[Staged] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._bytes_out: Counter[str] = Counter()
        self._producers: dict[str, Any] = {}
        self._consumer: Any = None
        self._watcher: Any = None
        self._http: HealthServer | None = None
        self._http_port = self.ws.http_port if http_port is None else http_port
        self._http_host = http_host or self.ws.http_host
        self._results_topic, self._dlq_topic = settings.topic("results"), settings.topic("dlq")
        self._bootstrap = settings.kafka.bootstrap
        self._next_bootstrap = settings.kafka.for_tier(self.route.next_tier or self.tier)
        self._tier_latency_ms: list[int] = []  # of answers since the last commit, observed there at once
        self._e2e_latency_ms: list[int] = []

    # ---- lifecycle ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._assigned and self._recalled and not self._stop.is_set()

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def stop(self, *_: object) -> None:
        """Stop fetching; what this worker holds is finished, answered and committed."""
        if not self._stop.is_set():
            log.info("stop requested", extra={"tier": self.tier})
        self._stop.set()

    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        try:
            self.start()
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                records = self._fetch(0 if self._staged else 0.05)  # never sit in poll while a batch infers
                if records:
                    self._stage(records)  # validate and decode; inference starts on its thread
                self._publish_staged(wait=not records)  # answer, forward or drop, in consumption order
                self._bound_unacknowledged()
                self._watch_answers()  # answers of upper tiers resolve this tier's forwards
                self._answer_overdue()  # forwards whose window closed unanswered: answered degraded
                self._commit()  # offsets of the acknowledged, resolved prefix of batches
        finally:
            self.close()

    def start(self) -> None:
        from confluent_kafka import Consumer

        k, r = self.settings.kafka, self.route
        alive = lambda: time.monotonic() - self._heartbeat < 60  # noqa: E731 - the main loop turns
        self._http = HealthServer(self._http_host, self._http_port, self.metrics.registry,
                                  ready=lambda: self.ready, alive=alive).start()
        for topics, bootstrap in (([r.in_topic], k.for_tier(self.tier)), ([self._results_topic, self._dlq_topic],
                                  self._bootstrap), ([r.out_topic] if r.out_topic else [], self._next_bootstrap)):
            try:
                ensure_topics(self.settings, topics, bootstrap=bootstrap)
            except Exception as exc:  # KafkaException, timeouts: say where and what to check
                raise WorkerError(f"cannot create/check topics {topics} on the Kafka cluster at {bootstrap}: "
                                  f"{exc}; check TIERFLOW_KAFKA__BOOTSTRAP / TIERFLOW_KAFKA__TIER_BOOTSTRAP") from exc
        # Connect producers (an idempotent producer needs a producer id before its first send) and trace the
        # inference function before joining the group, so no batch waits for them.
        for bootstrap in {self._bootstrap, self._next_bootstrap}:
            self._producer(bootstrap).list_topics(timeout=10)
        self.model.predict(np.zeros((1, *self.model.input_shape), dtype=self.model.input_dtype))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.tier}")
        group = f"{self.settings.app}.v{self.version}.{self.tier}.watch.{uuid.uuid4().hex[:12]}"
        self._watcher = Consumer(consumer_config(self.settings, group))
        self._recall_answers()
        stats = {"statistics.interval.ms": self.ws.lag_interval_ms, "stats_cb": self._on_stats} \
            if self.ws.lag_interval_ms else {}
        self._consumer = Consumer(consumer_config(self.settings, r.group_id, bootstrap=k.for_tier(self.tier),
                                                  **{"client.id": f"{self.tier}-{self.version}"}, **stats))
        self._consumer.subscribe([r.in_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("worker started", extra={"tier": self.tier, "version": self.version, "in": r.in_topic,
                                          "out": r.out_topic, "group": r.group_id, "http_port": self.http_port})

    def close(self) -> None:
        self._drain()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        for c in (self._consumer, self._watcher):
            if c is not None:
                c.close()
        self._consumer = self._watcher = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        log.info("worker stopped", extra={"tier": self.tier, "pending": len(self.pending)})

    def _drain(self) -> None:
        """Publish what is staged, see every forward answered (or answer it degraded when its window closes),
        then commit: a worker lets go of its partitions only with nothing left that it owns."""
        try:
            self._publish_staged(wait=True)
            last = self.pending.last_close()
            give_up = time.monotonic() + max(0, (last or 0) - self.clock.now()) / 1000 + 10
            while len(self.pending) and self._watcher is not None and time.monotonic() < give_up:
                self._watch_answers()
                self._answer_overdue()
                self._serve_deliveries(0.01)
            for p in self._producers.values():
                p.flush(30)
            self._commit(final=True)
        except WorkerError as exc:
            log.error("not committing unacknowledged outputs", extra={"tier": self.tier, "error": str(exc)})
        except Exception:  # e.g. the broker went away: what is not committed is redone by the next owner
            log.exception("drain failed; uncommitted records will be replayed", extra={"tier": self.tier})

    def _on_assign(self, consumer: Any, partitions: list) -> None:
        self._assigned = True
        log.info("partitions assigned", extra={"tier": self.tier, "partitions": [p.partition for p in partitions]})

    def _on_revoke(self, consumer: Any, partitions: list) -> None:
        self._drain()
        log.info("partitions revoked", extra={"tier": self.tier, "partitions": [p.partition for p in partitions]})

    def _on_stats(self, stats_json: str) -> None:
        """Consumer lag summed over the assigned partitions (librdkafka reports -1 where unknown)."""
        import json

        lags = [p.get("consumer_lag", -1) for t in json.loads(stats_json).get("topics", {}).values()
                for pid, p in t.get("partitions", {}).items() if pid != "-1"]
        known = [lag for lag in lags if lag >= 0]
        if known:
            self.metrics.lag.set(sum(known))

    # ---- the batch ----------------------------------------------------------------------------------

    def _fetch(self, timeout_s: float) -> list:
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        if self.ws.max_batch <= 1:
            return [first]
        return [first, *self._consumer.consume(self.ws.max_batch - 1, timeout=self.ws.max_wait_ms / 1000)]

    def _stage(self, records: list) -> None:
        """Validate a micro-batch (dead-lettering bad records, dropping replays and expired work) and hand its
        samples to the inference thread."""
        received = self.clock.now()
        batch = self.ledger.open(len(records))
        r, grace = self.route, self.ws.degrade_grace_ms
        requests: list[Request] = []
        replayed = expired = 0
        for m in records:
            if m.error():
                log.warning("consumer error", extra={"tier": self.tier, "error": str(m.error())})
                continue
            batch.consumed(m.topic(), m.partition(), m.offset())
            if not r.is_entry:
                self.clock.observe(m.timestamp()[1], received)
            try:
                req = self.reader.read(m, received)
            except Rejected as rej:
                self._dead_letter(batch, m, rej)
                continue
            known = self._known_entry(req.request_id)
            if known is not None:
                if r.is_entry and known not in ("", req.entry):
                    self._dead_letter(batch, m, Rejected("duplicate_id", f"request id {req.request_id!r} was "
                                                         f"already answered (request at {known}); ids must be unique"))
                else:  # a replay after a restart or a rebalance, or a duplicated forward: answered already
                    replayed += 1
                continue
            if not r.is_entry and received >= window_close(req.deadline, r.index, r.n_tiers, grace):
                expired += 1  # the tier below owns it now and answers it
                continue
            self._in_progress[req.request_id] = req.entry
            requests.append(req)
        self.metrics.record("replayed", replayed)
        self.metrics.record("expired", expired)
        inference = self._executor.submit(self._infer, np.stack([q.sample for q in requests])) if requests else None
        self._staged.append(Staged(batch, requests, received, inference))

    def _known_entry(self, request_id: str) -> str | None:
        """Where a request id already known here entered ("" if unknown), None if it is new."""
        known = self.memory.entry_of(request_id)
        if known is None:
            p = self.pending.get(request_id)
            known = p.entry if p is not None else self._in_progress.get(request_id)
        return known

    def _infer(self, samples: np.ndarray) -> Inference:
        """Runs on the inference thread: one predict, the shared cascade decision, the forwards encoded."""
        t0 = time.perf_counter()
        probs, activation = self.model.predict(samples)
        decision = self.model.decide(probs)
        confident = decision.answered | (self.route.out_topic is None)
        forwards = [] if confident.all() else codec.encode_tensors(activation[~confident],
                                                                  dtype=self.ws.activation_dtype)
        # Per-batch conversions: numpy scalar indexing per record costs more than one tolist().
        return Inference(decision.label.tolist(), decision.confidence.tolist(), decision.exit_id.tolist(),
                         confident.tolist(), forwards, time.perf_counter() - t0)

    def _publish_staged(self, wait: bool) -> None:
        """Publish staged batches in order: those whose inference is done, all of them if ``wait``, and
        always enough to keep at most PIPELINE_DEPTH batches inferring."""
        while self._staged:
            head = self._staged[0]
            if not (wait or len(self._staged) > PIPELINE_DEPTH or head.inference is None or head.inference.done()):
                return
            self._staged.popleft()
            self._publish(head)

    def _publish(self, staged: Staged) -> None:
        """Answer, forward or drop every request of a staged batch (waits for its inference)."""
        batch, r = staged.batch, self.route
        try:
            inf = staged.inference.result() if staged.inference is not None else None
        except Exception as exc:  # the model failed on this batch: its records are dead letters, not a crash
            log.exception("inference failed", extra={"tier": self.tier})
            for req in staged.requests:
                self._dead_letter(batch, req.record, Rejected("inference", f"inference failed: {exc}"))
            inf = None
        if inf is not None:
            self.metrics.batch_size.observe(len(staged.requests))
            self.metrics.predict_seconds.observe(inf.seconds)
            now, grace = self.clock.now(), self.ws.degrade_grace_ms
            forwards = iter(inf.forwards)
            outcomes: Counter[str] = Counter()
            exits: Counter[int] = Counter()
            for i, req in enumerate(staged.requests):
                activation = None if inf.confident[i] else next(forwards)
                action = decide(now, req.deadline, r.index, r.n_tiers, grace, inf.confident[i])
                try:
                    if action is Action.FORWARD:
                        self._forward(batch, req, activation, inf.labels[i], inf.confidences[i], inf.exits[i],
                                      staged.received)
                        outcomes["forwarded"] += 1
                    elif action is Action.EXPIRE:
                        outcomes["expired"] += 1
                    else:
                        self._answer(batch, req.request_id, req.entry, inf.labels[i], inf.confidences[i],
                                     inf.exits[i], req.origin_ts, req.reply_to, staged.received,
                                     degraded=action is Action.DEGRADE)
                        outcomes["answered"] += 1
                        exits[inf.exits[i]] += 1
                        if action is Action.DEGRADE:
                            self.metrics.degraded.inc()
                except Exception as exc:  # e.g. the producer refused the output: the record is a dead letter
                    self._dead_letter(batch, req.record, Rejected("produce", f"output not produced: {exc}"))
            for outcome, n in outcomes.items():
                self.metrics.record(outcome, n)
            for exit_id, n in exits.items():
                self.metrics.exit(exit_id, n)
            self.metrics.pending.set(len(self.pending))
        for req in staged.requests:
            self._in_progress.pop(req.request_id, None)
        batch.published = True
        self.consumed += batch.records

    def _bound_unacknowledged(self, timeout_s: float = 30) -> None:
        """Wait for the oldest unacknowledged batch when too many are in flight (like a flush would, without
        also waiting for the newest outputs)."""
        if self.ledger.unacknowledged() <= MAX_UNACKNOWLEDGED_BATCHES:
            return
        oldest = self.ledger.oldest_unacknowledged()
        if not oldest.published:
            self._publish_staged(wait=True)
        give_up = time.monotonic() + timeout_s
        while not oldest.acknowledged:
            if time.monotonic() > give_up:
                raise WorkerError(f"{oldest.outstanding} records not acknowledged within {timeout_s:g} s")
            self._serve_deliveries(0.01)

    # ---- outputs ------------------------------------------------------------------------------------

    def _producer(self, bootstrap: str) -> Any:
        if bootstrap not in self._producers:
            from confluent_kafka import Producer

            self._producers[bootstrap] = Producer(producer_config(self.settings, bootstrap,
                                                                  **{"client.id": f"{self.tier}-{self.version}"}))
        return self._producers[bootstrap]

    def _serve_deliveries(self, timeout_s: float = 0) -> None:
        for p in self._producers.values():
            p.poll(timeout_s / len(self._producers))  # returns as soon as it has served a report

    def _send(self, batch: Batch | None, bootstrap: str, topic: str, key: str | bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]], header_bytes: int, timestamp: int = 0) -> None:
        """Produce one output: of ``batch`` (its commit waits for the acknowledgement), or best effort."""
        producer = self._producer(bootstrap)
        self._bytes_out[topic] += len(value or b"") + len(key or b"") + header_bytes
        on_delivery = batch.delivered if batch is not None else self._reply_delivered
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery,
                                 timestamp=timestamp)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                producer.poll(0.1)
        if batch is not None:
            batch.outstanding += 1

    def _reply_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:  # the answer is on APP.results; a client's reply-to topic may not exist
            self.metrics.record("reply_to_failed")
            log.warning("answer not delivered to tf-reply-to", extra={"tier": self.tier, "topic": msg.topic(),
                                                                       "error": str(err)})

    def _answer(self, batch: Batch, rid: str, entry: str, label: int, confidence: float, exit_id: int,
                origin: int | None, reply_to: str | None, received: int, degraded: bool = False) -> None:
        now = self.clock.now()
        tier_latency, latency = now - received, (now - origin) if origin is not None else None
        body = self.answers.body(rid, label, confidence, exit_id, tier_latency, latency, degraded)
        rid_b = rid.encode()
        headers, header_bytes = self.answers.headers(rid_b, entry.encode())
        self._send(batch, self._bootstrap, self._results_topic, rid_b, body, headers, header_bytes)
        self.memory.add(rid, entry)
        if reply_to and reply_to != self._results_topic:
            try:
                self._send(None, self._bootstrap, reply_to, rid_b, body, headers, header_bytes)
            except Exception as exc:  # the answer is on APP.results already
                self._reply_delivered(exc, _Topic(reply_to))
        self._tier_latency_ms.append(tier_latency)
        if latency is not None:
            self._e2e_latency_ms.append(max(latency, 0))

    def _forward(self, batch: Batch, req: Request, activation: bytes, label: int, confidence: float,
                 exit_id: int, received: int) -> None:
        """Send the activation to the next tier, stamped with this tier's clock, and remember this tier's own
        prediction for the fallback; the batch's offsets wait until the request is answered."""
        r = self.route
        headers, header_bytes = self.forward_headers.build(req.request_id.encode(), req.origin_ts, req.deadline,
                                                           req.reply_to, req.entry.encode())
        self._send(batch, self._next_bootstrap, r.out_topic, req.record.key(), activation, headers, header_bytes,
                   timestamp=self.clock.now())
        close_at = window_close(req.deadline, r.index, r.n_tiers, self.ws.degrade_grace_ms)
        self.pending.add(Pending(req.request_id, close_at, label, confidence, exit_id, req.reply_to, req.origin_ts,
                                 received, req.entry, batch))
        batch.unresolved += 1

    def _dead_letter(self, batch: Batch, m: Any, rej: Rejected) -> None:
        self.metrics.dead_letter(rej.kind)
        log.warning("dead letter", extra={"tier": self.tier, "reason": rej.reason, "topic": m.topic(),
                                          "partition": m.partition(), "offset": m.offset()})
        dl = deadletter.build(m, rej.kind, rej.reason, self.tier, self.ws.dlq_max_bytes)
        self._send(batch, self._bootstrap, self._dlq_topic, dl.key, dl.value, dl.headers,
                   sum(len(k) + len(v) for k, v in dl.headers))

    def _commit(self, final: bool = False) -> None:
        """Serve delivery reports, then commit the offsets of the done prefix of batches. A rejected output
        stops the worker without committing its batch, so its records are consumed again after a restart."""
        from confluent_kafka import KafkaException, TopicPartition

        if self._tier_latency_ms:
            observe_many(self.metrics.tier_latency, np.asarray(self._tier_latency_ms) / 1000)
            observe_many(self.metrics.e2e_latency, np.asarray(self._e2e_latency_ms) / 1000)
            self._tier_latency_ms.clear()
            self._e2e_latency_ms.clear()
        self._serve_deliveries()
        for topic, n in self._bytes_out.items():
            self.metrics.sent(topic, n)
        self._bytes_out.clear()
        try:
            offsets = self.ledger.take_done()
        except BrokerRejected as exc:
            raise WorkerError(str(exc)) from None
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=not final)
        except KafkaException as exc:  # e.g. partitions moved in a rebalance: the new owner re-reads them
            log.warning("commit failed", extra={"tier": self.tier, "error": str(exc)})

    # ---- answers seen on APP.results ----------------------------------------------------------------

    def _recall_answers(self) -> None:
        """Fill the answer memory from APP.results over the last ``worker.answer_memory_s`` before consuming
        any input, so a record replayed after a crash or a rebalance is recognised as answered."""
        from confluent_kafka import OFFSET_END, TopicPartition

        topic, t0 = self._results_topic, time.monotonic()
        parts = sorted(self._watcher.list_topics(topic, timeout=10).topics[topic].partitions)
        since = self.clock.local() - self.ws.answer_memory_s * 1000
        if self.ws.answer_memory_s > 0:
            found = self._watcher.offsets_for_times([TopicPartition(topic, p, since) for p in parts], timeout=10)
        else:
            found = [TopicPartition(topic, p, OFFSET_END) for p in parts]
        assignment = [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                      for tp in found]
        self._watcher.assign(assignment)
        while time.monotonic() - t0 < 120:
            msgs = self._watcher.consume(1000, timeout=0.5)
            self._note_answers(msgs)
            # Caught up: a fetch came back empty with every partition's position known (or, on a topic with
            # nothing to read, none became known within a few fetch rounds).
            if not msgs and (time.monotonic() - t0 > 2 or all(
                    tp.offset >= 0 for tp in self._watcher.position(assignment))):
                break
        self._recalled = True
        self.metrics.answer_memory.set(len(self.memory))
        log.info("answers recalled", extra={"tier": self.tier, "answers": len(self.memory),
                                            "seconds": round(time.monotonic() - t0, 2)})

    def _note_answers(self, msgs: list) -> None:
        for m in msgs:
            if m.error():
                continue
            key = m.key()
            rid = key.decode(errors="replace") if key else ""
            entry = ""
            for name, value in m.headers() or ():
                if name == codec.ENTRY and value:
                    entry = value.decode(errors="replace")
            self.memory.add(rid, entry)
            p = self.pending.resolve(rid)
            if p is not None:
                p.batch.unresolved -= 1

    def _watch_answers(self) -> None:
        if self._watcher is None:
            return
        while True:
            msgs = self._watcher.consume(1000, timeout=0)
            self._note_answers(msgs)
            if len(msgs) < 1000:
                break
        self.metrics.pending.set(len(self.pending))
        self.metrics.answer_memory.set(len(self.memory))
        self.metrics.clock_correction.set(self.clock.correction_ms / 1000)

    def _answer_overdue(self) -> None:
        """Rule 3 of `runtime.ownership`: a forward whose window closed with no answer seen is answered
        here, degraded, with this tier's own best prediction."""
        now, due = self.clock.now(), self.pending.next_close()
        if due is None or due > now:
            return
        self._watch_answers()  # answers that arrived since the last look resolve their forwards first
        n = 0
        for p in self.pending.due(self.clock.now()):
            try:
                self._answer(p.batch, p.request_id, p.entry, p.label, p.confidence, p.exit_id, p.origin_ts,
                             p.reply_to, p.received_ts, degraded=True)
            except Exception as exc:  # nothing to fall back to here: restart, and the replay answers it
                raise WorkerError(f"degraded answer to {p.request_id!r} not produced: {exc}") from exc
            p.batch.unresolved -= 1
            self.metrics.exit(p.exit_id)
            n += 1
        if n:
            self.metrics.record("answered", n)
            self.metrics.degraded.inc(n)
            log.info("degraded answers published", extra={"tier": self.tier, "answers": n,
                                                          "pending": len(self.pending)})
            self.metrics.pending.set(len(self.pending))


def serve(settings: Settings, tier: str, model_uri: str, http_port: int | None = None) -> None:
    """Load the tier and run its worker until SIGTERM (the `tierflow worker` command)."""
    from ml.bundle import load_tier

    model = load_tier(model_uri, tier, tracking_uri=settings.mlflow.tracking_uri, cache_dir=settings.home / "models")
    TierWorker(settings, model, http_port=http_port).run()
