import json

import numpy as np
import pytest

from ml.shards import (
    encode_labels,
    new_manifest,
    parse_manifest,
    read_dataset,
    read_shard,
    shard_key,
    write_shard,
)

CLASSES = ["cat", "dog", "fox"]


def _manifest():
    return new_manifest("pets", "v1", CLASSES, (4, 4, 1), "uint8")


def test_roundtrip_through_bytes_like_s3(tmp_path):
    rng = np.random.default_rng(0)
    m = _manifest()
    store: dict[str, bytes] = {}  # stands in for the object store: keys -> bytes
    expected_x, expected_y = [], []
    for part, (first, last) in enumerate([(0, 9), (10, 14)]):
        x = rng.integers(0, 255, size=(last - first + 1, 4, 4, 1), dtype=np.uint8)
        y = encode_labels(rng.choice(CLASSES, size=len(x)).tolist(), CLASSES)
        key = shard_key("pets.training", part, first, last, prefix="datasets/pets")
        data, entry = write_shard(x, y, key, m, source={"topic": "pets.training", "partition": part,
                                                         "first_offset": first, "last_offset": last})
        store[key] = data
        m.shards.append(entry)
        expected_x.append(x)
        expected_y.append(y)
    raw = m.to_bytes()
    assert json.loads(raw)["count"] == 15 and json.loads(raw)["format"] == "tierflow.shards/1"
    ds = read_dataset(raw, fetch=store.__getitem__)
    np.testing.assert_array_equal(ds.x, np.concatenate(expected_x))
    np.testing.assert_array_equal(ds.y, np.concatenate(expected_y))
    assert ds.class_names == CLASSES
    assert m.shards[0].key == "datasets/pets/pets.training/p0/000000000000-000000000009.npz"
    # the same from files next to the manifest
    for key, data in store.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    (tmp_path / "manifest.json").write_bytes(raw)
    assert len(read_dataset(tmp_path / "manifest.json")) == 15


def test_same_records_give_same_shard_bytes():
    x = np.zeros((3, 4, 4, 1), np.uint8)
    y = np.array([0, 1, 2])
    assert write_shard(x, y, "k")[1].sha256 == write_shard(x, y, "k")[1].sha256


def test_unknown_labels_mixed_shapes_empty_and_corruption_are_clear_errors():
    m = _manifest()
    with pytest.raises(ValueError, match=r"unknown labels \['wolf'\]"):
        encode_labels(["cat", "wolf"], CLASSES)
    with pytest.raises(ValueError, match="unknown labels"):
        encode_labels([3], CLASSES)
    assert encode_labels(["2", 1, b"dog"], CLASSES).tolist() == [2, 1, 1]
    with pytest.raises(ValueError, match="mixed shapes"):
        write_shard(np.zeros((2, 5, 5, 1), np.uint8), np.array([0, 1]), "k", m)
    with pytest.raises(ValueError, match="unknown labels in shard"):
        write_shard(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 7]), "k", m)
    with pytest.raises(ValueError, match="would be empty"):
        write_shard(np.zeros((0, 4, 4, 1), np.uint8), np.array([], dtype=int), "k", m)
    with pytest.raises(ValueError, match="is empty"):
        read_dataset(m.to_bytes(), fetch=lambda k: b"")
    data, entry = write_shard(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), "k", m)
    with pytest.raises(ValueError, match="corrupt"):
        read_shard(data[:-1] + b"x", entry)
    with pytest.raises(ValueError, match="unsupported dataset format"):
        parse_manifest(b'{"format": "tfrecord/0"}')
    with pytest.raises(ValueError, match="empty offset range"):
        shard_key("t", 0, 5, 4)
