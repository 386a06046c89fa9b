"""CLI commands of this layer."""

import typer

app = typer.Typer(no_args_is_help=True)
