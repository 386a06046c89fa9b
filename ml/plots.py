"""PNG plots (matplotlib, Agg backend): training curves, confusion matrices, calibration trade-offs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(history: dict[str, list[float]], path: str | Path) -> Path:
    """Per-exit accuracy and total loss per epoch (train and validation)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    exits = sorted({k.removeprefix("val_") for k in history if k.endswith("accuracy")})
    for i, name in enumerate(exits):
        for prefix, ls in (("", "-"), ("val_", "--")):
            v = history.get(prefix + name)
            if v:
                a1.plot(range(1, len(v) + 1), v, ls=ls, color=colors[i % len(colors)], label=prefix + name)
    for k in ("loss", "val_loss"):
        if k in history:
            a2.plot(range(1, len(history[k]) + 1), history[k], label=k)
    a1.set(title="accuracy per exit", xlabel="epoch")
    a2.set(title="joint loss", xlabel="epoch")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_confusions(exit_metrics: Sequence[dict[str, Any]], class_names: Sequence[str], path: str | Path) -> Path:
    plt = _plt()
    n = len(exit_metrics)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, exit_metrics, strict=True):
        cm = np.asarray(m["confusion"], dtype=float)
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"exit {m['exit']}: acc {m['accuracy']:.3f}")
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=6)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=6)
        ax.set_xlabel("predicted")
    axes[0].set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_tradeoff(calibration, path: str | Path) -> Path:
    """Accuracy vs expected cost of every threshold candidate, its frontier, the constraint and the pick."""
    plt = _plt()
    c = calibration.curve
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    if c.get("pareto_cost"):
        a1.step(c["pareto_cost"], c["pareto_accuracy"], where="post", label="best accuracy for a cost")
    a1.axhline(calibration.final_accuracy - calibration.tolerance / 100, color="r", ls=":", label="accuracy constraint")
    a1.axhline(calibration.final_accuracy, color="k", ls="--", lw=0.8, label="final exit")
    a1.scatter([calibration.expected_cost], [calibration.accuracy], color="r", zorder=3, label="chosen thresholds")
    a1.set(xlabel=f"expected cost per request ({calibration.objective})", ylabel="accuracy",
           title="calibration trade-off")
    a1.legend(fontsize=7)
    if c.get("early_fraction"):
        a2.scatter(c["early_fraction"], c["all_accuracy"], s=3, alpha=0.3)
        a2.axhline(calibration.final_accuracy - calibration.tolerance / 100, color="r", ls=":")
        a2.set(xlabel="fraction answered at the first tier", ylabel="accuracy", title="threshold candidates")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_exit_curves(exit_probs: Sequence[np.ndarray], y: np.ndarray, measure: str, path: str | Path) -> Path:
    """For each exit alone: accuracy of the answered requests and share answered, vs threshold."""
    from ml.confidence import confidence

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ts = np.linspace(0, 1, 101)
    for i, p in enumerate(exit_probs[:-1]):
        c = confidence(p, measure)
        ok = p.argmax(axis=1) == y
        share = [(c >= t).mean() for t in ts]
        acc = [ok[c >= t].mean() if (c >= t).any() else np.nan for t in ts]
        ax.plot(ts, acc, label=f"exit {i} accuracy of answered")
        ax.plot(ts, share, ls="--", label=f"exit {i} share answered")
    ax.set(xlabel=f"threshold ({measure})", title="per-exit threshold curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_cascade(evaluation: dict[str, Any], path: str | Path) -> Path:
    """Share answered per tier and relative compute, cascade vs cloud-only."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    tiers = list(evaluation["tier_fractions"])
    a1.bar(tiers, [evaluation["tier_fractions"][t] for t in tiers])
    a1.set(title=f"answered per tier (acc {evaluation['accuracy']:.3f})", ylim=(0, 1))
    if "relative_compute" in evaluation:
        a2.bar(["cascade", "cloud-only"], [evaluation["relative_compute"], 1.0])
        a2.set(title="mean compute per request (relative)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
