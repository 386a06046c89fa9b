"""A dataset from a spec string, as the `tierflow ml` commands take it."""

from __future__ import annotations

from pathlib import Path

from ml.datasets import Dataset, load_fashion_mnist, load_image_folder
from ml.shards import read_dataset


def load_dataset(spec: str | Path) -> tuple[Dataset, Dataset | None]:
    """(train, test) from a spec: ``fashion-mnist``, a shard manifest (``*.json``) or an image folder.
    Sources without a test split return ``None`` for it (split it off with :meth:`Dataset.split`)."""
    s = str(spec)
    if s in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return load_fashion_mnist("train"), load_fashion_mnist("test")
    p = Path(s)
    if p.is_file() and p.suffix == ".json":
        return read_dataset(p), None
    if p.is_dir():
        return load_image_folder(p), None
    raise ValueError(f"unknown dataset {s!r}: use 'fashion-mnist', a shard manifest .json or an image folder")
