"""Rules for layers that create their own output channels (and read channels as consumers): Dense, convolutions,
Embedding, recurrent layers and their Bidirectional wrapper, MultiHeadAttention."""

from __future__ import annotations

import inspect

import keras
import numpy as np

from masklab.surgery.graph import Layout
from masklab.surgery.rules.base import (ELEMENTWISE_ACTIVATIONS, Rule, _block_extra_tensors, _bool_index,
                                        _channel_axis, _describe, _first_tensor, _label, weight_array, _rank,
                                        activation_reason)

L = keras.layers


# --- producers --------------------------------------------------------------------------------------------------
class ProducerRule(Rule):
    """A layer that creates its own output channels from the channels it reads (a consumer)."""

    producer = True

    def consume(self, tr, rec, tensor, axis: int, slot: str = "in", blocks: int = 1):
        """Record the input channels the layer reads along ``axis``; channels on another axis are refused."""
        layout = tr.layout(tensor)
        if layout is not None and layout.axis != axis:
            tr.block(layout.atoms, f"{_describe(rec)} reads axis {axis} of its input, but the channels sit on axis "
                                   f"{layout.axis}")
            layout = None
        if layout is None:
            tr.fixed_slot(rec, slot, tensor.shape[axis], _label(tensor))
            return None
        tr.slot(rec, slot, layout.atoms, blocks=blocks)
        tr.consumes(tensor, layout)
        return layout

    def trace_filters(self, tr, node, layer, rec, groups: int = 1):
        """A convolution-like layer: reads the channel axis of its data format, produces ``layer.filters``
        channels there (``groups`` > 1: as many removed from each group, on both sides)."""
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        rank = _rank(tensor)
        axis = _channel_axis(layer.data_format, rank)
        self.consume(tr, rec, tensor, axis, blocks=groups)
        out = tr.produce(rec, int(layer.filters))
        if groups > 1:
            rec.blocks["out"] = groups
        out_layout = Layout(axis, out)
        reason = activation_reason(layer.activation, rec, out_layout, rank)
        if reason:
            tr.block(out, reason)
        return [out_layout]

    def output_weights(self, layer) -> np.ndarray:
        raise NotImplementedError


class DenseRule(ProducerRule):
    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        rank = _rank(tensor)
        if getattr(layer, "quantization_mode", None):
            if tr.layout(tensor) is not None:
                tr.block(tr.layout(tensor).atoms, f"{_describe(rec)} is quantized; masklab does not slice "
                                                  f"quantized kernels")
            return [None]
        self.consume(tr, rec, tensor, rank - 1)
        out = tr.produce(rec, int(layer.units))
        layout = Layout(rank - 1, out)
        reason = activation_reason(layer.activation, rec, layout, rank)
        if reason:
            tr.block(out, reason)
        return [layout]

    def slice(self, rec, config, weights, keep):
        rows = _bool_index(keep["in"]) if "in" in keep else slice(None)
        cols = _bool_index(keep["out"])
        new = {}
        for key, value in weights.items():
            name = key.split("/")[-1]
            if name == "kernel":
                value = value[rows][:, cols]
            elif name == "bias":
                value = value[cols]
            elif name == "lora_kernel_a":
                value = value[rows]
            elif name == "lora_kernel_b":
                value = value[:, cols]
            new[key] = value
        return {**config, "units": int(cols.size)}, new

    def output_weights(self, layer):
        return weight_array(layer.kernel).T


