"""Device client and load simulator: send requests, collect the answer per request id, report.

The tiers publish exactly one answer per request (README "Who answers"); the client keeps the first and
counts any other. The simulator's report does not trust that view: after the run it waits until
APP.results is quiet for several deadlines and counts every answer there (`runtime.audit`), so a late
second or conflicting answer shows up in ``duplicates`` and ``conflicting``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime import codec
from runtime.audit import audit_results
from runtime.kafka import consumer_config, ensure_topics, producer_config
from runtime.settings import Settings

CONTENT_TYPES = {"tensor": codec.TENSOR, "png": codec.PNG, "jpeg": codec.JPEG, "json": codec.JSON}


def encode_sample(sample: np.ndarray, content_type: str) -> bytes:
    """One input sample in the wire format a device would use (raw values, uint8 stays uint8)."""
    if content_type == codec.TENSOR:
        return codec.encode_tensor(sample)
    if content_type in (codec.PNG, codec.JPEG):
        return codec.encode_image(sample, "PNG" if content_type == codec.PNG else "JPEG")
    if content_type == codec.JSON:
        return json.dumps(np.asarray(sample).tolist()).encode()
    raise ValueError(f"unknown content type {content_type!r}; use one of {list(CONTENT_TYPES.values())}")


@dataclass
class Answer:
    result: dict[str, Any]
    received_ms: float  # client clock, epoch ms with sub-ms precision


class DeviceClient:
    """Produces to APP.requests and reads APP.results in a background thread."""

    def __init__(self, settings: Settings, *, entry_tier: str = "edge", deadline_ms: int | None = None,
                 content_type: str = codec.TENSOR):
        self.settings = settings
        self.entry_tier = entry_tier
        self.deadline_ms = deadline_ms or settings.worker.default_deadline_ms
        self.content_type = content_type
        self.requests_topic = settings.topic("requests")
        self.results_topic = settings.topic("results")
        self.sent_ms: dict[str, float] = {}
        self.answers: dict[str, Answer] = {}
        self.duplicates: Counter[str] = Counter()
        self.request_bytes = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Any = None
        self._consumer: Any = None

    def start(self, timeout_s: float = 60.0) -> DeviceClient:
        """Connect and wait until the results consumer is positioned, so no answer can be missed."""
        from confluent_kafka import Consumer, Producer

        bootstrap = self.settings.kafka.for_tier(self.entry_tier)
        ensure_topics(self.settings, [self.requests_topic], bootstrap=bootstrap)
        ensure_topics(self.settings, [self.results_topic])
        self._producer = Producer(producer_config(self.settings, bootstrap))
        group = f"{self.settings.app}.client.{uuid.uuid4().hex[:12]}"
        self._consumer = Consumer(consumer_config(self.settings, group, **{"auto.offset.reset": "latest"}))
        assigned: list = []
        self._consumer.subscribe([self.results_topic], on_assign=lambda c, ps: assigned.extend(ps) or True)
        deadline = time.monotonic() + timeout_s
        while not assigned:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions of {self.results_topic} assigned after {timeout_s}s")
            self._consumer.poll(0.1)
        # Let the fetcher resolve the "latest" offsets before the first request goes out.
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            self._consumer.poll(0.1)
        self._thread = threading.Thread(target=self._receive, name="results", daemon=True)
        self._thread.start()
        return self

    def _receive(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            msgs = [first, *self._consumer.consume(500, timeout=0)]
            now = time.time() * 1000
            with self._lock:
                for m in msgs:
                    if m.error() or m.key() is None:
                        continue
                    rid = m.key().decode(errors="replace")
                    if rid not in self.sent_ms:
                        continue  # someone else's request
                    if rid in self.answers:
                        self.duplicates[rid] += 1
                        continue
                    try:
                        self.answers[rid] = Answer(codec.decode_result(m.value()), now)
                    except codec.CodecError:
                        continue
                self._lock.notify_all()

    def send(self, request_id: str, sample: np.ndarray | bytes, *, content_type: str | None = None,
             extra_headers: dict[str, str] | None = None) -> None:
        ctype = content_type or self.content_type
        value = sample if isinstance(sample, bytes) else encode_sample(sample, ctype)
        origin = codec.now_ms()
        headers = codec.make_headers(request_id, model=self.settings.app, origin_ts=origin,
                                     deadline=origin + self.deadline_ms, content_type=ctype)
        headers += [(k, v.encode()) for k, v in (extra_headers or {}).items()]
        with self._lock:
            self.sent_ms[request_id] = time.time() * 1000
        self.request_bytes += len(value) + len(request_id) + sum(len(k) + len(v) for k, v in headers)
        while True:
            try:
                self._producer.produce(self.requests_topic, key=request_id, value=value, headers=headers)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self) -> None:
        self._producer.flush(30)

    def outstanding(self) -> int:
        with self._lock:
            return len(self.sent_ms) - len(self.answers)

    def wait_all(self, timeout_s: float, progress: Any = None) -> bool:
        """Block until every sent request has an answer (or timeout); returns whether all arrived."""
        self.flush()
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.answers) < len(self.sent_ms):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
                if progress is not None:
                    progress(len(self.answers))
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._producer is not None:
            self._producer.flush(10)
        if self._consumer is not None:
            self._consumer.close()

    def __enter__(self) -> DeviceClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- simulation -------------------------------------------------------------------------------------

@dataclass
class SimReport:
    sent: int
    answered: int
    duplicates: int
    correct: int
    per_tier: dict[str, int]
    degraded: int
    latency_ms: list[float]  # client-measured, one per answered request
    wall_s: float
    request_bytes: int
    rows: list[dict[str, Any]] = field(default_factory=list)  # per request: id, index, truth, answer
    conflicting: int = 0  # ids answered more than once with different labels (counted on APP.results)

    @property
    def missing(self) -> int:
        return self.sent - self.answered

    def feedback(self) -> dict[str, int]:
        """Ground truth of each answered request as the served model's class id. With class names the truth
        is matched by name (a user's dataset may number its classes otherwise than the model does: ingest
        numbers them as they arrive); a class no answer ever named is left out."""
        ids = {r["class_name"]: r["label"] for r in self.rows if r.get("class_name") is not None}
        out: dict[str, int] = {}
        for r in self.rows:
            if "label" not in r or r["truth"] is None:
                continue
            name = r.get("truth_name")
            label = r["truth"] if name is None else ids.get(name)
            if label is not None:
                out[r["request_id"]] = int(label)
        return out

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else float("nan")

    @property
    def throughput(self) -> float:
        return self.answered / self.wall_s if self.wall_s > 0 else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else float("nan")

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "answered": self.answered, "missing": self.missing,
                "duplicates": self.duplicates, "conflicting": self.conflicting, "accuracy": round(self.accuracy, 4), "per_tier": self.per_tier,
                "degraded": self.degraded, "p50_ms": round(self.percentile(50), 2),
                "p95_ms": round(self.percentile(95), 2), "p99_ms": round(self.percentile(99), 2),
                "throughput_rps": round(self.throughput, 1), "wall_s": round(self.wall_s, 2),
                "request_bytes_per_request": round(self.request_bytes / max(self.sent, 1), 1)}


def simulate(settings: Settings, x: np.ndarray, y: np.ndarray | None, *, rate: float | None = None,
             concurrency: int | None = None, deadline_ms: int | None = None, content_type: str = codec.TENSOR,
             timeout_s: float = 120.0, entry_tier: str = "edge", progress: bool = True,
             run_id: str | None = None, quiet_s: float | None = None,
             class_names: Sequence[str] | None = None) -> SimReport:
    """Stream ``x`` as requests: open loop at ``rate`` req/s, or closed loop with ``concurrency`` in flight.
    With ``class_names`` (the dataset's, indexed by ``y``) an answer is right when its class name is the
    truth's, so a model that numbers the classes otherwise is still scored right.

    Afterwards APP.results is read until it has been quiet for ``quiet_s`` (default: twice the deadline plus
    the degrade graces) and every answer to the run's ids is counted there."""
    if (rate is None) == (concurrency is None):
        raise ValueError("give exactly one of rate (open loop, requests/s) or concurrency (closed loop)")
    if rate is not None and rate <= 0 or concurrency is not None and concurrency <= 0:
        raise ValueError("rate and concurrency must be positive")
    from tqdm import tqdm

    run_id = run_id or uuid.uuid4().hex[:8]
    ids = [f"{run_id}-{i}" for i in range(len(x))]
    bar = tqdm(total=len(x), desc="answers", unit="req", disable=not progress)
    with DeviceClient(settings, entry_tier=entry_tier, deadline_ms=deadline_ms,
                      content_type=content_type) as client:
        payloads = [encode_sample(s, content_type) for s in x]
        start = time.monotonic()
        for i, rid in enumerate(ids):
            if rate is not None:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            else:
                with client._lock:
                    while len(client.sent_ms) - len(client.answers) >= concurrency:
                        client._lock.wait(0.5)
            client.send(rid, payloads[i])
            bar.n = len(client.answers)
            bar.refresh() if i % 200 == 0 else None
        client.wait_all(timeout_s, progress=lambda n: (setattr(bar, "n", n), bar.refresh()))
        bar.n = len(client.answers)
        bar.close()
        last = max((a.received_ms for a in client.answers.values()), default=0.0)
        first = min(client.sent_ms.values(), default=0.0)
        rows, per_tier, latencies, correct, degraded = [], Counter(), [], 0, 0
        for i, rid in enumerate(ids):
            ans = client.answers.get(rid)
            row: dict[str, Any] = {"request_id": rid, "index": i, "truth": None if y is None else int(y[i])}
            if class_names is not None and y is not None:
                row["truth_name"] = str(class_names[int(y[i])])
            if ans is not None:
                r = ans.result
                row.update(label=r["label"], class_name=r.get("class_name"), tier=r["tier"], exit=r["exit"],
                           degraded=r["degraded"], confidence=r["confidence"],
                           latency_ms=ans.received_ms - client.sent_ms[rid])
                per_tier[r["tier"]] += 1
                latencies.append(row["latency_ms"])
                degraded += bool(r["degraded"])
                if "truth_name" in row:
                    correct += r.get("class_name") == row["truth_name"]
                else:
                    correct += y is not None and int(r["label"]) == int(y[i])
            rows.append(row)
    deadline = client.deadline_ms
    quiet = quiet_s if quiet_s is not None else 2 * (deadline + 3 * settings.worker.degrade_grace_ms) / 1000
    audit = audit_results(settings, ids, quiet_s=quiet)
    return SimReport(sent=len(ids), answered=len(client.answers), duplicates=audit.extra_answers,
                     correct=int(correct), per_tier=dict(per_tier), degraded=degraded,
                     latency_ms=latencies, wall_s=max(last - first, 0.0) / 1000,
                     request_bytes=client.request_bytes, rows=rows, conflicting=len(audit.conflicting_ids))


def save_plots(report: SimReport, out_dir: Path, title: str = "") -> list[Path]:
    """Latency histogram and answers per tier, as PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(report.latency_ms, bins=50, color="#4c72b0")
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        ax.axvline(report.percentile(q), color="k", linestyle=style, label=f"p{q} {report.percentile(q):.1f} ms")
    ax.set(xlabel="end-to-end latency (ms)", ylabel="requests", title=f"Latency {title}".strip())
    ax.legend()
    paths.append(out_dir / "latency_hist.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    tiers = list(report.per_tier)
    ax.bar(tiers, [report.per_tier[t] for t in tiers], color="#55a868")
    ax.set(ylabel="answers", title=f"Answers per tier (degraded: {report.degraded}) {title}".strip())
    paths.append(out_dir / "answers_per_tier.png")
    fig.savefig(paths[-1], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return paths


def log_to_mlflow(report: SimReport, plots: list[Path], tracking_uri: str, experiment: str,
                  params: dict[str, Any] | None = None) -> str:
    """One MLflow run with the simulation's summary as metrics and its plots as artifacts; returns run id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="simulate") as run:
        mlflow.log_params(params or {})
        summary = report.summary()
        mlflow.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, int | float)})
        mlflow.log_metrics({f"answers_{tier}": float(n) for tier, n in report.per_tier.items()})
        for plot in plots:
            mlflow.log_artifact(str(plot), artifact_path="plots")
        return run.info.run_id


