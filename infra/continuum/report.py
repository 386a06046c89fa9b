"""The evaluation's outputs: a table with ratios against cloud-only, JSON, PNG plots, an MLflow run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

TARGETS = {"p50": ("<=", 1 / 3), "p95": ("<=", 1 / 2), "saturation_throughput": (">=", 2.0),
           "wan_bytes_per_request": ("<=", 0.3), "accuracy_points": (">=", -1.0)}


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


_DEVICE = "the device's own counts"


def _tiers(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per-tier figures of a scenario's low load (Prometheus's or the device's; older reports: the device's)."""
    tiers = run["per_tier"]["tiers"] if "per_tier" in run else {
        t: {"answers": n} for t, n in run["answers"]["per_tier"].items()}
    order = list(run.get("tiers", {}))  # the scenario's tiers, entry tier first
    return dict(sorted(tiers.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def _degraded(run: dict[str, Any]) -> int:
    if "per_tier" in run:
        return sum(int(f.get("degraded", 0)) for f in run["per_tier"]["tiers"].values())
    return int(run["answers"]["degraded"])


def table(report: dict[str, Any]) -> str:
    """Plain-text table: one column per scenario, the ratio rows against the baseline, the cost model."""
    runs = report["scenarios"]
    names = list(runs)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any) -> None:
        rows.append((label, [fn(runs[n]) for n in names]))

    row("p50 / p95 / p99 ms", lambda r: "/".join(_fmt(r["latency"][k]) for k in ("p50_ms", "p95_ms", "p99_ms")))
    row("mean ms (measured)", lambda r: _fmt(r["latency"]["mean_ms"]))
    row("mean ms predicted: ml.costs + legs", lambda r: _fmt(r.get("predicted", {}).get("cost_model_ms", math.nan)))
    row("  + messaging from settings", lambda r: _fmt(r.get("predicted", {}).get("with_messaging_ms", math.nan)))
    row("saturation req/s (p99 <= deadline)", lambda r: (">=" if r["saturation"].get("lower_bound") else "")
        + _fmt(r["saturation"]["saturation_rps"], 0))
    row("accuracy", lambda r: _fmt(r["answers"]["accuracy"], 4))
    row("answers per tier", lambda r: " ".join(f"{t}:{int(f.get('answers', 0))}" for t, f in _tiers(r).items()))
    row("p50/p95 ms per answering tier", lambda r: " ".join(
        f"{t}:{_fmt(f.get('p50_ms', math.nan), 0)}/{_fmt(f.get('p95_ms', math.nan), 0)}"
        for t, f in _tiers(r).items() if f.get("answers")))
    row("degraded / lost / answered twice", lambda r: f"{_degraded(r)}/{r['topic']['lost']}/"
                                                      f"{r['topic']['answered_twice']}")
    for link in next(iter(runs.values()))["bytes_per_request"]:
        row(f"bytes/request {link}", lambda r, link=link: _fmt(r["bytes_per_request"][link]["total"], 0))
    for site in ("device", "edge", "fog", "cloud", "(broker)", "(relay)"):
        row(f"cpu ms/request {site}", lambda r, s=site: _fmt(r["cpu_ms_per_request"].get(s, math.nan), 2))
    width = max(len(label) for label, _ in rows) + 2
    colw = max(16, *(len(n) + 2 for n in names), *(len(v) + 2 for _, vs in rows for v in vs))
    lines = [" " * width + "".join(n.rjust(colw) for n in names)]
    lines += [label.ljust(width) + "".join(v.rjust(colw) for v in vs) for label, vs in rows]
    for name in names:
        lines.append(f"{name}: per-tier figures from {runs[name].get('per_tier', {}).get('source', _DEVICE)}")
    for name in names:
        lines += [f"{name}: stepped load (where the CPU went per step)", *step_lines(runs[name])]
    base = report.get("baseline")
    for name, rat in report.get("ratios", {}).items():
        lines.append(f"\n{name} / {base}:")
        for key, value in rat.items():
            if key not in TARGETS:
                lines.append(f"  {key:24s} {_fmt(value, 3):>8s}")
                continue
            op, goal = TARGETS[key]
            ok = value <= goal if op == "<=" else value >= goal
            if math.isnan(value):
                lines.append(f"  {key:24s} {'n/a':>8s}   target {op} {goal:.2f}   not measured (baseline never "
                             "saturated: raise the steps)")
                continue
            goal_text = f"{goal:.2f}" if key != "accuracy_points" else f"{goal:+.1f} pt"
            lines.append(f"  {key:24s} {_fmt(value, 3):>8s}   target {op} {goal_text}   "
                         f"{'met' if ok else 'MISSED'}")
    return "\n".join(lines)


def step_lines(run: dict[str, Any]) -> list[str]:
    """One line per load step: latency, then the cores each site and helper used, the share of the step each
    site was throttled at its quota, and how busy the whole machine was (its cores are shared by all sites)."""
    out = []
    for s in run["saturation"]["steps"]:
        cores = " ".join(f"{k} {v:.2f}" for k, v in s.get("cpu_cores", {}).items() if v >= 0.005)
        throttled = " ".join(f"{k} {100 * v:.0f}%" for k, v in s.get("throttled_share", {}).items() if v >= 0.005)
        busy = s.get("machine_cores_busy")
        out.append(f"  {s['offered_rps']:6g}/s p50 {s['p50_ms']:6.0f} p99 {s['p99_ms']:6.0f} ms "
                   f"{'held' if s['held'] else 'MISSED'}; cores: {cores or 'n/a'}"
                   + (f"; throttled: {throttled}" if throttled else "")
                   + (f"; machine busy {busy:.2f} of {os.cpu_count()} cores" if busy is not None else ""))
    return out


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "continuum.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Latency CDF per scenario at low load; p50/p99 latency against offered load (stepped open loop)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in report["scenarios"].items():
        lat = np.sort(np.asarray(r["latencies_ms"]))
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=f"{name} (p50 {np.median(lat):.0f} ms)")
    ax.set(xlabel="end-to-end latency (ms)", ylabel="fraction of requests", xscale="log",
           title=f"Latency CDF at {report['settings']['low_rate']:g} req/s ({report['profile']} links)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend()
    paths.append(out_dir / "latency_cdf.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in report["scenarios"].items():
        steps = r["saturation"]["steps"]
        if steps:
            x = [s["offered_rps"] for s in steps]
            line = ax.plot(x, [s["p99_ms"] for s in steps], marker="o", label=f"{name} p99")[0]
            ax.plot(x, [s["p50_ms"] for s in steps], marker=".", linestyle="--", color=line.get_color(),
                    label=f"{name} p50")
    ax.axhline(report["settings"]["deadline_ms"], color="k", linestyle=":", label="deadline")
    ax.set(xlabel="offered load (req/s, open loop)", ylabel="latency (ms)", yscale="log",
           title="Latency against offered load")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(out_dir / "latency_vs_load.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def log_mlflow(report: dict[str, Any], files: list[Path], tracking_uri: str, experiment: str) -> str:
    """One MLflow run: figures per scenario and the ratios as metrics, JSON and plots as artifacts."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"continuum-{report['profile']}") as run:
        mlflow.log_params({"profile": report["profile"], "baseline": report.get("baseline"),
                           **{k: v for k, v in report["settings"].items() if isinstance(v, int | float | str)}})
        metrics: dict[str, float] = {}
        for name, r in report["scenarios"].items():
            for k, v in r["latency"].items():
                metrics[f"{name}.{k}"] = v
            metrics[f"{name}.saturation_rps"] = r["saturation"]["saturation_rps"]
            metrics[f"{name}.accuracy"] = r["answers"]["accuracy"]
            for link, b in r["bytes_per_request"].items():
                metrics[f"{name}.bytes_per_request.{link}"] = b["total"]
        for name, rat in report.get("ratios", {}).items():
            metrics.update({f"ratio.{name}.{k}": v for k, v in rat.items()})
        mlflow.log_metrics({k.replace("(", "").replace(")", ""): float(v) for k, v in metrics.items()
                            if isinstance(v, int | float) and not math.isnan(float(v))})
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id
