"""A user's own multi-exit network, for `--architecture my_exits:build` (docs/user-models.md).

The contract (ml/architectures.py): a functional model, one fixed-shape input taking raw pixel values,
the exits as outputs in order (softmax over the same classes, the final exit last), and a layer named
``cut_i`` after exit i from which the rest of the network is computed (where the tiers are cut).
"""

from __future__ import annotations

import keras
from keras import layers


def build(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """Two cheap blocks, an exit after each, then a dense final exit. tierflow passes the dataset's
    input shape and class count by keyword."""
    x = keras.Input(shape=tuple(input_shape), name="pixels")
    h = layers.Rescaling(1 / 255.0)(x)  # preprocessing inside the model: every tier sees raw pixels
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = layers.MaxPooling2D(2, name="cut_0")(h)
    e0 = layers.Dense(num_classes, activation="softmax", name="early")(layers.Flatten()(h))
    h = layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = layers.MaxPooling2D(2, name="cut_1")(h)
    e1 = layers.Dense(num_classes, activation="softmax", name="middle")(layers.Flatten()(h))
    h = layers.Conv2D(64, 3, padding="same", activation="relu")(h)
    h = layers.Flatten()(layers.MaxPooling2D(2)(h))
    e2 = layers.Dense(num_classes, activation="softmax", name="final")(layers.Dense(64, activation="relu")(h))
    return keras.Model(x, [e0, e1, e2], name="my_exits")


def build_without_cuts(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """The same network with its cut layers unnamed: tierflow refuses it before training."""
    x = keras.Input(shape=tuple(input_shape))
    h = layers.Conv2D(8, 3, activation="relu")(layers.Rescaling(1 / 255.0)(x))
    e0 = layers.Dense(num_classes, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    h = layers.Conv2D(8, 3, activation="relu")(h)
    e1 = layers.Dense(num_classes, activation="softmax")(layers.GlobalAveragePooling2D()(h))
    return keras.Model(x, [e0, e1])
