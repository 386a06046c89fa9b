"""`tierflow ml train → calibrate → partition → evaluate` on a small slice, through the real CLI."""

import json

from typer.testing import CliRunner

from ml.cli import app

runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, [*args])
    assert result.exit_code == 0, result.output
    return result


def test_cli_steps_share_a_run_directory(tmp_path):
    run = tmp_path / "run"
    _ok(["train", "--out", str(run), "--n-train", "1500", "--epochs", "1", "--width", "0.25", "--patience", "0"])
    assert (run / "model.keras").is_file() and (run / "training.png").is_file()
    train = json.loads((run / "train.json").read_text())
    assert train["n"] == {"train": 1350, "val": 150, "test": 10000}
    _ok(["calibrate", "--run", str(run), "--tier-map", "edge=0;cloud=1+2", "--tolerance", "2"])
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["tier_map"] == {"edge": [0], "cloud": [1, 2]}
    assert cal["accuracy"] >= cal["final_accuracy"] - 0.02 or not cal["feasible"]
    assert (run / "tradeoff.png").is_file()
    _ok(["partition", "--run", str(run), "--no-tflite", "--model-name", "shirts"])
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    assert manifest["model_name"] == "shirts" and [t["name"] for t in manifest["tiers"]] == ["edge", "cloud"]
    assert manifest["tiers"][0]["thresholds"] == [cal["thresholds"][0]]
    _ok(["evaluate", "--bundle", str(run / "bundle")])
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["n"] == 10000 and sum(ev["tier_fractions"].values()) == 1.0
    assert set(ev["bytes_per_request"]) == {"device-edge", "edge-cloud"}


def test_cli_errors_say_what_to_fix(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path), "--dataset", "cifar-10"])
    assert result.exit_code == 2 and "unknown dataset 'cifar-10'" in result.output
    (tmp_path / "train.json").write_text(json.dumps({"config": {"train": {}}, "dataset": "fashion-mnist"}))
    result = runner.invoke(app, ["partition", "--run", str(tmp_path)])
    assert result.exit_code == 2 and "run `tierflow ml calibrate" in result.output


def test_a_user_factory_and_a_user_keras_file_train_calibrate_and_partition(tmp_path, monkeypatch):
    """The worked example of docs/user-models.md through the CLI: as an import path, then saved to a .keras
    file (its weights the starting point); a broken one is refused before training."""
    import sys
    from pathlib import Path

    examples = Path(__file__).resolve().parents[3] / "docs" / "examples"
    monkeypatch.syspath_prepend(str(examples))
    run = tmp_path / "factory"
    out = _ok(["train", "--out", str(run), "--architecture", "my_exits:build", "--n-train", "1200", "--epochs", "2",
               "--batch-size", "32", "--patience", "0"]).output
    assert "val_accuracy_per_exit" in out
    train = json.loads((run / "train.json").read_text())
    assert train["config"]["architecture"] == "my_exits:build"
    assert train["val_exits"][-1]["accuracy"] > 0.4  # learnt something (chance is 0.1)
    _ok(["calibrate", "--run", str(run)])
    _ok(["partition", "--run", str(run), "--no-tflite"])
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    assert manifest["architecture"] == "my_exits:build" and len(manifest["tiers"]) == 3

    import my_exits

    assert "my_exits" in sys.modules
    saved = tmp_path / "mine.keras"
    my_exits.build((28, 28, 1), 10).save(saved)
    _ok(["train", "--out", str(tmp_path / "file"), "--architecture", str(saved), "--n-train", "600", "--epochs", "1",
         "--patience", "0"])
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--architecture",
                                 "my_exits:build_without_cuts", "--n-train", "300"])
    assert result.exit_code == 2 and "missing cut-point layers ['cut_0']" in result.output
    assert not (tmp_path / "bad" / "model.keras").exists()


def test_run_exits_1_when_the_model_fails_the_sanity_check(tmp_path):
    """Labels that carry no signal: the one-go run says why the pipeline would not register the model, and
    fails, so a script that chains it does not go on."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "noise.npz"
    np.savez(data, x_train=rng.integers(0, 255, (600, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 600),
             x_test=rng.integers(0, 255, (400, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 400))
    result = runner.invoke(app, ["run", "--out", str(tmp_path / "run"), "--dataset", str(data), "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert "sanity check failed" in result.output and "not above chance" in result.output
