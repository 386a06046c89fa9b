"""The MLflow 3 model registry of tier models: register a bundle, move aliases, load a tier fast.

One *release* = one tier bundle registered from one training run: a registered model per tier,
``APP-edge``, ``APP-fog``, ``APP-cloud`` (whatever the bundle's tiers are) plus ``APP-full`` (the
unpartitioned network, for cloud-only serving). Each model version is an MLflow pyfunc model whose
artifacts hold a one-tier bundle (``manifest.json`` + that tier's files), whose MLflow model
``metadata`` holds the tier manifest, and whose tags hold thresholds, tier map, dataset version and
bundle format (``tierflow.*``). The release number is written into every manifest (``version``), so
tier workers of one release always use the same link topics even if MLflow's per-model version
numbers ever diverge; ``RegisteredRelease.uris`` pins each tier's exact model version.

Aliases: ``candidate`` at registration, ``champion`` after a healthy rollout (`promote`), moved on
every model of the release together.

Loading (``ml.registry_rest``, used by ``ml.bundle.load_tier`` for ``models:/`` URIs, i.e. at every
worker start) speaks plain REST to the tracking server and downloads through its artifact proxy into
a per-version cache under the cache directory the caller names (the runtime passes
``$TIERFLOW_HOME/models``): no ``import mlflow``, and a restart of a worker does no download at all.
Other artifact stores fall back to ``mlflow.artifacts``. Every function takes the tracking URI as an
argument; nothing here reads tierflow's settings.

No Kafka, no Airflow here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml.bundle import load_registered_tier, read_manifest, write_manifest
from ml.contract import CANDIDATE, CHAMPION, FULL, model_name
from ml.registry_rest import (
    BUNDLE_ARTIFACT,
    TAG,
    RegistryError,
    _Rest,
    _tags,
    download_registered,
    parse_models_uri,
)

__all__ = ["CANDIDATE", "CHAMPION", "FULL", "RegisteredRelease", "RegistryError", "champion_metrics",
           "download_registered", "export_release", "load_registered_tier", "log_training", "model_name",
           "parse_models_uri", "promote", "register_bundle", "release_versions", "set_release_alias"]

PYFUNC_CODE = Path(__file__).with_name("tier_pyfunc.py")


@dataclass
class RegisteredRelease:
    app: str
    release: str  # written into every tier manifest; workers name their link topics after it
    run_id: str
    versions: dict[str, str]  # tier (and "full") -> MLflow model version
    dataset_version: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uris(self) -> dict[str, str]:
        return {t: f"models:/{model_name(self.app, t)}/{v}" for t, v in self.versions.items()}

    @property
    def tiers(self) -> list[str]:
        return [t for t in self.versions if t != FULL]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uris": self.uris, "tiers": self.tiers}


# -- registration (ML environment: imports mlflow) -------------------------------------------------------
def _client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _max_version(client: Any, name: str) -> int:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{name}'", max_results=1, order_by=["version_number DESC"])
    except MlflowException:
        return 0
    return max((int(v.version) for v in found), default=0)


def _one_tier_bundle(bundle_dir: Path, manifest: Any, tier: str, release: str, app: str, run_id: str,
                     dest: Path) -> Any:
    """dest/ = manifest.json (release number, which tier) + the files of that tier only."""
    dest.mkdir(parents=True)
    m = manifest.model_copy(deep=True)
    m.version = release
    m.metadata["registered"] = {"tier": tier, "model": model_name(app, tier), "release": release, "run_id": run_id}
    files = [m.full_file] if tier == FULL else [m.tier(tier).file]
    if tier == m.tiers[0].name:
        files += list(m.tflite.values())
    for f in files:
        shutil.copy2(bundle_dir / f, dest / f)
    write_manifest(dest, m)
    return m


def _tier_tags(manifest: Any, tier: str, release: str, run_id: str, dataset_version: str | None) -> dict[str, str]:
    tiers = manifest.tiers
    thresholds = {t.name: t.thresholds for t in tiers}
    tags = {
        "tier": tier, "release": release, "run_id": run_id, "bundle_format": manifest.format,
        "architecture": manifest.architecture, "confidence": manifest.confidence,
        "tier_map": json.dumps({t.name: t.exits for t in tiers}),
        "thresholds": json.dumps(thresholds.get(tier, thresholds)),
        "all_thresholds": json.dumps(thresholds),
        "input": json.dumps(manifest.input.model_dump()),
        "class_names": json.dumps(manifest.class_names),
    }
    if tier != FULL:
        spec = manifest.tier(tier)
        tags.update(exits=json.dumps(spec.exits), next_tier=str(manifest.next_tier(tier) or ""), flops=str(spec.flops))
        if spec.curve is not None:  # the whole curve is in the model's metadata (the tier manifest)
            tags.update(accuracy_floor=f"{spec.curve.floor_accuracy:.4f}", operating_points=str(len(spec.curve.points)),
                        lowest_threshold=json.dumps(spec.curve.points[-1].thresholds))
    if dataset_version:
        tags["dataset_version"] = dataset_version
    return {TAG + k: v for k, v in tags.items()}


def register_bundle(bundle_dir: str | Path, *, app: str, tracking_uri: str, run_id: str | None = None,
                    dataset_version: str | None = None, alias: str | None = CANDIDATE) -> RegisteredRelease:
    """Register every tier of a bundle (plus the full model) from one MLflow run.

    ``run_id``: the training run to attach the models to (default: the active run, else a new run in
    experiment APP). ``dataset_version`` defaults to the bundle manifest's ``metadata.dataset_version``.
    Returns the release with the pinned ``models:/`` URI of every tier.
    """
    import mlflow

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    dataset_version = dataset_version or manifest.metadata.get("dataset_version")
    tracking = tracking_uri
    client = _client(tracking)
    mlflow.set_tracking_uri(tracking)
    tiers = [*manifest.tier_names, FULL]
    release = str(max(_max_version(client, model_name(app, t)) for t in tiers) + 1)

    active = mlflow.active_run()
    if run_id is None and active is not None:
        run_id = active.info.run_id
    if run_id is None:
        mlflow.set_experiment(app)
    previous_uv = os.environ.get("MLFLOW_LOG_UV_FILES")
    os.environ["MLFLOW_LOG_UV_FILES"] = "false"  # the lock file is 0.5 MB per model; requirements suffice
    versions: dict[str, str] = {}
    try:
        nested = active is not None and active.info.run_id == run_id
        ctx = _noop() if nested else mlflow.start_run(run_id=run_id, run_name=f"{app}-release-{release}")
        with ctx as run, tempfile.TemporaryDirectory() as tmp:
            run_id = run_id or run.info.run_id
            for tier in tiers:
                sub = _one_tier_bundle(bundle_dir, manifest, tier, release, app, run_id,
                                       Path(tmp) / tier / BUNDLE_ARTIFACT)
                tags = _tier_tags(manifest, tier, release, run_id, dataset_version)
                info = mlflow.pyfunc.log_model(
                    name=f"tier-{tier}", python_model=str(PYFUNC_CODE),
                    artifacts={BUNDLE_ARTIFACT: str(Path(tmp) / tier / BUNDLE_ARTIFACT)},
                    metadata={"tierflow_manifest": sub.model_dump(mode="json"), "tier": tier, "release": release},
                    pip_requirements=_requirements(), tags=tags)
                _ensure_registered_model(client, model_name(app, tier), tier)
                mv = client.create_model_version(model_name(app, tier), info.model_uri, run_id=run_id, tags=tags,
                                                 description=f"tier {tier} of release {release} ({manifest.architecture})",
                                                 await_creation_for=0, model_id=info.model_id)
                versions[tier] = str(mv.version)
                if alias:
                    client.set_registered_model_alias(model_name(app, tier), alias, mv.version)
            mlflow.set_tags({TAG + "release": release, TAG + "registered_models":
                             json.dumps({t: f"{model_name(app, t)}/{v}" for t, v in versions.items()})})
    finally:
        if previous_uv is None:
            os.environ.pop("MLFLOW_LOG_UV_FILES", None)
        else:
            os.environ["MLFLOW_LOG_UV_FILES"] = previous_uv
    return RegisteredRelease(app, release, run_id, versions, dataset_version,
                             {k: v for k, v in _tier_tags(manifest, FULL, release, run_id, dataset_version).items()})


def _ensure_registered_model(client: Any, name: str, tier: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=(
            "Unpartitioned multi-exit network (cloud-only serving)" if tier == FULL else
            f"Tier '{tier}' of a distributed early-exit network (tierflow)"))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


class _noop:
    def __enter__(self) -> Any:
        import mlflow

        return mlflow.active_run()

    def __exit__(self, *exc: object) -> None:
        return None


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("tensorflow-cpu", "keras", "numpy", "pydantic", "mlflow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs


# -- aliases and the champion ---------------------------------------------------------------------------
def release_versions(app: str, ref: str, tracking_uri: str) -> dict[str, str]:
    """Model versions of one release: ``ref`` is an alias ("champion", "candidate") or a release number.

    An alias is read from ``APP-full`` (always registered) and mapped to its release.
    """
    rest = _Rest(tracking_uri)
    release = ref
    if not ref.isdigit():
        release = _tags(rest.model_version(model_name(app, FULL), None, ref)).get(TAG + "release", "")
    found: dict[str, str] = {}
    body = rest.get("mlflow/model-versions/search", filter=f"tags.`{TAG}release` = '{release}'",
                    max_results="1000")
    for mv in body.get("model_versions", []):
        tags = _tags(mv)
        if mv["name"].startswith(f"{app}-") and tags.get(TAG + "release") == release:
            found[tags.get(TAG + "tier", mv["name"][len(app) + 1:])] = str(mv["version"])
    if FULL not in found:
        raise RegistryError(f"release {release!r} of {app} not found in the registry")
    return found


def set_release_alias(app: str, ref: str, alias: str, tracking_uri: str) -> dict[str, str]:
    """Point ``alias`` at every model of a release (``ref``: release number or another alias)."""
    versions = release_versions(app, ref, tracking_uri)
    rest = _Rest(tracking_uri)
    # Tiers first, the full model last: APP-full@alias is what release_versions() reads.
    for tier in sorted(versions, key=lambda t: t == FULL):
        rest.post("mlflow/registered-models/alias",
                  {"name": model_name(app, tier), "alias": alias, "version": versions[tier]})
    return versions


def promote(app: str, ref: str, tracking_uri: str) -> dict[str, str]:
    """``champion`` -> the release (after a healthy rollout); returns its model versions."""
    return set_release_alias(app, ref, CHAMPION, tracking_uri)


def champion_metrics(app: str, tracking_uri: str) -> dict[str, Any] | None:
    """What the gate compares against: the champion release's run metrics, or None if there is none."""
    rest = _Rest(tracking_uri)
    try:
        mv = rest.model_version(model_name(app, FULL), None, CHAMPION)
    except RegistryError:
        return None
    tags = _tags(mv)
    run = rest.get("mlflow/runs/get", run_id=mv["run_id"])["run"]
    metrics = {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}
    return {"release": tags.get(TAG + "release"), "version": str(mv["version"]), "run_id": mv["run_id"],
            "dataset_version": tags.get(TAG + "dataset_version"), "metrics": metrics,
            "thresholds": json.loads(tags.get(TAG + "all_thresholds", "{}"))}


