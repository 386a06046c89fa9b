import numpy as np
import pytest

from ml.training import TrainConfig, compile_multi_exit, cosine_lr, exit_metrics, set_seed, train_multi_exit


def test_exit_metrics_accuracy_loss_and_confusion():
    y = np.array([0, 1, 1, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    (m,) = exit_metrics([p], y)
    assert m["accuracy"] == 0.75
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.3, 0.8])))
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


def test_cosine_lr_endpoints():
    assert cosine_lr(1e-3, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(1e-3, 1.0) == pytest.approx(5e-5)
    assert cosine_lr(1e-3, 2.0) == pytest.approx(5e-5)
    assert cosine_lr(1e-3, 0.25) > cosine_lr(1e-3, 0.5) > cosine_lr(1e-3, 0.75)


def _toy(seed=0, n=256):
    """Two linearly separable blobs; any working trainer gets the final exit right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 6)).astype("float32") + (y[:, None] * 2.0 - 1.0)
    return x, y


def _model():
    import keras

    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="cut_0")(x)
    e0 = keras.layers.Dense(2, activation="softmax", name="exit_0")(h)
    e1 = keras.layers.Dense(2, activation="softmax", name="exit_1")(keras.layers.Dense(8, activation="relu")(h))
    return keras.Model(x, [e0, e1])


def test_joint_training_is_seeded_and_learns():
    x, y = _toy()
    runs = []
    for _ in range(2):
        set_seed(7)  # before building: initial weights are seeded too
        m = _model()
        r = train_multi_exit(m, x[:200], y[:200], x[200:], y[200:],
                             TrainConfig(epochs=3, batch_size=32, seed=7, patience=0, progress=False,
                                         learning_rate=1e-2, exit_weights=[0.5, 1.0]))
        runs.append(r.history["val_loss"])
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)  # same seed, same run
    assert r.epochs_run == 3 and r.exit_weights == [0.5, 1.0]
    assert r.history["val_exit_1_accuracy"][-1] > 0.9
    assert {"exit_0_loss", "exit_1_loss", "exit_0_accuracy"} <= set(r.history)


def test_exit_weights_are_checked():
    with pytest.raises(ValueError, match="2 exits but 3 exit weights"):
        compile_multi_exit(_model(), [1, 1, 1])
    with pytest.raises(ValueError, match="not all zero"):
        compile_multi_exit(_model(), [0, 0])
