"""`tierflow demo`: the whole story on one machine, through the real services.

Start the stack → stream Fashion-MNIST training samples into APP.training → run the ingest DAG and then
the pipeline DAG through Airflow's REST API → wait for the rollout → stream test requests through the
tiers → print a report. `--keep-running` leaves the stack and the tier workers up to explore the UIs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ml.contract import TIERS


@dataclass
class DemoTimings:
    stack_s: float = 0.0
    publish_s: float = 0.0
    ingest_s: float = 0.0
    pipeline_s: float = 0.0
    total_s: float = 0.0
    registration_to_serving_s: float | None = None
    stages: dict[str, float] = field(default_factory=dict)


def ingest_through_airflow(airflow: Any, expected_records: int, timeout_s: float = 600,
                           on_progress: Any = None) -> dict[str, Any]:
    """Run the ingest DAG once by hand and return its result (XCom: manifest_uri, version, records, ...).

    Deterministic even though the DAG is hourly: unpausing it makes the scheduler queue a catch-up run for
    the last full hour at once, and queued runs of a DAG start one at a time in run_after order. This run
    is triggered (while paused) with an earlier run_after, so it starts first and drains the topic; a
    catch-up run then finds nothing new (skipped, no Asset event) and is waited for, so nothing ingests
    beside what comes next. Fails if this run did not take at least `expected_records` new records.
    """
    from plugins.pipeline.airflow_rest import AirflowApiError
    from plugins.pipeline.common import INGEST_DAG

    run_id = airflow.trigger_first(INGEST_DAG)
    airflow.set_paused(INGEST_DAG, False)
    run = airflow.wait_run(INGEST_DAG, run_id, timeout_s, on_progress=on_progress)
    if run["state"] != "success":
        raise RuntimeError(f"ingest failed:\n{airflow.failure_report(INGEST_DAG, run_id)}")
    for other in airflow.runs(INGEST_DAG, ("queued", "running")):
        airflow.wait_run(INGEST_DAG, other["dag_run_id"], timeout_s)
    try:
        result = airflow.xcom(INGEST_DAG, run_id, "ingest") or {}
    except AirflowApiError:  # skipped: no XCom
        result = {}
    if not result.get("manifest_uri") or result.get("new_records", 0) < expected_records:
        raise RuntimeError(f"ingest run {run_id} did not take the {expected_records} published samples "
                           f"(result {result or 'skipped: nothing new'}); does another consumer group "
                           "ingest the training topic?")
    return {**result, "run_id": run_id}


def registration_to_serving(task_instances: list[dict]) -> float | None:
    """Seconds from the end of the register task until the deploy task had the new edge ready.

    The deploy task reports `seconds_to_serving` (rollout start → new edge ready); the rollout starts when
    the deploy task starts, so the gap between register's end and deploy's start is added."""
    from datetime import datetime

    by_id = {t["task_id"]: t for t in task_instances}
    reg, dep = by_id.get("register"), by_id.get("deploy")
    if not reg or not dep or not reg.get("end_date") or not dep.get("start_date"):
        return None
    gap = (datetime.fromisoformat(dep["start_date"]) - datetime.fromisoformat(reg["end_date"])).total_seconds()
    return gap


def pipeline_conf(dataset_uri: str, epochs: int | None = None, canary_requests: int | None = None) -> dict[str, Any]:
    """The demo's pipeline run: the DAG's own defaults but for what was asked for, so the champion it makes is
    what a later run with the defaults on the same data reproduces (and may replace at the gate)."""
    return {"dataset": dataset_uri, **({"epochs": epochs} if epochs is not None else {}),
            **({"canary_requests": canary_requests} if canary_requests is not None else {})}


def run_demo(*, train_samples: int, epochs: int | None, requests: int, rate: float, keep_running: bool,
             canary_requests: int | None = None, screenshots: str | None = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from infra.local.stack import LocalStack, load_settings
    from infra.prometheus_api import Prometheus, live_figures
    from ml.datasets import load_fashion_mnist
    from plugins.pipeline.airflow_rest import AirflowClient
    from plugins.pipeline.common import INGEST_DAG, MONITOR_DAG, PIPELINE_DAG
    from runtime.client import publish_feedback, publish_training, save_plots, simulate

    console = Console()
    t0 = time.monotonic()
    timings = DemoTimings()
    stack = LocalStack(load_settings())
    with console.status("starting the stack (broker, S3, MLflow, Airflow, Prometheus)") as status:
        settings = stack.up(on_event=lambda s, m: status.update(f"{s}: {m}"))
    timings.stack_s = time.monotonic() - t0
    console.print(f"[green]stack up[/green] in {timings.stack_s:.0f}s (home {settings.home}); "
                  f"Prometheus at {settings.prometheus.url} scrapes the tier workers")
    ok = False
    try:
        airflow = AirflowClient.from_settings(settings)
        for dag_id in (INGEST_DAG, PIPELINE_DAG, MONITOR_DAG):
            airflow.wait_dag(dag_id, timeout_s=180)
        airflow.set_paused(PIPELINE_DAG, True)  # so the ingest's Asset event does not start a 2nd run

        t = time.monotonic()
        train = load_fashion_mnist("train").subset(train_samples, seed=0)
        publish_training(settings, train.x, train.y, key_prefix=f"demo-{int(time.time())}")
        timings.publish_s = time.monotonic() - t
        console.print(f"published {len(train)} Fashion-MNIST training samples to {settings.topic('training')} "
                      f"({timings.publish_s:.1f}s)")

        t = time.monotonic()
        with console.status(f"{INGEST_DAG}: running") as status:
            ingested = ingest_through_airflow(airflow, len(train),
                                              on_progress=lambda s: status.update(f"{INGEST_DAG}: {s}"))
        dataset_uri = ingested["manifest_uri"]
        timings.ingest_s = time.monotonic() - t
        console.print(f"ingest: dataset {dataset_uri} ({timings.ingest_s:.0f}s)")

        t = time.monotonic()
        conf = pipeline_conf(dataset_uri, epochs, canary_requests)
        airflow.set_paused(PIPELINE_DAG, False)
        run_id = airflow.trigger(PIPELINE_DAG, conf)
        console.print(f"triggered {PIPELINE_DAG} run {run_id} with {json.dumps(conf)}")
        with console.status(f"{PIPELINE_DAG}: running") as status:
            run = airflow.wait_run(PIPELINE_DAG, run_id, 3600,
                                   on_progress=lambda s: status.update(f"{PIPELINE_DAG}: {s}"))
        timings.pipeline_s = time.monotonic() - t
        tis = airflow.task_instances(PIPELINE_DAG, run_id)
        timings.stages = {ti["task_id"]: round(ti.get("duration") or 0.0, 1) for ti in tis}
        if run["state"] != "success":
            raise RuntimeError(f"pipeline failed:\n{airflow.failure_report(PIPELINE_DAG, run_id)}")
        trained = airflow.xcom(PIPELINE_DAG, run_id, "train_calibrate_partition")
        registered = airflow.xcom(PIPELINE_DAG, run_id, "register")
        deployed = airflow.xcom(PIPELINE_DAG, run_id, "deploy")
        gap = registration_to_serving(tis)
        if gap is not None:
            timings.registration_to_serving_s = gap + float(deployed["seconds_to_serving"])

        test = load_fashion_mnist("test").subset(requests, seed=7)
        console.print(f"streaming {requests} test requests at {rate:.0f}/s through the tiers")
        report = simulate(settings, test.x, test.y, rate=rate, timeout_s=120, progress=True,
                          run_id="demo")
        publish_feedback(settings, {r["request_id"]: r["truth"] for r in report.rows})
        # Per-tier figures as Prometheus computed them from the workers' metrics (the dashboard's numbers).
        live = live_figures(settings.prometheus.url, settings.app, len(trained["tiers"]),
                            settle_s=2 * settings.prometheus.scrape_interval_s)
        plots = save_plots(report, settings.home / "demo", title=f"v{registered['release']}")
        timings.total_s = time.monotonic() - t0
        shots: list[str] = []
        if screenshots:
            from urllib.parse import quote

            shots = take_screenshots(settings, {
                "airflow-pipeline-grid": f"{settings.airflow.api_url}/dags/{PIPELINE_DAG}/runs/{quote(run_id, safe='')}",
                "mlflow-registry": f"{settings.mlflow.tracking_uri}/#/models",
                "mlflow-model-edge": f"{settings.mlflow.tracking_uri}/#/models/{settings.app}-edge",
                **({"prometheus-tier-p95": Prometheus(settings.prometheus.url).graph_url(
                    f'tier:tierflow_tier_latency_seconds:p95_1m{{app="{settings.app}"}}')} if live is not None else {}),
            }, screenshots, airflow_token=airflow.token())

        table = Table(title="tierflow demo")
        table.add_column("what")
        table.add_column("value")
        s = report.summary()
        rows = [
            ("model versions", f"{settings.app}-{{{','.join(trained['tiers'])},full}} v{registered['release']} "
                               f"(alias champion)"),
            ("offline test accuracy (cascade)", f"{trained['test_accuracy']:.4f}"),
            ("live accuracy", f"{s['accuracy']:.4f} on {s['answered']}/{s['sent']} answered"),
            ("answers per tier", ", ".join(f"{k}: {v}" for k, v in sorted(s["per_tier"].items()))),
            ("degraded / second answers / conflicting", f"{s['degraded']} / {s['duplicates']} / {s['conflicting']}"),
            ("latency p50 / p95 / p99", f"{s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']} ms"),
            *live_rows(live),
            ("canary", f"{deployed['canary']['accuracy']:.3f} accuracy on {deployed['canary']['new_version_answers']}"
                       if deployed.get("canary") else "off"),
            ("pipeline wall time", f"{timings.pipeline_s:.0f}s (tasks: {timings.stages})"),
            ("registration → serving", f"{timings.registration_to_serving_s:.1f}s"
             if timings.registration_to_serving_s is not None else "n/a"),
            ("demo wall time", f"{timings.total_s:.0f}s"),
            ("Airflow", f"{settings.airflow.api_url}  (login {settings.airflow.username} / password in "
                        f"{stack.paths.env_file}, TIERFLOW_AIRFLOW__PASSWORD)"),
            ("MLflow", f"{settings.mlflow.tracking_uri}/#/models"),
            ("Prometheus", Prometheus(settings.prometheus.url).graph_url(
                f'tier:tierflow_tier_latency_seconds:p95_1m{{app="{settings.app}"}}') if live is not None
             else "not running"),
            ("plots", ", ".join(str(p) for p in plots)),
            ("screenshots", ", ".join(shots) or "-"),
        ]
        for k, v in rows:
            table.add_row(k, str(v))
        console.print(table)
        ok = True
        (settings.home / "demo").mkdir(parents=True, exist_ok=True)
        (settings.home / "demo" / "report.json").write_text(json.dumps(
            {"summary": s, "timings": timings.__dict__, "release": registered["release"], "prometheus": live},
            indent=2, default=str))
        return {"summary": s, "trained": trained, "registered": registered, "deployed": deployed,
                "timings": timings.__dict__, "prometheus": live}
    finally:
        if keep_running and ok:
            console.print("[bold]--keep-running[/bold]: stack and tier workers stay up; "
                          "`tierflow stack down` stops all of it.")
        else:
            with console.status("stopping tier workers and the stack"):
                stopped = stack.down()
            console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def live_rows(live: dict[str, dict[str, float]] | None) -> list[tuple[str, str]]:
    """Report rows from Prometheus's recorded series (`infra.prometheus_api.tier_figures`), one per tier."""
    if live is None:
        return []
    return [(f"{tier}: tier p50 / p95 / p99 (Prometheus)",
             f"{f.get('tier_p50_ms', '-')} / {f.get('tier_p95_ms', '-')} / {f.get('tier_p99_ms', '-')} ms; "
             f"{f.get('answers_per_s', 0):.1f} answers/s, {100 * f.get('degraded_ratio', 0):.1f} % degraded, "
             f"{f.get('dlq_per_s', 0):.2f} DLQ/s")
            for tier, f in sorted(live.items(), key=lambda kv: TIERS.index(kv[0]) if kv[0] in TIERS else 99)]


