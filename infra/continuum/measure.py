"""One evaluation of a scenario on the testbed, and the comparison of scenarios against cloud-only.

Per scenario: lay out the sites, start the tier workers through the project's launcher, warm up, then
the device site sends the same test images open loop — a fixed low rate (latency percentiles,
accuracy, answers per tier, bytes per request on each link, CPU per site), then a stepped load that
stops at the first step whose p99 exceeds the deadline (saturation throughput = the highest offered
rate still answered, all of it, within the deadline at p99). Answers are also counted on APP.results
after the system is quiet (lost, duplicated, degraded), independently of the client.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infra.continuum.load import UNANSWERED_MS
from infra.continuum.netns import site_argv
from infra.continuum.scenario import Scenario
from infra.continuum.testbed import Testbed, _child_env
from runtime.settings import Settings, settings_env

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Phase:
    name: str
    rate: float
    n: int | None = None
    duration_s: float | None = None
    stop_when_saturated: bool = False
    quiet_s: float | None = None  # nothing sent this long after the phase's answers (a scrape between phases)

    def spec(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class LoadRun:
    """What the device site saw, plus link bytes and CPU at every phase boundary."""

    rows: list[dict[str, Any]]
    topic_answers: dict[str, list[dict[str, Any]]]
    marks: dict[str, dict[str, Any]] = field(default_factory=dict)  # "<phase>:start|end" -> snapshot
    events: list[dict[str, Any]] = field(default_factory=list)

    def phase_rows(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["phase"] == name]


def run_load(tb: Testbed, settings: Settings, x: np.ndarray, phases: list[Phase], *, deadline_ms: int,
             entry_tier: str, progress: Progress | None = None,
             actions: dict[str, list[tuple[float, Callable[[], Any]]]] | None = None,
             drain_s: float = 5.0, settle_s: float = 1.0, timeout_s: float = 900.0) -> LoadRun:
    """Run the load process in the device site; ``actions[phase]`` = [(seconds after its start, fn)]."""
    work = tb.work_dir / f"load-{settings.app}"
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "data.npz", x=x)
    spec = {"data": str(work / "data.npz"), "entry_tier": entry_tier, "deadline_ms": deadline_ms,
            "phases": [p.spec() for p in phases], "out": str(work / "out.json"), "drain_s": drain_s,
            "settle_s": settle_s}
    (work / "spec.json").write_text(json.dumps(spec))
    device = tb.sites[tb.scenario.device]
    env = {**_child_env(), **settings_env(settings)}
    import sys

    proc = subprocess.Popen(site_argv(device.netns, device.group, [sys.executable, "-m", "infra.continuum.load",
                                                                   str(work / "spec.json")]),
                            stdout=subprocess.PIPE, stderr=open(work / "stderr.log", "wb"),  # noqa: SIM115
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    tb.ledger.add_pid(proc.pid)
    run = LoadRun([], {})
    timers: list[threading.Timer] = []
    deadline = time.monotonic() + timeout_s
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            run.events.append(ev)
            kind, name = ev.get("event"), ev.get("name")
            if kind in ("phase_start", "phase_end", "phase_quiet"):
                run.marks[f"{name}:{kind.split('_')[1]}"] = {"t_ms": ev["t_ms"], "bytes": tb.link_bytes(),
                                                            "cpu": tb.cpu_seconds(),
                                                            "throttled": tb.throttled_seconds(),
                                                            "machine_busy_s": machine_busy_s(),
                                                            "sampled_s": time.monotonic()}
            if kind == "phase_start":
                for at_s, fn in (actions or {}).get(name, []):
                    timers.append(threading.Timer(at_s, _logged(fn, run)))
                    timers[-1].start()
            if progress is not None:
                progress(ev)
            if time.monotonic() > deadline:
                raise TimeoutError(f"load did not finish within {timeout_s}s")
        proc.wait(30)
    finally:
        for t in timers:
            t.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if proc.returncode != 0:
        raise RuntimeError(f"load process failed ({proc.returncode}): "
                           f"{(work / 'stderr.log').read_text(errors='replace')[-2000:]}")
    out = json.loads((work / "out.json").read_text())
    run.rows, run.topic_answers = out["rows"], out["topic_answers"]
    return run


def _logged(fn: Callable[[], Any], run: LoadRun) -> Callable[[], None]:
    def call() -> None:
        value = fn()
        run.events.append({"event": "action", "t_ms": time.time() * 1000, "what": getattr(fn, "__name__", "?"),
                           "value": value if isinstance(value, int | float | str | None) else str(value)})
    return call


# ---- summaries -------------------------------------------------------------------------------------

def latency_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    lat = np.array([r["latency_ms"] for r in rows if "latency_ms" in r])
    if not len(lat):
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {"p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean())}


def answers_summary(rows: list[dict[str, Any]], y: np.ndarray | None) -> dict[str, Any]:
    answered = [r for r in rows if "result" in r]
    per_tier = Counter(r["result"]["tier"] for r in answered)
    correct = sum(int(r["result"]["label"]) == int(y[r["index"]]) for r in answered) if y is not None else 0
    return {"sent": len(rows), "answered": len(answered), "per_tier": dict(per_tier),
            "degraded": sum(bool(r["result"]["degraded"]) for r in answered),
            "accuracy": correct / len(answered) if answered and y is not None else float("nan")}


def topic_summary(run: LoadRun) -> dict[str, Any]:
    """From APP.results itself: requests with no answer, with more than one, degraded ones."""
    ids = [r["request_id"] for r in run.rows]
    counts = {rid: len(run.topic_answers.get(rid, [])) for rid in ids}
    return {"requests": len(ids), "answered": sum(c > 0 for c in counts.values()),
            "lost": [rid for rid, c in counts.items() if c == 0],
            "answered_twice": [rid for rid, c in counts.items() if c > 1],
            "degraded": sum(any(a["degraded"] for a in run.topic_answers.get(rid, [])) for rid in ids)}


def delta(run: LoadRun, phase: str, key: str) -> dict[str, Any]:
    start, end = run.marks[f"{phase}:start"], run.marks[f"{phase}:end"]
    if key == "bytes":
        return {link: {d: end["bytes"][link][d] - start["bytes"][link][d] for d in ("up", "down")}
                for link in end["bytes"]}
    return {k: end[key][k] - start[key].get(k, 0.0) for k in end[key]}


def saturation(run: LoadRun, steps: list[Phase], deadline_ms: int) -> dict[str, Any]:
    """Per step: offered rate, answered-within-deadline rate, p99; the highest step that held."""
    table, best = [], 0.0
    for p in steps:
        rows = run.phase_rows(p.name)
        if not rows:
            continue
        start, end = run.marks[f"{p.name}:start"]["t_ms"], run.marks[f"{p.name}:end"]["t_ms"]
        lat = [r.get("latency_ms", UNANSWERED_MS) for r in rows]
        p99 = float(np.percentile(lat, 99))
        on_time = sum(v <= deadline_ms for v in lat)
        send_s = max((max(r["sent_ms"] for r in rows) - min(r["sent_ms"] for r in rows)) / 1000, 1e-3)
        held = p99 <= deadline_ms and on_time == len(rows)
        table.append({"offered_rps": p.rate, "sent": len(rows), "achieved_rps": len(rows) / send_s,
                      "on_time": on_time, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": p99, "held": held,
                      "phase_s": (end - start) / 1000, **step_cpu(run, p.name)})
        if held:
            best = max(best, p.rate)
    # every step held: the saturation point lies above the highest step (a lower bound, not a measurement)
    lower_bound = bool(table) and all(t["held"] for t in table)
    return {"steps": table, "saturation_rps": best, "lower_bound": lower_bound}


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process: /proc/stat), 0 if unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def step_cpu(run: LoadRun, phase: str) -> dict[str, Any]:
    """Where the CPU went during one step: cores used per site and helper kind, the share of the step each
    site spent throttled at its quota, and the cores the whole machine was busy (all of them: saturated)."""
    start, end = run.marks[f"{phase}:start"], run.marks[f"{phase}:end"]
    # over the time between the two samples (this process may read the phase's events late on a busy machine)
    seconds = max(end["sampled_s"] - start["sampled_s"] if "sampled_s" in end else
                  (end["t_ms"] - start["t_ms"]) / 1000, 1e-3)
    out: dict[str, Any] = {
        "cpu_cores": {k: v / seconds for k, v in delta(run, phase, "cpu").items()},
        "throttled_share": {k: v / seconds for k, v in delta(run, phase, "throttled").items()}}
    if "machine_busy_s" in end:
        out["machine_cores_busy"] = (end["machine_busy_s"] - start["machine_busy_s"]) / seconds
    return out


def hop_breakdown(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean per answering tier: client latency, the worker-reported end-to-end and tier latency."""
    out: dict[str, dict[str, float]] = {}
    by_tier: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if "result" in r:
            by_tier.setdefault(r["result"]["tier"], []).append(r)
    for tier, rs in by_tier.items():
        res = [r["result"] for r in rs]
        out[tier] = {"n": len(rs), "client_ms": float(np.mean([r["latency_ms"] for r in rs])),
                     "origin_to_publish_ms": float(np.mean([x.get("latency_ms") or 0 for x in res])),
                     "answering_tier_ms": float(np.mean([x.get("tier_latency_ms") or 0 for x in res]))}
    return out


