"""Benchmark: one tier worker at saturation vs the bare batched `predict` of the same sub-model.

A fresh worker per round (in this process, on the embedded broker) drains a topic filled before it started (20,000
requests by default): decode, one predict per micro-batch, shared cascade decision, publish answers/forwards,
flush, commit. Two baselines over the same samples
in batches of `worker.max_batch`, each followed by the cascade decision and nothing else:

* ``keras``: Keras ``Model.predict(x, batch_size=max_batch)`` of the sub-model (the literal "bare batched predict");
* ``traced``: `TierModel.predict`, the traced function the worker itself calls (stricter: no Keras loop at all).

3 paired rounds, median ratios (the machine is shared). Prints records/s and the ratios (target >= 0.8) per tier,
the worker's Python/Kafka cost per record above the traced baseline, and the machine.

With ``--tracing RATIO`` each tier is measured again with OpenTelemetry tracing on (new traces sampled at RATIO,
spans to a file), and the cost is printed as the ratio of the two worker/traced-predict ratios of the same run.

Run: ``.venv/bin/python -m tests.bench.bench_worker [--n 5000] [--tiers edge,cloud,full] [--tracing 1]``
or ``.venv/bin/pytest -m bench tests/bench/bench_worker.py -s``.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid

import numpy as np
import pytest

from runtime import codec
from tests.bench.runtime_common import bench_bundle, machine_line


def _inputs(bundle, tier: str, x: np.ndarray) -> np.ndarray:
    """What the tier consumes for these images: raw pixels for the entry, else upstream activations."""
    from ml.bundle import load_bundle, read_manifest

    if tier in ("full", read_manifest(bundle).tier_names[0]):
        return x
    h = x
    for name, tm in load_bundle(bundle).items():
        if name == tier:
            return h.astype(np.float32)
        _, h = tm.predict(h)
    raise ValueError(tier)


def bare_predict_rate(model, inputs: np.ndarray, batch: int) -> float:
    """Records/s of TierModel.predict + the cascade decision over inputs in batches, nothing else."""
    t = time.perf_counter()
    for i in range(0, len(inputs), batch):
        model.decide(model.predict(inputs[i:i + batch])[0])
    return len(inputs) / (time.perf_counter() - t)


def keras_predict_rate(model, inputs: np.ndarray, batch: int) -> float:
    """Records/s of Keras ``Model.predict`` over inputs with ``batch_size=batch``, then the cascade decision."""
    x = model.prepare(inputs)
    t = time.perf_counter()
    out = model.model.predict(x, batch_size=batch, verbose=0)
    outs = [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]
    model.decide(outs if model.is_last else outs[:-1])
    return len(inputs) / (time.perf_counter() - t)


def paired_rates(bootstrap: str, model, inputs: np.ndarray, batch: int, rounds: int = 3, tracing=None,
                 records: int = 20_000) -> list[dict]:
    """Per round: the bare predict rates, then the rate of a fresh TierWorker draining a topic filled with
    ``records`` requests (the inputs, repeated) before it started.

    Measured back to back in each round, so load from other processes on a shared machine hits both sides
    of a ratio alike. The worker's rate runs from its first published micro-batch to its last, so its start
    (group join, answer recall) is not in it, and no producer shares the process while it drains.
    """
    model.predict(inputs[:batch])  # traces the tier's inference function
    keras_predict_rate(model, inputs[:batch], batch)  # builds Keras' predict function
    rows = []
    for _ in range(rounds):
        keras = keras_predict_rate(model, inputs, batch)
        bare = bare_predict_rate(model, inputs, batch)
        rate, mean_batch = drain_rate(bootstrap, model, inputs, records, tracing)
        rows.append({"keras_rps": keras, "bare_rps": bare, "worker_rps": rate, "ratio": rate / bare,
                     "keras_ratio": rate / keras, "mean_batch": mean_batch})
    return rows


def drain_rate(bootstrap: str, model, inputs: np.ndarray, records: int, tracing=None) -> tuple[float, float]:
    """Records/s of one TierWorker (in this process) draining ``records`` requests produced before it
    started, and its mean micro-batch size."""
    from confluent_kafka import Producer

    from runtime.kafka import ensure_topics, producer_config
    from runtime.settings import KafkaSettings, Settings, WorkerSettings
    from runtime.worker import TierWorker

    # No upper tier runs here: forwards stay pending (far deadlines), and stop() does not wait for them.
    settings = Settings(app=f"bench{uuid.uuid4().hex[:8]}", kafka=KafkaSettings(bootstrap=bootstrap),
                        worker=WorkerSettings(max_deadline_ms=600_000, drain_timeout_s=1),
                        **({"tracing": tracing} if tracing is not None else {}))  # runs on older checkouts too
    worker = TierWorker(settings, model, http_port=0, http_host="127.0.0.1")
    topic = worker.route.in_topic
    ensure_topics(settings, [topic])
    producer = Producer(producer_config(settings))
    values, deadline = codec.encode_tensors(inputs), codec.now_ms() + 600_000
    for i in range(records):
        headers = codec.make_headers(f"b{i}", version=worker.version, origin_ts=codec.now_ms(), deadline=deadline)
        producer.produce(topic, key=f"b{i}", value=values[i % len(values)], headers=headers)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while (n0 := worker.consumed) == 0:
        time.sleep(0.001)
    t0 = time.perf_counter()
    while (n := worker.consumed) < records:
        time.sleep(0.002)
    rate = (n - n0) / (time.perf_counter() - t0)
    worker.stop()
    thread.join(60)
    batches = worker.metrics.registry.get_sample_value("tierflow_batch_size_count",
                                                       {"tier": worker.tier, "version": worker.version})
    return rate, n / batches


def run(n: int = 5000, tiers: tuple[str, ...] = ("edge", "cloud", "full"), bundle=None, bootstrap=None,
        width: float = 0.5, tracing: float = 0.0, records: int = 20_000) -> list[dict]:
    from ml.bundle import load_tier
    from ml.datasets import load_fashion_mnist
    from runtime.broker import EmbeddedBroker
    from runtime.settings import WorkerSettings

    bundle = bench_bundle(bundle, width)
    x = load_fashion_mnist("test").x[:n]
    batch = WorkerSettings().max_batch
    print(machine_line())
    print(f"bundle {bundle}, max_batch {batch}")
    rows = []
    broker = None if bootstrap else EmbeddedBroker().__enter__()
    try:
        for tier in tiers:
            model = load_tier(bundle, tier)
            inputs = _inputs(bundle, tier, x)
            rounds = paired_rates(bootstrap or broker.bootstrap, model, inputs, batch, records=records)
            median = _median([r["ratio"] for r in rounds])
            keras_median = _median([r["keras_ratio"] for r in rounds])
            overhead_us = 1e6 * _median([1 / r["worker_rps"] - 1 / r["bare_rps"] for r in rounds])
            rows.append({"tier": tier, "rounds": rounds, "median_ratio": median, "keras_median_ratio": keras_median,
                         "worker_rps": rounds[-1]["worker_rps"], "overhead_us": overhead_us})
            print(f"{tier:5s} ({model.flops / 1e6:5.1f} MFLOPs/rec, mean batch {rounds[0]['mean_batch']:4.1f}): "
                  + " | ".join(f"keras {r['keras_rps']:6.0f}, traced {r['bare_rps']:6.0f}, worker {r['worker_rps']:6.0f}"
                               for r in rounds) + " rec/s")
            print(f"      worker/keras predict {keras_median:4.2f}, worker/traced predict {median:4.2f} (target >= 0.8); "
                  f"worker cost above the traced predict: {overhead_us:4.1f} us/record")
            if tracing:
                rows[-1]["tracing"] = tracing_cost(bootstrap or broker.bootstrap, model, inputs, batch, median, tracing)
    finally:
        if broker is not None:
            broker.stop()
    return rows


def tracing_cost(bootstrap: str, model, inputs: np.ndarray, batch: int, off_ratio: float, sample_ratio: float) -> dict:
    """The same worker with tracing on (spans of sampled requests to a file): its worker/traced-predict
    ratio against the one just measured with tracing off, each against the bare predict of its own rounds."""
    import tempfile

    from runtime.settings import TracingSettings

    out = tempfile.mkdtemp(prefix="tierflow-bench-traces-")
    rounds = paired_rates(bootstrap, model, inputs, batch, tracing=TracingSettings(
        enabled=True, exporter="file", file=f"{out}/{{tier}}.jsonl", sample_ratio=sample_ratio))
    on_ratio = _median([r["ratio"] for r in rounds])
    print(f"      tracing on (sample ratio {sample_ratio:g}, file exporter): worker/traced predict {on_ratio:4.2f}; "
          f"tracing on / off {on_ratio / off_ratio:4.2f}")
    return {"sample_ratio": sample_ratio, "on_ratio": on_ratio, "off_ratio": off_ratio,
            "on_over_off": on_ratio / off_ratio}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@pytest.mark.bench
def test_bench_worker(kafka_bootstrap, tiny_bundle):
    rows = run(n=3000, bundle=tiny_bundle, bootstrap=kafka_bootstrap, records=3000)
    assert all(r["worker_rps"] > 0 for r in rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="distinct test images (the predict baselines' inputs)")
    ap.add_argument("--records", type=int, default=20_000, help="requests each worker drains per round")
    ap.add_argument("--tiers", default="edge,cloud,full")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--width", type=float, default=0.5, help="channel width of the benchmark bundle's CNN")
    ap.add_argument("--tracing", type=float, default=0.0, metavar="SAMPLE_RATIO",
                    help="also measure each tier with OpenTelemetry tracing on at this sample ratio (0: not)")
    args = ap.parse_args()
    run(args.n, tuple(args.tiers.split(",")), args.bundle, width=args.width, tracing=args.tracing,
        records=args.records)
