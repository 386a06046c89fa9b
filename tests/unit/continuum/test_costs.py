"""The cost model fed from a scenario: link terms from the profile, the legs around the tier chain."""

from __future__ import annotations

import pytest

from infra.continuum.costs import pickup_ms, scenario_costs
from infra.continuum.scenario import load_scenario
from ml.bundle import BundleManifest, ManifestTier, TensorSpec, write_manifest


@pytest.fixture
def bundle(tmp_path):
    tiers = [ManifestTier(name="edge", exits=[0], file="e", input_shape=[28, 28, 1], output_shape=[7, 7, 8],
                      thresholds=[0.9]),
             ManifestTier(name="fog", exits=[1], file="f", input_shape=[7, 7, 8], output_shape=[100], thresholds=[0.8]),
             ManifestTier(name="cloud", exits=[2], file="c", input_shape=[100], output_shape=None, thresholds=[None])]
    write_manifest(tmp_path, BundleManifest(model_name="m", architecture="compact", input=TensorSpec(
        shape=[28, 28, 1], dtype="uint8"), class_names=[str(i) for i in range(10)], tiers=tiers, num_exits=3))
    return tmp_path


def test_scenario_costs_from_the_default_links(bundle) -> None:
    sc = scenario_costs(load_scenario("edge-fog-cloud"), bundle, {"edge": 1.0, "fog": 2.0, "cloud": 3.0})
    assert list(sc.costs.link_latency_ms) == [5.0, 40.0] and list(sc.costs.link_bandwidth_mbps) == [50.0, 10.0]
    per = sc.per_tier_ms()
    # edge: device->edge 1 ms + 1004 B at 100 Mbit/s, compute 1, results at the edge, back 1 ms
    assert per[0] == pytest.approx(1 + 1004 * 8 / 1e5 + 1 + 1, rel=1e-6)
    # cloud: + 5 + 40 ms links, activations 7*7*8*4+220 B at 50 Mbit/s, 620 B at 10, compute 2+3, back 45+1
    expect_cloud = per[0] - 1 + 5 + 1788 * 8 / 5e4 + 2 + 40 + 620 * 8 / 1e4 + 3 + 46
    assert per[2] == pytest.approx(expect_cloud, rel=1e-6)
    assert sc.predict_mean_ms({"edge": 0.5, "cloud": 0.5}) == pytest.approx((per[0] + per[2]) / 2)
    cloud_only = scenario_costs(load_scenario("cloud-only"), bundle, {"full": 3.0})
    assert cloud_only.entry_ms > 46 and cloud_only.exit_ms == [46.0] and cloud_only.pickup_rtt_ms == 92.0


def test_pickup_wait_of_a_fetch_that_returns_at_the_wait() -> None:
    assert pickup_ms(0, 10) == pytest.approx(5.0)  # a local broker: half the fetch wait
    assert pickup_ms(92, 10) == pytest.approx(10 / 102 * 5 + 92 / 102 * 56)  # across the WAN: about RTT/2 + W
    assert pickup_ms(0, 0) == 0.0


def test_kafka_hops_per_answering_tier_from_the_settings(bundle) -> None:
    sc = scenario_costs(load_scenario("edge-fog-cloud"), bundle, {"edge": 1.0, "fog": 2.0, "cloud": 3.0})
    per = sc.messaging_ms(fetch_wait_ms=10, batch_wait_ms=5, linger_ms=2)
    hop, relay = 10 / 2 + 5 + 2, 10 / 2 + 5 / 2 + 2  # a tier's hop; an upper tier's answer relayed by the entry tier
    pickup = pickup_ms(sc.pickup_rtt_ms, 10) + 2
    assert per.tolist() == pytest.approx([hop + pickup, 2 * hop + relay + pickup, 3 * hop + relay + pickup])
