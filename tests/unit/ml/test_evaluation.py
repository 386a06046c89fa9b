import numpy as np
import pytest

from ml.costs import TierCosts, default_costs
from ml.evaluation import evaluate_cascade


def _onehot(labels, k=3, conf=0.9):
    p = np.full((len(labels), k), (1 - conf) / (k - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


def test_known_cascade_figures():
    y = np.array([0, 1, 2, 0])
    e0 = _onehot([0, 1, 1, 1], conf=0.9)
    e0[2:] = _onehot([1, 1], conf=0.5)  # rows 2, 3 unsure at the edge
    e1 = _onehot([0, 1, 2, 0], conf=0.6)
    e2 = _onehot([0, 1, 2, 0], conf=0.99)
    ev = evaluate_cascade([e0, e1, e2], y, [0.8, 0.7, None], None, tier_flops=[10, 40, 50], full_flops=80,
                          link_bytes=[1000, 200], input_bytes=784, tier_costs=[1, 5, 20])
    assert ev["tier_fractions"] == {"edge": 0.5, "fog": 0.0, "cloud": 0.5}
    assert ev["accuracy"] == 1.0
    assert ev["mean_flops"] == pytest.approx(0.5 * 10 + 0.5 * 100)
    assert ev["relative_compute"] == pytest.approx(55 / 80)
    assert ev["bytes_per_request"] == {"device-edge": 784.0, "edge-fog": 500.0, "fog-cloud": 100.0}
    assert ev["expected_cost"] == pytest.approx(10.5)
    assert ev["cloud_only"]["accuracy"] == 1.0 and ev["cloud_only"]["bytes_per_request"]["device-cloud"] == 784


def test_tier_costs_add_compute_latency_and_transfer():
    c = TierCosts(compute_ms=[1, 2, 3], link_latency_ms=[5, 10], link_bandwidth_mbps=[8, 80],
                  link_bytes=[1000, 10000])
    # edge: 1; fog: 1+2 + 5 + 1000B*8/8Mbit/s=1ms; cloud: fog + 3 + 10 + 10000*8/80e3 = 1ms
    np.testing.assert_allclose(c.per_tier(3), [1, 9, 23])
    with pytest.raises(ValueError, match="compute_ms needs one value per tier"):
        c.per_tier(2)
    d = default_costs([1e6, 1e7, 1e7], [4000, 2000])
    assert len(d.per_tier(3)) == 3 and d.per_tier(3)[0] < d.per_tier(3)[2]
