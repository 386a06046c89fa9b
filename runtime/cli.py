"""The `tierflow` command: one entry point, sub-commands per layer. Heavy imports stay inside commands."""

from __future__ import annotations

import typer

from infra.local.cli import app as stack_app
from ml.cli import app as ml_app

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
app.add_typer(ml_app, name="ml", help="Train, calibrate, partition and evaluate multi-exit models.")
app.add_typer(stack_app, name="stack", help="Start, check and stop the embedded local stack.")


@app.command()
def broker(
    port: int = typer.Option(None, help="Port to listen on (default: the port of TIERFLOW_KAFKA__BOOTSTRAP)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, memory storage) in the foreground until Ctrl-C."""
    import signal
    import threading

    from runtime.broker import BrokerError, EmbeddedBroker
    from runtime.settings import get_settings

    if port is None:
        port = int(get_settings().kafka.bootstrap.rsplit(":", 1)[1])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with EmbeddedBroker(host=host, port=port) as b:
            typer.echo(f"broker listening on {b.bootstrap} (memory storage; Ctrl-C stops it)")
            while not stop.wait(0.5):
                if not b.running():
                    typer.echo("error: broker exited unexpectedly", err=True)
                    raise typer.Exit(1)
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def worker(
    tier: str = typer.Option(..., help="Tier to serve: a tier of the bundle (edge, fog, cloud) or 'full' "
                                       "(the unpartitioned model, cloud-only)."),
    model_uri: str = typer.Option(..., help="Bundle directory or MLflow URI models:/APP-<tier>/<version>."),
    http_port: int = typer.Option(None, help="Port of /healthz, /readyz, /metrics "
                                             "(default TIERFLOW_WORKER__HTTP_PORT; 0 picks a free one)."),
) -> None:
    """Run one tier worker until SIGTERM (finishes its batch, flushes, commits). Rollout backends launch this."""
    from runtime.logs import setup_logging
    from runtime.settings import get_settings

    settings = get_settings()
    setup_logging(settings.worker.log_level, settings.worker.json_logs)
    from runtime.worker import serve

    try:
        serve(settings, tier, model_uri, http_port)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: cannot serve tier {tier!r} from {model_uri!r}: {exc}", err=True)
        raise typer.Exit(2) from exc


if __name__ == "__main__":
    app()
