"""The `tierflow` command: one entry point assembled from every layer's commands.

This package sits above every layer (ml, runtime, plugins, infra) and nothing imports it. Heavy
imports stay inside commands.
"""

from __future__ import annotations

import typer

from infra.continuum.cli import app as continuum_app
from infra.local.cli import app as stack_app
from ml.cli import app as ml_app
from runtime.cli import app as runtime_app

app = typer.Typer(no_args_is_help=True, help=__doc__.split("\n\n")[0], pretty_exceptions_show_locals=False)
app.add_typer(ml_app, name="ml", help="Train, calibrate, partition and evaluate multi-exit models.")
app.add_typer(stack_app, name="stack", help="Start, check and stop the embedded local stack (`down` stops the "
                                            "tier workers too).")
app.add_typer(continuum_app, name="continuum", help="Edge, fog and cloud as emulated sites with real link delay, "
                                                    "bandwidth and CPU limits (needs root).")
app.registered_commands.extend(runtime_app.registered_commands)  # broker, worker, simulate, ...


@app.command("serve-local")
def serve_local(
    model_uri: str = typer.Option(..., help="Bundle directory (or models:/ URI for --cloud-only)."),
    cloud_only: bool = typer.Option(False, "--cloud-only", help="Serve the unpartitioned model alone "
                                                                "(tier 'full') instead of edge/fog/cloud."),
    broker: bool = typer.Option(True, help="Start the embedded broker on TIERFLOW_KAFKA__BOOTSTRAP's port "
                                           "unless something already listens there."),
) -> None:
    """Serve a model on local tier workers until Ctrl-C/SIGTERM: the rollout's supervised workers, started
    in the rollout's order (cloud and fog, then the edge) and restarted by their supervisors if they crash."""
    import signal
    import threading

    from ml.contract import CLOUD_ONLY, TIERS
    from plugins.rollout.base import RolloutError
    from plugins.rollout.serve_local import serve
    from runtime.broker import EmbeddedBroker, port_open
    from runtime.settings import get_settings

    settings = get_settings()
    host, port = settings.kafka.bootstrap.rsplit(":", 1)
    embedded = None
    if broker and not port_open(host, int(port)):
        embedded = EmbeddedBroker(host=host, port=int(port), log_path=settings.home / "logs" / "broker.log")
        embedded.start()
        typer.echo(f"embedded broker on {embedded.bootstrap}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(settings, model_uri, CLOUD_ONLY if cloud_only else TIERS, stop, echo=typer.echo)
    except RolloutError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        if embedded is not None:
            embedded.stop()


@app.command()
def demo(
    train_samples: int = typer.Option(60000, help="Fashion-MNIST training samples streamed into APP.training."),
    epochs: int = typer.Option(None, help="Training epochs (pipeline parameter; default: the pipeline's own "
                                          "default, so a later run with the defaults can replace the champion)."),
    requests: int = typer.Option(2000, help="Test requests streamed through the tiers at the end."),
    rate: float = typer.Option(200.0, help="Requests per second of the test stream."),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the stack and tier workers up."),
    stop: bool = typer.Option(False, "--stop", help="Only stop what a --keep-running demo left up "
                                                    "(the same as `tierflow stack down`)."),
    screenshots: str = typer.Option(None, help="Directory for PNG screenshots of the Airflow grid and MLflow "
                                               "registry (needs Debian's chromium)."),
) -> None:
    """The whole pipeline end to end on the embedded stack (implemented in infra.local.demo)."""
    from infra.local import demo as demo_mod

    if stop:
        stopped = demo_mod.stop_everything()
        typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return
    try:
        demo_mod.run_demo(train_samples=train_samples, epochs=epochs, requests=requests, rate=rate,
                          keep_running=keep_running, screenshots=screenshots)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user; details were printed above
        typer.echo(f"error: demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def monitor(
    unpause: bool = typer.Option(False, "--unpause", help="Unpause the monitor DAG first (it then also runs every "
                                                          "15 minutes), instead of stopping with a hint."),
    timeout: float = typer.Option(600.0, help="Seconds to wait for the run."),
) -> None:
    """Run the monitor now through Airflow and say what it measured and whether (and why) it retrains."""
    from infra.local.stack import load_settings
    from plugins.pipeline.airflow_rest import AirflowApiError, AirflowClient
    from plugins.pipeline.common import MONITOR_DAG

    client = AirflowClient.from_settings(load_settings())
    try:
        paused = client.paused(MONITOR_DAG)
        if paused and not unpause:
            typer.echo(f"{MONITOR_DAG} is paused (as Airflow creates it): a run would stay queued. Unpause it "
                       "with the toggle in the Airflow UI or `tierflow monitor --unpause`.", err=True)
            raise typer.Exit(1)
        # Ahead of the catch-up run that unpausing queues, which would otherwise take the new answers first.
        run_id = client.trigger_first(MONITOR_DAG)
        typer.echo(f"triggered {MONITOR_DAG} run {run_id}")
        if paused:
            client.set_paused(MONITOR_DAG, False)
            typer.echo(f"{MONITOR_DAG} unpaused; it also runs every 15 minutes from now on")
        run = client.wait_run(MONITOR_DAG, run_id, timeout)
        if run["state"] != "success":
            typer.echo(f"error: monitor run {run['state']}:\n{client.failure_report(MONITOR_DAG, run_id)}", err=True)
            raise typer.Exit(1)
        report = client.xcom(MONITOR_DAG, run_id, "measure")
    except AirflowApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    stats = report["stats"]
    accuracy = "n/a" if stats["accuracy"] is None else f"{stats['accuracy']:.3f}"
    typer.echo(f"live: {stats['results']} answers, {stats['joined']} with feedback, accuracy {accuracy}, "
               f"answers per tier {stats['tier_fractions']} (expected {report['expected']}); "
               f"{stats.get('canary_excluded', 0)} canary answers left out")
    if report["reasons"]:
        typer.echo("retraining (a run of the pipeline was triggered) because: " + "; ".join(report["reasons"]))
    else:
        typer.echo("healthy: no retraining")


@app.command("ml-step")
def ml_step(
    step: str = typer.Argument(..., help="train, gate or register."),
    input_uri: str = typer.Option(..., "--input", help="s3:// URI of the step's input (JSON)."),
    output_uri: str = typer.Option(..., "--output", help="s3:// URI its result (JSON) is written to; files a later "
                                   "step needs go next to it."),
) -> None:
    """Run one ML step of the pipeline where Airflow put it (the trainer pod, with backend=kubernetes)."""
    import json

    from plugins.hooks.s3 import DatasetStore, split_uri
    from plugins.pipeline.trainer_pod import run_step
    from runtime.settings import Settings

    settings = Settings()
    store = DatasetStore.from_settings(settings)
    store.bucket, key = split_uri(input_uri)
    payload = json.loads(store.get_bytes(key))
    try:
        result = run_step(step, payload, settings, output_uri.rsplit("/", 1)[0])
    except Exception as exc:  # the pod's exit code fails the Airflow task; the reason is in its log
        typer.echo(f"error: ml-step {step}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    store.bucket, key = split_uri(output_uri)
    store.put_bytes(key, json.dumps(result).encode(), content_type="application/json")
    typer.echo(f"ml-step {step}: result in {output_uri}")
