"""Where a multi-exit network comes from: a built-in name, the user's factory, or a saved model.

An architecture spec is one of

* a built-in name (``compact``, ``b_alexnet``, ``vgg``);
* an import path ``package.module:factory`` resolved in the ML environment: ``factory()`` or
  ``factory(input_shape=..., num_classes=...)`` (keyword arguments it declares are passed) returns a
  Keras functional model that follows the contract in :mod:`ml.architectures`;
* a saved model holding an untrained or pretrained multi-exit model: a ``.keras`` file (local path,
  ``file:`` or ``s3://`` URI) or an MLflow model URI (``models:/name/version``, ``models:/name@alias``,
  ``runs:/<run id>/path``) logged with the Keras flavour. Its weights are the starting point of training.

:func:`spec_kind` checks the form without TensorFlow (the pipeline's first task and the trigger form use
it); :func:`load_architecture` builds or loads the model and checks it against the contract and the
dataset before any training, with messages that say what to fix.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml.architectures import ARCHITECTURES

BUILTIN, FACTORY, FILE, MLFLOW = "builtin", "factory", "file", "mlflow"
_NAME = "[A-Za-z_][A-Za-z0-9_]*"
_IMPORT = f"{_NAME}([.]{_NAME})*:{_NAME}"  # package.module:factory
_IMPORT_PATH = re.compile(_IMPORT)
MLFLOW_SCHEMES = ("models:/", "runs:/")
# The same forms as a JSON-schema pattern, for the pipeline's trigger form (spec_kind gives the messages).
# Written without backslashes: Airflow's answer to a refused value quotes it (repr would double them).
SPEC_PATTERN = "^ *(" + "|".join(ARCHITECTURES) + f"|{_IMPORT}|.+[.]keras|(models|runs):/.+) *$"
SPEC_HELP = (f"a built-in name {list(ARCHITECTURES)}, an import path 'package.module:factory', a .keras file "
             "(path, file: or s3:// URI) or an MLflow model URI (models:/name/version, models:/name@alias, runs:/...)")


def spec_kind(spec: str) -> str:
    """builtin | factory | file | mlflow; ValueError saying what a valid spec looks like. No TensorFlow."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"architecture={spec!r}: give {SPEC_HELP}")
    s = spec.strip()
    if s in ARCHITECTURES:
        return BUILTIN
    if s.startswith(MLFLOW_SCHEMES):
        if len(s.split(":/", 1)[1].strip("/")) == 0:
            raise ValueError(f"architecture={spec!r}: the MLflow URI names no model, e.g. models:/my-model/1")
        return MLFLOW
    if s.endswith(".keras"):
        return FILE
    if _IMPORT_PATH.fullmatch(s):
        return FACTORY
    if ":" in s and not s.startswith(("s3:", "file:")):
        raise ValueError(f"architecture={spec!r} is not an import path: write 'package.module:factory' "
                         "(dotted module, one colon, the function's name)")
    if s.endswith((".h5", ".hdf5", ".pb", "saved_model")):
        raise ValueError(f"architecture={spec!r}: save the model in the Keras 3 format (model.save('m.keras')) "
                         f"and pass the .keras file, or give {SPEC_HELP}")
    raise ValueError(f"architecture={spec!r}: unknown architecture; give {SPEC_HELP}")


def _call_factory(spec: str, input_shape: tuple[int, ...], num_classes: int, width: float):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"architecture={spec!r}: module {module_name!r} is not importable in the ML environment "
                         f"({err}); install its package there or put its folder on PYTHONPATH") from err
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"architecture={spec!r}: module {module_name!r} has no {attr!r}; "
                         f"defined there: {sorted(n for n in vars(module) if not n.startswith('_'))[:20]}")
    if not callable(factory):
        raise ValueError(f"architecture={spec!r}: {attr!r} is a {type(factory).__name__}, not a function "
                         "that returns a model")
    offered = {"input_shape": tuple(input_shape), "num_classes": int(num_classes), "width": float(width)}
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
        required = [n for n, p in params.items() if p.default is p.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in kwargs]
        if required:
            raise ValueError(f"architecture={spec!r}: the factory requires {required}; it may take only "
                             "input_shape, num_classes and width (all optional), which tierflow passes by keyword")
    try:
        return factory(**kwargs)
    except Exception as err:  # the user's code: report it as a fixable spec problem
        raise ValueError(f"architecture={spec!r}: the factory raised {type(err).__name__}: {err}") from err


def _load_file(spec: str):
    import keras

    path = Path(spec.removeprefix("file:"))
    if spec.startswith("s3://"):
        import tempfile

        import mlflow

        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=tempfile.mkdtemp()))
    if not path.is_file():
        raise ValueError(f"architecture={spec!r}: no such file {path}")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise ValueError(f"architecture={spec!r}: cannot load it as a Keras model ({type(err).__name__}: {err}); "
                         "models with custom layers need those layers registered "
                         "(@keras.saving.register_keras_serializable) and importable") from err


def _load_mlflow(spec: str):
    import mlflow

    try:
        return mlflow.keras.load_model(spec)
    except Exception as err:
        raise ValueError(f"architecture={spec!r}: cannot load it from MLflow ({type(err).__name__}: {err}); "
                         "log it with mlflow.keras.log_model and check the name, version or alias") from err


def check_fits(model, spec: str, input_shape: Sequence[int], num_classes: int) -> None:
    """The contract (ml.architectures) and the dataset: same input shape, one probability per class."""
    from ml.architectures import validate_multi_exit

    try:
        validate_multi_exit(model)
    except ValueError as err:
        raise ValueError(f"architecture={spec!r} breaks the multi-exit contract: {err}") from None
    got = tuple(int(d) for d in model.inputs[0].shape[1:])
    if got != tuple(int(d) for d in input_shape):
        raise ValueError(f"architecture={spec!r}: the model takes inputs of shape {got} but the dataset's samples "
                         f"are {tuple(input_shape)}; build the model from the input_shape argument, or resize the "
                         "dataset (image folders: image_size)")
    k = int(model.outputs[0].shape[-1])
    if k != int(num_classes):
        raise ValueError(f"architecture={spec!r}: the exits output {k} class probabilities but the dataset has "
                         f"{num_classes} classes; build the exits from the num_classes argument")


def load_architecture(spec: str, input_shape: Sequence[int], num_classes: int, width: float = 1.0):
    """The multi-exit model a spec names, checked against the contract and the dataset before training."""
    from ml.architectures import build

    kind = spec_kind(spec)
    spec = spec.strip()
    if kind == BUILTIN:
        return build(spec, input_shape=tuple(input_shape), num_classes=num_classes, width=width)
    model = {FACTORY: lambda: _call_factory(spec, tuple(input_shape), num_classes, width),
             FILE: lambda: _load_file(spec), MLFLOW: lambda: _load_mlflow(spec)}[kind]()
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"architecture={spec!r}: expected a keras.Model, got {type(model).__name__}")
    check_fits(model, spec, input_shape, num_classes)
    return model


def architecture_source(spec: str) -> dict[str, Any]:
    """What to record about where the network came from (MLflow params, bundle manifest): the spec, its
    kind, and for a local file its SHA-256 (the file may change after the run)."""
    kind = spec_kind(spec)
    out: dict[str, Any] = {"architecture": spec.strip(), "architecture_kind": kind}
    path = Path(spec.strip().removeprefix("file:"))
    if kind == FILE and path.is_file():
        out["architecture_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
