"""Distributed against cloud-only on the same links, images, bundle and cloud CPU, with the cost model.

Each scenario is laid out on its own (one at a time, so they never share the machine's cores), served,
loaded and torn down. The cost model's inputs come from the scenario and from timing the bundle's
sub-models here; with ``calibrate`` the distributed scenarios serve thresholds calibrated for their
links (``objective="cost"``) on images the load never sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.continuum.costs import calibrate_for, repartition, rethreshold, scenario_costs, time_tiers
from infra.continuum.measure import evaluate, machine, ratios
from infra.continuum.scenario import load_scenario

LOAD_IMAGES = 5000  # test images [0, 5000) are sent as requests; [5000, 10000) calibrate thresholds


def run_evaluation(scenarios: list[str], bundle: str | Path, out_dir: Path, *, profile: str | None = None,
                   baseline: str = "cloud-only", n_low: int = 400, low_rate: float = 20.0,
                   steps: list[float] | None = None, step_s: float = 5.0, deadline_ms: int = 2000,
                   calibrate: bool = True, tolerance: float = 1.0,
                   progress: Callable[[dict[str, Any]], None] | None = None, prometheus_url: str | None = None,
                   announce_home: Path | None = None) -> dict[str, Any]:
    """Every scenario and the baseline, one after the other; per-tier figures from the Prometheus at
    prometheus_url scraping the workers announced under announce_home, where it runs (`measure.evaluate`)."""
    from ml.datasets import load_fashion_mnist
    from runtime.settings import KafkaSettings, WorkerSettings

    names = list(dict.fromkeys([*scenarios, baseline]))
    loaded = {n: load_scenario(n, profile=profile) for n in names}
    test = load_fashion_mnist("test")
    x, y = test.x[:LOAD_IMAGES], test.y[:LOAD_IMAGES]
    xc, yc = test.x[LOAD_IMAGES:], test.y[LOAD_IMAGES:]
    bundles = {n: bundle if sc.cloud_only else repartition(bundle, sc.tier_names, out_dir / f"bundle-{n}-cut")
               for n, sc in loaded.items()}
    compute_ms = {n: time_tiers(bundles[n], sc.tier_names) for n, sc in loaded.items()}
    k, w = KafkaSettings(), WorkerSettings()
    report: dict[str, Any] = {
        "machine_before": machine(), "profile": loaded[baseline].profile.name, "baseline": baseline,
        "bundle": str(bundle), "compute_ms_one_request": compute_ms,
        "settings": {"n_low": n_low, "low_rate": low_rate, "steps": steps, "step_s": step_s,
                     "deadline_ms": deadline_ms, "calibrate": calibrate, "tolerance_points": tolerance,
                     "fetch_wait_max_ms": k.fetch_wait_max_ms, "max_wait_ms": w.max_wait_ms,
                     "linger_ms": k.linger_ms},
        "scenarios": {}, "ratios": {}}
    for name, sc in loaded.items():
        started, load_before = time.monotonic(), machine()
        costs = scenario_costs(sc, bundles[name], compute_ms[name])
        served, cal = Path(bundles[name]), None
        if calibrate and not sc.cloud_only:
            cal = calibrate_for(costs, served, xc, yc, tolerance)
            served = rethreshold(served, cal.thresholds, out_dir / f"bundle-{name}")
        if progress:
            progress({"event": "scenario", "name": name, "calibrated": cal is not None})
        result = evaluate(sc, served, x, y, out_dir / f"testbed-{name}", low_rate=low_rate, low_n=n_low, steps=steps,
                          step_s=step_s, deadline_ms=deadline_ms, progress=progress,
                          prometheus_url=prometheus_url, announce_home=announce_home)
        answered = max(sum(result["answers"]["per_tier"].values()), 1)
        fractions = {t: n / answered for t, n in result["answers"]["per_tier"].items()}
        messaging = costs.messaging_ms(k.fetch_wait_max_ms, w.max_wait_ms, k.linger_ms)
        result["predicted"] = {
            "costs": costs.to_dict(), "measured_fractions": fractions,
            "cost_model_ms": costs.predict_mean_ms(fractions),
            "with_messaging_ms": costs.predict_mean_ms(fractions, costs.per_tier_ms() + messaging),
            "messaging_ms_per_tier": messaging.tolist(),
        }
        mean = result["latency"]["mean_ms"]
        for key in ("cost_model_ms", "with_messaging_ms"):
            result["predicted"][key.replace("_ms", "_error")] = result["predicted"][key] / mean - 1 if mean else None
        if cal is not None:
            result["calibration"] = {"thresholds": cal.thresholds, "tier_fractions": cal.tier_fractions,
                                     "accuracy": cal.accuracy, "final_accuracy": cal.final_accuracy,
                                     "expected_cost_ms": cal.expected_cost, "feasible": cal.feasible}
            result["predicted"]["offline_fractions_ms"] = costs.predict_mean_ms(
                cal.tier_fractions, costs.per_tier_ms() + messaging)
        result["machine_before"], result["machine_after"] = load_before, machine()
        result["scenario_wall_s"] = time.monotonic() - started
        report["scenarios"][name] = result
    for name in scenarios:
        if name != baseline:
            report["ratios"][name] = ratios(report["scenarios"][name], report["scenarios"][baseline])
    return report
