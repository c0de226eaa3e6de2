"""Building the pruned model: every layer recreated from its (sliced) config, called on the new tensors in the
original graph's order, and given its (sliced) weights. The original model is never touched."""

from __future__ import annotations

import keras
import numpy as np

from masklab.surgery.graph import DependencyGraph, functional_graph, is_graph_model, ordered_nodes
from masklab.surgery.rules.base import weight_array


def relative_path(variable) -> str:
    """A variable's path inside its layer: ``"kernel"``, ``"query/kernel"``, ``"lstm_cell/bias"``."""
    return variable.path.split("/", 1)[1] if "/" in variable.path else variable.name


def _not_rebuildable(op, error) -> ValueError:
    return ValueError(f"layer {op.name!r} ({type(op).__name__}) cannot be rebuilt from its get_config(): "
                      f"{type(error).__name__}: {str(error).strip().splitlines()[0]} masklab rebuilds every layer "
                      f"that holds weights from its config; give the class a complete get_config() (and "
                      f"from_config())")


def _is_preprocessing(layer) -> bool:
    return type(layer).__module__.startswith("keras.src.layers.preprocessing")


def named_weights(layer) -> dict[str, np.ndarray]:
    return {relative_path(v): weight_array(v) for v in layer.weights}


class Builder:
    """Rebuilds a traced model without the ``removed`` atoms (a boolean per atom).

    ``extra_keep``: ``{id(layer): {slot: mask}}`` for removals that are not channels (attention heads)."""

    def __init__(self, graph: DependencyGraph, removed: np.ndarray, extra_keep: dict | None = None):
        self.graph = graph
        self.removed = removed
        self.extra_keep = extra_keep or {}
        self.new_ops: dict[int, object] = {}
        self.weight_pairs: list[tuple] = []   # (original layer, new layer, sliced weights or None)

    def keep(self, op) -> dict[str, np.ndarray]:
        rec = self.graph.records.get(id(op))
        keep = self.graph.keep_masks(self.removed, rec) if rec is not None else {}
        return {**keep, **self.extra_keep.get(id(op), {})}

    def new_op(self, op):
        """The op of the new model standing for ``op``: rebuilt from its (sliced) config when it has weights or
        changes, the original object itself when it is untouched and holds no weights or only preprocessing state
        (lookup tables, adapted statistics: state that config + weights would not carry over)."""
        if id(op) in self.new_ops:
            return self.new_ops[id(op)]
        if is_graph_model(op):
            new = self.model(op)
        else:
            rec = self.graph.records.get(id(op))
            keep = self.keep(op)
            changed = any(not mask.all() for mask in keep.values())
            if not isinstance(op, keras.layers.Layer):  # a keras op on symbolic tensors (x + y, ops.reshape)
                new = type(op).from_config(rec.rule.slice(rec, op.get_config(), {}, keep)[0]) if changed else op
            elif not changed and (not op.weights or (_is_preprocessing(op) and not op.trainable_weights)):
                new = op
            else:
                try:
                    config = op.get_config()
                except Exception as error:
                    raise _not_rebuildable(op, error) from None
                weights = None
                if changed:
                    config, weights = rec.rule.slice(rec, config, named_weights(op), keep)
                try:
                    new = type(op).from_config(config)
                except Exception as error:
                    raise _not_rebuildable(op, error) from None
                if new.name != op.name:
                    new.name = op.name  # a custom layer whose automatic config leaves the name out
                self.weight_pairs.append((op, new, weights))
        self.new_ops[id(op)] = new
        return new

    def new_shape(self, tensor) -> tuple:
        shape = list(tensor.shape)
        layout = self.graph.layouts.get(id(tensor))
        if layout is not None:
            shape[layout.axis] = int((~self.removed[layout.atoms]).sum())
        return tuple(shape)

    def new_input(self, tensor):
        name = tensor._keras_history.operation.name if hasattr(tensor, "_keras_history") else None
        return keras.Input(batch_shape=self.new_shape(tensor), dtype=tensor.dtype, sparse=tensor.sparse, name=name)

    def model(self, model):
        graph = functional_graph(model)
        inputs = [self.new_input(t) for t in graph.inputs]
        if isinstance(model, keras.Sequential):
            return keras.Sequential([inputs[0], *[self.new_op(layer) for layer in model.layers]], name=model.name)
        values = {id(t): new for t, new in zip(graph.inputs, inputs)}
        for node in ordered_nodes(graph):
            args, kwargs = node.arguments.fill_in(values)
            outputs = self.new_op(node.operation)(*args, **kwargs)
            for tensor, value in zip(node.output_tensors, keras.tree.flatten(outputs)):
                values[id(tensor)] = value
        new_inputs = keras.tree.map_structure(lambda t: values[id(t)], model._inputs_struct)
        new_outputs = keras.tree.map_structure(lambda t: values[id(t)], model._outputs_struct)
        return keras.Model(new_inputs, new_outputs, name=model.name)

    def build(self) -> keras.Model:
        new = self.model(self.graph.model)
        for original, layer, sliced in self.weight_pairs:
            if sliced is None:
                layer.set_weights(original.get_weights())
                continue
            arrays = [sliced[relative_path(v)] for v in original.weights]
            for variable, array in zip(layer.weights, arrays):
                if tuple(variable.shape) != tuple(array.shape):
                    raise RuntimeError(f"internal error: sliced {relative_path(variable)} of {original.name!r} has "
                                       f"shape {array.shape}, the new layer expects {tuple(variable.shape)}")
            layer.set_weights(arrays)
        for _, layer, _ in self.weight_pairs:
            if callable(getattr(layer, "finalize_state", None)):
                layer.finalize_state()  # e.g. Normalization: its mean and variance follow from its weights
        return new


def rebuild(graph: DependencyGraph, removed: np.ndarray, extra_keep: dict | None = None) -> keras.Model:
    """The traced model without the removed atoms (and without the heads in ``extra_keep``)."""
    return Builder(graph, removed, extra_keep).build()
