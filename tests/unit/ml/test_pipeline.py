"""train → calibrate → partition → evaluate end to end on a small slice of Fashion-MNIST."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from ml.datasets import load_fashion_mnist
    from ml.pipeline import train_calibrate_partition

    train = load_fashion_mnist("train").subset(2400, seed=0)
    test = load_fashion_mnist("test").subset(600, seed=0)
    out = tmp_path_factory.mktemp("pipeline")
    return train_calibrate_partition(train.x, train.y, train.class_names, out, x_test=test.x, y_test=test.y,
                                     epochs=2, width=0.25, tolerance=1.0, progress=False, tflite=True,
                                     metadata={"version": "test-1"}), test


def test_pipeline_writes_bundle_report_and_plots(small_run):
    result, test = small_run
    from ml.bundle import read_manifest

    m = read_manifest(result.bundle_dir)
    assert m.tier_names == ["edge", "fog", "cloud"]
    assert set(m.tflite) == {"float", "int8"} and (result.bundle_dir / m.tflite["int8"]).is_file()
    assert m.metadata["dataset"] == {"version": "test-1"}
    # the forwarding tiers carry their operating points from the calibrated thresholds down to the floor
    for tier in ("edge", "fog"):
        curve = m.tier(tier).curve
        assert curve is not None and curve.points[0].thresholds == m.tier(tier).thresholds
        assert curve.floor_accuracy == pytest.approx(curve.final_accuracy - 0.02)
    assert m.tier("cloud").curve is None
    report = json.loads(result.report_path.read_text())
    assert report["n"]["test"] == len(test)
    assert set(report["exit_curves"]) == {"edge", "fog"}
    for p in result.plots:
        assert p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG"
    for key in ("test_accuracy", "test_final_exit_accuracy", "test_relative_compute", "test_fraction_edge",
                "val_exit0_accuracy", "train_seconds"):
        assert key in result.metrics
    assert sum(v for k, v in result.metrics.items() if k.startswith("test_fraction_")) == pytest.approx(1.0)
    assert 0 < result.metrics["test_relative_compute"] <= 1.0 + 1e-9
    assert report["sanity"]["passed"] and report["sanity"]["accuracy"] == report["test"]["accuracy"]
    assert report["sanity"]["chance"] == pytest.approx(0.1) and report["sanity"]["n"] == len(test)
    tfl = report["test"]["tflite"]
    assert tfl["float_agreement"] >= 0.99 and tfl["int8_agreement"] >= 0.8, tfl


def test_calibration_constraint_holds_on_validation(small_run):
    result, _ = small_run
    cal = result.report["calibration"]
    assert cal["accuracy"] >= cal["final_accuracy"] - 0.01 - 1e-12
    thresholds = [t for t in cal["thresholds"][:-1]]
    assert all(t is not None for t in thresholds) and cal["thresholds"][-1] is None


def test_bad_options_fail_before_training(tmp_path):
    from ml.pipeline import train_calibrate_partition

    x = np.zeros((20, 28, 28, 1), np.uint8)
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match=r"unknown pipeline options \['epochz'\]"):
        train_calibrate_partition(x, y, ["a", "b"], tmp_path, epochz=3)
    with pytest.raises(ValueError, match="must hold the final exit"):
        train_calibrate_partition(x, y, ["a", "b"], tmp_path, tier_map={"edge": [0]}, epochs=1, progress=False)
    with pytest.raises(ValueError, match="min_accuracy=1.5: give an accuracy from 0 to 1"):
        train_calibrate_partition(x, y, ["a", "b"], tmp_path, min_accuracy=1.5)


def test_cost_objective_with_given_tier_costs(tmp_path):
    from ml.datasets import load_fashion_mnist
    from ml.pipeline import train_calibrate_partition

    train = load_fashion_mnist("train").subset(600, seed=1)
    with pytest.raises(ValueError, match="tier_costs needs one cost per tier"):
        train_calibrate_partition(train.x, train.y, train.class_names, tmp_path, epochs=1, width=0.25,
                                  progress=False, objective="cost", tier_costs=[1, 2], tflite=False)
