"""Training on a small image set: BatchNorm statistics must match the weights at the end, and early stopping
must read a validation signal computed with such statistics.

Few hundred 32x32x3 images, ~13 steps per epoch: Keras' moving averages (momentum 0.99) are still mostly
their initial values when training ends, and a model that is right on nearly every image with batch
statistics scores little better than chance at inference.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml.training import TrainConfig, predict_exits, recalibrate_batchnorm, set_seed, train_multi_exit

K = 10


def patterns(n: int, seed: int, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """k classes of blocky colour templates, randomly shifted by up to 2 px, contrast-jittered and noisy."""
    base = np.random.default_rng(1234).normal(size=(k, 8, 8, 3))
    templates = np.stack([np.kron(b, np.ones((4, 4, 1))) for b in base])
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    shifts = rng.integers(-2, 3, (n, 2))
    x = np.stack([np.roll(templates[c], tuple(s), axis=(0, 1)) for c, s in zip(y, shifts, strict=True)])
    x = x * rng.uniform(0.7, 1.3, (n, 1, 1, 1)) + rng.normal(scale=0.8, size=x.shape)
    return np.clip(127.5 + 40 * x, 0, 255).astype("float32"), y


def small_bn_net(k: int = K):
    """Two conv-BN-ReLU blocks with an exit after each (the multi-exit contract), no dropout."""
    import keras

    L = keras.layers
    x = keras.Input((32, 32, 3))
    h = L.Rescaling(1 / 255.0)(x)
    h = L.Conv2D(8, 3, padding="same", use_bias=False)(h)
    h = L.ReLU()(L.BatchNormalization()(h))
    h = L.MaxPooling2D(2, name="cut_0")(h)
    e0 = L.Dense(k, activation="softmax", name="exit_0")(L.Flatten()(L.MaxPooling2D(2)(h)))
    h = L.Conv2D(16, 3, padding="same", use_bias=False)(h)
    h = L.ReLU()(L.BatchNormalization()(h))
    e1 = L.Dense(k, activation="softmax", name="exit_1")(L.Flatten()(L.MaxPooling2D(2)(h)))
    return keras.Model(x, [e0, e1])


def accuracies(probs, y) -> list[float]:
    return [float((np.asarray(p).argmax(axis=1) == y).mean()) for p in probs]


@pytest.fixture(scope="module")
def trained():
    x, y = patterns(400, seed=0)
    x_val, y_val = patterns(100, seed=1)
    x_test, y_test = patterns(300, seed=2)
    set_seed(0)
    model = small_bn_net()
    result = train_multi_exit(model, x, y, x_val, y_val,
                              TrainConfig(epochs=6, batch_size=32, seed=0, progress=False))  # defaults otherwise
    inference = accuracies(predict_exits(model, x_test), y_test)
    batch_stats = accuracies(model(x_test, training=True), y_test)  # last: it moves the statistics
    return result, inference, batch_stats


def test_inference_accuracy_matches_batch_statistics_on_a_small_image_set(trained):
    _, inference, batch_stats = trained
    print(f"test accuracy per exit: inference {inference}, batch statistics {batch_stats}")
    assert batch_stats[-1] > 0.9  # the weights have learnt the set
    assert inference[-1] > 0.9
    assert max(abs(a - b) for a, b in zip(inference, batch_stats, strict=True)) < 0.05


def test_early_stopping_reads_validation_with_matching_statistics(trained):
    result, _, _ = trained
    val = result.history["val_exit_1_accuracy"]
    assert len(val) == result.epochs_run
    assert val[-1] > 0.9, val  # the signal early stopping reads tracks the learning
    assert result.extra.get("best_epoch", result.epochs_run) > 1


def test_recalibration_sets_exact_statistics_and_leaves_frozen_layers():
    import keras

    x = keras.Input((4,))
    bn = keras.layers.BatchNormalization(name="bn")
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    model = keras.Model(x, frozen(bn(keras.layers.Dense(3, name="dense")(x))))
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4)).astype("float32")
    assert recalibrate_batchnorm(model, data, batch_size=64) == 1
    h = model.get_layer("dense")(data).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), h.var(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), np.zeros(3))
