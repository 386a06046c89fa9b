"""Helpers for the data-plane integration tests: dataset slice, offline cascade, topic reader, deployment."""

from __future__ import annotations

import datetime
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtime.local import LocalDeployment, WorkerProcess, WorkerProcessError
from runtime.settings import KafkaSettings, Settings, WorkerSettings


@pytest.fixture(scope="session")
def fmnist_test():
    """The first 2,000 Fashion-MNIST test images (raw uint8 pixels) and labels."""
    from ml.datasets import load_fashion_mnist

    ds = load_fashion_mnist("test")
    return ds.x[:2000], ds.y[:2000]


def offline_cascade(bundle: Path, x: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Answering tier and label per sample, from the same sub-models chained in-process and the same
    thresholds, decided by `ml.evaluation.simulate_cascade` (i.e. `ml.cascade.decide`)."""
    from ml.bundle import load_bundle, read_manifest
    from ml.evaluation import simulate_cascade

    manifest = read_manifest(bundle)
    tiers = load_bundle(bundle)
    probs, h = [], x
    for tm in tiers.values():
        p, h = tm.predict(h)
        probs.extend(p)
    thresholds = [th for t in manifest.tiers for th in t.thresholds]
    tier_map = {t.name: t.exits for t in manifest.tiers}
    tier_of, _, label = simulate_cascade(probs, thresholds, tier_map, manifest.confidence)
    names = manifest.tier_names
    return [names[t] for t in tier_of], label


def read_topic(settings: Settings, topic: str, *, expect: int | None = None, timeout_s: float = 30.0,
               idle_s: float = 2.0) -> list:
    """All records of a topic from the beginning (until `expect` records, or nothing new for idle_s)."""
    from confluent_kafka import Consumer

    from runtime.kafka import consumer_config

    consumer = Consumer(consumer_config(settings, f"reader.{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    out, deadline, last_new = [], time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(500, timeout=0.2):
                if not m.error():
                    out.append(m)
                    last_new = time.monotonic()
            if expect is not None and len(out) >= expect:
                # keep reading a little to catch extra (duplicate) records
                if time.monotonic() - last_new > idle_s:
                    break
            elif expect is None and last_new is not None and time.monotonic() - last_new > idle_s:
                break
    finally:
        consumer.close()
    return out


def make_settings(bootstrap: str, **worker: object) -> Settings:
    return Settings(app=f"t{uuid.uuid4().hex[:10]}", kafka=KafkaSettings(bootstrap=bootstrap),
                    worker=WorkerSettings(**worker))


@pytest.fixture(scope="module")
def deployment_factory(kafka_bootstrap, tiny_bundle, tmp_path_factory) -> Iterator:
    """Start a 3-tier deployment of the tiny bundle (stopped at module end)."""
    started: list[LocalDeployment] = []

    def start(settings: Settings, tiers: tuple[str, ...] = ("edge", "fog", "cloud")) -> LocalDeployment:
        dep = LocalDeployment(settings, tiny_bundle, tmp_path_factory.mktemp("workers"), tiers=tiers)
        started.append(dep)
        return dep.start()

    yield start
    for dep in started:
        dep.stop()


def refused_start(settings: Settings, bundle: Path, log_dir: Path) -> tuple[str, str]:
    """Start a cloud worker the broker must refuse: (the start's error, the worker's log)."""
    worker = WorkerProcess(settings, "cloud", str(bundle), log_dir)
    worker.start()
    try:
        with pytest.raises(WorkerProcessError) as failed:
            worker.wait_ready(120)
    finally:
        worker.stop(5)
    return str(failed.value), worker.log_path.read_text(errors="replace")


def seconds_from_first_refusal_to_exit(log: str) -> float:
    """From librdkafka's first refused connection ("%3|<epoch s>|FAIL|...") to the worker's "worker stopped"."""
    first_refusal = float(re.search(r"^%3\|([0-9.]+)\|FAIL\|", log, re.M).group(1))
    stopped = datetime.datetime.fromisoformat(re.search(r'"ts": "([^"]+)".*"msg": "worker stopped"', log).group(1))
    return stopped.timestamp() - first_refusal
