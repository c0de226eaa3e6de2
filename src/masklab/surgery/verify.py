"""The guarantee, computed on the ORIGINAL model: its outputs with the removed channels set to 0.

:class:`MaskedRunner` runs the original graph node by node (nested models included) and multiplies every tensor
that carries a removed channel by a 0/1 mask on its channel axis, so every consumer reads 0 there. Recurrent layers
with removed units run with those units' recurrent-kernel rows set to 0 (their hidden state feeds nothing back);
attention heads being removed have their rows of the output projection set to 0. A correct pruned model computes
the same outputs up to float round-off; :func:`max_abs_difference` measures it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import keras
import numpy as np

from masklab.surgery.graph import DependencyGraph, functional_graph, is_graph_model, ordered_nodes
from masklab.surgery.rebuild import named_weights, relative_path


def as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def model_inputs(model, x, what: str = "x") -> list[np.ndarray]:
    """``x`` as arrays in the order of ``model.inputs`` (one array, a list / tuple, or a dict keyed like the
    model's inputs); ValueError naming ``what`` for anything else (a tf.data.Dataset, a generator, no samples,
    lengths that differ)."""
    if isinstance(x, dict):
        struct = getattr(model, "_inputs_struct", None)
        names = sorted(struct) if isinstance(struct, dict) else \
            [t._keras_history.operation.name for t in model.inputs]
        missing = [name for name in names if name not in x]
        if missing:
            raise ValueError(f"{what} is a dict without the model's inputs {missing}. Received keys: {sorted(x)}")
        arrays = keras.tree.flatten({name: x[name] for name in names}) if isinstance(struct, dict) \
            else [x[name] for name in names]
    else:
        arrays = as_list(x)
    converted = []
    for array in arrays:
        if not hasattr(array, "__len__") or not hasattr(array, "shape") and not isinstance(array, (list, tuple)):
            raise ValueError(f"{what} must be NumPy arrays (or a list / dict of them), all samples in memory. "
                             f"Received: {type(array).__name__}")
        converted.append(np.asarray(array))
    if len(converted) != len(model.inputs):
        raise ValueError(f"{what} must hold one array per model input ({len(model.inputs)}). Received: "
                         f"{len(converted)} arrays")
    lengths = {len(a) if a.ndim else 0 for a in converted}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"{what} must hold at least one sample, as many in every array. Received lengths "
                         f"{sorted(lengths)}")
    return converted


def _tensor(array: np.ndarray):
    """A backend tensor; text (for TextVectorization / StringLookup inputs) as a TensorFlow string tensor."""
    if array.dtype.kind in "OUS" and keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(array)
    return keras.ops.convert_to_tensor(array)


def jax_jit(forward, variables: list):
    """``forward`` compiled with ``jax.jit`` as a pure function of the current values of ``variables`` (read
    through ``keras.StatelessScope``, as ``Model.stateless_call`` does): a forward pass that walks a model layer
    by layer then runs as one XLA program instead of op by op, and still sees weights assigned later."""
    import jax

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return forward(*args)

    jitted = jax.jit(pure)
    return lambda *args: jitted([v.value for v in variables], *args)


def validate_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: batch_size={batch_size!r}")
    return int(batch_size)


def flat_outputs(outputs) -> list[np.ndarray]:
    """A model's outputs (array, list or dict) as a flat list in the order of ``model.outputs``."""
    return [np.asarray(o) for o in keras.tree.flatten(outputs)]


