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
