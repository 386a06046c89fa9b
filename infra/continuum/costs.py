"""The calibration's cost model fed with a scenario's links and compute, and its prediction.

``ml.costs.TierCosts`` prices an answer at tier t as the compute of tiers 0..t plus the links between
them (one-way delay + bytes / bandwidth). Here its inputs come from the scenario (path delay and the
narrowest rate between the tiers' sites) and from this machine (each tier's sub-model timed on one
request). What the tier chain does not see is added around it: the request's way from the device to
the first tier and the answer's way from the answering tier to APP.results and on to the device. The
same costs are the calibration input (``objective="cost"``), so a slow WAN moves thresholds.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.continuum.scenario import Scenario
from ml.costs import TierCosts
from runtime.answers import POLL_INTERVAL_S

HEADER_BYTES = 220  # Kafka record framing and tierflow headers of one forwarded request (measured order)


@dataclass
class ScenarioCosts:
    tiers: list[str]
    costs: TierCosts
    entry_ms: float  # device → first tier's site
    exit_ms: list[float]  # answering tier's site → results site → device, per tier

    pickup_rtt_ms: float = 0.0  # device ↔ results broker round trip (the device's fetches cross it)

    def per_tier_ms(self) -> np.ndarray:
        """Predicted end-to-end latency of an answer at each tier: ``ml.costs`` plus the legs around it."""
        return self.costs.per_tier(len(self.tiers)) + self.entry_ms + np.asarray(self.exit_ms)

    def messaging_ms(self, fetch_wait_ms: float, batch_wait_ms: float, linger_ms: float) -> np.ndarray:
        """What Kafka adds per answer at each tier, from the settings alone (not fitted): each tier's hop
        waits for its consumer's next fetch (a fetch to its own site's broker returns at fetch.wait.max.ms
        on the embedded broker: W/2 on average), its micro-batch and its producer's linger; an upper tier's
        answer reaches APP.results through the entry tier (its reply consumer's fetch, the look at it every
        ``POLL_INTERVAL_S``, its linger); the device then waits for a fetch across ``pickup_rtt_ms``
        (see ``pickup_ms``)."""
        hop = fetch_wait_ms / 2 + batch_wait_ms + linger_ms
        relay = fetch_wait_ms / 2 + POLL_INTERVAL_S * 1000 / 2 + linger_ms
        per = np.arange(1, len(self.tiers) + 1) * hop + pickup_ms(self.pickup_rtt_ms, fetch_wait_ms) + linger_ms
        per[1:] += relay
        return per

    def predict_mean_ms(self, fractions: dict[str, float], per: np.ndarray | None = None) -> float:
        per = self.per_tier_ms() if per is None else per
        total = sum(fractions.get(t, 0.0) for t in self.tiers) or 1.0
        return float(sum(fractions.get(t, 0.0) * per[i] for i, t in enumerate(self.tiers)) / total)

    def to_dict(self) -> dict[str, Any]:
        c = self.costs
        return {"tiers": self.tiers, "compute_ms": list(c.compute_ms), "link_latency_ms": list(c.link_latency_ms),
                "link_bandwidth_mbps": list(c.link_bandwidth_mbps), "link_bytes": list(c.link_bytes),
                "entry_ms": self.entry_ms, "exit_ms": self.exit_ms,
                "pickup_rtt_ms": self.pickup_rtt_ms, "per_tier_ms": self.per_tier_ms().tolist()}


def time_tiers(bundle: str | Path, tiers: list[str], repeats: int = 30) -> dict[str, float]:
    """Median time of one request through each tier's sub-model on this machine (after a warm-up)."""
    from ml.bundle import load_bundle_tier, read_manifest

    manifest = read_manifest(bundle)
    out, h = {}, np.zeros((1, *manifest.input.shape), dtype=manifest.input.dtype)
    for tier in tiers:
        tm = load_bundle_tier(bundle, tier)
        _, act = tm.predict(h)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            tm.predict(h)
            times.append((time.perf_counter() - start) * 1000)
        out[tier] = float(np.median(times))
        if act is not None:
            h = act
    return out


def scenario_costs(scenario: Scenario, bundle: str | Path, compute_ms: dict[str, float]) -> ScenarioCosts:
    from ml.bundle import read_manifest

    manifest = read_manifest(bundle)
    prof, tiers = scenario.profile, scenario.tier_names
    sites = [scenario.site_of(t) for t in tiers]
    lat, bw, nbytes = [], [], []
    for i in range(len(tiers) - 1):
        path = prof.path(sites[i], sites[i + 1])
        lat.append(sum(link.delay_ms for link in path))
        bw.append(min(link.up_mbit for link in path) if path else 100_000.0)
        shape = manifest.tier(tiers[i]).output_shape or []
        nbytes.append(float(np.prod(shape)) * 4 + HEADER_BYTES)
    in_path = prof.path(scenario.device, sites[0])
    request_bytes = float(np.prod(manifest.input.shape)) * np.dtype(manifest.input.dtype).itemsize + HEADER_BYTES
    entry = sum(link.delay_ms for link in in_path) + sum(request_bytes * 8 / (link.up_mbit * 1e3) for link in in_path)
    exits = [prof.delay_ms(s, scenario.results) + prof.delay_ms(scenario.results, scenario.device) for s in sites]
    costs = TierCosts(compute_ms=[compute_ms[t] for t in tiers], link_latency_ms=lat, link_bandwidth_mbps=bw,
                      link_bytes=nbytes)
    return ScenarioCosts(tiers, costs, entry, exits, 2 * prof.delay_ms(scenario.device, scenario.results))


