"""train → calibrate → partition → evaluate, as plain functions over arrays (the Airflow tasks and the
``tierflow ml`` CLI both call these; I/O is only the output directory)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.calibration import Calibration, calibrate
from ml.datasets import Dataset
from ml.exit_curve import exit_curves
from ml.partition import normalize_tier_map
from ml.training import TrainConfig


@dataclass
class PipelineConfig:
    architecture: str = "compact"  # a built-in name, 'package.module:factory' or a model URI (ml.user_models)
    width: float = 1.0
    tier_map: Mapping[str, Sequence[int | str]] | str | None = None
    measure: str = "max_softmax"
    tolerance: float = 1.0  # accuracy points below the final exit the cascade may lose
    objective: str = "early"  # or "cost"
    margin_se: float = 2.0  # calibration safety margin in standard errors (see ml.calibration)
    # Adaptive exits (ml.exit_curve): accuracy points below the final exit a tier's lowered thresholds may
    # bring the cascade to, on the validation split; the operating points stop there.
    adaptive_floor: float = 2.0
    # Objective "cost": cost (e.g. ms) of a request answered at each tier, one per tier of the tier map;
    # when None it is derived from the tiers' FLOPs at gflops_per_s plus link latency and transfer time.
    tier_costs: Sequence[float] | None = None
    gflops_per_s: Sequence[float] | None = None  # per tier
    link_latency_ms: Sequence[float] | None = None
    link_bandwidth_mbps: Sequence[float] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.15  # only used when no test split is given
    min_accuracy: float = 0.0  # sanity floor on the test split's cascade accuracy (chance + margin always)
    model_name: str = "fmnist"
    tflite: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class PipelineResult:
    bundle_dir: Path
    metrics: dict[str, float]  # flat numbers, ready for mlflow.log_metrics
    report: dict[str, Any]  # everything, also written to report.json
    plots: list[Path]
    report_path: Path


def activation_bytes(shape: Sequence[int] | None, bytes_per_value: int = 4) -> float:
    return 0.0 if shape is None else float(np.prod(shape) * bytes_per_value)


def split_data(train: Dataset, test: Dataset | None, cfg: PipelineConfig) -> tuple[Dataset, Dataset, Dataset]:
    """(train, validation, test); validation is for early stopping and calibration, test is held out."""
    if test is None:
        train, test = train.split(cfg.test_fraction, seed=cfg.train.seed + 1)
    train, val = train.split(cfg.val_fraction, seed=cfg.train.seed)
    return train, val, test


def fit(train: Dataset, val: Dataset, cfg: PipelineConfig):
    from ml.training import set_seed, train_multi_exit
    from ml.user_models import load_architecture

    set_seed(cfg.train.seed)  # before building: the initial weights come from the seed too
    model = load_architecture(cfg.architecture, input_shape=train.x.shape[1:], num_classes=len(train.class_names),
                              width=cfg.width)
    tmap = normalize_tier_map(cfg.tier_map, len(model.outputs))  # fail before training, not after
    if cfg.tier_costs is not None and len(cfg.tier_costs) != len(tmap):
        raise ValueError(f"tier_costs needs one cost per tier ({list(tmap)}), got {list(cfg.tier_costs)}")
    if cfg.objective not in ("early", "cost"):
        raise ValueError(f"unknown calibration objective {cfg.objective!r}; use 'early' or 'cost'")
    result = train_multi_exit(model, train.x.astype("float32"), train.y, val.x.astype("float32"), val.y, cfg.train)
    return model, result


def tier_costs_for(model, cfg: PipelineConfig) -> tuple[list[int], list[float], list[float]]:
    """(tier FLOPs, link bytes, cost in ms of answering at each tier) for the configured tier map."""
    from ml.costs import default_costs
    from ml.partition import partition

    parts = partition(model, cfg.tier_map)
    flops = [p.flops for p in parts]
    link_bytes = [activation_bytes(p.output_shape) for p in parts[:-1]]
    if cfg.tier_costs is not None:
        if len(cfg.tier_costs) != len(parts):
            raise ValueError(f"tier_costs needs one cost per tier ({[p.name for p in parts]}), got {list(cfg.tier_costs)}")
        return flops, link_bytes, [float(c) for c in cfg.tier_costs]
    costs = default_costs(flops, link_bytes, cfg.gflops_per_s, cfg.link_latency_ms, cfg.link_bandwidth_mbps)
    return flops, link_bytes, costs.per_tier(len(parts)).tolist()


def calibrate_model(model, val: Dataset, cfg: PipelineConfig) -> tuple[Calibration, list[np.ndarray]]:
    from ml.training import predict_exits

    probs = predict_exits(model, val.x.astype("float32"))
    tier_cost = tier_costs_for(model, cfg)[2] if cfg.objective == "cost" else None
    cal = calibrate(probs, val.y, cfg.tier_map, measure=cfg.measure, tolerance=cfg.tolerance,
                    objective=cfg.objective, tier_costs=tier_cost, margin_se=cfg.margin_se)
    return cal, probs


def evaluate_bundle(bundle_dir: str | Path, test: Dataset, tier_costs: Sequence[float] | None = None) -> dict[str, Any]:
    """Offline cascade evaluation of a bundle on a test set (thresholds and FLOPs from its manifest)."""
    import keras

    from ml.bundle import read_manifest
    from ml.evaluation import evaluate_cascade
    from ml.training import predict_exits

    m = read_manifest(bundle_dir)
    model = keras.saving.load_model(Path(bundle_dir) / m.full_file, compile=False)
    probs = predict_exits(model, test.x.astype(m.input.dtype))
    thresholds: list[float | None] = [None] * m.num_exits
    for t in m.tiers:
        for e, th in zip(t.exits, t.thresholds, strict=True):
            thresholds[e] = th
    tmap = {t.name: t.exits for t in m.tiers}
    return evaluate_cascade(
        probs, test.y, thresholds, tmap, measure=m.confidence,
        tier_flops=[t.flops for t in m.tiers], full_flops=m.full_flops,
        link_bytes=[activation_bytes(t.output_shape) for t in m.tiers[:-1]],
        input_bytes=float(np.prod(m.input.shape) * test.x.dtype.itemsize), tier_costs=tier_costs,
    )


def tflite_accuracy(bundle_dir: str | Path, test: Dataset) -> dict[str, Any]:
    """First-tier exit accuracy of the Keras tier and of its TFLite exports, and their argmax agreement."""
    from ml.bundle import load_bundle_tier, read_manifest
    from ml.export import run_tflite

    m = read_manifest(bundle_dir)
    first = load_bundle_tier(bundle_dir, m.tiers[0].name)
    probs, _ = first.predict(test.x)
    ref = probs[0].argmax(axis=1)
    out: dict[str, Any] = {"n": len(test), "tier": first.name, "keras_accuracy": float((ref == test.y).mean())}
    for kind, file in m.tflite.items():
        pred = run_tflite((Path(bundle_dir) / file).read_bytes(), test.x)[0].argmax(axis=1)
        out[f"{kind}_accuracy"] = float((pred == test.y).mean())
        out[f"{kind}_agreement"] = float((pred == ref).mean())
        out[f"{kind}_bytes"] = (Path(bundle_dir) / file).stat().st_size
    return out


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The numbers worth charting, as a flat dict."""
    out: dict[str, float] = {}
    ev = report.get("test", {})
    for k in ("accuracy", "final_exit_accuracy", "relative_compute", "total_bytes_per_request", "expected_cost"):
        if k in ev:
            out[f"test_{k}"] = float(ev[k])
    for t, f in ev.get("tier_fractions", {}).items():
        out[f"test_fraction_{t}"] = float(f)
    for k, v in ev.get("tflite", {}).items():
        if k.endswith(("_accuracy", "_agreement")):
            out[f"test_tflite_{k}"] = float(v)
    for m in report.get("val_exits", []):
        out[f"val_exit{m['exit']}_accuracy"] = float(m["accuracy"])
    for m in report.get("test_exits", []):
        out[f"test_exit{m['exit']}_accuracy"] = float(m["accuracy"])
    cal = report.get("calibration", {})
    for k in ("accuracy", "final_accuracy", "expected_cost"):
        if k in cal:
            out[f"val_calibrated_{k}"] = float(cal[k])
    if "train_seconds" in report:
        out["train_seconds"] = float(report["train_seconds"])
    return out


