"""The tensor record, headers and input adapters: exact round trips and a clear error for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime import codec
from runtime.codec import CodecError, decode_input, decode_tensor, encode_tensor

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (28, 28, 1), (2, 3, 4, 5)])
def test_round_trip_is_exact(dtype, shape):
    arr = (RNG.normal(size=shape) * 50).astype(dtype)
    out = decode_tensor(encode_tensor(arr))
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_big_endian_and_non_contiguous_inputs_decode_to_the_same_values():
    arr = RNG.normal(size=(4, 6)).astype(">f4")[:, ::2]
    np.testing.assert_array_equal(decode_tensor(encode_tensor(arr)), arr.astype("<f4"))


def test_fp16_activations_halve_the_payload():
    act = RNG.normal(size=(7, 7, 32)).astype(np.float32)
    full, half = encode_tensor(act), encode_tensor(act, dtype="float16")
    assert len(half) - 20 == (len(full) - 20) // 2  # 8-byte header + 3 x 4-byte shape
    np.testing.assert_allclose(decode_tensor(half).astype(np.float32), act, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("data", "reason"), [
    (None, "tombstone"),
    (b"", "shorter than"),
    (b"garbage-bytes-here", "magic"),
    (b"TFT1\x63\x01\x00\x00\x01\x00\x00\x00x", "unknown dtype"),
    (b"TFT1\x01\x09\x00\x00", "dimensions"),
    (b"TFT1\x01\x02\x00\x00\x01\x00", "truncated"),
    (encode_tensor(np.zeros((3, 3), np.float32))[:-1], "needs 36 data bytes, got 35"),
    (encode_tensor(np.zeros((3, 3), np.float32)) + b"\x00", "needs 36 data bytes, got 37"),
])
def test_malformed_records_raise_codec_error_with_reason(data, reason):
    with pytest.raises(CodecError, match=reason):
        decode_tensor(data)


def test_random_bytes_only_ever_raise_codec_error():
    good = encode_tensor(np.ones((2, 2), np.float32))
    for i in range(2000):
        blob = bytearray(good) if i % 2 else bytearray(RNG.integers(0, 256, size=RNG.integers(0, 40)))
        if i % 2:
            for _ in range(RNG.integers(1, 4)):
                blob[RNG.integers(0, len(blob))] = RNG.integers(0, 256)
        try:
            out = decode_tensor(bytes(blob))
        except CodecError:
            continue
        assert out.size * out.dtype.itemsize == len(blob) - 8 - 4 * out.ndim


def test_headers_round_trip_and_validation():
    hs = codec.make_headers("r-1", model="fmnist", version="3", origin_ts=1700000000000, deadline=None,
                            content_type=codec.PNG, tf_label=4)
    parsed = codec.parse_headers(hs)
    assert parsed == {"tf-request-id": "r-1", "tf-model": "fmnist", "tf-version": "3",
                      "tf-origin-ts": "1700000000000", "tf-content-type": "image/png", "tf-label": "4"}
    assert codec.header_int(parsed, codec.ORIGIN_TS) == 1700000000000
    assert codec.header_int(parsed, codec.DEADLINE) is None
    with pytest.raises(CodecError, match="tf-version"):
        codec.header_int({"tf-version": "x"}, codec.VERSION)
    with pytest.raises(CodecError, match="not UTF-8"):
        codec.parse_headers([("tf-request-id", b"\xff\xfe")])
    assert codec.parse_headers(codec.with_header(hs, codec.VERSION, "4"))["tf-version"] == "4"


def test_result_json_requires_the_contract_fields():
    result = {f: None for f in codec.RESULT_FIELDS} | {"request_id": "r", "degraded": False}
    assert codec.decode_result(codec.encode_result(result)) == result
    with pytest.raises(ValueError, match="lacks"):
        codec.encode_result({"request_id": "r"})
    with pytest.raises(CodecError):
        codec.decode_result(b"{oops")


SHAPE, DTYPE = (28, 28, 1), "float32"


def test_png_and_raw_uint8_give_the_same_sample():
    pixels = RNG.integers(0, 256, size=(28, 28), dtype=np.uint8)
    from_png = decode_input(codec.encode_image(pixels), codec.PNG, SHAPE, DTYPE)
    from_raw = decode_input(encode_tensor(pixels), codec.TENSOR, SHAPE, DTYPE)
    assert from_png.shape == SHAPE and from_png.dtype == np.float32
    np.testing.assert_array_equal(from_png, from_raw)
    np.testing.assert_array_equal(from_png[..., 0], pixels.astype(np.float32))  # raw values, no rescaling


def test_jpeg_is_lossy_but_close():
    pixels = np.tile(np.linspace(0, 255, 28, dtype=np.uint8), (28, 1))
    out = decode_input(codec.encode_image(pixels, "JPEG"), codec.JPEG, SHAPE, DTYPE)
    assert np.abs(out[..., 0] - pixels).mean() < 5


def test_json_arrays_with_and_without_envelope():
    sample = (RNG.random((28, 28)) * 255).astype(np.float32)
    for body in (json.dumps(sample.tolist()), json.dumps({"data": sample.tolist()})):
        np.testing.assert_allclose(decode_input(body.encode(), codec.JSON, SHAPE, DTYPE)[..., 0], sample)


@pytest.mark.parametrize(("data", "ctype", "reason"), [
    (encode_tensor(np.zeros((27, 28), np.float32)), codec.TENSOR, "does not fit the model input"),
    (encode_tensor(np.zeros((784,), np.float32)), codec.TENSOR, "does not fit"),
    (encode_tensor(np.array(["x"]).view(np.uint8)), codec.TENSOR, "does not fit"),
    (encode_tensor(np.full((28, 28), np.nan, np.float32)), codec.TENSOR, "NaN"),
    (encode_tensor(np.zeros((28, 28), bool)), codec.TENSOR, "cannot feed"),
    (b"\x89PNG\r\n\x1a\nnot really", codec.PNG, "not a readable image"),
    (codec.encode_image(np.zeros((10, 10), np.uint8)), codec.PNG, "10x10"),
    (b"[[1, 2], [3", codec.JSON, "not valid JSON"),
    (b'"hello"', codec.JSON, "list of numbers"),
    (b'[["a", "b"]]', codec.JSON, "list of numbers"),
    (b"\x00\x01", "text/csv", "unsupported tf-content-type"),
    (b"", codec.TENSOR, "empty"),
])
def test_bad_inputs_have_clear_reasons(data, ctype, reason):
    with pytest.raises(CodecError, match=reason):
        decode_input(data, ctype, SHAPE, DTYPE)


def test_tensor_layout_decodes_records_of_the_same_layout_like_decode_input():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(2))
    layout, _ = codec.TensorLayout.of(codec.encode_tensor(a), (28, 28, 1), "float32")
    fast = layout.decode(codec.encode_tensor(b))
    assert fast.shape == (28, 28, 1)
    np.testing.assert_array_equal(fast.astype(np.float32),
                                  codec.decode_input(codec.encode_tensor(b), None, (28, 28, 1), "float32"))
    # Another shape, dtype or size is not this layout: the caller falls back to the full decode.
    assert layout.decode(codec.encode_tensor(b[:14])) is None
    assert layout.decode(codec.encode_tensor(b.astype(np.float32))) is None
    assert layout.decode(codec.encode_tensor(b)[:-1]) is None


def test_non_finite_rows_of_a_batch_are_found_and_unfit_records_have_no_layout():
    act = np.ones((4, 4, 2), np.float16)
    layout, _ = codec.TensorLayout.of(codec.encode_tensor(act), (4, 4, 2), "float32")
    bad = act.copy()
    bad[1, 2, 0] = np.nan
    rows = np.stack([layout.decode(codec.encode_tensor(a)) for a in (act, bad, act, np.full_like(act, np.inf))])
    np.testing.assert_array_equal(codec.finite_rows(rows), [True, False, True, False])
    assert codec.finite_rows(rows[[0, 2]]) is None  # all finite
    assert codec.finite_rows(np.zeros((2, 3), np.uint8)) is None  # integers always are
    with pytest.raises(codec.CodecError, match="does not fit"):
        codec.TensorLayout.of(codec.encode_tensor(np.ones((3, 3), np.float32)), (4, 4, 2), "float32")
