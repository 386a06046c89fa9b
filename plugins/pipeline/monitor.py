"""Live model health: accuracy from APP.feedback joined with APP.results, and exit-rate drift.

Exit-rate drift judges the release's calibrated behaviour: answers given at adapted thresholds (results
with ``adapted: true``, `runtime.adaptive`: a tier answering more itself while its upstream was slow) move
answers to lower tiers by design, so when more than ``max_adapted_fraction`` of the window's results are
adapted, drift is reported as caused by adaptation (`adaptation_note`) and is no reason to retrain.

`live_stats` and `retrain_reasons` are pure (unit-tested). `read_window` is the Kafka edge: it reads
both topics from the monitor's committed offsets (so each run sees only what is new), keeps results
that still wait for their ground truth in a small state file, and commits after the state is saved.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml.contract import CANARY_ID_PREFIX

PENDING_LIMIT = 50_000  # results kept while waiting for feedback (oldest dropped first)


@dataclass(frozen=True)
class MonitorBounds:
    min_accuracy: float = 0.6  # live accuracy below this triggers retraining
    max_exit_drift: float = 0.2  # total variation distance between live and expected answers per tier
    min_samples: int = 50  # fewer joined samples than this: no accuracy verdict
    min_results: int = 100  # fewer results than this: no drift verdict
    max_adapted_fraction: float = 0.05  # more results at adapted thresholds than this: drift not judged


@dataclass
class LiveStats:
    results: int
    joined: int
    correct: int
    tier_fractions: dict[str, float]
    model_versions: dict[str, int] = field(default_factory=dict)
    canary_excluded: int = 0  # canary answers seen and left out
    adapted: int = 0  # results given at adapted thresholds

    @property
    def adapted_fraction(self) -> float:
        return self.adapted / self.results if self.results else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.joined if self.joined else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "adapted_fraction": self.adapted_fraction}


def live_stats(results: list[dict], truths: dict[str, int]) -> LiveStats:
    """Results (one per request id, first wins) joined with ground truth by request id; a rollout's canary
    requests (ids ``CANARY_ID_PREFIX...``) are left out of every figure and only counted."""
    seen: dict[str, dict] = {}
    canary: set[str] = set()
    for r in results:
        rid = str(r["request_id"])
        if rid.startswith(CANARY_ID_PREFIX):
            canary.add(rid)
            continue
        seen.setdefault(rid, r)
    tiers = Counter(str(r.get("tier")) for r in seen.values())
    versions = Counter(str(r.get("model_version")) for r in seen.values())
    joined = [rid for rid in seen if rid in truths]
    correct = sum(int(seen[rid]["label"]) == int(truths[rid]) for rid in joined)
    n = len(seen)
    return LiveStats(results=n, joined=len(joined), correct=correct,
                     tier_fractions={t: c / n for t, c in tiers.items()} if n else {},
                     model_versions=dict(versions), canary_excluded=len(canary),
                     adapted=sum(bool(r.get("adapted")) for r in seen.values()))


def exit_drift(live: dict[str, float], expected: dict[str, float]) -> float:
    """Total variation distance between two answers-per-tier distributions (0 = same, 1 = disjoint)."""
    tiers = set(live) | set(expected)
    return 0.5 * sum(abs(live.get(t, 0.0) - expected.get(t, 0.0)) for t in tiers)


def retrain_reasons(stats: LiveStats, expected_tiers: dict[str, float] | None, bounds: MonitorBounds) -> list[str]:
    """Why the model should be retrained now; empty means healthy (or not enough data to say)."""
    reasons = []
    if stats.joined >= bounds.min_samples and stats.accuracy is not None and stats.accuracy < bounds.min_accuracy:
        reasons.append(f"live accuracy {stats.accuracy:.3f} < {bounds.min_accuracy:.3f} "
                       f"on {stats.joined} requests with feedback")
    if expected_tiers and stats.results >= bounds.min_results and stats.adapted_fraction <= bounds.max_adapted_fraction:
        drift = exit_drift(stats.tier_fractions, expected_tiers)
        if drift > bounds.max_exit_drift:
            reasons.append(f"exit-rate drift {drift:.3f} > {bounds.max_exit_drift:.3f} "
                           f"(live {_fmt(stats.tier_fractions)}, expected {_fmt(expected_tiers)})")
    return reasons


def adaptation_note(stats: LiveStats, expected_tiers: dict[str, float] | None, bounds: MonitorBounds) -> str | None:
    """Exit-rate drift the monitor did not judge because adaptation caused it (None when it judged drift)."""
    if not expected_tiers or stats.results < bounds.min_results or stats.adapted_fraction <= bounds.max_adapted_fraction:
        return None
    drift = exit_drift(stats.tier_fractions, expected_tiers)
    return (f"exit-rate drift {drift:.3f} with {stats.adapted} of {stats.results} results at adapted thresholds "
            f"(> {bounds.max_adapted_fraction:.0%}): caused by adaptation to a slow upstream, not judged, no reason "
            f"to retrain (live {_fmt(stats.tier_fractions)}, expected {_fmt(expected_tiers)})")


def _fmt(d: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:.2f}" for k, v in sorted(d.items())) + "}"


# -- Kafka edge ------------------------------------------------------------------------------------
def read_window(settings: Any, *, idle_s: float = 3.0, max_s: float = 60.0) -> tuple[list[dict], dict[str, int]]:
    """New results and feedback since the last run (plus results still waiting for feedback)."""
    from confluent_kafka import Consumer, KafkaError

    from plugins.hooks.kafka import KafkaClusterHook
    from runtime.kafka import consumer_config, ensure_topics

    settings = KafkaClusterHook(settings=settings).client_settings()  # an Airflow Connection, else settings
    topics = [settings.topic("results"), settings.topic("feedback")]
    ensure_topics(settings, topics)
    state_file = Path(settings.home) / "monitor" / f"{settings.app}.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"pending": [], "truths": {}}
    consumer = Consumer(consumer_config(settings, f"{settings.app}.monitor",
                                        **{"auto.offset.reset": "earliest"}))
    assigned: list = []
    consumer.subscribe(topics, on_assign=lambda c, parts: assigned.extend(parts))
    results: list[dict] = list(state["pending"])
    truths: dict[str, int] = {k: int(v) for k, v in state["truths"].items()}
    consumed = 0
    start = time.monotonic()
    last = None  # the idle clock starts once the group has given us the partitions
    try:
        while time.monotonic() - start < max_s:
            if last is None and assigned:
                last = time.monotonic()
            if last is not None and time.monotonic() - last >= idle_s:
                break
            for m in consumer.consume(500, timeout=0.5):
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"monitor cannot read {m.topic()}: {m.error()}")
                    continue
                consumed += 1
                last = time.monotonic()
                try:
                    value = json.loads(m.value())
                except (TypeError, ValueError):
                    continue  # not ours to judge: malformed records go to the DLQ upstream
                if m.topic() == topics[0] and "request_id" in value:
                    results.append(value)
                elif m.topic() == topics[1] and "request_id" in value and "label" in value:
                    truths[str(value["request_id"])] = int(value["label"])
        if not assigned:
            raise RuntimeError(f"monitor got no partitions of {topics} in {max_s:.0f}s; is the broker up?")
        # Canary answers never get feedback: counted once (live_stats), never kept waiting for it.
        pending = [r for r in results if str(r["request_id"]) not in truths
                   and not str(r["request_id"]).startswith(CANARY_ID_PREFIX)][-PENDING_LIMIT:]
        answered = {str(r["request_id"]) for r in results}
        waiting = {k: v for k, v in truths.items() if k not in answered}
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"pending": pending, "truths": dict(list(waiting.items())[-PENDING_LIMIT:])}))
        positions = [tp for tp in consumer.position(assigned) if tp.offset >= 0]
        if consumed and positions:
            consumer.commit(offsets=positions, asynchronous=False)  # after the state is saved: nothing skipped
    finally:
        consumer.close()
    return results, truths


def expected_tier_fractions(settings: Any) -> dict[str, float] | None:
    """Answers per tier the champion had on the test split (its run's test_answers_<tier> metrics);
    None when there is no champion or MLflow cannot be reached (then only accuracy is judged)."""
    import logging
    import urllib.error

    try:
        return _champion_tier_fractions(settings)
    except (urllib.error.URLError, OSError, KeyError, ValueError, RuntimeError) as exc:
        logging.getLogger(__name__).warning("no expected answers per tier from MLflow (%s): drift not judged", exc)
        return None


def _champion_tier_fractions(settings: Any) -> dict[str, float] | None:
    from plugins.hooks.mlflow import MlflowRegistryHook

    champion = MlflowRegistryHook(settings=settings).champion_metrics()
    if not champion:
        return None
    metrics = champion["metrics"]
    out = {k.removeprefix("test_fraction_"): float(v) for k, v in metrics.items() if k.startswith("test_fraction_")}
    return out or None