def device_tier_figures(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per answering tier from what the device saw (sent to received): answers, degraded, p50/p95 ms."""
    by_tier: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if "result" in r:
            by_tier.setdefault(r["result"]["tier"], []).append(r)
    return {tier: {"answers": len(rs), "degraded": sum(bool(r["result"]["degraded"]) for r in rs),
                   "p50_ms": float(np.percentile([r["latency_ms"] for r in rs], 50)),
                   "p95_ms": float(np.percentile([r["latency_ms"] for r in rs], 95))}
            for tier, rs in by_tier.items()}


def _scraped(prom: Any, app: str, n: int, interval_s: float) -> bool:
    """Every one of the n workers of app is a healthy target of prom (it watches the announced targets)."""
    from runtime.scrape_targets import JOB

    return len(prom.wait(f'up{{job="{JOB}",app="{app}"}} == 1', count=n, timeout_s=3 * interval_s + 15)) >= n


def evaluate(scenario: Scenario, bundle: str | Path, x: np.ndarray, y: np.ndarray | None, work_dir: Path, *,
             low_rate: float = 20.0, low_n: int = 400, steps: list[float] | None = None, step_s: float = 5.0,
             deadline_ms: int = 2000, warmup_n: int = 100, progress: Progress | None = None,
             worker: dict[str, Any] | None = None, prometheus_url: str | None = None,
             announce_home: Path | None = None) -> dict[str, Any]:
    """Lay out ``scenario``, serve ``bundle`` on it, run the load; everything is torn down after.

    Per-tier figures of the low load (answers, degraded, p50/p95) come from the Prometheus at
    ``prometheus_url`` when it runs and scrapes the workers announced under ``announce_home`` (the local
    stack's home); otherwise from the device's own counts, and ``per_tier.source`` says which and why."""
    from infra.prometheus_api import Prometheus, PrometheusError, window_figures
    from runtime.scrape_targets import targets_dir

    steps = steps if steps is not None else [50, 100, 200, 400]
    step_phases = [Phase(f"step{int(r)}", r, duration_s=step_s, stop_when_saturated=True) for r in steps]
    prom = Prometheus(prometheus_url) if prometheus_url and announce_home is not None else None
    source = "the device's own counts: no Prometheus configured"
    if prom is not None and not prom.ready():
        prom, source = None, f"the device's own counts: no Prometheus answers at {prometheus_url}"
    t0 = time.monotonic()
    with Testbed(scenario, work_dir, announce_home=announce_home if prom else None) as tb:
        settings = tb.settings(default_deadline_ms=deadline_ms, **(worker or {}))
        if progress:
            progress({"event": "layout", "scenario": scenario.name, "seconds": time.monotonic() - t0})
        tb.start_workers(settings, bundle)
        quiet = None
        if prom is not None:
            interval = prom.scrape_interval_s()
            if _scraped(prom, settings.app, len(tb.workers), interval):
                quiet = interval + 1.0
            else:
                prom, source = None, (f"the device's own counts: the Prometheus at {prometheus_url} does not scrape "
                                      f"the workers announced in {targets_dir(announce_home)}")
        if progress:
            progress({"event": "workers_ready", "scenario": scenario.name, "seconds": time.monotonic() - t0})
        phases = [Phase("warmup", min(low_rate * 2, 50), n=warmup_n, quiet_s=quiet),
                  Phase("low", low_rate, n=low_n, quiet_s=quiet), *step_phases]
        run = run_load(tb, settings, x, phases, deadline_ms=deadline_ms, entry_tier=scenario.tier_names[0],
                       progress=progress)
    low = run.phase_rows("low")
    per_tier = device_tier_figures(low)
    if prom is not None:
        window = (run.marks["warmup:quiet"]["t_ms"] / 1000, run.marks["low:quiet"]["t_ms"] / 1000)
        try:
            per_tier = window_figures(prom, settings.app, *window)
            source = (f"Prometheus at {prometheus_url} (the workers' counters and histograms over the low load; "
                      "p50/p95 origin to answer published)")
        except PrometheusError as exc:
            source = f"the device's own counts: Prometheus query failed ({exc})"
    n_low = max(len(low), 1)
    low_bytes = delta(run, "low", "bytes")
    low_cpu = delta(run, "low", "cpu")
    low_s = (run.marks["low:end"]["t_ms"] - run.marks["low:start"]["t_ms"]) / 1000
    return {
        "scenario": scenario.name, "profile": scenario.profile.name,
        "tiers": scenario.tiers, "low_rate_rps": low_rate, "deadline_ms": deadline_ms,
        "latency": latency_stats(low), "answers": answers_summary(low, y),
        "answers_all_phases": answers_summary(run.rows, y),
        "topic": {k: (len(v) if isinstance(v, list) else v) for k, v in topic_summary(run).items()},
        "bytes_per_request": {link: {d: v / n_low for d, v in dirs.items()} | {"total": sum(dirs.values()) / n_low}
                              for link, dirs in low_bytes.items()},
        "cpu_cores_at_low_load": {k: v / max(low_s, 1e-3) for k, v in low_cpu.items()},
        "cpu_ms_per_request": {k: 1000 * v / n_low for k, v in low_cpu.items()},
        "throttled_s_at_low_load": delta(run, "low", "throttled"),
        "saturation": saturation(run, step_phases, deadline_ms),
        "hops": hop_breakdown(low),
        "per_tier": {"source": source, "tiers": per_tier},
        "latencies_ms": [r["latency_ms"] for r in low if "latency_ms" in r],
        "wall_s": time.monotonic() - t0,
    }


def wan_link(scenario: Scenario) -> str:
    return scenario.profile.links[-1].name


def ratios(dist: dict[str, Any], cloud: dict[str, Any]) -> dict[str, float]:
    """Distributed / cloud-only for the figures the issue sets targets for."""
    wan = list(dist["bytes_per_request"])[-1]

    def div(a: float, b: float) -> float:
        return a / b if b else float("nan")

    out = {"p50": div(dist["latency"]["p50_ms"], cloud["latency"]["p50_ms"]),
            "p95": div(dist["latency"]["p95_ms"], cloud["latency"]["p95_ms"]),
            "p99": div(dist["latency"]["p99_ms"], cloud["latency"]["p99_ms"]),
            "saturation_throughput": div(dist["saturation"]["saturation_rps"], cloud["saturation"]["saturation_rps"]),
            "wan_bytes_per_request": div(dist["bytes_per_request"][wan]["total"],
                                         cloud["bytes_per_request"][wan]["total"]),
            "accuracy_points": 100 * (dist["answers"]["accuracy"] - cloud["answers"]["accuracy"])}
    if cloud["saturation"].get("lower_bound"):
        out["saturation_throughput"] = float("nan")  # cloud-only never saturated: no ratio to state
    return out


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load}"
