"""Train → calibrate → gate → register → deploy, scheduled on the dataset Asset or triggered by hand.

Thin on purpose: parameters and their validation live in plugins.pipeline.params, the ML steps in
plugins.pipeline.ml_steps (run by the ML environment's interpreter, never the scheduler's), the rollout
in plugins.pipeline.deploy. Nothing heavy is imported when the scheduler parses this file.

The ML steps run in one of two chains, chosen by the ``backend`` parameter; the other chain is skipped:
external Python (the local ML interpreter), or pods of the trainer image on their own node pool
(backend=kubernetes, plugins.pipeline.trainer_pod).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from plugins.pipeline.common import PIPELINE_DAG, backend_is, dataset_asset, ml_python
from plugins.pipeline.connections import pass_connections
from plugins.pipeline.params import PARAM_SPECS

ML_PYTHON = ml_python()


@dag(
    dag_id=PIPELINE_DAG,
    schedule=[dataset_asset()],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tierflow"],
    default_args={"retries": 0},
    params={name: Param(default, description=desc, **schema)
            for name, (default, schema, desc) in PARAM_SPECS.items()},
    doc_md=__doc__,
)
def tierflow_pipeline():
    @task
    def validate_params(params=None) -> dict:
        """Fail fast, before any training, with one message listing every wrong parameter."""
        from airflow.sdk.exceptions import AirflowFailException

        from plugins.pipeline.params import ParamError, validate

        try:
            return validate(dict(params or {})).to_dict()
        except ParamError as exc:
            raise AirflowFailException(str(exc)) from None

    @task
    def resolve_dataset(cfg: dict, triggering_asset_events=None) -> str:
        """The dataset version to train on: the parameter, the Asset event that triggered us, or the newest."""
        from plugins.pipeline.datasets import resolve_dataset_uri

        return resolve_dataset_uri(cfg.get("dataset", ""), triggering_asset_events)

    # The ML steps run in the ML interpreter; `pass_connections` gives it the S3, MLflow and Kafka of the
    # Airflow Connections (else the settings) as its environment, read there as the settings.
    @task.run_if(backend_is("local"), skip_message="backend=kubernetes: the ML steps run as trainer pods")
    @task.external_python(python=ML_PYTHON, expect_airflow=False, pre_execute=pass_connections)
    def train_calibrate_partition(cfg: dict, dataset_uri: str) -> dict:
        from plugins.pipeline.ml_steps import train_calibrate_partition
        from runtime.settings import Settings

        settings = Settings()
        return train_calibrate_partition(cfg, dataset_uri, settings, str(settings.home / "bundles"))

    @task.external_python(python=ML_PYTHON, expect_airflow=False, pre_execute=pass_connections)
    def gate(cfg: dict, trained: dict) -> dict:
        from plugins.pipeline.ml_steps import gate_step
        from runtime.settings import Settings

        return gate_step(cfg, trained, Settings())

    @task.external_python(python=ML_PYTHON, expect_airflow=False, pre_execute=pass_connections)
    def register(trained: dict, verdict: dict) -> dict:
        from plugins.pipeline.ml_steps import register_step
        from runtime.settings import Settings

        return register_step(trained, Settings())

    # backend=kubernetes: the same steps in the trainer image's pods; their results are objects in S3.
    @task.run_if(backend_is("kubernetes"), skip_message="backend=local: the ML steps run in external Python")
    @task
    def train_in_pod(cfg: dict, dataset_uri: str) -> dict:
        from plugins.pipeline.trainer_pod import run_in_current_task

        return run_in_current_task("train", {"cfg": cfg, "dataset_uri": dataset_uri})

    @task
    def gate_in_pod(cfg: dict, trained: dict) -> dict:
        from plugins.pipeline.trainer_pod import run_in_current_task

        return run_in_current_task("gate", {"cfg": cfg, "trained": trained})

    @task
    def register_in_pod(trained: dict, verdict: dict) -> dict:
        from plugins.pipeline.trainer_pod import run_in_current_task

        return run_in_current_task("register", {"trained": trained, "verdict": verdict})

    @task(trigger_rule="none_failed_min_one_success")  # after whichever chain ran
    def deploy(cfg: dict, trained: dict | None, registered: dict | None, trained_in_pod: dict | None = None,
               registered_in_pod: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from plugins.pipeline.deploy import deploy as run_deploy
        from runtime.settings import get_settings

        trained, registered = trained or trained_in_pod, registered or registered_in_pod
        outcome = run_deploy(get_settings(), cfg, registered, trained["test_accuracy"],
                             canary_file=trained.get("canary_file"))
        if outcome.rolled_back:
            raise AirflowFailException(f"v{outcome.version} rolled back, champion unchanged: "
                                       + "; ".join(outcome.problems))
        return outcome.as_dict()

    cfg = validate_params()
    dataset_uri = resolve_dataset(cfg)
    trained = train_calibrate_partition(cfg, dataset_uri)
    in_pod = train_in_pod(cfg, dataset_uri)
    deploy(cfg, trained, register(trained, gate(cfg, trained)),
           in_pod, register_in_pod(in_pod, gate_in_pod(cfg, in_pod)))


pipeline_dag = tierflow_pipeline()
