"""Trace context across tiers: the traceparent a tier reads is the parent of its span, the one it forwards
names its own span; sampling follows the parent and samples new traces at the ratio."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from runtime.settings import Settings, TracingSettings
from runtime.tracing import TRACEPARENT, TierTracer, _parent

PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Record:
    """The part of a consumed confluent-kafka message a tracer reads."""

    hdrs: list

    def headers(self) -> list:
        return self.hdrs

    def topic(self) -> str:
        return "app.v1.edge-fog"

    def offset(self) -> int:
        return 7


def tracer(tmp_path, ratio: float = 1.0) -> TierTracer:
    return TierTracer(Settings(_env_file=None, home=tmp_path, tracing=TracingSettings(
        enabled=True, exporter="file", file=str(tmp_path / "{tier}.jsonl"), sample_ratio=ratio)), "fog", "3")


def test_off_by_default():
    assert TierTracer.for_worker(Settings(_env_file=None), "edge", "1") is None


@pytest.mark.parametrize("value", [b"", b"garbage", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
                                   b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"])
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(value):
    assert _parent([(TRACEPARENT, value)]) is None


def test_the_span_is_a_child_of_the_records_traceparent_and_names_itself_on(tmp_path):
    t = tracer(tmp_path)
    name, value = t.decided(Record([("tf-request-id", b"r1"), (TRACEPARENT, PARENT)]), "r1", 1_700_000_000_000,
                            "forward", 1, 0.4)
    t.shutdown()
    assert name == TRACEPARENT
    version, trace_id, span_id, flags = value.decode().split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    (span,) = [json.loads(line) for line in (tmp_path / "fog.jsonl").read_text().splitlines()]
    assert span["parent_id"] == "0x00f067aa0ba902b7" and span["context"]["span_id"] == f"0x{span_id}"
    assert span["attributes"]["tierflow.action"] == "forward" and span["attributes"]["tierflow.request_id"] == "r1"
    assert span["start_time"].startswith("2023-11-14T22:13:20")  # the batch's receipt, not the decision


def test_sampling_follows_the_parent_and_the_ratio_for_new_traces(tmp_path):
    t = tracer(tmp_path, ratio=0.0)
    assert t.decided(Record([]), "new", 0, "answer", 0, 0.9) is None  # a new trace at ratio 0: not sampled
    assert t.decided(Record([(TRACEPARENT, PARENT)]), "child", 0, "answer", 0, 0.9) is not None
    unsampled = PARENT[:-2] + b"00"
    assert t.decided(Record([(TRACEPARENT, unsampled)]), "child2", 0, "answer", 0, 0.9) is None
    t.shutdown()
