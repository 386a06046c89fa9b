"""settings_env() must reproduce a Settings object in a child process's environment."""

from __future__ import annotations

from pydantic import SecretStr

from runtime.settings import KafkaSettings, S3Settings, Settings, settings_env


def test_settings_env_round_trips_nested_values_and_secrets(monkeypatch, tmp_path):
    original = Settings(app="roundtrip", home=tmp_path,
                        kafka=KafkaSettings(bootstrap="127.0.0.1:1234", extra={"client.id": "x"}),
                        s3=S3Settings(endpoint_url="http://127.0.0.1:9", access_key_id="AK",
                                      secret_access_key=SecretStr("s3cret")))
    env = settings_env(original)
    assert env["TIERFLOW_S3__SECRET_ACCESS_KEY"] == "s3cret"
    for key in list(__import__("os").environ):
        if key.startswith("TIERFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    child = Settings(_env_file=None)
    assert child.model_dump() == original.model_dump()
    assert child.s3.secret_access_key.get_secret_value() == "s3cret"
