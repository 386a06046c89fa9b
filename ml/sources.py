"""A dataset from a spec string, as the `tierflow ml` commands take it."""

from __future__ import annotations

from pathlib import Path

from ml.datasets import Dataset, load_fashion_mnist, load_image_folder, load_npz
from ml.shards import read_dataset

DATASET_HELP = ("'fashion-mnist', a shard manifest .json, a .npz (x, y[, class_names]) or an image folder "
                "(one sub-folder per class, PNG/JPEG)")


def load_dataset(spec: str | Path, image_size: tuple[int, int] | None = None) -> tuple[Dataset, Dataset | None]:
    """(train, test) from a spec (DATASET_HELP). Sources without a test split return ``None`` for it (split it
    off with :meth:`Dataset.split`). ``image_size`` (H, W) resizes an image folder's images."""
    s = str(spec)
    if s in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist("train"), load_fashion_mnist("test")
    p = Path(s)
    if p.is_file() and p.suffix == ".json":
        return read_dataset(p), None
    if p.is_file() and p.suffix == ".npz":
        return load_npz(p)
    if p.is_dir():
        return load_image_folder(p, image_size=image_size), None
    raise ValueError(f"unknown dataset {s!r}: use {DATASET_HELP}")


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """'64x64' or '64' -> (64, 64); empty -> None."""
    if not text:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        size = tuple(int(v) for v in parts) * (2 if len(parts) == 1 else 1)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image size {text!r}: give HxW in pixels, e.g. 64x64")
    return size[0], size[1]
