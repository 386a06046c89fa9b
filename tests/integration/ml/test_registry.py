"""The tier registry against a real MLflow server whose artifacts live in the SeaweedFS S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from runtime.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def reg_settings(mlflow_server: Settings, tmp_path: Path) -> Settings:
    return mlflow_server.model_copy(update={"app": f"r{uuid.uuid4().hex[:8]}", "home": tmp_path})


def _train_run(settings: Settings, plot_dir: Path, accuracy: float) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from ml.registry import log_training

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.5, accuracy])
    plot = plot_dir / "exit_accuracy.png"
    fig.savefig(plot)
    plt.close(fig)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(settings.app)
    with mlflow.start_run() as run:
        log_training({"architecture": "compact", "tier_map": {"edge": [0]}, "epochs": 1},
                     {"test_accuracy": accuracy},
                     exit_metrics=[{"exit": 0, "accuracy": accuracy - 0.1}, {"exit": 1, "accuracy": accuracy}],
                     history={"loss": [1.0, 0.5]}, plots=[plot])
    return run.info.run_id


def _chain(bundle_dir: Path, tiers: list[str], x: np.ndarray) -> np.ndarray:
    """Final-exit probabilities through all tiers of a bundle (each tier feeds the next)."""
    from ml.bundle import load_bundle_tier

    value = x
    for tier in tiers:
        probs, value = load_bundle_tier(bundle_dir, tier).predict(value)
    return probs[-1]


def test_register_load_promote_export(reg_settings: Settings, tiny_bundle: Path, tmp_path: Path):
    import mlflow
    from mlflow import MlflowClient

    from ml import registry
    from ml.bundle import load_bundle_tier, read_manifest
    from plugins.hooks.s3 import DatasetStore

    s, app = reg_settings, reg_settings.app
    bundle = read_manifest(tiny_bundle)
    run_id = _train_run(s, tmp_path, 0.8)
    assert registry.champion_metrics(app, s.mlflow.tracking_uri) is None

    rel = registry.register_bundle(tiny_bundle, app=app, tracking_uri=s.mlflow.tracking_uri, run_id=run_id,
                                   dataset_version="2026-11-25T23-00-00-000Z")
    assert set(rel.versions) == {*bundle.tier_names, "full"} and rel.tiers == bundle.tier_names
    client = MlflowClient(s.mlflow.tracking_uri)
    for tier, version in rel.versions.items():
        mv = client.get_model_version_by_alias(f"{app}-{tier}", "candidate")
        assert mv.version == version and mv.run_id == run_id
        assert mv.tags["tierflow.release"] == rel.release
        assert mv.tags["tierflow.dataset_version"] == "2026-11-25T23-00-00-000Z"
        assert mv.tags["tierflow.bundle_format"] == "tierflow.bundle/1"
        assert json.loads(mv.tags["tierflow.tier_map"]) == {t.name: t.exits for t in bundle.tiers}
        if tier != "full":
            assert json.loads(mv.tags["tierflow.thresholds"]) == bundle.tier(tier).thresholds
        meta = mlflow.models.get_model_info(f"models:/{app}-{tier}/{version}").metadata
        assert meta["tier"] == tier and meta["tierflow_manifest"]["version"] == rel.release
        assert meta["tierflow_manifest"]["metadata"]["registered"]["tier"] == tier
    # Model files really live in the S3 bucket, behind the server's artifact proxy.
    keys = list(DatasetStore.from_settings(s).keys(f"{s.stack.mlflow_artifacts_prefix}/"))
    assert any(k.endswith("/bundle/edge.keras") for k in keys) and any(k.endswith("/plots/exit_accuracy.png") for k in keys)

    # Loading a tier gives the same network as the local bundle, tagged with the release number.
    x = np.random.default_rng(0).integers(0, 256, size=(8, *bundle.input.shape)).astype(bundle.input.dtype)
    edge = registry.load_registered_tier(f"models:/{app}-edge@candidate", s.mlflow.tracking_uri, s.home / "models")
    local = load_bundle_tier(tiny_bundle, "edge")
    assert edge.name == "edge" and edge.version == rel.release and edge.thresholds == local.thresholds
    for a, b in zip(edge.predict(x)[0], local.predict(x)[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (s.home / "models" / f"{app}-edge" / rel.versions["edge"] / "manifest.json").is_file()  # cached
    cloud = registry.load_registered_tier(rel.uris[bundle.tier_names[-1]], s.mlflow.tracking_uri, s.home / "models")
    assert cloud.is_last and cloud.version == rel.release

    # champion: promote release 1, register release 2 (candidate moves, champion stays), promote it.
    registry.promote(app, rel.release, s.mlflow.tracking_uri)
    champ = registry.champion_metrics(app, s.mlflow.tracking_uri)
    assert champ["release"] == rel.release and champ["metrics"]["test_accuracy"] == pytest.approx(0.8)
    assert champ["metrics"]["exit0_accuracy"] == pytest.approx(0.7)
    rel2 = registry.register_bundle(tiny_bundle, app=app, tracking_uri=s.mlflow.tracking_uri,
                                    run_id=_train_run(s, tmp_path, 0.9))
    assert int(rel2.release) == int(rel.release) + 1
    assert registry.release_versions(app, "candidate", s.mlflow.tracking_uri) == rel2.versions
    assert registry.release_versions(app, "champion", s.mlflow.tracking_uri) == rel.versions
    from plugins.hooks.mlflow import MlflowRegistryHook

    hook = MlflowRegistryHook.from_settings(s)
    assert hook.uris("candidate") == rel2.uris and hook.champion_metrics()["release"] == rel.release
    hook.promote("candidate")
    assert registry.champion_metrics(app, s.mlflow.tracking_uri)["metrics"]["test_accuracy"] == pytest.approx(0.9)
    for tier, version in rel2.versions.items():
        assert client.get_model_version_by_alias(f"{app}-{tier}", "champion").version == version

    # Export the champion back into a complete local bundle.
    out = registry.export_release(app, "champion", tmp_path / "exported", s.mlflow.tracking_uri, s.home / "models")
    exported = read_manifest(out)
    assert exported.tier_names == bundle.tier_names and exported.version == rel2.release
    np.testing.assert_allclose(_chain(out, bundle.tier_names, x), _chain(tiny_bundle, bundle.tier_names, x),
                               rtol=1e-5, atol=1e-6)
    assert (out / "full.keras").is_file()


def test_registry_errors_say_what_to_fix(reg_settings: Settings):
    from ml.registry import RegistryError, load_registered_tier, parse_models_uri

    with pytest.raises(ValueError, match="names no version or alias"):
        parse_models_uri("models:/fmnist-edge")
    with pytest.raises(RegistryError, match="not found"):
        load_registered_tier(f"models:/{reg_settings.app}-edge@champion", reg_settings.mlflow.tracking_uri,
                             reg_settings.home / "models")
