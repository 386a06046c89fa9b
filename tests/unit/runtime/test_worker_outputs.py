"""The worker builds forward headers and result bodies from prebuilt parts; they must equal what
codec.make_headers and json.dumps build."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from runtime import codec
from runtime.settings import Settings
from runtime.worker import Batch, TierWorker


class FakeRecord:
    def key(self):
        return b"k"

    def timestamp(self):
        return (1, 1_700_000_000_123)


@pytest.mark.parametrize("incoming", [
    {codec.REQUEST_ID: "r1", codec.ORIGIN_TS: "1700000000000"},
    {codec.REQUEST_ID: "r2", codec.MODEL: "other", codec.REPLY_TO: "fm.replies.dev7", codec.ORIGIN_TS: "5",
     codec.DEADLINE: "9"},
    {codec.REQUEST_ID: "r3", codec.REPLY_TO: ""},
])
def test_forward_headers_equal_make_headers(incoming):
    model = SimpleNamespace(name="edge", version="4", model_name="fm", manifest=SimpleNamespace(tier_names=["edge", "cloud"]))
    w = TierWorker(Settings(app="fm"), model)
    sent = []
    w._send = lambda batch, bootstrap, topic, key, value, headers, header_bytes: sent.append(
        (topic, key, value, headers, header_bytes))
    origin, deadline = codec.header_int(incoming, codec.ORIGIN_TS), codec.header_int(incoming, codec.DEADLINE)
    w._forward(Batch(), FakeRecord(), incoming, origin, deadline, b"act", 3, 0.5, 1, 1_700_000_000_500)
    origin = origin if origin is not None else 1_700_000_000_123
    deadline = deadline or origin + w.ws.default_deadline_ms
    expected = codec.make_headers(incoming[codec.REQUEST_ID], model=incoming.get(codec.MODEL, "fm"), version="4",
                                  origin_ts=origin, deadline=deadline, reply_to=incoming.get(codec.REPLY_TO),
                                  content_type=codec.TENSOR, tf_source_tier="edge")
    assert sent == [("fm.v4.edge-cloud", b"k", b"act", expected, sum(len(k) + len(v) for k, v in expected))]
    assert w._pending[incoming[codec.REQUEST_ID]].origin_ts == origin


@pytest.mark.parametrize(("rid", "label", "confidence", "origin", "degraded", "reply_to"), [
    ("r1", 3, 0.91234567, 1_700_000_000_000, False, None),
    ('quote"back\\slash\u00e9\n', 0, 1.0, None, True, "fm.replies.dev7"),
    ("r3", 9, 1e-07, 1_699_999_999_000, False, "fm.results"),
])
def test_result_body_equals_json_dumps(rid, label, confidence, origin, degraded, reply_to):
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", 'Ankle "boot"']
    model = SimpleNamespace(name="cloud", version="7", model_name="fm", manifest=SimpleNamespace(tier_names=["edge", "cloud"]),
                            class_name=lambda i: classes[i])
    w = TierWorker(Settings(app="fm"), model)
    sent = []
    w._send = lambda batch, bootstrap, topic, key, value, headers, header_bytes: sent.append(
        (topic, key, value, headers, header_bytes))
    received = codec.now_ms()
    w._answer(Batch(), rid, label, confidence, 4, origin, reply_to, received, degraded=degraded)
    assert [s[0] for s in sent] == ["fm.results"] + ([reply_to] if reply_to and reply_to != "fm.results" else [])
    topic, key, body, headers, header_bytes = sent[0]
    parsed = json.loads(body)
    assert tuple(parsed) == codec.RESULT_FIELDS
    expected = {"request_id": rid, "label": label, "class_name": classes[label], "confidence": confidence, "exit": 4,
                "tier": "cloud", "model_version": "7", "tier_latency_ms": parsed["tier_latency_ms"],
                "latency_ms": parsed["latency_ms"], "degraded": degraded}
    assert body == json.dumps(expected, separators=(",", ":")).encode()
    assert 0 <= parsed["tier_latency_ms"] < 60_000
    assert (parsed["latency_ms"] is None) == (origin is None)
    assert headers[0] == (codec.REQUEST_ID, rid.encode())
    assert header_bytes == sum(len(k) + len(v) for k, v in headers)
