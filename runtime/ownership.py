"""Who answers a request, and until when: the answer-ownership rule of the data plane.

A request with deadline ``D`` (absolute epoch ms) climbs the tiers ``0`` (entry) .. ``n-1`` (top). Tier ``i``
works on what it holds until its window closes at ``close(i) = D + grace * (n-1-i)``: the top tier's at the
deadline, every tier below one ``grace`` later than the tier above it. The rule:

1. Only the entry tier publishes answers (APP.results, tf-reply-to). A tier above sends its answer to the
   entry tier (APP.replies, `runtime.answers`); the entry tier publishes the first one it sees for a
   request it still holds and drops any that comes after it answered. So exactly one answer per request is
   decided in one process, whatever the brokers' and tiers' timing.
2. A tier forwards only while the next tier's window is open; otherwise it answers itself now, flagged
   ``degraded`` when its exit was not confident.
3. A tier that forwarded a request and has seen no answer from above when its own window closes answers
   with its best prediction, ``degraded`` (a tier in the middle sends it down like any answer: it reaches the
   entry tier before the entry tier's own window closes, one grace later, unless that link is slower).
4. Work that reaches an upper tier after its window closed (a backlog after a restart, a short deadline)
   is dropped and counted as expired: the tier below answers it by rule 2 or 3.

The windows only shape *which* answer the entry tier sees first (the best one still in time), never whether
there is one or two. Clocks: every forward carries the sender's notion of now as its Kafka timestamp and an
upper tier never lets its clock run behind what it received (`TierClock`), so a tier whose clock is behind
its lower neighbour corrects itself; one that runs ahead only closes its window early (more degraded
answers). Replays after a crash or a rebalance are stopped by `AnswerMemory`.
"""

from __future__ import annotations

import enum
import heapq
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


class Action(enum.Enum):
    ANSWER = "answer"  # this tier's exit answers
    FORWARD = "forward"  # the next tier gets the activation
    DEGRADE = "degrade"  # answer now with an unconfident exit: the next tier's window has closed
    EXPIRE = "expire"  # drop: this (upper) tier's window has closed, the tier below answers


def window_close(deadline: int, index: int, n_tiers: int, grace_ms: int) -> int:
    """Epoch ms at which tier ``index`` stops publishing for a request with this deadline."""
    return deadline + grace_ms * (n_tiers - 1 - index)


def decide(now: int, close_at: int, grace_ms: int, *, entry: bool, top: bool, confident: bool) -> Action:
    """What a tier whose window closes at ``close_at`` (`window_close`) does with a request at ``now`` (rules 1,
    2 and 4); the next tier's window closes one grace earlier."""
    if not entry and now >= close_at:
        return Action.EXPIRE
    if confident or top:
        return Action.ANSWER
    if now >= close_at - grace_ms:
        return Action.DEGRADE
    return Action.FORWARD


class TierClock:
    """Epoch ms as a tier must read it: local time, corrected forward when records from the tier below
    carry timestamps later than the local clock at their arrival (this clock is behind the sender's).

    The correction is the largest such gap seen over the last ``window_s`` (two rotating buckets), capped at
    ``max_correction_ms`` so one record with a wild timestamp cannot shut a tier's windows for long.
    ``skew_ms`` shifts the local clock itself (fault injection: a tier whose clock is wrong).
    """

    def __init__(self, skew_ms: int = 0, max_correction_ms: int = 10_000, window_s: float = 30.0):
        self.skew_ms, self.max_correction_ms = skew_ms, max_correction_ms
        self._half = window_s / 2
        self._buckets = [0, 0]
        self._rotated = time.monotonic()

    def local(self) -> int:
        return int(time.time() * 1000) + self.skew_ms

    @property
    def correction_ms(self) -> int:
        return max(self._buckets)

    def now(self) -> int:
        return int(time.time() * 1000) + self.skew_ms + max(self._buckets)  # = local() + correction_ms

    def observe(self, sender_ms: int, local_ms: int) -> None:
        """A record stamped ``sender_ms`` by the tier below arrived at ``local_ms`` (this clock)."""
        mono = time.monotonic()
        if mono - self._rotated > self._half:
            self._buckets = [self._buckets[1], 0]
            self._rotated = mono
        gap = sender_ms - local_ms
        if 0 < gap <= self.max_correction_ms and gap > self._buckets[1]:
            self._buckets[1] = gap


