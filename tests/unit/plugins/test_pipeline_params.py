"""Pipeline parameter validation: good values pass typed, each wrong value says what to fix."""

from __future__ import annotations

import pytest

from plugins.pipeline.params import PARAM_SPECS, ParamError, defaults, validate


def test_defaults_are_valid_and_typed():
    cfg = validate({})
    assert cfg.architecture == "compact"
    assert cfg.tier_map == {"edge": [0], "fog": [1], "cloud": [2]}
    assert cfg.tier_map_text == "edge=0;fog=1;cloud=2"
    assert set(defaults()) == set(PARAM_SPECS)


def test_lists_from_the_form_as_text_are_parsed():
    cfg = validate({"exit_loss_weights": "[1, 0.5, 0.25]", "cost_weights": "1, 5, 20", "objective": "cost"})
    assert cfg.exit_loss_weights == [1.0, 0.5, 0.25]
    assert cfg.cost_weights == [1.0, 5.0, 20.0]


@pytest.mark.parametrize("spec", ["vgg", "my_pkg.nets:build_net", " nets:tiny ", "/data/m.keras",
                                  "file:m.keras", "s3://models/net.keras", "models:/net/3", "models:/net@champion",
                                  "runs:/abc/model"])
def test_user_architectures_pass_validation_in_the_scheduler_without_tensorflow(spec):
    import re

    assert validate({"architecture": spec}).architecture == spec.strip()
    assert re.match(PARAM_SPECS["architecture"][1]["pattern"], spec)  # and the trigger form


@pytest.mark.parametrize("spec", ["resnet", "my.models:", "weights.h5", "models:/", ""])
def test_the_trigger_form_pattern_refuses_what_validation_refuses(spec):
    import re

    assert not re.match(PARAM_SPECS["architecture"][1]["pattern"], spec)


def test_cloud_only_tier_map():
    assert validate({"tier_map": "cloud=final"}).tier_map == {"cloud": ["final"]}


@pytest.mark.parametrize(("conf", "needle"), [
    ({"architecture": "resnet"}, "architecture='resnet': unknown architecture; give a built-in name ['compact'"),
    ({"architecture": "my.models:"}, "is not an import path: write 'package.module:factory'"),
    ({"architecture": "weights.h5"}, "save the model in the Keras 3 format"),
    ({"architecture": "models:/"}, "the MLflow URI names no model"),
    ({"architecture": 3}, "architecture=3: give a built-in name"),
    ({"epochs": 0}, "epochs=0: give a whole number from 1 to 200"),
    ({"epochs": "many"}, "epochs='many'"),
    ({"tier_map": "edge=0;mist=1;cloud=2"}, "unknown tier(s) ['mist']"),
    ({"tier_map": "cloud=2;edge=0"}, "list tiers from edge to cloud"),
    ({"tier_map": "edge0"}, "expected 'tier=exit"),
    ({"tier_map": "edge=1;cloud=0"}, "ascending"),
    ({"exit_loss_weights": [1, -1]}, "exit_loss_weights=[1, -1]: give a list of numbers >= 0"),
    ({"exit_loss_weights": [0, 0]}, "at least one > 0"),
    ({"accuracy_tolerance": 80}, "accuracy_tolerance=80: give accuracy points from 0 to 50"),
    ({"objective": "cost"}, "objective='cost' needs cost_weights"),
    ({"cost_weights": [1, 2]}, "one cost per tier of the tier map (3"),
    ({"backend": "docker"}, "backend='docker': choose one of ['local', 'kubernetes']"),
    ({"canary_requests": -5}, "canary_requests=-5"),
    ({"min_accuracy": 85}, "min_accuracy=85: give the lowest acceptable test accuracy as a fraction from 0 to 1"),
    ({"min_accuracy": "high"}, "min_accuracy='high'"),
    ({"dataset": "http://x"}, "dataset='http://x'"),
    ({"epoch": 3}, "unknown parameter(s) ['epoch']"),
])
def test_wrong_values_fail_with_what_to_fix(conf, needle):
    with pytest.raises(ParamError) as err:
        validate(conf)
    assert needle in str(err.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ParamError) as err:
        validate({"epochs": 0, "backend": "x", "architecture": "y"})
    assert str(err.value).count("\n- ") == 3


