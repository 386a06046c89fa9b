"""User architectures: a factory import path or a saved model, checked before training with what to fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.user_models import BUILTIN, FACTORY, FILE, MLFLOW, architecture_source, load_architecture, spec_kind

EXAMPLES = Path(__file__).resolve().parents[3] / "docs" / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of broken factories, importable as `broken_nets`."""
    (tmp_path / "broken_nets.py").write_text(
        "import keras\n"
        "NOT_A_FUNCTION = 3\n"
        "def needs_depth(depth):\n    return None\n"
        "def returns_none(input_shape, num_classes):\n    return None\n"
        "def raises(**kw):\n    raise RuntimeError('out of ideas')\n"
        "def sequential(input_shape, num_classes):\n"
        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),\n"
        "                             keras.layers.Dense(num_classes, activation='softmax')])\n"
        "def fixed(width=1.0):\n"
        "    x = keras.Input((8, 8, 1))\n"
        "    h = keras.layers.Flatten(name='cut_0')(x)\n"
        "    return keras.Model(x, [keras.layers.Dense(5, activation='softmax')(h),\n"
        "                           keras.layers.Dense(5, activation='softmax')(h)])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "broken_nets"


@pytest.mark.parametrize(("spec", "kind"), [("compact", BUILTIN), ("a.b:c", FACTORY), ("m.keras", FILE),
                                            ("s3://b/m.keras", FILE), ("models:/m@champion", MLFLOW)])
def test_spec_kinds(spec, kind):
    assert spec_kind(spec) == kind


def test_factory_gets_the_dataset_shape_and_classes(examples_on_path):
    model = load_architecture("my_exits:build", (16, 16, 3), 4)
    assert tuple(model.inputs[0].shape[1:]) == (16, 16, 3)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(4,)] * 3


@pytest.mark.parametrize(("spec", "needle"), [
    ("no_such_pkg.nets:build", "module 'no_such_pkg.nets' is not importable in the ML environment"),
    ("broken_nets:missing", "module 'broken_nets' has no 'missing'; defined there: ["),
    ("broken_nets:NOT_A_FUNCTION", "'NOT_A_FUNCTION' is a int, not a function"),
    ("broken_nets:needs_depth", "the factory requires ['depth']"),
    ("broken_nets:returns_none", "expected a keras.Model, got NoneType"),
    ("broken_nets:raises", "the factory raised RuntimeError: out of ideas"),
    ("broken_nets:sequential", "breaks the multi-exit contract"),
    ("broken_nets:fixed", "the model takes inputs of shape (8, 8, 1) but the dataset's samples are (28, 28, 1)"),
])
def test_broken_factories_fail_before_training_with_what_to_fix(user_module, spec, needle):
    with pytest.raises(ValueError) as err:
        load_architecture(spec, (28, 28, 1), 10)
    assert needle in str(err.value)


def test_wrong_class_count_and_missing_cuts(user_module, examples_on_path):
    with pytest.raises(ValueError, match="the exits output 5 class probabilities but the dataset has 10 classes"):
        load_architecture("broken_nets:fixed", (8, 8, 1), 10)
    with pytest.raises(ValueError, match=r"missing cut-point layers \['cut_0'\]"):
        load_architecture("my_exits:build_without_cuts", (28, 28, 1), 10)


def test_a_keras_file_is_loaded_with_its_weights_and_recorded_with_its_hash(tmp_path, examples_on_path):
    import my_exits

    path = tmp_path / "net.keras"
    original = my_exits.build((28, 28, 1), 10)
    original.save(path)
    loaded = load_architecture(f"file:{path}", (28, 28, 1), 10)
    x = np.random.default_rng(0).integers(0, 255, (3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0)[2], original.predict(x, verbose=0)[2], rtol=1e-5)
    source = architecture_source(str(path))
    assert source["architecture_kind"] == FILE and len(source["architecture_sha256"]) == 64
    with pytest.raises(ValueError, match="the model takes inputs of shape"):
        load_architecture(str(path), (32, 32, 3), 10)


def test_unreadable_or_missing_keras_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_architecture(str(tmp_path / "absent.keras"), (28, 28, 1), 10)
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot load it as a Keras model"):
        load_architecture(str(tmp_path / "junk.keras"), (28, 28, 1), 10)
