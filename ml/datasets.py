"""Datasets as plain arrays: Fashion-MNIST (local idx files first), image folders, tierflow shards.

Every loader returns a :class:`Dataset`: ``x`` (n, H, W, C) uint8/float32 raw values, ``y`` (n,) int64
class ids, and ``class_names``. Models rescale inside, so raw pixel values are what they expect.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_URL = "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        validate_arrays(self.x, self.y, self.class_names)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.class_names)

    def subset(self, n: int | None, seed: int = 0) -> Dataset:
        """A random (seeded) subset of ``n`` samples, or everything when n is None/too large."""
        if n is None or n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        return self.take(np.sort(rng.choice(len(self), size=n, replace=False)))

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Seeded random split into (1 - fraction, fraction)."""
        if not 0 < fraction < 1:
            raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(self))
        k = int(round(len(self) * fraction))
        if k == 0 or k == len(self):
            raise ValueError(f"a {fraction} split of {len(self)} samples leaves one side empty")
        return self.take(np.sort(perm[k:])), self.take(np.sort(perm[:k]))


def validate_arrays(x: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> None:
    """Clear errors for empty data, mismatched lengths and labels outside the class list."""
    if len(class_names) < 2:
        raise ValueError(f"a classification dataset needs at least 2 classes, got {list(class_names)}")
    if x.shape[0] == 0:
        raise ValueError("the dataset is empty (0 samples)")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be a vector with one label per sample: x has {x.shape[0]} samples, y shape {y.shape}")
    if y.min() < 0 or y.max() >= len(class_names):
        bad = sorted(set(np.unique(y[(y < 0) | (y >= len(class_names))]).tolist()))
        raise ValueError(f"unknown labels {bad[:10]}: class ids must be in 0..{len(class_names) - 1}")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_fashion_mnist(directory: str | Path | None) -> Path | None:
    candidates = [Path(directory)] if directory else []
    if os.environ.get("TIERFLOW_FASHION_MNIST_DIR"):
        candidates.append(Path(os.environ["TIERFLOW_FASHION_MNIST_DIR"]))
    candidates += [Path(d) for d in FASHION_MNIST_DIRS]
    candidates.append(Path.home() / ".cache" / "tierflow" / "fashion-mnist")
    for c in candidates:
        if all((c / f).is_file() for pair in _FILES.values() for f in pair):
            return c
    return None


def _download_fashion_mnist(target: Path) -> Path:
    import urllib.request

    target.mkdir(parents=True, exist_ok=True)
    for pair in _FILES.values():
        for f in pair:
            if not (target / f).is_file():
                tmp = target / (f + ".part")
                urllib.request.urlretrieve(FASHION_MNIST_URL + f, tmp)  # noqa: S310 (fixed https URL)
                tmp.rename(target / f)
    return target


def load_fashion_mnist(split: str = "train", directory: str | Path | None = None,
                       download: bool = True) -> Dataset:
    """Fashion-MNIST as (n, 28, 28, 1) uint8; local idx files first (Debian ``dataset-fashion-mnist``)."""
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    root = _find_fashion_mnist(directory)
    if root is None:
        if not download:
            raise FileNotFoundError("Fashion-MNIST idx files not found in "
                                    f"{[str(directory)] if directory else list(FASHION_MNIST_DIRS)}; "
                                    "install Debian's dataset-fashion-mnist or allow download")
        try:
            root = _download_fashion_mnist(Path.home() / ".cache" / "tierflow" / "fashion-mnist")
        except OSError as err:
            raise FileNotFoundError(f"Fashion-MNIST is not installed locally and could not be downloaded ({err}); "
                                    "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)") from err
    images, labels = (_read_idx(root / f) for f in _FILES[split])
    return Dataset(images[..., None].copy(), labels.astype(np.int64), list(FASHION_MNIST_CLASSES))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def load_image_folder(root: str | Path, image_size: tuple[int, int] | None = None,
                      color_mode: str = "rgb") -> Dataset:
    """Images in ``root/<class name>/*.png|jpg`` (the flower_photos layout), classes sorted by name.

    Without ``image_size`` every image must have the same size (else a "mixed shapes" error).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise ValueError(f"{root} must contain one sub-folder per class (at least 2), found {classes}")
    mode = {"rgb": "RGB", "grayscale": "L"}.get(color_mode)
    if mode is None:
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    xs, ys, shapes = [], [], {}
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert(mode)
                    if image_size is not None:
                        im = im.resize((image_size[1], image_size[0]))
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read image {f}: {err}") from err
            if arr.ndim == 2:
                arr = arr[..., None]
            shapes.setdefault(arr.shape, f)
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise ValueError(f"the dataset is empty: no images ({sorted(IMAGE_SUFFIXES)}) under {root}/<class>/")
    if len(shapes) > 1:
        examples = ", ".join(f"{s} ({p.name})" for s, p in list(shapes.items())[:3])
        raise ValueError(f"mixed shapes in {root}: {examples}; pass image_size=(H, W) to resize")
    return Dataset(np.stack(xs), np.asarray(ys, dtype=np.int64), classes)


def load_npz(path: str | Path) -> tuple[Dataset, Dataset | None]:
    """(train, test or None) from a NumPy ``.npz``: arrays ``x`` and ``y`` (or ``x_train``/``y_train`` and
    optionally ``x_test``/``y_test``), samples (n, H, W[, C]) of raw values, integer labels, and optionally
    ``class_names`` (else ``class_0`` ... ``class_{K-1}``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        pairs = [("x", "y"), ("x_train", "y_train")]
        found = next(((a, b) for a, b in pairs if {a, b} <= keys), None)
        if found is None:
            raise ValueError(f"{path} needs arrays 'x' and 'y' (or 'x_train' and 'y_train'); it has {sorted(keys)}")

        def arrays(xk: str, yk: str) -> tuple[np.ndarray, np.ndarray]:
            x, y = z[xk], z[yk]
            if x.ndim == 3:
                x = x[..., None]
            if x.ndim != 4 or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"{path}: {xk} must be (n, H, W[, C]) samples and {yk} integer labels, got "
                                 f"{xk} {x.shape} and {yk} {y.dtype}")
            return x, y.astype(np.int64)

        x, y = arrays(*found)
        test = arrays("x_test", "y_test") if {"x_test", "y_test"} <= keys else None
        k = int(max(y.max(), test[1].max() if test else 0)) + 1
        names = [str(n) for n in z["class_names"]] if "class_names" in keys else [f"class_{i}" for i in range(k)]
    return Dataset(x, y, names), (Dataset(*test, names) if test else None)
