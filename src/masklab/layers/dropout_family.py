"""Two members of the dropout family that NSDropout is compared with: curriculum and targeted dropout.

* :class:`CurriculumDropout` (Morerio et al., ICCV 2017): the drop rate starts at 0 and rises towards ``rate``
  as training goes on, ``rate_t = rate * (1 - exp(-gamma * t))`` with ``t`` the number of training calls so far
  (one per step). Early steps see the whole network; the regularization arrives once the units have learned
  something.
* :class:`TargetedDropout` (Gomez et al., 2019, unit variant): only the least important units can be dropped.
  The ``round(units * targeted_fraction)`` units of smallest magnitude are the targets; each target is dropped
  with probability ``rate``, per sample; the other units are always kept. Expected share of units dropped:
  ``rate * targeted_fraction``.

Both act like ``keras.layers.Dropout`` in these respects (TargetedDropout does not rescale the kept units, as in
the paper): identity at inference, a fresh mask per sample in training,
``(batch, units)`` or feature maps ``(batch, ..., channels)`` (whole channels kept or dropped, as
``SpatialDropout``), channels last, seeded through ``keras.random.SeedGenerator``.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

UNIT_MAGNITUDES = ("activation",)


def _check_fraction(value, name: str, *, closed_low: bool = False) -> float:
    ok_type = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    low_ok = ok_type and (float(value) >= 0 if closed_low else float(value) > 0)
    if not (ok_type and low_ok and float(value) < 1):
        interval = "[0, 1)" if closed_low else "(0, 1)"
        raise ValueError(f"{name} must be a number in {interval}. Received: {name}={value!r}")
    return float(value)


def _keep_shape(x):
    """Mask shape: one keep per (sample, unit), broadcast over the positions of a feature map."""
    shape = ops.shape(x)
    return (shape[0],) + (1,) * (len(x.shape) - 2) + (shape[-1],)


@keras.saving.register_keras_serializable(package="masklab")
class CurriculumDropout(keras.layers.Layer):
    """Dropout whose rate ramps up over training: ``rate_t = rate * (1 - exp(-gamma * t))``.

    Args:
        rate: the final drop rate, in (0, 1).
        gamma: ramp speed per training call, > 0 (Morerio et al. suggest ``10 / T`` for ``T`` steps in all;
            the rate is within 1 % of ``rate`` after ``4.6 / gamma`` steps).
        seed: seed of the Bernoulli masks.

    State (non-trainable, saved with the weights): ``iterations``, the training calls so far. The output in
    training is ``x * keep / (1 - rate_t)`` with ``keep ~ Bernoulli(1 - rate_t)`` per sample and unit (channel
    on feature maps); at inference ``x``.
    """

    def __init__(self, rate: float, gamma: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_fraction(rate, "rate")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)) \
                or not np.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be a positive number (ramp speed per step). Received: gamma={gamma!r}")
        self.gamma = float(gamma)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"CurriculumDropout needs inputs (batch, units) or (batch, ..., channels) with known "
                             f"units. Received: input_shape={tuple(input_shape)}")
        self.iterations = self.add_weight(name="iterations", shape=(), initializer="zeros", trainable=False)

    def current_rate(self, iterations=None):
        """The drop rate after ``iterations`` training calls (default: the layer's own count)."""
        t = ops.convert_to_tensor(self.iterations.value if iterations is None else iterations, "float32")
        return self.rate * (1.0 - ops.exp(-self.gamma * t))

    def call(self, inputs, training=None):
        if not training:
            return inputs
        rate = ops.cast(self.current_rate(), inputs.dtype)
        self.iterations.assign(self.iterations.value + 1.0)
        keep = ops.cast(keras.random.uniform(_keep_shape(inputs), seed=self.seed_generator) >= rate, inputs.dtype)
        return inputs * keep / (1.0 - rate)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "gamma": self.gamma, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="masklab")
class TargetedDropout(keras.layers.Layer):
    """Unit dropout among the lowest-magnitude units only (Gomez et al. 2019, "targeted dropout").

    Args:
        rate: probability that a targeted unit is dropped (per sample), in (0, 1).
        targeted_fraction: share of the units that are targets: the ``round(units * targeted_fraction)`` units
            of smallest magnitude, in (0, 1).
        magnitude: how a unit's magnitude is measured. ``"activation"``: its mean absolute activation over the
            batch (and positions), the layer's input. Gomez et al. rank a unit by the norm of its weight
            vector; a layer placed after the activation sees the activations, whose mean magnitude is what the
            next layer receives from the unit (for ReLU units, dead units are targeted first).
        seed: seed of the Bernoulli masks.

    In training: ``x * keep`` with ``keep = 0`` for a targeted unit with probability ``rate``, else 1 (no
    rescaling, as in the paper: the dropped units are the small ones). At inference: ``x``.
    """

    def __init__(self, rate: float, targeted_fraction: float, magnitude: str = "activation",
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_fraction(rate, "rate")
        self.targeted_fraction = _check_fraction(targeted_fraction, "targeted_fraction")
        if magnitude not in UNIT_MAGNITUDES:
            raise ValueError(f"magnitude must be one of {UNIT_MAGNITUDES}. Received: magnitude={magnitude!r}")
        self.magnitude = magnitude
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.n_targets = None

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(f"TargetedDropout needs inputs (batch, units) or (batch, ..., channels) with known "
                             f"units. Received: input_shape={tuple(input_shape)}")
        units = int(input_shape[-1])
        self.n_targets = int(round(units * self.targeted_fraction))
        if self.n_targets == 0:
            raise ValueError(f"targeted_fraction={self.targeted_fraction} of {units} units targets "
                             f"round({units} * {self.targeted_fraction}) = 0 units: nothing could be dropped.")

    def targeted(self, inputs):
        """``(units,)`` 1.0 for the targeted units of this batch (smallest magnitude; ties to lower index)."""
        magnitudes = ops.mean(ops.abs(inputs), axis=tuple(range(len(inputs.shape) - 1)))
        _, lowest = ops.top_k(-magnitudes, k=self.n_targets, sorted=False)
        return ops.sum(ops.one_hot(lowest, inputs.shape[-1], dtype=inputs.dtype), axis=0)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        targets = ops.reshape(ops.stop_gradient(self.targeted(inputs)), (1,) * (len(inputs.shape) - 1) + (-1,))
        dropped = ops.cast(keras.random.uniform(_keep_shape(inputs), seed=self.seed_generator) < self.rate,
                           inputs.dtype)
        return inputs * (1.0 - dropped * targets)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "targeted_fraction": self.targeted_fraction, "magnitude": self.magnitude,
                       "seed": self.seed})
        return config
