"""The ML steps of the pipeline, run in the ML environment (Airflow external-python tasks, or by hand).

Each step takes plain data (the validated config dict, URIs, paths) and returns plain JSON-able data,
so Airflow passes them as XComs. TensorFlow and MLflow are imported inside the functions: importing
this module costs nothing, and the scheduler's interpreter never runs them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

BUILTIN_DATASET = "fashion-mnist"
TEST_SAMPLES = 2000  # fixed, seeded subset of the Fashion-MNIST test split: same split for every gate
VAL_FRACTION = 0.15


def load_training_data(dataset_uri: str, settings: Any):
    """The dataset version: shards in S3 written by ingest (s3://.../manifest.json), a local manifest,
    or the built-in Fashion-MNIST train split."""
    from ml.datasets import load_fashion_mnist
    from ml.shards import parse_manifest, read_dataset

    if not dataset_uri or dataset_uri == BUILTIN_DATASET:
        return load_fashion_mnist("train"), BUILTIN_DATASET
    if dataset_uri.startswith("s3://"):
        from botocore.exceptions import ClientError

        from plugins.hooks.s3 import DatasetStore, split_uri

        bucket, key = split_uri(dataset_uri)
        store = DatasetStore.from_settings(settings)
        store.bucket = bucket
        manifest = parse_manifest(store.get_bytes(key))
        base = key.rsplit("/", 1)[0] if "/" in key else ""

        def fetch(shard_key: str) -> bytes:
            try:
                return store.get_bytes(shard_key)
            except ClientError:
                return store.get_bytes(f"{base}/{shard_key}")

        return read_dataset(manifest, fetch), f"{manifest.name}@{manifest.version}"
    path = Path(dataset_uri.removeprefix("file:"))
    manifest = parse_manifest(path)
    return read_dataset(path), f"{manifest.name}@{manifest.version}"


def _calibration_plot(calibration, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = calibration.curve or {}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if curve.get("pareto_cost") and curve.get("pareto_accuracy"):
        ax.plot(curve["pareto_cost"], curve["pareto_accuracy"], ".-", label="Pareto front (validation)")
    ax.scatter([calibration.expected_cost], [calibration.accuracy], color="red", zorder=3, label="chosen")
    ax.axhline(calibration.final_accuracy, color="gray", ls="--", label="final exit")
    ax.set_xlabel(f"expected cost per request ({calibration.objective})")
    ax.set_ylabel("cascade accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def train_calibrate_partition(cfg: dict[str, Any], dataset_uri: str, out_dir: str) -> dict[str, Any]:
    """Train the multi-exit network, calibrate per-exit thresholds, write the tier bundle, evaluate on the
    fixed test split and log everything to one MLflow run. Returns what gate/register need."""
    import mlflow

    from ml.architectures import build
    from ml.bundle import save_bundle
    from ml.calibration import calibrate
    from ml.datasets import load_fashion_mnist
    from ml.evaluation import evaluate_cascade
    from ml.partition import normalize_tier_map
    from ml.training import TrainConfig, exit_metrics, predict_exits, train_multi_exit
    from runtime.settings import get_settings

    settings = get_settings()
    t0 = time.monotonic()
    data, dataset_version = load_training_data(cfg.get("dataset") or dataset_uri, settings)
    if cfg.get("max_train_samples"):
        data = data.subset(int(cfg["max_train_samples"]), seed=0)
    train, val = data.split(VAL_FRACTION, seed=0)
    test = load_fashion_mnist("test").subset(TEST_SAMPLES, seed=0)
    model = build(cfg["architecture"], input_shape=data.x.shape[1:], num_classes=len(data.class_names))
    n_exits = len(model.outputs)
    tier_map = normalize_tier_map(cfg["tier_map"], n_exits)  # clear error if the map does not fit the model
    weights = cfg.get("exit_loss_weights")
    if weights is not None and len(weights) != n_exits:
        raise ValueError(f"exit_loss_weights has {len(weights)} values but architecture "
                         f"{cfg['architecture']!r} has {n_exits} exits; give {n_exits} weights or none")

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.app)
    with mlflow.start_run(run_name=f"{cfg['architecture']}-{time.strftime('%Y%m%dT%H%M%S')}") as run:
        mlflow.log_params({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in cfg.items()})
        mlflow.log_params({"dataset_version": dataset_version, "train_samples": len(train),
                           "val_samples": len(val), "test_samples": len(test), "num_exits": n_exits})
        result = train_multi_exit(model, train.x.astype("float32"), train.y, val.x.astype("float32"), val.y,
                                  TrainConfig(epochs=int(cfg["epochs"]), exit_weights=weights, progress=True))
        for epoch in range(result.epochs_run):
            mlflow.log_metrics({k: float(v[epoch]) for k, v in result.history.items() if len(v) > epoch},
                               step=epoch)
        val_probs = predict_exits(model, val.x.astype("float32"))
        cal = calibrate(val_probs, val.y, tier_map, measure=cfg["confidence"], tolerance=cfg["accuracy_tolerance"],
                        objective=cfg["objective"], tier_costs=cfg.get("cost_weights"))
        bundle_dir = Path(out_dir) / run.info.run_id
        manifest = save_bundle(bundle_dir, model, tier_map, cal.thresholds, data.class_names,
                               model_name=settings.app, architecture=cfg["architecture"],
                               measure=cfg["confidence"],
                               metadata={"dataset_version": dataset_version, "mlflow_run_id": run.info.run_id,
                                         "calibration": cal.to_dict()})
        test_probs = predict_exits(model, test.x.astype("float32"))
        ev = evaluate_cascade(test_probs, test.y, cal.thresholds, tier_map, measure=cfg["confidence"],
                              tier_flops=[t.flops for t in manifest.tiers], full_flops=manifest.full_flops)
        metrics = {f"test_exit{m['exit']}_accuracy": m["accuracy"] for m in exit_metrics(test_probs, test.y)}
        metrics.update({"test_accuracy": ev["accuracy"], "test_final_exit_accuracy": ev["final_exit_accuracy"],
                        "val_cascade_accuracy": cal.accuracy, "train_seconds": result.seconds})
        metrics.update({f"test_answers_{t}": f for t, f in ev["tier_fractions"].items()})
        if "mean_flops" in ev:
            metrics["test_flops_ratio"] = ev["mean_flops"] / max(ev["full_flops"], 1)
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"thresholds": cal.thresholds, "tier_map": tier_map, "evaluation": ev},
                        "calibration.json")
        plot = _calibration_plot(cal, Path(out_dir) / f"{run.info.run_id}-calibration.png")
        if plot:
            mlflow.log_artifact(str(plot), "plots")
        manifest.metadata["test"] = {"accuracy": ev["accuracy"], "tier_fractions": ev["tier_fractions"],
                                     "exit_fractions": ev["exit_fractions"]}
        from ml.bundle import write_manifest

        write_manifest(bundle_dir, manifest)
    return {"run_id": run.info.run_id, "bundle_dir": str(bundle_dir), "dataset_version": dataset_version,
            "test_accuracy": ev["accuracy"], "tier_fractions": ev["tier_fractions"],
            "exit_fractions": ev["exit_fractions"], "tiers": [t.name for t in manifest.tiers],
            "thresholds": cal.thresholds, "seconds": time.monotonic() - t0}