class ConvRule(ProducerRule):
    """Conv1D/2D/3D, grouped ones included. A grouped conv whose groups read one input channel each (a
    depthwise conv written as ``Conv2D(groups=C)``, as in ConvNeXt) ties its outputs to its inputs; other
    grouped convs need the same number of channels removed in each group."""

    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        rank = _rank(tensor)
        axis = _channel_axis(layer.data_format, rank)
        groups, filters = int(getattr(layer, "groups", 1) or 1), int(layer.filters)
        in_channels = tensor.shape[axis]
        layout = tr.layout(tensor)
        if groups > 1 and in_channels == groups and layout is not None and layout.axis == axis:
            # depthwise-like: output filter k*b + j reads input channel k only
            rec.extra["depthwise"] = True
            tr.slot(rec, "channels", layout.atoms)
            out = np.repeat(layout.atoms, filters // groups)
            out_layout = Layout(axis, out)
            reason = activation_reason(layer.activation, rec, out_layout, rank)
            if reason:
                tr.block(out, reason)
            return [out_layout]
        return self.trace_filters(tr, node, layer, rec, groups=groups)

    def slice(self, rec, config, weights, keep):
        groups = int(config.get("groups", 1) or 1)
        new = dict(weights)
        kernel_key = next(k for k in weights if k.split("/")[-1] == "kernel")
        bias_key = next((k for k in weights if k.split("/")[-1] == "bias"), None)
        kernel = weights[kernel_key]
        if "channels" in keep:  # depthwise-like grouped conv: drop whole groups
            kept_groups = _bool_index(keep["channels"])
            per_group = kernel.shape[-1] // groups
            new[kernel_key] = kernel.reshape(*kernel.shape[:-1], groups, per_group)[..., kept_groups, :].reshape(
                *kernel.shape[:-1], kept_groups.size * per_group)
            if bias_key:
                new[bias_key] = weights[bias_key].reshape(groups, per_group)[kept_groups].ravel()
            return {**config, "groups": int(kept_groups.size), "filters": int(kept_groups.size * per_group)}, new
        keep_out = keep["out"]
        keep_in = keep.get("in", np.ones(kernel.shape[-2] * groups, dtype=bool))
        if groups == 1:
            kernel = kernel[..., _bool_index(keep_in), :][..., _bool_index(keep_out)]
        else:
            in_blocks, out_blocks = keep_in.reshape(groups, -1), keep_out.reshape(groups, -1)
            per_out = kernel.shape[-1] // groups
            kernel = np.concatenate([kernel[..., _bool_index(in_blocks[g]), g * per_out:(g + 1) * per_out]
                                     [..., _bool_index(out_blocks[g])] for g in range(groups)], axis=-1)
        new[kernel_key] = kernel
        if bias_key:
            new[bias_key] = weights[bias_key][_bool_index(keep_out)]
        return {**config, "filters": int(keep_out.sum())}, new

    def output_weights(self, layer):
        kernel = weight_array(layer.kernel)
        return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


class ConvTransposeRule(ConvRule):
    """Conv1D/2D/3DTranspose: kernel ``(*window, filters, in_channels)``."""

    def trace(self, tr, node, layer, rec):
        return self.trace_filters(tr, node, layer, rec)

    def slice(self, rec, config, weights, keep):
        new = dict(weights)
        for key, value in weights.items():
            name = key.split("/")[-1]
            if name == "kernel":
                if "in" in keep:
                    value = value[..., _bool_index(keep["in"])]
                new[key] = value[..., _bool_index(keep["out"]), :]
            elif name == "bias":
                new[key] = value[_bool_index(keep["out"])]
        return {**config, "filters": int(keep["out"].sum())}, new

    def output_weights(self, layer):
        kernel = weight_array(layer.kernel)
        return np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1)


class SeparableRule(ProducerRule):
    """SeparableConv1D/2D: a depthwise kernel per input channel, then a pointwise kernel that produces filters."""

    def trace(self, tr, node, layer, rec):
        return self.trace_filters(tr, node, layer, rec)

    def slice(self, rec, config, weights, keep):
        multiplier = int(config["depth_multiplier"])
        keep_out = _bool_index(keep["out"])
        new = {}
        for key, value in weights.items():
            name = key.split("/")[-1]
            if name == "depthwise_kernel" and "in" in keep:
                value = value[..., _bool_index(keep["in"]), :]
            elif name == "pointwise_kernel":
                if "in" in keep:
                    value = value[..., _bool_index(np.repeat(keep["in"], multiplier)), :]
                value = value[..., keep_out]
            elif name == "bias":
                value = value[keep_out]
            new[key] = value
        return {**config, "filters": int(keep_out.size)}, new

    def output_weights(self, layer):
        kernel = weight_array(layer.pointwise_kernel)
        return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


class EmbeddingRule(ProducerRule):
    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        if tr.layout(tensor) is not None:
            tr.block(tr.layout(tensor).atoms, f"{_describe(rec)} reads them as token ids")
        out = tr.produce(rec, int(layer.output_dim))
        return [Layout(_rank(node.output_tensors[0]) - 1, out)]

    def slice(self, rec, config, weights, keep):
        cols = _bool_index(keep["out"])
        new = {k: (v[:, cols] if k.split("/")[-1] in ("embeddings", "lora_embeddings_b") else v)
               for k, v in weights.items()}
        return {**config, "output_dim": int(cols.size)}, new

    def output_weights(self, layer):
        return weight_array(layer.embeddings).T


