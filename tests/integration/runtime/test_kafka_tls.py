"""Tier workers on a TLS-secured broker: stunnel4 terminates mutual TLS in front of the embedded broker (which
advertises the TLS address), with a CA, server and client certificates this test makes. A worker with the
right CA serves; one without it fails fast and says why; the client key's password is in no log line."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from runtime.broker import EmbeddedBroker
from runtime.client import DeviceClient
from runtime.launcher import free_port, port_open, stop_group
from runtime.local import LocalDeployment
from runtime.settings import KafkaSettings, Settings

from .conftest import refused_start, seconds_from_first_refusal_to_exit

pytestmark = pytest.mark.integration
KEY_PASSWORD = f"kp-{uuid.uuid4().hex}"  # the secret that must never be logged


def _pki(out: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate whose key is encrypted."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(name: str, key, issuer_name, issuer_key, *, ca: bool = False, san: bool = False):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
             .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(name: str, data: bytes) -> Path:
        (out / name).write_bytes(data)
        return out / name

    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tierflow test CA")])
    ca = cert("tierflow test CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    return {
        "ca": write("ca.pem", ca.public_bytes(pem)),
        "server_cert": write("server.pem", cert("127.0.0.1", server_key, ca_name, ca_key, san=True).public_bytes(pem)),
        "server_key": write("server.key", server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                   serialization.NoEncryption())),
        "client_cert": write("client.pem", cert("tier-worker", client_key, ca_name, ca_key).public_bytes(pem)),
        "client_key": write("client.key", client_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(KEY_PASSWORD.encode()))),
    }


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory) -> dict:
    """The broker behind stunnel4 (client certificates required); yields the TLS address and the PKI files."""
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    assert stunnel, "stunnel4 missing: `make install` installs Debian's stunnel4"
    d = tmp_path_factory.mktemp("tls")
    pki = _pki(d)
    tls_port = free_port()
    with EmbeddedBroker(log_path=d / "broker.log", advertised=f"127.0.0.1:{tls_port}") as broker:
        (d / "stunnel.conf").write_text(
            f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = {broker.bootstrap}\n"
            f"cert = {pki['server_cert']}\nkey = {pki['server_key']}\nCAfile = {pki['ca']}\nverify = 2\n")
        with open(d / "stunnel.log", "wb") as log:
            proc = subprocess.Popen([stunnel, str(d / "stunnel.conf")], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while not port_open("127.0.0.1", tls_port):
                assert proc.poll() is None and time.monotonic() < deadline, (d / "stunnel.log").read_text()
                time.sleep(0.05)
            yield {"bootstrap": f"127.0.0.1:{tls_port}", "plain": broker.bootstrap, **pki}
        finally:
            stop_group(proc.pid, proc, 5)


def tls_settings(tls_broker: dict, home: Path, *, ca: bool = True) -> Settings:
    return Settings(_env_file=None, app=f"t{uuid.uuid4().hex[:10]}", home=home, kafka=KafkaSettings(
        bootstrap=tls_broker["bootstrap"], security_protocol="SSL",
        ssl_ca_location=str(tls_broker["ca"]) if ca else None,
        ssl_certificate_location=str(tls_broker["client_cert"]), ssl_key_location=str(tls_broker["client_key"]),
        ssl_key_password=SecretStr(KEY_PASSWORD)))


def test_workers_serve_through_tls_and_never_log_the_key_password(tls_broker, tiny_bundle, tmp_path):
    from ml.datasets import load_fashion_mnist

    settings = tls_settings(tls_broker, tmp_path)
    x = load_fashion_mnist("test").x[:120]
    logs = tmp_path / "logs"
    with LocalDeployment(settings, tiny_bundle, logs), DeviceClient(settings) as client:
        for i in range(len(x)):
            client.send(f"tls-{i}", x[i])
        assert client.wait_all(120), f"{client.outstanding()} unanswered through TLS"
        assert {a.result["tier"] for a in client.answers.values()} == {"edge", "fog", "cloud"}
    text = "".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert "worker started" in text and KEY_PASSWORD not in text


def test_a_worker_without_the_ca_fails_fast_and_says_why(tls_broker, tiny_bundle, tmp_path):
    settings = tls_settings(tls_broker, tmp_path, ca=False)
    error, log = refused_start(settings, tiny_bundle, tmp_path / "logs")
    assert "certificate verify failed" in error and "TIERFLOW_KAFKA__SSL_CA_LOCATION" in log
    # From its first refused handshake to the worker's exit: far less than the topic check's 15 s timeout, the
    # process start and model load (busy machine: 30 s) aside.
    assert seconds_from_first_refusal_to_exit(log) < 5, log[-2000:]
    assert KEY_PASSWORD not in log
