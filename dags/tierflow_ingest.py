"""Ingest: drain APP.training into a versioned dataset (NPZ shards + manifest) in S3; emit the dataset Asset.

Offsets are committed only after the upload (plugins.ingest), so a crash and re-run neither duplicates
nor skips records. The Asset event carries the manifest URI; the pipeline DAG is scheduled on it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from plugins.pipeline.common import INGEST_DAG, dataset_asset

DATASET = dataset_asset()


@dag(dag_id=INGEST_DAG, schedule="@hourly", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, max_active_runs=1, tags=["tierflow"], default_args={"retries": 1}, doc_md=__doc__)
def tierflow_ingest():
    @task(outlets=[DATASET])
    def ingest(outlet_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from plugins.ingest import ingest as run_ingest

        result = run_ingest().as_dict()
        if not result["manifest_uri"]:  # nothing new: no dataset version, no Asset event, no retraining
            raise AirflowSkipException(f"no new training records (newest dataset {result['latest_manifest_uri']})")
        outlet_events[DATASET].extra = {"manifest_uri": result["manifest_uri"], "records": result["records"],
                                        "version": result["version"]}
        return result

    ingest()


ingest_dag = tierflow_ingest()
