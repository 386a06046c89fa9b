"""Where each tier reads and writes, per tier and version (pure function of settings)."""

from __future__ import annotations

import pytest

from ml.contract import FULL
from runtime.route import plan_route
from runtime.settings import Settings

TIERS = ["edge", "fog", "cloud"]


def test_routes_of_a_three_tier_version():
    s = Settings(app="fm")
    edge, fog, cloud = (plan_route(s, t, "4", TIERS) for t in TIERS)
    assert (edge.in_topic, edge.out_topic, edge.group_id, edge.is_entry) == \
        ("fm.requests", "fm.v4.edge-fog", "fm.edge", True)
    assert (fog.in_topic, fog.out_topic, fog.group_id) == ("fm.v4.edge-fog", "fm.v4.fog-cloud", "fm.v4.fog")
    assert (cloud.in_topic, cloud.out_topic, cloud.group_id) == ("fm.v4.fog-cloud", None, "fm.v4.cloud")
    assert [(r.index, r.n_tiers) for r in (edge, fog, cloud)] == [(0, 3), (1, 3), (2, 3)]
    # Every version's edge shares one group on the requests topic (zero-drop rollout).
    assert plan_route(s, "edge", "5", TIERS).group_id == edge.group_id


def test_cloud_only_full_model_plays_the_entry_role():
    r = plan_route(Settings(app="fm"), FULL, "4", TIERS)
    assert (r.in_topic, r.out_topic, r.group_id, r.is_entry, r.n_tiers) == ("fm.requests", None, "fm.edge", True, 1)


def test_unknown_tier_is_a_clear_error():
    with pytest.raises(ValueError, match="not in the bundle's tiers"):
        plan_route(Settings(app="fm"), "mist", "4", TIERS)
