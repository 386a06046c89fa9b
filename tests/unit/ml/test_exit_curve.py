import json

import numpy as np
import pytest

from ml.bundle import BundleManifest, ManifestTier, TensorSpec, read_manifest, write_manifest
from ml.calibration import calibrate
from ml.evaluation import simulate_cascade
from ml.exit_curve import ExitCurve, OperatingPoint, exit_curves


def _synthetic(n: int = 4000, seed: int = 0, k: int = 10) -> tuple[list[np.ndarray], np.ndarray]:
    """Three exits of rising quality; each exit's confidence predicts whether it is right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = []
    for skill in (0.6, 0.8, 0.93):
        conf = rng.uniform(0.2, 1.0, n)
        right = rng.uniform(0, 1, n) < np.clip(skill * (0.5 + conf), 0, 1)
        pred = np.where(right, y, (y + 1 + rng.integers(0, k - 1, n)) % k)
        p = np.full((n, k), 0.0)
        p[np.arange(n), pred] = conf
        rest = (1 - conf) / (k - 1)
        p += np.where(p == 0, rest[:, None], 0)
        probs.append(p)
    return probs, y


@pytest.fixture(scope="module")
def case():
    probs, y = _synthetic()
    cal = calibrate(probs, y, tolerance=1.0, margin_se=0)
    return probs, y, cal


def test_curve_starts_at_calibration_and_answers_more_at_each_point(case):
    probs, y, cal = case
    curves = exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=3.0, margin_se=0)
    assert set(curves) == {"edge", "fog"}  # the last tier forwards nothing
    for t, (name, curve) in enumerate(curves.items()):
        first = curve.points[0]
        assert first.thresholds == [cal.thresholds[t]]
        assert first.accuracy == pytest.approx(cal.accuracy)
        assert len(curve.points) > 3
        rates = [p.answer_rate for p in curve.points]
        assert all(b > a for a, b in zip(rates, rates[1:], strict=False)), name
        ths = [p.thresholds[0] for p in curve.points]
        assert all(b <= a for a, b in zip(ths, ths[1:], strict=False)), name
        assert all(p.accuracy >= curve.floor_accuracy - 1e-12 for p in curve.points)
        assert curve.floor_accuracy == pytest.approx(cal.final_accuracy - 0.03)
    # answering more at the edge costs less on the "early" objective
    edge = curves["edge"].points
    assert edge[-1].expected_cost < edge[0].expected_cost


def test_points_are_what_the_cascade_does_with_those_thresholds(case):
    probs, y, cal = case
    curves = exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=3.0, margin_se=0)
    p = curves["edge"].points[-1]
    ths = list(cal.thresholds)
    ths[0] = p.thresholds[0]
    tier_of, _, label = simulate_cascade(probs, ths, None, "max_softmax")
    assert p.accuracy == pytest.approx(float((label == y).mean()))
    assert p.answer_rate == pytest.approx(float((tier_of == 0).mean()))


def test_a_tighter_floor_gives_a_shorter_curve_and_the_margin_shortens_it(case):
    probs, y, cal = case
    wide = exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=5.0, margin_se=0)
    tight = exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=1.5, margin_se=0)
    safe = exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=5.0, margin_se=3)
    assert len(tight["edge"].points) < len(wide["edge"].points)
    assert len(safe["edge"].points) < len(wide["edge"].points)
    # usable() with a stricter floor than stored cuts the stored curve, a looser one changes nothing
    cut = wide["edge"].usable(1.5)
    assert len(cut) < len(wide["edge"].points) and all(q.accuracy >= cal.final_accuracy - 0.015 for q in cut[1:])
    assert wide["edge"].usable(9.0) == wide["edge"].points


def test_every_tier_at_its_last_point_at_once_still_meets_the_floor(case):
    probs, y, cal = case
    curves = exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=3.0, margin_se=0)
    ths = list(cal.thresholds)
    ths[0], ths[1] = curves["edge"].points[-1].thresholds[0], curves["fog"].points[-1].thresholds[0]
    _, _, label = simulate_cascade(probs, ths, None, "max_softmax")
    assert float((label == y).mean()) >= cal.final_accuracy - 0.03 - 1e-12


def test_calibration_below_the_floor_leaves_only_the_calibrated_point(case):
    probs, y, _ = case
    loose = calibrate(probs, y, tolerance=5.0, margin_se=0)
    curves = exit_curves(probs, y, None, loose.thresholds, loose.exit_costs, floor_points=0.5, margin_se=0)
    assert [len(c.points) for c in curves.values()] == [1, 1]


def test_bad_arguments_are_refused(case):
    probs, y, cal = case
    with pytest.raises(ValueError, match="floor_points"):
        exit_curves(probs, y, None, cal.thresholds, cal.exit_costs, floor_points=-1)
    with pytest.raises(ValueError, match="exit cost"):
        exit_curves(probs, y, None, cal.thresholds, [0.0], floor_points=1)


def _manifest(curve: ExitCurve | None) -> BundleManifest:
    tiers = [ManifestTier(name="edge", exits=[0], file="edge.keras", input_shape=[4], output_shape=[2],
                          thresholds=[0.9], curve=curve),
             ManifestTier(name="cloud", exits=[1], file="cloud.keras", input_shape=[2], output_shape=None,
                          thresholds=[None])]
    return BundleManifest(model_name="m", architecture="x", input=TensorSpec(shape=[4]), class_names=["a", "b"],
                          tiers=tiers, num_exits=2)


def test_curve_round_trips_in_the_manifest_and_old_manifests_still_read(tmp_path):
    curve = ExitCurve(final_accuracy=0.9, floor_points=2.0, floor_accuracy=0.88, points=[
        OperatingPoint(thresholds=[0.9], answer_rate=0.5, accuracy=0.9, expected_cost=0.5),
        OperatingPoint(thresholds=[0.7], answer_rate=0.7, accuracy=0.89, expected_cost=0.3)])
    write_manifest(tmp_path, _manifest(curve))
    assert read_manifest(tmp_path).tier("edge").curve == curve
    # a manifest written before curves existed reads as "no curve"
    raw = json.loads((tmp_path / "manifest.json").read_text())
    for t in raw["tiers"]:
        t.pop("curve")
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(tmp_path).tier("edge").curve is None
    # older code ignores fields it does not know (what it does with "curve"): unknown fields are not refused
    raw["tiers"][0]["some_later_field"] = {"x": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    assert read_manifest(tmp_path).tier("edge").thresholds == [0.9]


def test_registered_tier_tags_name_the_floor_and_the_lowest_threshold():
    from ml.registry import _tier_tags

    curve = ExitCurve(final_accuracy=0.9, floor_points=2.0, floor_accuracy=0.88, points=[
        OperatingPoint(thresholds=[0.9], answer_rate=0.5, accuracy=0.9, expected_cost=0.5),
        OperatingPoint(thresholds=[0.7], answer_rate=0.7, accuracy=0.89, expected_cost=0.3)])
    tags = _tier_tags(_manifest(curve), "edge", "3", "run", None)
    assert tags["tierflow.accuracy_floor"] == "0.8800"
    assert tags["tierflow.operating_points"] == "2"
    assert json.loads(tags["tierflow.lowest_threshold"]) == [0.7]
    assert "tierflow.accuracy_floor" not in _tier_tags(_manifest(None), "edge", "3", "run", None)
