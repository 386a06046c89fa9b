"""The tier worker: consume a micro-batch, run the tier's sub-model once, answer or forward, then commit.

One process serves one tier of one model version:

* the entry tier (the bundle's first tier, or ``full`` for cloud-only serving) consumes ``APP.requests``
  in the consumer group ``APP.edge``, shared by every version so that a rollout hands requests over
  without replaying or skipping any; it serves requests of any (or no) ``tf-version``;
* every other tier consumes ``APP.v<version>.<prev>-<tier>`` in the group ``APP.v<version>.<tier>``
  and dead-letters records of another version, so no network ever sees another version's activations.

Offsets are committed only after every result, forward and dead letter of the batch is acknowledged by
the broker (at-least-once; the client de-duplicates by request id). A tier that forwarded a request
watches ``APP.results``; if no answer shows up by the request's deadline plus a grace that grows
towards the edge (so the highest live tier answers first and the others see it and stay quiet), it
publishes its own best prediction with ``degraded: true``.

Inference overlaps Kafka I/O: the sub-model runs micro-batch k on an inference thread (TensorFlow
releases the GIL) while the main thread publishes the outputs of batch k-1 and decodes batch k+1.
Outputs are still published, and offsets committed, in consumption order.
"""

from __future__ import annotations

import heapq
import logging
import math
import signal
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from json import dumps as _json_dumps
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

import numpy as np

from runtime import codec
from runtime.codec import CodecError
from runtime.kafka import consumer_config, ensure_topics, producer_config
from runtime.metrics import HealthServer, WorkerMetrics, observe_many
from runtime.settings import Settings

log = logging.getLogger("tierflow.worker")

FULL = "full"  # the unpartitioned model, served alone (cloud-only)


class WorkerError(RuntimeError):
    """The worker cannot go on safely (e.g. the broker rejected a result); it exits without committing."""


