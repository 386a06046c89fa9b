"""Multi-exit Keras architectures and the contract every (also user-defined) model follows.

Contract for a multi-exit model (checked by :func:`validate_multi_exit`):

* a Keras *functional* model with one input of fixed shape (without batch dimension);
* its outputs are the exits **in order**, each a softmax over the same K classes; the last output is
  the final exit;
* for every exit ``i`` except the final one there is a layer named ``cut_{i}``: the trunk tensor the
  network continues from after exit ``i``. Everything downstream (exits ``> i``) must be computable from
  ``cut_{i}`` alone; this is where the network is cut between tiers, and ``cut_{i}``'s output is the
  activation sent over the link;
* the input takes raw values (e.g. pixels in [0, 255] as float32): preprocessing such as rescaling
  lives inside the model, so every tier sees the same inputs as training did.

The built-in models name their exit layers ``exit_{i}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ARCHITECTURES = ("compact", "b_alexnet", "vgg")


def _keras():
    import keras

    return keras


def _exit_head(h, num_classes: int, i: int, hidden: int = 0, conv: int = 0, pool: bool = True):
    """A small side classifier (BranchyNet branch)."""
    L = _keras().layers
    if conv:
        h = L.Conv2D(conv, 3, padding="same", activation="relu", name=f"exit_{i}_conv")(h)
    if pool:
        h = L.MaxPooling2D(2, name=f"exit_{i}_pool")(h)
    h = L.Flatten(name=f"exit_{i}_flatten")(h)
    if hidden:
        h = L.Dense(hidden, activation="relu", name=f"exit_{i}_hidden")(h)
    return L.Dense(num_classes, activation="softmax", name=f"exit_{i}")(h)


def _separable_head(h, num_classes: int, i: int, filters: int):
    """A side classifier with one depthwise-separable conv layer before it: a second layer of features for
    a shallow exit at a fraction of a full conv's cost (3x3 depthwise + 1x1 pointwise)."""
    L = _keras().layers
    h = L.DepthwiseConv2D(3, padding="same", name=f"exit_{i}_depthwise")(h)
    h = L.Conv2D(filters, 1, activation="relu", name=f"exit_{i}_pointwise")(h)
    return _exit_head(h, num_classes, i)


def _scaled(n: int, width: float) -> int:
    return max(4, int(round(n * width)))


def build_compact(input_shape=(28, 28, 1), num_classes: int = 10, width: float = 1.0, scale: float = 1 / 255.0):
    """Compact CNN for 28x28 images: a cheap first block (edge exit), two heavier blocks.

    Edge ≈ 8 % of the full network's FLOPs, fog ≈ 50 %, so early answers save most of the compute. The
    edge exit's branch has a depthwise-separable conv layer of its own: a single conv layer and a linear
    classifier were too weak to answer 80 % of Fashion-MNIST within a point of the final exit.
    """
    keras = _keras()
    L = keras.layers
    x = keras.Input(shape=tuple(input_shape), name="input")
    h = L.Rescaling(scale, name="rescale")(x)
    h = L.Conv2D(_scaled(32, width), 3, padding="same", activation="relu", name="block0_conv")(h)
    h = L.MaxPooling2D(2, name="cut_0")(h)
    e0 = _separable_head(h, num_classes, 0, _scaled(48, width))
    h = L.Conv2D(_scaled(64, width), 3, padding="same", use_bias=False, name="block1_conv")(h)
    h = L.BatchNormalization(name="block1_bn")(h)
    h = L.ReLU(name="block1_relu")(h)
    h = L.MaxPooling2D(2, name="cut_1")(h)
    e1 = _exit_head(h, num_classes, 1, pool=False)
    h = L.Conv2D(_scaled(128, width), 3, padding="same", use_bias=False, name="block2_conv")(h)
    h = L.BatchNormalization(name="block2_bn")(h)
    h = L.ReLU(name="block2_relu")(h)
    h = L.MaxPooling2D(2, name="block2_pool")(h)
    h = L.Flatten(name="block2_flatten")(h)
    h = L.Dense(_scaled(128, width), activation="relu", name="block2_dense")(h)
    h = L.Dropout(0.3, name="block2_dropout")(h)
    e2 = L.Dense(num_classes, activation="softmax", name="exit_2")(h)
    return keras.Model(x, [e0, e1, e2], name="compact")


