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


def test_self_distillation_loss_adds_the_softened_kl_to_the_cross_entropy():
    import keras

    from ml.architectures import build
    from ml.training import distillation_trainer

    model = build("compact", (28, 28, 1), 3, width=0.25)
    trainer, losses, metrics = distillation_trainer(model, weight=2.0, temperature=4.0)
    assert [o.shape[-1] for o in trainer.outputs] == [6, 6, 3]  # early exits carry the teacher beside them
    y = np.array([0, 2])
    student = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype="float32")
    ce = keras.losses.sparse_categorical_crossentropy(y, student).numpy()
    same = losses[0](y, np.concatenate([student, student], axis=1)).numpy()
    np.testing.assert_allclose(same, ce, rtol=1e-5)  # a student that agrees with its teacher: plain CE
    teacher = np.array([[0.1, 0.1, 0.8], [0.1, 0.3, 0.6]], dtype="float32")
    t = np.log(teacher) / 4.0
    s = np.log(student) / 4.0
    t, s = t - np.log(np.exp(t).sum(1, keepdims=True)), s - np.log(np.exp(s).sum(1, keepdims=True))
    kl = (np.exp(t) * (t - s)).sum(1)
    got = losses[0](y, np.concatenate([student, teacher], axis=1)).numpy()
    np.testing.assert_allclose(got, ce + 2.0 * 16 * kl, rtol=1e-4)
    assert metrics[0][0](y, np.concatenate([student, teacher], axis=1)).numpy().tolist() == [1.0, 1.0]


def test_self_distillation_trains_the_model_itself_and_reports_under_the_exit_names():
    from ml.architectures import build
    from ml.training import TrainConfig, train_multi_exit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (256, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 3, 256)
    model = build("compact", (28, 28, 1), 3, width=0.25)
    before = [w.copy() for w in model.get_weights()]
    r = train_multi_exit(model, x[:200], y[:200], x[200:], y[200:],
                         TrainConfig(epochs=1, batch_size=64, patience=0, progress=False, distill_weight=1.0))
    assert {"exit_0_accuracy", "val_exit_0_loss", "exit_2_accuracy"} <= set(r.history)
    assert not any("distill" in k for k in r.history if k != "val_loss_with_distillation")
    # early stopping reads the exits' own cross-entropy, not the distillation term
    assert r.history["val_loss"][-1] < r.history["val_loss_with_distillation"][-1]
    assert r.extra["distill_weight"] == 1.0 and r.extra["distill_temperature"] == 3.0
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    with pytest.raises(ValueError, match="distill_temperature > 0"):
        train_multi_exit(model, x[:200], y[:200], x[200:], y[200:],
                         TrainConfig(epochs=1, progress=False, distill_weight=1.0, distill_temperature=0))


def test_auto_batch_size_keeps_a_hundred_steps_an_epoch_on_small_datasets():
    from ml.training import auto_batch_size

    assert auto_batch_size(54000) == 128  # Fashion-MNIST: unchanged
    assert auto_batch_size(4590) == 32  # the 6,000-image set's training split: 144 steps, not 36
    assert auto_batch_size(900) == 16 and auto_batch_size(12800) == 128 and auto_batch_size(12672) == 64


def test_augment_batch_shifts_within_bounds_and_mirrors():
    from ml.training import augment_batch

    x = np.zeros((64, 9, 9, 1), dtype="float32")
    x[:, 4, 4, 0] = 1.0  # one bright pixel in the middle
    x[:, 0, 0, 0] = 0.0
    out = augment_batch(x, np.random.default_rng(0), shift=2, flip=False)
    assert out.shape == x.shape and out.sum() == pytest.approx(64)  # the pixel moves, nothing is lost
    pos = np.argwhere(out[..., 0] == 1.0)[:, 1:]
    assert np.abs(pos - 4).max() == 2 and len({tuple(p) for p in pos}) > 5  # up to 2 px, varied per image
    ramp = np.tile(np.arange(9, dtype="float32"), (8, 9, 1))[..., None]
    flipped = augment_batch(ramp, np.random.default_rng(1), shift=0, flip=True)
    mirrored = [np.array_equal(f, r[:, ::-1]) for f, r in zip(flipped, ramp, strict=True)]
    assert 0 < sum(mirrored) < 8  # some images mirrored, some not
    assert all(m or np.array_equal(f, r) for m, f, r in zip(mirrored, flipped, ramp, strict=True))
    assert augment_batch(x, np.random.default_rng(0), shift=0, flip=False) is x


def test_augmented_training_is_seeded_and_learns():
    from ml.architectures import build

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 320)
    x = rng.integers(0, 60, (320, 28, 28, 1)).astype("float32")
    x[y == 1, 8:20, 8:20] += 180  # class 1: a bright square, still there after a 2-pixel shift
    runs = []
    for _ in range(2):
        set_seed(3)
        model = build("compact", (28, 28, 1), 2, width=0.25)
        r = train_multi_exit(model, x[:256], y[:256], x[256:], y[256:],
                             TrainConfig(epochs=3, batch_size=32, seed=3, patience=0, progress=False,
                                         augment_shift=2, augment_flip=True))
        runs.append(r.history["val_loss"])
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)
    assert r.history["val_exit_2_accuracy"][-1] > 0.9
