"""The sanity check every candidate passes before it is registered: beat chance by a margin, reach the floor."""

from __future__ import annotations

import pytest

from ml.evaluation import CHANCE_MARGIN_MIN, sanity_check


def test_chance_margin_is_statistical_with_a_minimum():
    small = sanity_check(0.5, 10, 100)
    assert small["chance"] == pytest.approx(0.1)
    assert small["margin"] == pytest.approx(3 * (0.1 * 0.9 / 100) ** 0.5)  # 0.09 on 100 samples
    assert sanity_check(0.5, 10, 10**6)["margin"] == CHANCE_MARGIN_MIN
    assert sanity_check(0.5, 2, 2000)["required"] == pytest.approx(0.5 + 3 * (0.25 / 2000) ** 0.5)


def test_at_chance_fails_and_says_why():
    out = sanity_check(0.12, 10, 2000)
    assert not out["passed"]
    assert "not above chance (0.1000 for 10 classes" in out["reason"] and "input scaling" in out["reason"]


def test_floor_applies_above_chance():
    assert sanity_check(0.344, 10, 2000)["passed"]  # above chance, no floor
    out = sanity_check(0.344, 10, 2000, min_accuracy=0.5)
    assert not out["passed"] and out["required"] == 0.5 and "lower min_accuracy" in out["reason"]
    assert sanity_check(0.5, 10, 2000, min_accuracy=0.5)["passed"]


@pytest.mark.parametrize(("k", "n", "match"), [(1, 10, "at least 2 classes"), (10, 0, "non-empty")])
def test_bad_inputs(k, n, match):
    with pytest.raises(ValueError, match=match):
        sanity_check(0.5, k, n)
