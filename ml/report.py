"""The default-model benchmark: the default compact model on Fashion-MNIST, trained within
a time budget on this machine, calibrated (tolerance 1.0 point), partitioned and evaluated on the test set.

Prints the figures with pass/fail against the targets, and the machine it ran on. Not a timed test.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

TARGETS = {
    "final_exit_accuracy_min": 0.92,
    "edge_fraction_min": 0.80,
    "accuracy_drop_max_points": 1.0,
    "relative_compute_max": 0.30,
    "train_seconds_max": 300.0,
}


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "processor": platform.processor() or platform.machine()}


def check(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with the measured value and whether it is met."""
    ev = report["test"]
    first = next(iter(ev["tier_fractions"]))
    drop = (ev["final_exit_accuracy"] - ev["accuracy"]) * 100
    t = TARGETS
    rows = {
        f"final-exit test accuracy >= {t['final_exit_accuracy_min']:.0%}":
            (ev["final_exit_accuracy"], ev["final_exit_accuracy"] >= t["final_exit_accuracy_min"]),
        f"answered at {first} >= {t['edge_fraction_min']:.0%}":
            (ev["tier_fractions"][first], ev["tier_fractions"][first] >= t["edge_fraction_min"]),
        f"overall accuracy >= final - {t['accuracy_drop_max_points']:.1f} pt":
            (ev["accuracy"], drop <= t["accuracy_drop_max_points"] + 1e-9),
        f"mean compute <= {t['relative_compute_max']:.1f}x full network":
            (ev["relative_compute"], ev["relative_compute"] <= t["relative_compute_max"]),
        f"training time <= {t['train_seconds_max']:.0f} s":
            (report["train_seconds"], report["train_seconds"] <= t["train_seconds_max"]),
    }
    return {k: {"value": float(v), "ok": bool(ok)} for k, (v, ok) in rows.items()}


def run_report(out_dir: str | Path, epochs: int = 100, max_train_seconds: float = 280.0, seed: int = 0,
               tolerance: float = 1.0, n_train: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Train → calibrate → partition → evaluate on Fashion-MNIST and return report + checks.

    Training runs epochs until the budget (``epochs`` is only a cap) with the learning rate decayed over the
    budget, so the model gets what the machine can do in the time; early stopping still ends it when the
    validation loss stops improving. How many epochs fit depends on the machine and its load."""
    from ml.datasets import load_fashion_mnist
    from ml.pipeline import PipelineConfig, run_pipeline
    from ml.training import TrainConfig

    train = load_fashion_mnist("train").subset(n_train, seed=seed)
    test = load_fashion_mnist("test")
    cfg = PipelineConfig(tolerance=tolerance, train=TrainConfig(epochs=epochs, batch_size=128, seed=seed, patience=3,
                                                                 progress=progress, max_seconds=max_train_seconds))
    result = run_pipeline(train, out_dir, cfg, test=test, metadata={"dataset": "fashion-mnist", "split": "train/test"})
    report = result.report
    summary = {"machine": machine(), "checks": check(report), "test": report["test"],
               "calibration": report["calibration"], "train_seconds": report["train_seconds"],
               "epochs_run": report["epochs_run"], "bundle": str(result.bundle_dir),
               "plots": [str(p) for p in result.plots], "report": str(result.report_path)}
    Path(out_dir, "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    ev = summary["test"]
    m = summary["machine"]
    lines = [
        f"machine: {m['processor']}, {m['cpus']} CPUs ({m['affinity']} usable), {m['platform']}, Python {m['python']}",
        f"training: {summary['epochs_run']} epochs in {summary['train_seconds']:.0f} s",
        f"thresholds ({ev['measure']}): {ev['thresholds']}",
        f"test n={ev['n']}: final-exit accuracy {ev['final_exit_accuracy']:.4f}, cascade accuracy {ev['accuracy']:.4f} "
        f"(drop {(ev['final_exit_accuracy'] - ev['accuracy']) * 100:.2f} pt)",
        "answered per tier: " + ", ".join(f"{k} {v:.1%}" for k, v in ev["tier_fractions"].items()),
        f"mean compute: {ev['relative_compute']:.3f} x full network ({ev['mean_flops'] / 1e6:.2f} of "
        f"{ev['full_flops'] / 1e6:.2f} MFLOPs); cloud-only = 1.000 x (ratio {1 / ev['relative_compute']:.2f}x less compute)",
        "bytes per request: " + ", ".join(f"{k} {v:.0f} B" for k, v in ev["bytes_per_request"].items())
        + f"; cloud-only: device-cloud {ev['cloud_only']['bytes_per_request']['device-cloud']:.0f} B",
    ]
    if "tflite" in ev:
        t = ev["tflite"]
        lines.append(f"{t['tier']} tier on {t['n']} test images: Keras {t['keras_accuracy']:.4f}, TFLite float "
                     f"{t.get('float_accuracy', float('nan')):.4f} ({t.get('float_bytes', 0) / 1024:.0f} KB), int8 "
                     f"{t.get('int8_accuracy', float('nan')):.4f} ({t.get('int8_bytes', 0) / 1024:.0f} KB, "
                     f"agrees with Keras on {t.get('int8_agreement', float('nan')):.1%})")
    for name, c in summary["checks"].items():
        lines.append(f"[{'PASS' if c['ok'] else 'FAIL'}] {name}: {c['value']:.4f}")
    lines.append(f"report: {summary['report']}; plots: {', '.join(Path(p).name for p in summary['plots'])}")
    return "\n".join(lines)
