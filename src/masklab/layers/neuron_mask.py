"""Per-input neuron masks (seeds 000/001): switch chosen units of a layer off for chosen inputs.

Convention, everywhere in masklab: a mask is a KEEP mask. 1 keeps a unit, 0 switches it off, a value in between
scales the unit's output by that factor. The seed's question uses the opposite (1 = off); ``keep_mask(units,
drop=[...])`` and ``keep_from_off(off_mask)`` translate, so nobody has to remember which way round it is.

Put the mask **after** the activation: ``Dense(600, activation="relu") -> NeuronMask``. Masking the
pre-activation does not switch a unit off in general: a unit masked to 0 before a sigmoid still outputs 0.5.
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
from keras import ops


def _as_index_array(indices, units: int, what: str) -> np.ndarray:
    if indices is None or isinstance(indices, (str, bytes, dict)) or np.ndim(indices) == 0:
        raise ValueError(f"{what} must be a list of unit indices (an empty list: none). Received: {what}={indices!r}")
    raw = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    if raw.size == 0:
        return raw.astype(np.int64).reshape(0)
    if raw.ndim != 1 or raw.dtype == bool or not (np.issubdtype(raw.dtype, np.integer) or
                             (np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.round(raw)))):
        raise ValueError(f"{what} must be a flat list of integer unit indices. Received: {what}={indices!r}")
    raw = raw.astype(np.int64)
    bad = raw[(raw < 0) | (raw >= units)]
    if bad.size:
        raise ValueError(f"{what} indices must lie in [0, {units}). Received out of range: {bad.tolist()}")
    values, counts = np.unique(raw, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{what} indices must be unique. Received duplicates: {values[counts > 1].tolist()}")
    return raw


def keep_mask(units: int, drop: Iterable[int] = ()) -> np.ndarray:
    """A ``(units,)`` float32 KEEP mask: 1 everywhere except 0 at the ``drop`` indices (the units switched off)."""
    if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
        raise ValueError(f"units must be a positive integer. Received: units={units!r}")
    mask = np.ones(units, dtype=np.float32)
    mask[_as_index_array(drop, units, "drop")] = 0.0
    return mask


def keep_masks(units: int, drops: Iterable[Iterable[int]]) -> np.ndarray:
    """``(K, units)`` KEEP masks, row k switching off the indices ``drops[k]``."""
    return np.stack([keep_mask(units, drop) for drop in drops])


def keep_from_off(off_mask) -> np.ndarray:
    """Translate the seed's convention (1 = unit OFF) into a KEEP mask (1 = unit kept). Must be 0/1."""
    off = np.asarray(off_mask, dtype=np.float32)
    if not np.all((off == 0) | (off == 1)):
        raise ValueError(f"An 'off' mask must hold only 0 and 1. Received values: {np.unique(off)[:10].tolist()}")
    return 1.0 - off


def dropped_units(mask) -> np.ndarray:
    """Indices of the units a ``(units,)`` KEEP mask switches fully off."""
    return np.flatnonzero(np.asarray(mask) == 0)


def validate_mask(mask, units: int, batch_size: int | None = None, what: str = "mask") -> np.ndarray:
    """Check a concrete KEEP mask and return it as float32.

    Accepted shapes: ``(units,)``, ``(1, units)`` (broadcast over the batch) or ``(batch_size, units)``.
    Values must be finite and in [0, 1]. Raises ValueError naming what was received.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim not in (1, 2):
        raise ValueError(f"{what} must have rank 1 (units,) or 2 (batch, units). Received: shape {mask.shape}")
    if mask.shape[-1] != units:
        raise ValueError(f"{what} has {mask.shape[-1]} units but the layer has {units}. "
                         f"Received: shape {mask.shape}")
    if mask.ndim == 2 and batch_size is not None and mask.shape[0] not in (1, batch_size):
        raise ValueError(f"{what} has {mask.shape[0]} rows for a batch of {batch_size} inputs (use 1 row to "
                         f"share one mask). Received: shape {mask.shape}")
    if np.isnan(mask).any():
        raise ValueError(f"{what} contains NaN at {np.argwhere(np.isnan(mask))[:5].tolist()}")
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise ValueError(f"{what} values must lie in [0, 1] (1 keeps a unit, 0 switches it off). "
                         f"Received: min={mask.min()}, max={mask.max()}")
    return mask


def invalid_mask_poison(mask):
    """``(batch,)``: NaN for mask rows holding a value outside [0, 1] or NaN, 0 elsewhere (added to the outputs,
    it makes an invalid mask visible inside compiled calls, on every backend)."""
    # m - m^2 >= 0 exactly for m in [0, 1]: its square root is NaN for any other value (and for NaN), and a sum
    # keeps a NaN (IEEE), so 0 * sum is 0 for a valid row and NaN otherwise: one fused pass, no comparisons
    # (no gradient: the square root's slope is infinite at 0 and 1, and the check is not part of the model)
    return ops.stop_gradient(0.0 * ops.sum(ops.sqrt(mask - mask * mask), axis=-1))


def _concrete(value):
    """The NumPy value of an eager tensor or array; None for a symbolic tensor (inside a traced function)."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(ops.convert_to_numpy(value))
    except Exception:  # symbolic: values are unknown until run time
        return None


