"""Prometheus metrics of a tier worker and its HTTP endpoints (/healthz, /readyz, /metrics)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class WorkerMetrics:
    """One registry per worker, labelled with tier and model version."""

    def __init__(self, tier: str, version: str):
        self.registry = CollectorRegistry()
        r, labels = self.registry, {"tier": tier, "version": version}
        self.records = Counter("tierflow_records", "Records consumed, by outcome "
                               "(answered, forwarded, dlq)", ["tier", "version", "outcome"], registry=r)
        self.exits = Counter("tierflow_exit_answers", "Answers per exit", ["tier", "version", "exit"], registry=r)
        self.degraded = Counter("tierflow_degraded_answers", "Degraded answers published after a missed deadline",
                                ["tier", "version"], registry=r).labels(**labels)
        self.dlq = Counter("tierflow_dlq_records", "Records sent to the dead-letter topic, by reason kind",
                           ["tier", "version", "reason"], registry=r)
        self.batch_size = Histogram("tierflow_batch_size", "Records per micro-batch", ["tier", "version"],
                                    buckets=_BATCH_BUCKETS, registry=r).labels(**labels)
        self.predict_seconds = Histogram("tierflow_predict_seconds", "Model time per micro-batch",
                                         ["tier", "version"], buckets=_LATENCY_BUCKETS, registry=r).labels(**labels)
        self.tier_latency = Histogram("tierflow_tier_latency_seconds", "Receipt to publish, per record",
                                      ["tier", "version"], buckets=_LATENCY_BUCKETS, registry=r).labels(**labels)
        self.e2e_latency = Histogram("tierflow_end_to_end_latency_seconds",
                                     "Request origin to answer, for answers this tier published",
                                     ["tier", "version"], buckets=_LATENCY_BUCKETS, registry=r).labels(**labels)
        self.pending = Gauge("tierflow_pending_forwards", "Forwarded requests still waiting for an answer",
                             ["tier", "version"], registry=r).labels(**labels)
        self.lag = Gauge("tierflow_consumer_lag", "Records behind the end of the input topic (librdkafka "
                         "statistics; needs a broker with correct high watermarks)", ["tier", "version"],
                         registry=r).labels(**labels)
        self.bytes_out = Counter("tierflow_bytes_out", "Bytes produced (key + value + headers), by topic",
                                 ["tier", "version", "topic"], registry=r)
        self._labels = labels
        self._children: dict[tuple, Counter] = {}

    def _child(self, metric: Counter, **label: str) -> Counter:
        """The labelled child, cached: `.labels()` builds and checks the label tuple on every call."""
        key = (id(metric), *label.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**self._labels, **label)
        return child

    def record(self, outcome: str, n: int = 1) -> None:
        if n:
            self._child(self.records, outcome=outcome).inc(n)

    def exit(self, exit_id: int, n: int = 1) -> None:
        self._child(self.exits, exit=str(exit_id)).inc(n)

    def sent(self, topic: str, n_bytes: int) -> None:
        self._child(self.bytes_out, topic=topic).inc(n_bytes)

    def dead_letter(self, reason: str) -> None:
        self._child(self.records, outcome="dlq").inc()
        self._child(self.dlq, reason=reason).inc()


def observe_many(histogram: Histogram, values: Sequence[float] | np.ndarray) -> None:
    """`histogram.observe(v)` for every value, with one increment per bucket instead of two per value.

    prometheus_client has no bulk observe, so this updates the same fields `Histogram.observe` does
    (`_upper_bounds`, `_buckets`, `_sum`); tests/unit/runtime/test_metrics_batch.py checks they still agree.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return
    bounds = histogram._upper_bounds
    # observe() counts v in the first bucket whose bound is >= v, which is what side="left" finds.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for bucket, n in zip(histogram._buckets, counts.tolist(), strict=True):
        if n:
            bucket.inc(n)


class HealthServer:
    """Tiny HTTP server in a daemon thread; `ready` and `alive` are callables evaluated per request."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], bool],
                 alive: Callable[[], bool]):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = outer.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
                elif path == "/readyz":
                    ok = outer.ready()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.registry, self.ready, self.alive = registry, ready, alive
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
