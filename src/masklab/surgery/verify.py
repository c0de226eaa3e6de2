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
    """Runs ``graph.model`` eagerly with ``removed`` atoms (bool per atom) zeroed; ``heads``: ``{id(mha layer):
    keep mask over heads}``. ``watch(tensor_id, value)`` is called with every value of the tensors in
    ``watched`` (the criteria measure consumer inputs this way)."""

    def __init__(self, graph: DependencyGraph, removed: np.ndarray | None = None, heads: dict | None = None,
                 watched: set[int] | None = None, watch=None):
        self.graph = graph
        self.removed = np.zeros(len(graph.root), dtype=bool) if removed is None else removed
        self.heads = heads or {}
        self.watched = watched or set()
        self.watch = watch
        self._substitutes: dict[int, object] = {}

    def _substitute(self, op, args, kwargs):
        """A copy of a recurrent layer (or attention layer) with the removed units' (heads') weights zeroed."""
        rec = self.graph.records.get(id(op))
        if rec is None:
            return op
        zero_rows = None
        if getattr(rec.rule, "recurrent", False) and rec.produced is not None and self.removed[rec.produced].any():
            zero_rows = ("recurrent_kernel", np.flatnonzero(self.removed[rec.produced]))
        elif id(op) in self.heads and not self.heads[id(op)].all():
            zero_rows = ("attention_output/kernel", np.flatnonzero(~self.heads[id(op)]))
        if zero_rows is None:
            return op
        if id(op) not in self._substitutes:
            copy = type(op).from_config(op.get_config())
            copy(*args, **kwargs)  # builds it
            weights = named_weights(op)
            for key in weights:
                if key.endswith(zero_rows[0]):
                    weights[key] = weights[key].copy()
                    weights[key][zero_rows[1]] = 0.0
            copy.set_weights([weights[relative_path(v)] for v in op.weights])
            self._substitutes[id(op)] = copy
        return self._substitutes[id(op)]

    def _mask(self, tensor_id: int, value):
        layout = self.graph.layouts.get(tensor_id)
        if layout is not None and self.removed[layout.atoms].any():
            shape = [1] * len(value.shape)
            shape[layout.axis] = len(layout.atoms)
            keep = (~self.removed[layout.atoms]).reshape(shape)
            value = value * keras.ops.cast(keep, value.dtype)
        if tensor_id in self.watched:
            self.watch(tensor_id, value)
        return value

    def _run(self, model, inputs: list) -> list:
        graph = functional_graph(model)
        values = {id(t): self._mask(id(t), keras.ops.convert_to_tensor(v)) for t, v in zip(graph.inputs, inputs)}
        for node in ordered_nodes(graph):
            op = node.operation
            args, kwargs = node.arguments.fill_in(values)
            if is_graph_model(op):
                outputs = self._run(op, [values[id(t)] for t in node.arguments.keras_tensors])
            else:
                outputs = self._substitute(op, args, kwargs)(*args, **kwargs)
            for tensor, value in zip(node.output_tensors, keras.tree.flatten(outputs)):
                values[id(tensor)] = self._mask(id(tensor), value)
        return [values[id(t)] for t in graph.outputs]

    def __call__(self, x, batch_size: int = 256) -> list[np.ndarray]:
        model = self.graph.model
        n = batch_length(x)
        chunks = []
        for start in range(0, n, batch_size):
            part = take(x, start, start + batch_size)
            flat = [part[t._keras_history.operation.name] for t in model.inputs] if isinstance(part, dict) \
                else as_list(part)
            chunks.append([keras.ops.convert_to_numpy(v) for v in self._run(model, flat)])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def max_abs_difference(reference: list[np.ndarray], pruned: keras.Model, x, batch_size: int = 256) -> float:
    """Max |pruned(x) - reference| over every output."""
    result = as_list(pruned.predict(x, verbose=0, batch_size=batch_size))
    return float(max(np.abs(np.asarray(r, np.float64) - np.asarray(p, np.float64)).max()
                     for r, p in zip(reference, result)))
