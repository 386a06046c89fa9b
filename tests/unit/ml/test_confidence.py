import math

import numpy as np
import pytest

from ml.confidence import canonical_measure, confidence, max_softmax, normalized_entropy_confidence


def test_max_softmax_is_row_max():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(max_softmax(p), [0.7, 0.8])


def test_entropy_confidence_one_hot_uniform_and_known_value():
    k = 4
    one_hot = np.eye(k)[[2]]
    uniform = np.full((1, k), 1 / k)
    half = np.array([[0.5, 0.5, 0.0, 0.0]])  # H = log 2, so 1 - log2/log4 = 0.5
    assert normalized_entropy_confidence(one_hot)[0] == pytest.approx(1.0)
    assert normalized_entropy_confidence(uniform)[0] == pytest.approx(0.0, abs=1e-12)
    assert normalized_entropy_confidence(half)[0] == pytest.approx(1 - math.log(2) / math.log(4))


def test_confidence_dispatch_and_range():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=200)
    for m in ("max_softmax", "entropy"):
        c = confidence(p, m)
        assert c.shape == (200,) and (c >= 0).all() and (c <= 1).all()
    np.testing.assert_allclose(confidence(p, "normalized_entropy"), normalized_entropy_confidence(p))
    # a sharper distribution is more confident under both measures
    sharp = np.array([[0.9, 0.05, 0.05]])
    flat = np.array([[0.5, 0.3, 0.2]])
    for m in ("max_softmax", "entropy"):
        assert confidence(sharp, m)[0] > confidence(flat, m)[0]


def test_bad_measure_and_shape_are_clear_errors():
    with pytest.raises(ValueError, match="unknown confidence measure 'margin'"):
        canonical_measure("margin")
    with pytest.raises(ValueError, match=r"shape \(n, K\)"):
        max_softmax(np.ones((2, 3, 4)))