class AnswerMemory:
    """Request ids known to be answered, each with where its request entered (``partition/offset`` on
    ``APP.requests``, "" if unknown), oldest forgotten first beyond ``capacity``.

    Fed by every answer seen on ``APP.results`` (and by the tier's own answers at once); after a restart it is
    reloaded from ``APP.results`` before the tier consumes, so a replayed record is recognised.
    """

    def __init__(self, capacity: int = 1_000_000):
        self.capacity = capacity
        self._entries: dict[str, str] = {}
        # Where the answered request entered, "" if unknown, None if it is not known to be answered (the
        # dict's own get: asked for every record a tier consumes).
        self.entry_of: Callable[[str], str | None] = self._entries.get

    def add(self, request_id: str, entry: str = "") -> None:
        if request_id not in self._entries:
            self._entries[request_id] = entry
            if len(self._entries) > self.capacity:
                del self._entries[next(iter(self._entries))]
        elif entry and not self._entries[request_id]:
            self._entries[request_id] = entry

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(slots=True)
class Pending:
    """A forwarded request: what this tier answers with if its window closes without an answer (rule 3)."""

    request_id: str
    close_at: int  # epoch ms (TierClock)
    label: int
    confidence: float
    exit_id: int
    reply_to: str | None
    origin_ts: int | None
    received_ts: int
    entry: str
    batch: Any  # the ledger batch whose offsets wait for this request to be resolved


def known_entry(request_id: str, memory: AnswerMemory, pending: PendingForwards,
                in_progress: dict[str, str]) -> str | None:
    """Where an already known request entered ("" if unknown): answered, forwarded or being served here;
    None if the request is new to this tier."""
    known = memory.entry_of(request_id)
    if known is None:
        p = pending.get(request_id)
        known = p.entry if p is not None else in_progress.get(request_id)
    return known


class PendingForwards:
    """Forwarded requests by id, and their window closes in time order."""

    def __init__(self) -> None:
        self._by_id: dict[str, Pending] = {}
        self._closes: list[tuple[int, str]] = []
        self.get: Callable[[str], Pending | None] = self._by_id.get  # the pending forward of a request id

    def add(self, p: Pending) -> None:
        self._by_id[p.request_id] = p
        heapq.heappush(self._closes, (p.close_at, p.request_id))

    def resolve(self, request_id: str) -> Pending | None:
        """The pending forward an answer resolves (None if it was not pending here)."""
        return self._by_id.pop(request_id, None)

    def due(self, now: int) -> Iterator[Pending]:
        """Pending forwards whose window has closed by ``now``, removed as they are yielded."""
        while self._closes and self._closes[0][0] <= now:
            close_at, rid = heapq.heappop(self._closes)
            p = self._by_id.get(rid)
            if p is not None and p.close_at == close_at:
                del self._by_id[rid]
                yield p

    def next_close(self) -> int | None:
        while self._closes and self._closes[0][1] not in self._by_id:
            heapq.heappop(self._closes)
        return self._closes[0][0] if self._closes else None

    def started_before(self, epoch_ms: float) -> int:
        """Forwards in flight whose request originated (or, without an origin, arrived here) before ``epoch_ms``:
        with ``now - objective`` the misses known before their answer comes (`runtime.adaptive`)."""
        return sum((p.origin_ts or p.received_ts) < epoch_ms for p in self._by_id.values())

    def last_close(self) -> int | None:
        return max((p.close_at for p in self._by_id.values()), default=None)

    def __len__(self) -> int:
        return len(self._by_id)
