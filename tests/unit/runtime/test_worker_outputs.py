"""The worker builds forward headers from prebuilt parts; they must equal what codec.make_headers builds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime import codec
from runtime.settings import Settings
from runtime.worker import TierWorker


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
    w._send = lambda bootstrap, topic, key, value, headers: sent.append((topic, key, value, headers))
    origin, deadline = codec.header_int(incoming, codec.ORIGIN_TS), codec.header_int(incoming, codec.DEADLINE)
    w._forward(FakeRecord(), incoming, deadline, b"act", {"_origin_ts": origin}, 1_700_000_000_500)
    origin = origin if origin is not None else 1_700_000_000_123
    deadline = deadline or origin + w.ws.default_deadline_ms
    expected = codec.make_headers(incoming[codec.REQUEST_ID], model=incoming.get(codec.MODEL, "fm"), version="4",
                                  origin_ts=origin, deadline=deadline, reply_to=incoming.get(codec.REPLY_TO),
                                  content_type=codec.TENSOR, tf_source_tier="edge")
    assert sent == [("fm.v4.edge-cloud", b"k", b"act", expected)]
    assert w._pending[incoming[codec.REQUEST_ID]].origin_ts == origin
