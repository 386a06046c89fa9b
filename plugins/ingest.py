"""Ingest: the training topic (APP.training) -> dataset shards in S3 + a manifest (the dataset version).

Exactly once, across crashes, without transactions:

1. Records are grouped per partition into offset *blocks* of `shard_records` offsets (block = offset //
   shard_records), so shard boundaries do not depend on timing. A block's good records become one
   shard (`ml.shards` NPZ format) named by topic/partition/first-last offset (`ml.shards.shard_key`):
   a re-run of the same range writes the same key.
2. The shard is uploaded, malformed records of the block are flushed to APP.dlq (with `tf-error`),
   and only then the partition's offset is committed (synchronously).
3. At the end the manifest is built from the S3 listing, not from this run's memory, so shards of a run
   that crashed after uploading still count. Overlapping shards (a crashed run's partial block and the
   re-run's full block) are resolved newest-upload-first: a shard is taken only if it overlaps no
   newer one. A re-run restarts at the last commit, so its shards cover everything after it, and
   nothing is listed twice; records beyond the commit are read again by the next run, so nothing is
   skipped.

A run that adds nothing writes no new manifest. Dataset versions are UTC timestamps (sortable):
`s3://<bucket>/<ingest.prefix>/<app>/versions/<version>/manifest.json`.

The DLQ is at-least-once: a crash between a DLQ send and the commit repeats that send on the re-run
(each DLQ record carries `tf-source-partition`/`tf-source-offset` to de-duplicate on).

Entry points: `ingest(settings) -> IngestResult` (Airflow task, `result.as_dict()` is its XCom) and
`python -m plugins.ingest` (prints the result as JSON). No heavy import at module top.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from runtime import codec

log = logging.getLogger(__name__)

SOURCE_TOPIC = "tf-source-topic"
SOURCE_PARTITION = "tf-source-partition"
SOURCE_OFFSET = "tf-source-offset"
WRITTEN_MS = "tf-written-ms"  # S3 user metadata of a shard: upload time, orders overlapping shards


@dataclass
class IngestResult:
    app: str
    topic: str
    version: str | None  # the new dataset version, None if this run added nothing
    manifest_uri: str | None  # s3://... of the new manifest (None if nothing new)
    latest_manifest_uri: str | None  # newest manifest after this run (new or previous)
    records: int  # samples in the newest dataset version
    new_records: int  # good records consumed by this run
    malformed: int  # records sent to the DLQ by this run
    shards_written: int
    bytes_consumed: int  # record values + keys read from Kafka by this run
    seconds: float
    active_seconds: float  # from the first record to the end (without the group join and idle wait)
    class_counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestEvent:
    """Progress of a run, for displays and logs: "uploaded", "committed", "dlq", "manifest"."""

    kind: str
    partition: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    key: str | None = None
    consumed: int = 0
    malformed: int = 0


@dataclass
class _Block:
    """Records of one partition's offset block waiting for their shard upload and commit."""

    block: int
    values: list[bytes] = field(default_factory=list)  # tensor records: dataset header + raw sample bytes
    ys: list[int] = field(default_factory=list)
    first: int = -1  # first and last offset of a good record
    last: int = -1
    last_seen: int = -1  # last offset consumed (good or malformed): the commit is last_seen + 1


@dataclass
class _Upload:
    """A shard upload in flight; its partition's offset is committed once it (and all before it) finished."""

    future: Any
    commit: Any  # TopicPartition(topic, partition, last_seen + 1)
    event: IngestEvent | None  # "uploaded" (None: a block of malformed records only, nothing to upload)


class Layout:
    """Object keys of one application's datasets."""

    def __init__(self, prefix: str, app: str):
        self.root = f"{prefix.strip('/')}/{app}"

    @property
    def shards(self) -> str:
        return f"{self.root}/shards"

    @property
    def versions(self) -> str:
        return f"{self.root}/versions/"

    def manifest(self, version: str) -> str:
        return f"{self.versions}{version}/manifest.json"

    @property
    def classes(self) -> str:
        """Class names learnt from the labels before the first version exists (append-only)."""
        return f"{self.root}/classes.json"


