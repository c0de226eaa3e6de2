"""A Dense layer with fixed sparse connectivity (seed 003): absent connections never appear, before, during or
after training.

``SparseDense(units, connectivity)`` computes ``activation(x @ kernel + bias)`` where ``kernel`` (a read-only
property, as in ``Dense``) is exactly 0 wherever ``connectivity`` is 0. Two implementations, numerically equal:

* ``"sparse"``: only the ``nnz`` connected weights exist (the variable ``values``, one per row of
  ``layer.connections``) and the product is computed from them alone: the inputs of each connection are
  gathered, scaled by its weight and summed per unit (``keras.ops.take`` + ``keras.ops.segment_sum``, so every
  backend runs it). Forward and backward cost O(batch x nnz): the kernel's gradient exists only on the nnz
  connections, and the input gradient flows back through the same connections.
* ``"dense"``: a full ``(input_dim, units)`` kernel variable, multiplied by the 0/1 mask in every call; the
  gradient off the mask is exactly 0, the variable starts at 0 there, and regularizers and constraints see the
  masked kernel, so no optimizer can move an off-mask weight. It costs a full matmul at any density.

``implementation="auto"`` stores the layer as ``"sparse"`` (nnz values) up to ``AUTO_SPARSE_MAX_DENSITY`` and as
``"dense"`` above it; with the sparse storage, each call takes the gather path only where it was measured faster
than a dense matmul for that density, batch size (samples times any other leading axes; 128 when unknown at
trace time) and phase (training or inference), and otherwise scatters the values into a full kernel and
multiplies (the cost of the dense implementation). The crossovers come from ``benchmarks/bench_sparse.py`` on a
2-core CPU (README, "Benchmarks"): the gather path is memory-bound, a dense matmul is not, so on a CPU the sparse
product wins only at low density, and less so for large batches.

Weights (``get_weights()`` / ``set_weights()``, Keras order: trainable first):

* ``"dense"``: ``[kernel, bias]`` as in ``keras.layers.Dense``: kernel ``(input_dim, units)``, 0 off the mask.
* ``"sparse"``: ``[values, bias]``: values ``(nnz,)`` in the order of ``layer.connections`` (unit by unit,
  inputs ascending within a unit; ``kernel[connections[:, 0], connections[:, 1]] == values``).

The connectivity is configuration (``get_config``), not a weight. ``layer.set_weights`` refuses a dense kernel
with non-zero entries off the mask (they would be ignored); ``set_kernel(kernel)`` takes the full
``(input_dim, units)`` kernel for either implementation, e.g. to copy a trained ``Dense`` layer's kernel after
zeroing it off the mask.

Initialization: both implementations draw the same full ``(input_dim, units)`` kernel from the same seed and keep
its connected entries, so they start identical. A variance-scaling initializer (``glorot_*``, ``he_*``,
``lecun_*``, ``VarianceScaling``) computes its scale from a fan-in and a fan-out; ``fan_scaling`` says which:

* ``"full"`` (default): the full shape, as ``Dense`` would (fan-in ``input_dim``): at 2 % density a unit's
  pre-activation starts about 7x smaller in std than a Dense unit's, and the shrinking compounds level by level.
* ``"connected"``: each connection's real fans: the number of inputs its unit is connected to (fan-in) and the
  number of units its input feeds (fan-out). A unit with 40 connected inputs starts like a 40-input Dense unit,
  so activations keep their scale through any number of sparse levels.
* ``"nnz"``: the flat ``(nnz,)`` vector, as P-NET's ``SparseTF`` draws it (fan-in = fan-out = nnz): much smaller
  again.

``"full"`` stays the default because it trained as well or better on both synthetic pathway tasks of notebook 30
(seed 003's 9 180 -> 230 network and a 3-level hierarchy; README, "Fixed sparse connectivity"): the larger
``"connected"`` start kept activations O(1) but did not help accuracy there. Other initializers have no fans and
are used as given (``fan_scaling`` must then stay ``"full"``).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
from keras import ops

from masklab.layers.connectivity import Connectivity, as_connectivity

# Density below which the gather path beats a dense matmul (bench_sparse.py, 9 180 -> 230, Adam, 2-core CPU,
# the lower of the graph and XLA crossovers), by phase and batch size; interpolated on log-log in between.
AUTO_CROSSOVER_DENSITY = {"training": {128: 0.0138, 1024: 0.0058}, "inference": {128: 0.0095, 1024: 0.003}}
AUTO_SPARSE_MAX_DENSITY = max(AUTO_CROSSOVER_DENSITY["training"].values())  # storage: nnz values up to here
AUTO_REFERENCE_BATCH = 128  # the batch size assumed when a trace leaves it unknown
IMPLEMENTATIONS = ("auto", "dense", "sparse")
FAN_SCALINGS = ("full", "connected", "nnz")
_ELEMENTWISE_REGULARIZERS = (keras.regularizers.L1, keras.regularizers.L2, keras.regularizers.L1L2)


class _OnEffectiveKernel:
    """Applies a kernel regularizer (or constraint) to the effective kernel rather than to the raw variable.

    ``to_kernel(variable)`` gives the effective ``(input_dim, units)`` kernel; for a constraint, ``from_kernel``
    maps the constrained kernel back onto the variable (re-masking, or gathering the connected entries)."""

    def __init__(self, fn, to_kernel, from_kernel=None):
        self.fn, self.to_kernel, self.from_kernel = fn, to_kernel, from_kernel

    def __call__(self, variable):
        result = self.fn(self.to_kernel(variable))
        return result if self.from_kernel is None else self.from_kernel(result)


def auto_crossover_density(batch: int, training: bool) -> float:
    """The density up to which ``implementation="auto"`` takes the gather path for ``batch`` samples."""
    table = AUTO_CROSSOVER_DENSITY["training" if training else "inference"]
    (b0, d0), (b1, d1) = sorted(table.items())
    t = min(1.0, max(0.0, (np.log(max(batch, 1)) - np.log(b0)) / (np.log(b1) - np.log(b0))))
    return float(np.exp(np.log(d0) + t * (np.log(d1) - np.log(d0))))


def fan_scale_factors(connectivity: Connectivity, initializer, fan_scaling: str) -> np.ndarray | float:
    """Per-connection factor that turns a variance-scaling draw over the full ``(input_dim, units)`` shape into
    one scaled by the fans ``fan_scaling`` names (see the module docstring); 1.0 for other initializers.

    Returns an ``(input_dim, units)`` float32 array (or a scalar): the initializer's std over the full shape
    times this factor is its std for the chosen fans."""
    if not isinstance(initializer, keras.initializers.VarianceScaling) or fan_scaling == "full":
        return 1.0
    input_dim, units = connectivity.shape
    full = {"fan_in": input_dim, "fan_out": units, "fan_avg": (input_dim + units) / 2.0}[initializer.mode]
    if fan_scaling == "nnz":  # a 1-D shape: keras gives fan_in = fan_out = its length
        return np.float32(np.sqrt(max(1.0, full) / max(1.0, connectivity.nnz)))
    matrix = connectivity.matrix
    fan_in = matrix.sum(axis=0, keepdims=True).astype(np.float64)   # (1, units): connected inputs per unit
    fan_out = matrix.sum(axis=1, keepdims=True).astype(np.float64)  # (input_dim, 1): units per input
    real = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[initializer.mode]
    factors = np.sqrt(max(1.0, full) / np.maximum(1.0, real)).astype(np.float32)
    return np.broadcast_to(factors, connectivity.shape)


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
        implementation: ``"sparse"``, ``"dense"`` or ``"auto"`` (by density, batch size and phase; see the module
            docstring). ``layer.implementation`` is the storage (``"sparse"`` or ``"dense"``), ``layer.auto``
            whether each call chooses its path.
        fan_scaling: which fans a variance-scaling ``kernel_initializer`` uses: ``"full"`` (default, as ``Dense``),
            ``"connected"`` or ``"nnz"`` (module docstring).

    A unit with no connected input is allowed (it outputs ``activation(bias)``) and warned about once.
    """

    def __init__(self, units, connectivity, activation=None, use_bias=True, implementation="auto",
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 fan_scaling=None, auto_storage=None, **kwargs):
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
        self.auto = implementation == "auto"
        if auto_storage not in (None, "dense", "sparse"):
            raise ValueError(f"auto_storage must be None, 'dense' or 'sparse'. Received: auto_storage={auto_storage!r}")
        self.implementation = (auto_storage or ("sparse" if self.connectivity.density <= AUTO_SPARSE_MAX_DENSITY
                                                else "dense")) if self.auto else implementation
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        variance_scaling = isinstance(self.kernel_initializer, keras.initializers.VarianceScaling)
        if fan_scaling is not None and fan_scaling not in FAN_SCALINGS:
            raise ValueError(f"fan_scaling must be one of {FAN_SCALINGS}. Received: fan_scaling={fan_scaling!r}")
        if fan_scaling not in (None, "full") and not variance_scaling:
            raise ValueError(f"fan_scaling={fan_scaling!r} applies to variance-scaling initializers (glorot_*, he_*, "
                             f"lecun_*, VarianceScaling) only. Received: kernel_initializer="
                             f"{type(self.kernel_initializer).__name__}")
        self.fan_scaling = fan_scaling or "full"
        self.supports_masking = True
        # (nnz,) input and unit of each connection, unit by unit (the order of `values` and of segment_sum)
        units_of, inputs_of = np.nonzero(self.connectivity.matrix.T)
        self._connection_inputs = inputs_of.astype(np.int32)
        self._connection_units = units_of.astype(np.int32)
        isolated = self.connectivity.units_without_inputs
        if isolated.size:
            names = self.connectivity.unit_names
            shown = [names[j] for j in isolated[:10]] if names else isolated[:10].tolist()
            warnings.warn(f"SparseDense {self.name!r}: {isolated.size} of {units} units have no connected input "
                          f"(first: {shown}); they output activation(bias) whatever the input.", stacklevel=2)

    @property
    def connections(self) -> np.ndarray:
        """``(nnz, 2)`` int32 ``(input, unit)`` pairs, unit by unit (inputs ascending): the order of ``values``."""
        return np.stack([self._connection_inputs, self._connection_units], axis=1)

    # --- weights -------------------------------------------------------------------------------------------
    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim != self.connectivity.input_dim:
            raise ValueError(f"SparseDense {self.name!r}: connectivity has {self.connectivity.input_dim} rows "
                             f"(inputs) but the layer's input has {input_dim} features. Received: "
                             f"input_shape={tuple(input_shape)}, connectivity shape {self.connectivity.shape}")
        shape = self.connectivity.shape
        factors = fan_scale_factors(self.connectivity, self.kernel_initializer, self.fan_scaling)

        def full_kernel(dtype):
            """The same full draw for both implementations, scaled per connection and zero off the mask."""
            drawn = self.kernel_initializer(shape, dtype) * ops.cast(factors, dtype)
            return ops.where(self.connectivity.matrix, drawn, ops.zeros_like(drawn))

        if self.implementation == "dense":
            self.full_kernel = self.add_weight(
                name="kernel", shape=shape, initializer=lambda shape, dtype=None: full_kernel(dtype),
                regularizer=None if self.kernel_regularizer is None else _OnEffectiveKernel(
                    self.kernel_regularizer, self._mask_kernel),
                constraint=None if self.kernel_constraint is None else _OnEffectiveKernel(
                    self.kernel_constraint, self._mask_kernel, self._mask_kernel))
        else:
            # L1 / L2 of the full kernel are sums over its entries: the off-mask zeros add nothing
            elementwise = isinstance(self.kernel_regularizer, _ELEMENTWISE_REGULARIZERS)
            self.values = self.add_weight(
                name="values", shape=(self.connectivity.nnz,),
                initializer=lambda shape, dtype=None: self._gather(full_kernel(dtype)),
                regularizer=self.kernel_regularizer if elementwise or self.kernel_regularizer is None else
                _OnEffectiveKernel(self.kernel_regularizer, self._scatter),
                constraint=None if self.kernel_constraint is None else _OnEffectiveKernel(
                    self.kernel_constraint, self._scatter, self._gather))
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None

    def _mask_kernel(self, kernel):
        kernel = ops.convert_to_tensor(kernel)  # a Variable (the JAX backend's ops need the value)
        return ops.where(self.connectivity.matrix, kernel, ops.zeros_like(kernel))

    def _scatter(self, values):
        return ops.scatter(self.connections, values, self.connectivity.shape)

    def _gather(self, kernel):
        return ops.take(ops.reshape(kernel, (-1,)),
                        self._connection_inputs.astype(np.int64) * self.units + self._connection_units, axis=0)

    def _check_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"Layer {self.name!r} is not built yet: call it on an input (or build the model) "
                             f"before {what}.")

    @property
    def kernel(self):
        """The ``(input_dim, units)`` kernel the layer multiplies by: exactly 0 where connectivity is 0
        (read-only: a tensor computed from the variables; use ``set_kernel`` to change it)."""
        self._check_built("reading .kernel")
        if self.implementation == "dense":
            return self._mask_kernel(self.full_kernel)
        return self._scatter(self.values)

    @kernel.setter
    def kernel(self, value):
        raise AttributeError(f"SparseDense.kernel is read-only (it is computed from the layer's variables). "
                             f"Use layer.set_kernel(kernel) to assign an (input_dim, units) kernel. Received: "
                             f"{type(value).__name__}")

    def effective_kernel(self):
        """Same as ``layer.kernel``."""
        self._check_built("effective_kernel()")
        return self.kernel

    def set_kernel(self, kernel) -> None:
        """Assign the full ``(input_dim, units)`` kernel (either implementation). Entries off the mask must be 0:
        a non-zero one would be ignored, so it is refused (multiply by ``connectivity.matrix`` first)."""
        self._check_built("set_kernel()")
        kernel = self._checked_kernel(np.asarray(kernel), "kernel")
        if self.implementation == "dense":
            self.full_kernel.assign(kernel)
        else:
            self.values.assign(kernel[self._connection_inputs, self._connection_units])

    def _checked_kernel(self, kernel: np.ndarray, what: str) -> np.ndarray:
        if kernel.shape != self.connectivity.shape:
            raise ValueError(f"SparseDense {self.name!r}: {what} must have shape {self.connectivity.shape} "
                             f"(input_dim, units). Received: shape {kernel.shape}")
        off = np.count_nonzero(kernel[~self.connectivity.matrix])
        if off:
            raise ValueError(f"SparseDense {self.name!r}: {what} has {off} non-zero entries off the connectivity "
                             f"mask, which the layer would ignore. Zero them first (kernel * "
                             f"layer.connectivity.matrix) if that is what you mean.")
        return kernel

    def set_weights(self, weights):
        """Keras's ``set_weights`` (order and shapes as ``get_weights()``: module docstring); a dense kernel with
        non-zero entries off the mask is refused rather than silently ignored."""
        if self.implementation == "dense" and len(weights):
            self._checked_kernel(np.asarray(weights[0]), "weights[0] (the kernel)")
        super().set_weights(weights)

    # --- forward -------------------------------------------------------------------------------------------
    def call(self, inputs, training=None):
        if self.uses_gather(inputs.shape, training):
            outputs = self._sparse_matmul(inputs)
        else:
            outputs = ops.matmul(inputs, ops.cast(self.kernel, inputs.dtype))
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return self.activation(outputs) if self.activation is not None else outputs

    def uses_gather(self, input_shape, training=None) -> bool:
        """Whether a call on inputs of ``input_shape`` takes the gather path (O(batch x nnz)) rather than a
        dense matmul: always for ``"sparse"``, never for ``"dense"``, by the measured crossover for ``"auto"``."""
        if self.implementation == "dense":
            return False
        if not self.auto:
            return True
        leading = [d for d in input_shape[:-1]]
        batch = AUTO_REFERENCE_BATCH if any(d is None for d in leading) else int(np.prod(leading, dtype=np.int64))
        return self.connectivity.density <= auto_crossover_density(batch, bool(training))

    def _sparse_matmul(self, inputs):
        """``inputs @ kernel`` from the nnz connections: gather each connection's input (samples as the last
        axis, so every gathered row is contiguous), scale by its weight, sum per unit (sorted segments)."""
        leading = ops.shape(inputs)[:-1]
        columns = ops.transpose(ops.reshape(inputs, (-1, self.connectivity.input_dim)))  # (input_dim, samples)
        weighted = ops.take(columns, self._connection_inputs, axis=0) * ops.cast(self.values, inputs.dtype)[:, None]
        per_unit = ops.segment_sum(weighted, self._connection_units, num_segments=self.units)
        return ops.reshape(ops.transpose(per_unit), (*leading, self.units))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    # --- (de)serialization ---------------------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update({
            "units": self.units,
            "connectivity": self.connectivity.to_config(),
            "implementation": "auto" if self.auto else self.implementation,
            "auto_storage": self.implementation if self.auto else None,  # a loaded model has the same variables
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "fan_scaling": self.fan_scaling,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["connectivity"] = Connectivity.from_config(config["connectivity"])
        return super().from_config(config)
