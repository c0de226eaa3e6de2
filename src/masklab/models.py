"""Reference models of the seeds, built with the functional API and named layers."""

from __future__ import annotations

from typing import Sequence

import keras

from masklab.layers import SparseDense, as_connectivity


def mlp(input_dim: int = 784, hidden_units: int | Sequence[int] = (600,), num_classes: int = 10, *,
        activation: str = "relu", kernel_regularizer=None, name: str = "mlp") -> keras.Model:
    """``input_dim -> hidden_units... -> num_classes`` softmax MLP (seeds 000/001: 784-600-10, ReLU).

    Hidden layers are named ``hidden_1``, ``hidden_2``, ...; the output layer ``output``.
    ``kernel_regularizer`` applies to the hidden layers' kernels.
    """
    hidden_units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
    if input_dim < 1 or num_classes < 2 or not hidden_units or min(hidden_units) < 1:
        raise ValueError(f"Need input_dim >= 1, num_classes >= 2 and positive hidden sizes. Received: "
                         f"input_dim={input_dim}, hidden_units={hidden_units}, num_classes={num_classes}")
    inputs = keras.Input((input_dim,), name="pixels")
    x = inputs
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation=activation, kernel_regularizer=kernel_regularizer,
                               name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


def sparse_mlp(connectivity, num_classes: int = 10, *, activation: str = "relu", implementation: str = "auto",
               kernel_regularizer=None, name: str = "sparse_mlp") -> keras.Model:
    """``input_dim -> SparseDense(units, connectivity) -> num_classes`` softmax MLP (seed 003).

    ``connectivity``: anything ``masklab.layers.as_connectivity`` reads; its shape fixes input_dim and units.
    The sparse layer is named ``hidden_1`` (so ablation and surgery address it like the dense MLP's).
    """
    connectivity = as_connectivity(connectivity)
    hidden = SparseDense(connectivity.units, connectivity, activation=activation, implementation=implementation,
                         kernel_regularizer=kernel_regularizer, name="hidden_1")
    inputs = keras.Input((connectivity.input_dim,), name="inputs")
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(hidden(inputs))
    return keras.Model(inputs, outputs, name=name)


def seed_cnn(input_shape=(28, 28, 1), num_classes: int = 10, *, name: str = "seed_cnn") -> keras.Model:
    """Seed 004's federated-learning CNN: conv 5x5 x32 + maxpool, conv 5x5 x64 + maxpool, flatten, dense 512
    ReLU, dense ``num_classes`` softmax (channels_last, 'same' padding). Layers ``conv_1``, ``pool_1``,
    ``conv_2``, ``pool_2``, ``flatten``, ``dense_512``, ``output``."""
    conv = dict(kernel_size=5, padding="same", activation="relu")
    inputs = keras.Input(tuple(input_shape), name="images")
    x = keras.layers.Conv2D(32, name="conv_1", **conv)(inputs)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool_1")(x)
    x = keras.layers.Conv2D(64, name="conv_2", **conv)(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name="pool_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(512, activation="relu", name="dense_512")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)
