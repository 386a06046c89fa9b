"""Ingest against the real broker and S3: exactly once across crashes, malformed records in the DLQ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.shards import parse_manifest, read_dataset
from plugins.hooks.s3 import DatasetStore, split_uri
from plugins.ingest import SOURCE_OFFSET, SOURCE_PARTITION, IngestEvent, ingest
from runtime.settings import Settings, settings_env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def tagged_samples(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST-shaped samples whose first two pixels spell a unique id (to count duplicates)."""
    rng = np.random.default_rng(start)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    ids = np.arange(start, start + n)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = ids // 256, ids % 256
    return x, ids % 10


def sample_ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(np.int64) * 256 + x[:, 0, 1, 0]


def publish(settings: Settings, start: int, n: int, malformed_every: int = 0) -> int:
    """Good samples via the runtime's publisher, plus malformed ones; returns how many were malformed."""
    from confluent_kafka import Producer

    from runtime import codec
    from runtime.client import publish_training
    from runtime.kafka import producer_config

    x, y = tagged_samples(start, n)
    publish_training(settings, x, y, progress=False)
    if not malformed_every:
        return 0
    bad = [(b"not a tensor", codec.make_headers("b1", tf_label=1)),
           (codec.encode_tensor(x[0]), codec.make_headers("b2")),  # no label
           (codec.encode_tensor(x[0]), codec.make_headers("b3", tf_label="Spaceship")),  # unknown class
           (codec.encode_tensor(np.zeros((5, 5), np.float32)), codec.make_headers("b4", tf_label=2))]  # shape
    producer = Producer(producer_config(settings))
    count = n // malformed_every
    for i in range(count):
        value, headers = bad[i % len(bad)]
        producer.produce(settings.topic("training"), key=f"bad-{i}", value=value, headers=headers)
    assert producer.flush(30) == 0
    return count


def dataset_ids(settings: Settings, manifest_uri: str) -> np.ndarray:
    store = DatasetStore.from_settings(settings)
    manifest = parse_manifest(store.get_bytes(split_uri(manifest_uri)[1]))
    data = read_dataset(manifest, fetch=store.get_bytes)
    assert data.x.shape[1:] == (28, 28, 1) and data.x.dtype == np.uint8
    assert np.array_equal(data.y, sample_ids(data.x) % 10)  # labels stayed with their samples
    return sample_ids(data.x)


def dlq_records(settings: Settings, expect: int) -> list[dict[str, str]]:
    from confluent_kafka import Consumer

    from runtime import codec
    from runtime.kafka import consumer_config

    consumer = Consumer(consumer_config(settings, f"dlq-check-{settings.app}"))
    consumer.subscribe([settings.topic("dlq")])
    out: list[dict[str, str]] = []
    idle = 0
    try:
        while idle < 10 and len(out) < expect * 3:
            msgs = consumer.consume(500, timeout=0.5)
            idle = 0 if msgs else idle + 1
            out += [codec.parse_headers(m.headers()) for m in msgs if m.error() is None]
            if len(out) >= expect and not msgs:
                break
    finally:
        consumer.close()
    return out


def fast(settings: Settings, shard_records: int = 100) -> Settings:
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(
        update={"shard_records": shard_records, "idle_timeout_s": 4.0})})


class Crash(Exception):
    pass


def test_crash_between_upload_and_commit_then_rerun_is_exactly_once(stack_settings: Settings):
    settings = fast(stack_settings)
    n_bad = publish(settings, 0, 900, malformed_every=90)
    uploads: list[IngestEvent] = []

    def crash_on_third_upload(event: IngestEvent) -> None:
        if event.kind == "uploaded":
            uploads.append(event)
            if len(uploads) == 3:
                raise Crash("simulated crash after an upload, before its commit")

    with pytest.raises(Crash):
        ingest(settings, on_event=crash_on_third_upload)
    first = ingest(settings)
    ids = dataset_ids(settings, first.manifest_uri)
    assert sorted(ids.tolist()) == list(range(900))  # each record exactly once
    assert first.records == 900 and first.malformed >= 1
    dlq = dlq_records(settings, n_bad)
    offsets = {(d[SOURCE_PARTITION], d[SOURCE_OFFSET]) for d in dlq}
    assert len(offsets) == n_bad  # every malformed record reached the DLQ (at least once)
    reasons = " ".join(d["tf-error"] for d in dlq)
    for reason in ("not a tensor record", "missing tf-label", "unknown labels", "does not fit"):
        assert reason in reasons

    # New data -> a new version holding old and new records; nothing new -> no new version.
    publish(settings, 900, 150)
    second = ingest(settings)
    assert second.version and second.version > first.version and second.new_records == 150
    assert sorted(dataset_ids(settings, second.manifest_uri).tolist()) == list(range(1050))
    third = ingest(settings, idle_timeout_s=1.0)
    assert third.manifest_uri is None and third.latest_manifest_uri == second.manifest_uri


def test_sigkill_mid_ingest_then_rerun_is_exactly_once(stack_settings: Settings):
    settings = fast(stack_settings, shard_records=50)
    total = 1500
    n_bad = publish(settings, 0, total, malformed_every=100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(settings_env(settings))
    cmd = [sys.executable, "-m", "plugins.ingest"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        if line.startswith(("uploaded", "committed")):
            seen.append(line)
        if sum(s.startswith("uploaded") for s in seen) >= 4:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    store = DatasetStore.from_settings(settings)
    assert not list(store.keys(f"{settings.ingest.prefix}/{settings.app}/versions/"))  # killed before its manifest

    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["records"] == total
    assert sorted(dataset_ids(settings, result["manifest_uri"]).tolist()) == list(range(total))
    assert len({(d[SOURCE_PARTITION], d[SOURCE_OFFSET]) for d in dlq_records(settings, n_bad)}) == n_bad
