"""The `tierflow` command: one entry point, sub-commands per layer. Heavy imports stay inside commands."""

from __future__ import annotations

import typer

from infra.local.cli import app as stack_app
from ml.cli import app as ml_app

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
app.add_typer(ml_app, name="ml", help="Train, calibrate, partition and evaluate multi-exit models.")
app.add_typer(stack_app, name="stack", help="Start, check and stop the embedded local stack.")

if __name__ == "__main__":
    app()
