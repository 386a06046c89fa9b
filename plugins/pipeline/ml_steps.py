"""The ML steps of the pipeline, run in the ML environment (Airflow external-python tasks, or by hand).

Each step takes plain data (the validated config dict, URIs, paths) and returns plain JSON-able data,
so Airflow passes them as XComs. TensorFlow and MLflow are imported inside the functions: importing
this module costs nothing, and the scheduler's interpreter never runs them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

BUILTIN_DATASET = "fashion-mnist"
TEST_SAMPLES = 2000  # fixed, seeded subset of the Fashion-MNIST test split: same split for every gate
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15  # of a user's own dataset (Fashion-MNIST data uses the fixed test subset)
CANARY_SAMPLES = 1000


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


def fetch_model_file(spec: str, target: Path, settings: Any) -> str:
    """An ``s3://`` .keras architecture fetched with the pipeline's S3 settings to a local file; any other
    spec unchanged (ml.user_models loads it)."""
    if not spec.startswith("s3://"):
        return spec
    from botocore.exceptions import ClientError

    from plugins.hooks.s3 import DatasetStore, split_uri

    bucket, key = split_uri(spec)
    store = DatasetStore.from_settings(settings)
    store.bucket = bucket
    try:
        data = store.get_bytes(key)
    except ClientError as err:
        raise ValueError(f"architecture={spec!r}: cannot read it from S3 ({err}); check the bucket and key") from err
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return str(target)


def train_test_split(data: Any) -> tuple[Any, Any]:
    """(train, test): Fashion-MNIST data is tested on the fixed Fashion-MNIST test subset (every gate compares
    on it); a user's own dataset (other classes or sample shape) on a seeded TEST_FRACTION split off it."""
    from ml.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

    if list(data.class_names) == FASHION_MNIST_CLASSES and tuple(data.x.shape[1:]) == (28, 28, 1):
        return data, load_fashion_mnist("test").subset(TEST_SAMPLES, seed=0)
    return data.split(TEST_FRACTION, seed=1)


def save_canary_samples(test: Any, path: Path, n: int = CANARY_SAMPLES) -> str:
    """Labelled test samples of the run's own data for the deploy step's canary requests."""
    import numpy as np

    sub = test.subset(n, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=sub.x, y=sub.y, class_names=np.asarray(sub.class_names))
    return str(path)


def train_calibrate_partition(cfg: dict[str, Any], dataset_uri: str, settings: Any, out_dir: str) -> dict[str, Any]:
    """Train, calibrate, partition and evaluate (ml.pipeline) on the dataset version; log params, metrics and
    plots to one MLflow run. Returns what gate/register/deploy need (JSON-able). ``settings`` carries the
    S3 and MLflow to use (in Airflow: those of the Connections, `plugins.pipeline.connections`)."""

    import mlflow

    from ml.pipeline import train_calibrate_partition as run_ml_pipeline
    from ml.registry import log_training
    from ml.user_models import architecture_source
    from plugins.pipeline.params import ml_options

    t0 = time.monotonic()
    data, dataset_version = load_training_data(cfg.get("dataset") or dataset_uri, settings)
    if cfg.get("max_train_samples"):
        data = data.subset(int(cfg["max_train_samples"]), seed=0)
    data, test = train_test_split(data)
    run_dir = Path(out_dir) / time.strftime("%Y%m%dT%H%M%S")
    canary_file = save_canary_samples(test, run_dir / "canary.npz")
    source = architecture_source(cfg["architecture"])
    options: dict[str, Any] = {
        **ml_options(cfg), "model_name": settings.app, "tflite": False,
        "architecture": fetch_model_file(cfg["architecture"], run_dir / "architecture.keras", settings),
        "metadata": {"dataset_version": dataset_version, "dataset_uri": dataset_uri, "architecture_source": source},
    }
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.app)
    run_name = cfg["architecture"] if source["architecture_kind"] == "builtin" else source["architecture_kind"]
    with mlflow.start_run(run_name=f"{run_name}-{run_dir.name}") as run:
        mlflow.set_tags({f"tierflow.{k}": v for k, v in source.items()})
        result = run_ml_pipeline(data.x, data.y, data.class_names, run_dir, test.x, test.y, **options)
        rep = result.report
        log_training({**cfg, "dataset_version": dataset_version, "train_samples": rep["n"]["train"],
                      "test_samples": rep["n"]["test"], "class_names": list(data.class_names)},
                     result.metrics, rep.get("test_exits", []), rep.get("history"), result.plots)
        mlflow.log_artifact(str(result.report_path))
        run_id = run.info.run_id
    test_eval = rep["test"]
    return {"run_id": run_id, "bundle_dir": str(result.bundle_dir), "dataset_version": dataset_version,
            "canary_file": canary_file,
            "test_accuracy": float(test_eval["accuracy"]), "tier_fractions": test_eval["tier_fractions"],
            "num_classes": len(data.class_names), "test_samples": int(rep["n"]["test"]),
            "metrics": result.metrics, "tiers": list(test_eval["tier_fractions"]),
            "seconds": time.monotonic() - t0}


