"""The data-plane commands of `tierflow` (broker, worker, simulate, publish-training).

The assembled `tierflow` command (`tierflow_cli`) adds these to its own; `python -m runtime.cli` runs
them alone (rollout backends need only `worker`). Heavy imports stay inside commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)


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
    from ml.bundle import bundle_dir_of
    from runtime.worker import WorkerError, serve

    try:
        # A models:/ URI is resolved here (download into $TIERFLOW_HOME/models, once per model version),
        # so the worker is handed a local bundle directory and ml/ never reads settings.
        source = bundle_dir_of(model_uri, tier, tracking_uri=settings.mlflow.tracking_uri,
                               cache_dir=settings.home / "models")
        serve(settings, tier, str(source), http_port)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: cannot serve tier {tier!r} from {model_uri!r}: {exc}", err=True)
        raise typer.Exit(2) from exc
    except WorkerError as exc:
        typer.echo(f"error: {tier} worker stopped: {exc}", err=True)
        raise typer.Exit(3) from exc


def _samples(dataset: str, split: str, n: int | None, offset: int, image_size: str | None):
    """(x, y, class names) of ``n`` samples from ``offset`` of a dataset (ml.sources): Fashion-MNIST's
    train/test split, a .npz (its x_test/y_test for split 'test' when it has them), an image folder."""
    from ml.sources import load_dataset, parse_image_size

    if split not in ("train", "test"):
        raise typer.BadParameter(f"--split must be 'train' or 'test', got {split!r}")
    try:
        train, test = load_dataset(dataset, image_size=parse_image_size(image_size))
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from None
    ds = test if split == "test" and test is not None else train
    n = len(ds) - offset if n is None else n
    if n < 1 or offset + n > len(ds):
        raise typer.BadParameter(f"offset {offset} + n {n} exceeds the {len(ds)} samples of {dataset} ({split})")
    return ds.x[offset:offset + n], ds.y[offset:offset + n], ds.class_names


DATASET = typer.Option("fashion-mnist", help="fashion-mnist, a .npz (x, y[, class_names]) or an image folder "
                                              "(one sub-folder per class, PNG/JPEG).")
IMAGE_SIZE = typer.Option(None, help="Resize an image folder's images to HxW, e.g. 64x64 (the model's input).")


@app.command()
def simulate(
    n: int = typer.Option(None, min=1, help="Requests to send (default 1000 Fashion-MNIST test images, or the "
                                               "whole dataset given)."),
    dataset: str = DATASET,
    split: str = typer.Option("test", help="Split of fashion-mnist or of a .npz with x_test: train or test."),
    image_size: str = IMAGE_SIZE,
    rate: float = typer.Option(None, help="Open loop: requests per second."),
    concurrency: int = typer.Option(None, help="Closed loop: requests in flight."),
    deadline_ms: int = typer.Option(None, help="Request deadline (default TIERFLOW_WORKER__DEFAULT_DEADLINE_MS)."),
    content_type: str = typer.Option("tensor", help="tensor, png, jpeg or json."),
    entry_tier: str = typer.Option("edge", help="Tier whose cluster receives requests ('full' for cloud-only)."),
    offset: int = typer.Option(0, min=0, help="First test image."),
    out: str = typer.Option(None, help="Directory for report.json and PNG plots (default $TIERFLOW_HOME/sim/<run>)."),
    feedback: bool = typer.Option(True, help="Publish the ground truth of every answered request to APP.feedback."),
    mlflow: bool = typer.Option(False, help="Log the summary and plots to MLflow (TIERFLOW_MLFLOW__TRACKING_URI)."),
) -> None:
    """Device simulator: stream test images as requests, report accuracy, answers per tier, latency."""
    import json
    import uuid

    from runtime.client import CONTENT_TYPES, log_to_mlflow, publish_feedback, save_plots
    from runtime.client import simulate as run_simulation
    from runtime.settings import get_settings

    if (rate is None) == (concurrency is None):
        raise typer.BadParameter("give exactly one of --rate (open loop) or --concurrency (closed loop)")
    if content_type not in CONTENT_TYPES:
        raise typer.BadParameter(f"--content-type must be one of {list(CONTENT_TYPES)}")
    settings = get_settings()
    if n is None and dataset == "fashion-mnist":
        n = 1000
    x, y, class_names = _samples(dataset, split, n, offset, image_size)
    run_id = uuid.uuid4().hex[:8]
    report = run_simulation(settings, x, y, rate=rate, concurrency=concurrency, deadline_ms=deadline_ms,
                            content_type=CONTENT_TYPES[content_type], entry_tier=entry_tier, run_id=run_id,
                            class_names=class_names)
    out_dir = Path(out) if out else settings.home / "sim" / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = report.summary()
    (out_dir / "report.json").write_text(json.dumps({"summary": summary, "rows": report.rows}, indent=1))
    plots = save_plots(report, out_dir, title=f"({run_id})")
    if feedback:
        publish_feedback(settings, report.feedback())
    if mlflow:
        run = log_to_mlflow(report, plots, settings.mlflow.tracking_uri, f"{settings.app}-simulations",
                            {"n": len(x), "dataset": dataset, "rate": rate, "concurrency": concurrency, "content_type": content_type,
                             "entry_tier": entry_tier})
        typer.echo(f"logged to MLflow run {run} at {settings.mlflow.tracking_uri}")
    typer.echo(json.dumps(summary, indent=1))
    typer.echo(f"report and plots: {out_dir / 'report.json'} {' '.join(str(p) for p in plots)}")
    if report.missing:
        raise typer.Exit(1)


@app.command("publish-training")
def publish_training_cmd(
    n: int = typer.Option(None, min=1, help="Labeled samples to publish (default 1000 of Fashion-MNIST, or the "
                                               "whole dataset given)."),
    dataset: str = DATASET,
    split: str = typer.Option("train", help="Split of fashion-mnist or of a .npz with x_test: train or test."),
    image_size: str = IMAGE_SIZE,
    offset: int = typer.Option(0, min=0, help="First sample."),
) -> None:
    """Publish labeled samples to APP.training (tensor value, tf-label header) for ingestion. Samples of a
    dataset with its own class names carry the class name as label; ingest records the names."""
    from runtime.client import publish_training
    from runtime.settings import get_settings

    settings = get_settings()
    if n is None and dataset == "fashion-mnist":
        n = 1000
    x, y, class_names = _samples(dataset, split, n, offset, image_size)
    named = None if dataset == "fashion-mnist" else class_names
    count = publish_training(settings, x, y, key_prefix=f"{split}-{offset}", class_names=named)
    typer.echo(f"published {count} samples of {len(class_names)} classes to {settings.topic('training')} "
               f"on {settings.kafka.bootstrap}")


if __name__ == "__main__":
    app()
