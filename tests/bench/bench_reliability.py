"""Answers per request across tier faults: kill -9 and SIGTERM of each tier under load, short and past deadlines.

Each scenario streams ``--n`` requests at ``--rate``/s into a fresh 3-tier deployment's ``APP.requests``,
hits one tier part-way and restarts it ``--down-s`` later, then waits until ``APP.results`` has been quiet
for several deadlines and counts every answer there (`runtime.audit`), independently of the sender.
Prints one row per scenario and the machine; exits non-zero if any request went unanswered or was
answered more than once.

Run: ``.venv/bin/python -m tests.bench.bench_reliability [--n 10000] [--rate 200] [--down-s 30]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.bench.runtime_common import bench_bundle, machine_line

SCENARIOS = [(f"{'kill -9' if sig == signal.SIGKILL else 'SIGTERM'} {tier}", tier, sig, None)
             for sig in (signal.SIGKILL, signal.SIGTERM) for tier in ("edge", "fog", "cloud")] + \
    [("deadline 20 ms, no fault", None, None, 20), ("deadline already past, no fault", None, None, -500)]


def run(n: int = 10_000, rate: float = 200.0, down_s: float = 30.0, deadline_ms: int = 2000, only: str = "",
        bundle=None, bootstrap=None) -> list[dict]:
    from ml.datasets import load_fashion_mnist
    from runtime.broker import EmbeddedBroker
    from runtime.local import LocalDeployment
    from tests.integration.runtime.conftest import make_settings
    from tests.integration.runtime.scenarios import stream_with_fault

    bundle = bench_bundle(bundle)
    x = load_fashion_mnist("test").x
    print(machine_line())
    rows = []
    for name, tier, sig, scenario_deadline in SCENARIOS:
        if only and only not in name:
            continue
        broker = None if bootstrap else EmbeddedBroker().__enter__()
        try:
            settings = make_settings(bootstrap or broker.bootstrap)
            t0 = time.monotonic()
            with LocalDeployment(settings, bundle, Path(tempfile.mkdtemp(prefix="bench-rel-"))) as dep:
                out = stream_with_fault(settings, dep, x, n=n if tier else min(n, 2000), rate=rate,
                                        deadline_ms=scenario_deadline or deadline_ms, tier=tier,
                                        sig=sig or signal.SIGKILL, down_s=down_s)
        finally:
            if broker is not None:
                broker.stop()
        row = {"scenario": name, **out.audit.summary(), "degraded_outside_outage": len(out.degraded_outside_outage())
               if tier else None, "outage_s": round(out.up_at - out.down_at, 1) if tier else None,
               "wall_s": round(time.monotonic() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{'scenario':34} {'sent':>6} {'answered':>8} {'lost':>5} {'ids>1 answer':>12} {'conflicting':>11} "
          f"{'degraded':>8} {'degr. outside outage':>20} {'outage s':>8}")
    for r in rows:
        print(f"{r['scenario']:34} {r['expected']:>6} {r['answered']:>8} {r['unanswered']:>5} "
              f"{r['ids_answered_more_than_once']:>12} {r['conflicting_ids']:>11} {r['degraded']:>8} "
              f"{'-' if r['degraded_outside_outage'] is None else r['degraded_outside_outage']:>20} "
              f"{'-' if r['outage_s'] is None else r['outage_s']:>8}")
    return rows


def ok(rows: list[dict]) -> bool:
    return all(r["unanswered"] == 0 and r["ids_answered_more_than_once"] == 0 for r in rows)


@pytest.mark.bench
def test_bench_reliability(kafka_bootstrap, tiny_bundle):
    assert ok(run(n=2000, down_s=5, bundle=tiny_bundle, bootstrap=kafka_bootstrap))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--down-s", type=float, default=30.0)
    ap.add_argument("--deadline-ms", type=int, default=2000)
    ap.add_argument("--only", default="", help="run the scenarios whose name contains this text")
    ap.add_argument("--bundle", default=None)
    args = ap.parse_args()
    sys.exit(0 if ok(run(args.n, args.rate, args.down_s, args.deadline_ms, args.only, bundle=args.bundle)) else 1)
