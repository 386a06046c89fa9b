"""Joint training of all exits (BranchyNet): one loss per exit, weighted, summed; seeded; early stopping.

BatchNorm moving statistics are re-estimated from the training data after every epoch (see
:func:`recalibrate_batchnorm`), before the validation pass that early stopping and the best-weights choice
read, so a model trained for few steps per epoch is judged, calibrated and served with statistics that
match its weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 0  # 0 = auto_batch_size(number of training samples); else this size
    learning_rate: float = 1e-3
    exit_weights: Sequence[float] | None = None  # per exit; default EARLY_EXIT_WEIGHT each early exit, 1.0 final
    seed: int = 0
    patience: int = 2  # early stopping on validation loss; 0 disables
    progress: bool = True
    max_seconds: float | None = None  # wall-clock budget: no epoch starts that would end past it
    cosine_decay: bool = True  # cosine-decay the learning rate to 5 % over the planned epochs, or over
    # the time budget when that ends first (then the run depends on machine speed, not only the seed)
    bn_samples: int = 2048  # training samples that re-estimate the BatchNorm statistics each epoch; 0 = off
    # Self-distillation: each early exit also learns the final exit's outputs softened at this temperature,
    # loss = cross-entropy + distill_weight * T^2 * KL(final_T || exit_T); 0 = plain joint training.
    distill_weight: float = 0.0
    distill_temperature: float = 3.0
    # Light augmentation of each training batch (validation, calibration and serving see the images as
    # they are): a random shift of up to this many pixels (border pixels repeated), 0 = off, and a random
    # left-right mirror. For data where a mirrored image means another class (digits, text), set flip off.
    augment_shift: int = 0
    augment_flip: bool = False


@dataclass
class TrainResult:
    history: dict[str, list[float]]
    epochs_run: int
    seconds: float
    exit_weights: list[float]
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


MIN_STEPS_PER_EPOCH = 100
# Loss weight of each early exit by default (the final exit's is 1.0): the early exits' losses also train the
# shared trunk toward early features; at 0.6 the compact model's final exit gained 0.35 pt on Fashion-MNIST
# over equal weights (same seed, 12 epochs) and its edge exit stayed as accurate.
EARLY_EXIT_WEIGHT = 0.6


def auto_batch_size(n: int, largest: int = 128, smallest: int = 16) -> int:
    """The largest power-of-two batch (<= ``largest``) that still gives MIN_STEPS_PER_EPOCH steps per epoch,
    at least ``smallest``. Why: a few epochs over a small dataset at a large batch are too few steps for a
    deep exit to learn (6,000 images at 128 are 36 steps an epoch); on Fashion-MNIST it stays 128."""
    size = largest
    while size > smallest and -(-n // size) < MIN_STEPS_PER_EPOCH:
        size //= 2
    return max(size, smallest)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (Keras) for reproducible runs."""
    import keras

    keras.utils.set_random_seed(int(seed))


def compile_multi_exit(model, exit_weights: Sequence[float] | None = None, learning_rate=1e-3,
                       losses: Sequence[Any] | None = None, metrics: Sequence[Any] | None = None) -> list[float]:
    """Compile with a sparse cross-entropy per exit (or the given losses and metrics) and the given per-exit
    loss weights."""
    import keras

    n = len(model.outputs)
    weights = [EARLY_EXIT_WEIGHT] * (n - 1) + [1.0] if exit_weights is None else [float(w) for w in exit_weights]
    if len(weights) != n:
        raise ValueError(f"the model has {n} exits but {len(weights)} exit weights were given")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"exit weights must be >= 0 and not all zero, got {weights}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=list(losses) if losses is not None else ["sparse_categorical_crossentropy"] * n,
        loss_weights=weights,
        metrics=list(metrics) if metrics is not None else [["accuracy"] for _ in range(n)],
    )
    return weights


