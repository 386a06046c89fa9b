"""Parameters of the train→calibrate→gate→register→deploy pipeline: UI form schema and validation.

The same rules serve twice: as JSON schema on each Airflow ``Param`` (the trigger form refuses a wrong
value before a run exists) and in :func:`validate`, which the DAG's first task calls, because REST and
Asset-triggered runs and ``dag.test(run_conf=...)`` can bypass the form. Every message names the
parameter and says what to fix. Pure Python: no TensorFlow, no Airflow (the DAG wraps these in Param).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, make_dataclass
from typing import Any

from ml.architectures import ARCHITECTURES
from ml.confidence import MEASURES
from ml.contract import TIERS
from ml.user_models import SPEC_PATTERN, spec_kind

BACKENDS = ("local", "kubernetes")
CONFIDENCE = MEASURES
OBJECTIVES = ("early", "cost")


# What a schema can say about the two text parameters (validate() re-checks the rest: tier order, exits).
# Airflow's answer to a value a pattern refuses quotes the pattern in its first line ("... does not match
# '<pattern>'"), so the patterns are written to be read there: one tier clause, no backslashes (repr
# would double them).
_EXIT = "([0-9]+|final|exit_[0-9]+)"
TIER_MAP_PATTERN = rf"^( *({'|'.join(TIERS)}) *= *{_EXIT}( *[+] *{_EXIT})* *([;,]|$))+$"
DATASET_PATTERN = r"^(|fashion-mnist|s3://[^/]+/.+|/.+|file:.+)$"


class ParamError(ValueError):
    """One or more pipeline parameters are wrong; the message lists each one and what to fix."""


# name -> (default, JSON schema, description shown in the trigger form)
PARAM_SPECS: dict[str, tuple[Any, dict[str, Any], str]] = {
    "architecture": ("compact", {"type": "string", "pattern": SPEC_PATTERN, "examples": list(ARCHITECTURES)},
                     "Multi-exit network: compact (28x28 default), b_alexnet, vgg, your factory "
                     "'package.module:function' (importable in the ML environment), a .keras file (path or s3://) "
                     "or an MLflow model URI (models:/name/version)."),
    # The demo's champion is trained with these defaults too, so a retrain with the defaults competes with
    # it on equal terms at the gate.
    "epochs": (5, {"type": "integer", "minimum": 1, "maximum": 200}, "Training epochs (1-200)."),
    "exit_loss_weights": (None, {"type": ["array", "null"], "items": {"type": "number", "minimum": 0}},
                          "Loss weight per exit, e.g. [1, 0.5, 0.3]; empty = 0.6 per early exit, 1.0 for the final."),
    "distill_weight": (0.0, {"type": "number", "minimum": 0, "maximum": 10},
                       "Self-distillation: weight of the final exit's softened outputs in each early exit's loss "
                       "(0 = plain joint training)."),
    "distill_temperature": (3.0, {"type": "number", "exclusiveMinimum": 0, "maximum": 20},
                            "Self-distillation: softmax temperature of the final exit's outputs the early exits learn."),
    "tier_map": ("edge=0;fog=1;cloud=2", {"type": "string", "pattern": TIER_MAP_PATTERN},
                 "Exits served by each tier, edge to cloud, e.g. 'edge=0;fog=1;cloud=2' or 'cloud=final'."),
    "accuracy_tolerance": (1.0, {"type": "number", "minimum": 0, "maximum": 50},
                           "Calibration: accuracy points the cascade may lose against the final exit."),
    "adaptive_floor": (2.0, {"type": "number", "minimum": 0, "maximum": 50},
                       "Adaptive exits: accuracy points below the final exit (validation split) a tier may go "
                       "when it answers more itself under a slow upstream; at least accuracy_tolerance."),
    "latency_objective_ms": (0.0, {"type": "number", "minimum": 0, "maximum": 600000},
                             "Adaptive exits: end-to-end p95 objective (ms) the forwarding tiers keep by "
                             "answering more themselves when their upstream slows; 0 = off (calibrated "
                             "thresholds always)."),
    "objective": ("early", {"type": "string", "enum": list(OBJECTIVES)},
                  "Calibration objective: 'early' (answer as early as possible) or 'cost' (tier costs)."),
    "cost_weights": (None, {"type": ["array", "null"], "items": {"type": "number", "minimum": 0}},
                     "Objective 'cost': cost of answering at each tier (ms), one per tier of the tier map."),
    "confidence": ("max_softmax", {"type": "string", "enum": list(CONFIDENCE)},
                   "Confidence measure at the exits."),
    "max_train_samples": (0, {"type": "integer", "minimum": 0},
                          "Use at most this many training samples (0 = all); small values for quick tests."),
    "min_accuracy": (0.0, {"type": "number", "minimum": 0, "maximum": 1},
                     "Sanity gate, also for the first release: lowest test accuracy a candidate may have "
                     "(0-1); it must always beat chance (1/classes) by a margin."),
    "gate_margin": (0.01, {"type": "number", "minimum": 0, "maximum": 1},
                    "Gate: the candidate may be at most this much less accurate than the champion."),
    "backend": ("local", {"type": "string", "enum": list(BACKENDS)},
                "Where the tier workers run: local processes or Kubernetes."),
    "canary_requests": (200, {"type": "integer", "minimum": 0, "maximum": 100000},
                        "Labeled requests sent through the new version before promotion (0 = no canary)."),
    "canary_max_p95_ms": (3000.0, {"type": "number", "exclusiveMinimum": 0},
                          "Canary: highest acceptable p95 end-to-end latency (ms)."),
    "canary_accuracy_drop": (0.1, {"type": "number", "minimum": 0, "maximum": 1},
                             "Canary: live accuracy may be at most this much below the offline test accuracy."),
    # null, not "", when empty: the trigger form treats an empty string as missing (a required field).
    "dataset": (None, {"type": ["string", "null"], "pattern": DATASET_PATTERN},
                "Dataset manifest URI (s3://bucket/.../manifest.json or a local path), 'fashion-mnist' "
                "(built-in), or empty = the triggering Asset event or the newest ingested dataset."),
}


def defaults() -> dict[str, Any]:
    return {name: spec[0] for name, spec in PARAM_SPECS.items()}


# DAG parameter -> option of ``ml.pipeline.train_calibrate_partition`` (a field of ml.pipeline's
# PipelineConfig or of ml.training's TrainConfig): the one place the two vocabularies meet. The DAG keeps
# its user-facing names; tests/unit/plugins/test_pipeline_params.py checks that every target exists on
# the ML side, so a field renamed on one side only fails the suite.
ML_OPTIONS: dict[str, str] = {
    "architecture": "architecture",
    "epochs": "epochs",
    "exit_loss_weights": "exit_weights",
    "distill_weight": "distill_weight",
    "distill_temperature": "distill_temperature",
    "tier_map": "tier_map",
    "accuracy_tolerance": "tolerance",
    "adaptive_floor": "adaptive_floor",
    "objective": "objective",
    "cost_weights": "tier_costs",
    "confidence": "measure",
    "min_accuracy": "min_accuracy",
}


def _tier_map_text(self: Any) -> str:
    return ";".join(f"{t}={'+'.join(str(e) for e in ex)}" for t, ex in self.tier_map.items())


# The validated parameters of one pipeline run: one field per entry of PARAM_SPECS (generated, so the
# form, the validation and the typed result cannot disagree on a name).
PipelineParams = make_dataclass(
    "PipelineParams", list(PARAM_SPECS), frozen=True,
    namespace={"to_dict": lambda self: asdict(self), "tier_map_text": property(_tier_map_text),
               "__doc__": "The validated parameters of one pipeline run (fields: PARAM_SPECS)."})


def worker_env(params: dict[str, Any]) -> dict[str, str]:
    """TIERFLOW_* settings of the release's tier workers that a run's parameters set (adaptive exits)."""
    objective = float(params.get("latency_objective_ms") or 0)
    return {"TIERFLOW_WORKER__ADAPTIVE__OBJECTIVE_MS": f"{objective:g}"} if objective > 0 else {}


def ml_options(params: dict[str, Any]) -> dict[str, Any]:
    """The options of ``ml.pipeline.train_calibrate_partition`` that a run's parameters set."""
    return {option: params[name] for name, option in ML_OPTIONS.items()}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_tier_map(text: str) -> dict[str, list[int | str]]:
    from ml.partition import parse_tier_map  # pure parser, no TensorFlow

    return parse_tier_map(text)


