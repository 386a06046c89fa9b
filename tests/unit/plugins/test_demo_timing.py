"""Registration-to-serving time from the task instances the Airflow REST API returns."""

from infra.local.demo import registration_to_serving


def test_gap_between_register_end_and_deploy_start():
    tis = [{"task_id": "register", "end_date": "2026-11-26T00:25:41.000000Z"},
           {"task_id": "deploy", "start_date": "2026-11-26T00:25:42.500000Z"}]
    assert registration_to_serving(tis) == 1.5
    assert registration_to_serving([{"task_id": "deploy", "start_date": None}]) is None
