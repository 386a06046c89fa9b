"""A user's multi-exit model registered in a real MLflow server (artifacts in the SeaweedFS S3) is a valid
``architecture``: by version and by alias, as the pipeline's training step loads it."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from runtime.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


def test_a_registered_user_model_loads_by_version_and_alias_and_a_wrong_name_says_what_to_fix(
        mlflow_server: Settings):
    import mlflow

    from ml.user_models import load_architecture

    sys.path.insert(0, str(EXAMPLES))
    try:
        import my_exits
    finally:
        sys.path.remove(str(EXAMPLES))
    name = f"mine-{uuid.uuid4().hex[:8]}"
    mlflow.set_tracking_uri(mlflow_server.mlflow.tracking_uri)
    mlflow.set_experiment(name)
    original = my_exits.build((28, 28, 1), 10)
    with mlflow.start_run():
        mlflow.keras.log_model(original, name="model", registered_model_name=name)
    client = mlflow.MlflowClient(mlflow_server.mlflow.tracking_uri)
    client.set_registered_model_alias(name, "start", "1")

    for spec in (f"models:/{name}/1", f"models:/{name}@start"):
        model = load_architecture(spec, (28, 28, 1), 10)
        assert len(model.outputs) == len(original.outputs)
        assert all((a == b).all() for a, b in zip(model.get_weights(), original.get_weights(), strict=True))
    with pytest.raises(ValueError, match="cannot load it from MLflow.*check the name, version or alias"):
        load_architecture(f"models:/{name}/7", (28, 28, 1), 10)
    with pytest.raises(ValueError, match="inputs of shape"):  # registered for another dataset
        load_architecture(f"models:/{name}/1", (32, 32, 3), 10)
