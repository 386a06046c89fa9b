import numpy as np
import pytest

from ml.cascade import NEVER, decide


def _p(rows):
    return np.array(rows, dtype=np.float32)


def test_first_confident_exit_answers_and_rest_forward():
    e0 = _p([[0.95, 0.05], [0.6, 0.4], [0.3, 0.7]])
    e1 = _p([[0.5, 0.5], [0.1, 0.9], [0.45, 0.55]])
    d = decide([e0, e1], [0.9, 0.8], "max_softmax", is_last=False, exit_ids=[3, 4])
    assert d.answered.tolist() == [True, True, False]
    assert d.exit_index.tolist() == [0, 1, 1]
    assert d.exit_id.tolist() == [3, 4, 4]
    assert d.label.tolist() == [0, 1, 1]  # forwarded row keeps the tier's best guess (last exit)
    np.testing.assert_allclose(d.confidence, [0.95, 0.9, 0.55], rtol=1e-6)
    assert d.forwarded.tolist() == [False, False, True]


def test_threshold_is_inclusive_and_last_tier_always_answers():
    e0 = _p([[0.8, 0.2], [0.79, 0.21]])
    d = decide([e0], [0.8], "max_softmax", is_last=False)
    assert d.answered.tolist() == [True, False]
    d_last = decide([e0], [None], "max_softmax", is_last=True)
    assert d_last.answered.all()
    d_never = decide([e0, e0], [NEVER, None], "max_softmax", is_last=True)
    assert d_never.exit_index.tolist() == [1, 1]


def test_entropy_measure_used():
    e0 = _p([[0.5, 0.5], [1.0, 0.0]])
    d = decide([e0], [0.5], "entropy", is_last=False)
    assert d.answered.tolist() == [False, True]


def test_mismatched_inputs_are_errors():
    with pytest.raises(ValueError, match="2 exits but 1 thresholds"):
        decide([_p([[1, 0]]), _p([[1, 0]])], [0.5], "max_softmax", False)
    with pytest.raises(ValueError, match="at least one exit"):
        decide([], [], "max_softmax", True)
