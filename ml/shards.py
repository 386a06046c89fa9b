"""The dataset-shard format stream ingestion writes and training reads: ``tierflow.shards/1``.

A dataset version is a JSON **manifest** plus **NPZ shards** (``numpy.savez_compressed``), each shard
holding ``x`` (n, *sample shape) in the manifest's dtype and ``y`` (n,) int64 class ids indexing
``class_names``. Why NPZ rather than TFRecord: the ingest task runs in the orchestrator environment,
which never has TensorFlow; NPZ needs only NumPy, keeps dtype and shape, compresses, and one shard is
one S3 object that is read whole. Shards are named after the Kafka records they hold
(:func:`shard_key`: topic/partition/offset range), so a re-run of the same range writes the same key
(idempotent) and a manifest lists exactly which records a dataset version contains.

Manifest (JSON)::

    {"format": "tierflow.shards/1", "name": "fmnist", "version": "2026-11-25T23-00-00Z",
     "class_names": [...], "sample": {"shape": [28, 28, 1], "dtype": "uint8"},
     "shards": [{"key": "fmnist.training/p0/000000000000-000000000999.npz", "count": 1000,
                 "sha256": "...", "source": {"topic": "fmnist.training", "partition": 0,
                                              "first_offset": 0, "last_offset": 999}}],
     "count": 1000, "metadata": {}}

Everything here takes and returns bytes or arrays; the caller does the I/O (files, boto3).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ml.datasets import Dataset

SHARDS_FORMAT = "tierflow.shards/1"


class SampleSpec(BaseModel):
    shape: list[int]
    dtype: str


class ShardSource(BaseModel):
    topic: str
    partition: int
    first_offset: int
    last_offset: int


class ShardEntry(BaseModel):
    key: str  # object key / relative path of the shard
    count: int
    sha256: str
    source: ShardSource | None = None


class ShardManifest(BaseModel):
    format: Literal["tierflow.shards/1"] = SHARDS_FORMAT
    name: str
    version: str
    class_names: list[str]
    sample: SampleSpec
    shards: list[ShardEntry] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(s.count for s in self.shards)

    def to_bytes(self) -> bytes:
        d = self.model_dump(mode="json")
        d["count"] = self.count
        return json.dumps(d, indent=2).encode()


def shard_key(topic: str, partition: int, first_offset: int, last_offset: int, prefix: str = "") -> str:
    """Deterministic shard name for a Kafka offset range (inclusive)."""
    if last_offset < first_offset:
        raise ValueError(f"empty offset range {first_offset}..{last_offset}")
    p = f"{prefix.rstrip('/')}/" if prefix else ""
    return f"{p}{topic}/p{partition}/{first_offset:012d}-{last_offset:012d}.npz"


def encode_labels(labels: Sequence[str | int], class_names: Sequence[str]) -> np.ndarray:
    """Class names or ids (as str or int) → int64 ids; unknown labels are a clear error."""
    index = {name: i for i, name in enumerate(class_names)}
    out = np.empty(len(labels), dtype=np.int64)
    unknown = []
    for j, lab in enumerate(labels):
        if isinstance(lab, bytes):
            lab = lab.decode()
        if isinstance(lab, str) and lab in index:
            out[j] = index[lab]
        elif isinstance(lab, int | np.integer) or (isinstance(lab, str) and lab.strip().lstrip("-").isdigit()):
            v = int(lab)
            if not 0 <= v < len(class_names):
                unknown.append(lab)
            out[j] = v
        else:
            unknown.append(lab)
    if unknown:
        raise ValueError(f"unknown labels {sorted({str(u) for u in unknown})[:10]}: expected one of "
                         f"{list(class_names)} or an id in 0..{len(class_names) - 1}")
    return out


def new_manifest(name: str, version: str, class_names: Sequence[str], shape: Sequence[int], dtype: str,
                 metadata: dict[str, Any] | None = None) -> ShardManifest:
    return ShardManifest(name=name, version=version, class_names=list(class_names),
                         sample=SampleSpec(shape=[int(d) for d in shape], dtype=str(np.dtype(dtype))),
                         metadata=dict(metadata or {}))


def write_shard(x: np.ndarray, y: np.ndarray, key: str, manifest: ShardManifest | None = None,
                source: ShardSource | dict | None = None, compress: bool = True) -> tuple[bytes, ShardEntry]:
    """Encode one shard; returns its bytes (to upload/write under ``key``) and its manifest entry.

    With ``manifest``, the samples are checked against its shape/dtype/classes (and the entry is *not*
    added: add it after the upload succeeded, ``manifest.shards.append(entry)``).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape[0] == 0:
        raise ValueError(f"shard {key!r} would be empty; write shards with at least one sample")
    if y.shape != (x.shape[0],):
        raise ValueError(f"shard {key!r}: {x.shape[0]} samples but labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"shard {key!r}: labels must be integer class ids (use encode_labels), got {y.dtype}")
    if manifest is not None:
        if list(x.shape[1:]) != manifest.sample.shape:
            raise ValueError(f"mixed shapes: shard {key!r} has samples {list(x.shape[1:])}, the dataset "
                             f"{manifest.sample.shape}")
        if str(x.dtype) != manifest.sample.dtype:
            raise ValueError(f"shard {key!r} has dtype {x.dtype}, the dataset {manifest.sample.dtype}")
        k = len(manifest.class_names)
        if y.min() < 0 or y.max() >= k:
            raise ValueError(f"unknown labels in shard {key!r}: ids must be in 0..{k - 1}")
    buf = io.BytesIO()
    # compress=False (plain NPZ, same reader): stream ingestion, where zlib costs more than it saves.
    (np.savez_compressed if compress else np.savez)(buf, x=x, y=y.astype(np.int64))
    data = buf.getvalue()
    if isinstance(source, dict):
        source = ShardSource(**source)
    return data, ShardEntry(key=key, count=int(x.shape[0]), sha256=hashlib.sha256(data).hexdigest(), source=source)


def read_shard(data: bytes, expect: ShardEntry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode shard bytes to (x, y); with ``expect``, verify checksum and count."""
    if expect is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expect.sha256:
            raise ValueError(f"shard {expect.key!r} is corrupt: sha256 {digest[:12]}… != manifest {expect.sha256[:12]}…")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise ValueError("not a tierflow shard: arrays 'x' and 'y' are missing")
        x, y = z["x"], z["y"]
    if expect is not None and x.shape[0] != expect.count:
        raise ValueError(f"shard {expect.key!r} holds {x.shape[0]} samples, the manifest says {expect.count}")
    return x, y


def parse_manifest(data: bytes | str | dict | Path) -> ShardManifest:
    if isinstance(data, Path):
        data = data.read_bytes()
    raw = json.loads(data) if isinstance(data, bytes | str) else dict(data)
    if raw.get("format") != SHARDS_FORMAT:
        raise ValueError(f"unsupported dataset format {raw.get('format')!r}; this tierflow reads {SHARDS_FORMAT!r}")
    raw.pop("count", None)
    return ShardManifest.model_validate(raw)


def read_dataset(manifest: ShardManifest | bytes | str | dict | Path, fetch: Callable[[str], bytes] | None = None):
    """All shards of a dataset version as one ``ml.datasets.Dataset``.

    ``fetch(key) -> bytes`` gets a shard (e.g. from S3); by default keys are files relative to the
    manifest's directory (when ``manifest`` is a path).
    """
    base = None
    if isinstance(manifest, Path) or (isinstance(manifest, str) and manifest.endswith(".json") and Path(manifest).is_file()):
        base = Path(manifest).parent
        manifest = Path(manifest)
    m = manifest if isinstance(manifest, ShardManifest) else parse_manifest(manifest)
    if fetch is None:
        if base is None:
            raise ValueError("give fetch(key) -> bytes to read shards of a manifest that is not a file")
        fetch = lambda key: (base / key).read_bytes()  # noqa: E731
    if not m.shards or m.count == 0:
        raise ValueError(f"dataset {m.name!r} version {m.version!r} is empty (no shards)")
    xs, ys = [], []
    for entry in m.shards:
        x, y = read_shard(fetch(entry.key), entry)
        if list(x.shape[1:]) != m.sample.shape or str(x.dtype) != m.sample.dtype:
            raise ValueError(f"mixed shapes: shard {entry.key!r} has {list(x.shape[1:])} {x.dtype}, the dataset "
                             f"{m.sample.shape} {m.sample.dtype}")
        xs.append(x)
        ys.append(y)
    return Dataset(np.concatenate(xs), np.concatenate(ys).astype(np.int64), list(m.class_names))
