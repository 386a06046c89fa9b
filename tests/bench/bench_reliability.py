"""The issue's full-size fault test: kill -9 of the fog worker while 5,000 requests are in flight.

Same scenario as tests/integration/runtime/test_reliability.py (which runs it with 1,200 requests to
fit the test budget): stream requests at a fixed rate, kill -9 the fog once `--kill-after` are sent,
collect every answer (degraded ones flagged), restart the fog, send more and check none is lost.
Prints the counts and the machine; exits non-zero if a request went unanswered.

Run: ``.venv/bin/python -m tests.bench.bench_reliability [--n 5000] [--rate 500]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pytest

from tests.bench.runtime_common import bench_bundle, machine_line


def run(n: int = 5000, rate: float = 500.0, kill_after: int = 1000, deadline_ms: int = 2000,
        after_restart: int = 500, bundle=None, bootstrap=None):
    from ml.datasets import load_fashion_mnist
    from runtime.broker import EmbeddedBroker
    from runtime.local import LocalDeployment
    from tests.integration.runtime.conftest import make_settings
    from tests.integration.runtime.scenarios import kill_fog_in_flight

    bundle = bench_bundle(bundle)
    x = load_fashion_mnist("test").x
    print(machine_line())
    broker = None if bootstrap else EmbeddedBroker().__enter__()
    try:
        settings = make_settings(bootstrap or broker.bootstrap)
        with LocalDeployment(settings, bundle, Path(tempfile.mkdtemp(prefix="bench-rel-"))) as dep:
            out = kill_fog_in_flight(settings, dep, x, n=n, after_restart=after_restart, rate=rate,
                                     deadline_ms=deadline_ms, kill_after=kill_after, timeout_s=300)
    finally:
        if broker is not None:
            broker.stop()
    print(f"kill -9 fog after {kill_after} of {n} requests at {rate:g}/s (deadline {deadline_ms} ms): "
          f"answered {out.answered}/{out.sent}, degraded {out.degraded} (by tier {dict(out.degraded_tiers)}), "
          f"duplicate answers dropped by the client {out.duplicates_before_restart}")
    print(f"fog restarted in {out.restart_s:.1f} s; afterwards answered {out.after_restart_answered}/"
          f"{out.after_restart_sent}, degraded {out.after_restart_degraded}")
    return out


@pytest.mark.bench
def test_bench_reliability(kafka_bootstrap, tiny_bundle):
    out = run(bundle=tiny_bundle, bootstrap=kafka_bootstrap)
    assert out.answered == out.sent and out.after_restart_answered == out.after_restart_sent


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--kill-after", type=int, default=1000)
    ap.add_argument("--deadline-ms", type=int, default=2000)
    ap.add_argument("--bundle", default=None)
    args = ap.parse_args()
    result = run(args.n, args.rate, args.kill_after, args.deadline_ms, bundle=args.bundle)
    sys.exit(0 if result.answered == result.sent and result.after_restart_answered == result.after_restart_sent
             else 1)
