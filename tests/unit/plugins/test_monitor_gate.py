"""Pure decisions of the control plane: live stats, drift, retrain reasons, the champion gate."""

from __future__ import annotations

import pytest

from plugins.pipeline.ml_steps import gate_verdict
from plugins.pipeline.monitor import MonitorBounds, exit_drift, live_stats, retrain_reasons


def result(rid, label, tier="edge", version="1"):
    return {"request_id": rid, "label": label, "tier": tier, "model_version": version}


def test_live_stats_joins_by_request_id_and_keeps_the_first_answer():
    results = [result("a", 1), result("b", 2, "fog"), result("a", 9), result("c", 3, "cloud")]
    stats = live_stats(results, {"a": 1, "b": 5, "z": 0})
    assert (stats.results, stats.joined, stats.correct) == (3, 2, 1)
    assert stats.accuracy == 0.5
    assert stats.tier_fractions == pytest.approx({"edge": 1 / 3, "fog": 1 / 3, "cloud": 1 / 3})


def test_exit_drift_is_total_variation():
    assert exit_drift({"edge": 0.5, "fog": 0.5}, {"edge": 0.5, "fog": 0.5}) == 0
    assert exit_drift({"edge": 1.0}, {"cloud": 1.0}) == 1
    assert exit_drift({"edge": 0.7, "cloud": 0.3}, {"edge": 0.5, "cloud": 0.5}) == pytest.approx(0.2)


def test_retrain_reasons_accuracy_drift_and_too_little_data():
    bounds = MonitorBounds(min_accuracy=0.8, max_exit_drift=0.2, min_samples=4, min_results=4)
    bad = live_stats([result(str(i), 0) for i in range(10)], {str(i): i % 2 for i in range(10)})
    reasons = retrain_reasons(bad, {"edge": 0.3, "cloud": 0.7}, bounds)
    assert any("live accuracy 0.500 < 0.800" in r for r in reasons)
    assert any("exit-rate drift 0.700 > 0.200" in r for r in reasons)
    few = live_stats([result("1", 0)], {"1": 1})
    assert retrain_reasons(few, {"cloud": 1.0}, bounds) == []
    good = live_stats([result(str(i), 0) for i in range(10)], {str(i): 0 for i in range(10)})
    assert retrain_reasons(good, {"edge": 0.9, "fog": 0.1}, bounds) == []


TEN = {"num_classes": 10, "test_samples": 2000}


def test_gate_passes_without_champion_and_within_margin_only():
    assert gate_verdict(0.5, None, 0.01, **TEN)["passed"]
    champ = {"release": "3", "metrics": {"test_accuracy": 0.85}}
    assert gate_verdict(0.845, champ, 0.01, **TEN)["passed"]
    verdict = gate_verdict(0.80, champ, 0.01, **TEN)
    assert not verdict["passed"] and "champion release 3 0.8500" in verdict["reason"]


@pytest.mark.parametrize("champion", [None, {"release": "3", "metrics": {"test_accuracy": 0.10}}])
def test_gate_stops_a_model_at_chance_also_the_first_release(champion):
    verdict = gate_verdict(0.11, champion, 0.01, **TEN)
    assert not verdict["passed"]
    assert verdict["reason"].startswith("sanity check: test accuracy 0.1100 is not above chance (0.1000 for 10")


def test_gate_stops_a_model_below_the_accuracy_floor():
    verdict = gate_verdict(0.344, None, 0.01, **TEN, min_accuracy=0.5)
    assert not verdict["passed"] and "below the floor min_accuracy=0.5" in verdict["reason"]
    assert gate_verdict(0.6, None, 0.01, **TEN, min_accuracy=0.5)["passed"]


def test_gate_step_stops_the_first_release_of_a_broken_model(monkeypatch):
    import ml.registry
    from plugins.pipeline.ml_steps import gate_step
    from runtime.settings import Settings

    settings = Settings(_env_file=None)
    monkeypatch.setattr(ml.registry, "champion_metrics", lambda app, uri: None)  # no champion yet
    trained = {"test_accuracy": 0.1, **TEN}
    with pytest.raises(RuntimeError, match="gate: candidate rejected.*sanity check: test accuracy 0.1000 is not"):
        gate_step({"gate_margin": 0.01, "min_accuracy": 0.0}, trained, settings)
    assert gate_step({"gate_margin": 0.01, "min_accuracy": 0.5}, {**trained, "test_accuracy": 0.9}, settings)["passed"]


def test_canary_answers_stay_out_of_live_accuracy_and_exit_drift():
    """A rollout's canary (all answered at the cloud here, never any feedback) must not make live traffic
    look drifted: the same live answers with and without a canary give the same verdict."""
    from ml.contract import CANARY_ID_PREFIX

    live = [{"request_id": f"r{i}", "label": i % 10, "tier": "edge" if i % 4 else "fog"} for i in range(200)]
    canary = [{"request_id": f"{CANARY_ID_PREFIX}7-ab12-{i}", "label": 0, "tier": "cloud"} for i in range(300)]
    truths = {f"r{i}": i % 10 for i in range(200)}
    expected = {"edge": 0.75, "fog": 0.25}
    bounds = MonitorBounds()
    alone, mixed = live_stats(live, truths), live_stats(live + canary, truths)
    assert mixed.canary_excluded == 300 and alone.canary_excluded == 0
    assert (mixed.results, mixed.joined, mixed.accuracy, mixed.tier_fractions) == (
        alone.results, alone.joined, alone.accuracy, alone.tier_fractions)
    assert retrain_reasons(mixed, expected, bounds) == [] == retrain_reasons(alone, expected, bounds)
    counted = live_stats([{**r, "request_id": r["request_id"].replace(CANARY_ID_PREFIX, "x-")} for r in canary]
                         + live, truths)
    assert retrain_reasons(counted, expected, bounds)[0].startswith("exit-rate drift")  # what it would do


def test_drift_caused_by_adaptation_is_reported_as_such_and_triggers_no_retraining():
    from plugins.pipeline.monitor import adaptation_note

    bounds = MonitorBounds(min_accuracy=0.5, max_exit_drift=0.2, min_samples=4, min_results=4)
    # a slow upstream: the edge answered everything itself, 8 of 10 answers at adapted thresholds
    results = [result(str(i), 0) | {"adapted": i < 8} for i in range(10)]
    stats = live_stats(results, {str(i): 0 for i in range(10)})
    assert stats.adapted == 8 and stats.adapted_fraction == 0.8
    expected = {"edge": 0.5, "fog": 0.3, "cloud": 0.2}
    assert retrain_reasons(stats, expected, bounds) == []
    note = adaptation_note(stats, expected, bounds)
    assert note is not None and "drift 0.500" in note and "8 of 10 results at adapted thresholds" in note
    # the same drift with calibrated answers is a reason to retrain, and no adaptation note
    calibrated = live_stats([result(str(i), 0) | {"adapted": False} for i in range(10)], {})
    assert any("exit-rate drift 0.500" in r for r in retrain_reasons(calibrated, expected, bounds))
    assert adaptation_note(calibrated, expected, bounds) is None
    # adaptation does not hide a bad model: live accuracy is still judged
    bad = live_stats(results, {str(i): 1 for i in range(10)})
    assert any("live accuracy 0.000" in r for r in retrain_reasons(bad, expected, bounds))
