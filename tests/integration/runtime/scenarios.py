"""Fault-injection scenarios shared by the reliability tests and the 5,000-request benchmark script."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from runtime.client import DeviceClient
from runtime.local import LocalDeployment
from runtime.settings import Settings


@dataclass
class KillOutcome:
    sent: int
    answered: int
    degraded: int
    degraded_tiers: Counter
    degraded_labels: dict[int, int]  # request index -> label of the degraded answer
    duplicates_before_restart: int
    after_restart_sent: int
    after_restart_answered: int
    after_restart_degraded: int
    restart_s: float


def kill_fog_in_flight(settings: Settings, deployment: LocalDeployment, x: np.ndarray, *, n: int,
                       after_restart: int, rate: float, deadline_ms: int, kill_after: int,
                       timeout_s: float = 120.0) -> KillOutcome:
    """Stream n requests, kill -9 the fog worker once kill_after are sent, collect; restart it, send more."""
    fog = deployment["fog"]
    with DeviceClient(settings, deadline_ms=deadline_ms) as client:
        start = time.monotonic()
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            client.send(f"k{i}", x[i % len(x)])
            if i == kill_after:
                fog.kill()
        client.wait_all(timeout_s)
        answers = {rid: a.result for rid, a in client.answers.items()}
        duplicates = sum(client.duplicates.values())
    degraded = {int(rid[1:]): r for rid, r in answers.items() if r["degraded"]}
    t0 = time.monotonic()
    fog.start()
    fog.wait_ready(180)
    restart_s = time.monotonic() - t0
    with DeviceClient(settings, deadline_ms=60_000) as client:
        for i in range(after_restart):
            client.send(f"after{i}", x[i % len(x)])
        client.wait_all(timeout_s)
        after = [a.result for a in client.answers.values()]
    return KillOutcome(sent=n, answered=len(answers), degraded=len(degraded),
                       degraded_tiers=Counter(r["tier"] for r in degraded.values()),
                       degraded_labels={i: r["label"] for i, r in degraded.items()},
                       duplicates_before_restart=duplicates, after_restart_sent=after_restart,
                       after_restart_answered=len(after), after_restart_degraded=sum(r["degraded"] for r in after),
                       restart_s=restart_s)
