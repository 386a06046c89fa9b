"""Three tier worker processes on a real broker: decisions equal the offline cascade, bad input goes to
the dead-letter topic with a reason, nothing else is lost, and the workers report health and metrics."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import numpy as np
import pytest

from runtime import codec
from runtime.client import DeviceClient
from runtime.kafka import producer_config

from .conftest import make_settings, offline_cascade, read_topic

pytestmark = pytest.mark.integration

MAX_RECORD_BYTES = 100_000


@pytest.fixture(scope="module")
def deployed(kafka_bootstrap, deployment_factory):
    settings = make_settings(kafka_bootstrap, max_record_bytes=MAX_RECORD_BYTES, default_deadline_ms=30_000)
    return settings, deployment_factory(settings)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310
        return resp.read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_request_answered_once_as_the_offline_cascade_decides(deployed, tiny_bundle, fmnist_test):
    settings, _ = deployed
    x = fmnist_test[0][:300]
    expected_tier, expected_label = offline_cascade(tiny_bundle, x)
    assert set(expected_tier) == {"edge", "fog", "cloud"}  # the test exercises every tier
    ctypes = [codec.TENSOR, codec.PNG, codec.JSON]
    with DeviceClient(settings) as client:
        for i in range(len(x)):
            client.send(f"r{i}", x[i], content_type=ctypes[i % 3])
        assert client.wait_all(120), f"{client.outstanding()} requests unanswered"
        answers = {rid: a.result for rid, a in client.answers.items()}
    got = [(answers[f"r{i}"]["tier"], answers[f"r{i}"]["label"]) for i in range(len(x))]
    want = list(zip(expected_tier, expected_label.tolist(), strict=True))
    mismatches = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
    assert not mismatches, f"{len(mismatches)} decisions differ from the offline cascade, e.g. {mismatches[:5]}"
    assert not any(a["degraded"] for a in answers.values())
    # Exactly one record per request on the results topic (not just after client de-duplication).
    results = read_topic(settings, settings.topic("results"), expect=len(x))
    counts = Counter(m.key().decode() for m in results)
    assert counts == Counter({f"r{i}": 1 for i in range(len(x))})
    r0 = json.loads(results[0].value())
    assert set(codec.RESULT_FIELDS) <= set(r0) and r0["model_version"] == "local"


def _malformed_corpus(settings, version: str) -> list[tuple[str, str, bytes | None, list, str]]:
    """(topic, key, value, headers, expected reason substring) of records no worker can serve."""
    req, fog_in, cloud_in = (settings.topic("requests"), settings.link_topic(version, "edge", "fog"),
                             settings.link_topic(version, "fog", "cloud"))
    good = codec.encode_tensor(np.zeros((28, 28, 1), np.uint8))
    act = codec.encode_tensor(np.zeros((14, 14, 16), np.float32))

    def h(rid: str | None, **kw) -> list:
        return codec.make_headers(rid, **kw) if rid else []

    return [
        (req, "bad-garbage", b"\x00garbage bytes\xff" * 3, h("bad-garbage"), "not a tensor record"),
        (req, "bad-truncated", good[:-5], h("bad-truncated"), "needs 784 data bytes"),
        (req, "bad-shape", codec.encode_tensor(np.zeros((27, 28), np.uint8)), h("bad-shape"), "does not fit"),
        (req, "bad-dtype", codec.encode_tensor(np.zeros((28, 28), bool)), h("bad-dtype"), "cannot feed"),
        (req, "bad-nan", codec.encode_tensor(np.full((28, 28), np.nan, np.float32)), h("bad-nan"), "NaN"),
        (req, "bad-oversized", b"\x00" * (MAX_RECORD_BYTES + 1), h("bad-oversized"), "exceeds worker.max_record"),
        (req, "bad-no-id", good, [], "missing header tf-request-id"),
        (req, "bad-utf8", good, [("tf-request-id", b"\xff\xfe")], "not UTF-8"),
        (req, "bad-origin", good, h("bad-origin") + [("tf-origin-ts", b"yesterday")], "must be an integer"),
        (req, "bad-png", b"\x89PNG\r\n\x1a\n...", h("bad-png", content_type=codec.PNG), "not a readable image"),
        (req, "bad-json", b"[[1, 2", h("bad-json", content_type=codec.JSON), "not valid JSON"),
        (req, "bad-ctype", good, h("bad-ctype", content_type="text/csv"), "unsupported tf-content-type"),
        (req, "bad-empty", None, h("bad-empty"), "empty record value"),
        (fog_in, "bad-version", act, h("bad-version", version="999"), "versions are never mixed"),
        (fog_in, "bad-no-version", act, h("bad-no-version"), "missing header tf-version"),
        (fog_in, "bad-act-shape", codec.encode_tensor(np.zeros((7, 7, 32), np.float32)),
         h("bad-act-shape", version=version), "does not fit the model input"),
        (cloud_in, "bad-cloud-garbage", b"nonsense", h("bad-cloud-garbage", version=version), "not a tensor"),
    ]


def test_malformed_records_go_to_the_dlq_with_a_reason_and_valid_ones_are_answered(deployed, fmnist_test):
    from confluent_kafka import Producer

    settings, deployment = deployed
    corpus = _malformed_corpus(settings, "local")
    x = fmnist_test[0][300:400]
    producer = Producer(producer_config(settings))
    with DeviceClient(settings) as client:
        for i in range(len(x)):  # valid and malformed records interleaved
            client.send(f"ok{i}", x[i])
            if i < len(corpus):
                topic, key, value, headers, _ = corpus[i]
                producer.produce(topic, key=key, value=value, headers=headers)
        assert producer.flush(10) == 0
        assert client.wait_all(120), f"{client.outstanding()} valid requests unanswered"
        assert len(client.answers) == len(x)
    dlq = read_topic(settings, settings.topic("dlq"), expect=len(corpus))
    by_key = {m.key().decode(): dict(m.headers()) for m in dlq}
    assert sorted(by_key) == sorted(k for _, k, *_ in corpus), "every malformed record, and only those"
    for topic, key, _value, _, reason in corpus:
        headers = by_key[key]
        assert reason in headers["tf-error"].decode(), (key, headers["tf-error"])
        assert headers["tf-dlq-origin"].decode().startswith(topic + "/")
    for tier, w in deployment.workers.items():
        assert w.ready(), f"{tier} worker not ready after the corpus:\n{w.log_tail()}"
    sent_to = Counter({settings.topic("requests"): "edge", settings.link_topic("local", "edge", "fog"): "fog",
                       settings.link_topic("local", "fog", "cloud"): "cloud"}[t] for t, *_ in corpus)
    for tier, w in deployment.workers.items():
        assert _metric(_metrics(w.http_port), "tierflow_dlq_records_total", tier=tier) == sent_to[tier]


def test_health_readiness_and_metrics(deployed):
    settings, deployment = deployed
    edge = deployment["edge"]
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{edge.http_port}{path}", timeout=5) as resp:  # noqa: S310
            assert resp.status == 200
    text = _metrics(edge.http_port)
    answered = _metric(text, "tierflow_records_total", tier="edge", outcome="answered")
    forwarded = _metric(text, "tierflow_records_total", tier="edge", outcome="forwarded")
    assert answered > 0 and forwarded > 0
    assert _metric(text, "tierflow_exit_answers_total", tier="edge") == answered
    assert _metric(text, "tierflow_batch_size_count", tier="edge") > 0
    assert _metric(text, "tierflow_tier_latency_seconds_count", tier="edge") == answered
    assert _metric(text, "tierflow_bytes_out_total", topic=settings.link_topic("local", "edge", "fog")) > 0
