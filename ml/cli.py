"""`tierflow ml ...`: train, calibrate, partition, evaluate, run all, and the benchmark report.

Steps share a run directory: ``train`` writes ``model.keras`` + ``train.json``; ``calibrate`` reads them
and writes ``calibration.json``; ``partition`` writes a tier bundle; ``evaluate`` scores a bundle on the
held-out test split. Every step writes a JSON report and PNG plots. Heavy imports stay in the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)

DatasetOpt = Annotated[str, typer.Option(help="'fashion-mnist', a shard manifest .json, a .npz (x, y[, class_names]) "
                                              "or an image folder (one sub-folder per class)")]
ImageSizeOpt = Annotated[str | None, typer.Option(help="resize an image folder's images to HxW, e.g. 64x64")]
ArchitectureOpt = Annotated[str, typer.Option(help="compact | b_alexnet | vgg, your factory 'package.module:function', "
                                                   "a .keras file or an MLflow model URI (models:/name/1)")]


def _floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _print(obj) -> None:
    from rich.console import Console

    Console().print_json(json.dumps(obj, default=str))


def _config(run: Path):
    from ml.pipeline import PipelineConfig
    from ml.training import TrainConfig

    meta = json.loads((run / "train.json").read_text())
    c = dict(meta["config"])
    tcfg = TrainConfig(**c.pop("train"))
    return meta, PipelineConfig(train=tcfg, **c)


def _splits(meta, cfg):
    from ml.pipeline import split_data
    from ml.sources import load_dataset

    train, test = load_dataset(meta["dataset"], image_size=meta.get("image_size"))
    train = train.subset(meta.get("n_train"), seed=cfg.train.seed)
    return split_data(train, test, cfg)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="run directory to write")] = Path("runs/latest"),
    dataset: DatasetOpt = "fashion-mnist",
    architecture: ArchitectureOpt = "compact",
    width: float = 1.0,
    epochs: int = 8,
    batch_size: Annotated[int, typer.Option(help="0 = auto: up to 128, smaller on small datasets so that an "
                                                 "epoch has at least 100 steps")] = 0,
    exit_weights: Annotated[str | None, typer.Option(help="per-exit loss weights, e.g. '1,1,1' (default: 0.6 "
                                                         "each early exit, 1.0 the final)")] = None,
    seed: int = 0,
    patience: int = 2,
    max_seconds: Annotated[float | None, typer.Option(help="stop after the epoch that crosses this budget")] = None,
    val_fraction: float = 0.1,
    n_train: Annotated[int | None, typer.Option(help="use a random subset of this many samples")] = None,
    image_size: ImageSizeOpt = None,
    distill_weight: Annotated[float, typer.Option(help="self-distillation of the early exits from the final exit "
                                                       "(0 = off)")] = 0.0,
    distill_temperature: float = 3.0,
    augment_shift: Annotated[int, typer.Option(help="shift each training image by up to this many pixels "
                                                    "(0 = off)")] = 0,
    augment_flip: Annotated[bool, typer.Option(help="mirror training images left-right at random")] = False,
) -> None:
    """Train all exits jointly; writes model.keras, train.json, training.png, confusion.png."""
    from dataclasses import asdict

    from ml import plots
    from ml.pipeline import PipelineConfig, _jsonable, fit, split_data
    from ml.sources import load_dataset, parse_image_size
    from ml.training import TrainConfig, exit_metrics, predict_exits

    try:
        size = parse_image_size(image_size)
        cfg = PipelineConfig(architecture=architecture, width=width, val_fraction=val_fraction,
                             train=TrainConfig(epochs=epochs, batch_size=batch_size, exit_weights=_floats(exit_weights),
                                               seed=seed, patience=patience, max_seconds=max_seconds,
                                               distill_weight=distill_weight,
                                               distill_temperature=distill_temperature,
                                               augment_shift=augment_shift, augment_flip=augment_flip))
        full, test = load_dataset(dataset, image_size=size)
        full = full.subset(n_train, seed=seed)
        tr, val, te = split_data(full, test, cfg)
        model, result = fit(tr, val, cfg)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    val_m = exit_metrics(predict_exits(model, val.x.astype("float32")), val.y)
    report = {"dataset": dataset, "image_size": size, "n_train": n_train, "config": _jsonable(asdict(cfg)), "history": result.history,
              "epochs_run": result.epochs_run, "seconds": result.seconds, "val_exits": val_m,
              "class_names": tr.class_names, "n": {"train": len(tr), "val": len(val), "test": len(te)}}
    if n_train is not None:
        report["dataset_subset"] = n_train
    (out / "train.json").write_text(json.dumps(_jsonable(report), indent=2))
    plots.plot_training(result.history, out / "training.png")
    plots.plot_confusions(val_m, tr.class_names, out / "confusion.png")
    _print({"run": str(out), "epochs": result.epochs_run, "seconds": round(result.seconds, 1),
            "val_accuracy_per_exit": [round(m["accuracy"], 4) for m in val_m]})


@app.command()
def calibrate(
    run: Annotated[Path, typer.Option(help="run directory written by `train`")] = Path("runs/latest"),
    tier_map: Annotated[str | None, typer.Option(help="e.g. 'edge=0;fog=1;cloud=2' (default) or 'edge=0;cloud=1+2'")] = None,
    measure: Annotated[str, typer.Option(help="max_softmax | entropy")] = "max_softmax",
    tolerance: Annotated[float, typer.Option(help="accuracy points the cascade may lose vs the final exit")] = 1.0,
    objective: Annotated[str, typer.Option(help="early (most early answers) | cost (lowest expected cost)")] = "early",
    gflops: Annotated[str | None, typer.Option(help="per-tier compute speed in GFLOP/s, e.g. '1,10,100'")] = None,
    link_latency_ms: Annotated[str | None, typer.Option(help="per-link latency, e.g. '2,20'")] = None,
    link_mbps: Annotated[str | None, typer.Option(help="per-link bandwidth in Mbit/s, e.g. '100,20'")] = None,
    margin_se: Annotated[float, typer.Option(help="safety margin in standard errors of the accuracy difference")] = 2.0,
) -> None:
    """Pick per-exit thresholds on the validation split; writes calibration.json and trade-off plots."""
    import keras

    from ml import plots
    from ml.pipeline import calibrate_model

    try:
        meta, cfg = _config(run)
        cfg.tier_map, cfg.measure, cfg.tolerance, cfg.objective = tier_map, measure, tolerance, objective
        cfg.margin_se = margin_se
        cfg.gflops_per_s, cfg.link_latency_ms, cfg.link_bandwidth_mbps = (
            _floats(gflops), _floats(link_latency_ms), _floats(link_mbps))
        model = keras.saving.load_model(run / "model.keras", compile=False)
        _, val, _ = _splits(meta, cfg)
        cal, probs = calibrate_model(model, val, cfg)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    from ml.partition import normalize_tier_map

    doc = {"tier_map": normalize_tier_map(tier_map, len(model.outputs)), "measure": measure, **cal.to_dict()}
    (run / "calibration.json").write_text(json.dumps(doc, indent=2))
    plots.plot_tradeoff(cal, run / "tradeoff.png")
    plots.plot_exit_curves(probs, val.y, measure, run / "exit_curves.png")
    _print({k: doc[k] for k in ("thresholds", "accuracy", "final_accuracy", "tier_fractions", "expected_cost", "feasible")})
    if not cal.feasible:
        typer.secho("no thresholds meet the tolerance; chose the most accurate", fg=typer.colors.YELLOW, err=True)


@app.command()
def partition(
    run: Annotated[Path, typer.Option(help="run directory with model.keras and calibration.json")] = Path("runs/latest"),
    out: Annotated[Path | None, typer.Option(help="bundle directory (default RUN/bundle)")] = None,
    model_name: str = "fmnist",
    tflite: Annotated[bool, typer.Option(help="also export the first tier to TFLite float and int8")] = True,
) -> None:
    """Cut the model into tier sub-models with the calibrated thresholds; writes a tier bundle."""
    import keras

    from ml.bundle import save_bundle

    try:
        meta, cfg = _config(run)
        cal_path = run / "calibration.json"
        if not cal_path.is_file():
            raise FileNotFoundError(f"{cal_path} is missing: run `tierflow ml calibrate --run {run}` first")
        cal = json.loads(cal_path.read_text())
        model = keras.saving.load_model(run / "model.keras", compile=False)
        rep = None
        if tflite:
            _, val, _ = _splits(meta, cfg)
            rep = val.x[:200].astype("float32")
        bundle = out or run / "bundle"
        m = save_bundle(bundle, model, cal["tier_map"], cal["thresholds"], meta["class_names"], model_name=model_name,
                        architecture=cfg.architecture, measure=cal["measure"], tflite=tflite, representative=rep,
                        metadata={"dataset": meta["dataset"], "calibration": cal, "train_run": str(run)})
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    _print({"bundle": str(bundle), "tiers": [{"name": t.name, "exits": t.exits, "thresholds": t.thresholds,
                                              "flops": t.flops, "activation": t.output_shape} for t in m.tiers],
            "tflite": m.tflite})


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Option(help="tier bundle directory")] = Path("runs/latest/bundle"),
    dataset: DatasetOpt = "fashion-mnist",
    out: Annotated[Path | None, typer.Option(help="where to write evaluation.json/cascade.png (default: bundle's parent)")] = None,
    test_fraction: float = 0.15,
    seed: int = 0,
    image_size: ImageSizeOpt = None,
) -> None:
    """Offline cascade evaluation on the held-out test split (accuracy, tiers, FLOPs, bytes, cloud-only)."""
    from ml import plots
    from ml.pipeline import evaluate_bundle
    from ml.sources import load_dataset, parse_image_size

    try:
        train, test = load_dataset(dataset, image_size=parse_image_size(image_size))
        if test is None:
            _, test = train.split(test_fraction, seed=seed + 1)
        ev = evaluate_bundle(bundle, test)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    target = out or bundle.parent
    target.mkdir(parents=True, exist_ok=True)
    (target / "evaluation.json").write_text(json.dumps(ev, indent=2))
    plots.plot_cascade(ev, target / "cascade.png")
    _print({k: ev[k] for k in ("n", "accuracy", "final_exit_accuracy", "tier_fractions", "relative_compute",
                               "bytes_per_request", "cloud_only")})


@app.command("run")
def run_all(
    out: Path = Path("runs/latest"),
    dataset: DatasetOpt = "fashion-mnist",
    architecture: ArchitectureOpt = "compact",
    epochs: int = 8,
    tier_map: str | None = None,
    tolerance: float = 1.0,
    objective: str = "early",
    max_seconds: float | None = None,
    seed: int = 0,
    image_size: ImageSizeOpt = None,
    min_accuracy: Annotated[float, typer.Option(min=0.0, max=1.0, help="sanity floor on the test split's "
                                                "cascade accuracy (chance + a margin always applies)")] = 0.0,
) -> None:
    """train → calibrate → partition → evaluate in one go (the function the Airflow task calls); exits 1 when
    the model fails the sanity check the pipeline gates registration on."""
    from ml.pipeline import PipelineConfig, run_pipeline
    from ml.sources import load_dataset, parse_image_size
    from ml.training import TrainConfig

    try:
        train_ds, test = load_dataset(dataset, image_size=parse_image_size(image_size))
        cfg = PipelineConfig(architecture=architecture, tier_map=tier_map, tolerance=tolerance, objective=objective,
                             min_accuracy=min_accuracy,
                             train=TrainConfig(epochs=epochs, seed=seed, max_seconds=max_seconds))
        result = run_pipeline(train_ds, out, cfg, test=test, metadata={"dataset": dataset})
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    _print({"bundle": str(result.bundle_dir), "report": str(result.report_path), "metrics": result.metrics})
    sanity = result.report["sanity"]
    if not sanity["passed"]:
        typer.secho(f"sanity check failed, the pipeline would not register this model: {sanity['reason']}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def report(
    out: Path = Path("runs/report"),
    epochs: Annotated[int, typer.Option(help="at most this many epochs; the budget usually ends training first")] = 100,
    max_train_seconds: Annotated[float, typer.Option(help="training budget (the target is <= 300 s)")] = 280.0,
    seed: int = 0,
) -> None:
    """The default-model benchmark: compact CNN on Fashion-MNIST, figures vs targets (exit 1 if any misses)."""
    from ml.report import format_summary, run_report

    summary = run_report(out, epochs=epochs, max_train_seconds=max_train_seconds, seed=seed)
    typer.echo(format_summary(summary))
    if not all(c["ok"] for c in summary["checks"].values()):
        raise typer.Exit(1)
