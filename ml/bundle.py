"""The tier bundle: the directory partition writes and every tier worker loads (README "Tier bundle").

``manifest.json`` (format ``tierflow.bundle/1``) + one Keras file per tier + ``full.keras`` (+ the edge
tier as TFLite). :func:`load_tier` gives a worker a :class:`TierModel` with everything it needs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from ml.cascade import TierDecision, decide
from ml.contract import FULL
from ml.exit_curve import ExitCurve
from ml.registry_rest import RegistryError, download_registered

BUNDLE_FORMAT = "tierflow.bundle/1"
MANIFEST = "manifest.json"
FULL_FILE = "full.keras"


class TensorSpec(BaseModel):
    shape: list[int]  # without the batch dimension
    dtype: str = "float32"


class ManifestTier(BaseModel):
    """One tier's entry in a bundle manifest: its exits, Keras file, shapes, thresholds, FLOPs."""

    name: str
    exits: list[int]  # global exit ids, ascending
    file: str
    input_shape: list[int]
    output_shape: list[int] | None  # activation for the next tier; None on the last tier
    thresholds: list[float | None]  # one per exit; None = always answer (final exit)
    flops: int = 0  # per-sample FLOPs of this tier's sub-model
    # Operating points from the calibrated thresholds down to the accuracy floor (`ml.exit_curve`), for
    # tiers that forward; absent in older bundles (which then keep their thresholds), ignored by older code.
    curve: ExitCurve | None = None


class BundleManifest(BaseModel):
    format: Literal["tierflow.bundle/1"] = BUNDLE_FORMAT
    model_name: str
    version: str = "local"
    architecture: str
    input: TensorSpec
    class_names: list[str]
    confidence: Literal["max_softmax", "entropy"] = "max_softmax"
    tiers: list[ManifestTier]
    num_exits: int
    full_file: str = FULL_FILE
    full_flops: int = 0  # FLOPs of the plain network to the final exit (cloud-only baseline)
    tflite: dict[str, str] = Field(default_factory=dict)  # e.g. {"float": "edge.float.tflite", "int8": ...}
    metadata: dict[str, Any] = Field(default_factory=dict)

    def tier(self, name: str) -> ManifestTier:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"bundle has no tier {name!r}; tiers are {[t.name for t in self.tiers]}")

    def next_tier(self, name: str) -> str | None:
        names = [t.name for t in self.tiers]
        i = names.index(self.tier(name).name)
        return names[i + 1] if i + 1 < len(names) else None

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]


def read_manifest(bundle_dir: str | Path) -> BundleManifest:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{bundle_dir} is not a tier bundle: {MANIFEST} is missing")
    data = json.loads(path.read_text())
    fmt = data.get("format")
    if fmt != BUNDLE_FORMAT:
        raise ValueError(f"{path}: unsupported bundle format {fmt!r}; this tierflow reads {BUNDLE_FORMAT!r}")
    return BundleManifest.model_validate(data)


def write_manifest(bundle_dir: str | Path, manifest: BundleManifest) -> Path:
    path = Path(bundle_dir) / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
    return path


