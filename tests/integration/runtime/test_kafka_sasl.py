"""SASL against a real SASL server: the embedded broker started with --authentication runs the SCRAM exchange
and, having no stored credentials (see runtime.broker), refuses the login. A worker configured for SASL ends
its start at once with the broker's reason and the settings to check, and its password is in no log line.
A successful SASL login cannot be tested here: tansu 0.6.0 stores no SCRAM credentials in its memory (or S3)
storage and no other SASL-capable Kafka listener is available (README, "Operating it")."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from pydantic import SecretStr

from runtime.broker import EmbeddedBroker
from runtime.local import WorkerProcess, WorkerProcessError
from runtime.settings import KafkaSettings, Settings

pytestmark = pytest.mark.integration
PASSWORD = "sasl-" + uuid.uuid4().hex


def test_a_refused_sasl_login_fails_fast_and_never_logs_the_password(tiny_bundle, tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "broker.log", authentication=True) as broker:
        settings = Settings(_env_file=None, app=f"t{uuid.uuid4().hex[:10]}", home=tmp_path, kafka=KafkaSettings(
            bootstrap=broker.bootstrap, security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
            sasl_username="tier-worker", sasl_password=SecretStr(PASSWORD)))
        worker = WorkerProcess(settings, "cloud", str(tiny_bundle), tmp_path / "logs")
        worker.start()
        try:
            with pytest.raises(WorkerProcessError) as failed:
                worker.wait_ready(120)
        finally:
            worker.stop(5)
    log = worker.log_path.read_text(errors="replace")
    assert "SASL" in str(failed.value) and "unknown-user" in str(failed.value), log[-2000:]
    assert "TIERFLOW_KAFKA__SASL_*" in log
    # From the first refused login (librdkafka's "%3|<epoch s>|FAIL|...") to the worker's exit: no waiting for the
    # 15 s topic check.
    first_refusal = float(re.search(r"^%3\|([0-9.]+)\|FAIL\|", log, re.M).group(1))
    stopped = datetime.datetime.fromisoformat(re.search(r'"ts": "([^"]+)".*"msg": "worker stopped"', log).group(1))
    assert stopped.timestamp() - first_refusal < 5, log[-2000:]
    assert PASSWORD not in log and PASSWORD not in (tmp_path / "broker.log").read_text(errors="replace")
