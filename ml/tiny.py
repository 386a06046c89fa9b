"""A small real bundle in seconds, for tests and demos of the data plane (not for accuracy claims)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ml.bundle import BundleManifest, save_bundle
from ml.confidence import confidence


def mixing_thresholds(exit_probs: Sequence[np.ndarray], measure: str = "max_softmax",
                      share: float = 0.5) -> list[float | None]:
    """Thresholds that let each non-final exit answer about ``share`` of the rows still unanswered,
    so a cascade gives a real mix of answers at every tier. Final exit: None."""
    n = exit_probs[0].shape[0]
    remaining = np.ones(n, dtype=bool)
    out: list[float | None] = []
    for p in exit_probs[:-1]:
        c = confidence(p, measure)
        t = float(np.quantile(c[remaining], 1.0 - share)) if remaining.any() else 1.0
        out.append(t)
        remaining &= c < t
    out.append(None)
    return out


def build_tiny_bundle(path: str | Path, tier_map: Mapping[str, Sequence[int | str]] | str | None = None,
                      seed: int = 0, n_train: int = 3000, epochs: int = 2, measure: str = "max_softmax",
                      model_name: str = "fmnist", version: str = "local", width: float = 0.5,
                      adaptive_floor: float = 15.0) -> BundleManifest:
    """Train a half-width compact CNN on ``n_train`` Fashion-MNIST samples and write a bundle to ``path``.

    Thresholds are set so that about half of the validation requests answer at the edge, a quarter at
    the fog and a quarter in the cloud (with the default 3-tier map); the forwarding tiers' operating
    points (`ml.exit_curve`) go down to ``adaptive_floor`` points below the final exit (wide: a tiny model).
    """
    from ml.architectures import build
    from ml.calibration import exit_costs_for
    from ml.datasets import load_fashion_mnist
    from ml.exit_curve import exit_curves
    from ml.partition import normalize_tier_map
    from ml.training import TrainConfig, exit_metrics, predict_exits, set_seed, train_multi_exit

    data = load_fashion_mnist("train").subset(n_train + 1000, seed=seed)
    train, val = data.split(1000 / len(data), seed=seed)
    set_seed(seed)
    model = build("compact", input_shape=(28, 28, 1), num_classes=len(data.class_names), width=width)
    train_multi_exit(model, train.x.astype("float32"), train.y, val.x.astype("float32"), val.y,
                     TrainConfig(epochs=epochs, batch_size=64, seed=seed, patience=0, progress=False))
    probs = predict_exits(model, val.x.astype("float32"))
    thresholds = mixing_thresholds(probs, measure)
    metrics = {f"val_exit{m['exit']}_accuracy": m["accuracy"] for m in exit_metrics(probs, val.y)}
    costs = exit_costs_for(normalize_tier_map(tier_map, len(probs)), len(probs), "early")
    curves = exit_curves(probs, val.y, tier_map, thresholds, [float(c) if np.isfinite(c) else None for c in costs],
                         measure=measure, floor_points=adaptive_floor, margin_se=0.0)
    return save_bundle(path, model, tier_map, thresholds, data.class_names, model_name=model_name,
                       architecture="compact", measure=measure, version=version, curves=curves,
                       metadata={"dataset": f"fashion-mnist-train-subset-{n_train}", "seed": seed, "tiny": True,
                                 "metrics": metrics})