def run_pipeline(train: Dataset, out_dir: str | Path, cfg: PipelineConfig | None = None,
                 test: Dataset | None = None, metadata: Mapping[str, Any] | None = None) -> PipelineResult:
    """Train, calibrate on the validation split, write the bundle, evaluate on the held-out test split."""
    from ml import plots
    from ml.bundle import save_bundle
    from ml.evaluation import sanity_check
    from ml.training import exit_metrics, predict_exits
    from ml.user_models import architecture_source

    cfg = cfg or PipelineConfig()
    if not 0.0 <= cfg.min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy={cfg.min_accuracy!r}: give an accuracy from 0 to 1 (0 = only beat chance)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    train, val, test = split_data(train, test, cfg)
    model, tr = fit(train, val, cfg)
    cal, val_probs = calibrate_model(model, val, cfg)
    curves = exit_curves(val_probs, val.y, cfg.tier_map, cal.thresholds, cal.exit_costs, measure=cfg.measure,
                         floor_points=cfg.adaptive_floor, margin_se=cfg.margin_se)
    bundle_dir = out / "bundle"
    source = {**architecture_source(cfg.architecture), **dict(metadata or {}).get("architecture_source", {})}
    meta = {"dataset": dict(metadata or {}), "calibration": cal.to_dict(), "model_source": source, "train": {
        "epochs_run": tr.epochs_run, "seconds": tr.seconds, "exit_weights": tr.exit_weights,
        "seed": cfg.train.seed, "n_train": len(train), "n_val": len(val), **tr.extra}}
    manifest = save_bundle(bundle_dir, model, cfg.tier_map, cal.thresholds, train.class_names,
                           model_name=cfg.model_name, architecture=cfg.architecture, measure=cfg.measure,
                           metadata=meta, tflite=cfg.tflite, representative=val.x[:200].astype("float32"),
                           curves=curves)
    _, _, tier_cost = tier_costs_for(model, cfg)
    evaluation = evaluate_bundle(bundle_dir, test, tier_costs=tier_cost)
    test_probs = predict_exits(model, test.x.astype("float32"))
    if manifest.tflite:
        evaluation["tflite"] = tflite_accuracy(bundle_dir, test.take(np.arange(min(500, len(test)))))
    report = {
        "config": _jsonable(asdict(cfg)),
        "model_source": source,
        "n": {"train": len(train), "val": len(val), "test": len(test)},
        "train_seconds": tr.seconds,
        "epochs_run": tr.epochs_run,
        "train_extra": tr.extra,
        "history": tr.history,
        "val_exits": exit_metrics(val_probs, val.y),
        "test_exits": exit_metrics(test_probs, test.y),
        "calibration": cal.to_dict(),
        "exit_curves": {t: c.model_dump() for t, c in curves.items()},
        "test": evaluation,
        "sanity": sanity_check(evaluation["accuracy"], len(train.class_names), len(test), cfg.min_accuracy),
        "tier_costs_ms": tier_cost,
        "bundle": str(bundle_dir),
        "tiers": [t.model_dump() for t in manifest.tiers],
        "full_flops": manifest.full_flops,
        "seconds_total": time.monotonic() - t0,
    }
    plot_paths = [
        plots.plot_training(tr.history, out / "training.png"),
        plots.plot_confusions(report["test_exits"], train.class_names, out / "confusion.png"),
        plots.plot_tradeoff(cal, out / "tradeoff.png"),
        plots.plot_exit_curves(val_probs, val.y, cfg.measure, out / "exit_curves.png"),
        plots.plot_cascade(evaluation, out / "cascade.png"),
    ]
    report["plots"] = [str(p) for p in plot_paths]
    report_path = out / "report.json"
    report_path.write_text(json.dumps(_jsonable(report), indent=2))
    return PipelineResult(bundle_dir=bundle_dir, metrics=flat_metrics(report), report=report,
                          plots=plot_paths, report_path=report_path)


def train_calibrate_partition(x: np.ndarray, y: np.ndarray, class_names: Sequence[str], out_dir: str | Path,
                              x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                              **config: Any) -> PipelineResult:
    """Arrays in, bundle + metrics + plots out: the entry point for the Airflow train task.

    ``config`` takes PipelineConfig fields plus TrainConfig fields (epochs, batch_size, exit_weights,
    seed, patience, learning_rate, max_seconds, progress) and ``metadata`` (e.g. the dataset version).
    """
    metadata = config.pop("metadata", None)
    train_fields = set(TrainConfig.__dataclass_fields__)
    tcfg = TrainConfig(**{k: config.pop(k) for k in list(config) if k in train_fields})
    unknown = set(config) - set(PipelineConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown pipeline options {sorted(unknown)}; known: "
                         f"{sorted(set(PipelineConfig.__dataclass_fields__) | train_fields)}")
    cfg = PipelineConfig(train=tcfg, **config)
    train = Dataset(np.asarray(x), np.asarray(y, dtype=np.int64), list(class_names))
    test = None if x_test is None else Dataset(np.asarray(x_test), np.asarray(y_test, dtype=np.int64), list(class_names))
    return run_pipeline(train, out_dir, cfg, test=test, metadata=metadata)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
