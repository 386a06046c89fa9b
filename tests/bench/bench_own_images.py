"""A new user's own images through `tierflow ml` with the defaults: 6,000 64x64 RGB PNGs in 10 class
folders, `train --architecture vgg --epochs 5`, then `calibrate`, `partition`, `evaluate` as they come;
then a deliberately broken model (blind: its input scaled to zero) through `tierflow ml run`, which the
sanity check (the pipeline's gate) must stop.

No such image set is on these machines, so a synthetic but learnable one is generated: ten shape classes
(disc, square, triangle, ring, cross, bars, stripes, ...) drawn at random size, position and colour on a
noisy background.

Run: ``.venv/bin/python tests/bench/bench_own_images.py [work_dir]`` (~20-40 minutes on 2 shared cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHAPES = ("disc", "square", "triangle", "ring", "cross", "hbars", "vbars", "diagonal", "dots", "frame")


def draw(shape: str, rng: np.random.Generator, size: int = 64):
    """One image of a shape class: random scale, position, colours; noise on top."""
    from PIL import Image, ImageDraw

    bg = tuple(int(v) for v in rng.integers(0, 120, 3))
    fg = tuple(int(v) for v in rng.integers(130, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 6, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2, r // 3)
    if shape == "disc":
        d.ellipse(box, fill=fg)
    elif shape == "square":
        d.rectangle(box, fill=fg)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "ring":
        d.ellipse(box, outline=fg, width=w)
    elif shape == "cross":
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fg)
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fg)
    elif shape == "hbars":
        for y in range(cy - r, cy + r, 2 * w):
            d.rectangle((cx - r, y, cx + r, y + w - 1), fill=fg)
    elif shape == "vbars":
        for x in range(cx - r, cx + r, 2 * w):
            d.rectangle((x, cy - r, x + w - 1, cy + r), fill=fg)
    elif shape == "diagonal":
        d.line((cx - r, cy - r, cx + r, cy + r), fill=fg, width=w)
        d.line((cx - r, cy - r + 2 * w, cx + r - 2 * w, cy + r), fill=fg, width=w)
    elif shape == "dots":
        for dx in (-r // 2, r // 2):
            for dy in (-r // 2, r // 2):
                d.ellipse((cx + dx - w, cy + dy - w, cx + dx + w, cy + dy + w), fill=fg)
    else:  # frame
        d.rectangle(box, outline=fg, width=w)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-25, 26, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_shapes_folder(root: Path, n: int = 6000, size: int = 64, seed: int = 0) -> Path:
    """``n`` PNGs, ``n/10`` per class folder (skipped when the folder is already complete)."""
    per_class = n // len(SHAPES)
    if root.is_dir() and sum(1 for _ in root.glob("*/*.png")) == per_class * len(SHAPES):
        return root
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(shape, rng, size).save(root / shape / f"{i:04d}.png")
    return root


def blind_vgg(input_shape, num_classes):
    """A deliberately broken model: the built-in VGG with its input scaled to zero, so it cannot see."""
    from ml.architectures import build_vgg

    return build_vgg(input_shape=input_shape, num_classes=num_classes, scale=0.0)


def tierflow(*args: str, expect: int = 0) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run([sys.executable, "-m", "tierflow_cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True)
    if proc.returncode != expect:
        raise RuntimeError(f"tierflow {' '.join(args)} exited {proc.returncode}, not {expect}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def main(work: str | None = None) -> dict:
    base = Path(work or tempfile.mkdtemp(prefix="tierflow-own-images-"))
    t0 = time.monotonic()
    folder = make_shapes_folder(base / "shapes")
    run = base / "vgg"
    t1 = time.monotonic()
    tierflow("ml", "train", "--out", str(run), "--dataset", str(folder), "--architecture", "vgg", "--epochs", "5")
    t2 = time.monotonic()
    tierflow("ml", "calibrate", "--run", str(run))
    tierflow("ml", "partition", "--run", str(run), "--no-tflite")
    tierflow("ml", "evaluate", "--bundle", str(run / "bundle"), "--dataset", str(folder))
    train = json.loads((run / "train.json").read_text())
    ev = json.loads((run / "evaluation.json").read_text())
    broken = base / "blind"
    tierflow("ml", "run", "--out", str(broken), "--dataset", str(folder), "--epochs", "1",
             "--architecture", "tests.bench.bench_own_images:blind_vgg", expect=1)  # refused: exit 1
    sanity = json.loads((broken / "report.json").read_text())["sanity"]
    summary = {
        "images": 6000, "generate_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1),
        "epochs_run": train["epochs_run"], "val_exits": [round(m["accuracy"], 4) for m in train["val_exits"]],
        "test_final_exit_accuracy": ev["final_exit_accuracy"], "test_cascade_accuracy": ev["accuracy"],
        "test_tier_fractions": ev["tier_fractions"], "relative_compute": ev["relative_compute"],
        "blind_model_sanity": {k: sanity[k] for k in ("passed", "accuracy", "required", "reason")},
    }
    print(json.dumps(summary, indent=1))
    return summary


@pytest.mark.bench
def test_bench_own_images(tmp_path):
    summary = main(str(tmp_path))
    assert summary["test_final_exit_accuracy"] >= 0.85
    assert not summary["blind_model_sanity"]["passed"]


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
