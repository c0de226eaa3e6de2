"""Multiply-accumulate counts per input sample (FLOPs = 2 x MACs), from the layers' static shapes.

Counted: Dense (on any rank), Conv1D/2D/3D (grouped too), Conv*Transpose, DepthwiseConv, SeparableConv,
LSTM/GRU/SimpleRNN and Bidirectional ones (input and recurrent products, every step), MultiHeadAttention (projections, scores, weighted
sum). Not counted: element-wise work (activations, normalization, pooling, merges) and Embedding lookups, as in
the usual MAC counters; a layer with unknown sizes (``None`` in a non-batch axis) raises ValueError.
"""

from __future__ import annotations

import keras
import numpy as np

from masklab.surgery.graph import functional_graph, is_graph_model, ordered_nodes

L = keras.layers


def _size(shape, what: str, layer) -> int:
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(f"count_macs needs fixed input sizes: {what} of layer {layer.name!r} has shape "
                         f"{tuple(shape)}. Build the model with a fixed input shape.")
    return int(np.prod(dims, dtype=np.int64))


def node_macs(node) -> int:
    """Multiply-accumulates of one layer call for one sample."""
    layer = node.operation
    inputs, outputs = node.arguments.keras_tensors, node.output_tensors
    cls = type(layer)
    if cls is L.Dense:
        return _size(outputs[0].shape, "output", layer) * int(layer.kernel.shape[0])
    if cls in (L.Conv1D, L.Conv2D, L.Conv3D):
        return _size(outputs[0].shape, "output", layer) * int(np.prod(layer.kernel.shape[:-1]))
    if cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose):
        return _size(inputs[0].shape, "input", layer) * int(np.prod(layer.kernel.shape[:-1]))
    if cls in (L.DepthwiseConv1D, L.DepthwiseConv2D):
        return _size(outputs[0].shape, "output", layer) * int(np.prod(layer.kernel.shape[:-2]))
    if cls in (L.SeparableConv1D, L.SeparableConv2D):
        positions = _size(outputs[0].shape, "output", layer) // int(layer.filters)
        depthwise = layer.depthwise_kernel.shape
        mid = int(depthwise[-2]) * int(depthwise[-1])
        return positions * mid * (int(np.prod(depthwise[:-2])) + int(layer.filters))
    if cls in (L.LSTM, L.GRU, L.SimpleRNN):
        steps = inputs[0].shape[1]
        if steps is None:
            raise ValueError(f"count_macs needs a fixed sequence length for layer {layer.name!r}")
        kernel, recurrent = layer.cell.kernel.shape, layer.cell.recurrent_kernel.shape
        return int(steps) * (int(np.prod(kernel)) + int(np.prod(recurrent)))
    if cls is L.MultiHeadAttention:
        return _attention_macs(layer, node)
    if cls is L.Bidirectional:
        steps = inputs[0].shape[1]
        if steps is None:
            raise ValueError(f"count_macs needs a fixed sequence length for layer {layer.name!r}")
        return int(steps) * sum(int(np.prod(inner.cell.kernel.shape)) + int(np.prod(inner.cell.recurrent_kernel.shape))
                                for inner in (layer.forward_layer, layer.backward_layer))
    return 0


def _attention_macs(layer, node) -> int:
    import inspect

    bound = inspect.signature(layer.call).bind(*node.arguments.args, **node.arguments.kwargs).arguments
    query, value = bound["query"], bound["value"]
    key = bound.get("key") if bound.get("key") is not None else value
    total = 0
    for tensor, dense in ((query, layer.query_dense), (key, layer.key_dense), (value, layer.value_dense)):
        total += _size(tensor.shape, "input", layer) // int(tensor.shape[-1]) * int(np.prod(dense.kernel.shape))
    q_positions = _size(query.shape, "query", layer) // int(query.shape[-1])
    k_positions = _size(key.shape, "key", layer) // int(key.shape[-1])
    heads, key_dim = layer.query_dense.kernel.shape[-2:]
    value_dim = layer.value_dense.kernel.shape[-1]
    total += int(heads) * q_positions * k_positions * (int(key_dim) + int(value_dim))
    total += q_positions * int(np.prod(layer.output_dense.kernel.shape))
    return total


def layer_macs(model: keras.Model, prefix: str = "") -> dict[str, int]:
    """``{layer path: MACs per sample}`` over every call of every layer, nested models included."""
    counts: dict[str, int] = {}
    for node in ordered_nodes(functional_graph(model)):
        op = node.operation
        if is_graph_model(op):
            for path, value in layer_macs(op, prefix + op.name + "/").items():
                counts[path] = counts.get(path, 0) + value
        elif isinstance(op, keras.layers.Layer):
            counts[prefix + op.name] = counts.get(prefix + op.name, 0) + node_macs(node)
    return counts


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass for one input sample (see the module docstring for what counts)."""
    return int(sum(layer_macs(model).values()))