def build_b_alexnet(input_shape=(32, 32, 3), num_classes: int = 10, width: float = 1.0, scale: float = 1 / 255.0):
    """B-AlexNet (BranchyNet; the network Kafka-ML's distributed inference adapted), sized for small images."""
    keras = _keras()
    L = keras.layers
    x = keras.Input(shape=tuple(input_shape), name="input")
    h = L.Rescaling(scale, name="rescale")(x)
    h = L.Conv2D(_scaled(32, width), 5, padding="same", activation="relu", name="conv1")(h)
    h = L.MaxPooling2D(3, strides=2, padding="same", name="pool1")(h)
    h = L.BatchNormalization(name="cut_0")(h)
    e0 = _exit_head(h, num_classes, 0, conv=_scaled(32, width))
    h = L.Conv2D(_scaled(64, width), 5, padding="same", activation="relu", name="conv2")(h)
    h = L.MaxPooling2D(3, strides=2, padding="same", name="pool2")(h)
    h = L.BatchNormalization(name="cut_1")(h)
    e1 = _exit_head(h, num_classes, 1, conv=_scaled(32, width), pool=False)
    h = L.Conv2D(_scaled(96, width), 3, padding="same", activation="relu", name="conv3")(h)
    h = L.Conv2D(_scaled(96, width), 3, padding="same", activation="relu", name="conv4")(h)
    h = L.Conv2D(_scaled(64, width), 3, padding="same", activation="relu", name="conv5")(h)
    h = L.MaxPooling2D(3, strides=2, padding="same", name="pool5")(h)
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(_scaled(256, width), activation="relu", name="fc1")(h)
    h = L.Dropout(0.5, name="drop1")(h)
    h = L.Dense(_scaled(128, width), activation="relu", name="fc2")(h)
    h = L.Dropout(0.5, name="drop2")(h)
    e2 = L.Dense(num_classes, activation="softmax", name="exit_2")(h)
    return keras.Model(x, [e0, e1, e2], name="b_alexnet")


def build_vgg(input_shape=(32, 32, 3), num_classes: int = 10, width: float = 1.0, scale: float = 1 / 255.0):
    """VGG-style blocks (conv-BN-ReLU x2, pool) with an exit after each of the first two, like DDNN's."""
    keras = _keras()
    L = keras.layers
    x = keras.Input(shape=tuple(input_shape), name="input")
    h = L.Rescaling(scale, name="rescale")(x)

    def block(h, filters: int, b: int, cut_name: str):
        for j in range(2):
            h = L.Conv2D(_scaled(filters, width), 3, padding="same", use_bias=False, name=f"b{b}_conv{j}")(h)
            h = L.BatchNormalization(name=f"b{b}_bn{j}")(h)
            h = L.ReLU(name=f"b{b}_relu{j}")(h)
        return L.MaxPooling2D(2, name=cut_name)(h)

    h = block(h, 32, 0, "cut_0")
    e0 = _exit_head(h, num_classes, 0)
    h = block(h, 64, 1, "cut_1")
    e1 = _exit_head(h, num_classes, 1, pool=False)
    h = block(h, 128, 2, "b2_pool")
    h = L.Flatten(name="flatten")(h)
    h = L.Dense(_scaled(256, width), activation="relu", name="fc")(h)
    h = L.Dropout(0.3, name="drop")(h)
    e2 = L.Dense(num_classes, activation="softmax", name="exit_2")(h)
    return keras.Model(x, [e0, e1, e2], name="vgg")


BUILDERS: dict[str, Callable[..., Any]] = {
    "compact": build_compact,
    "b_alexnet": build_b_alexnet,
    "vgg": build_vgg,
}


def build(name: str, input_shape, num_classes: int, width: float = 1.0, **kwargs):
    """Build a built-in multi-exit architecture by name."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(BUILDERS)} "
                         "or pass your own functional model (see ml.architectures docstring)") from None
    model = builder(input_shape=tuple(input_shape), num_classes=num_classes, width=width, **kwargs)
    validate_multi_exit(model)
    return model


def num_exits(model) -> int:
    return len(model.outputs)


def validate_multi_exit(model) -> None:
    """Raise ValueError saying what to fix if ``model`` breaks the multi-exit contract."""
    keras = _keras()
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError("a multi-exit model must be a Keras functional model (keras.Model(inputs, outputs))")
    if len(model.inputs) != 1:
        raise ValueError(f"a multi-exit model needs exactly one input, this one has {len(model.inputs)}")
    if any(d is None for d in model.inputs[0].shape[1:]):
        raise ValueError(f"the input shape must be fixed (except the batch), got {tuple(model.inputs[0].shape)}")
    outs = model.outputs
    if len(outs) < 1:
        raise ValueError("a multi-exit model needs at least one output (the final exit)")
    k = {tuple(o.shape[1:]) for o in outs}
    if len(k) != 1 or len(next(iter(k))) != 1:
        raise ValueError(f"every exit must output (batch, K) class probabilities for the same K, got {sorted(k)}")
    names = {layer.name for layer in model.layers}
    missing = [f"cut_{i}" for i in range(len(outs) - 1) if f"cut_{i}" not in names]
    if missing:
        raise ValueError(f"missing cut-point layers {missing}: name the trunk layer after exit i 'cut_i' "
                         "(everything after exit i must be computable from it)")
