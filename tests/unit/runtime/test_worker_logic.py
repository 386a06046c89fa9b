"""Pure logic of the tier worker: routing per tier/version and record validation (fake records only)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from runtime import codec
from runtime.settings import Settings, WorkerSettings
from runtime.worker import Rejected, TierWorker, plan_route

TIERS = ["edge", "fog", "cloud"]


def test_routes_of_a_three_tier_version():
    s = Settings(app="fm")
    edge, fog, cloud = (plan_route(s, t, "4", TIERS) for t in TIERS)
    assert (edge.in_topic, edge.out_topic, edge.group_id, edge.is_entry) == \
        ("fm.requests", "fm.v4.edge-fog", "fm.edge", True)
    assert (fog.in_topic, fog.out_topic, fog.group_id) == ("fm.v4.edge-fog", "fm.v4.fog-cloud", "fm.v4.fog")
    assert (cloud.in_topic, cloud.out_topic, cloud.group_id) == ("fm.v4.fog-cloud", None, "fm.v4.cloud")
    # The highest live tier answers a missed deadline first; the edge waits longest.
    assert [r.degrade_grace_factor for r in (edge, fog, cloud)] == [2, 1, 0]
    # Every version's edge shares one group on the requests topic (zero-drop rollout).
    assert plan_route(s, "edge", "5", TIERS).group_id == edge.group_id


def test_cloud_only_full_model_plays_the_entry_role():
    r = plan_route(Settings(app="fm"), "full", "4", TIERS)
    assert (r.in_topic, r.out_topic, r.group_id, r.is_entry) == ("fm.requests", None, "fm.edge", True)


def test_unknown_tier_is_a_clear_error():
    with pytest.raises(ValueError, match="not in the bundle's tiers"):
        plan_route(Settings(app="fm"), "mist", "4", TIERS)


class FakeRecord:
    def __init__(self, value, headers, topic="t", key=b"k"):
        self._value, self._headers, self._topic, self._key = value, headers, topic, key

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def topic(self):
        return self._topic

    def key(self):
        return self._key


def _worker(tier: str, input_shape, max_record_bytes=20_000) -> TierWorker:
    manifest = SimpleNamespace(tier_names=TIERS)
    model = SimpleNamespace(name=tier, version="4", model_name="fm", manifest=manifest, input_shape=list(input_shape),
                            input_dtype="float32")
    return TierWorker(Settings(app="fm", worker=WorkerSettings(max_record_bytes=max_record_bytes)), model)


def test_entry_accepts_any_version_and_content_types():
    w = _worker("edge", (28, 28, 1))
    img = np.arange(784, dtype=np.uint8).reshape(28, 28)
    for headers, value in [
        (codec.make_headers("a", origin_ts=5, deadline=9), codec.encode_tensor(img)),
        (codec.make_headers("b", version="99", content_type=codec.PNG), codec.encode_image(img)),
        (codec.make_headers("c", content_type=codec.JSON), str(img.tolist()).encode()),
    ]:
        h, origin, deadline, x = w._validate(FakeRecord(value, headers))
        assert (origin, deadline) == ((5, 9) if h[codec.REQUEST_ID] == "a" else (None, None))
        assert x.shape == (28, 28, 1) and x.dtype == np.float32
        np.testing.assert_array_equal(x[..., 0], img)


@pytest.mark.parametrize(("headers", "value", "kind", "reason"), [
    (codec.make_headers("a", version="3"), np.zeros((14, 14, 16), np.float32), "version", "never mixed"),
    (codec.make_headers("a"), np.zeros((14, 14, 16), np.float32), "missing_header", "tf-version"),
    ([], np.zeros((14, 14, 16), np.float32), "missing_header", "tf-request-id"),
    (codec.make_headers("a", version="4"), np.zeros((7, 7, 32), np.float32), "decode", "does not fit"),
    (codec.make_headers("a", version="4", deadline="soon"), np.zeros((14, 14, 16), np.float32), "headers",
     "tf-deadline"),
    (codec.make_headers("a", version="4"), np.zeros((50, 50, 2), np.float32), "oversized", "max_record_bytes"),
])
def test_link_tier_rejections(headers, value, kind, reason):
    w = _worker("fog", (14, 14, 16))
    with pytest.raises(Rejected, match=reason) as err:
        w._validate(FakeRecord(codec.encode_tensor(value), headers))
    assert err.value.kind == kind


def test_link_tier_accepts_fp16_activations_of_its_version():
    w = _worker("fog", (14, 14, 16))
    act = np.random.default_rng(0).normal(size=(14, 14, 16)).astype(np.float32)
    *_, x = w._validate(FakeRecord(codec.encode_tensor(act, dtype="float16"), codec.make_headers("a", version="4")))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, act, atol=1e-2)


def test_records_of_a_known_layout_decode_the_same_and_bad_ones_are_still_rejected():
    w = _worker("fog", (14, 14, 16))
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(3, 14, 14, 16)).astype(np.float32)
    headers = codec.make_headers("a", version="4")
    decoded = [w._validate(FakeRecord(codec.encode_tensor(a), headers))[-1] for a in acts]
    assert w._layout is not None  # learnt from the first record, used for the next ones
    for a, x in zip(acts, decoded, strict=True):
        np.testing.assert_array_equal(np.asarray(x, np.float32), a)
    bad = acts[0].copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(Rejected, match="NaN or infinite") as err:
        w._validate(FakeRecord(codec.encode_tensor(bad), headers))
    assert err.value.kind == "decode"
    with pytest.raises(Rejected, match="does not fit"):
        w._validate(FakeRecord(codec.encode_tensor(acts[0][:7]), headers))
