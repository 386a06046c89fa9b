"""A small client of Airflow 3's REST API (what the demo and the full-stack test use to run the pipeline).

Only the standard library: it runs anywhere the `tierflow` CLI runs. JWT from POST /auth/token.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

FINISHED = {"success", "failed"}


class AirflowApiError(RuntimeError):
    """The API refused a call or a run did not finish; the message carries the API's answer."""


def earlier_than_any_schedule(now: float | None = None) -> str:
    """A run_after (ISO 8601, UTC) two hours before now: ahead of any hourly run the scheduler queues."""
    t = (time.time() if now is None else now) - 2 * 3600
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def _detail(body: bytes) -> str:
    """The API's own words: the text of FastAPI's `detail` (e.g. Airflow's "Invalid input for param X: ..."
    with its line breaks), else the body as it came."""
    text = body.decode(errors="replace")
    try:
        detail = json.loads(text).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return (detail if isinstance(detail, str) else text)[:2000]


class AirflowClient:
    def __init__(self, api_url: str, username: str, password: str, timeout_s: float = 60.0):
        self.api_url = api_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._token: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> AirflowClient:
        pw = settings.airflow.password.get_secret_value() if settings.airflow.password else ""
        return cls(settings.airflow.api_url, settings.airflow.username, pw)

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(f"{self.api_url}{path}", method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - configured URL
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise AirflowApiError(f"{method} {path} -> HTTP {exc.code}: {_detail(exc.read())}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        if self._token is None:
            out = self._request("POST", "/auth/token", {"username": self.username, "password": self._password},
                                auth=False)
            self._token = out["access_token"]
        return self._token

    def wait_dag(self, dag_id: str, timeout_s: float = 120.0) -> dict:
        """Wait until the DAG processor has parsed `dag_id` (a fresh stack needs a few seconds)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._request("GET", f"/api/v2/dags/{dag_id}")
            except AirflowApiError as exc:
                if "HTTP 404" not in str(exc) or time.monotonic() > deadline:
                    raise AirflowApiError(f"DAG {dag_id} not available after {timeout_s:.0f}s: {exc}") from None
                time.sleep(2)

    def import_errors(self) -> list[dict]:
        return self._request("GET", "/api/v2/importErrors").get("import_errors", [])

    def paused(self, dag_id: str) -> bool:
        return bool(self._request("GET", f"/api/v2/dags/{dag_id}")["is_paused"])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict | None = None, *, run_after: str | None = None,
                run_id: str | None = None) -> str:
        """A manual run; `run_after` (ISO 8601) earlier than now puts it ahead of queued scheduled runs
        (the scheduler starts queued runs of a DAG in run_after order)."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_after is not None:
            body["run_after"] = run_after
        if run_id is not None:
            body["dag_run_id"] = run_id
        out = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return out["dag_run_id"]

    def trigger_first(self, dag_id: str, conf: dict | None = None) -> str:
        """A manual run that starts ahead of the runs the scheduler queues, also of the catch-up run for the last
        interval that unpausing a scheduled DAG queues at once: queued runs of a DAG start in run_after order,
        one at a time (max_active_runs=1). Trigger it before unpausing; the run id says when it was triggered
        (Airflow would name it after the earlier run_after)."""
        return self.trigger(dag_id, conf, run_after=earlier_than_any_schedule(),
                            run_id=f"manual__{time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime())}")

    def runs(self, dag_id: str, states: tuple[str, ...] = ()) -> list[dict]:
        """Runs of the DAG (the newest 100), only those in `states` if given (e.g. ("queued", "running"))."""
        query = "".join(f"&state={st}" for st in states)
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after{query}")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        q = urllib.parse.quote(run_id, safe="")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        q = urllib.parse.quote(run_id, safe="")
        out = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q}/taskInstances/{task_id}/xcomEntries/{key}"
                                   "?deserialize=true")
        value = out.get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        q = urllib.parse.quote(run_id, safe="")
        out = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q}/taskInstances/{task_id}/logs/{try_number}"
                                   "?full_content=true")
        content = out.get("content", "") if isinstance(out, dict) else out
        if isinstance(content, list):
            return "\n".join(c.get("event", str(c)) if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float,
                 on_progress: Callable[[dict[str, str]], None] | None = None) -> dict:
        """Poll until the run finishes; on_progress gets {task_id: state} on every change."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, str] = {}
        while True:
            try:
                run = self.run(dag_id, run_id)
                states = {t["task_id"]: t.get("state") or "none" for t in self.task_instances(dag_id, run_id)}
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                # A busy API server (2 cores, training next door) may miss a poll: ask again until the deadline.
                if time.monotonic() > deadline:
                    raise AirflowApiError(f"{dag_id} run {run_id}: API unreachable ({exc})") from None
                time.sleep(5)
                continue
            if states != last and on_progress:
                on_progress(states)
            last = states
            if run["state"] in FINISHED:
                return {**run, "task_states": states}
            if run["state"] == "queued" and self.paused(dag_id):
                raise AirflowApiError(f"{dag_id} is paused, so run {run_id} stays queued: unpause it (the toggle "
                                      f"in the Airflow UI, or `tierflow monitor --unpause` for the monitor)")
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f}s; "
                                      f"tasks: {states}")
            time.sleep(2)

    def failure_report(self, dag_id: str, run_id: str, max_chars: int = 4000) -> str:
        """Logs of the failed tasks of a run (tails), for an error message that says what went wrong."""
        parts = []
        for t in self.task_instances(dag_id, run_id):
            if t.get("state") in ("failed", "upstream_failed") and t.get("state") == "failed":
                try:
                    log = self.task_log(dag_id, run_id, t["task_id"], max(1, t.get("try_number") or 1))
                except AirflowApiError as exc:
                    log = str(exc)
                parts.append(f"--- {t['task_id']} ---\n{log[-max_chars:]}")
        return "\n".join(parts)