def distillation_trainer(model, weight: float, temperature: float):
    """A model sharing ``model``'s layers whose early outputs carry the final exit's probabilities beside their
    own (gradient stopped: the final exit teaches, it does not learn from its students), with the losses and
    metrics to compile it with. Training it trains ``model``."""
    import keras
    from keras import ops

    if weight < 0 or temperature <= 0:
        raise ValueError(f"distill_weight must be >= 0 and distill_temperature > 0, got {weight}, {temperature}")
    outs = list(model.outputs)
    k = int(outs[-1].shape[-1])
    teacher = ops.stop_gradient(outs[-1])
    joined = [keras.layers.Concatenate(name=f"{name}_distill")([o, teacher])
              for name, o in zip(model.output_names, outs[:-1], strict=False)]
    trainer = keras.Model(model.input, [*joined, outs[-1]], name=f"{model.name}_distill")

    def soft_log(p):
        return ops.log_softmax(ops.log(ops.clip(p, 1e-7, 1.0)) / temperature, axis=-1)

    def distilled(y_true, y_pred):
        student, teacher_p = y_pred[:, :k], y_pred[:, k:]
        ce = keras.losses.sparse_categorical_crossentropy(y_true, student)
        log_t, log_s = soft_log(teacher_p), soft_log(student)
        kl = ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)
        return ce + weight * temperature ** 2 * kl

    def accuracy(y_true, y_pred):
        return keras.metrics.sparse_categorical_accuracy(y_true, y_pred[:, :k])

    n = len(outs)
    losses = [distilled] * (n - 1) + ["sparse_categorical_crossentropy"]
    metrics = [[accuracy] for _ in range(n - 1)] + [["accuracy"]]
    return trainer, losses, metrics


def augment_batch(x: np.ndarray, rng: np.random.Generator, shift: int, flip: bool) -> np.ndarray:
    """``x`` (n, h, w, c) with each image shifted by up to ``shift`` pixels each way (the border pixels
    repeated into the gap) and, if ``flip``, mirrored left-right with probability 1/2."""
    n, h, w = x.shape[:3]
    if flip:
        mirror = rng.random(n) < 0.5
        x = x.copy()
        x[mirror] = x[mirror, :, ::-1]
    if shift > 0:
        pad = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
        rows = (dy[:, None] + np.arange(h))[:, :, None]
        cols = (dx[:, None] + np.arange(w))[:, None, :]
        x = pad[np.arange(n)[:, None, None], rows, cols]
    return x


def _augmented_batches(x: np.ndarray, y: np.ndarray, n_exits: int, batch_size: int, cfg: TrainConfig):
    """Shuffled, augmented training batches, drawn afresh every epoch from the seed."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(cfg.seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            xb = augment_batch(x[idx], self.rng, cfg.augment_shift, cfg.augment_flip)
            return xb, tuple([y[idx]] * n_exits)

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return Batches()


def _progress_callback(epochs: int, steps: int, enabled: bool, max_seconds: float | None):
    import time

    import keras
    from tqdm.auto import tqdm

    class Progress(keras.callbacks.Callback):
        """A tqdm bar per epoch with the running loss; stops on the wall-clock budget."""

        def on_train_begin(self, logs=None):
            self.t0 = time.monotonic()
            self.over_budget = False

        def on_epoch_begin(self, epoch, logs=None):
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not enabled)

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.close()
            if enabled and logs:
                shown = {k: round(float(v), 4) for k, v in logs.items() if "accuracy" in k or k in ("loss", "val_loss")}
                tqdm.write(f"epoch {epoch + 1}: {shown}")
            elapsed = time.monotonic() - self.t0
            if max_seconds is not None and elapsed + elapsed / (epoch + 1) > max_seconds:
                self.over_budget = True
                self.model.stop_training = True

    return Progress()


def cosine_lr(base: float, progress: float, alpha: float = 0.05) -> float:
    """Cosine decay from ``base`` to ``alpha * base`` as progress goes 0 → 1."""
    p = min(max(progress, 0.0), 1.0)
    return base * (alpha + (1 - alpha) * 0.5 * (1 + np.cos(np.pi * p)))


def _cosine_callback(base: float, total_steps: int, max_seconds: float | None):
    import time

    import keras

    class CosineByStepsOrTime(keras.callbacks.Callback):
        """Learning rate follows training progress: steps done, or budget used, whichever is further."""

        def on_train_begin(self, logs=None):
            self.t0 = time.monotonic()
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            progress = self.step / max(1, total_steps)
            if max_seconds:
                progress = max(progress, (time.monotonic() - self.t0) / max_seconds)
            self.model.optimizer.learning_rate.assign(cosine_lr(base, progress))
            self.step += 1

    return CosineByStepsOrTime()


def batchnorm_layers(model) -> list:
    """The model's trainable BatchNormalization layers that sit once in its graph (in graph order)."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            and layer.trainable and len(layer._inbound_nodes) == 1]