@keras.saving.register_keras_serializable(package="masklab")
class NeuronMask(keras.layers.Layer):
    """Multiply a layer's output by a KEEP mask over its last axis (1 keeps a unit, 0 switches it off).

    Two ways to give the mask:

    * **as a second input** (functional API): ``h = NeuronMask()([h, masks])`` with ``masks`` of shape
      ``(batch, units)`` (one mask per input) or ``(1, units)`` (one shared mask, in a direct call). Keras'
      ``predict`` / ``fit`` need one row per sample in every input: share one mask there with
      ``np.broadcast_to(mask, (len(x), units))``. No variable is created in this mode;
    * **stored**: ``h = NeuronMask()(h)`` multiplies by a non-trainable ``(units,)`` variable, all ones unless
      ``initial_mask`` is given. ``layer.set_mask(m)`` assigns it: the next call uses it, with no recompiling
      and no retracing of a compiled function. Works inside ``Sequential``.

    Soft values in [0, 1] scale units instead of switching them. Active in training and inference alike.
    The stored mask is saved with the model's weights.

    Args:
        initial_mask: optional ``(units,)`` KEEP mask for the stored variable.
    """

    # Inside compiled calls (predict, fit, jit) mask values cannot be checked in Python: an input mask row with a
    # value outside [0, 1] or NaN turns that sample's output into NaN instead of a plausible wrong answer.
    # Class-level switch for the benchmark that measures what the check costs (read when a call is traced);
    # always on otherwise.
    check_values = True

    def __init__(self, initial_mask=None, **kwargs):
        super().__init__(**kwargs)
        if initial_mask is not None:
            initial_mask = np.asarray(initial_mask, dtype=np.float32)
            validate_mask(initial_mask, initial_mask.shape[-1], what="initial_mask")
            if initial_mask.ndim != 1:
                raise ValueError(f"initial_mask must have shape (units,). Received: shape {initial_mask.shape}")
        self.initial_mask = initial_mask
        self.units = None
        self.stored_mask = None
        self.uses_input_mask = False

    def build(self, input_shape):
        uses_input_mask = isinstance(input_shape, (list, tuple)) and len(input_shape) == 2 and \
            isinstance(input_shape[0], (list, tuple))
        x_shape = input_shape[0] if uses_input_mask else input_shape
        if len(x_shape) < 2 or x_shape[-1] is None:
            raise ValueError(f"NeuronMask needs inputs of rank >= 2 with a known last axis (units). "
                             f"Received: input_shape={input_shape}")
        self.units = int(x_shape[-1])
        if uses_input_mask:
            mask_shape = input_shape[1]
            if len(mask_shape) != 2 or mask_shape[-1] not in (None, self.units):
                raise ValueError(f"The mask input must have shape (batch, {self.units}) or (1, {self.units}). "
                                 f"Received: mask shape {tuple(mask_shape)} for inputs {tuple(x_shape)}")
        if self.initial_mask is not None and self.initial_mask.shape[0] != self.units:
            raise ValueError(f"initial_mask has {self.initial_mask.shape[0]} units but the layer's input has "
                             f"{self.units}. Received: input_shape={input_shape}")
        if uses_input_mask and self.initial_mask is not None:
            raise ValueError(f"NeuronMask {self.name!r} takes its mask as an input here, so initial_mask would never "
                             f"be used: pass one or the other. Received: initial_mask and input_shape={input_shape}")
        self.uses_input_mask = uses_input_mask
        if uses_input_mask:  # no stored variable: it would never be read (and would show up in summary())
            return
        initializer = (keras.initializers.Constant(self.initial_mask) if self.initial_mask is not None
                       else keras.initializers.Ones())
        self.stored_mask = self.add_weight(name="mask", shape=(self.units,), initializer=initializer, trainable=False)

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            x, mask = inputs
            concrete = _concrete(mask)
            if concrete is not None:  # eager call: check values too
                validate_mask(concrete, self.units, x.shape[0])
                if concrete.ndim != 2:
                    raise ValueError(f"The mask input must have rank 2 (batch, units). Received: shape "
                                     f"{concrete.shape}")
            mask = ops.cast(mask, x.dtype)
            poison = invalid_mask_poison(mask) if self.check_values else None
            # (batch, units) -> (batch, 1, ..., 1, units) so it also masks channels of conv feature maps
            expand = (ops.shape(mask)[0],) + (1,) * (len(x.shape) - 2)
            out = x * ops.reshape(mask, expand + (self.units,))
            return out if poison is None else out + ops.reshape(poison, expand + (1,))
        if self.stored_mask is None:
            raise ValueError(f"NeuronMask {self.name!r} was built to take its mask as an input ([x, masks]), so it "
                             f"has no stored mask. Received: a call with x alone")
        return inputs * ops.cast(self.stored_mask, inputs.dtype)

    def set_mask(self, mask) -> None:
        """Assign the stored KEEP mask, shape ``(units,)`` or ``(1, units)``; used from the next call on."""
        if getattr(self, "uses_input_mask", False):
            raise ValueError(f"NeuronMask {self.name!r} takes its mask as an input ([x, masks]): pass the masks with "
                             f"the inputs instead. Received: set_mask on a layer without a stored mask")
        if self.stored_mask is None:
            raise ValueError(f"Layer {self.name!r} is not built yet: call it on an input (or build the model) "
                             f"before set_mask, or pass initial_mask.")
        mask = validate_mask(mask, self.units, batch_size=1, what="mask")
        self.stored_mask.assign(mask.reshape(self.units))

    def clear_mask(self) -> None:
        """Keep every unit again (stored mask of ones)."""
        if self.stored_mask is None and not self.uses_input_mask:
            raise ValueError(f"Layer {self.name!r} is not built yet: call it on an input (or build the model) "
                             f"before clear_mask.")
        self.set_mask(np.ones(self.units, dtype=np.float32))

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and len(input_shape) == 2 and \
                isinstance(input_shape[0], (list, tuple)):
            return tuple(input_shape[0])
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["initial_mask"] = None if self.initial_mask is None else self.initial_mask.tolist()
        return config
