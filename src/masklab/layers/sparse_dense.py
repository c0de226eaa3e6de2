"""A Dense layer with fixed sparse connectivity (seed 003): absent connections never appear, before, during or
after training.

``SparseDense(units, connectivity)`` computes ``activation(x @ W_eff + b)`` where the effective kernel ``W_eff``
is exactly 0 wherever ``connectivity`` is 0. Two implementations, numerically equivalent:

* ``"dense"``: a full ``(input_dim, units)`` kernel multiplied by the stored 0/1 mask. The gradient of the kernel
  off the mask is ``upstream * 0``, i.e. exactly 0; the kernel starts at 0 there and regularizers and constraints
  act on the effective (masked) kernel, so Adam's moments, momentum and weight decay have nothing to move.
* ``"sparse"``: only the ``nnz`` connected weights are a variable (``values``, one per row of
  ``connected_indices``); each call scatters them into the kernel and does one matmul. Trainable parameters:
  ``nnz`` (+ ``units`` bias). Off-mask weights are not parameters at all.

``implementation="auto"`` takes ``"sparse"`` up to ``AUTO_SPARSE_MAX_DENSITY`` and ``"dense"`` above it; the
threshold is the crossover measured by ``benchmarks/bench_sparse.py`` (see the README's benchmark table).

Initializers see the full ``(input_dim, units)`` shape, as in ``Dense``: both implementations draw the same full
kernel from the same seed and keep its connected entries, so they start identical. A variance-scaling
initializer therefore scales by the full fan-in, not by the number of connections per unit.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

from masklab.layers.connectivity import Connectivity, as_connectivity

AUTO_SPARSE_MAX_DENSITY = 0.20  # measured crossover (bench_sparse.py, 9180 x 230, batch 128, CPU): 21-22 %
IMPLEMENTATIONS = ("auto", "dense", "sparse")


class _OnEffectiveKernel:
    """Applies a kernel regularizer (or constraint) to the effective kernel rather than to the raw variable.

    ``to_kernel(variable)`` gives the effective ``(input_dim, units)`` kernel; for a constraint, ``from_kernel``
    maps the constrained kernel back onto the variable (re-masking, or gathering the connected entries)."""

    def __init__(self, fn, to_kernel, from_kernel=None):
        self.fn, self.to_kernel, self.from_kernel = fn, to_kernel, from_kernel

    def __call__(self, variable):
        result = self.fn(self.to_kernel(variable))
        return result if self.from_kernel is None else self.from_kernel(result)


@keras.saving.register_keras_serializable(package="masklab")
class SparseDense(keras.layers.Layer):
    """Densely-connected layer whose kernel is fixed to zero outside a 0/1 ``connectivity`` matrix.

    Args:
        units: number of output units; must equal ``connectivity``'s number of columns.
        connectivity: ``(input_dim, units)`` 0/1 matrix: a NumPy array, a scipy.sparse matrix, a path to a
            ``.npy`` / ``.npz`` / ``.csv`` file, or a ``masklab.layers.Connectivity`` (which may carry names).
        activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        activity_regularizer, kernel_constraint, bias_constraint: as in ``keras.layers.Dense``. The kernel
            regularizer and constraint see the effective kernel (zeros off the mask).
        implementation: ``"dense"``, ``"sparse"`` or ``"auto"`` (by density, see the module docstring).

    A unit with no connected input is allowed (it outputs ``activation(bias)``) and warned about once.
    """

    def __init__(self, units, connectivity, activation=None, use_bias=True, implementation="auto",
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer. Received: units={units!r}")
        self.connectivity = as_connectivity(connectivity)
        if self.connectivity.units != units:
            raise ValueError(f"connectivity has {self.connectivity.units} columns but units={units}. Received: "
                             f"connectivity shape {self.connectivity.shape}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}. Received: "
                             f"implementation={implementation!r}")
        self.units = int(units)
        self.implementation = (("sparse" if self.connectivity.density <= AUTO_SPARSE_MAX_DENSITY else "dense")
                               if implementation == "auto" else implementation)
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.supports_masking = True
        isolated = self.connectivity.units_without_inputs
        if isolated.size:
            names = self.connectivity.unit_names
            shown = [names[j] for j in isolated[:10]] if names else isolated[:10].tolist()
            warnings.warn(f"SparseDense {self.name!r}: {isolated.size} of {units} units have no connected input "
                          f"(first: {shown}); they output activation(bias) whatever the input.", stacklevel=2)

    # --- weights -------------------------------------------------------------------------------------------
    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim != self.connectivity.input_dim:
            raise ValueError(f"SparseDense {self.name!r}: connectivity has {self.connectivity.input_dim} rows "
                             f"(inputs) but the layer's input has {input_dim} features. Received: "
                             f"input_shape={tuple(input_shape)}, connectivity shape {self.connectivity.shape}")
        shape = self.connectivity.shape
        if self.implementation == "dense":
            self.connectivity_mask = self.add_weight(
                name="connectivity_mask", shape=shape, trainable=False,
                initializer=lambda shape, dtype=None: ops.cast(self.connectivity.matrix, dtype))
            self.kernel = self.add_weight(
                name="kernel", shape=shape,
                initializer=lambda shape, dtype=None: self.kernel_initializer(shape, dtype) * ops.cast(
                    self.connectivity.matrix, dtype),
                regularizer=None if self.kernel_regularizer is None else _OnEffectiveKernel(
                    self.kernel_regularizer, self._mask_kernel),
                constraint=None if self.kernel_constraint is None else _OnEffectiveKernel(
                    self.kernel_constraint, self._mask_kernel, self._mask_kernel))
        else:
            self.connected_indices = self.add_weight(
                name="connected_indices", shape=(self.connectivity.nnz, 2), dtype="int32", trainable=False,
                initializer=lambda shape, dtype=None: ops.convert_to_tensor(self.connectivity.indices, "int32"))
            self.values = self.add_weight(
                name="values", shape=(self.connectivity.nnz,),
                initializer=lambda shape, dtype=None: ops.take_along_axis(
                    ops.reshape(self.kernel_initializer(self.connectivity.shape, dtype), (-1,)),
                    ops.convert_to_tensor(self._flat_indices()), axis=0),
                regularizer=None if self.kernel_regularizer is None else _OnEffectiveKernel(
                    self.kernel_regularizer, self._scatter),
                constraint=None if self.kernel_constraint is None else _OnEffectiveKernel(
                    self.kernel_constraint, self._scatter, self._gather))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def _flat_indices(self) -> np.ndarray:
        rows, cols = self.connectivity.indices.T
        return (rows.astype(np.int64) * self.units + cols).astype(np.int32)

    def _mask_kernel(self, kernel):
        return kernel * ops.cast(self.connectivity_mask, kernel.dtype)

    def _scatter(self, values):
        return ops.scatter(self.connected_indices, values, self.connectivity.shape)

    def _gather(self, kernel):
        return ops.take_along_axis(ops.reshape(kernel, (-1,)), ops.convert_to_tensor(self._flat_indices()), axis=0)

    def effective_kernel(self):
        """The ``(input_dim, units)`` kernel the layer multiplies by: exactly 0 where connectivity is 0."""
        if not self.built:
            raise ValueError(f"Layer {self.name!r} is not built yet: call it on an input (or build the model) "
                             f"before effective_kernel().")
        if self.implementation == "dense":
            return self._mask_kernel(self.kernel)
        return self._scatter(self.values)

    # --- forward -------------------------------------------------------------------------------------------
    def call(self, inputs, training=None):
        kernel = self.effective_kernel()
        outputs = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    # --- (de)serialization ---------------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "connectivity": self.connectivity.to_config(),
            "implementation": self.implementation,  # resolved, so a loaded model has the same variables
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["connectivity"] = Connectivity.from_config(config["connectivity"])
        return super().from_config(config)