def recalibrate_batchnorm(model, x: np.ndarray, batch_size: int = 256) -> int:
    """Set every BatchNorm layer's moving mean and variance to the exact statistics of its inputs over ``x``.

    Why a re-estimation pass and not a momentum chosen from the number of steps: Keras' moving averages
    (momentum 0.99, a memory of ~100 steps) lag behind weights that still change fast, and on a small
    dataset (tens of steps per epoch) they are still dominated by their initial values (mean 0, variance
    1) when training ends. The model then scores far below its batch-statistics accuracy at inference
    (the mode validation, calibration and serving use), and early stopping keeps an early epoch on that
    misleading signal. A lower momentum only shortens the lag at the price of noisier statistics, and
    would have to be set inside a user's own layers; measuring the statistics once the weights are fixed
    is exact for any model, costs a forward pass over a sample, and changes nothing in the training
    itself (training normalizes with batch statistics either way).

    The layers are measured in graph order, each on its inputs as inference produces them (the layers
    before it already re-estimated, dropout off), so the statistics are those the served model sees.
    Frozen (``trainable=False``) BatchNorm layers keep theirs: the network was trained with them. Layers
    nested inside a sub-model, or used more than once, are left as they are. Returns how many layers
    were re-estimated.
    """
    import keras

    layers = batchnorm_layers(model)
    if not layers or len(x) == 0:
        return 0
    for layer in layers:
        probe = keras.Model(model.input, layer.input)
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
        total = sq = None
        count = 0
        for i in range(0, len(x), batch_size):
            h = np.asarray(probe(x[i:i + batch_size], training=False), dtype=np.float64)
            h = np.moveaxis(h, axis, -1).reshape(-1, h.shape[axis])
            total = h.sum(axis=0) if total is None else total + h.sum(axis=0)
            sq = (h * h).sum(axis=0) if sq is None else sq + (h * h).sum(axis=0)
            count += len(h)
        mean = total / count
        var = np.maximum(sq / count - mean * mean, 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(var.astype(np.float32))
    return len(layers)


def _validation_callback(x_val, y_val, n: int, batch_size: int, x_bn: np.ndarray | None,
                         student=None, exit_weights: Sequence[float] = ()):
    """With ``student`` (self-distillation), ``val_loss`` is the student's weighted cross-entropy: the
    distillation term measures agreement with a teacher that changes every epoch, so it can rise while the
    exits improve and would end training early (the distillation loss is kept as ``val_loss_with_distillation``)."""
    import keras

    class Validation(keras.callbacks.Callback):
        """After each epoch: re-estimate the BatchNorm statistics, then validate (``val_*`` in the logs)."""

        def on_epoch_end(self, epoch, logs=None):
            if x_bn is not None:
                recalibrate_batchnorm(self.model, x_bn, batch_size=max(batch_size, 256))
            val = self.model.evaluate(x_val, [y_val] * n, batch_size=batch_size, verbose=0, return_dict=True)
            if student is not None:
                ce = [m["loss"] for m in exit_metrics(predict_exits(student, x_val, batch_size=512), y_val)]
                val["loss_with_distillation"] = val["loss"]
                val["loss"] = float(np.dot(exit_weights, ce))
            if logs is not None:
                logs.update({f"val_{k}": float(v) for k, v in val.items()})

    return Validation()


def train_multi_exit(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                     config: TrainConfig | None = None) -> TrainResult:
    """Train every exit jointly; returns the Keras history (per-exit loss/accuracy, train and val).

    Validation runs after each epoch's BatchNorm re-estimation (``bn_samples`` training samples, seeded),
    so early stopping and the restored best weights are judged with statistics that match the weights;
    the returned model carries such statistics too.
    """
    import time

    import keras

    cfg = config or TrainConfig()
    if len(x) == 0 or len(x_val) == 0:
        raise ValueError("training and validation sets must not be empty")
    set_seed(cfg.seed)
    n = len(model.outputs)
    batch_size = cfg.batch_size or auto_batch_size(len(x))
    steps = int(np.ceil(len(x) / batch_size))
    trainer, losses, metrics = model, None, None
    if cfg.distill_weight > 0 and n > 1:
        trainer, losses, metrics = distillation_trainer(model, cfg.distill_weight, cfg.distill_temperature)
    weights = compile_multi_exit(trainer, cfg.exit_weights, cfg.learning_rate, losses, metrics)
    x_bn = None
    if cfg.bn_samples > 0 and batchnorm_layers(model):
        pick = np.random.default_rng(cfg.seed).permutation(len(x))[:cfg.bn_samples]
        x_bn = x[np.sort(pick)]
    progress = _progress_callback(cfg.epochs, steps, cfg.progress, cfg.max_seconds)
    # validation first: the progress line, the budget check and early stopping read its val_* logs
    student = model if trainer is not model else None
    callbacks = [_validation_callback(x_val, y_val, n, batch_size, x_bn, student, weights), progress]
    if cfg.cosine_decay:
        callbacks.append(_cosine_callback(cfg.learning_rate, steps * cfg.epochs, cfg.max_seconds))
    early = None
    if cfg.patience > 0:
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True)
        callbacks.append(early)
    t0 = time.monotonic()
    if cfg.augment_shift > 0 or cfg.augment_flip:
        hist = trainer.fit(_augmented_batches(x, y, n, batch_size, cfg), epochs=cfg.epochs, verbose=0,
                           callbacks=callbacks)
    else:
        hist = trainer.fit(x, [y] * n, epochs=cfg.epochs,
                           batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks)
    seconds = time.monotonic() - t0
    # the distillation trainer's outputs are named <exit>_distill: report them under the exits' names
    history = {k.replace("_distill_", "_"): [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(next(iter(history.values()))) if history else 0
    stopped = bool(early is not None and early.stopped_epoch > 0) or progress.over_budget
    extra: dict[str, Any] = {"bn_samples": 0 if x_bn is None else len(x_bn), "batch_size": batch_size}
    if trainer is not model:
        extra.update(distill_weight=cfg.distill_weight, distill_temperature=cfg.distill_temperature)
    if early is not None and early.best_weights is not None:
        extra["best_epoch"] = int(early.best_epoch) + 1
    return TrainResult(history=history, epochs_run=epochs_run, seconds=seconds, exit_weights=weights,
                       stopped_early=stopped, extra=extra)


def predict_exits(model, x: np.ndarray, batch_size: int = 512) -> list[np.ndarray]:
    """Probabilities of every exit for ``x`` (list of (n, K) arrays, exit order)."""
    outs = model.predict(x, batch_size=batch_size, verbose=0)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return [np.asarray(o) for o in outs]


def exit_metrics(exit_probs: Sequence[np.ndarray], y: np.ndarray) -> list[dict[str, Any]]:
    """Per-exit accuracy, cross-entropy loss and confusion matrix (rows = true, columns = predicted)."""
    y = np.asarray(y)
    out = []
    for i, p in enumerate(exit_probs):
        k = p.shape[1]
        pred = p.argmax(axis=1)
        loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        out.append({"exit": i, "accuracy": float((pred == y).mean()), "loss": loss, "confusion": cm.tolist()})
    return out
