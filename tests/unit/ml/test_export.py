"""The edge tier exported to TFLite computes what the Keras edge tier computes."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def edge_and_inputs(tiny_bundle):
    from ml.bundle import load_bundle_tier
    from ml.datasets import load_fashion_mnist

    edge = load_bundle_tier(tiny_bundle, "edge")
    x = load_fashion_mnist("test").subset(64, seed=2).x.astype("float32")
    return edge, x


def test_float_tflite_matches_keras(edge_and_inputs):
    from ml.export import run_tflite, to_tflite_float

    edge, x = edge_and_inputs
    (probs,), act = edge.predict(x)
    out = run_tflite(to_tflite_float(edge.model), x)
    assert len(out) == 2
    np.testing.assert_allclose(out[0], probs, atol=1e-4)
    np.testing.assert_allclose(out[1], act, atol=1e-3)


def test_int8_tflite_is_integer_and_agrees(edge_and_inputs):
    from ml.export import _interpreter, run_tflite, to_tflite_int8

    edge, x = edge_and_inputs
    content = to_tflite_int8(edge.model, x)
    det = _interpreter(content).get_input_details()[0]
    assert det["dtype"] == np.int8
    (probs,), _ = edge.predict(x)
    out = run_tflite(content, x)
    agree = (out[0].argmax(1) == probs.argmax(1)).mean()
    assert agree >= 0.9, agree
    assert np.abs(out[0] - probs).max() < 0.1
    with pytest.raises(ValueError, match="representative data"):
        to_tflite_int8(edge.model, np.zeros((0, 28, 28, 1)))
