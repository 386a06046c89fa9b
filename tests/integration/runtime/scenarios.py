"""Fault-injection runs shared by the reliability tests and `tests/bench/bench_reliability.py`.

A run streams requests at a fixed rate straight to ``APP.requests``, optionally kills (SIGKILL) or stops
(SIGTERM) one tier's worker part-way and restarts it after ``down_s``, then waits until the results topic is
quiet and counts every answer there with `runtime.audit` (never with the sender's view).
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np

from runtime import codec
from runtime.audit import Audit, audit_results
from runtime.kafka import ensure_topics, producer_config
from runtime.local import LocalDeployment
from runtime.settings import Settings


@dataclass
class FaultRun:
    audit: Audit
    ids: list[str]
    deadlines: list[int]  # epoch ms, per request
    down_at: float | None  # epoch s the worker was killed or stopped
    up_at: float | None  # epoch s the restarted worker was ready

    def degraded_outside_outage(self, margin_s: float = 3.0) -> list[str]:
        """Ids answered degraded whose deadline did not pass while the tier was down (or within ``margin_s``
        after it was ready again, while it caught up with its backlog)."""
        out = []
        for rid, deadline in zip(self.ids, self.deadlines, strict=True):
            answers = self.audit.answers.get(rid)
            if answers and answers[0]["degraded"]:
                t = deadline / 1000
                if self.down_at is None or not self.down_at - 0.5 <= t <= (self.up_at or t) + margin_s:
                    out.append(rid)
        return out


def stream_with_fault(settings: Settings, deployment: LocalDeployment, x: np.ndarray, *, n: int, rate: float,
                      deadline_ms: int, tier: str | None = None, sig: int = signal.SIGKILL, fault_at: float = 0.3,
                      down_s: float = 30.0, quiet_s: float | None = None) -> FaultRun:
    """Send ``n`` requests at ``rate``/s (deadline ``deadline_ms`` after sending; negative: already past);
    hit ``tier`` with ``sig`` after ``fault_at`` of them and restart it ``down_s`` later; audit the results."""
    from confluent_kafka import Producer

    run = uuid.uuid4().hex[:8]
    ids, deadlines = [f"{run}-{i}" for i in range(n)], []
    topic = settings.topic("requests")
    ensure_topics(settings, [topic, settings.topic("results")])
    producer = Producer(producer_config(settings))
    warmup = f"{settings.app}.scenario-warmup"  # a new idempotent producer needs its id before the first send
    ensure_topics(settings, [warmup])
    producer.produce(warmup, value=b"")
    assert producer.flush(30) == 0
    payloads = [codec.encode_tensor(x[i % len(x)]) for i in range(min(n, len(x)))]
    times: dict[str, float] = {}

    def restart() -> None:
        if sig != signal.SIGKILL:
            worker.stop(120)  # SIGTERM: the worker drains what it holds, then exits
        time.sleep(max(0.0, times["down"] + down_s - time.time()))
        worker.start()
        worker.wait_ready(300)
        times["up"] = time.time()

    restarter = None
    start = time.monotonic()
    for i, rid in enumerate(ids):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        origin = codec.now_ms()
        deadlines.append(origin + deadline_ms)
        headers = codec.make_headers(rid, origin_ts=origin, deadline=origin + deadline_ms, content_type=codec.TENSOR)
        while True:
            try:
                producer.produce(topic, key=rid, value=payloads[i % len(payloads)], headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if tier is not None and i == int(fault_at * n):
            worker = deployment[tier]
            times["down"] = time.time()
            if sig == signal.SIGKILL:
                worker.kill()
            restarter = threading.Thread(target=restart, daemon=True)
            restarter.start()
    assert producer.flush(60) == 0
    if restarter is not None:
        restarter.join(down_s + 400)
    quiet = quiet_s if quiet_s is not None else max(5.0, 3 * (max(deadline_ms, 0) + 3 * settings.worker.degrade_grace_ms) / 1000)
    audit = audit_results(settings, ids, quiet_s=quiet)
    return FaultRun(audit, ids, deadlines, times.get("down"), times.get("up"))
