"""The local stack's plans (pure): what starts, with which ports and settings, in which order."""

from __future__ import annotations

import pytest

from infra.local.process import StackError
from infra.local.services import WEED_PORTS, StackPaths, plan_airflow, plan_mlflow, plan_s3
from infra.local.stack import with_credentials, with_requirements, write_env_file
from runtime.settings import AirflowSettings, MlflowSettings, S3Settings, Settings


def _settings(tmp_path) -> Settings:
    return with_credentials(Settings(
        _env_file=None, home=tmp_path, s3=S3Settings(endpoint_url="http://127.0.0.1:1111", bucket="bkt"),
        mlflow=MlflowSettings(tracking_uri="http://127.0.0.1:2222"),
        airflow=AirflowSettings(api_url="http://127.0.0.1:3333")))


def test_requirements_come_first_and_unknown_services_fail():
    assert with_requirements(["mlflow"]) == ["s3", "mlflow"]
    assert with_requirements(["airflow", "broker"]) == ["broker", "airflow"]
    with pytest.raises(StackError, match="unknown service 'kafka'"):
        with_requirements(["kafka"])


def test_generated_credentials_are_random_and_kept(tmp_path):
    a, b = _settings(tmp_path), _settings(tmp_path)
    assert a.s3.secret_access_key.get_secret_value() != b.s3.secret_access_key.get_secret_value()
    assert with_credentials(a).s3.access_key_id == a.s3.access_key_id  # existing values are kept
    write_env_file(a, tmp_path / "stack.env")
    loaded = Settings(_env_file=tmp_path / "stack.env")
    assert loaded.airflow.password == a.airflow.password and loaded.s3.endpoint_url == "http://127.0.0.1:1111"


def test_weed_opens_only_the_ports_it_is_given(tmp_path):
    s = _settings(tmp_path)
    ports = {name: 10000 + i for i, name in enumerate(WEED_PORTS)}
    plan = plan_s3(s, StackPaths(tmp_path), ports)
    args = " ".join(plan.argv)
    assert "-s3.port=1111" in args and "-ip.bind=127.0.0.1" in args
    for name, flag in WEED_PORTS.items():
        assert f"{flag}={ports[name]}" in args
    # Listeners that would collide with tier workers (lance: 9101) or are not needed are off.
    assert "-s3.port.lance=0" in args and "-s3.port.iceberg=0" in args and "-webdav=false" in args
    assert plan.env["AWS_SECRET_ACCESS_KEY"] == s.s3.secret_access_key.get_secret_value()


def test_mlflow_and_airflow_plans(tmp_path):
    s = _settings(tmp_path)
    mlflow = plan_mlflow(s, StackPaths(tmp_path), {})
    assert "s3://bkt/mlflow" in mlflow.argv and mlflow.env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:1111"
    airflow = plan_airflow(s, StackPaths(tmp_path), {})
    env = airflow.env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor" and env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__PORT"] == "3333" and airflow.ports == {"main": 3333}  # no log server ports
    assert not any(k.endswith("_LOG_SERVER_PORT") for k in env)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    assert env["TIERFLOW_MLFLOW__TRACKING_URI"] == "http://127.0.0.1:2222"  # tasks find the stack
    (passwords,) = airflow.files.values()
    assert s.airflow.password.get_secret_value() in passwords
    with pytest.raises(StackError, match="password missing"):
        plan_airflow(s.model_copy(update={"airflow": AirflowSettings(password=None)}), StackPaths(tmp_path), {})
    assert all(s.airflow.password.get_secret_value() not in a for a in airflow.argv)
