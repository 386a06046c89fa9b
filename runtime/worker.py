"""The tier worker: consume a micro-batch, run the tier's sub-model once, answer or forward, then commit.

One process serves one tier of one model version (`runtime.route`). The loop in `TierWorker.run` reads top to
bottom; who may answer and until when is `runtime.ownership`, what may be committed `runtime.ledger`, what a
record must look like `runtime.validation`, what is produced `runtime.outputs`. The sub-model runs batch k on
`runtime.inference`'s thread while the main thread publishes batch k-1 and decodes batch k+1.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter, deque
from typing import Any

from runtime import codec
from runtime.adaptive import attach as attach_adaptive_exits
from runtime.answers import AnswerWatch
from runtime.health import HealthServer
from runtime.inference import InferenceThread, Staged
from runtime.kafka import consumer_config
from runtime.ledger import BrokerRejected, CommitLedger
from runtime.metrics import WorkerMetrics
from runtime.outputs import Outputs
from runtime.ownership import (
    AnswerMemory,
    Pending,
    PendingForwards,
    TierClock,
    decide,
    known_entry,
    window_close,
)
from runtime.route import ensure_route_topics, plan_route
from runtime.settings import Settings
from runtime.validation import Limits, RecordReader, Rejected, Request

log = logging.getLogger("tierflow.worker")

MAX_UNACKNOWLEDGED_BATCHES = 8
PIPELINE_DEPTH = 1  # micro-batches inferring while the main thread decodes the next one
COMMIT_INTERVAL_S = 0.1  # offsets are committed at most this often (and at every drain); a replay is harmless


class WorkerError(RuntimeError):
    """The worker cannot go on safely (e.g. the broker rejected a result); it exits without committing."""


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
        self.outputs = Outputs(settings, self.route, model, self.metrics, self.clock, self.memory, self.pending)
        self.answers = AnswerWatch(settings, self.tier, version, self.memory, self.pending, self.clock, self.metrics,
                                   entry=self.route.is_entry, follow=self.route.out_topic is not None)
        self.answers.on_reply = self._publish_reply
        self.consumed = 0  # input records done with (answered, forwarded, dropped or dead-lettered)
        self._stop = threading.Event()
        self._assigned = False
        self._heartbeat = time.monotonic()
        self._committed = 0.0  # time.monotonic() of the last commit
        self._in_progress: dict[str, str] = {}  # request id -> entry, staged and not yet published
        self._staged: deque[Staged] = deque()
        self.inference = InferenceThread(model, is_last=self.route.out_topic is None, name=self.tier,
                                         activation_dtype=self.ws.activation_dtype)
        self.adaptive = attach_adaptive_exits(self.ws.adaptive, model, self.route.out_topic is not None, self.inference,
                                              self.outputs.answers, self.metrics, self.answers, self.clock)
        self._consumer: Any = None
        self._http: HealthServer | None = None
        self._http_port = self.ws.http_port if http_port is None else http_port
        self._http_host = http_host or self.ws.http_host

    # ---- lifecycle ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._assigned and self.answers.recalled and not self._stop.is_set()

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
                self.answers.poll()  # answers of upper tiers resolve this tier's forwards
                lost = self.outputs.answer_overdue()  # forwards unanswered at their close: degraded
                if self.adaptive is not None:  # the thresholds in force follow the upstream's latency
                    self.adaptive.lost(time.monotonic(), lost)
                    self.adaptive.update(time.monotonic())
                self._commit()  # offsets of the acknowledged, resolved prefix of batches
        finally:
            self.close()

    def start(self) -> None:
        from confluent_kafka import Consumer

        k, r = self.settings.kafka, self.route
        alive = lambda: time.monotonic() - self._heartbeat < 60  # noqa: E731 - the main loop turns
        self._http = HealthServer(self._http_host, self._http_port, self.metrics.registry,
                                  ready=lambda: self.ready, alive=alive).start()
        try:
            ensure_route_topics(self.settings, r)
        except Exception as exc:  # KafkaException, timeouts: say where and what to check
            raise WorkerError(f"cannot create/check the topics of the {self.tier} worker: {exc}; check "
                              "TIERFLOW_KAFKA__BOOTSTRAP / TIERFLOW_KAFKA__TIER_BOOTSTRAP") from exc
        # Connect the producers and trace the inference function before joining the group, so no batch waits for
        # them; recall the answers before consuming anything.
        self.outputs.connect()
        self.inference.warm_up()
        self.answers.start()
        stats = {"statistics.interval.ms": self.ws.lag_interval_ms, "stats_cb": self.metrics.observe_lag} \
            if self.ws.lag_interval_ms else {}
        self._consumer = Consumer(consumer_config(self.settings, r.group_id, bootstrap=k.for_tier(self.tier),
                                                  **{"client.id": f"{self.tier}-{self.version}"}, **stats))
        self._consumer.subscribe([r.in_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("worker started", extra={"tier": self.tier, "version": self.version, "in": r.in_topic,
                                          "out": r.out_topic, "group": r.group_id, "http_port": self.http_port})

    def close(self) -> None:
        self._drain()
        self.inference.shutdown()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.answers.close()
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
            give_up = time.monotonic() + min(max(0, (last or 0) - self.clock.now()) / 1000 + 1,
                                             self.ws.drain_timeout_s)
            while len(self.pending) and self.answers.recalled and time.monotonic() < give_up:
                self.answers.poll(True)
                self.outputs.answer_overdue()
                self.outputs.serve_deliveries(0.01)
            self.outputs.flush(30)
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

    def _publish_reply(self, p: Pending, reply: Any) -> None:
        """The entry tier: an upper tier's answer to a request this tier forwarded is its answer."""
        self.outputs.publish_reply(p.batch, p.request_id, p.entry, p.reply_to, reply)

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
        r = self.route
        closes_after = window_close(0, r.index, r.n_tiers, self.ws.degrade_grace_ms)  # this tier's, past a deadline
        requests: list[Request] = []
        replayed = expired = newest = 0
        for m in records:
            if m.error():
                log.warning("consumer error", extra={"tier": self.tier, "error": str(m.error())})
                continue
            batch.consumed(m.topic(), m.partition(), m.offset())
            if not r.is_entry and (stamp := m.timestamp()[1]) > newest:
                newest = stamp
            try:
                req = self.reader.read(m, received)
            except Rejected as rej:
                self.outputs.dead_letter(batch, m, rej)
                continue
            known = known_entry(req.request_id, self.memory, self.pending, self._in_progress)
            if known is None and r.is_entry:
                reply = self.answers.take_early(req.request_id)
                if reply is not None:  # answered above before this tier held it (it restarted): publish that
                    self.outputs.publish_reply(batch, req.request_id, req.entry, req.reply_to, reply)
                    continue
            if known is not None:
                if r.is_entry and known not in ("", req.entry):
                    self.outputs.dead_letter(batch, m, Rejected("duplicate_id", f"request id {req.request_id!r} was "
                                                         f"already answered (request at {known}); ids must be unique"))
                else:  # a replay after a restart or a rebalance, or a duplicated forward: answered already
                    replayed += 1
                continue
            req.close_at = req.deadline + closes_after
            if not r.is_entry and received >= req.close_at:
                expired += 1  # the tier below owns it now and answers it
                continue
            self._in_progress[req.request_id] = req.entry
            requests.append(req)
        if newest:  # the sender's clock, as the newest forward of the batch carries it
            self.clock.observe(newest, received)
        self.metrics.record("replayed", replayed)
        self.metrics.record("expired", expired)
        inference = None
        if requests:
            requests, samples, nonfinite = self.reader.stack(requests)
            for req in nonfinite:
                del self._in_progress[req.request_id]
                self.outputs.dead_letter(batch, req.record, Rejected("decode", codec.NOT_FINITE))
            inference = self.inference.submit(samples) if requests else None
        self._staged.append(Staged(batch, requests, received, inference))

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
            inf, failed = None, Rejected("inference", f"inference failed: {exc}")
            for req in staged.requests:
                self.outputs.dead_letter(batch, req.record, failed)
        if inf is not None:
            self.metrics.batch_size.observe(len(staged.requests))
            self.metrics.predict_seconds.observe(inf.seconds)
            now, forwards, outcomes = self.clock.now(), iter(inf.forwards), Counter()
            self.outputs.answers.in_force(self.model.exit_ids, inf.thresholds, inf.thresholds is not self.model.thresholds)
            for i, req in enumerate(staged.requests):
                activation = None if inf.confident[i] else next(forwards)
                action = decide(now, req.close_at, self.ws.degrade_grace_ms, entry=r.is_entry,
                                top=r.out_topic is None, confident=inf.confident[i])
                try:
                    outcomes[self.outputs.act(action, batch, req, activation, inf.labels[i], inf.confidences[i],
                                              inf.exits[i], staged.received, now)] += 1
                except Exception as exc:  # e.g. the producer refused the output: the record is a dead letter
                    self.outputs.dead_letter(batch, req.record, Rejected("produce", f"output not produced: {exc}"))
            self.metrics.count(outcomes)
            if self.adaptive is not None:
                self.adaptive.outcomes(time.monotonic(), outcomes)
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
            self.outputs.serve_deliveries(0.01)

    def _commit(self, final: bool = False) -> None:
        """Serve delivery reports, then commit the offsets of the done prefix of batches. A rejected output
        stops the worker without committing its batch, so its records are consumed again after a restart."""
        self.outputs.serve_deliveries()
        self.outputs.report()
        now = time.monotonic()
        if not final and now - self._committed < COMMIT_INTERVAL_S:
            return
        self._committed = now
        try:
            self.ledger.commit(self._consumer, final)
        except BrokerRejected as exc:
            raise WorkerError(str(exc)) from None


def serve(settings: Settings, tier: str, model_uri: str, http_port: int | None = None) -> None:
    """Load the tier and run its worker until SIGTERM (the `tierflow worker` command)."""
    from ml.bundle import load_tier

    model = load_tier(model_uri, tier, tracking_uri=settings.mlflow.tracking_uri, cache_dir=settings.home / "models")
    TierWorker(settings, model, http_port=http_port).run()
