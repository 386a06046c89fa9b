"""Wire formats of the data plane: the binary tensor record, record headers, result JSON, input adapters.

Tensor record (little-endian)::

    b"TFT1" | dtype code (u8) | ndim (u8) | 2 reserved bytes | ndim x u32 shape | raw C-order bytes

About 12 + 4*ndim bytes of overhead; never JSON lists of floats between tiers. Activations may be
sent as float16 to halve the bytes on a link. Every malformed input raises `CodecError` with a
message that says what is wrong, which the tier worker puts in the dead-letter record's `tf-error`.
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

import numpy as np

MAGIC = b"TFT1"
_HEAD = struct.Struct("<4sBB2x")
MAX_NDIM = 8
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("i1"), 4: np.dtype("u1"),
    5: np.dtype("<i4"), 6: np.dtype("<f8"), 7: np.dtype("<i8"), 8: np.dtype("?"),
}
_CODES = {dt: code for code, dt in DTYPES.items()}

# Headers of the contract (README "Data plane").
REQUEST_ID = "tf-request-id"
MODEL = "tf-model"
VERSION = "tf-version"
ORIGIN_TS = "tf-origin-ts"
DEADLINE = "tf-deadline"
REPLY_TO = "tf-reply-to"
CONTENT_TYPE = "tf-content-type"
LABEL = "tf-label"
ERROR = "tf-error"
# Set by the workers, not by clients: which tier produced a record, and where its request entered
# (``partition/offset`` on APP.requests), which tells a replayed request from a reused request id.
SOURCE_TIER = "tf-source-tier"
ENTRY = "tf-entry-offset"
# Dead letters: the reason's kind, where the record came from (topic/partition/offset), its original
# size and whether its value or headers were cut to fit.
ERROR_KIND = "tf-error-kind"
DLQ_ORIGIN = "tf-dlq-origin"
DLQ_SIZE = "tf-dlq-size"
DLQ_TRUNCATED = "tf-dlq-truncated"

NOT_FINITE = "input contains NaN or infinite values"
MAX_REQUEST_ID = 256  # characters of tf-request-id

TENSOR = "application/x-tensor"
PNG = "image/png"
JPEG = "image/jpeg"
JSON = "application/json"
CONTENT_TYPES = (TENSOR, PNG, JPEG, JSON)


class CodecError(ValueError):
    """A record that cannot be decoded; the message is the DLQ reason."""


def encode_tensor(array: np.ndarray, dtype: str | np.dtype | None = None) -> bytes:
    """Encode one array (optionally cast, e.g. to float16 for activations)."""
    arr = np.asarray(array)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    code = _CODES.get(arr.dtype.newbyteorder("<"))
    if code is None:
        raise CodecError(f"dtype {arr.dtype} not supported; use one of {sorted(str(d) for d in _CODES)}")
    if arr.ndim > MAX_NDIM:
        raise CodecError(f"{arr.ndim} dimensions, at most {MAX_NDIM}")
    arr = np.asarray(arr, dtype=DTYPES[code], order="C")
    return b"".join((_HEAD.pack(MAGIC, code, arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape),
                     arr.tobytes()))


def encode_tensors(batch: np.ndarray, dtype: str | np.dtype | None = None) -> list[bytes]:
    """`encode_tensor` of every row of a batch, byte for byte, casting once and packing the header once."""
    batch = np.asarray(batch)
    if dtype is not None:
        batch = batch.astype(dtype, copy=False)
    if len(batch) == 0:
        return []
    head = encode_tensor(batch[:1].reshape(batch.shape[1:]))  # validates dtype/ndim like encode_tensor
    head = head[:len(head) - batch[0].nbytes]
    batch = np.asarray(batch, dtype=batch.dtype.newbyteorder("<"), order="C")
    return [head + row.tobytes() for row in batch]


def decode_tensor(data: bytes | memoryview | None) -> np.ndarray:
    """Decode one tensor record; raises CodecError on anything malformed (never returns garbage)."""
    if data is None:
        raise CodecError("empty record value (tombstone)")
    buf = memoryview(data)
    if len(buf) < _HEAD.size:
        raise CodecError(f"not a tensor record: {len(buf)} bytes, shorter than the {_HEAD.size}-byte header")
    magic, code, ndim = _HEAD.unpack_from(buf)
    if magic != MAGIC:
        raise CodecError(f"not a tensor record: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if code not in DTYPES:
        raise CodecError(f"unknown dtype code {code}")
    if ndim > MAX_NDIM:
        raise CodecError(f"{ndim} dimensions, at most {MAX_NDIM}")
    offset = _HEAD.size + 4 * ndim
    if len(buf) < offset:
        raise CodecError("truncated tensor record (shape)")
    shape = struct.unpack_from(f"<{ndim}I", buf, _HEAD.size)
    dtype = DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # math.prod: np.prod costs microseconds per record
    if len(buf) - offset != expected:
        raise CodecError(f"tensor record of shape {shape} {dtype.name} needs {expected} data bytes, "
                         f"got {len(buf) - offset}")
    return np.frombuffer(buf, dtype=dtype, offset=offset, count=expected // dtype.itemsize).reshape(shape)


# ---- headers -----------------------------------------------------------------------------------------

def now_ms() -> int:
    return int(time.time() * 1000)


def make_headers(request_id: str, *, model: str | None = None, version: str | None = None,
                 origin_ts: int | None = None, deadline: int | None = None, reply_to: str | None = None,
                 content_type: str | None = None, **extra: str | int | None) -> list[tuple[str, bytes]]:
    """Headers as confluent-kafka wants them; extra keys use underscores for dashes (tf_label=3)."""
    items: dict[str, Any] = {REQUEST_ID: request_id, MODEL: model, VERSION: version, ORIGIN_TS: origin_ts,
                             DEADLINE: deadline, REPLY_TO: reply_to, CONTENT_TYPE: content_type}
    items.update({k.replace("_", "-"): v for k, v in extra.items()})
    return [(k, str(v).encode()) for k, v in items.items() if v is not None]


def parse_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Header list → dict of str (last value wins); non-UTF-8 values raise CodecError."""
    headers = dict(raw or ())
    return {key: header_text(headers, key) for key in headers}


