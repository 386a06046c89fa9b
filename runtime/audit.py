"""Count every answer on APP.results for a set of request ids, independently of the client that sent them.

A reliability figure is only as good as what could have seen a late answer: the audit reads the whole
results topic from the beginning with a consumer group of its own, and returns only once no new record
has arrived for ``quiet_s`` (choose several deadlines plus the degrade graces, so a late answer from a
restarted tier would still be counted).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runtime import codec
from runtime.kafka import consumer_config
from runtime.settings import Settings


@dataclass
class Audit:
    """Answers per request id as found on the topic."""

    expected: int
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # request id -> answers, in order
    unreadable: int = 0

    @property
    def answered(self) -> int:
        return len(self.answers)

    @property
    def unanswered(self) -> int:
        return self.expected - self.answered

    @property
    def duplicated_ids(self) -> list[str]:
        return sorted(rid for rid, a in self.answers.items() if len(a) > 1)

    @property
    def extra_answers(self) -> int:
        return sum(len(a) - 1 for a in self.answers.values())

    @property
    def conflicting_ids(self) -> list[str]:
        """Ids answered more than once with different labels."""
        return sorted(rid for rid, a in self.answers.items() if len({x.get("label") for x in a}) > 1)

    @property
    def degraded(self) -> int:
        return sum(bool(a[0].get("degraded")) for a in self.answers.values())

    def per_tier(self) -> Counter:
        return Counter(a[0].get("tier") for a in self.answers.values())

    def summary(self) -> dict[str, Any]:
        return {"expected": self.expected, "answered": self.answered, "unanswered": self.unanswered,
                "ids_answered_more_than_once": len(self.duplicated_ids), "extra_answers": self.extra_answers,
                "conflicting_ids": len(self.conflicting_ids), "degraded": self.degraded,
                "per_tier": dict(self.per_tier())}


def audit_results(settings: Settings, request_ids: Iterable[str], *, quiet_s: float = 10.0,
                  timeout_s: float = 600.0, topic: str | None = None,
                  progress: Callable[[int], None] | None = None) -> Audit:
    """Every answer on ``APP.results`` for ``request_ids``, read after the topic went quiet."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    wanted = set(request_ids)
    topic = topic or settings.topic("results")
    out = Audit(expected=len(wanted))
    answers: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    consumer = Consumer(consumer_config(settings, f"{settings.app}.audit.{uuid.uuid4().hex[:12]}"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])  # no group join to wait for
    start = last_new = time.monotonic()
    try:
        while time.monotonic() - last_new < quiet_s and time.monotonic() - start < timeout_s:
            msgs = consumer.consume(1000, timeout=0.2)
            for m in msgs:
                if m.error():
                    continue
                last_new = time.monotonic()
                rid = (m.key() or b"").decode(errors="replace")
                if rid not in wanted:
                    continue
                try:
                    answers[rid].append(codec.decode_result(m.value()))
                except codec.CodecError:
                    out.unreadable += 1
            if msgs and progress is not None:
                progress(len(answers))
    finally:
        consumer.close()
    out.answers = dict(answers)
    return out
