"""One trace per request across the tiers: a request the cloud answers is three tier spans of one trace id,
chained edge -> fog -> cloud through the `traceparent` header of the forwards (file exporter, real workers)."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

import pytest

from runtime.client import DeviceClient
from runtime.local import LocalDeployment
from runtime.settings import KafkaSettings, Settings, TracingSettings

pytestmark = pytest.mark.integration


def test_a_cloud_answer_is_one_trace_of_three_tier_spans(kafka_bootstrap, tiny_bundle, tmp_path):
    from ml.datasets import load_fashion_mnist

    traces = tmp_path / "traces"
    settings = Settings(_env_file=None, app=f"t{uuid.uuid4().hex[:10]}", home=tmp_path,
                        kafka=KafkaSettings(bootstrap=kafka_bootstrap),
                        tracing=TracingSettings(enabled=True, exporter="file", file=str(traces / "{tier}.jsonl")))
    x = load_fashion_mnist("test").x[:150]
    with LocalDeployment(settings, tiny_bundle, tmp_path / "logs"), DeviceClient(settings) as client:
        for i in range(len(x)):
            client.send(f"tr-{i}", x[i])
        assert client.wait_all(120), f"{client.outstanding()} unanswered"
    # Stopped: every worker flushed its spans.
    by_request: dict[str, list[dict]] = defaultdict(list)
    for tier in ("edge", "fog", "cloud"):
        for line in (traces / f"{tier}.jsonl").read_text().splitlines():
            span = json.loads(line)
            assert span["name"] == f"tierflow.{tier}" and span["attributes"]["tierflow.tier"] == tier
            by_request[span["attributes"]["tierflow.request_id"]].append(span)
    answered_by = {rid: a.result["tier"] for rid, a in client.answers.items()}
    assert "cloud" in answered_by.values() and "edge" in answered_by.values()
    for rid, tier in answered_by.items():
        spans = sorted(by_request[rid], key=lambda s: ("edge", "fog", "cloud").index(s["attributes"]["tierflow.tier"]))
        tiers = [s["attributes"]["tierflow.tier"] for s in spans]
        assert tiers == {"edge": ["edge"], "fog": ["edge", "fog"], "cloud": ["edge", "fog", "cloud"]}[tier], rid
        assert len({s["context"]["trace_id"] for s in spans}) == 1, rid  # one trace
        assert spans[0]["parent_id"] is None  # the device sent no traceparent: the edge starts the trace
        for parent, child in zip(spans, spans[1:], strict=False):
            assert child["parent_id"] == parent["context"]["span_id"], rid
        assert [s["attributes"]["tierflow.action"] for s in spans][:-1] == ["forward"] * (len(spans) - 1)
        assert spans[-1]["attributes"]["tierflow.action"] == "answer"
