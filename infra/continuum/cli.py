"""`tierflow continuum up|run|down`: edge, fog and cloud as emulated sites on this machine (needs root)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(no_args_is_help=True, help=__doc__)


def _sigterm_is_ctrl_c() -> None:
    """SIGTERM tears down like Ctrl-C: both raise KeyboardInterrupt in the main thread."""
    def handler(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _home() -> Path:
    from runtime.settings import get_settings

    return get_settings().home


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def up(
    scenario: str = typer.Option("edge-fog-cloud", help="Built-in scenario name or a YAML file."),
    profile: str = typer.Option(None, help="Link profile (default, mobile or a YAML file); default: the scenario's."),
    bundle: str = typer.Option(None, help="Bundle directory to serve on the sites (no workers without it)."),
    detach: bool = typer.Option(False, "--detach", help="Leave it up and return; `continuum down` removes it."),
) -> None:
    """Lay out the sites (and serve a bundle); in the foreground until Ctrl-C, which tears everything down.
    A bundle's workers are announced to the local stack's Prometheus when it runs."""
    import uuid

    from infra.continuum.netns import ContinuumError
    from infra.continuum.scenario import ScenarioError, load_scenario
    from infra.continuum.testbed import Testbed
    from infra.prometheus_api import Prometheus
    from runtime.settings import get_settings, settings_env

    _sigterm_is_ctrl_c()
    prometheus = get_settings().prometheus.url
    announce = _home() if bundle and Prometheus(prometheus, timeout_s=2).ready() else None
    try:
        sc = load_scenario(scenario, profile=profile)
        run_id = uuid.uuid4().hex[:4]
        tb = Testbed(sc, _home() / "continuum" / run_id, run_id=run_id, announce_home=announce).up()
    except (ContinuumError, ScenarioError) as exc:
        raise _fail(exc) from exc
    try:
        settings = tb.settings()
        if bundle:
            tb.start_workers(settings, bundle)
            typer.echo(f"workers announced to the Prometheus at {prometheus} (app {settings.app})" if announce
                       else f"no Prometheus at {prometheus}: workers not announced")
        for site in tb.sites.values():
            broker = f"  broker {tb.bootstrap(site.name)}" if site.name in sc.brokers else ""
            typer.echo(f"{site.name:7s} netns {site.netns:16s} {', '.join(site.ips):24s} "
                       f"cores {site.group.cores or '-'}{broker}")
        for link in sc.profile.links:
            typer.echo(f"link {link.name:12s} {link.delay_ms:g} ms one way, {link.up_mbit:g}/{link.down_mbit:g} Mbit/s")
        env = " ".join(f"{k}={v}" for k, v in settings_env(settings).items() if k.startswith("TIERFLOW_KAFKA__")
                       and k.split("__")[1] in ("BOOTSTRAP", "TIER_BOOTSTRAP"))
        typer.echo(f"try: ip netns exec {tb.sites[sc.device].netns} env TIERFLOW_APP={settings.app} "
                   f"{env} .venv/bin/tierflow simulate --n 200 --rate 20 --entry-tier {sc.tier_names[0]}")
        if detach:
            typer.echo(f"left up (state {tb.ledger.state_path}); `tierflow continuum down` removes it")
            return
        typer.echo("up; Ctrl-C tears it down")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        detach = False
        raise _fail(exc) from exc
    finally:
        if not detach:
            left = tb.down()
            typer.echo("torn down" + (f"; left: {left}" if left else ": nothing left"))


@app.command()
def down() -> None:
    """Tear down every testbed `continuum up --detach` left under $TIERFLOW_HOME/continuum."""
    from infra.continuum.netns import ContinuumError, require_root
    from infra.continuum.testbed import down_all

    try:
        require_root()
    except ContinuumError as exc:
        raise _fail(exc) from exc
    left = down_all(_home())
    if left:
        raise _fail(RuntimeError(f"could not remove: {left}"))
    typer.echo("nothing left")


@app.command()
def run(
    bundle: str = typer.Option(..., help="Bundle directory (the same one serves distributed and cloud-only)."),
    scenarios: str = typer.Option("edge-fog-cloud", help="Distributed scenario(s) to measure, comma-separated "
                                                         "(built-in names or YAML files)."),
    baseline: str = typer.Option("cloud-only", help="Scenario the others are compared with."),
    profile: str = typer.Option(None, help="Link profile for every scenario (default, mobile or a YAML file)."),
    n_low: int = typer.Option(400, min=10, help="Requests at the fixed low load."),
    low_rate: float = typer.Option(20.0, help="The fixed low load (requests/s)."),
    steps: str = typer.Option("50,100,200,400,800", help="Offered loads of the stepped open loop (req/s)."),
    step_s: float = typer.Option(5.0, help="Seconds per step."),
    deadline_ms: int = typer.Option(2000, help="Request deadline; saturation = last step with p99 within it."),
    calibrate: bool = typer.Option(True, help="Serve thresholds calibrated for the scenario's links "
                                              "(objective=cost) instead of the bundle's."),
    out: str = typer.Option(None, help="Output directory (default $TIERFLOW_HOME/continuum-runs/<time>)."),
    tracking_uri: str = typer.Option(None, envvar="TIERFLOW_MLFLOW__TRACKING_URI",
                                     help="MLflow tracking URI: when set, the report is logged there."),
) -> None:
    """Measure distributed against cloud-only on the same links, images, bundle and cloud CPU.

    Per-tier answers, degraded answers and p50/p95 come from the local stack's Prometheus
    (TIERFLOW_PROMETHEUS__URL) where it runs: the workers are announced to it through scrape bridges.
    Without one they come from the device's own counts, and the report says so."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from infra.continuum import report as rep
    from infra.continuum.evaluation import run_evaluation
    from infra.continuum.netns import ContinuumError, require_root
    from infra.continuum.scenario import ScenarioError
    from runtime.settings import get_settings

    _sigterm_is_ctrl_c()
    try:
        require_root()
    except ContinuumError as exc:
        raise _fail(exc) from exc
    out_dir = Path(out) if out else _home() / "continuum-runs" / time.strftime("%Y%m%d-%H%M%S")
    console = Console()
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        current = {"scenario": ""}

        def progress(ev: dict[str, Any]) -> None:
            kind = ev.get("event")
            if kind == "scenario":
                current["scenario"] = ev["name"]
                console.print(f"[bold]{ev['name']}[/bold]: laying out sites"
                              + (" (thresholds calibrated for its links)" if ev.get("calibrated") else ""))
            elif kind == "workers_ready":
                console.print(f"  workers ready after {ev['seconds']:.0f} s")
            elif kind in ("phase_start", "progress", "phase_end"):
                key = f"{current['scenario']}:{ev['name']}"
                if key not in tasks:
                    tasks[key] = bar.add_task(f"  {ev['name']} @ {ev.get('rate', '')} req/s", total=ev.get("n"))
                if kind == "progress":
                    bar.update(tasks[key], completed=ev["answered"])
                if kind == "phase_end":
                    bar.update(tasks[key], completed=ev["answered"], total=ev["sent"])
            elif kind == "saturated":
                console.print(f"  saturated at {ev['name']} (p99 {ev['p99_ms']:.0f} ms)")

        try:
            result = run_evaluation([s.strip() for s in scenarios.split(",") if s.strip()], bundle, out_dir, profile=profile, baseline=baseline, n_low=n_low,
                                    low_rate=low_rate, steps=[float(s) for s in steps.split(",") if s.strip()],
                                    step_s=step_s, deadline_ms=deadline_ms, calibrate=calibrate, progress=progress,
                                    prometheus_url=get_settings().prometheus.url, announce_home=_home())
        except KeyboardInterrupt:
            console.print("interrupted: everything was torn down")
            raise typer.Exit(130) from None
        except (ContinuumError, ScenarioError, ValueError, RuntimeError) as exc:
            raise _fail(exc) from exc
    files = [rep.write_json(result, out_dir), *rep.plots(result, out_dir)]
    typer.echo(rep.table(result))
    typer.echo("\n" + "\n".join(str(f) for f in files))
    if tracking_uri:
        run_id = rep.log_mlflow(result, files, tracking_uri, "tierflow-continuum")
        typer.echo(f"logged to MLflow run {run_id} at {tracking_uri}")
