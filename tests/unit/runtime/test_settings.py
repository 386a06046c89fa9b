import pytest

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


def test_adaptive_exits_are_off_by_default_and_set_by_env(monkeypatch):
    assert not Settings().worker.adaptive.enabled
    monkeypatch.setenv("TIERFLOW_WORKER__ADAPTIVE__OBJECTIVE_MS", "250")
    monkeypatch.setenv("TIERFLOW_WORKER__ADAPTIVE__FLOOR_POINTS", "1.5")
    a = Settings().worker.adaptive
    assert a.enabled and a.objective_ms == 250 and a.floor_points == 1.5


def test_wrong_adaptive_settings_name_the_variable_and_what_to_give(monkeypatch):
    import pytest
    from pydantic import ValidationError

    monkeypatch.setenv("TIERFLOW_WORKER__ADAPTIVE__OBJECTIVE_MS", "-5")
    monkeypatch.setenv("TIERFLOW_WORKER__ADAPTIVE__QUANTILE", "1.5")
    monkeypatch.setenv("TIERFLOW_WORKER__ADAPTIVE__INTERVAL_S", "20")
    with pytest.raises(ValidationError) as err:
        Settings()
    text = str(err.value)
    assert "TIERFLOW_WORKER__ADAPTIVE__OBJECTIVE_MS=-5: give the p95 objective in ms" in text
    assert "QUANTILE=1.5: give the latency quantile as a fraction" in text
    assert "INTERVAL_S=20 is longer than TIERFLOW_WORKER__ADAPTIVE__WINDOW_S=10" in text


def test_settings_refuse_more_tier_replicas_than_partitions():
    from runtime.settings import AutoscalingSettings, KafkaSettings, KubernetesSettings

    with pytest.raises(ValueError, match="MAX_REPLICAS cloud=7: give 2 .*PARTITIONS=6"):
        Settings(_env_file=None, kafka=KafkaSettings(partitions=6), k8s=KubernetesSettings(
            replicas={"cloud": 2}, autoscaling=AutoscalingSettings(max_replicas={"cloud": 7})))
    with pytest.raises(ValueError, match="REPLICAS edge=4: give 1 to TIERFLOW_KAFKA__PARTITIONS=3"):
        Settings(_env_file=None, kafka=KafkaSettings(partitions=3), k8s=KubernetesSettings(replicas={"edge": 4}))
    ks = Settings(_env_file=None, kafka=KafkaSettings(partitions=6), k8s=KubernetesSettings(replicas={"cloud": 2})).k8s
    assert (ks.replicas_for("edge"), ks.replicas_for("cloud"), ks.max_replicas_for("cloud", 6)) == (1, 2, 6)
