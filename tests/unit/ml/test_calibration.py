import itertools

import numpy as np
import pytest

from ml.calibration import calibrate
from ml.cascade import NEVER
from ml.evaluation import evaluate_cascade


def _probs(conf: np.ndarray, correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """2-class probabilities whose max is ``conf`` and whose argmax is right where ``correct``."""
    pred = np.where(correct, y, 1 - y)
    p = np.empty((len(y), 2))
    p[np.arange(len(y)), pred] = conf
    p[np.arange(len(y)), 1 - pred] = 1 - conf
    return p


@pytest.fixture
def known_case():
    """100 requests. Exit 0: rows 0-59 sure (0.95) and right; rows 60-99 unsure (0.6), half wrong.
    Exit 1 on rows 60-99: 60-89 sure (0.9) and right; 90-99 at 0.7 with one mistake. Final: all right.
    With 1.0 point tolerance the optimum is 60 % edge, 40 % fog, 0 % cloud at accuracy 0.99;
    with 0.5 points the ten 0.7 rows must go to the cloud (60/30/10, accuracy 1.0)."""
    n = 100
    y = np.arange(n) % 2
    c0 = np.where(np.arange(n) < 60, 0.95, 0.6)
    ok0 = (np.arange(n) < 60) | (np.arange(n) % 2 == 0)
    c1 = np.where(np.arange(n) < 90, 0.9, 0.7)
    ok1 = np.arange(n) != 95
    return [_probs(c0, ok0, y), _probs(c1, ok1, y), _probs(np.full(n, 0.8), np.ones(n, bool), y)], y


def test_early_objective_finds_known_optimum(known_case):
    probs, y = known_case
    cal = calibrate(probs, y, tolerance=1.0, margin_se=0)
    assert cal.final_accuracy == 1.0
    assert cal.exit_fractions == pytest.approx([0.6, 0.4, 0.0])
    assert cal.accuracy == pytest.approx(0.99)
    assert cal.expected_cost == pytest.approx(0.4)
    assert 0.6 < cal.thresholds[0] <= 0.95 and cal.thresholds[1] <= 0.7 and cal.thresholds[2] is None
    strict = calibrate(probs, y, tolerance=0.5, margin_se=0)
    assert strict.exit_fractions == pytest.approx([0.6, 0.3, 0.1])
    assert strict.accuracy == 1.0 and 0.7 < strict.thresholds[1] <= 0.9


def test_safety_margin_rejects_a_choice_that_only_just_fits(known_case):
    probs, y = known_case
    # 0.99 with one differing row has a standard error of ~0.995 points: one SE of margin rules it out
    cal = calibrate(probs, y, tolerance=1.0, margin_se=1.0)
    assert cal.exit_fractions == pytest.approx([0.6, 0.3, 0.1]) and cal.accuracy == 1.0


def test_zero_tolerance_never_loses_accuracy_and_thresholds_replay_identically(known_case):
    probs, y = known_case
    cal = calibrate(probs, y, tolerance=0.0)
    assert cal.accuracy >= cal.final_accuracy
    ev = evaluate_cascade(probs, y, cal.thresholds, None)
    assert ev["accuracy"] == pytest.approx(cal.accuracy)
    assert ev["exit_fractions"] == pytest.approx(cal.exit_fractions)


def test_cost_objective_matches_brute_force():
    rng = np.random.default_rng(3)
    n, k = 400, 5
    y = rng.integers(0, k, n)
    probs = []
    for skill in (0.55, 0.75, 0.9):  # later exits are better
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), y] += skill * 4 * rng.random(n)
        e = np.exp(logits)
        probs.append(e / e.sum(axis=1, keepdims=True))
    tier_costs = [1.0, 12.0, 13.0]  # a cheap cloud after an expensive fog link
    cal = calibrate(probs, y, objective="cost", tier_costs=tier_costs, tolerance=2.0, grid_size=21, margin_se=0)
    # brute force over the same grid with the evaluation path (ml.cascade.decide)
    from ml.calibration import _grid
    from ml.confidence import confidence

    grids = [_grid(confidence(p, "max_softmax"), 21) for p in probs[:2]]
    final = (probs[2].argmax(1) == y).mean()
    best = None
    for t0, t1 in itertools.product(*grids):
        ev = evaluate_cascade(probs, y, [t0, t1, None], None, tier_costs=tier_costs)
        if ev["accuracy"] >= final - 0.02 - 1e-12:
            key = (round(ev["expected_cost"], 9), -ev["accuracy"])
            best = min(best, key) if best else key
    assert cal.feasible
    assert cal.expected_cost == pytest.approx(best[0])
    assert cal.accuracy == pytest.approx(-best[1])
    assert cal.accuracy >= final - 0.02


def test_unserved_exits_are_disabled_and_two_tier_map(known_case):
    probs, y = known_case
    cal = calibrate(probs, y, {"edge": [0], "cloud": [2]}, tolerance=1.0, margin_se=0)
    assert cal.thresholds[1] == NEVER
    assert cal.tier_fractions == pytest.approx({"edge": 0.6, "cloud": 0.4})
    only = calibrate(probs, y, {"cloud": ["final"]})
    assert only.tier_fractions == {"cloud": 1.0} and only.thresholds == [NEVER, NEVER, None]


def test_bad_calibration_input_is_a_clear_error(known_case):
    probs, y = known_case
    with pytest.raises(ValueError, match="objective 'cost' needs one cost per tier"):
        calibrate(probs, y, objective="cost")
    with pytest.raises(ValueError, match="unknown calibration objective"):
        calibrate(probs, y, objective="fastest")
    with pytest.raises(ValueError, match="one prediction per calibration label"):
        calibrate(probs, y[:10])


def test_many_exits_stay_tractable_and_meet_the_constraint():
    rng = np.random.default_rng(0)
    n, k = 2000, 4
    y = rng.integers(0, k, n)
    probs = []
    for skill in (0.4, 0.6, 0.75, 0.85, 0.95):
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), y] += skill * 5 * rng.random(n)
        e = np.exp(logits)
        probs.append(e / e.sum(axis=1, keepdims=True))
    cal = calibrate(probs, y, tolerance=1.0)
    ev = evaluate_cascade(probs, y, cal.thresholds, None)
    assert cal.feasible and ev["accuracy"] >= ev["final_exit_accuracy"] - 0.01
    assert ev["accuracy"] == pytest.approx(cal.accuracy)
    assert sum(cal.exit_fractions[:-1]) > 0  # something leaves early