# ---- training samples and ground truth --------------------------------------------------------------

def publish_training(settings: Settings, x: np.ndarray, y: np.ndarray, *, key_prefix: str | None = None,
                     progress: bool = True, class_names: Sequence[str] | None = None) -> int:
    """Labeled samples to APP.training: value = tensor record, header tf-label (for ingestion): the class
    id, or with ``class_names`` the class name (ingest then records the names in the dataset manifest)."""
    from confluent_kafka import Producer
    from tqdm import tqdm

    topic = settings.topic("training")
    ensure_topics(settings, [topic])
    producer = Producer(producer_config(settings))
    prefix = key_prefix or uuid.uuid4().hex[:8]
    for i in tqdm(range(len(x)), desc="training samples", unit="rec", disable=not progress):
        headers = codec.make_headers(f"{prefix}-{i}", model=settings.app, origin_ts=codec.now_ms(),
                                     content_type=codec.TENSOR,
                                     tf_label=int(y[i]) if class_names is None else str(class_names[int(y[i])]))
        while True:
            try:
                producer.produce(topic, key=f"{prefix}-{i}", value=codec.encode_tensor(x[i]), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} training records were not acknowledged by the broker")
    return len(x)


def publish_feedback(settings: Settings, truths: dict[str, int]) -> int:
    """Ground truth for served requests to APP.feedback, JSON {request_id, label} (live accuracy)."""
    from confluent_kafka import Producer

    topic = settings.topic("feedback")
    ensure_topics(settings, [topic])
    producer = Producer(producer_config(settings))
    for rid, label in truths.items():
        producer.produce(topic, key=rid, value=json.dumps({"request_id": rid, "label": int(label)}).encode(),
                         headers=codec.make_headers(rid, model=settings.app, content_type=codec.JSON))
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} feedback records were not acknowledged by the broker")
    return len(truths)
