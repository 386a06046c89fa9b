"""Answers and forwards are built from prebuilt parts; they must equal json.dumps and codec.make_headers."""

from __future__ import annotations

import json

import pytest

from runtime import codec

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", 'Ankle "boot"']


@pytest.mark.parametrize(("rid", "label", "confidence", "latency", "degraded"), [
    ("r1", 3, 0.91234567, 12, False),
    ('quote"back\\slash\u00e9\n', 0, 1.0, None, True),
    ("r3", 9, 1e-07, -4, False),
    ("r4", 1, float("nan"), 0, False),
])
def test_answer_body_equals_encode_result(rid, label, confidence, latency, degraded):
    enc = codec.AnswerEncoder("cloud", "7", "fm", lambda i: CLASSES[i])
    body = enc.body(rid, label, confidence, 4, 3, latency, degraded)
    expected = {"request_id": rid, "label": label, "class_name": CLASSES[label], "confidence": confidence,
                "exit": 4, "tier": "cloud", "model_version": "7", "tier_latency_ms": 3, "latency_ms": latency,
                "degraded": degraded, "threshold": None, "adapted": False}
    assert body == codec.encode_result(expected)
    assert tuple(json.loads(body)) == codec.RESULT_FIELDS
    # with thresholds in force, each answer names its exit's
    enc.in_force([3, 4], [0.8125, None], adapted=False)
    assert enc.body(rid, label, confidence, 4, 3, latency, degraded) == codec.encode_result(expected)
    assert json.loads(enc.body(rid, label, confidence, 3, 3, latency, degraded))["threshold"] == 0.8125
    adapted = [0.5, None]
    enc.in_force([3, 4], adapted, adapted=True)
    enc.in_force([3, 4], adapted, adapted=False)  # the same list again: nothing rebuilt
    assert enc.body(rid, label, confidence, 3, 3, latency, degraded) == codec.encode_result(
        expected | {"exit": 3, "threshold": 0.5, "adapted": True})


def test_answer_headers_and_their_size():
    headers, size = codec.AnswerEncoder("fog", "7", "fm", str).headers(b"r1", b"0/12")
    assert headers == codec.make_headers("r1", model="fm", version="7", content_type=codec.JSON,
                                         tf_source_tier="fog", tf_entry_offset="0/12")
    assert size == sum(len(k) + len(v) for k, v in headers)


@pytest.mark.parametrize("reply_to", [None, "fm.replies.dev7"])
def test_forward_headers_equal_make_headers(reply_to):
    headers, size = codec.ForwardHeaders("edge", "4", "fm").build(b"r2", 5, 9, reply_to, b"1/3")
    assert headers == codec.make_headers("r2", model="fm", version="4", origin_ts=5, deadline=9, reply_to=reply_to,
                                         content_type=codec.TENSOR, tf_source_tier="edge", tf_entry_offset="1/3")
    assert size == sum(len(k) + len(v) for k, v in headers)


def test_readable_makes_any_text_printable_ascii_and_short():
    out = codec.readable("caf\u00e9\x00\n" + "x" * 1000, 50)
    assert out.isascii() and out.isprintable() and len(out) == 50 and out.endswith("...")
