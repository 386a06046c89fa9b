"""From a consumed record to a request a tier can serve, or `Rejected` with a reason a person can read.

Nothing a client sends may stop a worker: every check here raises `Rejected` (the record goes to the DLQ),
and any other exception on this path is turned into one too. Headers on a request:

* ``tf-request-id`` (required, at most 256 characters) names the request; ids must be unique;
* ``tf-origin-ts`` and ``tf-deadline`` are epoch ms (default: the record timestamp, and that plus
  ``worker.default_deadline_ms``); a deadline later than ``worker.max_deadline_ms`` ahead is clamped to it;
* ``tf-reply-to`` must be a legal topic name outside the application's own data-plane topics;
* ``tf-model`` and ``tf-version`` on a request are informational: the release in the entry consumer group
  serves it and the result names its ``model_version``. Between tiers the worker sets them, and a tier
  rejects activations of another version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from runtime import codec
from runtime.codec import CodecError
from runtime.codec import header_text as text
from runtime.deadletter import MAX_KEY_BYTES

TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
MAX_HEADER_BYTES = 64 * 1024  # all headers of one record together
MAX_ENTRY = 64  # characters of tf-entry-offset


class Rejected(Exception):
    """A record that goes to the dead-letter topic; ``kind`` labels the counter, ``reason`` the header."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, codec.readable(reason, 1000)


@dataclass(slots=True)
class Request:
    """A decoded request (or activation) waiting for this tier's inference."""

    record: Any
    request_id: str
    origin_ts: int
    deadline: int
    reply_to: str | None
    entry: str  # partition/offset of the request on APP.requests
    sample: np.ndarray
    close_at: int = 0  # epoch ms at which this tier's window closes (`runtime.ownership.window_close`), set by
    # the worker that reads it


@dataclass(frozen=True)
class Limits:
    max_record_bytes: int
    default_deadline_ms: int
    max_deadline_ms: int


class RecordReader:
    """Validates and decodes the records of one tier's input topic."""

    def __init__(self, *, is_entry: bool, version: str, input_shape: list[int], input_dtype: str,
                 limits: Limits, app: str):
        self.is_entry, self.version, self.limits, self.app = is_entry, version, limits, app
        self.shape, self.dtype = input_shape, input_dtype if is_entry else "float32"
        self._internal = {f"{app}.{kind}" for kind in ("requests", "replies", "dlq", "training", "feedback")}
        self._layout: codec.TensorLayout | None = None  # of the last tensor record decoded

    def read(self, m: Any, received_ms: int) -> Request:
        try:
            return self._read(m, received_ms)
        except Rejected:
            raise
        except Exception as exc:  # a check this reader lacks: still a dead letter, never a crash
            raise Rejected("invalid", f"record could not be read: {type(exc).__name__}: {exc}") from None

    def _read(self, m: Any, received_ms: int) -> Request:
        value, key = m.value(), m.key()
        size = len(value) if value is not None else 0
        if size > self.limits.max_record_bytes:
            raise Rejected("oversized", f"record value of {size} bytes exceeds worker.max_record_bytes="
                                        f"{self.limits.max_record_bytes}")
        if key is not None and len(key) > MAX_KEY_BYTES:
            raise Rejected("oversized", f"record key of {len(key)} bytes exceeds {MAX_KEY_BYTES}")
        try:
            raw = m.headers() or []
        except Exception as exc:
            raise Rejected("headers", f"record headers could not be read: {exc}") from None
        try:
            header_bytes = sum(map(len, chain.from_iterable(raw)))  # one C loop: on every record's path
        except TypeError:  # a header without a value
            header_bytes = sum(len(k) + len(v or b"") for k, v in raw)
        if header_bytes > MAX_HEADER_BYTES:
            raise Rejected("oversized", f"record headers of {header_bytes} bytes exceed {MAX_HEADER_BYTES}")
        try:  # only the headers this reader uses are decoded (a dict of the raw values: one C call)
            headers = dict(raw)
            origin, deadline = codec.header_int(headers, codec.ORIGIN_TS), codec.header_int(headers, codec.DEADLINE)
            rid, reply_to = text(headers, codec.REQUEST_ID), text(headers, codec.REPLY_TO) or None
            if self.is_entry:
                entry, version, content_type = f"{m.partition()}/{m.offset()}", None, text(headers, codec.CONTENT_TYPE)
            else:
                entry, version, content_type = ((text(headers, codec.ENTRY) or "")[:MAX_ENTRY],
                                                text(headers, codec.VERSION), codec.TENSOR)
        except CodecError as exc:
            raise Rejected("headers", str(exc)) from None
        if not rid:
            raise Rejected("missing_header", f"missing header {codec.REQUEST_ID}")
        if len(rid) > codec.MAX_REQUEST_ID:
            raise Rejected("headers", f"{codec.REQUEST_ID} of {len(rid)} characters, at most {codec.MAX_REQUEST_ID}")
        if reply_to is not None and (not TOPIC_NAME.fullmatch(reply_to) or reply_to in self._internal
                                     or reply_to.startswith(f"{self.app}.v")):
            raise Rejected("reply_to", f"{codec.REPLY_TO} {reply_to[:80]!r} is not a topic answers may go to: "
                                       "a Kafka topic name ([A-Za-z0-9._-], at most 249) outside the "
                                       f"data-plane topics of {self.app}")
        if not self.is_entry:
            if not version:
                raise Rejected("missing_header", f"missing header {codec.VERSION} on an activation record")
            if version != self.version:
                raise Rejected("version", f"activations of model version {version[:40]} reached a worker of "
                                          f"version {self.version}; versions are never mixed")
        if origin is None:
            stamp = m.timestamp()[1]
            origin = stamp if stamp > 0 else received_ms
        if deadline is None:
            deadline = origin + self.limits.default_deadline_ms
        deadline = min(deadline, received_ms + self.limits.max_deadline_ms)
        try:  # a tensor record with the layout of the last one decodes with one frombuffer
            sample = self._layout.decode(value) if (value and self._layout is not None
                                                    and content_type in (None, codec.TENSOR)) else None
            if sample is None:
                sample = self._decode(value, content_type)
        except CodecError as exc:
            raise Rejected("decode", str(exc)) from None
        return Request(m, rid, origin, deadline, reply_to, entry, sample)

    def _decode(self, value: bytes | None, content_type: str | None) -> np.ndarray:
        """The sample of a record that does not have the last tensor layout (that layout is then this one's)."""
        if value and content_type in (None, codec.TENSOR):
            self._layout, sample = codec.TensorLayout.of(value, self.shape, self.dtype)
            return sample
        return codec.decode_input(value, content_type, self.shape, self.dtype)

    def stack(self, requests: list[Request]) -> tuple[list[Request], np.ndarray, list[Request]]:
        """The model input of a micro-batch's requests: the requests it holds, their samples stacked, and the
        requests whose sample holds NaN or infinite values (dead letters: ``Rejected("decode", codec.NOT_FINITE)``)."""
        batch = np.array([q.sample for q in requests])  # one C loop (np.stack has a Python one)
        finite = codec.finite_rows(batch)
        if finite is None:
            return requests, batch, []
        return ([q for q, ok in zip(requests, finite, strict=True) if ok], batch[finite],
                [q for q, ok in zip(requests, finite, strict=True) if not ok])