def save_bundle(
    bundle_dir: str | Path,
    model,
    tier_map: Mapping[str, Sequence[int | str]] | str | None,
    thresholds: Sequence[float | None],
    class_names: Sequence[str],
    *,
    model_name: str,
    architecture: str = "custom",
    measure: str = "max_softmax",
    version: str = "local",
    metadata: Mapping[str, Any] | None = None,
    tflite: bool = False,
    representative: np.ndarray | None = None,
    curves: Mapping[str, ExitCurve] | None = None,
) -> BundleManifest:
    """Partition ``model`` and write a complete bundle; ``thresholds`` holds one value per global exit,
    ``curves`` the operating points of the tiers that forward (`ml.exit_curve`)."""
    from ml.confidence import canonical_measure
    from ml.partition import full_network_flops, partition

    out = Path(bundle_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_exits = len(model.outputs)
    if len(thresholds) != n_exits:
        raise ValueError(f"need one threshold per exit ({n_exits}), got {len(thresholds)}")
    k = int(model.outputs[0].shape[-1])
    if len(class_names) != k:
        raise ValueError(f"the model has {k} classes but {len(class_names)} class names were given")
    parts = partition(model, tier_map)
    tiers = []
    for i, part in enumerate(parts):
        file = f"{part.name}.keras"
        part.model.save(out / file)
        ths = [None if (e == n_exits - 1 and i == len(parts) - 1) else thresholds[e] for e in part.exits]
        tiers.append(ManifestTier(name=part.name, exits=part.exits, file=file, input_shape=part.input_shape,
                              output_shape=part.output_shape,
                              thresholds=[None if t is None else float(t) for t in ths], flops=part.flops,
                              curve=(curves or {}).get(part.name)))
    model.save(out / FULL_FILE)
    manifest = BundleManifest(
        model_name=model_name,
        version=str(version),
        architecture=architecture,
        input=TensorSpec(shape=[int(d) for d in model.inputs[0].shape[1:]], dtype=str(model.inputs[0].dtype)),
        class_names=[str(c) for c in class_names],
        confidence=canonical_measure(measure),
        tiers=tiers,
        num_exits=n_exits,
        full_flops=full_network_flops(model),
        metadata=dict(metadata or {}),
    )
    if tflite and len(parts) > 1:
        from ml.export import export_tflite

        manifest.tflite = export_tflite(parts[0].model, out, parts[0].name, representative)
    write_manifest(out, manifest)
    return manifest


def _predict_fn(model, input_shape: Sequence[int], dtype: str):
    """A function traced once for any batch size, called as its concrete function: binding the arguments
    of a ``tf.function`` call costs ~0.25 ms of CPU per call, more than a compact tier's compute for a
    small batch. Takes and returns numpy arrays."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *input_shape], tf.as_dtype(dtype))

    @tf.function(input_signature=[spec])
    def run(x):
        y = model(x, training=False)
        return list(y) if isinstance(y, list | tuple) else [y]

    concrete = run.get_concrete_function()
    return lambda x: [t.numpy() for t in concrete(tf.constant(x))]


@dataclass
class TierModel:
    """One tier of a bundle, ready to serve: ``predict`` a batch, then ``decide``."""

    name: str
    exit_ids: list[int]
    thresholds: list[float | None]
    is_last: bool
    next_tier: str | None
    input_shape: list[int]
    input_dtype: str
    output_shape: list[int] | None
    class_names: list[str]
    measure: str
    model_name: str
    version: str
    model: Any  # keras.Model
    flops: int = 0
    manifest: BundleManifest | None = None
    _fn: Any = field(default=None, repr=False)

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        """Cast to the tier's dtype and reshape to (n, *input_shape); a clear error if impossible."""
        x = np.asarray(batch)
        shape = tuple(self.input_shape)
        size = int(np.prod(shape))
        if x.shape[1:] != shape:
            if x.size == size and x.ndim <= len(shape):
                x = x.reshape((1, *shape))
            elif x.ndim >= 2 and int(np.prod(x.shape[1:])) == size:
                x = x.reshape((-1, *shape))
            else:
                raise ValueError(f"tier {self.name!r} expects inputs of shape (batch, {', '.join(map(str, shape))}), "
                                 f"got {x.shape}")
        return x.astype(self.input_dtype, copy=False)

    def predict(self, batch: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Exit probabilities (one (n, K) array per exit of this tier) and the activation for the next tier."""
        x = self.prepare(batch)
        if self._fn is None:
            self._fn = _predict_fn(self.model, self.input_shape, self.input_dtype)
        outs = self._fn(x)
        if self.is_last:
            return outs, None
        return outs[:-1], outs[-1]

    def decide(self, exit_probs: Sequence[np.ndarray], thresholds: Sequence[float | None] | None = None
               ) -> TierDecision:
        """The cascade decision at the tier's thresholds, or at ``thresholds`` (those in force, when adapted)."""
        return decide(exit_probs, self.thresholds if thresholds is None else thresholds, self.measure, self.is_last,
                      self.exit_ids)

    def class_name(self, label: int) -> str:
        return self.class_names[int(label)]


def _load_keras(path: Path):
    import keras

    return keras.saving.load_model(path, compile=False)


def load_bundle_tier(bundle_dir: str | Path, tier: str) -> TierModel:
    """Load one tier of a bundle directory (``tier="full"`` gives the unpartitioned model, cloud-only)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if tier == FULL:
        final = manifest.num_exits - 1
        model = _load_keras(bundle_dir / manifest.full_file)
        import keras

        model = keras.Model(model.inputs[0], [model.outputs[-1]], name=f"{model.name}_final")
        return TierModel(name=FULL, exit_ids=[final], thresholds=[None], is_last=True, next_tier=None,
                         input_shape=manifest.input.shape, input_dtype=manifest.input.dtype, output_shape=None,
                         class_names=manifest.class_names, measure=manifest.confidence,
                         model_name=manifest.model_name, version=manifest.version, model=model,
                         flops=manifest.full_flops, manifest=manifest)
    spec = manifest.tier(tier)
    model = _load_keras(bundle_dir / spec.file)
    first = manifest.tiers[0].name == spec.name
    return TierModel(
        name=spec.name, exit_ids=spec.exits, thresholds=spec.thresholds, is_last=spec.output_shape is None,
        next_tier=manifest.next_tier(spec.name), input_shape=spec.input_shape,
        input_dtype=manifest.input.dtype if first else "float32", output_shape=spec.output_shape,
        class_names=manifest.class_names, measure=manifest.confidence, model_name=manifest.model_name,
        version=manifest.version, model=model, flops=spec.flops, manifest=manifest,
    )


def load_bundle(bundle_dir: str | Path) -> dict[str, TierModel]:
    """Every tier of a bundle, in order edge → cloud."""
    manifest = read_manifest(bundle_dir)
    return {t.name: load_bundle_tier(bundle_dir, t.name) for t in manifest.tiers}


def registered_bundle(uri: str, tracking_uri: str, cache_dir: str | Path) -> tuple[Path, str]:
    """(local one-tier bundle directory, the tier it holds) of ``models:/APP-<tier>/<version>`` or
    ``@<alias>``, downloaded once per model version into ``cache_dir``."""
    path, _mv = download_registered(uri, tracking_uri, cache_dir)
    tier = read_manifest(path).metadata.get("registered", {}).get("tier")
    if tier is None:
        raise RegistryError(f"{uri}: the bundle manifest does not say which tier it holds (metadata.registered)")
    return path, tier


def load_registered_tier(uri: str, tracking_uri: str, cache_dir: str | Path) -> TierModel:
    """A ready-to-serve tier from ``models:/APP-<tier>/<version>`` or ``@<alias>``."""
    path, tier = registered_bundle(uri, tracking_uri, cache_dir)
    return load_bundle_tier(path, tier)


def bundle_dir_of(source: str | Path, tier: str, *, tracking_uri: str | None = None,
                  cache_dir: str | Path | None = None) -> Path:
    """The local bundle directory that holds ``tier``: ``source`` itself, or, for a registry URI, the
    registered tier's bundle downloaded into ``cache_dir`` (needs the MLflow ``tracking_uri``)."""
    src = str(source)
    if src.startswith("models:/"):
        if tracking_uri is None or cache_dir is None:
            raise ValueError(f"loading {src} needs the MLflow tracking URI and a cache directory")
        path, held = registered_bundle(src, tracking_uri, cache_dir)
        if tier and held != tier:
            raise ValueError(f"{src} holds tier {held!r}, not the requested tier {tier!r}")
        return path
    path = Path(src)
    if not path.is_dir():
        raise FileNotFoundError(f"model source {src!r} is neither a bundle directory nor a models:/ URI")
    return path


def load_tier(source: str | Path, tier: str, *, tracking_uri: str | None = None,
              cache_dir: str | Path | None = None) -> TierModel:
    """Load a tier from a bundle directory or an MLflow ``models:/APP-<tier>/<version|@alias>`` URI
    (a registry URI needs the MLflow ``tracking_uri`` and a ``cache_dir`` for the download)."""
    path = bundle_dir_of(source, tier, tracking_uri=tracking_uri, cache_dir=cache_dir)
    if str(source).startswith("models:/"):
        tier = read_manifest(path).metadata["registered"]["tier"]
    return load_bundle_tier(path, tier)
