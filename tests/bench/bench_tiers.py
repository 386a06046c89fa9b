"""Benchmark: 3-tier early-exit serving vs cloud-only (the full model in one worker) at the same load.

Both deployments are real worker processes on the embedded broker, fed by the device simulator with the
same Fashion-MNIST test images: an open loop at a fixed rate (latency at equal offered load) and a
closed loop at fixed concurrency (throughput). Prints throughput, p50/p99 latency, accuracy, answers
per tier, bytes per request on every link (from the workers' byte counters), the 3-tier/cloud-only
ratios, and the machine.

Run: ``.venv/bin/python -m tests.bench.bench_tiers [--n 2000] [--rate 200] [--concurrency 32]``
or ``.venv/bin/pytest -m bench tests/bench/bench_tiers.py -s``.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.bench.runtime_common import bench_bundle, machine_line, metric_sum, scrape


def _bytes_by_topic(deployment) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in deployment.workers.values():
        for (name, labels), v in scrape(w.http_port).items():
            if name == "tierflow_bytes_out_total":
                topic = dict(labels)["topic"]
                out[topic] = out.get(topic, 0.0) + v
    return out


def measure(bootstrap: str, bundle: Path, tiers: tuple[str, ...], x, y, rate: float, concurrency: int,
            log_dir: Path, activation_dtype: str = "float32") -> dict:
    from runtime.client import simulate
    from runtime.local import LocalDeployment
    from runtime.settings import KafkaSettings, Settings, WorkerSettings

    settings = Settings(app=f"bt{uuid.uuid4().hex[:8]}", kafka=KafkaSettings(bootstrap=bootstrap),
                        worker=WorkerSettings(activation_dtype=activation_dtype))
    entry = tiers[0]
    with LocalDeployment(settings, bundle, log_dir, tiers=tiers) as dep:
        simulate(settings, x[:200], y[:200], concurrency=16, entry_tier=entry, progress=False)  # warm-up
        before = _bytes_by_topic(dep)
        open_loop = simulate(settings, x, y, rate=rate, entry_tier=entry, progress=True)
        after = _bytes_by_topic(dep)
        closed = simulate(settings, x, y, concurrency=concurrency, entry_tier=entry, progress=True)
        batches = {t: metric_sum(scrape(w.http_port), "tierflow_batch_size_sum") /
                   max(metric_sum(scrape(w.http_port), "tierflow_batch_size_count"), 1)
                   for t, w in dep.workers.items()}
    n = open_loop.sent
    links = {f"device->{entry}": open_loop.request_bytes / n}
    for a, b in zip(tiers, tiers[1:], strict=False):
        topic = settings.link_topic("local", a, b)
        links[f"{a}->{b}"] = (after.get(topic, 0) - before.get(topic, 0)) / n
    results = settings.topic("results")
    links["->results"] = (after.get(results, 0) - before.get(results, 0)) / n
    return {"open": open_loop, "closed": closed, "links": links, "mean_batch": batches}


def run(n: int = 2000, rate: float = 200.0, concurrency: int = 32, bundle=None, bootstrap=None,
        width: float = 0.5, epochs: int = 8, n_train: int = 12000) -> dict:
    from ml.contract import CLOUD_ONLY
    from ml.contract import TIERS as TIERS_3
    from ml.datasets import load_fashion_mnist
    from runtime.broker import EmbeddedBroker

    bundle = bench_bundle(bundle, width, epochs, n_train)
    test = load_fashion_mnist("test")
    x, y = test.x[:n], test.y[:n]
    print(machine_line())
    print(f"bundle {bundle}; {n} requests; open loop {rate:g} req/s; closed loop {concurrency} in flight")
    broker = None if bootstrap else EmbeddedBroker().__enter__()
    out = {}
    try:
        for name, tiers, act in (("3-tier", TIERS_3, "float32"), ("cloud-only", CLOUD_ONLY, "float32"),
                                 ("3-tier fp16 links", TIERS_3, "float16")):
            out[name] = measure(bootstrap or broker.bootstrap, bundle, tiers, x, y, rate, concurrency,
                                Path(tempfile.mkdtemp(prefix="bench-tiers-")), act)
    finally:
        if broker is not None:
            broker.stop()
    for name, m in out.items():
        o, c = m["open"], m["closed"]
        print(f"\n{name}: accuracy {o.accuracy:.4f}, answers per tier {o.per_tier}, degraded {o.degraded}, "
              f"missing {o.missing}")
        print(f"  open loop @ {rate:g}/s: p50 {o.percentile(50):.1f} ms, p95 {o.percentile(95):.1f} ms, "
              f"p99 {o.percentile(99):.1f} ms, throughput {o.throughput:.0f} req/s")
        print(f"  closed loop x{concurrency}: throughput {c.throughput:.0f} req/s, p50 {c.percentile(50):.1f} ms, "
              f"p99 {c.percentile(99):.1f} ms; mean batch per worker "
              + ", ".join(f"{t} {b:.1f}" for t, b in m["mean_batch"].items()))
        print("  bytes per request: " + ", ".join(f"{k} {v:.0f}" for k, v in m["links"].items()))
    t, c = out["3-tier"], out["cloud-only"]
    cloud_share = t["open"].per_tier.get("cloud", 0) / max(t["open"].answered, 1)
    print("\nratios 3-tier / cloud-only: "
          f"p50 {t['open'].percentile(50) / c['open'].percentile(50):.2f}, "
          f"p99 {t['open'].percentile(99) / c['open'].percentile(99):.2f}, "
          f"closed-loop throughput {t['closed'].throughput / c['closed'].throughput:.2f}, "
          f"accuracy {t['open'].accuracy / c['open'].accuracy:.3f}, "
          f"requests reaching the cloud {cloud_share:.2f}")
    return out


@pytest.mark.bench
def test_bench_tiers(kafka_bootstrap, tiny_bundle):
    out = run(n=600, rate=100, concurrency=16, bundle=tiny_bundle, bootstrap=kafka_bootstrap)  # tiny: no accuracy claims
    assert all(m["open"].missing == 0 for m in out.values())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=8, help="training epochs of the benchmark bundle")
    args = ap.parse_args()
    run(args.n, args.rate, args.concurrency, args.bundle, width=args.width, epochs=args.epochs)
