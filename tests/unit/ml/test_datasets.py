import numpy as np
import pytest

from ml.datasets import Dataset, load_fashion_mnist, load_image_folder
from ml.sources import load_dataset


def test_fashion_mnist_from_local_idx_files():
    test = load_fashion_mnist("test")
    assert test.x.shape == (10000, 28, 28, 1) and test.x.dtype == np.uint8
    assert np.bincount(test.y).tolist() == [1000] * 10  # the official test split is balanced
    assert test.class_names[9] == "Ankle boot"
    with pytest.raises(ValueError, match="unknown split"):
        load_fashion_mnist("validation")


def test_fashion_mnist_missing_without_download_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr("ml.datasets.FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist("train", directory=tmp_path, download=False)


def _write_images(root, sizes):
    from PIL import Image

    for cls, size in sizes:
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(np.full((*size, 3), 40 * i, np.uint8)).save(d / f"{i}.png")


def test_image_folder_one_subfolder_per_class(tmp_path):
    _write_images(tmp_path, [("daisy", (8, 8)), ("rose", (8, 8))])
    (tmp_path / "rose" / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ["daisy", "rose"]
    assert ds.x.shape == (6, 8, 8, 3) and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    gray = load_image_folder(tmp_path, image_size=(4, 5), color_mode="grayscale")
    assert gray.x.shape == (6, 4, 5, 1)
    train, test = load_dataset(tmp_path)
    assert test is None and len(train) == 6


def test_image_folder_errors(tmp_path):
    _write_images(tmp_path / "mixed", [("a", (8, 8)), ("b", (6, 6))])
    with pytest.raises(ValueError, match=r"mixed shapes .*pass image_size"):
        load_image_folder(tmp_path / "mixed")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="the dataset is empty"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="one sub-folder per class"):
        load_image_folder(tmp_path / "one")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar-10")


def test_dataset_validation_and_split():
    x = np.zeros((10, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match=r"unknown labels \[5\]"):
        Dataset(x, np.array([0] * 9 + [5]), ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        Dataset(x[:0], np.array([], dtype=np.int64), ["a", "b"])
    ds = Dataset(x, np.arange(10) % 2, ["a", "b"])
    a, b = ds.split(0.3, seed=1)
    assert (len(a), len(b)) == (7, 3)
    a2, b2 = ds.split(0.3, seed=1)
    np.testing.assert_array_equal(a.y, a2.y)


def test_npz_datasets_with_and_without_names_and_test_split(tmp_path):
    x = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    np.savez(tmp_path / "plain.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    train, test = load_dataset(tmp_path / "plain.npz")
    assert train.x.shape == (6, 4, 4, 1) and test is None and train.class_names == ["class_0", "class_1", "class_2"]
    np.savez(tmp_path / "split.npz", x_train=x, y_train=np.array([0, 1] * 3), x_test=x[:2], y_test=np.array([1, 0]),
             class_names=np.array(["cat", "dog"]))
    train, test = load_dataset(tmp_path / "split.npz")
    assert train.class_names == test.class_names == ["cat", "dog"] and len(test) == 2
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match=r"needs arrays 'x' and 'y' \(or 'x_train' and 'y_train'\); it has \['images'\]"):
        load_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "float_labels.npz", x=x, y=np.zeros(6))
    with pytest.raises(ValueError, match="integer labels"):
        load_dataset(tmp_path / "float_labels.npz")


def test_image_size_text():
    from ml.sources import parse_image_size

    assert parse_image_size("64x48") == (64, 48) and parse_image_size("32") == (32, 32)
    assert parse_image_size(None) is None
    for bad in ("64x", "ax3", "0x4", "1x2x3"):
        with pytest.raises(ValueError, match="give HxW in pixels"):
            parse_image_size(bad)