class MaskedRunner:
    """Runs ``graph.model`` with ``removed`` atoms (bool per atom) zeroed; ``heads``: ``{id(mha layer): keep mask
    over heads}``. ``statistics(x)`` also measures, per channel of every tensor in ``watched``, the sum, the sum
    of absolute values, the number of exact zeros and the number of values (the activation criteria).

    On the TensorFlow backend the graph runs inside one ``tf.function``, as ``predict`` runs a model: eager
    Keras 3.15 adds a Conv2D bias along the wrong axis of channels_first tensors whose width equals their
    channel count, so an eager reference would differ from what ``predict`` computes."""

    def __init__(self, graph: DependencyGraph, removed: np.ndarray | None = None, heads: dict | None = None,
                 watched: set[int] | None = None):
        self.graph = graph
        self.removed = np.zeros(len(graph.root), dtype=bool) if removed is None else removed
        self.heads = heads or {}
        self.watched = sorted(watched or ())
        self._substitutes: dict[int, object] = {}
        self._compiled = None

    def _zeroed_rows(self, op) -> list[tuple[str, np.ndarray]]:
        """(relative weight path suffix, rows to zero) for a recurrent layer losing units or an attention layer
        losing heads; empty otherwise."""
        rec = self.graph.records.get(id(op))
        if rec is None:
            return []
        if getattr(rec.rule, "recurrent", False) and rec.produced is not None and self.removed[rec.produced].any():
            removed = self.removed[rec.produced]
            if hasattr(rec.rule, "zeroed_rows"):
                return rec.rule.zeroed_rows(rec, removed)
            return [("recurrent_kernel", np.flatnonzero(removed))]
        if id(op) in self.heads and not self.heads[id(op)].all():
            return [("attention_output/kernel", np.flatnonzero(~self.heads[id(op)]))]
        return []

    def _substitute(self, op, args, kwargs):
        """A copy of a recurrent layer (or attention layer) with the removed units' (heads') weights zeroed."""
        zero_rows = self._zeroed_rows(op)
        if not zero_rows:
            return op
        if id(op) not in self._substitutes:
            copy = type(op).from_config(op.get_config())
            copy(*args, **kwargs)  # builds it (eagerly: see _function)
            weights = named_weights(op)
            for suffix, rows in zero_rows:
                for key in weights:
                    if key.endswith(suffix) and len(rows):
                        weights[key] = weights[key].copy()
                        weights[key][rows] = 0.0
            copy.set_weights([weights[relative_path(v)] for v in op.weights])
            self._substitutes[id(op)] = copy
        return self._substitutes[id(op)]

    def _mask(self, tensor_id: int, value, stats: dict):
        layout = self.graph.layouts.get(tensor_id)
        if layout is not None and self.removed[layout.atoms].any():
            shape = [1] * len(value.shape)
            shape[layout.axis] = len(layout.atoms)
            keep = (~self.removed[layout.atoms]).reshape(shape)
            value = value * keras.ops.cast(keep, value.dtype)
        if tensor_id in stats:
            axes = [a for a in range(len(value.shape)) if a != layout.axis]
            v = keras.ops.cast(value, "float32")
            count = keras.ops.cast(keras.ops.size(v) // value.shape[layout.axis], "float32")
            stats[tensor_id] = (keras.ops.sum(v, axis=axes), keras.ops.sum(keras.ops.abs(v), axis=axes),
                                keras.ops.sum(keras.ops.cast(keras.ops.equal(v, 0), "float32"), axis=axes),
                                count * keras.ops.ones(value.shape[layout.axis]))
        return value

    def _run(self, model, inputs: list, stats: dict) -> list:
        graph = functional_graph(model)
        values = {id(t): self._mask(id(t), v, stats) for t, v in zip(graph.inputs, inputs)}
        for node in ordered_nodes(graph):
            op = node.operation
            args, kwargs = node.arguments.fill_in(values)
            if is_graph_model(op):
                outputs = self._run(op, [values[id(t)] for t in node.arguments.keras_tensors], stats)
            else:
                outputs = self._substitute(op, args, kwargs)(*args, **kwargs)
            for tensor, value in zip(node.output_tensors, keras.tree.flatten(outputs)):
                values[id(tensor)] = self._mask(id(tensor), value, stats)
        return [values[id(t)] for t in graph.outputs]

    def _forward(self, *inputs):
        stats = {tensor_id: None for tensor_id in self.watched}
        outputs = self._run(self.graph.model, list(inputs), stats)
        return outputs, [stats[tensor_id] for tensor_id in self.watched]

    def _function(self, first_inputs):
        if self._compiled is None:
            if any(self._zeroed_rows(node_op) for node_op in self._operations()):
                self._forward(*[v[:1] for v in first_inputs])  # build the substitute layers eagerly, once
            if keras.config.backend() == "tensorflow":
                import tensorflow as tf

                self._compiled = tf.function(self._forward, reduce_retracing=True, autograph=False)
            elif keras.config.backend() == "jax":
                substitutes = [v for layer in self._substitutes.values() for v in layer.variables]
                self._compiled = jax_jit(self._forward, [*self.graph.model.variables, *substitutes])
            else:
                self._compiled = self._forward
        return self._compiled

    def _operations(self):
        return [rec.layer for rec in self.graph.records.values()]

    def _chunks(self, x, batch_size: int):
        arrays = model_inputs(self.graph.model, x)
        batch_size = validate_batch_size(batch_size)
        for start in range(0, len(arrays[0]), batch_size):
            yield [_tensor(a[start:start + batch_size]) for a in arrays]

    def __call__(self, x, batch_size: int = 256) -> list[np.ndarray]:
        """The model's outputs on ``x`` (a list, one array per output)."""
        chunks = []
        with new_models_traced():  # every runner compiles its own (masked) model
            for inputs in self._chunks(x, batch_size):
                outputs, _ = self._function(inputs)(*inputs)
                chunks.append([keras.ops.convert_to_numpy(v) for v in outputs])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]

    def statistics(self, x, batch_size: int = 256) -> dict[int, np.ndarray]:
        """``{tensor id: (4, channels) array}`` of sum, sum of |value|, zeros and count per channel on ``x``."""
        totals: dict[int, np.ndarray] = {}
        with new_models_traced():
            chunk_stats = [self._function(inputs)(*inputs)[1] for inputs in self._chunks(x, batch_size)]
        for stats in chunk_stats:
            for tensor_id, values in zip(self.watched, stats):
                array = np.stack([np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in values])
                totals[tensor_id] = totals.get(tensor_id, 0) + array
        return totals


