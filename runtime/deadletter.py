"""Dead-letter records: a copy of what could not be processed, with the reason, that always fits the broker.

A client can send keys, values and headers up to the broker's limit (and the worker accepts values up to
``worker.max_record_bytes``), while the producer refuses records above its ``message.max.bytes`` (1 MB by
default) and a broker above its own. So the copy is cut to ``worker.dlq_max_bytes``: the value first, then
header values, then whole headers; ``tf-dlq-size`` keeps the original sizes and ``tf-dlq-origin`` points at
the original record (``topic/partition/offset``), which stays readable on the input topic until retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime import codec

MAX_KEY_BYTES = 1024  # of the key copied (the whole key counts against the record, see validation)
MAX_HEADER_KEY = 256  # characters of a copied header name
RESERVED_HEADERS = 4096  # bytes kept for the DLQ's own headers (reason, kind, origin, sizes)


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _headers_of(record: Any) -> list[tuple[str, bytes | None]]:
    try:
        return list(record.headers() or [])
    except Exception:  # headers that cannot be read at all: the reason says so already
        return []


def build(record: Any, kind: str, reason: str, tier: str, max_bytes: int) -> DeadLetter:
    """The DLQ copy of ``record`` (a confluent-kafka Message or alike), at most ``max_bytes`` in all."""
    key, value = record.key(), record.value()
    original = _headers_of(record)
    budget = max(max_bytes - RESERVED_HEADERS, 0)
    cut_key = key[:MAX_KEY_BYTES] if key is not None else None
    budget -= len(cut_key or b"")
    header_room = min(budget // 4, 16 * 1024)  # a quarter for the original headers, at most 16 KiB
    copied: list[tuple[str, bytes]] = []
    cut_headers = False
    for name, v in original:
        name, v = str(name)[:MAX_HEADER_KEY], b"" if v is None else bytes(v)
        room = header_room - len(name)
        if room <= 0:
            cut_headers = True
            continue
        cut_headers |= len(v) > room
        copied.append((name, v[:room]))
        header_room -= len(name) + min(len(v), room)
    budget -= sum(len(k) + len(v) for k, v in copied)
    cut_value = value[:max(budget, 0)] if value is not None else None
    truncated = [what for what, cut in (("key", cut_key != key), ("value", cut_value != value),
                                         ("headers", cut_headers)) if cut]
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    own = [(codec.ERROR, codec.readable(reason, 1000).encode()), (codec.ERROR_KIND, kind.encode()),
           (codec.SOURCE_TIER, tier.encode()),
           (codec.DLQ_ORIGIN, f"{codec.readable(str(topic), 300)}/{partition}/{offset}".encode()),
           (codec.DLQ_SIZE, f"key={len(key or b'')} value={len(value or b'')} headers={len(original)}".encode())]
    if truncated:
        own.append((codec.DLQ_TRUNCATED, ",".join(truncated).encode()))
    return DeadLetter(cut_key, cut_value, copied + own)
