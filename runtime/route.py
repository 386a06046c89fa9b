"""Where one tier worker reads and writes: a pure function of settings, tier and model version.

* the entry tier (the bundle's first tier, or ``full`` for cloud-only serving) consumes ``APP.requests``
  in the consumer group ``APP.edge``, shared by every version so that a rollout hands requests over
  without replaying or skipping any;
* every other tier consumes ``APP.v<version>.<prev>-<tier>`` in the group ``APP.v<version>.<tier>``, so
  no network ever sees another version's activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml.contract import FULL, entry_group, link_group
from runtime.kafka import ensure_topics
from runtime.settings import Settings


@dataclass(frozen=True)
class Route:
    tier: str
    version: str
    is_entry: bool
    index: int  # 0 for the entry tier
    n_tiers: int
    prev_tier: str | None
    next_tier: str | None
    in_topic: str
    out_topic: str | None
    group_id: str


def plan_route(settings: Settings, tier: str, version: str, tier_names: list[str]) -> Route:
    if tier == FULL:
        return Route(tier, version, True, 0, 1, None, None, settings.topic("requests"), None,
                     entry_group(settings.app))
    if tier not in tier_names:
        raise ValueError(f"tier {tier!r} is not in the bundle's tiers {tier_names} (or {FULL!r})")
    i = tier_names.index(tier)
    prev_tier = tier_names[i - 1] if i > 0 else None
    next_tier = tier_names[i + 1] if i + 1 < len(tier_names) else None
    in_topic = settings.topic("requests") if i == 0 else settings.link_topic(version, prev_tier, tier)
    out_topic = settings.link_topic(version, tier, next_tier) if next_tier else None
    group = entry_group(settings.app) if i == 0 else link_group(settings.app, version, tier)
    return Route(tier, version, i == 0, i, len(tier_names), prev_tier, next_tier, in_topic, out_topic, group)


def ensure_route_topics(settings: Settings, route: Route) -> None:
    """Create what a tier reads and writes where it is missing: its input, results, replies and DLQ, its output."""
    k = settings.kafka
    ensure_topics(settings, [route.in_topic], bootstrap=k.for_tier(route.tier))
    ensure_topics(settings, [settings.topic(kind) for kind in ("results", "replies", "dlq")], bootstrap=k.bootstrap)
    if route.out_topic:
        ensure_topics(settings, [route.out_topic], bootstrap=k.for_tier(route.next_tier))
