"""The guarantee, computed on the ORIGINAL model: its outputs with the removed channels set to 0.

:class:`MaskedRunner` runs the original graph node by node (nested models included) and multiplies every tensor
that carries a removed channel by a 0/1 mask on its channel axis, so every consumer reads 0 there. Recurrent layers
with removed units run with those units' recurrent-kernel rows set to 0 (their hidden state feeds nothing back);
attention heads being removed have their rows of the output projection set to 0. A correct pruned model computes
the same outputs up to float round-off; :func:`max_abs_difference` measures it.
"""

from __future__ import annotations

import keras
import numpy as np

from masklab.surgery.graph import DependencyGraph, functional_graph, is_graph_model, ordered_nodes
from masklab.surgery.rebuild import named_weights, relative_path


def as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def batch_length(x) -> int:
    first = as_list(x)[0] if not isinstance(x, dict) else next(iter(x.values()))
    return len(first)


def take(x, start: int, stop: int):
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [v[start:stop] for v in x]
    return x[start:stop]


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

    def _zeroed_rows(self, op):
        """(weight path suffix, rows to zero) for a recurrent layer losing units or an attention layer losing
        heads; None otherwise."""
        rec = self.graph.records.get(id(op))
        if rec is None:
            return None
        if getattr(rec.rule, "recurrent", False) and rec.produced is not None and self.removed[rec.produced].any():
            return "recurrent_kernel", np.flatnonzero(self.removed[rec.produced])
        if id(op) in self.heads and not self.heads[id(op)].all():
            return "attention_output/kernel", np.flatnonzero(~self.heads[id(op)])
        return None

    def _substitute(self, op, args, kwargs):
        """A copy of a recurrent layer (or attention layer) with the removed units' (heads') weights zeroed."""
        zero_rows = self._zeroed_rows(op)
        if zero_rows is None:
            return op
        if id(op) not in self._substitutes:
            copy = type(op).from_config(op.get_config())
            copy(*args, **kwargs)  # builds it (eagerly: see _build_substitutes)
            weights = named_weights(op)
            for key in weights:
                if key.endswith(zero_rows[0]):
                    weights[key] = weights[key].copy()
                    weights[key][zero_rows[1]] = 0.0
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
        values = {id(t): self._mask(id(t), keras.ops.convert_to_tensor(v), stats)
                  for t, v in zip(graph.inputs, inputs)}
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
            if any(self._zeroed_rows(node_op) is not None for node_op in self._operations()):
                self._forward(*[v[:1] for v in first_inputs])  # build the substitute layers eagerly, once
            if keras.config.backend() == "tensorflow":
                import tensorflow as tf

                self._compiled = tf.function(self._forward, reduce_retracing=True, autograph=False)
            else:
                self._compiled = self._forward
        return self._compiled

    def _operations(self):
        return [rec.layer for rec in self.graph.records.values()]

    def _chunks(self, x, batch_size: int):
        model = self.graph.model
        for start in range(0, batch_length(x), batch_size):
            part = take(x, start, start + batch_size)
            flat = [part[t._keras_history.operation.name] for t in model.inputs] if isinstance(part, dict) \
                else as_list(part)
            yield [keras.ops.convert_to_tensor(np.asarray(v)) for v in flat]

    def __call__(self, x, batch_size: int = 256) -> list[np.ndarray]:
        """The model's outputs on ``x`` (a list, one array per output)."""
        chunks = []
        for inputs in self._chunks(x, batch_size):
            outputs, _ = self._function(inputs)(*inputs)
            chunks.append([keras.ops.convert_to_numpy(v) for v in outputs])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]

    def statistics(self, x, batch_size: int = 256) -> dict[int, np.ndarray]:
        """``{tensor id: (4, channels) array}`` of sum, sum of |value|, zeros and count per channel on ``x``."""
        totals: dict[int, np.ndarray] = {}
        for inputs in self._chunks(x, batch_size):
            _, stats = self._function(inputs)(*inputs)
            for tensor_id, values in zip(self.watched, stats):
                array = np.stack([np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in values])
                totals[tensor_id] = totals.get(tensor_id, 0) + array
        return totals


def max_abs_difference(reference: list[np.ndarray], pruned: keras.Model, x, batch_size: int = 256) -> float:
    """Max |pruned(x) - reference| over every output."""
    result = as_list(pruned.predict(x, verbose=0, batch_size=batch_size))
    return float(max(np.abs(np.asarray(r, np.float64) - np.asarray(p, np.float64)).max()
                     for r, p in zip(reference, result)))
