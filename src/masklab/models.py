"""Reference models of the seeds, built with the functional API and named layers."""

from __future__ import annotations

from typing import Sequence

import keras


def mlp(input_dim: int = 784, hidden_units: int | Sequence[int] = (600,), num_classes: int = 10, *,
        activation: str = "relu", name: str = "mlp") -> keras.Model:
    """``input_dim -> hidden_units... -> num_classes`` softmax MLP (seeds 000/001: 784-600-10, ReLU).

    Hidden layers are named ``hidden_1``, ``hidden_2``, ...; the output layer ``output``.
    """
    hidden_units = (hidden_units,) if isinstance(hidden_units, int) else tuple(hidden_units)
    if input_dim < 1 or num_classes < 2 or not hidden_units or min(hidden_units) < 1:
        raise ValueError(f"Need input_dim >= 1, num_classes >= 2 and positive hidden sizes. Received: "
                         f"input_dim={input_dim}, hidden_units={hidden_units}, num_classes={num_classes}")
    inputs = keras.Input((input_dim,), name="pixels")
    x = inputs
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=name)
