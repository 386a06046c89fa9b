"""Kafka TLS/SASL settings: complete or rejected, mapped to librdkafka's properties, secrets kept out of
error messages and out of the Kubernetes pod spec (secretKeyRef only)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from runtime.kafka import (
    KafkaSecurityError,
    admin_config,
    consumer_config,
    producer_config,
    security_properties,
)
from runtime.settings import KafkaSettings, Settings


def test_plaintext_by_default():
    assert security_properties(KafkaSettings()) == {"security.protocol": "plaintext"}


def test_sasl_ssl_maps_to_librdkafka_properties_for_every_client(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    k = KafkaSettings(security_protocol="SASL_SSL", ssl_ca_location=str(ca), sasl_mechanism="SCRAM-SHA-512",
                      sasl_username="tier", sasl_password=SecretStr("pw-1"), ssl_check_hostname=False)
    expected = {"security.protocol": "sasl_ssl", "ssl.ca.location": str(ca),
                "ssl.endpoint.identification.algorithm": "none", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "tier", "sasl.password": "pw-1"}
    assert security_properties(k) == expected
    s = Settings(_env_file=None, kafka=k)
    for conf in (producer_config(s), consumer_config(s, "g"), admin_config(s)):
        assert expected.items() <= conf.items()
    # Raw properties still win, for what the typed settings do not cover.
    raw = Settings(_env_file=None, kafka=k.model_copy(update={"extra": {"ssl.endpoint.identification.algorithm": "https"}}))
    assert admin_config(raw)["ssl.endpoint.identification.algorithm"] == "https"


def test_a_missing_ca_file_is_named_before_any_connection(tmp_path):
    k = KafkaSettings(security_protocol="SSL", ssl_ca_location=str(tmp_path / "nope.pem"))
    with pytest.raises(KafkaSecurityError, match=r"ssl.ca.location .*nope.pem is not a readable file \(TIERFLOW_KAFKA__SSL_CA_LOCATION\)"):
        security_properties(k)


@pytest.mark.parametrize("fields, message", [
    ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}, "needs sasl_mechanism"),
    ({"sasl_username": "u", "sasl_password": "pw-2"}, "sasl_\\* settings are unused"),
    ({"ssl_key_password": "pw-2"}, "ssl_\\* settings are unused"),
    ({"security_protocol": "SSL", "ssl_certificate_location": "/c.pem"}, "needs its key"),
    ({"security_protocol": "TLS"}, "security_protocol"),
])
def test_half_a_security_configuration_is_rejected_without_echoing_secrets(fields, message):
    with pytest.raises(ValidationError, match=message) as failed:
        KafkaSettings(**fields)
    assert "pw-2" not in str(failed.value)


def test_secrets_from_the_environment_never_appear_in_a_validation_error(monkeypatch):
    monkeypatch.setenv("TIERFLOW_KAFKA__SASL_PASSWORD", "pw-3")  # with PLAINTEXT: rejected
    with pytest.raises(ValidationError) as failed:
        Settings(_env_file=None)
    assert "pw-3" not in str(failed.value) and "sasl_" in str(failed.value)


def test_kubernetes_tier_pods_read_kafka_secrets_by_secret_key_ref():
    from plugins.rollout.base import Release, TierWorkerSpec
    from plugins.rollout.kubernetes import worker_env

    settings = Settings(_env_file=None, kafka=KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="tier", sasl_password=SecretStr("pw-4")))
    spec = TierWorkerSpec("edge", "models:/fmnist-edge/1")
    env = {e.name: e for e in worker_env(settings, Release("fmnist", "1", (spec,)), spec)}
    password = env["TIERFLOW_KAFKA__SASL_PASSWORD"]
    assert password.value is None and password.value_from.secret_key_ref.key == "kafka-sasl-password"
    assert env["TIERFLOW_KAFKA__SASL_USERNAME"].value == "tier"
    assert env["TIERFLOW_KAFKA__SECURITY_PROTOCOL"].value == "SASL_SSL"
    assert all(e.value != "pw-4" for e in env.values())
