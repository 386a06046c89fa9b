"""Composition of the tier sub-models reproduces the full model for every architecture and tier map."""

import numpy as np
import pytest

from ml.architectures import build, validate_multi_exit
from ml.partition import compose, default_tier_map, normalize_tier_map, parse_tier_map, partition

TIER_MAPS = [
    None,  # edge=[0], fog=[1], cloud=[2]
    {"edge": [0], "cloud": [1, 2]},
    {"edge": [0, 1], "cloud": [2]},
    {"edge": [0], "cloud": [2]},
    {"cloud": [2]},
    {"cloud": [0, 1, 2]},
    "device=0;edge=1;cloud=final",
]
ARCHS = [("compact", (28, 28, 1)), ("b_alexnet", (32, 32, 3)), ("vgg", (32, 32, 3))]


@pytest.fixture(scope="module")
def models():
    import keras

    keras.utils.set_random_seed(0)
    out = {}
    for name, shape in ARCHS:
        out[name] = build(name, shape, num_classes=10, width=0.25)
    return out


def _inputs(shape, n=24):
    if shape == (28, 28, 1):
        from ml.datasets import load_fashion_mnist

        return load_fashion_mnist("test").subset(n, seed=5).x.astype("float32")
    return np.random.default_rng(0).uniform(0, 255, size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("arch,shape", ARCHS)
def test_composition_reproduces_full_model_for_every_tier_map(models, arch, shape):
    model = models[arch]
    x = _inputs(shape)
    full = [np.asarray(o) for o in model(x, training=False)]
    for tmap in TIER_MAPS:
        parts = partition(model, tmap)
        served = [e for p in parts for e in p.exits]
        outs = compose(parts, x)
        assert len(outs) == len(served)
        for e, o in zip(served, outs, strict=True):
            assert np.abs(o - full[e]).max() <= 1e-5, (arch, tmap, e)
        # shapes chain: each tier's input is the previous tier's activation
        for a, b in zip(parts[:-1], parts[1:], strict=True):
            assert a.output_shape == b.input_shape
        assert parts[-1].output_shape is None
        assert parts[0].input_shape == list(shape)


def test_edge_is_cheap_in_full_width_compact_model():
    from ml.partition import full_network_flops

    model = build("compact", (28, 28, 1), 10)
    parts = partition(model)
    assert parts[0].flops < 0.10 * full_network_flops(model)
    assert sum(p.flops for p in parts) > full_network_flops(model)  # side branches cost extra


def test_default_and_parsed_maps():
    assert default_tier_map(3) == {"edge": [0], "fog": [1], "cloud": [2]}
    assert default_tier_map(2) == {"edge": [0], "cloud": [1]}
    assert default_tier_map(1) == {"cloud": [0]}
    assert parse_tier_map("edge=0;fog=1;cloud=2") == {"edge": [0], "fog": [1], "cloud": [2]}
    assert normalize_tier_map("edge=0,cloud=1+2", 3) == {"edge": [0], "cloud": [1, 2]}
    assert normalize_tier_map({"edge": ["exit_0"], "cloud": ["final"]}, 3) == {"edge": [0], "cloud": [2]}


@pytest.mark.parametrize("tmap,msg", [
    ({"edge": [1], "cloud": [0, 2]}, "not ordered"),
    ({"edge": [0], "fog": [], "cloud": [2]}, "tier 'fog' has no exit"),
    ({"edge": [0], "cloud": [7]}, "unknown exit 7"),
    ({"edge": [0], "cloud": ["last"]}, "unknown exit 'last'"),
    ({"edge": [0], "fog": [1]}, "must hold the final exit 2"),
    ({"edge": [0, 0], "cloud": [2]}, "assigned twice"),
    ({}, "tier map is empty"),
    ({"edge-1": [0], "cloud": [2]}, "bad tier name"),
])
def test_invalid_maps_are_clear_errors(tmap, msg):
    with pytest.raises(ValueError, match=msg):
        normalize_tier_map(tmap, 3)


def test_user_model_contract_errors():
    import keras

    x = keras.Input((8,))
    h = keras.layers.Dense(4, name="trunk")(x)
    e0 = keras.layers.Dense(3, activation="softmax")(h)
    e1 = keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(4)(h))
    with pytest.raises(ValueError, match=r"missing cut-point layers \['cut_0'\]"):
        validate_multi_exit(keras.Model(x, [e0, e1]))
    with pytest.raises(ValueError, match="same K"):
        validate_multi_exit(keras.Model(x, [e0, keras.layers.Dense(5)(h)]))
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build("resnet", (28, 28, 1), 10)


def test_user_model_with_named_cut_partitions_and_a_bad_cut_is_reported():
    import keras

    x = keras.Input((8,))
    h = keras.layers.Dense(6, activation="relu", name="cut_0")(x)
    e0 = keras.layers.Dense(3, activation="softmax", name="e0")(h)
    e1 = keras.layers.Dense(3, activation="softmax", name="e1")(keras.layers.Dense(5)(h))
    model = keras.Model(x, [e0, e1])
    xs = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    outs = compose(partition(model), xs)
    np.testing.assert_allclose(outs[1], np.asarray(model(xs)[1]), atol=1e-6)
    # a skip connection from the raw input past the cut makes the cut invalid
    x2 = keras.Input((8,))
    c = keras.layers.Dense(6, name="cut_0")(x2)
    f0 = keras.layers.Dense(3, activation="softmax")(c)
    f1 = keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([c, x2]))
    with pytest.raises(ValueError, match="not computable from the previous cut"):
        partition(keras.Model(x2, [f0, f1]))