class RecurrentRule(ProducerRule):
    """LSTM / GRU / SimpleRNN units. Removing unit j means: the original computed with unit j's hidden state set
    to 0 at every step, in its output and in the recurrence (so it feeds nothing back into the other units).
    Kernel columns of every gate, recurrent kernel rows and columns, and bias entries of unit j go."""

    recurrent = True
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}

    def trace(self, tr, node, layer, rec):
        bound = inspect.signature(layer.call).bind(*node.arguments.args, **node.arguments.kwargs).arguments
        sequences = bound.get("sequences")
        rank = _rank(sequences)
        out = tr.produce(rec, int(layer.units))
        if layer.stateful:
            tr.block(out, f"{_describe(rec)} is stateful (its stored states have the old number of units)")
        for fn in (getattr(layer.cell, "activation", None), getattr(layer.cell, "recurrent_activation", None)):
            if fn is not None and getattr(fn, "__name__", None) not in ELEMENTWISE_ACTIVATIONS:
                tr.block(out, f"{_describe(rec)} uses activation {fn!r}, not known to act value by value")
        self.consume(tr, rec, sequences, rank - 1)
        states = bound.get("initial_state")
        for state in ([] if states is None else _as_flat(states)):
            layout = tr.layout(state)
            if layout is not None and layout.axis == 1 and len(layout.atoms) == len(out):
                tr.tie(out, layout.atoms)
            else:
                tr.block(out if layout is None else np.concatenate([out, layout.atoms]),
                         f"{_describe(rec)} starts from an initial state whose channels cannot follow its units")
        _block_extra_tensors(tr, node, [sequences, *([] if states is None else _as_flat(states))], rec)
        outputs = [Layout(2 if layer.return_sequences else 1, out)]
        if layer.return_state:
            outputs += [Layout(1, out)] * (len(node.output_tensors) - 1)
        return outputs

    def slice(self, rec, config, weights, keep):
        gates = self.gates[type(rec.layer).__name__]
        return {**config, "units": int(keep["out"].sum())}, slice_recurrent(weights, gates, keep.get("in"),
                                                                             keep["out"])

    def output_weights(self, layer):
        gates = self.gates[type(layer).__name__]
        units = int(layer.units)
        kernel = weight_array(layer.cell.kernel).reshape(-1, gates, units)
        recurrent = weight_array(layer.cell.recurrent_kernel).reshape(-1, gates, units)
        return np.concatenate([kernel, recurrent]).transpose(2, 0, 1).reshape(units, -1)


def slice_recurrent(weights: dict, gates: int, keep_in, keep_out) -> dict:
    """An RNN cell's weights without the removed input rows and units (every gate's columns of unit j, and the
    recurrent kernel's row j)."""
    gate_cols = _bool_index(np.tile(keep_out, gates))
    new = {}
    for key, value in weights.items():
        name = key.split("/")[-1]
        if name == "kernel":
            if keep_in is not None:
                value = value[_bool_index(keep_in)]
            value = value[:, gate_cols]
        elif name == "recurrent_kernel":
            value = value[_bool_index(keep_out)][:, gate_cols]
        elif name == "bias":
            value = value[..., gate_cols]
        new[key] = value
    return new


class BidirectionalRule(ProducerRule):
    """Bidirectional(LSTM / GRU / SimpleRNN): both directions read the input; with ``merge_mode="concat"`` (or
    None) the output holds the forward units then the backward units, each removable, as many from each direction
    (Keras sizes the output as twice the forward layer); with ``"sum"`` / ``"ave"`` / ``"mul"`` forward unit j and
    backward unit j are combined, so they go together. Same semantics as a recurrent
    layer: a removed unit's hidden state is 0 at every step, in each direction's recurrence too."""

    recurrent = True

    def trace(self, tr, node, layer, rec):
        bound = inspect.signature(layer.call).bind(*node.arguments.args, **node.arguments.kwargs).arguments
        sequences = bound.get("sequences")
        forward, backward = layer.forward_layer, layer.backward_layer
        units_f, units_b = int(forward.units), int(backward.units)
        combined = layer.merge_mode in ("sum", "ave", "mul")
        out = tr.produce(rec, units_f if combined else units_f + units_b)
        reasons = []
        for inner in (forward, backward):
            if type(inner) not in (L.LSTM, L.GRU, L.SimpleRNN):
                reasons.append(f"wraps {type(inner).__name__}, not an LSTM / GRU / SimpleRNN")
            elif inner.stateful:
                reasons.append("is stateful")
        if layer.return_state or bound.get("initial_state") is not None:
            reasons.append("returns or takes states")
        for reason in reasons:
            tr.block(out, f"{_describe(rec)} {reason}")
        self.consume(tr, rec, sequences, _rank(sequences) - 1)
        _block_extra_tensors(tr, node, [sequences], rec)
        rec.extra["combined"] = combined
        if not combined:  # Keras sizes the output as twice the forward layer: both directions keep as many units
            rec.blocks["out"] = 2
        axis = 2 if layer.return_sequences else 1
        if layer.merge_mode is None:
            return [Layout(axis, out[:units_f]), Layout(axis, out[units_f:])]
        return [Layout(axis, out)]

    def direction_keeps(self, rec, keep_out):
        """Keep masks of the forward and the backward units."""
        if rec.extra["combined"]:
            return keep_out, keep_out
        units_f = int(rec.layer.forward_layer.units)
        return keep_out[:units_f], keep_out[units_f:]

    def slice(self, rec, config, weights, keep):
        layer = rec.layer
        keeps = self.direction_keeps(rec, keep["out"])
        config = {**config, "layer": _with_units(config["layer"], keeps[0]),
                  "backward_layer": _with_units(config["backward_layer"], keeps[1])}
        new = {}
        for inner, keep_out in zip((layer.forward_layer, layer.backward_layer), keeps):
            prefix = inner.name + "/"
            part = {k: v for k, v in weights.items() if k.startswith(prefix)}
            new.update(slice_recurrent(part, RecurrentRule.gates[type(inner).__name__], keep.get("in"), keep_out))
        return config, new

    def zeroed_rows(self, rec, removed_out) -> list[tuple[str, np.ndarray]]:
        """(relative weight path, rows) of each direction's recurrent kernel to zero for the masked reference."""
        rows = []
        for inner, removed in zip((rec.layer.forward_layer, rec.layer.backward_layer),
                                  self.direction_keeps(rec, removed_out)):
            cell = inner.cell.name
            rows.append((f"{inner.name}/{cell}/recurrent_kernel", np.flatnonzero(removed)))
        return rows

    def output_weights(self, layer):
        directions = [RecurrentRule().output_weights(inner) for inner in (layer.forward_layer, layer.backward_layer)]
        if layer.merge_mode in ("sum", "ave", "mul"):
            return np.concatenate(directions, axis=1)
        return np.concatenate(directions, axis=0)


