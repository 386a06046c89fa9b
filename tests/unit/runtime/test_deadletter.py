"""Dead-letter copies always fit the producer's limit, and say what was cut and where the original is."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import codec, deadletter

from .test_validation import FakeRecord


def _size(dl: deadletter.DeadLetter) -> int:
    return len(dl.key or b"") + len(dl.value or b"") + sum(len(k) + len(v) for k, v in dl.headers)


def test_an_oversized_record_is_cut_with_its_size_and_a_pointer():
    m = FakeRecord(b"v" * 1_500_000, [("a", b"h" * 100_000), ("b", None)], topic="fm.requests", key=b"k" * 5000,
                   partition=2, offset=41)
    dl = deadletter.build(m, "oversized", "too big", "edge", 256 * 1024)
    h = dict(dl.headers)
    assert _size(dl) <= 256 * 1024
    assert h[codec.DLQ_ORIGIN] == b"fm.requests/2/41"
    assert h[codec.DLQ_SIZE] == b"key=5000 value=1500000 headers=2"
    assert h[codec.DLQ_TRUNCATED] == b"key,value,headers"
    assert h[codec.ERROR] == b"too big" and h[codec.ERROR_KIND] == b"oversized"


def test_a_small_record_is_copied_whole():
    m = FakeRecord(b"abc", [("x", b"1")], key=b"k")
    dl = deadletter.build(m, "decode", "bad", "fog", 256 * 1024)
    assert (dl.key, dl.value) == (b"k", b"abc") and dl.headers[0] == ("x", b"1")
    assert codec.DLQ_TRUNCATED not in dict(dl.headers)


@settings(max_examples=200, deadline=None)
@given(key=st.one_of(st.none(), st.binary(max_size=3000)), value=st.one_of(st.none(), st.binary(max_size=40_000)),
       headers=st.lists(st.tuples(st.text(max_size=400), st.one_of(st.none(), st.binary(max_size=9000))),
                        max_size=40),
       reason=st.text(max_size=3000))
def test_any_record_fits_the_limit(key, value, headers, reason):
    dl = deadletter.build(FakeRecord(value, headers, key=key), "x", reason, "edge", 16 * 1024)
    assert _size(dl) <= 16 * 1024
    assert dict(dl.headers)[codec.ERROR].decode("ascii").isprintable()