def test_every_ml_parameter_names_an_option_of_the_ml_pipeline():
    """The DAG's ML parameters map onto ml.pipeline's config by name: renaming a field on one side only fails."""
    from dataclasses import fields

    from ml.architectures import ARCHITECTURES as ML_ARCHITECTURES
    from ml.confidence import MEASURES
    from ml.pipeline import PipelineConfig
    from ml.training import TrainConfig
    from plugins.pipeline.params import ML_OPTIONS, PipelineParams, ml_options

    ml_fields = {f.name for f in fields(PipelineConfig)} | {f.name for f in fields(TrainConfig)}
    assert set(ML_OPTIONS) <= set(PARAM_SPECS)
    assert set(ML_OPTIONS.values()) <= ml_fields, set(ML_OPTIONS.values()) - ml_fields
    assert {f.name for f in fields(PipelineParams)} == set(PARAM_SPECS)
    assert PARAM_SPECS["architecture"][1]["examples"] == list(ML_ARCHITECTURES)
    assert PARAM_SPECS["confidence"][1]["enum"] == list(MEASURES)
    options = ml_options(validate({"confidence": "entropy", "accuracy_tolerance": 2, "min_accuracy": 0}).to_dict())
    assert options["measure"] == "entropy" and options["tolerance"] == 2.0
    assert options["min_accuracy"] == 0.0 and isinstance(options["min_accuracy"], float)
    assert options["tier_map"] == {"edge": [0], "fog": [1], "cloud": [2]}


def test_the_ml_pipeline_accepts_the_options_the_dag_sets(tmp_path):
    """ml.pipeline.train_calibrate_partition rejects unknown options before training: none of ours is."""
    import numpy as np

    from ml.pipeline import train_calibrate_partition
    from plugins.pipeline.params import ml_options

    options = ml_options(validate({"tier_map": "edge=0;cloud=1+2"}).to_dict())
    with pytest.raises(ValueError, match="at least 2 classes"):  # past the option check, at the data check
        train_calibrate_partition(np.zeros((4, 28, 28, 1), "float32"), np.zeros(4, "int64"), ["only"], tmp_path,
                                  **options)


def test_the_form_needs_nothing_the_defaults_lack_and_its_schema_agrees_with_validate():
    """Every default passes its own schema (the trigger form works untouched); a parameter whose default
    is empty allows null (the form marks a field required unless its type allows null); the patterns
    accept what validate() accepts and refuse what it refuses."""
    import jsonschema

    from plugins.pipeline.params import PARAM_SPECS, defaults

    for name, (default, schema, _desc) in PARAM_SPECS.items():
        jsonschema.validate(default, schema)
        if default in (None, ""):
            assert "null" in schema["type"], name
    validate(defaults())

    def schema_ok(name: str, value: str) -> bool:
        return jsonschema.Draft7Validator(PARAM_SPECS[name][1]).is_valid(value)

    for good in ("edge=0;fog=1;cloud=2", "cloud=final", "edge=0,cloud=1", " edge = 0+1 ; cloud = final ", "edge=0;cloud=1;"):
        assert schema_ok("tier_map", good) and validate({"tier_map": good})
    for bad in ("nonsense", "edge0", "edge=0;mist=1", "edge=;cloud=1", "", "edge=0 fog=1", "edge=0;;fog=1", ";"):
        assert not schema_ok("tier_map", bad), bad
        with pytest.raises(ParamError):
            validate({"tier_map": bad})
    for good in ("", None, "fashion-mnist", "s3://bkt/datasets/x/manifest.json", "/tmp/m.json", "file:m.json"):
        assert schema_ok("dataset", good) and validate({"dataset": good}).dataset == (good or "")
    for bad in ("http://x", "s3://", "fashion"):
        assert not schema_ok("dataset", bad), bad
        with pytest.raises(ParamError):
            validate({"dataset": bad})


def test_adaptive_exit_parameters_are_checked_and_reach_the_ml_pipeline_and_the_workers():
    from plugins.pipeline.params import ml_options, worker_env

    cfg = validate({"adaptive_floor": 3, "latency_objective_ms": 250}).to_dict()
    assert ml_options(cfg)["adaptive_floor"] == 3.0
    assert worker_env(cfg) == {"TIERFLOW_WORKER__ADAPTIVE__OBJECTIVE_MS": "250"}
    assert worker_env(validate({}).to_dict()) == {}  # off by default
    with pytest.raises(ParamError) as err:
        validate({"adaptive_floor": 0.5, "accuracy_tolerance": 1.0, "latency_objective_ms": -1})
    text = str(err.value)
    assert "adaptive_floor=0.5 is below accuracy_tolerance=1.0" in text and "adaptive_floor >= accuracy_tolerance" in text
    assert "latency_objective_ms=-1: give the p95 objective in ms" in text
    with pytest.raises(ParamError, match="adaptive_floor='x': give accuracy points from 0 to 50"):
        validate({"adaptive_floor": "x"})