def new_version() -> str:
    """UTC timestamp with milliseconds: sortable, readable, unique for one ingest at a time."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}Z"


def parse_shard_key(key: str) -> tuple[int, int, int] | None:
    """(partition, first_offset, last_offset) of a `ml.shards.shard_key` name, None if not one."""
    parts = key.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].startswith("p") or not parts[2].endswith(".npz"):
        return None
    try:
        first, last = parts[2][:-4].split("-")
        return int(parts[1][1:]), int(first), int(last)
    except ValueError:
        return None


def select_shards(candidates: Sequence[tuple[str, int, int, int, int]]) -> list[tuple[str, int, int, int, int]]:
    """Pick non-overlapping shards, newest upload first: (key, partition, first, last, written_ms).

    Pure function: the exactly-once argument of the module docstring lives here.
    """
    taken: dict[int, list[tuple[int, int]]] = {}
    chosen = []
    for cand in sorted(candidates, key=lambda c: (-c[4], -(c[3] - c[2]), c[0])):
        _, partition, first, last, _ = cand
        ranges = taken.setdefault(partition, [])
        if any(first <= b and a <= last for a, b in ranges):
            continue
        ranges.append((first, last))
        chosen.append(cand)
    return sorted(chosen, key=lambda c: (c[1], c[2]))


def latest_manifest(store: Any, layout: Layout) -> tuple[str | None, Any]:
    """(key, ShardManifest) of the newest dataset version, or (None, None)."""
    from ml.shards import parse_manifest

    keys = sorted(k for k in store.keys(layout.versions) if k.endswith("/manifest.json"))
    if not keys:
        return None, None
    return keys[-1], parse_manifest(store.get_bytes(keys[-1]))


def _default_classes() -> list[str]:
    from ml.datasets import FASHION_MNIST_CLASSES

    return list(FASHION_MNIST_CLASSES)


class _Run:
    """One ingest run's state; `ingest()` below is the public entry point."""

    def __init__(self, settings: Any, class_names: list[str] | None, shape: Sequence[int] | None,
                 dtype: str | None, on_event: Callable[[IngestEvent], None] | None):
        from plugins.hooks.datasets import DatasetStoreHook

        self.settings = settings
        self.cfg = settings.ingest
        self.topic = settings.topic("training")
        self.dlq_topic = settings.topic("dlq")
        self.store = DatasetStoreHook(settings=settings).store()
        self.layout = Layout(self.cfg.prefix, settings.app)
        self.prev_key, self.prev = latest_manifest(self.store, self.layout)
        # A first version without given class names learns them from the labels: names in the order they
        # first arrive, or Fashion-MNIST's when the first label is a class id.
        # They are saved (Layout.classes) before any shard that uses a new one is uploaded, and a re-run
        # starts from them, so a class id never changes meaning across crashes.
        self.open_classes = not class_names and self.prev is None
        self.class_names = list(class_names or (self.prev.class_names if self.prev else []))
        if self.open_classes and self.store.head(self.layout.classes) is not None:
            self.class_names = json.loads(self.store.get_bytes(self.layout.classes))
        self.saved_classes = len(self.class_names)
        if self.prev and class_names and list(class_names) != self.prev.class_names:
            raise ValueError(f"class_names {class_names} differ from the dataset's {self.prev.class_names}; "
                             "use another app name for a different label set")
        if shape is None and self.prev is not None:
            shape, dtype = self.prev.sample.shape, self.prev.sample.dtype
        self.shape = [int(d) for d in shape] if shape is not None else None
        self.dtype = str(np.dtype(dtype)) if dtype is not None else None
        if (self.shape is None) != (self.dtype is None):
            raise ValueError("give both sample shape and dtype, or neither (then the first record decides)")
        self.on_event = on_event or (lambda _e: None)
        self.label_ids: dict[bytes, int] = {}
        self.dlq_errors: list[str] = []
        self.prefix = b""  # tensor-record header every dataset sample starts with (fast path)
        self.sample_bytes = 0
        if self.shape is not None:
            self._set_spec(self.shape, self.dtype)
        self.blocks: dict[int, _Block] = {}
        self.written: dict[str, tuple[int, int, int, int, Any]] = {}  # key -> (p, first, last, ms, entry)
        self.consumed = self.good = self.malformed = self.bytes = 0
        self.first_record_at: float | None = None
        self.class_counts = np.zeros(len(self.class_names), dtype=np.int64)

    # -- decoding --------------------------------------------------------------------------------
    def _set_spec(self, shape: Sequence[int], dtype: str) -> None:
        self.shape, self.dtype = [int(d) for d in shape], str(np.dtype(dtype))
        record = codec.encode_tensor(np.zeros(self.shape, dtype=self.dtype))
        self.sample_bytes = int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize
        self.prefix = record[:len(record) - self.sample_bytes]

    def label_id(self, label: bytes | None) -> int:
        from ml.shards import encode_labels
        if not label:
            raise codec.CodecError(f"missing {codec.LABEL} header (training samples need a label)")
        y = self.label_ids.get(label)
        if y is None:
            text = label.decode("utf-8", "replace")
            if self.open_classes:
                self._learn_class(text)
            y = self.label_ids[label] = int(encode_labels([text], self.class_names)[0])
        return y

    def _learn_class(self, name: str) -> None:
        if name.strip().lstrip("-").isdigit():
            if not self.class_names:  # class ids from the first label on: the default label set
                self.open_classes = False
                self.class_names = _default_classes()
                self.class_counts = np.zeros(len(self.class_names), dtype=np.int64)
        elif name not in self.class_names:
            self.class_names.append(name)
            self.class_counts = np.append(self.class_counts, 0)
            log.info("class %d: %r (first seen)", len(self.class_names) - 1, name)

    def decode(self, msg: Any) -> tuple[bytes, int]:
        """(raw sample bytes in the dataset's shape/dtype, class id) of a training record, or
        CodecError/ValueError with the DLQ reason. Tensor records of exactly the dataset's shape and
        dtype take a fast path (one bytes comparison); anything else goes through runtime.codec."""
        label = ctype = None
        for key, value in msg.headers() or ():
            if key == codec.LABEL:
                label = value
            elif key == codec.CONTENT_TYPE:
                ctype = value
        y = self.label_id(label)
        value = msg.value()
        tensor = ctype in (None, b"", codec.TENSOR.encode())
        if tensor and self.prefix and value is not None and len(value) == len(self.prefix) + self.sample_bytes \
                and value.startswith(self.prefix):
            return value[len(self.prefix):], y
        ctype_s = ctype.decode("utf-8", "replace") if ctype else None
        if self.shape is None:
            if not tensor:
                raise codec.CodecError(f"{ctype_s} sample before the sample shape is known; send tensors first "
                                       "or give the shape")
            x = codec.decode_tensor(value)
            self._set_spec(x.shape, str(x.dtype))
            log.info("sample spec from the first record: shape %s dtype %s", self.shape, self.dtype)
            return x.tobytes(), y
        try:
            x = codec.decode_input(value, ctype_s, self.shape, self.dtype)
        except codec.CodecError as exc:
            raise codec.CodecError(f"{exc} (dataset samples are {self.shape} {self.dtype})") from exc
        return np.ascontiguousarray(x).tobytes(), y

    # -- per record (the hot loop: plain attribute and dict access, C calls once each) ---------------
    def take_batch(self, msgs: list[Any], producer: Any, at_eof: set[int]) -> int:
        """Take one consumed batch in order; partition-EOF events update at_eof. Returns records taken."""
        from confluent_kafka import KafkaError, KafkaException

        shard_records, blocks, label_ids = self.cfg.shard_records, self.blocks, self.label_ids
        label_key, ctype_key, tensor_type = codec.LABEL, codec.CONTENT_TYPE, codec.TENSOR.encode()
        prefix, size = self.prefix, len(self.prefix) + self.sample_bytes
        nbytes = taken = 0
        for msg in msgs:
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(msg.error())
                at_eof.add(msg.partition())
                continue
            partition, offset, value = msg.partition(), msg.offset(), msg.value()
            if at_eof and partition in at_eof:
                at_eof.discard(partition)
            taken += 1
            nbytes += len(value) if value is not None else 0
            block = blocks.get(partition)
            if block is None or block.block != offset // shard_records:
                if block is not None:
                    self.flush([partition], producer)  # the previous block is complete: upload it
                block = blocks[partition] = _Block(offset // shard_records)
            block.last_seen = offset
            headers = dict(msg.headers() or ())
            y = label_ids.get(headers.get(label_key))
            ctype = headers.get(ctype_key)
            if (y is not None and prefix and value is not None and len(value) == size
                    and (ctype is None or ctype == tensor_type) and value.startswith(prefix)):
                block.values.append(value)
            else:
                try:
                    raw, y = self.decode(msg)
                except (codec.CodecError, ValueError) as exc:
                    self.dead_letter(msg, exc, producer)
                    continue
                prefix, size = self.prefix, len(self.prefix) + self.sample_bytes  # set by the first record
                block.values.append(prefix + raw)
            block.ys.append(y)
            if block.first < 0:
                block.first = offset
            block.last = offset
        self.consumed += taken
        self.bytes += nbytes
        return taken

    def dead_letter(self, msg: Any, exc: Exception, producer: Any) -> None:
        self.malformed += 1
        headers = [*(msg.headers() or []), (codec.ERROR, str(exc)[:500].encode()),
                   (SOURCE_TOPIC, msg.topic().encode()), (SOURCE_PARTITION, str(msg.partition()).encode()),
                   (SOURCE_OFFSET, str(msg.offset()).encode())]
        producer.produce(self.dlq_topic, key=msg.key(), value=msg.value(), headers=headers,
                         on_delivery=self._dlq_delivered)
        producer.poll(0)

    def _dlq_delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.dlq_errors.append(str(err))

    # -- upload (background), then DLQ flush, then commit ---------------------------------------------
    def flush(self, partitions: list[int], producer: Any) -> None:
        """Hand the blocks of these partitions to the uploader; commits follow in `complete()`."""
        from confluent_kafka import TopicPartition

        from ml.shards import shard_key

        if self.open_classes and len(self.class_names) > self.saved_classes:
            self.store.put_bytes(self.layout.classes, json.dumps(self.class_names).encode(),
                                 content_type="application/json")
            self.saved_classes = len(self.class_names)
        for partition in sorted(set(partitions)):
            block = self.blocks.pop(partition, None)
            if block is None:
                continue
            commit = TopicPartition(self.topic, partition, block.last_seen + 1)
            if not block.values:
                self.uploads.append(_Upload(None, commit, None))
                continue
            self.good += len(block.ys)
            ys = np.asarray(block.ys, dtype=np.int64)
            self.class_counts += np.bincount(ys, minlength=len(self.class_names))
            key = shard_key(self.topic, partition, block.first, block.last, prefix=self.layout.shards)
            future = self.uploader.submit(self._upload, partition, block, ys, key)
            self.uploads.append(_Upload(future, commit, IngestEvent(
                "uploaded", partition, block.first, block.last, key, self.consumed, self.malformed)))
        self.complete(producer, wait=False)

    def _upload(self, partition: int, block: _Block, ys: np.ndarray, key: str) -> None:
        """Build the shard and put it (uploader thread: numpy, sha256 and sockets release the GIL)."""
        from ml.shards import ShardSource, write_shard

        n, head = len(block.values), len(self.prefix)
        rows = np.frombuffer(b"".join(block.values), dtype=np.uint8).reshape(n, head + self.sample_bytes)
        x = np.ascontiguousarray(rows[:, head:]).view(self.dtype).reshape(n, *self.shape)
        data, entry = write_shard(x, ys, key, compress=self.cfg.compress,
                                  source=ShardSource(topic=self.topic, partition=partition,
                                                     first_offset=block.first, last_offset=block.last))
        written_ms = int(time.time() * 1000)
        self.store.put_bytes(key, data, {"count": str(entry.count), "sha256": entry.sha256,
                                         WRITTEN_MS: str(written_ms), "shape": json.dumps(self.shape),
                                         "dtype": str(self.dtype)}, sha256=entry.sha256)
        self.written[key] = (partition, block.first, block.last, written_ms, entry)

    def complete(self, producer: Any, wait: bool) -> None:
        """Commit the offsets of finished uploads, oldest first; with wait, of all of them."""
        done: dict[int, Any] = {}
        while self.uploads and (wait or self.uploads[0].future is None or self.uploads[0].future.done()):
            up = self.uploads.popleft()
            if up.future is not None:
                up.future.result()  # an upload error propagates: nothing after it is committed
                self.on_event(up.event)
            done[up.commit.partition] = up.commit
        if not done:
            return
        if len(producer) and producer.flush(30):
            raise RuntimeError(f"{len(producer)} dead-letter records not delivered to {self.dlq_topic}; "
                               "not committing")
        if self.dlq_errors:  # never commit past a malformed record that did not reach the DLQ
            raise RuntimeError(f"{len(self.dlq_errors)} dead-letter records failed ({self.dlq_errors[0]}); "
                               "not committing")
        # Asynchronous is safe: the commit is only *sent* after the upload; if it is lost in a crash,
        # the re-run reads those records again and rewrites the same shard keys. The last one waits.
        self.consumer.commit(offsets=list(done.values()), asynchronous=not wait)
        for tp in done.values():
            self.on_event(IngestEvent("committed", tp.partition, None, tp.offset - 1, None, self.consumed,
                                      self.malformed))

    # -- the manifest ------------------------------------------------------------------------------
    def build_manifest(self) -> tuple[str | None, Any]:
        from ml.shards import ShardEntry, ShardSource, new_manifest

        prev_entries = {e.key: e for e in (self.prev.shards if self.prev else [])}
        candidates, entries = [], {}
        for key in self.store.keys(f"{self.layout.shards}/{self.topic}/"):
            parsed = parse_shard_key(key)
            if parsed is None:
                continue
            if key in self.written:
                p, first, last, ms, entry = self.written[key]
            else:
                meta = self.store.head(key) or {}
                if "count" not in meta or "sha256" not in meta:
                    log.warning("ignoring %s: no count/sha256 metadata (not written by ingest)", key)
                    continue
                p, first, last = parsed
                ms = int(meta.get(WRITTEN_MS, "0"))
                if self.shape is None and "shape" in meta and "dtype" in meta:  # a crashed run's shards
                    self._set_spec(json.loads(meta["shape"]), meta["dtype"])
                entry = ShardEntry(key=key, count=int(meta["count"]), sha256=meta["sha256"],
                                   source=ShardSource(topic=self.topic, partition=p, first_offset=first,
                                                      last_offset=last))
            candidates.append((key, p, first, last, ms))
            entries[key] = entry
        chosen = [entries[c[0]] for c in select_shards(candidates)]
        if self.shape is None or not chosen:
            return None, None
        unchanged = self.prev is not None and [(e.key, e.sha256) for e in chosen] == [
            (e.key, e.sha256) for e in self.prev.shards]
        if unchanged:
            return None, None
        version = new_version()
        manifest = new_manifest(self.settings.app, version, self.class_names, self.shape, self.dtype, metadata={
            "topic": self.topic, "group_id": self.group_id, "previous_version": self.prev.version if self.prev else None,
            "shard_records": self.cfg.shard_records, "ingested_by_run": self.good,
            "replaced_shards": sorted(set(prev_entries) - {e.key for e in chosen}),
        })
        manifest.shards = chosen
        key = self.layout.manifest(version)
        self.store.put_bytes(key, manifest.to_bytes(), content_type="application/json")
        self.on_event(IngestEvent("manifest", key=key, consumed=self.consumed, malformed=self.malformed))
        return key, manifest

    @property
    def group_id(self) -> str:
        return f"{self.cfg.group_id}.{self.settings.app}"

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, max_records: int, idle_timeout_s: float) -> IngestResult:
        from confluent_kafka import Consumer, Producer

        from runtime.kafka import consumer_config, ensure_topics, producer_config

        started = time.monotonic()
        ensure_topics(self.settings, [self.topic, self.dlq_topic])
        self.store.ensure_bucket()
        self.consumer = Consumer(consumer_config(self.settings, self.group_id, **{"enable.partition.eof": True}))
        self.uploader = ThreadPoolExecutor(max_workers=self.cfg.upload_concurrency,
                                           thread_name_prefix="ingest-upload")
        self.uploads: deque[_Upload] = deque()
        producer = Producer(producer_config(self.settings))
        assigned: set[int] = set()
        at_eof: set[int] = set()

        def on_assign(_consumer: Any, partitions: list[Any]) -> None:
            assigned.update(tp.partition for tp in partitions)

        def on_revoke(_consumer: Any, partitions: list[Any]) -> None:
            # Another ingest joined: finish our blocks of the lost partitions before giving them up.
            # After a failure (close() also revokes), commit nothing more: the re-run reads them again.
            if not failed:
                lost = [tp.partition for tp in partitions if tp.partition in self.blocks]
                if lost:
                    self.flush(lost, producer)
                self.complete(producer, wait=True)
            for tp in partitions:
                assigned.discard(tp.partition)
                at_eof.discard(tp.partition)

        failed = False
        self.consumer.subscribe([self.topic], on_assign=on_assign, on_revoke=on_revoke)
        last_record = time.monotonic()
        try:
            while not (max_records and self.consumed >= max_records):
                # consume() blocks until the batch is full or the timeout: once records flow, a short
                # timeout so a partial last batch (the records before EOF) does not wait 0.2 s.
                batch = self.consumer.consume(num_messages=min(1000, max_records - self.consumed)
                                              if max_records else 1000,
                                              timeout=0.2 if self.first_record_at is None else 0.01)
                taken = self.take_batch(batch, producer, at_eof) if batch else 0
                self.complete(producer, wait=False)
                if taken:
                    last_record = time.monotonic()
                    if self.first_record_at is None:
                        self.first_record_at = last_record
                elif not assigned:
                    last_record = time.monotonic()  # the idle clock starts once partitions are ours
                if assigned and (assigned <= at_eof or time.monotonic() - last_record > idle_timeout_s):
                    break
            self.flush(list(self.blocks), producer)  # partial last blocks
            self.complete(producer, wait=True)
            key, manifest = self.build_manifest()
        except BaseException:
            failed = True
            raise
        finally:
            self.uploader.shutdown(wait=True)
            self.consumer.close()
            producer.flush(10)
        latest_key = key or self.prev_key
        records = manifest.count if manifest is not None else (self.prev.count if self.prev else 0)
        return IngestResult(
            app=self.settings.app, topic=self.topic, version=manifest.version if manifest else None,
            manifest_uri=self.store.uri(key) if key else None,
            latest_manifest_uri=self.store.uri(latest_key) if latest_key else None, records=records,
            new_records=self.good, malformed=self.malformed, shards_written=len(self.written),
            bytes_consumed=self.bytes, seconds=time.monotonic() - started,
            active_seconds=time.monotonic() - (self.first_record_at or time.monotonic()),
            class_counts={n: int(c) for n, c in zip(self.class_names, self.class_counts, strict=True) if c})


