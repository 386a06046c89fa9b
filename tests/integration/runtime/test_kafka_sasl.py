"""SASL against a real SASL server: the embedded broker started with --authentication runs the SCRAM exchange
and, having no stored credentials (see runtime.broker), refuses the login. A worker configured for SASL ends
its start at once with the broker's reason and the settings to check, and its password is in no log line.
A successful SASL login cannot be tested here: tansu 0.6.0 stores no SCRAM credentials in its memory (or S3)
storage and no other SASL-capable Kafka listener is available (README, "Operating it")."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from runtime.broker import EmbeddedBroker
from runtime.settings import KafkaSettings, Settings

from .conftest import refused_start, seconds_from_first_refusal_to_exit

pytestmark = pytest.mark.integration
PASSWORD = "sasl-" + uuid.uuid4().hex


def test_a_refused_sasl_login_fails_fast_and_never_logs_the_password(tiny_bundle, tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "broker.log", authentication=True) as broker:
        settings = Settings(_env_file=None, app=f"t{uuid.uuid4().hex[:10]}", home=tmp_path, kafka=KafkaSettings(
            bootstrap=broker.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
            sasl_username="tier-worker", sasl_password=SecretStr(PASSWORD)))
        error, log = refused_start(settings, tiny_bundle, tmp_path / "logs")
    assert "SASL" in error and "unknown-user" in error, log[-2000:]
    assert "TIERFLOW_KAFKA__SASL_*" in log
    # From the first refused login to the worker's exit: no waiting for the 15 s topic check.
    assert seconds_from_first_refusal_to_exit(log) < 5, log[-2000:]
    assert PASSWORD not in log and PASSWORD not in (tmp_path / "broker.log").read_text(errors="replace")
