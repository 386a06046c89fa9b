"""Test DAG: one Airflow task rolls a bundle out with the Kubernetes backend (procedure + rollback).

Used by tests/k8s/test_airflow_task_log.py through `dag.test()`, to show that the rollout runs inside an
Airflow task through the `kubernetes_default` connection and that pod output lands in the task log.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task


@dag(dag_id="k8s_tier_rollout", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
     default_args={"retries": 0},
     params={"version": Param("1", type="string"), "bundle": Param("", type="string"),
             "tiers": Param(["cloud"], type="array")})
def k8s_tier_rollout():
    @task
    def roll_out(params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from plugins.rollout.base import Release, TierWorkerSpec
        from plugins.rollout.kubernetes import KubernetesRolloutBackend
        from plugins.rollout.procedure import CanaryPolicy, rollout
        from runtime.settings import Settings

        settings = Settings()
        release = Release(settings.app, str(params["version"]),
                          tuple(TierWorkerSpec(t, params["bundle"]) for t in params["tiers"]))
        outcome = rollout(KubernetesRolloutBackend(settings=settings, poll_s=0.5), release, canary=None,
                          policy=CanaryPolicy(), promote=lambda v: None, ready_timeout_s=150)
        if outcome.rolled_back:
            raise AirflowFailException(f"v{outcome.version} rolled back: " + "; ".join(outcome.problems))
        return outcome.as_dict()

    roll_out()


rollout_dag = k8s_tier_rollout()