def export_release(app: str, ref: str, out_dir: str | Path, tracking_uri: str, cache_dir: str | Path) -> Path:
    """Rebuild a complete local bundle directory (all tiers + full model) from a registered release
    (downloads are cached under ``cache_dir``, as for ``download_registered``)."""
    versions = release_versions(app, ref, tracking_uri)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = None
    for tier, version in versions.items():
        path, _ = download_registered(f"models:/{model_name(app, tier)}/{version}", tracking_uri, cache_dir)
        for f in path.iterdir():
            if f.name != "manifest.json":
                shutil.copy2(f, out / f.name)
        if manifest is None or tier != FULL:
            manifest = read_manifest(path)
    manifest.metadata.pop("registered", None)
    manifest.metadata["registry"] = {"app": app, "versions": versions}
    write_manifest(out, manifest)
    read_manifest(out)
    return out


# -- training-run logging -------------------------------------------------------------------------------
def log_training(params: Mapping[str, Any], metrics: Mapping[str, float] | None = None,
                 exit_metrics: Sequence[Mapping[str, Any]] = (), history: Mapping[str, Sequence[float]] | None = None,
                 plots: Iterable[str | Path] = ()) -> None:
    """Log one training run into the active MLflow run: params (lists/dicts as JSON), final metrics,
    per-exit metrics as ``exit<i>_<name>``, per-epoch history (step = epoch) and PNG plots under plots/."""
    import mlflow

    mlflow.log_params({k: json.dumps(v) if isinstance(v, list | dict | tuple) else v for k, v in params.items()})
    flat = dict(metrics or {})
    for i, em in enumerate(exit_metrics):
        idx = em.get("exit", i)
        flat.update({f"exit{idx}_{k}": float(v) for k, v in em.items() if k != "exit" and isinstance(v, int | float)})
    if flat:
        mlflow.log_metrics({k: float(v) for k, v in flat.items()})
    for key, values in (history or {}).items():
        for step, value in enumerate(values):
            mlflow.log_metric(key, float(value), step=step)
    for plot in plots:
        mlflow.log_artifact(str(plot), "plots")
