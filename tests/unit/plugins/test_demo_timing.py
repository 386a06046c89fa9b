"""Registration-to-serving time from the task instances the Airflow REST API returns."""

from infra.local.demo import registration_to_serving


def test_gap_between_register_end_and_deploy_start():
    tis = [{"task_id": "register", "end_date": "2026-11-26T00:25:41.000000Z"},
           {"task_id": "deploy", "start_date": "2026-11-26T00:25:42.500000Z"}]
    assert registration_to_serving(tis) == 1.5
    assert registration_to_serving([{"task_id": "deploy", "start_date": None}]) is None


def test_demo_ingest_run_is_queued_ahead_of_any_hourly_run():
    from plugins.pipeline.airflow_rest import earlier_than_any_schedule

    # 2026-11-26T02:30:00Z: the latest hourly catch-up run has run_after 02:00; ours sorts first
    assert earlier_than_any_schedule(now=1795660200.0) == "2026-11-26T00:30:00+00:00"