def ingest(settings: Any = None, *, class_names: list[str] | None = None, sample_shape: Sequence[int] | None = None,
           sample_dtype: str | None = None, max_records: int | None = None, idle_timeout_s: float | None = None,
           on_event: Callable[[IngestEvent], None] | None = None) -> IngestResult:
    """Drain APP.training into a new dataset version in S3; see the module docstring.

    class_names defaults to the previous version's, else is learnt from the labels (class names in the order
    they first arrive, or Fashion-MNIST's when labels are class ids); sample shape/dtype to the
    previous version's, else the first good record's. `max_records`/`idle_timeout_s` default to
    Settings.ingest. `on_event` sees every upload/commit (progress displays; tests use it to crash a
    run between an upload and its commit).
    """
    from plugins.hooks.kafka import KafkaClusterHook
    from runtime.settings import get_settings

    # The Kafka cluster of Airflow Connection `tierflow_kafka` if one is defined, else the settings'.
    settings = KafkaClusterHook(settings=settings or get_settings()).client_settings()
    if settings.ingest.shard_records < 1:
        raise ValueError(f"ingest.shard_records must be >= 1, got {settings.ingest.shard_records}")
    if settings.ingest.upload_concurrency < 1:
        raise ValueError(f"ingest.upload_concurrency must be >= 1 (TIERFLOW_INGEST__UPLOAD_CONCURRENCY), got "
                         f"{settings.ingest.upload_concurrency}")
    run = _Run(settings, class_names, sample_shape, sample_dtype, on_event)
    result = run.run(settings.ingest.max_records if max_records is None else max_records,
                     settings.ingest.idle_timeout_s if idle_timeout_s is None else idle_timeout_s)
    log.info("ingest %s: %d new records, %d malformed, %d shards, version %s (%d records, %.1f MB in %.1fs)",
             result.topic, result.new_records, result.malformed, result.shards_written, result.version,
             result.records, result.bytes_consumed / 1e6, result.seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m plugins.ingest`: one run with Settings from the environment; JSON result on stdout,
    one line per upload/commit on stderr."""
    parser = argparse.ArgumentParser(prog="python -m plugins.ingest", description=main.__doc__)
    parser.add_argument("--max-records", type=int, default=None)
    parser.add_argument("--idle-timeout", type=float, default=None, help="seconds without records that end the run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")

    def show(event: IngestEvent) -> None:
        print(f"{event.kind} p={event.partition} {event.first_offset}-{event.last_offset} {event.key or ''} "
              f"consumed={event.consumed} malformed={event.malformed}", file=sys.stderr, flush=True)

    result = ingest(max_records=args.max_records, idle_timeout_s=args.idle_timeout, on_event=show)
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
