"""The device site's load: open-loop phases of requests, then an independent count of APP.results.

Runs as its own process inside the device namespace (``python -m infra.continuum.load SPEC.json``),
because its Kafka clients must connect from the device's addresses across the emulated links. Settings
come from the ``TIERFLOW_*`` environment like a worker's. Each phase sends at a fixed rate whatever
the answers (open loop: a slow system gets a queue, not fewer requests), then waits for the answers
to the phase's requests (at most deadline + ``drain_s``), then stays quiet for the phase's ``quiet_s`` if it
has one (so a Prometheus scrape falls between phases). After the last phase and ``settle_s`` of
quiet, a fresh consumer reads APP.results from the beginning and counts every answer per request id
— the client keeps only the first, so duplicates and lost answers are judged from the topic itself.

Progress and phase boundaries go to stdout as JSON lines (``{"event": ...}``); the report goes to the
spec's ``out`` file.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

UNANSWERED_MS = 1e12  # an unanswered request in percentiles (inf would turn them into nan)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t_ms": time.time() * 1000, **fields}), flush=True)


def run_phase(client: Any, phase: dict[str, Any], x: list[bytes], start_index: int, run: str,
              deadline_ms: int, drain_s: float) -> list[dict[str, Any]]:
    rate = float(phase["rate"])
    n = int(phase.get("n") or round(rate * float(phase["duration_s"])))
    name = phase["name"]
    emit("phase_start", name=name, rate=rate, n=n)
    ids = []
    start = time.monotonic()
    last_report = start
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        idx = (start_index + i) % len(x)
        rid = f"{run}-{name}-{i}"
        client.send(rid, x[idx])
        ids.append((rid, idx))
        if time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            emit("progress", name=name, sent=i + 1, n=n, answered=len(client.answers))
    client.flush()
    send_s = time.monotonic() - start
    emit("phase_sent", name=name, sent=n, seconds=round(send_s, 3))
    wait_until = time.monotonic() + deadline_ms / 1000 + drain_s
    while time.monotonic() < wait_until:
        with client._lock:
            missing = sum(1 for rid, _ in ids if rid not in client.answers)
        if not missing:
            break
        time.sleep(0.05)
        if time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            emit("progress", name=name, sent=n, n=n, answered=n - missing)
    rows = []
    with client._lock:
        for rid, idx in ids:
            ans = client.answers.get(rid)
            row: dict[str, Any] = {"request_id": rid, "phase": name, "index": idx, "sent_ms": client.sent_ms[rid]}
            if ans is not None:
                row["latency_ms"] = ans.received_ms - client.sent_ms[rid]
                row["result"] = ans.result
            rows.append(row)
    answered = sum("result" in r for r in rows)
    emit("phase_end", name=name, sent=n, answered=answered, send_seconds=round(send_s, 3))
    if phase.get("quiet_s"):  # nothing sent for a while: a scrape sees this phase's counts and no more
        time.sleep(float(phase["quiet_s"]))
        emit("phase_quiet", name=name)
    return rows


def count_results(settings: Any, prefix: str, idle_s: float = 3.0, timeout_s: float = 60.0) -> dict[str, list]:
    """Every answer on APP.results for request ids starting with ``prefix``, read from the beginning."""
    from confluent_kafka import Consumer

    from runtime.kafka import consumer_config

    consumer = Consumer(consumer_config(settings, f"{settings.app}.count.{uuid.uuid4().hex[:8]}",
                                        **{"auto.offset.reset": "earliest"}))
    assigned: list = []
    consumer.subscribe([settings.topic("results")], on_assign=lambda c, ps: assigned.extend(ps))
    answers: dict[str, list] = defaultdict(list)
    deadline = time.monotonic() + timeout_s
    last = None  # the idle clock starts once partitions are assigned (a group join takes seconds)
    try:
        while time.monotonic() < deadline and (last is None or time.monotonic() - last < idle_s):
            msgs = consumer.consume(1000, timeout=0.2)
            if assigned and last is None:
                last = time.monotonic()
            for m in msgs:
                if m.error() or m.key() is None:
                    continue
                last = time.monotonic()
                rid = m.key().decode(errors="replace")
                if rid.startswith(prefix):
                    value = json.loads(m.value())
                    answers[rid].append({"tier": value.get("tier"), "degraded": value.get("degraded"),
                                         "label": value.get("label")})
    finally:
        consumer.close()
    return dict(answers)


def main(spec_path: str) -> None:
    from runtime import codec
    from runtime.client import DeviceClient, encode_sample
    from runtime.settings import Settings

    spec = json.loads(Path(spec_path).read_text())
    settings = Settings()
    data = np.load(spec["data"])
    x = [encode_sample(s, codec.TENSOR) for s in data["x"]]
    run = spec.get("run") or uuid.uuid4().hex[:8]
    deadline_ms = int(spec.get("deadline_ms") or settings.worker.default_deadline_ms)
    rows: list[dict[str, Any]] = []
    stopped_at = None
    with DeviceClient(settings, entry_tier=spec["entry_tier"], deadline_ms=deadline_ms) as client:
        emit("ready")
        index = 0
        for phase in spec["phases"]:
            if stopped_at and phase.get("stop_when_saturated"):
                continue  # the rest of the stepped load would only measure a backlog
            got = run_phase(client, phase, x, index, run, deadline_ms, float(spec.get("drain_s", 5.0)))
            index += len(got)
            rows += got
            if phase.get("stop_when_saturated"):
                lat = [r.get("latency_ms", UNANSWERED_MS) for r in got]
                p99 = float(np.percentile(lat, 99)) if lat else float("inf")
                if p99 > deadline_ms:
                    stopped_at = phase["name"]
                    emit("saturated", name=phase["name"], p99_ms=p99)
        time.sleep(float(spec.get("settle_s", 1.0)))
    emit("counting")
    topic_answers = count_results(settings, f"{run}-") if spec.get("count_results", True) else {}
    Path(spec["out"]).write_text(json.dumps({"run": run, "rows": rows, "topic_answers": topic_answers,
                                             "stopped_at": stopped_at}))
    emit("done", requests=len(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m infra.continuum.load SPEC.json")
    main(sys.argv[1])
