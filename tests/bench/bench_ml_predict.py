"""Benchmark: how a tier runs a batch. ``TierModel.predict`` (one tf.function traced for any batch size)
against ``model(x, training=False)`` (eager) and ``model.predict_on_batch`` (Keras' compiled path), for
batch sizes 1..256 on the edge and cloud tiers of a tiny bundle. Prints per-call latency and the ratio
to the eager baseline measured in the same run, plus the machine.

Run: ``.venv/bin/python tests/bench/bench_ml_predict.py`` or ``pytest -m bench tests/bench/bench_ml_predict.py -s``.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pytest


def _time(fn, x, repeat: int) -> float:
    fn(x)  # warm-up (tracing)
    t = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    return (time.perf_counter() - t) / repeat * 1e3


def run(bundle_dir=None, batches=(1, 8, 32, 128, 256), repeat: int = 30) -> list[dict]:
    from ml.bundle import load_bundle_tier
    from ml.report import machine
    from ml.tiny import build_tiny_bundle

    if bundle_dir is None:
        bundle_dir = tempfile.mkdtemp() + "/bundle"
        build_tiny_bundle(bundle_dir)
    print("machine:", machine())
    rows = []
    for tier in ("edge", "cloud"):
        tm = load_bundle_tier(bundle_dir, tier)
        for b in batches:
            x = np.random.default_rng(0).uniform(0, 1, size=(b, *tm.input_shape)).astype("float32")
            eager = _time(lambda a, m=tm.model: m(a, training=False), x, repeat)
            pob = _time(lambda a, m=tm.model: m.predict_on_batch(a), x, repeat)
            fn = _time(tm.predict, x, repeat)
            rows.append({"tier": tier, "batch": b, "eager_ms": eager, "predict_on_batch_ms": pob, "tierflow_ms": fn})
            print(f"{tier:5s} batch {b:3d}: eager {eager:7.2f} ms | predict_on_batch {pob:7.2f} ms "
                  f"| TierModel.predict {fn:7.2f} ms | speed-up vs eager {eager / fn:5.2f}x, vs predict_on_batch {pob / fn:5.2f}x")
        # serving reality: every micro-batch has another size (retracing shows up here)
        rng = np.random.default_rng(1)
        sizes = rng.integers(1, 257, size=60)
        xs = [rng.uniform(0, 1, size=(int(b), *tm.input_shape)).astype("float32") for b in sizes]
        fresh = load_bundle_tier(bundle_dir, tier)  # nothing traced yet for any path
        timings = {}
        for name, fn in (("eager", lambda a, m=fresh.model: m(a, training=False)),
                         ("predict_on_batch", lambda a, m=fresh.model: m.predict_on_batch(a)),
                         ("tierflow", fresh.predict)):
            t = time.perf_counter()
            for a in xs:
                fn(a)
            timings[name] = (time.perf_counter() - t) / len(xs) * 1e3
        rows.append({"tier": tier, "batch": "mixed", **{f"{k}_ms": v for k, v in timings.items()}})
        print(f"{tier:5s} 60 mixed batch sizes 1..256 (first calls included): eager {timings['eager']:7.2f} ms | "
              f"predict_on_batch {timings['predict_on_batch']:7.2f} ms | TierModel.predict {timings['tierflow']:7.2f} ms "
              f"| speed-up vs eager {timings['eager'] / timings['tierflow']:5.2f}x, "
              f"vs predict_on_batch {timings['predict_on_batch'] / timings['tierflow']:5.2f}x")
    return rows


@pytest.mark.bench
def test_bench_predict(tiny_bundle):
    rows = run(tiny_bundle)
    assert all(r["tierflow_ms"] > 0 for r in rows)


if __name__ == "__main__":
    run()