def max_abs_difference(reference: list[np.ndarray], pruned: keras.Model, x, batch_size: int = 256) -> float:
    """Max |pruned(x) - reference| over every output."""
    arrays = [_tensor(a) if a.dtype.kind in "OUS" else a for a in model_inputs(pruned, x)]
    struct = getattr(pruned, "_inputs_struct", None)
    if struct is None:  # Sequential
        structured = arrays[0] if len(arrays) == 1 else arrays
    else:
        structured = keras.tree.pack_sequence_as(struct, arrays)
    with new_models_traced():  # a pruned model is new: its predict function is traced once
        result = flat_outputs(pruned.predict(structured, verbose=0, batch_size=validate_batch_size(batch_size)))
    return float(max(np.abs(np.asarray(r, np.float64) - np.asarray(p, np.float64)).max()
                     for r, p in zip(reference, result)))


def probe_inputs(model, samples: int = 2, seed: int = 0) -> list[np.ndarray] | None:
    """Random inputs for a self-check: standard normal floats, zeros for integer inputs (token ids), unknown
    sizes set to 8; ``None`` when an input is of another kind (strings)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (samples, *[8 if d is None else d for d in tensor.shape[1:]])
        dtype = str(tensor.dtype)
        if "float" in dtype:
            arrays.append(rng.standard_normal(shape).astype(dtype))
        elif "int" in dtype:
            arrays.append(np.zeros(shape, dtype))
        else:
            return None
    return arrays


class _FirstTracesOfNewModels(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextmanager
def new_models_traced():
    """A block that builds and runs new models by design (surgery checks, pruning sweeps, NSDropout runs). Each new model (and
    each masked reference) compiles its own function, traced once; TensorFlow's frequent-tracing detector keys
    its count by the code those functions come from, so it reports these first traces as "retracing" and warns.
    Inside the block only that message is dropped from the ``tensorflow`` logger; a function that really
    retraces (one model called with changing shapes) warns outside such blocks as before."""
    logger, only_that = logging.getLogger("tensorflow"), _FirstTracesOfNewModels()
    logger.addFilter(only_that)
    try:
        yield
    finally:
        logger.removeFilter(only_that)


def measure(graph: DependencyGraph, removed: np.ndarray, pruned: keras.Model, x, *, heads: dict | None = None,
            batch_size: int = 256) -> tuple[float, float]:
    """``(max |pruned(x) - masked original(x)|, max |masked original(x)|)`` over every output."""
    with new_models_traced():
        reference = MaskedRunner(graph, removed, heads=heads)(x, batch_size=batch_size)
        return max_abs_difference(reference, pruned, x, batch_size), float(max(np.abs(r).max() for r in reference))


def differs(difference: float, scale: float) -> bool:
    """More than float round-off: 1e-4 of the outputs' scale (plus 1e-6 for outputs near 0)."""
    return difference > 1e-4 * scale + 1e-6


def self_check(graph: DependencyGraph, removed: np.ndarray, pruned: keras.Model, *, heads: dict | None = None,
               exact: bool = True) -> tuple[float, float] | None:
    """Compare the new model with the masked original on two random inputs. An exact removal that differs is a
    masklab bug (or a layer whose state is neither in its config nor in its weights): RuntimeError, never a
    model that silently computes something else. Returns the measurement (None if inputs can't be made up)."""
    probe = probe_inputs(graph.model)
    if probe is None:
        return None
    difference, scale = measure(graph, removed, pruned, probe, heads=heads)
    if exact and differs(difference, scale):
        custom = sorted({type(rec.layer).__name__ for rec in graph.records.values()
                         if not type(rec.layer).__module__.startswith("keras.")})
        hint = f" Layers of classes outside Keras in this model: {custom}." if custom else ""
        raise RuntimeError(f"internal check failed: the rebuilt model differs from the masked original by "
                           f"{difference:.3g} (outputs up to {scale:.3g}) on random inputs, so it is not returned."
                           f"{hint} A layer whose state is not in its get_config() or weights cannot be rebuilt; "
                           f"otherwise this is a masklab bug: please report it with the model. check=False skips "
                           f"this check.")
    return difference, scale