class Rejected(Exception):
    """A record that goes to the dead-letter topic; ``kind`` labels the counter, ``reason`` the header."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


@dataclass
class Pending:
    """What a tier knows about a request it forwarded, enough to answer it degraded."""

    request_id: str
    degrade_at: int  # epoch ms
    label: int
    confidence: float
    exit_id: int
    reply_to: str | None
    origin_ts: int | None
    received_ts: int


@dataclass
class Batch:
    """Offsets of one consumed micro-batch and the outputs it produced that the broker has not acked yet.

    Its offsets are committed once it is published (its inference done and every output produced) and it
    and every batch before it are fully acknowledged, so producing the next batch overlaps with the
    acknowledgements of this one without giving up at-least-once.
    """

    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per (topic, partition)
    outstanding: int = 0
    errors: list[str] = field(default_factory=list)
    published: bool = True
    records: int = 0  # records taken from the input topic

    def delivered(self, err: Any, msg: Any) -> None:
        self.outstanding -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")


@dataclass
class Valid:
    """A decoded request of a micro-batch, waiting for its inference."""

    record: Any
    headers: dict[str, str]
    origin_ts: int | None
    deadline: int | None


@dataclass
class Inference:
    """What the inference thread returns for a micro-batch: per-row decisions as Python lists."""

    labels: list[int]
    confidences: list[float]
    exits: list[int]
    answered: list[bool]
    forwards: list[bytes]  # encoded activations of the forwarded rows, in row order
    seconds: float


@dataclass
class Staged:
    """A micro-batch whose inference runs (or ran) on the inference thread, not yet published."""

    batch: Batch
    valid: list[Valid]
    received: int
    inference: Future | None


MAX_INFLIGHT_BATCHES = 8
PIPELINE_DEPTH = 1  # micro-batches inferring while the main thread decodes the next one
ANSWERED_MEMORY = 200_000  # request ids seen on APP.results that a watching tier remembers


def _json_float(x: float) -> str:
    return repr(x) if math.isfinite(x) else _json_dumps(x)


def _json_opt_int(x: int | None) -> str:
    return "null" if x is None else str(x)


@dataclass(frozen=True)
class Route:
    """Where one tier reads and writes (pure function of settings, tier and version)."""

    tier: str
    version: str
    is_entry: bool
    index: int
    n_tiers: int
    prev_tier: str | None
    next_tier: str | None
    in_topic: str
    out_topic: str | None
    group_id: str

    @property
    def degrade_grace_factor(self) -> int:
        """Lower tiers wait longer, so the highest live tier answers first."""
        return self.n_tiers - 1 - self.index


def plan_route(settings: Settings, tier: str, version: str, tier_names: list[str]) -> Route:
    if tier == FULL:
        return Route(tier, version, True, 0, 1, None, None, settings.topic("requests"), None,
                     f"{settings.app}.edge")
    if tier not in tier_names:
        raise ValueError(f"tier {tier!r} is not in the bundle's tiers {tier_names} (or 'full')")
    i = tier_names.index(tier)
    prev_tier = tier_names[i - 1] if i > 0 else None
    next_tier = tier_names[i + 1] if i + 1 < len(tier_names) else None
    in_topic = settings.topic("requests") if i == 0 else settings.link_topic(version, prev_tier, tier)
    out_topic = settings.link_topic(version, tier, next_tier) if next_tier else None
    group = f"{settings.app}.edge" if i == 0 else f"{settings.app}.v{version}.{tier}"
    return Route(tier, version, i == 0, i, len(tier_names), prev_tier, next_tier, in_topic, out_topic, group)


class TierWorker:
    """Serves one tier; `run()` blocks until `stop()` (or SIGTERM/SIGINT) and returns after a clean drain."""

    def __init__(self, settings: Settings, model: Any, *, http_port: int | None = None,
                 http_host: str | None = None):
        self.settings = settings
        self.model = model
        self.ws = settings.worker
        version = str(self.ws.version or model.version)
        tier_names = model.manifest.tier_names if model.manifest is not None else [model.name]
        self.route = plan_route(settings, model.name, version, tier_names)
        self.tier, self.version = self.route.tier, version
        self.metrics = WorkerMetrics(self.tier, version)
        self._stop = threading.Event()
        self._assigned = False
        self._watch_assigned = self.route.out_topic is None
        self._heartbeat = time.monotonic()
        self._pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[int, str]] = []
        self.consumed = 0  # input records done with (answered, forwarded, dead-lettered or skipped)
        self._answered: dict[str, None] = {}  # insertion-ordered set of recently answered request ids
        self._inflight: deque[Batch] = deque()
        self._staged: deque[Staged] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._bytes_out: Counter[str] = Counter()
        self._producers: dict[str, Any] = {}
        self._consumer: Any = None
        self._watcher: Any = None
        self._http: HealthServer | None = None
        self._http_port = self.ws.http_port if http_port is None else http_port
        self._http_host = http_host or self.ws.http_host
        self._results_topic = settings.topic("results")
        # Headers every answer of this worker carries besides its request id (built once).
        self._result_headers = codec.make_headers("", model=model.model_name, version=version,
                                                  content_type=codec.JSON, tf_source_tier=self.tier)[1:]
        self._result_headers_bytes = len(codec.REQUEST_ID) + sum(len(k) + len(v) for k, v in self._result_headers)
        # The constant middle of every result's JSON body (fields in codec.RESULT_FIELDS order).
        self._result_tier_json = f'"tier":{_json_str(self.tier)},"model_version":{_json_str(version)}'
        self._class_json: dict[int, str] = {}
        self._layout: codec.TensorLayout | None = None  # of the last tensor record decoded
        # The constant head (version) and tail (content type, source tier) of a forward's headers, in
        # codec.make_headers order.
        self._forward_version = (codec.VERSION, version.encode())
        self._forward_tail = codec.make_headers("", content_type=codec.TENSOR, tf_source_tier=self.tier)[1:]
        self._forward_const_bytes = sum(len(k) + len(v) for k, v in (self._forward_version, *self._forward_tail)) \
            + len(codec.REQUEST_ID) + len(codec.MODEL) + len(codec.ORIGIN_TS) + len(codec.DEADLINE)
        # Latencies (ms) of answers published since the last _settle, observed there once per batch.
        self._tier_latency_ms: list[int] = []
        self._e2e_latency_ms: list[int] = []
        self._dlq_topic = settings.topic("dlq")

    # ---- lifecycle ----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._assigned and self._watch_assigned and not self._stop.is_set()

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None

    def stop(self, *_: object) -> None:
        """Stop fetching; the current batch is finished, flushed and committed."""
        if not self._stop.is_set():
            log.info("stop requested", extra={"tier": self.tier})
        self._stop.set()

    def start(self) -> None:
        from confluent_kafka import Consumer

        k, r = self.settings.kafka, self.route
        self._http = HealthServer(self._http_host, self._http_port, self.metrics.registry,
                                  ready=lambda: self.ready, alive=self._alive).start()
        in_bootstrap = k.for_tier(self.tier)
        for topics, bootstrap in (([r.in_topic], in_bootstrap), ([self._results_topic, self._dlq_topic], k.bootstrap),
                                  ([r.out_topic] if r.out_topic else [], k.for_tier(r.next_tier or self.tier))):
            try:
                ensure_topics(self.settings, topics, bootstrap=bootstrap)
            except Exception as exc:  # KafkaException, timeouts: say where and what to check
                raise WorkerError(f"cannot create/check topics {topics} on the Kafka cluster at {bootstrap}: "
                                  f"{exc}; check TIERFLOW_KAFKA__BOOTSTRAP / TIERFLOW_KAFKA__TIER_BOOTSTRAP") from exc
        # Connect producers now (an idempotent producer needs a producer id before its first send) and
        # trace the inference function, both before joining the group, so no batch waits for them.
        self._producer(k.bootstrap)
        if r.next_tier:
            self._producer(k.for_tier(r.next_tier)).list_topics(timeout=10)
        self._producer(k.bootstrap).list_topics(timeout=10)
        self.model.predict(np.zeros((1, *self.model.input_shape), dtype=self.model.input_dtype))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{self.tier}")
        stats = {"statistics.interval.ms": self.ws.lag_interval_ms, "stats_cb": self._on_stats} \
            if self.ws.lag_interval_ms else {}
        self._consumer = Consumer(consumer_config(self.settings, r.group_id, bootstrap=in_bootstrap,
                                                  **{"client.id": f"{self.tier}-{self.version}"}, **stats))
        self._consumer.subscribe([r.in_topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        if r.out_topic:
            # Answers to requests this tier forwarded; an own group per process, never committed.
            group = f"{self.settings.app}.v{self.version}.{self.tier}.watch.{uuid.uuid4().hex[:12]}"
            self._watcher = Consumer(consumer_config(self.settings, group, **{"auto.offset.reset": "latest"}))
            self._watcher.subscribe([self._results_topic], on_assign=self._on_watch_assign)
        log.info("worker started", extra={"tier": self.tier, "version": self.version, "in": r.in_topic,
                                          "out": r.out_topic, "group": r.group_id, "http_port": self.http_port})

    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        try:
            self.start()
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                msgs = self._fetch(0 if self._staged else 0.05)  # never sit in poll while a batch infers
                if msgs:
                    self._stage(msgs)
                self._publish_staged(wait=not msgs)
                if len(self._inflight) > MAX_INFLIGHT_BATCHES:
                    self._await_oldest()
                self._watch_results()
                self._expire_pending()
                self._settle()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._publish_staged(wait=True)
            self._settle(block=True, final=True)
        except WorkerError as exc:
            log.error("not committing unacknowledged outputs", extra={"tier": self.tier, "error": str(exc)})
        except Exception:  # e.g. the model failed on a batch: its offsets stay uncommitted, so it is redone
            log.exception("not committing a batch that failed", extra={"tier": self.tier})
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
        log.info("worker stopped", extra={"tier": self.tier, "pending": len(self._pending)})

    def _alive(self) -> bool:
        return time.monotonic() - self._heartbeat < 60

    def _on_assign(self, consumer: Any, partitions: list) -> None:
        self._assigned = True
        log.info("partitions assigned", extra={"tier": self.tier, "partitions": [p.partition for p in partitions]})

    def _on_revoke(self, consumer: Any, partitions: list) -> None:
        # Commit what is done before the partitions move, so their new owner does not redo it.
        try:
            self._publish_staged(wait=True)
            self._settle(block=True, final=True)
        except WorkerError as exc:
            log.error("not committing unacknowledged outputs", extra={"tier": self.tier, "error": str(exc)})
        log.info("partitions revoked", extra={"tier": self.tier, "partitions": [p.partition for p in partitions]})

    def _on_stats(self, stats_json: str) -> None:
        """Consumer lag summed over the assigned partitions (librdkafka reports -1 where unknown)."""
        import json

        lags = [p.get("consumer_lag", -1) for t in json.loads(stats_json).get("topics", {}).values()
                for pid, p in t.get("partitions", {}).items() if pid != "-1"]
        known = [lag for lag in lags if lag >= 0]
        if known:
            self.metrics.lag.set(sum(known))

    def _on_watch_assign(self, consumer: Any, partitions: list) -> None:
        self._watch_assigned = True

    # ---- the batch ----------------------------------------------------------------------------------

    def _fetch(self, timeout_s: float) -> list:
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        if self.ws.max_batch <= 1:
            return [first]
        return [first, *self._consumer.consume(self.ws.max_batch - 1, timeout=self.ws.max_wait_ms / 1000)]

    def _stage(self, msgs: list) -> None:
        """Validate a micro-batch (dead-lettering bad records) and hand its samples to the inference thread."""
        received = codec.now_ms()
        batch = Batch(published=False, records=len(msgs))
        valid: list[Valid] = []
        samples: list[np.ndarray] = []
        for m in msgs:
            if m.error():
                log.warning("consumer error", extra={"tier": self.tier, "error": str(m.error())})
                continue
            key = (m.topic(), m.partition())
            batch.offsets[key] = max(batch.offsets.get(key, 0), m.offset() + 1)
            try:
                headers, origin, deadline, sample = self._validate(m)
            except Rejected as rej:
                self._dead_letter(batch, m, rej)
                continue
            if self._answered and headers[codec.REQUEST_ID] in self._answered:
                # Already answered (a replay after a crash, or a degraded answer while this tier was down):
                # serving it again would only produce a duplicate.
                self.metrics.record("skipped_answered")
                continue
            valid.append(Valid(m, headers, origin, deadline))
            samples.append(sample)
        inference = self._executor.submit(self._infer, np.stack(samples)) if valid else None
        self._inflight.append(batch)
        self._staged.append(Staged(batch, valid, received, inference))

    def _infer(self, samples: np.ndarray) -> Inference:
        """Runs on the inference thread: one predict, the shared cascade decision, the forwards encoded."""
        t0 = time.perf_counter()
        probs, activation = self.model.predict(samples)
        decision = self.model.decide(probs)
        answers = decision.answered | (self.route.out_topic is None)
        forwards = [] if answers.all() else codec.encode_tensors(activation[~answers], dtype=self.ws.activation_dtype)
        # Per-batch conversions: numpy scalar indexing per record costs more than one tolist().
        return Inference(decision.label.tolist(), decision.confidence.tolist(), decision.exit_id.tolist(),
                         answers.tolist(), forwards, time.perf_counter() - t0)

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
        """Answer or forward every valid request of a staged batch (waits for its inference)."""
        batch, valid, received = staged.batch, staged.valid, staged.received
        if staged.inference is not None:
            inf = staged.inference.result()
            self.metrics.batch_size.observe(len(valid))
            self.metrics.predict_seconds.observe(inf.seconds)
            forwards = iter(inf.forwards)
            labels, confidences, exits, answered = inf.labels, inf.confidences, inf.exits, inf.answered
            exit_counts: Counter[int] = Counter()
            for i, v in enumerate(valid):
                rid = v.headers[codec.REQUEST_ID]
                if answered[i]:
                    self._answer(batch, rid, labels[i], confidences[i], exits[i], v.origin_ts,
                                 v.headers.get(codec.REPLY_TO), received)
                    exit_counts[exits[i]] += 1
                else:
                    self._forward(batch, v.record, v.headers, v.origin_ts, v.deadline, next(forwards), labels[i],
                                  confidences[i], exits[i], received)
            n_answered = sum(exit_counts.values())
            self.metrics.record("answered", n_answered)
            self.metrics.record("forwarded", len(valid) - n_answered)
            for exit_id, n in exit_counts.items():
                self.metrics.exit(exit_id, n)
            self.metrics.pending.set(len(self._pending))
        batch.published = True
        self.consumed += batch.records

    def _await_oldest(self, timeout_s: float = 30) -> None:
        """Serve delivery reports until the oldest in-flight batch is acknowledged.

        Bounds the in-flight work like a flush would, without also waiting for the newest outputs.
        """
        if self._inflight and not self._inflight[0].published:
            self._publish_staged(wait=True)
        give_up = time.monotonic() + timeout_s
        while self._inflight and self._inflight[0].outstanding > 0:
            if time.monotonic() > give_up:
                raise WorkerError(f"{self._inflight[0].outstanding} records not acknowledged within {timeout_s:g} s")
            for p in self._producers.values():
                p.poll(0.01 / len(self._producers))  # returns as soon as it has served a report

    def _validate(self, m: Any) -> tuple[dict[str, str], int | None, int | None, np.ndarray]:
        """Headers, origin timestamp, deadline and the decoded sample of a record, or Rejected."""
        value = m.value()
        size = len(value) if value is not None else 0
        if size > self.ws.max_record_bytes:
            raise Rejected("oversized", f"record of {size} bytes exceeds worker.max_record_bytes="
                                        f"{self.ws.max_record_bytes}")
        try:
            headers = codec.parse_headers(m.headers())
        except CodecError as exc:
            raise Rejected("headers", str(exc)) from None
        if not headers.get(codec.REQUEST_ID):
            raise Rejected("missing_header", f"missing header {codec.REQUEST_ID}")
        try:
            origin, deadline = codec.header_int(headers, codec.ORIGIN_TS), codec.header_int(headers, codec.DEADLINE)
        except CodecError as exc:
            raise Rejected("headers", str(exc)) from None
        if not self.route.is_entry:
            version = headers.get(codec.VERSION)
            if not version:
                raise Rejected("missing_header", f"missing header {codec.VERSION} on an activation record")
            if version != self.version:
                raise Rejected("version", f"activations of model version {version} reached the {self.tier} "
                                          f"worker of version {self.version}; versions are never mixed")
        try:
            content_type = headers.get(codec.CONTENT_TYPE) if self.route.is_entry else codec.TENSOR
            sample = self._layout.decode(value) if value and self._layout and content_type in (None, codec.TENSOR) \
                else None
            if sample is None:
                sample = self._decode(value, content_type)
        except CodecError as exc:
            raise Rejected("decode", str(exc)) from None
        return headers, origin, deadline, sample

    def _decode(self, value: bytes | None, content_type: str | None) -> np.ndarray:
        """Full decode and checks; remembers the layout of a tensor record for the next ones."""
        shape = self.model.input_shape
        dtype = self.model.input_dtype if self.route.is_entry else "float32"
        if content_type in (None, codec.TENSOR) and value:
            self._layout, sample = codec.TensorLayout.of(value, shape, dtype)
            return sample
        return codec.decode_input(value, content_type, shape, dtype)

    # ---- outputs ------------------------------------------------------------------------------------

    def _producer(self, bootstrap: str) -> Any:
        if bootstrap not in self._producers:
            from confluent_kafka import Producer

            self._producers[bootstrap] = Producer(producer_config(self.settings, bootstrap,
                                                                  **{"client.id": f"{self.tier}-{self.version}"}))
        return self._producers[bootstrap]

    def _send(self, batch: Batch, bootstrap: str, topic: str, key: str | bytes | None, value: bytes | None,
              headers: list[tuple[str, bytes]], header_bytes: int | None = None) -> None:
        """Produce one output of ``batch``; ``header_bytes`` saves summing constant headers."""
        producer = self._producer(bootstrap)
        if header_bytes is None:
            header_bytes = sum(len(k) + len(v) for k, v in headers)
        self._bytes_out[topic] += len(value or b"") + len(key or b"") + header_bytes
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=batch.delivered)
                batch.outstanding += 1
                return
            except BufferError:  # local queue full: let deliveries drain, then retry
                producer.poll(0.1)

    def _answer(self, batch: Batch, rid: str, label: int, confidence: float, exit_id: int, origin: int | None,
                reply_to: str | None, received: int, degraded: bool = False) -> None:
        now = codec.now_ms()
        tier_latency = now - received
        latency = (now - origin) if origin is not None else None
        self._tier_latency_ms.append(tier_latency)
        if latency is not None:
            self._e2e_latency_ms.append(max(latency, 0))
        class_json = self._class_json.get(label)
        if class_json is None:
            class_json = self._class_json[label] = _json_str(self.model.class_name(label))
        # = json.dumps(result dict, separators=(",", ":")) with the fields of codec.RESULT_FIELDS, byte for
        # byte (tests/unit/runtime/test_worker_outputs.py), without building a dict per answer.
        body = (f'{{"request_id":{_json_str(rid)},"label":{label},"class_name":{class_json},'
                f'"confidence":{_json_float(confidence)},"exit":{exit_id},{self._result_tier_json},'
                f'"tier_latency_ms":{tier_latency},"latency_ms":{_json_opt_int(latency)},'
                f'"degraded":{"true" if degraded else "false"}}}').encode()
        rid_bytes = rid.encode()
        headers = [(codec.REQUEST_ID, rid_bytes), *self._result_headers]
        header_bytes = self._result_headers_bytes + len(rid_bytes)
        bootstrap = self.settings.kafka.bootstrap
        self._send(batch, bootstrap, self._results_topic, rid, body, headers, header_bytes)
        if reply_to and reply_to != self._results_topic:
            self._send(batch, bootstrap, reply_to, rid, body, headers, header_bytes)

    def _forward(self, batch: Batch, m: Any, headers: dict[str, str], origin: int | None, deadline: int | None,
                 value: bytes, label: int, confidence: float, exit_id: int, received: int) -> None:
        """Send the encoded activation ``value`` to the next tier and remember this tier's prediction for the
        fallback."""
        rid = headers[codec.REQUEST_ID]
        if origin is None:
            origin = m.timestamp()[1] if m.timestamp()[1] > 0 else received
        deadline = deadline or origin + self.ws.default_deadline_ms
        reply_to = headers.get(codec.REPLY_TO)
        # = codec.make_headers(rid, model=, version=, origin_ts=, deadline=, reply_to=, content_type=TENSOR,
        # tf_source_tier=), built from constant parts (tests/unit/runtime/test_worker_outputs.py compares them).
        rid_b, model_b = rid.encode(), headers.get(codec.MODEL, self.model.model_name).encode()
        origin_b, deadline_b = str(origin).encode(), str(deadline).encode()
        header_bytes = self._forward_const_bytes + len(rid_b) + len(model_b) + len(origin_b) + len(deadline_b)
        if reply_to is None:
            out_headers = [(codec.REQUEST_ID, rid_b), (codec.MODEL, model_b), self._forward_version,
                           (codec.ORIGIN_TS, origin_b), (codec.DEADLINE, deadline_b), *self._forward_tail]
        else:
            reply_b = reply_to.encode()
            header_bytes += len(codec.REPLY_TO) + len(reply_b)
            out_headers = [(codec.REQUEST_ID, rid_b), (codec.MODEL, model_b), self._forward_version,
                           (codec.ORIGIN_TS, origin_b), (codec.DEADLINE, deadline_b), (codec.REPLY_TO, reply_b),
                           *self._forward_tail]
        self._send(batch, self.settings.kafka.for_tier(self.route.next_tier), self.route.out_topic, m.key(), value,
                   out_headers, header_bytes)
        degrade_at = deadline + self.ws.degrade_grace_ms * self.route.degrade_grace_factor
        self._pending[rid] = Pending(rid, degrade_at, label, confidence, exit_id, reply_to, origin, received)
        heapq.heappush(self._deadlines, (degrade_at, rid))

    def _dead_letter(self, batch: Batch, m: Any, rej: Rejected) -> None:
        self.metrics.dead_letter(rej.kind)
        log.warning("dead letter", extra={"tier": self.tier, "reason": rej.reason, "topic": m.topic(),
                                          "partition": m.partition(), "offset": m.offset()})
        headers = list(m.headers() or [])
        headers += [(codec.ERROR, rej.reason.encode()), ("tf-error-kind", rej.kind.encode()),
                    (codec.SOURCE_TIER, self.tier.encode()),
                    ("tf-dlq-origin", f"{m.topic()}/{m.partition()}/{m.offset()}".encode())]
        self._send(batch, self.settings.kafka.bootstrap, self._dlq_topic, m.key(), m.value(), headers)

    def _settle(self, block: bool = False, final: bool = False) -> None:
        """Serve delivery reports, then commit the offsets of the acknowledged prefix of batches.

        ``block`` waits for every output (bounded in-flight work; shutdown). A rejected output stops the
        worker without committing its batch, so the records are consumed again after a restart.
        """
        if self._tier_latency_ms:
            observe_many(self.metrics.tier_latency, np.asarray(self._tier_latency_ms) / 1000)
            observe_many(self.metrics.e2e_latency, np.asarray(self._e2e_latency_ms) / 1000)
            self._tier_latency_ms.clear()
            self._e2e_latency_ms.clear()
        for bootstrap, p in self._producers.items():
            left = p.flush(30) if block else p.poll(0)
            if block and left:
                raise WorkerError(f"{left} records not acknowledged by {bootstrap} within 30 s")
        for topic, n in self._bytes_out.items():
            self.metrics.sent(topic, n)
        self._bytes_out.clear()
        offsets: dict[tuple[str, int], int] = {}
        while self._inflight and self._inflight[0].published and self._inflight[0].outstanding == 0:
            batch = self._inflight[0]
            if batch.errors:
                self._commit(offsets, final)
                raise WorkerError(f"broker rejected {len(batch.errors)} records, e.g. {batch.errors[0]}; "
                                  "their batch is not committed")
            self._inflight.popleft()
            for key, off in batch.offsets.items():
                offsets[key] = max(offsets.get(key, 0), off)
        self._commit(offsets, final)

    def _commit(self, offsets: dict[tuple[str, int], int], sync: bool) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=not sync)
        except KafkaException as exc:  # e.g. partitions moved in a rebalance: the new owner re-reads them
            log.warning("commit failed", extra={"tier": self.tier, "error": str(exc)})

    # ---- deadline fallback --------------------------------------------------------------------------

    def _watch_results(self) -> None:
        if self._watcher is None:
            return
        msgs = self._watcher.consume(1000, timeout=0)
        for m in msgs:
            if m.error():
                continue
            key = m.key()
            rid = key.decode(errors="replace") if key else None
            if rid is None:
                rid = dict(m.headers() or []).get(codec.REQUEST_ID, b"").decode(errors="replace")
            self._pending.pop(rid, None)
            if self.ws.skip_answered:
                self._answered[rid] = None
        while len(self._answered) > ANSWERED_MEMORY:
            del self._answered[next(iter(self._answered))]
        if msgs:
            self.metrics.pending.set(len(self._pending))

    def _expire_pending(self) -> None:
        now = codec.now_ms()
        if not (self._deadlines and self._deadlines[0][0] <= now):
            return
        published = False
        batch = Batch()  # degraded answers: acknowledged like a batch without offsets
        self._inflight.append(batch)
        while self._deadlines and self._deadlines[0][0] <= now:
            degrade_at, rid = heapq.heappop(self._deadlines)
            p = self._pending.get(rid)
            if p is None or p.degrade_at != degrade_at:
                continue
            del self._pending[rid]
            self._answer(batch, rid, p.label, p.confidence, p.exit_id, p.origin_ts, p.reply_to, p.received_ts,
                         degraded=True)
            self.metrics.degraded.inc()
            self.metrics.exit(p.exit_id)
            published = True
        if published:
            log.info("degraded answers published", extra={"tier": self.tier, "pending": len(self._pending)})
            self.metrics.pending.set(len(self._pending))


def serve(settings: Settings, tier: str, model_uri: str, http_port: int | None = None) -> None:
    """Load the tier and run its worker until SIGTERM (the `tierflow worker` command)."""
    from ml.bundle import load_tier

    model = load_tier(model_uri, tier)
    TierWorker(settings, model, http_port=http_port).run()