def header_text(headers: dict[str, bytes | None], key: str) -> str | None:
    """One header of a ``dict(record.headers())`` as text (only the headers a reader uses are decoded);
    missing → None, a null value → "", non-UTF-8 → CodecError."""
    value = headers.get(key)
    if value is None:
        return None if key not in headers else ""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError(f"header {key!r} is not UTF-8") from None


def header_int(headers: dict[str, str] | dict[str, bytes | None], key: str) -> int | None:
    """Integer header (epoch ms etc.) of parsed (str) or raw (bytes) headers; missing → None, malformed →
    CodecError."""
    value = headers.get(key)
    if value is None or len(value) == 0:
        return None
    try:
        return int(value)
    except ValueError:
        shown = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        raise CodecError(f"header {key!r} must be an integer, got {shown[:40]!r}") from None


def with_header(headers: Sequence[tuple[str, bytes]] | None, key: str, value: str) -> list[tuple[str, bytes]]:
    """Copy of a header list with one key set (replacing earlier values)."""
    return [(k, v) for k, v in (headers or ()) if k != key] + [(key, value.encode())]


# ---- results -----------------------------------------------------------------------------------------

# threshold: the threshold of the answering exit in force when the tier decided (null for an exit that always
# answers); adapted: that threshold is not the calibrated one (`runtime.adaptive`).
RESULT_FIELDS = ("request_id", "label", "class_name", "confidence", "exit", "tier", "model_version",
                 "tier_latency_ms", "latency_ms", "degraded", "threshold", "adapted")


