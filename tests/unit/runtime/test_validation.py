"""Record validation and decoding of the tier worker (fake records, no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest

from runtime import codec
from runtime.validation import Limits, RecordReader, Rejected

NOW = 1_700_000_000_000


class FakeRecord:
    def __init__(self, value, headers, topic="t", key=b"k", partition=0, offset=7, timestamp=NOW - 5):
        self._value, self._headers, self._topic, self._key = value, headers, topic, key
        self._partition, self._offset, self._ts = partition, offset, timestamp

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def topic(self):
        return self._topic

    def key(self):
        return self._key

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def timestamp(self):
        return (1, self._ts)


def _reader(entry: bool, input_shape, max_record_bytes=20_000) -> RecordReader:
    return RecordReader(is_entry=entry, version="4", input_shape=list(input_shape), input_dtype="float32",
                        app="fm", limits=Limits(max_record_bytes, 2000, 60_000))


def test_entry_accepts_any_version_and_content_types_and_fills_in_times():
    r = _reader(True, (28, 28, 1))
    img = np.arange(784, dtype=np.uint8).reshape(28, 28)
    for headers, value in [
        (codec.make_headers("a", origin_ts=NOW - 9, deadline=NOW + 9), codec.encode_tensor(img)),
        (codec.make_headers("b", version="99", content_type=codec.PNG), codec.encode_image(img)),
        (codec.make_headers("c", content_type=codec.JSON), str(img.tolist()).encode()),
    ]:
        req = r.read(FakeRecord(value, headers, partition=2, offset=11), NOW)
        if req.request_id == "a":
            assert (req.origin_ts, req.deadline) == (NOW - 9, NOW + 9)
        else:  # the record timestamp, and the default deadline after it
            assert (req.origin_ts, req.deadline) == (NOW - 5, NOW - 5 + 2000)
        assert req.entry == "2/11"
        assert req.sample.shape == (28, 28, 1) and req.sample.dtype == np.float32
        np.testing.assert_array_equal(req.sample[..., 0], img)


def test_far_deadlines_are_clamped():
    req = _reader(True, (2,)).read(FakeRecord(codec.encode_tensor(np.zeros(2, np.float32)),
                                              codec.make_headers("a", deadline=NOW * 10)), NOW)
    assert req.deadline == NOW + 60_000


@pytest.mark.parametrize(("headers", "value", "kind", "reason"), [
    (codec.make_headers("a", version="3"), np.zeros((14, 14, 16), np.float32), "version", "never mixed"),
    (codec.make_headers("a"), np.zeros((14, 14, 16), np.float32), "missing_header", "tf-version"),
    ([], np.zeros((14, 14, 16), np.float32), "missing_header", "tf-request-id"),
    (codec.make_headers("a", version="4"), np.zeros((7, 7, 32), np.float32), "decode", "does not fit"),
    (codec.make_headers("a", version="4", deadline="soon"), np.zeros((14, 14, 16), np.float32), "headers",
     "tf-deadline"),
    (codec.make_headers("a", version="4"), np.zeros((100, 100, 8), np.float32), "oversized", "max_record_bytes"),
    (codec.make_headers("x" * 257, version="4"), np.zeros((14, 14, 16), np.float32), "headers", "at most 256"),
    (codec.make_headers("a", version="4", reply_to="fm.requests"), np.zeros((14, 14, 16), np.float32),
     "reply_to", "not a topic answers may go to"),
    (codec.make_headers("a", version="4", reply_to="bad topic!"), np.zeros((14, 14, 16), np.float32),
     "reply_to", "not a topic"),
    (codec.make_headers("a", version="4", reply_to="fm.v4.fog-cloud"), np.zeros((14, 14, 16), np.float32),
     "reply_to", "not a topic"),
    ([("tf-request-id", b"\xff\xfe")], np.zeros((14, 14, 16), np.float32), "headers", "not UTF-8"),
    ([("big", b"x" * 70_000)], np.zeros((14, 14, 16), np.float32), "oversized", "headers of"),
])
def test_link_tier_rejections(headers, value, kind, reason):
    with pytest.raises(Rejected, match=reason) as err:
        _reader(False, (14, 14, 16), 200_000).read(FakeRecord(codec.encode_tensor(value), headers), NOW)
    assert err.value.kind == kind


def test_any_unexpected_failure_is_a_rejection_not_a_crash():
    class Broken(FakeRecord):
        def headers(self):
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    with pytest.raises(Rejected, match="headers could not be read") as err:
        _reader(True, (2,)).read(Broken(b"x", []), NOW)
    assert err.value.kind == "headers"
    deep = b"[" * 100_000 + b"]" * 100_000  # deeper than the JSON parser recurses
    with pytest.raises(Rejected, match="not valid JSON"):
        _reader(True, (2,), 10**6).read(FakeRecord(deep, codec.make_headers("a", content_type=codec.JSON)), NOW)


def test_image_size_is_checked_before_pixels_are_decoded():
    big = codec.encode_image(np.zeros((600, 600), np.uint8))
    with pytest.raises(Rejected, match="600x600, the model takes 28x28"):
        _reader(True, (28, 28, 1), 10**7).read(FakeRecord(big, codec.make_headers("a", content_type=codec.PNG)), NOW)


def test_link_tier_accepts_fp16_activations_of_its_version():
    act = np.random.default_rng(0).normal(size=(14, 14, 16)).astype(np.float32)
    req = _reader(False, (14, 14, 16)).read(
        FakeRecord(codec.encode_tensor(act, dtype="float16"), codec.make_headers("a", version="4", tf_entry_offset="1/2")),
        NOW)
    assert req.sample.dtype == np.float32 and req.entry == "1/2"
    np.testing.assert_allclose(req.sample, act, atol=1e-2)


def test_records_of_a_known_layout_decode_the_same_and_bad_ones_are_still_rejected():
    r = _reader(False, (14, 14, 16))
    rng = np.random.default_rng(2)
    acts = rng.normal(size=(3, 14, 14, 16)).astype(np.float32)
    headers = codec.make_headers("a", version="4")
    decoded = [r.read(FakeRecord(codec.encode_tensor(a), headers), NOW).sample for a in acts]
    assert r._layout is not None  # learnt from the first record, used for the next ones
    for a, x in zip(acts, decoded, strict=True):
        np.testing.assert_array_equal(np.asarray(x, np.float32), a)
    bad = acts[0].copy()
    bad[0, 0, 0] = np.inf
    requests = [r.read(FakeRecord(codec.encode_tensor(a), codec.make_headers(f"r{i}", version="4")), NOW)
                for i, a in enumerate((acts[0], bad, acts[1]))]
    kept, samples, nonfinite = r.stack(requests)  # the values are checked once per batch
    assert [q.request_id for q in kept] == ["r0", "r2"] and [q.request_id for q in nonfinite] == ["r1"]
    np.testing.assert_array_equal(samples, acts[:2])
    kept, samples, nonfinite = r.stack(requests[::2])
    assert len(kept) == 2 and nonfinite == [] and samples.shape == (2, 14, 14, 16)
    with pytest.raises(Rejected, match="does not fit"):
        r.read(FakeRecord(codec.encode_tensor(acts[0][:7]), headers), NOW)