def pickup_ms(rtt_ms: float, fetch_wait_ms: float) -> float:
    """Mean wait until a consumer's fetch returns a record that arrived at a random time, when the broker
    answers each fetch after ``fetch_wait_ms`` and the consumer sends the next one a round trip later:
    inside a fetch window it waits for the window's end, in the gap for the gap's rest plus a window."""
    cycle = rtt_ms + fetch_wait_ms
    if cycle <= 0:
        return 0.0
    return (fetch_wait_ms / cycle) * fetch_wait_ms / 2 + (rtt_ms / cycle) * (rtt_ms / 2 + fetch_wait_ms)


def exit_probs(bundle: str | Path, x: np.ndarray) -> list[np.ndarray]:
    """Probabilities of every exit of the bundle's network for ``x`` (tiers chained in-process)."""
    from ml.bundle import load_bundle

    probs, h = [], x
    for tm in load_bundle(bundle).values():
        outs = []
        for i in range(0, len(h), 512):
            p, a = tm.predict(h[i:i + 512])
            outs.append((p, a))
        probs.extend(np.concatenate([o[0][k] for o in outs]) for k in range(len(outs[0][0])))
        h = np.concatenate([o[1] for o in outs]) if outs[0][1] is not None else None
    return probs


def calibrate_for(sc: ScenarioCosts, bundle: str | Path, x: np.ndarray, y: np.ndarray,
                  tolerance: float = 1.0) -> Any:
    """Per-exit thresholds at the lowest predicted latency on this scenario (``objective="cost"``)."""
    from ml.bundle import read_manifest
    from ml.calibration import calibrate

    manifest = read_manifest(bundle)
    tier_map = {t.name: t.exits for t in manifest.tiers}
    if list(tier_map) != sc.tiers:
        raise ValueError(f"bundle tiers {list(tier_map)} do not match the scenario's {sc.tiers}")
    return calibrate(exit_probs(bundle, x), y, tier_map, measure=manifest.confidence, tolerance=tolerance,
                     objective="cost", tier_costs=sc.per_tier_ms().tolist())


def rethreshold(bundle: str | Path, thresholds: list[float | None], out: Path) -> Path:
    """A copy of ``bundle`` whose tiers use ``thresholds`` (one per global exit)."""
    from ml.bundle import read_manifest, write_manifest

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle, out)
    manifest = read_manifest(out)
    for spec in manifest.tiers:
        spec.thresholds = [thresholds[e] for e in spec.exits]
        if spec.output_shape is None:
            spec.thresholds[-1] = None
    manifest.metadata = {**manifest.metadata, "thresholds_from": "tierflow continuum (objective=cost)"}
    write_manifest(out, manifest)
    return out


def add_curves(bundle: str | Path, x: np.ndarray, y: np.ndarray, floor_points: float = 2.0) -> Path:
    """Give the bundle's forwarding tiers their operating points for the thresholds it serves
    (`ml.exit_curve`, on ``x``/``y``, which the load never sends), so adaptive exits can move them."""
    from ml.bundle import read_manifest, write_manifest
    from ml.calibration import exit_costs_for
    from ml.exit_curve import exit_curves

    manifest = read_manifest(bundle)
    tier_map = {t.name: t.exits for t in manifest.tiers}
    thresholds: list[float | None] = [None] * manifest.num_exits
    for t in manifest.tiers:
        for e, th in zip(t.exits, t.thresholds, strict=True):
            thresholds[e] = th
    costs = exit_costs_for(tier_map, manifest.num_exits, "early")
    curves = exit_curves(exit_probs(bundle, x), y, tier_map, thresholds,
                         [float(c) if np.isfinite(c) else None for c in costs], measure=manifest.confidence,
                         floor_points=floor_points)
    for t in manifest.tiers:
        t.curve = curves.get(t.name)
    write_manifest(bundle, manifest)
    return Path(bundle)


def repartition(bundle: str | Path, tier_names: list[str], out: Path) -> Path:
    """The bundle's own trained network cut for other tiers (e.g. edge + cloud, no fog): the early exits go
    to the first tiers, one each, and the last tier takes the rest, so scenarios with fewer tiers still
    serve the same weights. Thresholds are the original ones until calibrated."""
    from ml.bundle import _load_keras, read_manifest, save_bundle

    manifest = read_manifest(bundle)
    if manifest.tier_names == tier_names:
        return Path(bundle)
    n = manifest.num_exits
    if len(tier_names) > n:
        raise ValueError(f"the bundle's network has {n} exits, too few for tiers {tier_names}")
    tier_map = {t: [i] for i, t in enumerate(tier_names[:-1])}
    tier_map[tier_names[-1]] = list(range(len(tier_names) - 1, n))
    thresholds = [th for t in manifest.tiers for th in t.thresholds]
    if out.exists():
        shutil.rmtree(out)
    save_bundle(out, _load_keras(Path(bundle) / manifest.full_file), tier_map, thresholds, manifest.class_names,
                model_name=manifest.model_name, architecture=manifest.architecture, measure=manifest.confidence,
                version=manifest.version, metadata={**manifest.metadata, "repartitioned_from": str(bundle)})
    return out
