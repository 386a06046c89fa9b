"""Scenario and profile files: the built-in ones load, wrong ones fail with a message that says why."""

from __future__ import annotations

import pytest

from infra.continuum.scenario import ScenarioError, builtin_scenarios, load_profile, load_scenario


def test_builtin_scenarios_load_with_default_links() -> None:
    assert {"edge-fog-cloud", "edge-cloud", "cloud-only"} <= set(builtin_scenarios())
    a = load_scenario("edge-fog-cloud")
    assert a.profile.sites == ["device", "edge", "fog", "cloud"]
    assert [(link.delay_ms, link.up_mbit) for link in a.profile.links] == [(1, 100), (5, 50), (40, 10)]
    assert a.profile.delay_ms("device", "cloud") == 46
    assert a.tier_names == ["edge", "fog", "cloud"] and not a.cloud_only
    c = load_scenario("cloud-only")
    assert c.cloud_only and c.site_of("full") == "cloud" and c.cores("cloud") == a.cores("cloud") == 1.0
    assert load_scenario("edge-cloud").tier_names == ["edge", "cloud"]


def test_mobile_profile_replaces_the_links() -> None:
    m = load_scenario("edge-fog-cloud", profile="mobile")
    wan = m.profile.links[-1]
    assert (wan.delay_ms, wan.up_mbit, wan.down_mbit) == (75, 1.6, 8)
    assert load_profile("mobile").name == "mobile"


@pytest.mark.parametrize(("patch", "message"), [
    ("tiers: {edge: edge, fog: nowhere}", "unknown site 'nowhere'"),
    ("tiers: {edge: edge, fog: fog}\nbrokers: [edge]", "has no broker"),
    ("tiers: {edge: cloud, cloud: edge}", "chain order"),
    ("tiers: {cloud: cloud, edge: edge}", "edge first"),
    ("results: device", "has no broker"),
    ("tiers: {full: cloud, edge: edge}", "serves alone"),
    ("colour: blue", "colour"),
])
def test_invalid_scenarios_say_what_is_wrong(tmp_path, patch: str, message: str) -> None:
    base = {"name": "x", "profile": "default", "tiers": "{edge: edge, fog: fog, cloud: cloud}",
            "brokers": "[edge, fog, cloud]", "results": "edge"}
    for line in patch.splitlines():
        key, value = line.split(": ", 1)
        base[key] = value
    path = tmp_path / "s.yaml"
    path.write_text("\n".join(f"{k}: {v}" for k, v in base.items()))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


def test_invalid_profiles(tmp_path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("links:\n  - {a: device, b: edge, delay_ms: 1, rate_mbit: 10}\n"
                   "  - {a: fog, b: cloud, delay_ms: 1, rate_mbit: 10}\n")
    with pytest.raises(ScenarioError, match="chain"):
        load_profile(bad)
    bad.write_text("links:\n  - {a: device, b: edge, delay_ms: 1}\n")
    with pytest.raises(ScenarioError, match="rate_mbit"):
        load_profile(bad)
    bad.write_text("links:\n  - {a: device, b: edge, delay_ms: -1, rate_mbit: 1}\n")
    with pytest.raises(ScenarioError, match="delay_ms"):
        load_profile(bad)
    with pytest.raises(ScenarioError, match="built-in ones"):
        load_scenario("no-such-scenario")
