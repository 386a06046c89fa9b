"""The ack/commit ledger of a tier worker: which input offsets may be committed, and when.

Micro-batches enter the ledger in consumption order. A batch's offsets are committed once it is published
(its inference done and every output produced), every output is acknowledged by the broker, and every
request it forwarded is resolved (answered by an upper tier, or answered degraded here and acknowledged),
and the same holds for every batch before it. So after a crash the input is replayed from the oldest
request this tier still had a stake in, and nothing it owned can be lost; the replay is made harmless by
the answer memory (`runtime.ownership.AnswerMemory`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tierflow.worker")


@dataclass
class Batch:
    """Offsets of one consumed micro-batch and what it still waits for."""

    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per (topic, partition)
    outstanding: int = 0  # outputs produced, not yet acknowledged
    unresolved: int = 0  # forwarded requests with no answer seen yet
    errors: list[str] = field(default_factory=list)
    published: bool = False
    records: int = 0  # records taken from the input topic

    def consumed(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self.offsets[key] = max(self.offsets.get(key, 0), offset + 1)

    def delivered(self, err: Any, msg: Any) -> None:
        """Delivery report of an output this batch must see acknowledged."""
        self.outstanding -= 1
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    @property
    def acknowledged(self) -> bool:
        return self.published and self.outstanding == 0

    @property
    def done(self) -> bool:
        return self.acknowledged and self.unresolved == 0


class BrokerRejected(RuntimeError):
    """The broker refused an output that must be delivered; its batch stays uncommitted."""


class CommitLedger:
    """Batches in consumption order; `take_done` pops the committable prefix."""

    def __init__(self) -> None:
        self._batches: deque[Batch] = deque()
        # Batches not yet seen acknowledged, oldest first. Batches are acknowledged roughly in order while
        # their forwards may stay unresolved for a long time, so the bound on in-flight work looks at this
        # short queue, not at every batch held for its forwards.
        self._unacknowledged: deque[Batch] = deque()

    def open(self, records: int) -> Batch:
        batch = Batch(records=records)
        self._batches.append(batch)
        self._unacknowledged.append(batch)
        return batch

    def take_done(self) -> dict[tuple[str, int], int]:
        """Offsets to commit: the highest of the done prefix per partition (raises BrokerRejected)."""
        offsets: dict[tuple[str, int], int] = {}
        while self._batches and self._batches[0].done:
            batch = self._batches[0]
            if batch.errors:
                raise BrokerRejected(f"broker rejected {len(batch.errors)} outputs, e.g. {batch.errors[0]}; "
                                     "their batch is not committed")
            self._batches.popleft()
            for key, off in batch.offsets.items():
                offsets[key] = max(offsets.get(key, 0), off)
        return offsets

    def commit(self, consumer: Any, final: bool = False) -> None:
        """Commit the done prefix on ``consumer`` (synchronously if ``final``)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = self.take_done()
        if not offsets or consumer is None:
            return
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=not final)
        except KafkaException as exc:  # e.g. partitions moved in a rebalance: the new owner re-reads them
            log.warning("commit failed", extra={"error": str(exc)})

    def unacknowledged(self) -> int:
        """Batches with outputs still unpublished or unacknowledged (the bound on in-flight work)."""
        queue = self._unacknowledged
        while queue and queue[0].acknowledged:
            queue.popleft()
        return sum(not b.acknowledged for b in queue)

    def oldest_unacknowledged(self) -> Batch | None:
        return next((b for b in self._unacknowledged if not b.acknowledged), None)

    def __len__(self) -> int:
        return len(self._batches)
