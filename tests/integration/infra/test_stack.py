"""The local stack starts real services on free loopback ports and stops them without leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra.local.process import StackError, group_alive, port_open
from infra.local.stack import LocalStack, load_settings
from plugins.hooks.s3 import DatasetStore
from runtime.settings import S3Settings, Settings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def test_s3_round_trip_and_wrong_keys_rejected(s3_stack: Settings):
    from botocore.exceptions import ClientError

    store = DatasetStore.from_settings(s3_stack)
    store.put_bytes("stack-test/a.bin", b"\x00\x01payload", metadata={"records": "3"})
    assert store.get_bytes("stack-test/a.bin") == b"\x00\x01payload"
    assert store.head("stack-test/a.bin") == {"records": "3"}
    assert store.head("stack-test/missing") is None
    bad = s3_stack.model_copy(update={"s3": s3_stack.s3.model_copy(update={"secret_access_key": SecretStr("wrong")})})
    with pytest.raises(ClientError):
        DatasetStore.from_settings(bad).get_bytes("stack-test/a.bin")


def test_s3_only_up_down_leaves_nothing_and_reports_port_in_use(tmp_path: Path, s3_stack: Settings):
    from infra.local.process import free_port

    settings = Settings(_env_file=None, home=tmp_path,
                        s3=S3Settings(endpoint_url=f"http://127.0.0.1:{free_port()}", bucket="bkt1"))
    stack = LocalStack(settings)
    events: list[tuple[str, str]] = []
    up = stack.up(["s3"], on_event=lambda s, m: events.append((s, m)))
    try:
        assert up.s3.access_key_id and up.s3.secret_access_key is not None  # generated
        env_file = tmp_path / "stack.env"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        assert f"TIERFLOW_S3__ACCESS_KEY_ID={up.s3.access_key_id}" in env_file.read_text()
        assert load_settings(tmp_path).s3.secret_access_key == up.s3.secret_access_key
        assert [e for e in events if e[0] == "s3"][-1][1].startswith("healthy")
        state = stack.states()["s3"]
        assert len(state.ports) == 10 and all(port_open("127.0.0.1", p) for p in state.ports.values())
        status = stack.status()
        assert status["s3"]["healthy"] and not status["mlflow"]["running"]
        stack.up(["s3"], on_event=lambda s, m: events.append((s, m)))  # idempotent
        assert events[-1] == ("s3", "already running") and stack.states()["s3"].pid == state.pid
        # A second stack on the same S3 port fails with a message naming the setting to change.
        other = LocalStack(settings.model_copy(update={"home": tmp_path / "other"}))
        with pytest.raises(StackError, match="TIERFLOW_S3__ENDPOINT_URL"):
            other.up(["s3"])
    finally:
        assert stack.down() == ["s3"]
    assert not group_alive(state.pid)
    assert not any(port_open("127.0.0.1", p) for p in state.ports.values())
    assert stack.states() == {}


def test_cli_up_status_down_broker(tmp_path: Path):
    """The real `tierflow stack` command: the broker outlives `up` and is gone after `down`."""
    from infra.local.process import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(TIERFLOW_HOME=str(tmp_path), TIERFLOW_KAFKA__BOOTSTRAP=f"127.0.0.1:{port}")
    cli = [sys.executable, "-m", "tierflow_cli", "stack"]
    up = subprocess.run([*cli, "up", "--only", "broker"], env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((tmp_path / "stack" / "state.json").read_text())
        pid = state["broker"]["pid"]
        assert port_open("127.0.0.1", port) and group_alive(pid)
        status = subprocess.run([*cli, "status"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "healthy" in status.stdout
    finally:
        down = subprocess.run([*cli, "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "broker" in down.stdout
    assert not port_open("127.0.0.1", port) and not group_alive(pid)


def test_airflow_standalone_login_and_repo_dags_folder(airflow_stack: Settings, local_stack):
    url = airflow_stack.airflow.api_url
    body = json.dumps({"username": airflow_stack.airflow.username,
                       "password": airflow_stack.airflow.password.get_secret_value()}).encode()
    req = urllib.request.Request(f"{url}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        token = json.loads(resp.read())["access_token"]
    req = urllib.request.Request(f"{url}/api/v2/dags?limit=1",
                                 headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert "total_entries" in json.loads(resp.read())
    bad = json.dumps({"username": "admin", "password": "not-the-password"}).encode()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(f"{url}/auth/token", data=bad,
                                                      headers={"Content-Type": "application/json"}), timeout=10)
    # The generated credentials reach task processes through the environment of the scheduler.
    pid = local_stack.states()["airflow"].pid
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"TIERFLOW_MLFLOW__TRACKING_URI={airflow_stack.mlflow.tracking_uri}".encode() in environ
    assert f"AIRFLOW__CORE__DAGS_FOLDER={REPO / 'dags'}".encode() in environ


def _listening(pids: list[int]) -> set[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket the processes listen on."""
    import psutil

    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            continue
        out |= {(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def test_every_service_of_the_stack_listens_on_loopback_only(airflow_stack: Settings, local_stack):
    """Broker, S3 (every weed listener), MLflow and Airflow (API server, scheduler, triggerer: no serve-logs
    on 0.0.0.0/[::]) - listed from the sockets the stack's processes actually hold."""
    from runtime.launcher import session_members

    states = local_stack.states()
    assert {"s3", "mlflow", "airflow"} <= set(states)
    sockets = set()
    for st in states.values():
        sockets |= _listening(sorted({st.pid, *session_members(st.pid)}))
    assert sockets, "found no listening socket"
    assert {addr for _pid, addr, _port in sockets} <= {"127.0.0.1", "::1"}, sorted(sockets)
    api_port = int(airflow_stack.airflow.api_url.rsplit(":", 1)[1])
    assert api_port in {port for _pid, _addr, port in sockets}


def test_stack_down_stops_the_tier_workers_too_and_says_what_it_stopped(tmp_path: Path, tiny_bundle):
    """`tierflow stack down` after a rollout-style deployment: no supervisor, worker or listening port is left."""
    from infra.local.process import free_port
    from plugins.rollout.base import Release, TierWorkerSpec
    from plugins.rollout.local import LocalProcessBackend
    from plugins.rollout.procedure import bring_up, plan_rollout
    from runtime.launcher import pid_alive
    from runtime.settings import KafkaSettings, settings_env

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(TIERFLOW_HOME=str(tmp_path), TIERFLOW_KAFKA__BOOTSTRAP=f"127.0.0.1:{port}",
               PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "tierflow_cli", "stack"]
    up = subprocess.run([*cli, "up", "--only", "broker"], env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    settings = Settings(_env_file=None, app="downtest", home=tmp_path,
                        kafka=KafkaSettings(bootstrap=f"127.0.0.1:{port}"))
    backend = LocalProcessBackend(tmp_path, env={**settings_env(settings), "PYTHONPATH": str(REPO)})
    release = Release("downtest", "1", tuple(TierWorkerSpec(t, str(tiny_bundle), http_port=0)
                                             for t in ("edge", "fog", "cloud")))
    try:
        bring_up(backend, release, plan_rollout(release, {}), log=lambda _m: None)
        workers = backend.workers("downtest")
        assert len(workers) == 3
        pids = [p for w in workers for p in (w["supervisor_pid"], w["worker_pid"])]
        assert all(port_open("127.0.0.1", w["port"]) for w in workers)
    finally:
        down = subprocess.run([*cli, "down"], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    out = down.stdout + down.stderr
    try:
        assert down.returncode == 0, out
        assert "stopped tier workers: downtest v1 edge, downtest v1 fog, downtest v1 cloud" in " ".join(out.split())
        assert "stopped services: broker" in out
        assert not any(pid_alive(p) for p in pids)
        assert not any(port_open("127.0.0.1", w["port"]) for w in workers) and not port_open("127.0.0.1", port)
        assert backend.running("downtest") == {}
    finally:
        backend.stop_all("downtest", timeout_s=10)


def test_trigger_with_the_form_defaults_works_and_wrong_values_are_refused_before_a_run(airflow_stack: Settings):
    """Against the stack's Airflow: the pipeline's Params as Airflow serves them to the trigger form accept their
    own defaults, no field with an empty default is required, a run with the defaults is created (the DAG
    is paused, so it only queues), and a wrong tier map or dataset is refused with HTTP 400 naming it."""
    import jsonschema

    from plugins.pipeline.airflow_rest import AirflowApiError, AirflowClient

    client = AirflowClient.from_settings(airflow_stack)
    client.wait_dag("tierflow_pipeline", timeout_s=180)
    client.set_paused("tierflow_pipeline", True)  # the stack is shared: an earlier test may have unpaused it
    params = client._request("GET", "/api/v2/dags/tierflow_pipeline/details")["params"]
    assert set(params) >= {"dataset", "tier_map", "epochs"}
    for name, p in params.items():
        jsonschema.validate(p["value"], p["schema"])
        if p["value"] in (None, ""):
            assert "null" in p["schema"]["type"], name  # else the form marks it required
    run_id = client.trigger("tierflow_pipeline", {})
    assert client.run("tierflow_pipeline", run_id)["state"] == "queued"
    for conf, name in (({"tier_map": "nonsense"}, "tier_map"), ({"dataset": "http://x"}, "dataset")):
        with pytest.raises(AirflowApiError, match=rf"HTTP 400.*{name}"):
            client.trigger("tierflow_pipeline", conf)
    client._request("DELETE", f"/api/v2/dags/tierflow_pipeline/dagRuns/{run_id}")


# A wrong value, and what the first line of Airflow's answer must show besides the parameter's name.
WRONG_VALUES = [
    ({"tier_map": "nonsense"}, "tier_map", "(edge|fog|cloud) *= *([0-9]+|final|exit_[0-9]+)"),
    ({"tier_map": "edge=0 fog=1"}, "tier_map", "([;,]|$)"),
    ({"epochs": 0}, "epochs", "less than the minimum of 1"),
    ({"epochs": 1000}, "epochs", "greater than the maximum of 200"),
    ({"epochs": "five"}, "epochs", "is not of type 'integer'"),
    ({"objective": "fast"}, "objective", "is not one of ['early', 'cost']"),
    ({"backend": "k8s"}, "backend", "is not one of ['local', 'kubernetes']"),
    ({"confidence": "margin"}, "confidence", "is not one of ['max_softmax', 'entropy']"),
    ({"canary_accuracy_drop": 2}, "canary_accuracy_drop", "greater than the maximum of 1"),
    ({"architecture": "resnet"}, "architecture", "(compact|b_alexnet|vgg|"),
    ({"dataset": "http://x"}, "dataset", "fashion-mnist|s3://"),
]


def test_a_wrong_value_over_rest_is_refused_with_a_first_line_naming_it_and_what_is_allowed(airflow_stack: Settings):
    """POST /api/v2/dags/tierflow_pipeline/dagRuns with a wrong conf: HTTP 400, no run, and the first line of
    Airflow's `detail` names the parameter, the value and what is allowed (the enum, the range, the pattern).
    The lines after it (jsonschema's "Failed validating ... in schema", the instance) are Airflow's own."""
    from plugins.pipeline.airflow_rest import AirflowApiError, AirflowClient

    client = AirflowClient.from_settings(airflow_stack)
    client.wait_dag("tierflow_pipeline", timeout_s=180)
    client.set_paused("tierflow_pipeline", True)
    before = client.runs("tierflow_pipeline")
    for conf, name, allowed in WRONG_VALUES:
        with pytest.raises(AirflowApiError) as err:
            client.trigger("tierflow_pipeline", conf)
        prefix = "POST /api/v2/dags/tierflow_pipeline/dagRuns -> HTTP 400: "
        first = str(err.value).splitlines()[0]
        assert first.startswith(f"{prefix}Invalid input for param {name}: {conf[name]!r} "), first
        assert allowed in first, first
    assert client.runs("tierflow_pipeline") == before


def test_monitor_command_says_the_dag_is_paused_instead_of_queueing_a_run(airflow_stack: Settings):
    from plugins.pipeline.airflow_rest import AirflowClient

    client = AirflowClient.from_settings(airflow_stack)
    client.wait_dag("tierflow_monitor", timeout_s=180)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(TIERFLOW_HOME=str(airflow_stack.home), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "tierflow_cli", "monitor"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert "tierflow_monitor is paused" in out.stderr and "--unpause" in out.stderr
    assert client.runs("tierflow_monitor") == []


def test_monitor_unpause_measures_the_new_answers_and_leaves_the_canary_out(airflow_stack: Settings):
    """`tierflow monitor --unpause` on the answers of a release (60 live with feedback, 10 canary): its own run
    measures them, not the catch-up run that unpausing queues; the canary is left out, counted once, and not
    kept waiting for feedback it never gets (a second run finds nothing new)."""

    from confluent_kafka import Producer

    from ml.contract import CANARY_ID_PREFIX
    from plugins.pipeline.airflow_rest import AirflowClient
    from plugins.pipeline.monitor import read_window
    from runtime.client import publish_feedback
    from runtime.kafka import ensure_topics, producer_config

    client = AirflowClient.from_settings(airflow_stack)
    client.wait_dag("tierflow_monitor", timeout_s=180)
    client.set_paused("tierflow_monitor", True)
    # A monitor with nothing new since its last run and nothing waiting (the broker and stack home are shared
    # with the other tests of the session): read what is there as the monitor would, forget what waits.
    read_window(airflow_stack)
    (airflow_stack.home / "monitor" / f"{airflow_stack.app}.json").unlink()
    results = airflow_stack.topic("results")
    ensure_topics(airflow_stack, [results])
    producer = Producer(producer_config(airflow_stack))
    answers = [(f"live-{i}", i % 10) for i in range(60)] + [(f"{CANARY_ID_PREFIX}9-ab12-{i}", 0) for i in range(10)]
    for rid, label in answers:
        producer.produce(results, key=rid, value=json.dumps(
            {"request_id": rid, "label": label, "tier": "edge", "model_version": "9"}).encode())
    assert producer.flush(30) == 0
    publish_feedback(airflow_stack, {f"live-{i}": i % 10 for i in range(60)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERFLOW_")}
    env.update(TIERFLOW_HOME=str(airflow_stack.home), PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "tierflow_cli", "monitor"]
    try:
        first = subprocess.run([*cli, "--unpause"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "live: 60 answers, 60 with feedback, accuracy 1.000" in first.stdout, first.stdout
        assert "10 canary answers left out" in first.stdout and "healthy: no retraining" in first.stdout
        again = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "live: 0 answers, 0 with feedback" in again.stdout and "0 canary answers left out" in again.stdout
    finally:
        client.set_paused("tierflow_monitor", True)


def test_the_first_dag_run_after_stack_up_succeeds(airflow_stack: Settings):
    """`stack up` returned only once every Airflow component heartbeats and the DAGs are parsed: the first run
    that executes on this stack (an ingest of an empty topic: success, its task skipped) needs no retry."""
    from plugins.pipeline.airflow_rest import AirflowClient

    client = AirflowClient.from_settings(airflow_stack)
    health = client._request("GET", "/api/v2/monitor/health", auth=False)
    assert all(health[c]["status"] == "healthy" for c in ("metadatabase", "scheduler", "triggerer", "dag_processor"))
    assert client.import_errors() == []
    run_id = client.trigger("tierflow_ingest")
    client.set_paused("tierflow_ingest", False)
    try:
        run = client.wait_run("tierflow_ingest", run_id, 300)
    finally:
        client.set_paused("tierflow_ingest", True)
    assert run["state"] == "success", client.failure_report("tierflow_ingest", run_id)
    tis = client.task_instances("tierflow_ingest", run_id)
    assert [(t["task_id"], t["try_number"]) for t in tis] == [("ingest", 1)]
