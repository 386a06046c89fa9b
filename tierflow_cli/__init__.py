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
app.add_typer(stack_app, name="stack", help="Start, check and stop the embedded local stack.")
app.add_typer(continuum_app, name="continuum", help="Edge, fog and cloud as emulated sites with real link delay, "
                                                    "bandwidth and CPU limits (needs root).")
app.registered_commands.extend(runtime_app.registered_commands)  # broker, worker, serve-local, simulate, ...


@app.command()
def demo(
    train_samples: int = typer.Option(60000, help="Fashion-MNIST training samples streamed into APP.training."),
    epochs: int = typer.Option(5, help="Training epochs (pipeline parameter)."),
    requests: int = typer.Option(2000, help="Test requests streamed through the tiers at the end."),
    rate: float = typer.Option(200.0, help="Requests per second of the test stream."),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the stack and tier workers up."),
    stop: bool = typer.Option(False, "--stop", help="Only stop what a --keep-running demo left up."),
    screenshots: str = typer.Option(None, help="Directory for PNG screenshots of the Airflow grid and MLflow "
                                               "registry (needs Debian's chromium)."),
) -> None:
    """The whole pipeline end to end on the embedded stack (implemented in infra.local.demo)."""
    from infra.local import demo as demo_mod

    if stop:
        demo_mod.stop_everything()
        return
    try:
        demo_mod.run_demo(train_samples=train_samples, epochs=epochs, requests=requests, rate=rate,
                          keep_running=keep_running, screenshots=screenshots)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user; details were printed above
        typer.echo(f"error: demo failed: {exc}", err=True)
        raise typer.Exit(1) from exc
