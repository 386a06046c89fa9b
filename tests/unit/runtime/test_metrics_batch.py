"""observe_many must leave a histogram exactly as one observe() per value would (it uses private fields)."""

import pytest
from prometheus_client import CollectorRegistry, Histogram

from runtime.metrics import observe_many


def _samples(registry: CollectorRegistry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in registry.collect() for s in fam.samples
            if not s.name.endswith("_created")}


def test_observe_many_matches_observe():
    values = [0.0, 0.001, 0.0011, 0.0025, 0.003, 0.5, 0.7, 10.0, 11.0, 1e9, 0.004, 0.004, 0.001]
    regs = [CollectorRegistry(), CollectorRegistry()]
    one, many = (Histogram("h", "h", ["tier"], buckets=(0.001, 0.0025, 0.005, 0.5, 10.0), registry=r).labels(tier="t")
                 for r in regs)
    for v in values:
        one.observe(v)
    observe_many(many, values[:4])
    observe_many(many, [])
    observe_many(many, values[4:])
    expected = _samples(regs[0])
    assert expected[("h_count", (("tier", "t"),))] == len(values)
    got = _samples(regs[1])
    key = ("h_sum", (("tier", "t"),))
    assert got.pop(key) == pytest.approx(expected.pop(key), rel=1e-12)  # summed in another order
    assert got == expected