def stop_everything() -> list[str]:
    """What `tierflow stack down` stops: every tier worker, then every service; returns what stopped."""
    from infra.local.stack import LocalStack, load_settings

    return LocalStack(load_settings()).down()


# -- screenshots of the UIs (headless Chromium, infra.local.browser) -------------------------------------
def take_screenshots(settings: Any, pages: dict[str, str], out_dir: str, *, airflow_token: str | None = None,
                     width: int = 1500, height: int = 900, settle_s: float = 8.0) -> list[str]:
    """PNG of each {name: url}, logged in to Airflow with its JWT cookie. Needs Debian's chromium."""
    from pathlib import Path

    from infra.local.browser import airflow_cookie, chromium_page

    cookies = [airflow_cookie(settings.airflow.api_url, airflow_token)] if airflow_token else []
    out = []
    with chromium_page() as page:
        for name, url in pages.items():
            page.open(url, cookies, width, height)
            time.sleep(settle_s)
            # Dismiss "what's new" dialogs and side panels so the page itself is visible.
            page.evaluate("document.querySelectorAll('[aria-label=\"Close\"], [aria-label=\"close\"], "
                          "button[aria-label*=\"Close\"]').forEach(b => b.click())")
            time.sleep(1.5)
            out.append(page.screenshot(Path(out_dir) / f"{name}.png"))
    return out
