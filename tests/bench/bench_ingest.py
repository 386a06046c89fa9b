"""Benchmark: ingest throughput (Kafka -> NPZ shards in S3 + manifest) against the raw consume rate of
the same records on the same broker in the same run (a consumer that only reads). Prints MB/s of
both, the ratio (target >= 0.5) and the machine.

Run: ``.venv/bin/python -m pytest -m bench tests/bench/bench_ingest.py -s``
(env BENCH_INGEST_RECORDS, default 30000 Fashion-MNIST samples, ~24 MB of tensor records).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

pytestmark = pytest.mark.bench


def raw_consume(settings, expect: int) -> tuple[int, float]:
    """Bytes read and seconds from the first to the last record, doing nothing with them."""
    from confluent_kafka import Consumer

    from runtime.kafka import consumer_config

    consumer = Consumer(consumer_config(settings, f"raw-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([settings.topic("training")])
    n = size = 0
    first = None
    try:
        while n < expect:
            msgs = consumer.consume(1000, timeout=0.2)
            if msgs and first is None:
                first = time.monotonic()
            for m in msgs:
                if m.error() is None:
                    n += 1
                    size += len(m.value() or b"") + len(m.key() or b"")
        return size, time.monotonic() - first
    finally:
        consumer.close()


def test_bench_ingest_vs_raw_consume(stack_settings):
    from ml.datasets import load_fashion_mnist
    from ml.report import machine
    from plugins.ingest import ingest
    from runtime.client import publish_training

    n = int(os.environ.get("BENCH_INGEST_RECORDS", "30000"))
    data = load_fashion_mnist("train").subset(n, seed=0)
    settings = stack_settings.model_copy(update={"ingest": stack_settings.ingest.model_copy(
        update={"idle_timeout_s": 3.0})})
    publish_training(settings, data.x, data.y)
    print("\nmachine:", machine(), "load average:", " ".join(f"{v:.2f}" for v in os.getloadavg()))
    raw_bytes, raw_before = raw_consume(settings, n)
    result = ingest(settings)
    _, raw_after = raw_consume(settings, n)  # the baseline before and after ingest: load on 2 cores drifts
    assert result.records == n and result.malformed == 0
    raw_s = (raw_before + raw_after) / 2
    raw_rate = raw_bytes / raw_s / 1e6
    ingest_rate = result.bytes_consumed / result.active_seconds / 1e6
    print(f"records {n}, {raw_bytes / 1e6:.1f} MB, shards {result.shards_written} of "
          f"{settings.ingest.shard_records} offsets")
    print(f"raw consume : {raw_rate:8.1f} MB/s (mean of {raw_before:.2f} s before and {raw_after:.2f} s after)")
    print(f"ingest      : {ingest_rate:8.1f} MB/s ({result.active_seconds:.2f} s active, {result.seconds:.2f} s "
          f"with group join) -> S3 shards + manifest, offsets committed after each upload")
    print(f"ratio ingest/raw: {ingest_rate / raw_rate:.2f} (target >= 0.5)")