def _list_param(value: Any) -> Any:
    """Lists may come from the form or REST as JSON text ("[1, 0.5]") or "1,0.5"; empty means None (the
    trigger form sends an untouched null list as [])."""
    if isinstance(value, list) and not value:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return json.loads(text if text.startswith("[") else f"[{text}]")
        except json.JSONDecodeError:
            return value
    return value


def validate(conf: dict[str, Any]) -> PipelineParams:
    """Check every parameter; raise ParamError listing all problems, or return the typed config."""
    problems: list[str] = []
    unknown = sorted(set(conf) - set(PARAM_SPECS))
    if unknown:
        problems.append(f"unknown parameter(s) {unknown}; known: {sorted(PARAM_SPECS)}")
    v = {**defaults(), **{k: conf[k] for k in conf if k in PARAM_SPECS}}

    try:
        spec_kind(v["architecture"])
        v["architecture"] = v["architecture"].strip()
    except ValueError as exc:
        problems.append(str(exc))
    if isinstance(v["epochs"], str) and v["epochs"].strip().isdigit():
        v["epochs"] = int(v["epochs"])
    if not isinstance(v["epochs"], int) or isinstance(v["epochs"], bool) or not 1 <= v["epochs"] <= 200:
        problems.append(f"epochs={v['epochs']!r}: give a whole number from 1 to 200")

    tier_map: dict[str, list[int | str]] = {}
    tm = v["tier_map"]
    try:
        tier_map = (_parse_tier_map(tm) if isinstance(tm, str)
                    else {str(k): (list(e) if isinstance(e, list | tuple) else [e]) for k, e in dict(tm).items()})
        bad = [t for t in tier_map if t not in TIERS]
        if bad:
            problems.append(f"tier_map={tm!r}: unknown tier(s) {bad}; tiers are {list(TIERS)}, "
                            "e.g. 'edge=0;fog=1;cloud=2'")
        order = [t for t in TIERS if t in tier_map]
        if list(tier_map) != order:
            problems.append(f"tier_map={tm!r}: list tiers from edge to cloud, e.g. 'edge=0;fog=1;cloud=2'")
        flat = [e for ex in tier_map.values() for e in ex]
        ints = [e for e in flat if isinstance(e, int)]
        if any(e < 0 for e in ints) or ints != sorted(set(ints)):
            problems.append(f"tier_map={tm!r}: exits must be distinct, >= 0 and ascending from edge to cloud")
        named = [e for e in flat if not isinstance(e, int) and not re.fullmatch(r"final|exit_\d+", str(e))]
        if named:
            problems.append(f"tier_map={tm!r}: unknown exit(s) {named}; an exit is a number, 'final' or 'exit_N', "
                            "tiers are separated by ';', e.g. 'edge=0;fog=1;cloud=2'")
        if any(not ex for ex in tier_map.values()):
            problems.append(f"tier_map={tm!r}: every tier needs at least one exit")
    except (ValueError, TypeError) as exc:
        problems.append(f"tier_map={tm!r}: {exc}")

    weights = _list_param(v["exit_loss_weights"])
    if weights is not None and (not isinstance(weights, list) or not weights
                                or not all(_number(w) and w >= 0 for w in weights)
                                or not any(w > 0 for w in weights)):
        problems.append(f"exit_loss_weights={v['exit_loss_weights']!r}: give a list of numbers >= 0 "
                        "(one per exit, at least one > 0), e.g. [1, 0.5, 0.3], or leave empty")
    v["exit_loss_weights"] = [float(w) for w in weights] if isinstance(weights, list) and not any(
        "exit_loss_weights" in p for p in problems) else None

    if not _number(v["accuracy_tolerance"]) or not 0 <= v["accuracy_tolerance"] <= 50:
        problems.append(f"accuracy_tolerance={v['accuracy_tolerance']!r}: give accuracy points from 0 to 50 "
                        "(e.g. 1.0 = the cascade may be 1 point less accurate than the final exit)")
    if not _number(v["adaptive_floor"]) or not 0 <= v["adaptive_floor"] <= 50:
        problems.append(f"adaptive_floor={v['adaptive_floor']!r}: give accuracy points from 0 to 50 (e.g. 2.0 = a "
                        "tier adapting its exits may bring the cascade to 2 points below the final exit)")
    elif _number(v["accuracy_tolerance"]) and v["adaptive_floor"] < v["accuracy_tolerance"]:
        problems.append(f"adaptive_floor={v['adaptive_floor']!r} is below accuracy_tolerance="
                        f"{v['accuracy_tolerance']!r}: the calibrated thresholds may already lose that much, so "
                        "no tier could adapt; give an adaptive_floor >= accuracy_tolerance")
    lo = v["latency_objective_ms"]
    if not _number(lo) or not 0 <= lo <= 600000:
        problems.append(f"latency_objective_ms={lo!r}: give the p95 objective in ms (e.g. 250), or 0 to keep "
                        "the calibrated thresholds always")
    if v["objective"] not in OBJECTIVES:
        problems.append(f"objective={v['objective']!r}: choose one of {list(OBJECTIVES)}")
    costs = _list_param(v["cost_weights"])
    if costs is not None:
        if not isinstance(costs, list) or not all(_number(c) and c >= 0 for c in costs):
            problems.append(f"cost_weights={v['cost_weights']!r}: give one number >= 0 per tier, e.g. [1, 5, 20]")
            costs = None
        elif tier_map and len(costs) != len(tier_map):
            problems.append(f"cost_weights={costs}: give one cost per tier of the tier map "
                            f"({len(tier_map)}: {list(tier_map)}), got {len(costs)}")
    elif v["objective"] == "cost":
        problems.append("objective='cost' needs cost_weights: one cost per tier, e.g. [1, 5, 20]")
    v["cost_weights"] = [float(c) for c in costs] if isinstance(costs, list) else None

    if v["confidence"] not in CONFIDENCE:
        problems.append(f"confidence={v['confidence']!r}: choose one of {list(CONFIDENCE)}")
    if not isinstance(v["max_train_samples"], int) or isinstance(v["max_train_samples"], bool) \
            or v["max_train_samples"] < 0:
        problems.append(f"max_train_samples={v['max_train_samples']!r}: give a whole number >= 0 (0 = all)")
    if not _number(v["min_accuracy"]) or not 0 <= v["min_accuracy"] <= 1:
        problems.append(f"min_accuracy={v['min_accuracy']!r}: give the lowest acceptable test accuracy as a "
                        "fraction from 0 to 1 (e.g. 0.8), or 0 to require only that the model beats chance")
    if not _number(v["distill_weight"]) or not 0 <= v["distill_weight"] <= 10:
        problems.append(f"distill_weight={v['distill_weight']!r}: give a weight from 0 (off) to 10, e.g. 1.0")
    if not _number(v["distill_temperature"]) or not 0 < v["distill_temperature"] <= 20:
        problems.append(f"distill_temperature={v['distill_temperature']!r}: give a temperature > 0 and <= 20, e.g. 3")
    for name, lo, hi in (("gate_margin", 0, 1), ("canary_accuracy_drop", 0, 1)):
        if not _number(v[name]) or not lo <= v[name] <= hi:
            problems.append(f"{name}={v[name]!r}: give a number from {lo} to {hi}")
    if v["backend"] not in BACKENDS:
        problems.append(f"backend={v['backend']!r}: choose one of {list(BACKENDS)}")
    if not isinstance(v["canary_requests"], int) or isinstance(v["canary_requests"], bool) \
            or not 0 <= v["canary_requests"] <= 100000:
        problems.append(f"canary_requests={v['canary_requests']!r}: give a whole number from 0 to 100000")
    if not _number(v["canary_max_p95_ms"]) or v["canary_max_p95_ms"] <= 0:
        problems.append(f"canary_max_p95_ms={v['canary_max_p95_ms']!r}: give a latency in ms > 0")
    if v["dataset"] is None:
        v["dataset"] = ""
    if not isinstance(v["dataset"], str) or (v["dataset"] and not re.match(DATASET_PATTERN, v["dataset"])):
        problems.append(f"dataset={v['dataset']!r}: give an s3:// (or local path) dataset manifest URI, "
                        "'fashion-mnist' (the built-in train split), or leave empty for the newest dataset")

    if problems:
        raise ParamError("invalid pipeline parameters:\n- " + "\n- ".join(problems))
    v["tier_map"] = tier_map
    for name in ("distill_weight", "distill_temperature", "accuracy_tolerance", "min_accuracy", "gate_margin",
                 "canary_accuracy_drop", "canary_max_p95_ms", "adaptive_floor", "latency_objective_ms"):
        v[name] = float(v[name])
    return PipelineParams(**v)
