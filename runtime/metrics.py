"""Prometheus metrics of a tier worker (served by `runtime.health.HealthServer` on /metrics)."""

from __future__ import annotations

from collections import Counter as Counter_
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class WorkerMetrics:
    """One registry per worker, labelled with tier and model version."""

    def __init__(self, tier: str, version: str):
        self.registry = CollectorRegistry()
        r, labels = self.registry, {"tier": tier, "version": version}
        self.records = Counter("tierflow_records", "What the tier did, by outcome: answered (every answer of "
                               "its own exits, degraded ones included), relayed (the entry tier published a tier "
                               "above's answer), forwarded, expired (reached this upper tier after its window "
                               "closed; the tier below answers), replayed (already answered), dlq",
                               ["tier", "version", "outcome"], registry=r)
        self.exits = Counter("tierflow_exit_answers", "Answers per exit", ["tier", "version", "exit"], registry=r)
        self.degraded = Counter("tierflow_degraded_answers", "Answers published with degraded=true (the upper "
                                "tiers missed the deadline)", ["tier", "version"], registry=r).labels(**labels)
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
        self.clock_correction = Gauge("tierflow_clock_correction_seconds", "How far this tier's clock is "
                                      "moved forward to the clock of the tier below", ["tier", "version"],
                                      registry=r).labels(**labels)
        self.answer_memory = Gauge("tierflow_answer_memory", "Request ids known to be answered",
                                   ["tier", "version"], registry=r).labels(**labels)
        self.bytes_out = Counter("tierflow_bytes_out", "Bytes produced (key + value + headers), by topic",
                                 ["tier", "version", "topic"], registry=r)
        self.threshold = Gauge("tierflow_threshold", "Threshold in force per exit of this tier: the calibrated one "
                               "unless adaptive exits moved it (exits that always answer are not listed)",
                               ["tier", "version", "exit"], registry=r)
        self.operating_point = Gauge("tierflow_operating_point", "Adaptive exits: the operating point in force "
                                     "(0 = the calibrated thresholds, higher = more answered here)",
                                     ["tier", "version"], registry=r).labels(**labels)
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

    def count(self, outcomes: Counter_[str | tuple[str, int]]) -> None:
        """The outcomes of one micro-batch (`runtime.outputs.Outputs.act`), counted once per batch."""
        for outcome, n in outcomes.items():
            if isinstance(outcome, tuple):  # an answer: ("exit" | "degraded", exit id)
                self.record("answered", n)
                self.exit(outcome[1], n)
                if outcome[0] == "degraded":
                    self.degraded.inc(n)
            else:
                self.record(outcome, n)

    def observe_lag(self, stats_json: str) -> None:
        """librdkafka statistics callback: consumer lag summed over the assigned partitions (-1 = unknown)."""
        import json

        lags = [p.get("consumer_lag", -1) for t in json.loads(stats_json).get("topics", {}).values()
                for pid, p in t.get("partitions", {}).items() if pid != "-1"]
        known = [lag for lag in lags if lag >= 0]
        if known:
            self.lag.set(sum(known))

    def thresholds_in_force(self, exit_ids: Sequence[int], thresholds: Sequence[float | None], point: int) -> None:
        for e, t in zip(exit_ids, thresholds, strict=True):
            if t is not None:
                self.threshold.labels(**self._labels, exit=str(e)).set(t)
        self.operating_point.set(point)

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
