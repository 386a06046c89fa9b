"""DAG integrity: every DAG file parses, fast, without importing TensorFlow/MLflow/Kafka clients; the
pipeline's trigger-form parameters match the validation rules and refuse wrong values with a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DAGS = REPO / "dags"
# Not boto3: the amazon provider (S3Hook) normalises every s3:// Asset URI with its S3 hook at parse time,
# so any Airflow with that provider imports boto3 while parsing DAGs that use S3 Assets.
HEAVY = ("tensorflow", "keras", "mlflow", "confluent_kafka", "torch")

PARSE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
t = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "heavy": [m for m in sys.argv[2:] if m in sys.modules], "parse_s": time.monotonic() - t}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "TIERFLOW_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", PARSE, str(DAGS), *HEAVY], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_all_dags_import_without_errors(parsed):
    assert parsed["errors"] == {}
    assert parsed["dags"] == ["tierflow_ingest", "tierflow_monitor", "tierflow_pipeline"]


def test_parsing_imports_nothing_heavy(parsed):
    assert parsed["heavy"] == [], f"parsing the DAGs imported {parsed['heavy']}"


def test_parsing_is_fast(parsed):
    # Not a timing benchmark: a guard against an import that pulls in TensorFlow-sized work (~3 s+).
    assert parsed["parse_s"] < 10, parsed


@pytest.fixture(scope="module")
def pipeline_dag(tmp_path_factory):
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    sys.path.insert(0, str(DAGS))
    try:
        import tierflow_pipeline
    finally:
        sys.path.remove(str(DAGS))
    return tierflow_pipeline.pipeline_dag


def test_trigger_form_params_are_the_validated_ones(pipeline_dag):
    from plugins.pipeline.params import PARAM_SPECS, validate

    assert set(pipeline_dag.params) == set(PARAM_SPECS)
    validate(dict(pipeline_dag.params))  # the form's defaults pass the task-side validation


@pytest.mark.parametrize(("name", "value"), [("epochs", 0), ("architecture", "resnet"), ("backend", "docker"),
                                             ("accuracy_tolerance", 99)])
def test_trigger_form_refuses_wrong_values(pipeline_dag, name, value):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(pipeline_dag.params)
    with pytest.raises(ParamValidationError) as err:
        params[name] = value
    assert name in str(err.value) or str(value) in str(err.value)


def test_validation_task_fails_fast_with_what_to_fix(pipeline_dag):
    from airflow.sdk.exceptions import AirflowFailException

    task = pipeline_dag.get_task("validate_params")
    with pytest.raises(AirflowFailException) as err:
        task.python_callable(params={"epochs": 0, "tier_map": "edge=0;mist=1;cloud=2"})
    assert "epochs=0: give a whole number from 1 to 200" in str(err.value)
    assert "unknown tier(s) ['mist']" in str(err.value)
    ok = task.python_callable(params={"epochs": 1, "max_train_samples": 500})
    assert ok["epochs"] == 1 and ok["tier_map"] == {"edge": [0], "fog": [1], "cloud": [2]}


def test_ml_tasks_run_outside_the_scheduler_interpreter(pipeline_dag):
    ext = {t.task_id for t in pipeline_dag.tasks if type(t).__name__.startswith("_PythonExternal")
           or "External" in type(t).__name__}
    assert {"train_calibrate_partition", "gate", "register"} <= ext


def test_ml_steps_run_in_the_chain_of_the_runs_backend(pipeline_dag):
    """Local: external Python; kubernetes: trainer pods. The first task of each chain runs only for its backend
    (the rest of the chain is skipped with it), and deploy runs after whichever chain ran."""
    from plugins.pipeline.common import backend_is

    pods = {"train_in_pod", "gate_in_pod", "register_in_pod"}
    assert pods <= set(pipeline_dag.task_ids)
    assert pipeline_dag.get_task("gate_in_pod").upstream_task_ids >= {"train_in_pod"}
    deploy = pipeline_dag.get_task("deploy")
    assert deploy.trigger_rule == "none_failed_min_one_success"
    assert {"register", "register_in_pod"} <= deploy.upstream_task_ids
    assert backend_is("kubernetes")({"params": {"backend": "kubernetes"}})
    assert not backend_is("kubernetes")({"params": {"backend": "local"}})
    assert backend_is("local")({"params": {}})