def _with_units(serialized: dict, keep: np.ndarray) -> dict:
    """A serialized inner layer with fewer units, and without its build config (built on the old input width)."""
    serialized = {k: v for k, v in serialized.items() if k != "build_config"}
    return {**serialized, "config": {**serialized["config"], "units": int(keep.sum())}}


def _as_flat(value) -> list:
    return [v for v in keras.tree.flatten(value) if v is not None]


class AttentionRule(ProducerRule):
    """MultiHeadAttention: query / key / value projections read the input channels (kernel rows); the output
    projection produces the output channels. Heads are removed by :func:`masklab.surgery.remove_heads`."""

    def trace(self, tr, node, layer, rec):
        bound = inspect.signature(layer.call).bind(*node.arguments.args, **node.arguments.kwargs).arguments
        query, value = bound.get("query"), bound.get("value")
        key = bound.get("key") if bound.get("key") is not None else value
        if bound.get("return_attention_scores"):
            rec.extra["returns_scores"] = True
        output_shape = layer._output_shape if hasattr(layer, "_output_shape") else None
        if getattr(layer, "_use_gate", False) or getattr(layer, "use_gate", False):
            for tensor in (query, key, value):
                if tr.layout(tensor) is not None:
                    tr.block(tr.layout(tensor).atoms, f"{_describe(rec)} has a gate, which masklab does not slice")
            return [None]
        for tensor, slot in ((query, "query"), (value, "value"), (key, "key")):
            self.consume(tr, rec, tensor, _rank(tensor) - 1, slot=slot)
        _block_extra_tensors(tr, node, [query, key, value], rec, role="an attention mask")
        out_tensor = node.output_tensors[0]
        out = tr.produce(rec, int(out_tensor.shape[-1]))
        if output_shape is not None and np.size(output_shape) > 1:
            tr.block(out, f"{_describe(rec)} has a multi-axis output_shape {output_shape}")
        return [Layout(_rank(out_tensor) - 1, out)]

    def slice(self, rec, config, weights, keep):
        keep_heads = keep.get("heads")
        heads = _bool_index(keep_heads) if keep_heads is not None else slice(None)
        new = {}
        for key, value in weights.items():
            part, name = key.split("/")[-2], key.split("/")[-1]
            if part in ("query", "key", "value"):
                if name == "kernel":
                    if part in keep:
                        value = value[_bool_index(keep[part])]
                    value = value[:, heads]
                else:
                    value = value[heads]
            elif part == "attention_output":
                if name == "kernel":
                    value = value[heads][..., _bool_index(keep["out"])]
                else:
                    value = value[_bool_index(keep["out"])]
            new[key] = value
        config = dict(config)
        if keep_heads is not None:
            config["num_heads"] = int(keep_heads.sum())
        config["output_shape"] = int(keep["out"].sum())  # explicit: the query's width may change
        return config, new

    def output_weights(self, layer):
        kernel = weight_array(layer.output_dense.kernel)
        return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


