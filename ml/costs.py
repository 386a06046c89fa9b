"""Per-request cost of answering at each tier: compute time, link latency and bytes on the wire."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TierCosts:
    """Costs along the tier chain (all lists in tier order; links are tier i → tier i+1).

    ``compute_ms``: time to run each tier's sub-model on one request. ``link_latency_ms`` and
    ``link_bandwidth_mbps`` per link; ``link_bytes`` is what one forwarded request sends over each link
    (defaults to the activation size). ``byte_weight_ms`` adds a price per KB, if bytes matter beyond time.
    """

    compute_ms: Sequence[float]
    link_latency_ms: Sequence[float] = ()
    link_bandwidth_mbps: Sequence[float] = ()
    link_bytes: Sequence[float] = ()
    byte_weight_ms_per_kb: float = 0.0

    def validate(self, n_tiers: int) -> None:
        if len(self.compute_ms) != n_tiers:
            raise ValueError(f"compute_ms needs one value per tier ({n_tiers}), got {len(self.compute_ms)}")
        for name in ("link_latency_ms", "link_bandwidth_mbps", "link_bytes"):
            vals = getattr(self, name)
            if len(vals) not in (0, n_tiers - 1):
                raise ValueError(f"{name} needs one value per link ({n_tiers - 1}), got {len(vals)}")
        if any(b <= 0 for b in self.link_bandwidth_mbps):
            raise ValueError("link bandwidths must be > 0 Mbit/s")

    def per_tier(self, n_tiers: int) -> np.ndarray:
        """Cost (ms) of a request answered at tier t: compute of tiers 0..t + links 0..t-1."""
        self.validate(n_tiers)
        links = np.zeros(max(0, n_tiers - 1))
        if len(self.link_latency_ms):
            links += np.asarray(self.link_latency_ms, dtype=float)
        if len(self.link_bytes):
            b = np.asarray(self.link_bytes, dtype=float)
            if len(self.link_bandwidth_mbps):
                links += b * 8 / (np.asarray(self.link_bandwidth_mbps, dtype=float) * 1e3)
            links += b / 1024 * self.byte_weight_ms_per_kb
        compute = np.cumsum(np.asarray(self.compute_ms, dtype=float))
        return compute + np.concatenate([[0.0], np.cumsum(links)])


def default_costs(tier_flops: Sequence[int], link_bytes: Sequence[float],
                  gflops_per_s: Sequence[float] | None = None,
                  link_latency_ms: Sequence[float] | None = None,
                  link_bandwidth_mbps: Sequence[float] | None = None) -> TierCosts:
    """A plausible device→edge→fog→cloud profile: slow edge CPU, faster fog and cloud, slower links
    further up (WAN to the cloud). Used when the user gives no costs; override per deployment."""
    n = len(tier_flops)
    speeds = list(gflops_per_s) if gflops_per_s else [100.0] if n == 1 else [1.0] + [10.0] * (n - 2) + [100.0]
    lat = list(link_latency_ms) if link_latency_ms else [2.0] + [20.0] * (n - 2) if n > 1 else []
    bw = list(link_bandwidth_mbps) if link_bandwidth_mbps else [100.0] + [20.0] * (n - 2) if n > 1 else []
    return TierCosts(compute_ms=[f / (s * 1e6) for f, s in zip(tier_flops, speeds, strict=True)],
                     link_latency_ms=lat, link_bandwidth_mbps=bw, link_bytes=list(link_bytes))
