"""Names shared by the DAG files: DAG ids, the dataset Asset, the ML interpreter. Cheap to import."""

from __future__ import annotations

import sys
from pathlib import Path

INGEST_DAG = "tierflow_ingest"
PIPELINE_DAG = "tierflow_pipeline"
MONITOR_DAG = "tierflow_monitor"


def dataset_asset():
    """The Asset ingest emits and the pipeline is scheduled on (one per application)."""
    from airflow.sdk import Asset

    from runtime.settings import get_settings

    s = get_settings()
    return Asset(name=f"{s.app}-dataset", uri=f"s3://{s.s3.bucket}/{s.ingest.prefix}/{s.app}/")


def ml_python() -> str:
    """Interpreter of the ML environment (TensorFlow, MLflow) for external-python tasks: Settings.ml_python,
    else this venv's python (one venv holding both environments)."""
    from runtime.settings import get_settings

    configured = get_settings().ml_python
    if configured:
        return configured
    candidate = Path(sys.prefix) / "bin" / "python"
    return str(candidate if candidate.exists() else sys.executable)


def backend_is(name: str):
    """A `@task.run_if` condition: the run's ``backend`` parameter is ``name``."""
    def condition(context) -> bool:
        return (context["params"].get("backend") or "local") == name
    return condition
