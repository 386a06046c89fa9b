"""Monitor: live accuracy (APP.feedback joined with APP.results) and exit-rate drift; retrain when a bound
is crossed. Runs on a schedule and by hand; the retrain is a run of the pipeline DAG on the newest data.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from plugins.pipeline.common import MONITOR_DAG, PIPELINE_DAG


@dag(dag_id=MONITOR_DAG, schedule="*/15 * * * *", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, max_active_runs=1, tags=["tierflow"], default_args={"retries": 0}, doc_md=__doc__,
     params={
         "min_accuracy": Param(0.6, type="number", minimum=0, maximum=1,
                               description="Retrain when live accuracy falls below this."),
         "max_exit_drift": Param(0.2, type="number", minimum=0, maximum=1,
                                 description="Retrain when answers per tier drift further than this "
                                             "(total variation distance) from the champion's test split."),
         "min_samples": Param(50, type="integer", minimum=1,
                              description="Requests with feedback needed before judging accuracy."),
         "retrain_conf": Param({}, type="object",
                               description="Parameters for the retrain run of the pipeline DAG."),
     })
def tierflow_monitor():
    @task
    def measure(params=None) -> dict:
        from plugins.pipeline.monitor import (
            MonitorBounds,
            adaptation_note,
            expected_tier_fractions,
            live_stats,
            read_window,
            retrain_reasons,
        )
        from runtime.settings import get_settings

        settings = get_settings()
        results, truths = read_window(settings)
        stats = live_stats(results, truths)
        expected = expected_tier_fractions(settings)
        bounds = MonitorBounds(min_accuracy=params["min_accuracy"], max_exit_drift=params["max_exit_drift"],
                               min_samples=params["min_samples"])
        reasons = retrain_reasons(stats, expected, bounds)
        note = adaptation_note(stats, expected, bounds)
        print(f"live: {stats.as_dict()}; expected answers per tier: {expected}; retrain because: {reasons}"
              + (f"; {note}" if note else ""))
        return {"stats": stats.as_dict(), "expected": expected, "reasons": reasons, "adaptation": note}

    @task.short_circuit
    def needs_retraining(report: dict) -> bool:
        return bool(report["reasons"])

    report = measure()
    needs_retraining(report) >> TriggerDagRunOperator(
        task_id="retrain_and_redeploy", trigger_dag_id=PIPELINE_DAG,
        conf="{{ params.retrain_conf | tojson }}", wait_for_completion=False)


monitor_dag = tierflow_monitor()
