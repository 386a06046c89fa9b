"""A user's own labelled images (one sub-folder per class, PNG and JPEG) published with `tierflow
publish-training`, ingested into S3 by the real ingest against the real broker, and trained on; the class
names travel from the folder names to the dataset manifest and the bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.shards import parse_manifest, read_dataset
from plugins.hooks.s3 import DatasetStore, split_uri
from plugins.ingest import ingest
from runtime.settings import Settings, settings_env

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
CLASSES = {"red": 0, "green": 1, "blue": 2}  # class name -> the colour channel its images are brightest in


def write_folder(root: Path, per_class: int = 40, size: int = 20, seed: int = 0) -> Path:
    """Noisy images whose brightest channel is their class; every fourth one a JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, channel in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            img[..., channel] += 150
            ext = "jpg" if i % 4 == 0 else "png"
            Image.fromarray(img).save(root / name / f"{i:03d}.{ext}")
    return root


def tierflow(settings: Settings, *args: str) -> str:
    env = {**os.environ, **settings_env(settings)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "tierflow_cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_image_folder_published_ingested_and_trained_with_its_class_names(stack_settings: Settings, tmp_path):
    settings = stack_settings.model_copy(update={"ingest": stack_settings.ingest.model_copy(
        update={"shard_records": 50, "idle_timeout_s": 4.0})})
    folder = write_folder(tmp_path / "images")
    out = tierflow(settings, "publish-training", "--dataset", str(folder), "--image-size", "16x16")
    assert "published 120 samples of 3 classes" in out

    result = ingest(settings)
    assert result.new_records == 120 and result.malformed == 0
    assert result.class_counts == {"red": 40, "green": 40, "blue": 40}
    store = DatasetStore.from_settings(settings)
    manifest = parse_manifest(store.get_bytes(split_uri(result.manifest_uri)[1]))
    assert sorted(manifest.class_names) == sorted(CLASSES)
    data = read_dataset(manifest, fetch=store.get_bytes)
    assert data.x.shape == (120, 16, 16, 3) and data.x.dtype == np.uint8
    brightest = data.x.reshape(120, -1, 3).mean(axis=1).argmax(axis=1)
    names = np.asarray(data.class_names)[data.y]
    assert [CLASSES[n] for n in names] == brightest.tolist()  # every label stayed with its image

    # more images of a known class extend the same label set; a new version keeps the class ids
    tierflow(settings, "publish-training", "--dataset", str(folder), "--image-size", "16x16", "--n", "10")
    again = ingest(settings)
    assert again.new_records == 10 and again.records == 130
    assert parse_manifest(store.get_bytes(split_uri(again.manifest_uri)[1])).class_names == manifest.class_names

    from ml.pipeline import train_calibrate_partition

    res = train_calibrate_partition(data.x, data.y, data.class_names, tmp_path / "run", epochs=6, batch_size=16,
                                    patience=0, progress=False, tflite=False, width=0.5)
    assert res.report["test_exits"][-1]["accuracy"] >= 0.8, res.report["test_exits"]
    bundle = json.loads((res.bundle_dir / "manifest.json").read_text())
    assert bundle["class_names"] == data.class_names