def gate_step(cfg: dict[str, Any], trained: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Before anything is registered: the candidate must pass the sanity check (beat chance and the
    ``min_accuracy`` floor; the first release too) and not be less accurate than the champion on the same
    test split (minus a margin)."""
    from ml.registry import champion_metrics

    champion = champion_metrics(settings.app, settings.mlflow.tracking_uri)
    verdict = gate_verdict(trained["test_accuracy"], champion, cfg["gate_margin"],
                           num_classes=trained["num_classes"], test_samples=trained["test_samples"],
                           min_accuracy=cfg.get("min_accuracy", 0.0))
    if not verdict["passed"]:
        raise RuntimeError(f"gate: candidate rejected, champion kept: {verdict['reason']}")
    print(f"gate passed: {verdict['reason']}")
    return verdict


def gate_verdict(candidate_accuracy: float, champion: dict[str, Any] | None, margin: float, *,
                 num_classes: int, test_samples: int, min_accuracy: float = 0.0) -> dict[str, Any]:
    """Pure: fail a candidate that does not pass ``ml.evaluation.sanity_check`` (chance + margin, and the
    ``min_accuracy`` floor), with or without a champion; then pass if there is no champion, or if
    candidate >= champion test accuracy - margin."""
    from ml.evaluation import sanity_check

    sanity = sanity_check(candidate_accuracy, num_classes, test_samples, min_accuracy)
    if not sanity["passed"]:
        return {"passed": False, "reason": f"sanity check: {sanity['reason']}", "sanity": sanity,
                "champion_accuracy": None, "candidate_accuracy": candidate_accuracy}
    if not champion or "test_accuracy" not in champion.get("metrics", {}):
        return {"passed": True, "reason": f"no champion yet; sanity check: {sanity['reason']}", "sanity": sanity,
                "champion_accuracy": None, "candidate_accuracy": candidate_accuracy}
    best = float(champion["metrics"]["test_accuracy"])
    passed = candidate_accuracy >= best - margin
    reason = (f"candidate test accuracy {candidate_accuracy:.4f} vs champion release {champion.get('release')} "
              f"{best:.4f} (margin {margin})")
    return {"passed": passed, "reason": reason, "sanity": sanity, "champion_accuracy": best,
            "candidate_accuracy": candidate_accuracy, "champion_release": champion.get("release")}


def register_step(trained: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Every tier + the full model, from the training run, alias `candidate`."""
    from ml.registry import register_bundle

    release = register_bundle(trained["bundle_dir"], app=settings.app, tracking_uri=settings.mlflow.tracking_uri,
                              run_id=trained["run_id"],
                              dataset_version=trained["dataset_version"])
    return release.as_dict()