def encode_result(result: dict[str, Any]) -> bytes:
    missing = [f for f in RESULT_FIELDS if f not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    return json.dumps(result, separators=(",", ":")).encode()


def _json_float(x: float) -> str:
    return repr(x) if math.isfinite(x) else json.dumps(x)


class AnswerEncoder:
    """Result JSON bodies and record headers of one tier's answers, from parts built once.

    ``body`` equals ``encode_result`` of the same fields byte for byte (tests/unit/runtime/test_answer_encoding.py)
    without building a dict per answer; it is on the hot path of every worker.
    """

    def __init__(self, tier: str, version: str, model_name: str, class_name: Any):
        self._class_name = class_name
        self._no_threshold = ',"threshold":null,"adapted":false'
        self._thresholds: dict[int, str] = {}
        self._in_force: object = None
        self._class_json: dict[int, str] = {}
        self._tier_json = f'"tier":{_json_str(tier)},"model_version":{_json_str(version)}'
        self._headers = make_headers("", model=model_name, version=version, content_type=JSON,
                                     tf_source_tier=tier)[1:]
        self._const_bytes = len(REQUEST_ID) + len(ENTRY) + sum(len(k) + len(v) for k, v in self._headers)

    def in_force(self, exit_ids: Sequence[int], thresholds: Sequence[float | None], adapted: bool) -> None:
        """The thresholds this tier decides with (each answer names its exit's); a no-op for the same list."""
        if thresholds is self._in_force:
            return
        self._in_force = thresholds
        flag = "true" if adapted else "false"
        self._thresholds = {e: f',"threshold":{"null" if t is None else _json_float(float(t))},"adapted":{flag}'
                            for e, t in zip(exit_ids, thresholds, strict=True)}

    def body(self, request_id: str, label: int, confidence: float, exit_id: int, tier_latency_ms: int,
             latency_ms: int | None, degraded: bool) -> bytes:
        class_json = self._class_json.get(label)
        if class_json is None:
            class_json = self._class_json[label] = _json_str(self._class_name(label))
        return (f'{{"request_id":{_json_str(request_id)},"label":{label},"class_name":{class_json},'
                f'"confidence":{_json_float(confidence)},"exit":{exit_id},{self._tier_json},'
                f'"tier_latency_ms":{tier_latency_ms},"latency_ms":{"null" if latency_ms is None else latency_ms},'
                f'"degraded":{"true" if degraded else "false"}'
                f'{self._thresholds.get(exit_id, self._no_threshold)}}}').encode()

    def headers(self, request_id: bytes, entry: bytes) -> tuple[list[tuple[str, bytes]], int]:
        """Headers of an answer and their size in bytes."""
        return ([(REQUEST_ID, request_id), *self._headers, (ENTRY, entry)],
                self._const_bytes + len(request_id) + len(entry))


class ForwardHeaders:
    """Headers of the activation records one tier sends up (= make_headers of the same values, in order)."""

    def __init__(self, tier: str, version: str, model_name: str):
        self._model = (MODEL, model_name.encode())
        self._version = (VERSION, version.encode())
        self._tail = make_headers("", content_type=TENSOR, tf_source_tier=tier)[1:]
        self._const_bytes = sum(len(k) + len(v) for k, v in (self._model, self._version, *self._tail)) \
            + len(REQUEST_ID) + len(ORIGIN_TS) + len(DEADLINE) + len(ENTRY)

    def build(self, request_id: bytes, origin_ts: int, deadline: int, reply_to: str | None,
              entry: bytes) -> tuple[list[tuple[str, bytes]], int]:
        origin_b, deadline_b = str(origin_ts).encode(), str(deadline).encode()
        size = self._const_bytes + len(request_id) + len(origin_b) + len(deadline_b) + len(entry)
        head = [(REQUEST_ID, request_id), self._model, self._version, (ORIGIN_TS, origin_b), (DEADLINE, deadline_b)]
        if reply_to:
            reply_b = reply_to.encode()
            head.append((REPLY_TO, reply_b))
            size += len(REPLY_TO) + len(reply_b)
        return [*head, *self._tail, (ENTRY, entry)], size


def readable(text: str, limit: int = 300) -> str:
    """A reason or header value fit for a DLQ header or a log line: printable ASCII, at most ``limit`` chars."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)
    return out if len(out) <= limit else out[:limit - 3] + "..."


def decode_result(data: bytes) -> dict[str, Any]:
    try:
        result = json.loads(data)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"result is not JSON: {exc}") from exc
    if not isinstance(result, dict) or "request_id" not in result:
        raise CodecError("result JSON has no request_id")
    return result


# ---- input adapters ----------------------------------------------------------------------------------

def _from_image(data: bytes, shape: Sequence[int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels = shape[-1] if len(shape) == 3 else 1
    height, width = shape[0], shape[1]
    try:
        with Image.open(io.BytesIO(data)) as img:
            # The size is in the header: check it before decoding any pixels (no decompression bombs).
            if img.size != (width, height):
                raise CodecError(f"image is {img.size[0]}x{img.size[1]}, the model takes {width}x{height}")
            return np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except CodecError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CodecError(f"not a readable image: {exc}") from exc


def _from_json(data: bytes) -> np.ndarray:
    try:
        value = json.loads(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CodecError(f"not valid JSON: {type(exc).__name__}: {exc}") from exc
    if isinstance(value, dict):
        value = value.get("instances", value.get("data"))
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CodecError("JSON input must be a (nested) list of numbers, or {\"data\": [...]}") from exc
    if arr.ndim == 0:
        raise CodecError("JSON input must be a (nested) list of numbers, or {\"data\": [...]}")
    return arr


def conform(arr: np.ndarray, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Fit one sample to the model input: same shape up to size-1 axes, and the model's dtype.

    Values are cast, never rescaled: tierflow models take raw values (pixels in [0, 255]) and do their
    own preprocessing inside the network. Non-finite values are rejected.
    """
    want = tuple(int(d) for d in shape)
    if arr.shape != want:
        if tuple(d for d in arr.shape if d != 1) != tuple(d for d in want if d != 1):
            raise CodecError(f"input shape {arr.shape} does not fit the model input {want}")
        arr = arr.reshape(want)
    target = np.dtype(dtype)
    if target.kind == "f":
        if arr.dtype.kind not in "fiu":
            raise CodecError(f"input dtype {arr.dtype} cannot feed a {target} model")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # integers are always finite
            raise CodecError(NOT_FINITE)
        arr = arr.astype(target, copy=False)
    elif arr.dtype != target:
        raise CodecError(f"input dtype {arr.dtype}, the model takes {target}")
    return arr


def decode_input(data: bytes | None, content_type: str | None, shape: Sequence[int], dtype: str) -> np.ndarray:
    """One request value in any supported content type → one model-ready sample."""
    ctype = (content_type or TENSOR).split(";")[0].strip().lower()
    if data is None or len(data) == 0:
        raise CodecError("empty record value")
    if ctype == TENSOR:
        arr = decode_tensor(data)
    elif ctype in (PNG, JPEG, "image/jpg"):
        arr = _from_image(data, shape)
    elif ctype == JSON:
        arr = _from_json(data)
    else:
        raise CodecError(f"unsupported tf-content-type {content_type!r}; use one of {CONTENT_TYPES}")
    return conform(arr, shape, dtype)


@dataclass(frozen=True)
class TensorLayout:
    """The exact header of tensor records a model has accepted: a record that starts with these bytes and
    has this size decodes with one ``frombuffer``, without parsing the header or checking the shape again.

    The tier worker keeps the layout of the last tensor record it decoded; its clients send the same shape
    and dtype every time, so almost every record takes this path.
    """

    head: bytes
    size: int
    dtype: np.dtype
    shape: tuple[int, ...]

    @classmethod
    def of(cls, data: bytes, shape: Sequence[int], dtype: str) -> tuple[TensorLayout, np.ndarray]:
        """The layout of a tensor record that fits a model input of ``shape`` and ``dtype``, and its sample
        as `conform` returns it (else CodecError)."""
        raw = decode_tensor(data)
        sample = conform(raw, shape, dtype)
        return cls(bytes(data[:_HEAD.size + 4 * raw.ndim]), len(data), raw.dtype, tuple(sample.shape)), sample

    def decode(self, data: bytes) -> np.ndarray | None:
        """The sample in the record's own dtype, or None if the record does not have this layout. Its values
        are not checked here: `finite_rows` checks a whole batch at once."""
        if len(data) != self.size or not data.startswith(self.head):
            return None
        return np.frombuffer(data, self.dtype, offset=len(self.head)).reshape(self.shape)


def finite_rows(batch: np.ndarray) -> np.ndarray | None:
    """None if every value of a batch of samples is finite, else a boolean mask of the rows that are (one
    check per batch: a NaN test per record costs more than the rest of its decode)."""
    if batch.dtype.kind != "f" or np.isfinite(batch).all():
        return None
    return np.isfinite(batch.reshape(len(batch), -1)).all(axis=1)


def encode_image(sample: np.ndarray, fmt: str = "PNG") -> bytes:
    """A 2-D (or HxWx1 / HxWx3) sample of pixel values in [0, 255] as PNG/JPEG bytes."""
    from PIL import Image

    arr = np.asarray(sample)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()
