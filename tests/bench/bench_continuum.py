"""Benchmark: early-exit serving across emulated edge/fog/cloud sites against cloud-only, same run.

Lays out each scenario in network namespaces (real link delay through the relay, tbf bandwidth, cpu
cgroup quotas; `infra.continuum`), serves the same trained bundle (thresholds calibrated for the
scenario's links, `objective=cost`, on test images the load never sends), and sends the same
Fashion-MNIST test images from the device site: latency at a fixed low load, a stepped open loop for
saturation throughput, bytes per request on each link, answers per tier, accuracy, CPU per site, and the
cost model's predicted mean latency. Prints the machine (with its load average before and after each
scenario) and every ratio against cloud-only measured in the same run. Needs root.

Run: ``.venv/bin/python -m tests.bench.bench_continuum [--profile mobile] [--scenarios edge-fog-cloud,edge-cloud]``
or ``.venv/bin/pytest -m bench tests/bench/bench_continuum.py -s``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pytest

from tests.bench.runtime_common import bench_bundle, machine_line


def hops(result: dict) -> str:
    """Where the time goes per answering tier: client view, worker's origin→publish, the model's terms."""
    pred = result["predicted"]
    costs = pred["costs"]
    lines = []
    for i, tier in enumerate(costs["tiers"]):
        h = result["hops"].get(tier)
        if not h:
            continue
        links = sum(costs["link_latency_ms"][:i])
        lines.append(f"    {tier:5s} n={h['n']:4d}: client {h['client_ms']:6.1f} ms = entry link "
                     f"{costs['entry_ms']:.1f} + inter-tier links {links:.0f} + return legs {costs['exit_ms'][i]:.0f} "
                     f"+ compute {sum(costs['compute_ms'][:i + 1]):.1f} (model) + Kafka hops "
                     f"{pred['messaging_ms_per_tier'][i]:.1f} (settings) + rest "
                     f"{h['client_ms'] - costs['per_tier_ms'][i] - pred['messaging_ms_per_tier'][i]:.1f}; "
                     f"worker-reported origin→publish {h['origin_to_publish_ms']:.1f}, answering tier "
                     f"{h['answering_tier_ms']:.1f}")
    return "\n".join(lines)


def run(scenarios: list[str], profile: str | None = None, bundle: str | None = None, n_low: int = 400,
        low_rate: float = 20.0, steps: list[float] | None = None, step_s: float = 5.0,
        out: str | None = None, calibrate: bool = True) -> dict:
    from infra.continuum import report as rep
    from infra.continuum.evaluation import run_evaluation

    bundle_dir = bench_bundle(bundle, 0.5, 8, 12000) if bundle is None else Path(bundle)
    out_dir = Path(out or tempfile.mkdtemp(prefix="bench-continuum-"))
    print(machine_line())
    print(f"bundle {bundle_dir} ({'thresholds calibrated per scenario' if calibrate else 'its own thresholds'}); "
          f"{n_low} requests at {low_rate:g} req/s; steps {steps} x {step_s:g} s; out {out_dir}")

    def progress(ev: dict) -> None:
        if ev.get("event") in ("scenario", "workers_ready", "phase_end", "saturated"):
            print("  " + json.dumps({k: v for k, v in ev.items() if k != "t_ms"}), flush=True)

    result = run_evaluation(scenarios, bundle_dir, out_dir, profile=profile, n_low=n_low, low_rate=low_rate,
                            steps=steps, step_s=step_s, calibrate=calibrate, progress=progress)
    files = [rep.write_json(result, out_dir), *rep.plots(result, out_dir)]
    print()
    print(rep.table(result))
    for name, r in result["scenarios"].items():
        p = r["predicted"]
        print(f"\n{name}: load {r['machine_before']} -> {r['machine_after']}; wall {r['scenario_wall_s']:.0f} s")
        print(f"  mean latency measured {r['latency']['mean_ms']:.1f} ms; predicted by ml.costs + legs "
              f"{p['cost_model_ms']:.1f} ({100 * p['cost_model_error']:+.0f} %), + Kafka hops from settings "
              f"{p['with_messaging_ms']:.1f} ({100 * p['with_messaging_error']:+.0f} %)")
        if "calibration" in r:
            c = r["calibration"]
            print(f"  thresholds for these links: {c['thresholds']} (offline tier shares {c['tier_fractions']}, "
                  f"accuracy {c['accuracy']:.4f} vs final exit {c['final_accuracy']:.4f})")
        print(hops(r))
    print("\n" + " ".join(str(f) for f in files))
    print(machine_line())
    return result


@pytest.mark.bench
def test_bench_continuum(tiny_bundle):
    out = run(["edge-fog-cloud"], bundle=str(tiny_bundle), n_low=100, steps=[50, 200], step_s=3)  # tiny: no claims
    assert all(r["topic"]["lost"] == 0 for r in out["scenarios"].values())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="edge-fog-cloud,edge-cloud")
    ap.add_argument("--profile", default=None, help="default, mobile or a YAML file")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--n-low", type=int, default=400)
    ap.add_argument("--low-rate", type=float, default=20.0)
    ap.add_argument("--steps", default="50,100,200,400,800")
    ap.add_argument("--step-s", type=float, default=5.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-calibrate", action="store_true", help="serve the bundle's own thresholds")
    a = ap.parse_args()
    run(a.scenarios.split(","), a.profile, a.bundle, a.n_low, a.low_rate, [float(s) for s in a.steps.split(",")],
        a.step_s, a.out, not a.no_calibrate)
