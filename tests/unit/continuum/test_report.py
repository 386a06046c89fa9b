"""The report's table marks each target met or missed; JSON and both plots are written."""

from __future__ import annotations

import json

from infra.continuum import report as rep
from infra.continuum.measure import ratios


def _result(p50: float, sat: float, wan: float, acc: float) -> dict:
    return {"latency": {"p50_ms": p50, "p95_ms": 2 * p50, "p99_ms": 3 * p50, "mean_ms": 1.2 * p50},
            "predicted": {"cost_model_ms": p50, "with_messaging_ms": 1.1 * p50},
            "saturation": {"saturation_rps": sat, "steps": [
                {"offered_rps": 50, "p50_ms": p50, "p99_ms": 3 * p50, "held": True}]},
            "answers": {"accuracy": acc, "per_tier": {"edge": 9}, "degraded": 0},
            "topic": {"lost": 0, "answered_twice": 0},
            "bytes_per_request": {"device-edge": {"total": 1000.0}, "fog-cloud": {"total": wan}},
            "cpu_ms_per_request": {"edge": 1.0}, "latencies_ms": [p50, 2 * p50, 3 * p50]}


def test_table_json_plots(tmp_path) -> None:
    dist, cloud = _result(20, 400, 100, 0.89), _result(160, 300, 1800, 0.893)
    report = {"scenarios": {"a": dist, "cloud-only": cloud}, "baseline": "cloud-only", "profile": "default",
              "settings": {"low_rate": 20, "deadline_ms": 2000}, "ratios": {"a": ratios(dist, cloud)}}
    text = rep.table(report)
    assert "p50                         0.125   target <= 0.33   met" in text
    assert "saturation_throughput       1.333   target >= 2.00   MISSED" in text
    assert "accuracy_points            -0.300   target >= -1.0 pt   met" in text
    assert json.loads(rep.write_json(report, tmp_path).read_text())["baseline"] == "cloud-only"
    assert all(p.stat().st_size > 1000 for p in rep.plots(report, tmp_path))


def test_table_per_tier_figures_and_their_source() -> None:
    dist, cloud = _result(20, 400, 100, 0.89), _result(160, 300, 1800, 0.893)
    dist["per_tier"] = {"source": "Prometheus at http://127.0.0.1:19090 (...)",
                        "tiers": {"edge": {"answers": 7, "degraded": 1, "p50_ms": 21.0, "p95_ms": 48.0},
                                  "fog": {"answers": 2, "degraded": 0, "p50_ms": 40.0, "p95_ms": 90.0},
                                  "cloud": {"tier_p50_ms": 3.0}}}
    report = {"scenarios": {"a": dist, "cloud-only": cloud}, "baseline": "cloud-only", "profile": "default",
              "settings": {"low_rate": 20, "deadline_ms": 2000}, "ratios": {}}
    lines = rep.table(report).splitlines()
    (answers,) = [x for x in lines if x.startswith("answers per tier")]
    assert "edge:7 fog:2 cloud:0" in answers and answers.rstrip().endswith("edge:9")  # the baseline: device counts
    (pct,) = [x for x in lines if x.startswith("p50/p95 ms per answering tier")]
    assert "edge:21/48 fog:40/90" in pct and "cloud:" not in pct
    (degraded,) = [x for x in lines if x.startswith("degraded / lost")]
    assert "1/0/0" in degraded
    assert "a: per-tier figures from Prometheus at http://127.0.0.1:19090 (...)" in lines
    assert "cloud-only: per-tier figures from the device's own counts" in lines


def test_step_cpu_from_phase_marks_and_its_lines() -> None:
    from infra.continuum.measure import LoadRun, step_cpu

    run = LoadRun([], {}, marks={
        "step800:start": {"t_ms": 10_000, "cpu": {"edge": 1.0, "(broker)": 2.0}, "throttled": {"edge": 0.5},
                          "machine_busy_s": 100.0, "sampled_s": 50.0},
        "step800:end": {"t_ms": 14_000, "cpu": {"edge": 2.0, "(broker)": 6.0}, "throttled": {"edge": 2.5},
                        "machine_busy_s": 107.6, "sampled_s": 54.0}})
    cpu = step_cpu(run, "step800")
    assert cpu["cpu_cores"] == {"edge": 0.25, "(broker)": 1.0}
    assert cpu["throttled_share"] == {"edge": 0.5}
    assert abs(cpu["machine_cores_busy"] - 1.9) < 1e-9
    (line,) = rep.step_lines({"saturation": {"steps": [
        {"offered_rps": 800, "p50_ms": 30.0, "p99_ms": 2500.0, "held": False, **cpu}]}})
    assert "800/s" in line and "MISSED" in line and "edge 0.25 (broker) 1.00" in line
    assert "throttled: edge 50%" in line and "machine busy 1.90 of" in line
