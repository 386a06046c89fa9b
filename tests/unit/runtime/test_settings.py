from runtime.settings import Settings


def test_env_prefix_and_nesting(monkeypatch):
    monkeypatch.setenv("TIERFLOW_APP", "digits")
    monkeypatch.setenv("TIERFLOW_KAFKA__BOOTSTRAP", "k1:9092")
    monkeypatch.setenv("TIERFLOW_KAFKA__TIER_BOOTSTRAP", '{"fog": "fog-site:9092"}')
    s = Settings()
    assert s.topic("requests") == "digits.requests"
    assert s.link_topic(3, "edge", "fog") == "digits.v3.edge-fog"
    assert s.kafka.for_tier("fog") == "fog-site:9092"
    assert s.kafka.for_tier("edge") == "k1:9092"


def test_secrets_are_not_printed(monkeypatch):
    monkeypatch.setenv("TIERFLOW_S3__SECRET_ACCESS_KEY", "hunter2")
    s = Settings()
    assert "hunter2" not in repr(s)
    assert s.s3.secret_access_key.get_secret_value() == "hunter2"
