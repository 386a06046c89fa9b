"""The pipeline's trigger form in Airflow's own UI (headless Debian Chromium), as a user meets it: opened from the
DAG page, untouched, its Trigger button enabled, no field flagged, and a click starts a run whose parameters
(exactly what the form sent) pass `validate_params` in Airflow; the run is then stopped. Screenshots: airflow-trigger-form*.png in
$TIERFLOW_SCREENSHOTS (docs/screenshots for the README) or the test's temp dir."""

from __future__ import annotations

import os
import shutil
import time

import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium")]

DIALOG_TRIGGER = "[...document.querySelectorAll('[role=dialog] button')].find(b => b.textContent.trim() == 'Trigger')"


def test_trigger_form_with_its_defaults_starts_a_valid_run(airflow_stack, tmp_path):
    from infra.local.browser import airflow_cookie, chromium_page
    from plugins.pipeline.airflow_rest import AirflowClient
    from plugins.pipeline.params import validate

    client = AirflowClient.from_settings(airflow_stack)
    client.wait_dag("tierflow_pipeline", timeout_s=180)
    client.set_paused("tierflow_pipeline", True)  # as on a fresh stack (an earlier test may have unpaused it)
    before = {r["dag_run_id"] for r in client.runs("tierflow_pipeline")}
    url = airflow_stack.airflow.api_url
    shots = os.environ.get("TIERFLOW_SCREENSHOTS") or str(tmp_path)
    with chromium_page() as page:
        page.open(f"{url}/dags/tierflow_pipeline", [airflow_cookie(url, client.token())], height=1400)
        page.wait_for("document.querySelector('button[aria-label=\"Trigger Dag\"]')", 90, "the Trigger button")
        page.evaluate("document.querySelector('button[aria-label=\"Trigger Dag\"]').click()")
        page.wait_for(DIALOG_TRIGGER, 60, "the trigger form")
        time.sleep(2)  # the form validates its fields once rendered
        page.screenshot(f"{shots}/airflow-trigger-form.png")
        assert page.evaluate(f"{DIALOG_TRIGGER}.disabled") is False
        assert page.evaluate("document.querySelectorAll('[role=dialog] [aria-invalid=true], "
                             "[role=dialog] [data-invalid]').length") == 0
        assert page.evaluate("document.querySelector('[role=dialog] input[type=checkbox]').checked") is True
        page.evaluate(f"{DIALOG_TRIGGER}.click()")  # as it is: the DAG is unpaused on trigger
        deadline = time.monotonic() + 60
        while not (new := [r for r in client.runs("tierflow_pipeline") if r["dag_run_id"] not in before]):
            assert time.monotonic() < deadline, "no run started from the form"
            time.sleep(1)
        (run,) = new
        run_id = run["dag_run_id"]
        try:
            # the run starts, and Airflow's own validate_params accepts what the untouched form sent
            deadline = time.monotonic() + 300
            while (states := {t["task_id"]: t.get("state") for t in client.task_instances("tierflow_pipeline", run_id)}
                   ).get("validate_params") != "success":
                assert states.get("validate_params") not in ("failed", "upstream_failed"), \
                    client.failure_report("tierflow_pipeline", run_id)
                assert time.monotonic() < deadline, f"run {run_id} did not get past validate_params: {states}"
                time.sleep(2)
            page.screenshot(f"{shots}/airflow-trigger-form-run.png")
        finally:  # no training on the shared machine: stop the run here, pause the DAG again
            client._request("PATCH", f"/api/v2/dags/tierflow_pipeline/dagRuns/{run_id}", {"state": "failed"})
            client.set_paused("tierflow_pipeline", True)
    validate(run["conf"])
    assert run["conf"]["dataset"] in (None, "") and run["conf"]["tier_map"] == "edge=0;fog=1;cloud=2"
    client._request("DELETE", f"/api/v2/dags/tierflow_pipeline/dagRuns/{run_id}")
