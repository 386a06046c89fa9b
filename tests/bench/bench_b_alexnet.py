"""B-AlexNet (the BranchyNet network Kafka-ML adapted for distributed inference) with its default three-tier
map (edge = exit 0, fog = exit 1, cloud = final exit) on Fashion-MNIST upscaled to its 32x32x3 input
(bilinear resize, the grey channel repeated): train, calibrate at the default 1.0-point tolerance,
partition, evaluate on the 10,000-image test split. Prints each exit's accuracy, the share answered per
tier, cascade accuracy and mean compute against the full network.

A fixed number of epochs (and optionally a training subset), no time budget, so the figures do not depend
on how busy the machine is. Run: ``.venv/bin/python tests/bench/bench_b_alexnet.py [out_dir] [epochs] [n_train]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest


def upscale(images, size: int = 32, channels: int = 3):
    """(n, 28, 28, 1) uint8 → (n, size, size, channels) uint8, bilinear, grey repeated per channel."""
    import numpy as np
    import tensorflow as tf

    out = [tf.image.resize(images[i:i + 4096].astype("float32"), (size, size)).numpy()
           for i in range(0, len(images), 4096)]
    x = np.clip(np.rint(np.concatenate(out)), 0, 255).astype("uint8")
    return np.repeat(x, channels, axis=-1)


def run(out: Path, epochs: int = 5, n_train: int | None = None, seed: int = 0) -> dict:
    from ml.datasets import Dataset, load_fashion_mnist
    from ml.pipeline import PipelineConfig, run_pipeline
    from ml.training import TrainConfig

    train = load_fashion_mnist("train").subset(n_train, seed=seed)
    test = load_fashion_mnist("test")
    train, test = (Dataset(upscale(d.x), d.y, d.class_names) for d in (train, test))
    cfg = PipelineConfig(architecture="b_alexnet", tflite=False,
                         train=TrainConfig(epochs=epochs, seed=seed, progress=False))
    rep = run_pipeline(train, out, cfg, test=test, metadata={"dataset": "fashion-mnist upscaled to 32x32x3"}).report
    ev = rep["test"]
    return {"epochs_run": rep["epochs_run"], "n_train": rep["n"]["train"], "train_seconds": round(rep["train_seconds"]),
            "exit_accuracy": [round(m["accuracy"], 4) for m in rep["test_exits"]],
            "final_exit_accuracy": ev["final_exit_accuracy"], "cascade_accuracy": ev["accuracy"],
            "tier_fractions": ev["tier_fractions"], "relative_compute": ev["relative_compute"],
            "tier_mflops": [round(t["flops"] / 1e6, 2) for t in rep["tiers"]],
            "full_mflops": round(ev["full_flops"] / 1e6, 2), "thresholds": ev["thresholds"]}


def main(out_dir: str | None = None, epochs: int = 5, n_train: int | None = None) -> dict:
    out = Path(out_dir or tempfile.mkdtemp(prefix="tierflow-b-alexnet-"))
    row = run(out, epochs, n_train)
    print(json.dumps(row, indent=2))
    (out / "b_alexnet.json").write_text(json.dumps(row, indent=2))
    return row


@pytest.mark.bench
def test_bench_b_alexnet(tmp_path):
    row = main(str(tmp_path), epochs=1, n_train=6000)
    assert sum(row["tier_fractions"].values()) == pytest.approx(1.0)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else None, int(args[1]) if len(args) > 1 else 5,
         int(args[2]) if len(args) > 2 else None)
