"""Self-distillation of the early exits against plain joint training, same seed, same epochs: the default
compact model on Fashion-MNIST (train split; validation split for calibration at the default 1.0-point
tolerance; the 10,000-image test split scores). Prints and plots, per configuration, each exit's test
accuracy, the share answered at the edge, cascade accuracy and mean compute, and logs both runs (params,
metrics, the plot) to MLflow: TIERFLOW_MLFLOW__TRACKING_URI, else a SQLite store in the output directory.

Fixed epochs and no time budget, so the comparison does not depend on how busy the machine is.
Run: ``.venv/bin/python tests/bench/bench_distillation.py [out_dir] [epochs]`` (~2 x 5 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

CONFIGS = {"plain": {"distill_weight": 0.0}, "self-distillation": {"distill_weight": 1.0, "distill_temperature": 3.0}}


def run(out: Path, epochs: int = 5, seed: int = 0) -> dict:
    from ml.datasets import load_fashion_mnist
    from ml.pipeline import PipelineConfig, flat_metrics, run_pipeline
    from ml.training import TrainConfig

    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    rows = {}
    for name, opts in CONFIGS.items():
        cfg = PipelineConfig(tflite=False, train=TrainConfig(epochs=epochs, seed=seed, progress=False, **opts))
        rep = run_pipeline(train, out / name, cfg, test=test).report
        ev = rep["test"]
        rows[name] = {"options": opts, "epochs_run": rep["epochs_run"], "train_seconds": round(rep["train_seconds"], 1),
                      "exit_accuracy": [round(m["accuracy"], 4) for m in rep["test_exits"]],
                      "edge_fraction": ev["tier_fractions"]["edge"], "tier_fractions": ev["tier_fractions"],
                      "cascade_accuracy": ev["accuracy"], "final_exit_accuracy": ev["final_exit_accuracy"],
                      "relative_compute": ev["relative_compute"], "plots": rep["plots"], "flat": flat_metrics(rep)}
    return rows


def plot(rows: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = ["edge exit acc.", "fog exit acc.", "final exit acc.", "answered at edge", "cascade acc."]
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(rows)
    for i, (name, r) in enumerate(rows.items()):
        vals = [*r["exit_accuracy"], r["edge_fraction"], r["cascade_accuracy"]]
        bars = ax.bar(np.arange(len(labels)) + i * w, vals, w, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(np.arange(len(labels)) + w * (len(rows) - 1) / 2, labels)
    ax.set_ylim(0.5, 1.0)
    ax.set_title("Fashion-MNIST test split, compact model, same seed and epochs")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def log_mlflow(rows: dict, figure: Path, out: Path) -> str:
    import mlflow

    uri = os.environ.get("TIERFLOW_MLFLOW__TRACKING_URI") or f"sqlite:///{out / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("self-distillation")
    for name, r in rows.items():
        with mlflow.start_run(run_name=name):
            mlflow.log_params({"config": name, **r["options"], "epochs_run": r["epochs_run"]})
            mlflow.log_metrics(r["flat"])
            mlflow.log_artifact(str(figure))
            for p in r["plots"]:
                mlflow.log_artifact(p, "plots")
    return uri


def main(out_dir: str | None = None, epochs: int = 5) -> dict:
    out = Path(out_dir or tempfile.mkdtemp(prefix="tierflow-distill-"))
    rows = run(out, epochs)
    figure = plot(rows, out / "distillation.png")
    uri = log_mlflow(rows, figure, out)
    summary = {name: {k: v for k, v in r.items() if k not in ("plots", "flat")} for name, r in rows.items()}
    (out / "distillation.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"figure {figure}; MLflow {uri} (experiment self-distillation)")
    return summary


@pytest.mark.bench
def test_bench_distillation(tmp_path):
    summary = main(str(tmp_path), epochs=2)
    assert set(summary) == set(CONFIGS)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, int(sys.argv[2]) if len(sys.argv) > 2 else 5)
