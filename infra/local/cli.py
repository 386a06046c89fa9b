"""`tierflow stack up|down|status`: the embedded local stack (broker, S3, MLflow, Airflow, Prometheus) on loopback."""

from __future__ import annotations

import time

import typer

app = typer.Typer(no_args_is_help=True)


def _services(only: str | None) -> list[str] | None:
    return [s.strip() for s in only.split(",") if s.strip()] if only else None


@app.command()
def up(only: str = typer.Option(None, "--only", help="Comma-separated subset: broker,s3,mlflow,airflow,prometheus "
                                                     "(what they need is started too)."),
       ) -> None:
    """Start the services and wait until each is healthy; they keep running after this command."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from infra.local.process import StackError
    from infra.local.stack import LocalStack, load_settings

    console = Console()
    stack = LocalStack(load_settings())
    tasks: dict[str, int] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        def on_event(service: str, message: str) -> None:
            if service not in tasks:
                tasks[service] = progress.add_task(f"{service}: {message}", total=1)
            done = message.startswith(("healthy", "already"))
            progress.update(tasks[service], description=f"{service}: {message}", completed=1 if done else 0)
            if done:
                progress.stop_task(tasks[service])

        try:
            settings = stack.up(_services(only), on_event=on_event)
        except StackError as exc:
            console.print(f"[red]stack up failed:[/red] {exc}")
            console.print("Services that did start keep running; `tierflow stack down` stops them.")
            raise typer.Exit(1) from exc
    _print_status(stack)
    if "airflow" in stack.states():
        console.print(f"Airflow login: {settings.airflow.username} / password in {stack.paths.env_file}")


@app.command()
def down(only: str = typer.Option(None, "--only", help="Comma-separated subset of services to stop (default: "
                                                       "everything, the tier workers included).")) -> None:
    """Stop everything the stack, the pipeline's rollouts, the demo and serve-local started here: the tier
    workers first (graceful drain), then the services (whole process groups). Says what it stopped."""
    from rich.console import Console

    from infra.local.stack import LocalStack, load_settings

    console = Console()
    stack = LocalStack(load_settings())
    started = time.monotonic()
    with console.status("stopping") as status:
        stopped = stack.down(_services(only), on_event=lambda s, m: status.update(f"{s}: {m}"))
    workers = [s.removeprefix("worker ") for s in stopped if s.startswith("worker ")]
    services = [s for s in stopped if not s.startswith("worker ")]
    if workers:
        console.print(f"stopped tier workers: {', '.join(workers)}")
    console.print(f"stopped services: {', '.join(services) or 'none was running'}"
                  f" ({time.monotonic() - started:.1f}s)")
    if only is None:
        console.print(f"nothing started from {stack.settings.home} is left running")


@app.command()
def status() -> None:
    """Show each service: running, healthy, URL, pid, ports, log file. Exit code 1 if one is unhealthy."""
    from infra.local.stack import LocalStack, load_settings

    stack = LocalStack(load_settings())
    rows = _print_status(stack)
    if any(r["running"] and not r["healthy"] for r in rows.values()):
        raise typer.Exit(1)


def _print_status(stack) -> dict[str, dict[str, object]]:  # noqa: ANN001 - LocalStack, imported lazily
    from rich.console import Console
    from rich.table import Table

    rows = stack.status()
    table = Table(title=f"tierflow stack: {stack.paths.root} (logs in logs/, state in state.json)")
    for col in ("service", "state", "url", "pid", "ports"):
        table.add_column(col, no_wrap=col != "state")
    for name, row in rows.items():
        if not row["running"]:
            state = "[dim]stopped[/dim]"
        elif row["healthy"]:
            state = f"[green]healthy[/green] {row['uptime_s']:.0f}s"
        else:
            state = f"[red]unhealthy[/red] (see {row['log']})"
        ports = list(row["ports"].values()) if row["ports"] else []
        shown = f"{ports[0]}" + (f" +{len(ports) - 1}" if len(ports) > 1 else "") if ports else ""
        table.add_row(name, state, str(row["url"]), str(row["pid"] or ""), shown)
    console = Console()
    console.print(table)
    if rows.get("prometheus", {}).get("healthy"):
        console.print(_prometheus_summary(str(rows["prometheus"]["url"])))
    return rows


def _prometheus_summary(url: str) -> str:
    """What the stack's Prometheus scrapes and evaluates: worker targets up, rules loaded, alerts firing."""
    from infra.prometheus_api import Prometheus, PrometheusError
    from runtime.scrape_targets import JOB

    prom = Prometheus(url)
    try:
        workers = [t for t in prom.targets() if t["labels"].get("job") == JOB]
        rules = [r for g in prom.rules() for r in g["rules"]]
    except PrometheusError as exc:
        return f"prometheus: {exc}"
    up = sum(t["health"] == "up" for t in workers)
    firing = sorted({r["name"] for r in rules if r.get("state") == "firing"})
    by_tier = ", ".join(f"{t['labels'].get('app')}/{t['labels'].get('tier')} {t['health']}" for t in workers)
    return (f"prometheus: {up}/{len(workers)} tier worker targets up{f' ({by_tier})' if by_tier else ''}; "
            f"{len(rules)} rules loaded; firing: {', '.join(firing) or 'none'}")
