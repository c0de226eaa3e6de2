"""Rules for layers that pass channels on: channel-wise layers (activations, dropout, pooling, padding), layers
with one weight per channel (BatchNorm, PReLU, LayerScale, depthwise convolutions), layers that move the channel
axis (Flatten, Reshape, Permute) and layers that combine tensors (merges, Concatenate), as Keras layers and as
``keras.ops`` on symbolic tensors."""

from __future__ import annotations

import keras
import numpy as np

from masklab.surgery.graph import Layout
from masklab.surgery.rules.base import (ChannelwiseRule, Rule, _axes, _block_extra_tensors, _bool_index,
                                        _channel_axis, _describe, _first_tensor, _label, _rank, activation_reason)


class ActivationRule(ChannelwiseRule):
    def reason(self, tr, layer, rec, layout, rank):
        return activation_reason(layer.activation, rec, layout, rank)


class AxisRule(ChannelwiseRule):
    """Softmax / UnitNormalization: mix the values along ``axis``; fine when that is not the channel axis."""

    def reason(self, tr, layer, rec, layout, rank):
        if layout.axis in _axes(layer.axis, rank):
            return (f"{_describe(rec)} normalizes over the channel axis: every output depends on all channels, "
                    f"so removing one changes the others")
        return None


class SpatialRule(ChannelwiseRule):
    """Pooling, padding, cropping, upsampling: act on the spatial axes of their data format."""

    def reason(self, tr, layer, rec, layout, rank):
        channel_axis = _channel_axis(getattr(layer, "data_format", None), rank)
        if layout.axis != channel_axis:
            return (f"{_describe(rec)} (data_format={layer.data_format!r}) treats axis {layout.axis}, where the "
                    f"channels are, as a spatial axis")
        return None


class GlobalPoolingRule(SpatialRule):
    def output_layout(self, layout, out_tensor, layer):
        return layout if layer.keepdims else Layout(1, layout.atoms)


class PerChannelRule(ChannelwiseRule):
    """A layer with one weight per channel (sliced along the channel axis)."""

    per_channel = True

    variables: tuple[str, ...] | None = None   # the per-channel variables by name; None: every variable

    def on_channels(self, tr, rec, layout, tensor):
        tr.slot(rec, "channels", layout.atoms)

    def slice(self, rec, config, weights, keep):
        index = _bool_index(keep["channels"])
        return config, {k: (v[..., index] if self.variables is None or k.split("/")[-1] in self.variables else v)
                        for k, v in weights.items()}


class BatchNormRule(PerChannelRule):
    variables = ("gamma", "beta", "moving_mean", "moving_variance")

    def reason(self, tr, layer, rec, layout, rank):
        if _axes(layer.axis, rank) != [layout.axis]:
            return (f"{_describe(rec)} normalizes per axis {layer.axis}, not per channel (axis {layout.axis}): its "
                    f"statistics mix channels")
        return None


class NormalizationRule(PerChannelRule):
    """LayerNormalization / GroupNormalization over the channel axis: never exact (their mean and variance
    change when a channel goes). With ``exact=False`` their scale and offset are sliced and the model is
    reported as approximate."""

    variables = ("gamma", "beta")

    def axes(self, layer, rank):
        return _axes(layer.axis, rank)

    def reason(self, tr, layer, rec, layout, rank):
        if layout.axis not in self.axes(layer, rank):
            return None  # normalizes over other axes: each channel separately
        if tr.exact:
            return (f"{_describe(rec)} normalizes over the channel axis: its mean and variance change when a "
                    f"channel is removed, so no removal is exact (exact=False prunes its scale and offset "
                    f"anyway and reports the measured difference)")
        if len(self.axes(layer, rank)) > 1 and layout.axis != max(self.axes(layer, rank)):
            return f"{_describe(rec)} normalizes over several axes; exact=False handles the channel axis last only"
        return None

    def on_channels(self, tr, rec, layout, tensor):
        if layout.axis in self.axes(rec.layer, _rank(tensor)):
            tr.slot(rec, "channels", layout.atoms)
            tr.inexact[rec.path] = f"{type(rec.layer).__name__}: scale and offset sliced; statistics over fewer channels"


class GroupNormRule(NormalizationRule):
    def on_channels(self, tr, rec, layout, tensor):
        if layout.axis in self.axes(rec.layer, _rank(tensor)):
            tr.slot(rec, "channels", layout.atoms, blocks=int(rec.layer.groups))
            tr.inexact[rec.path] = "GroupNormalization: scale and offset sliced; statistics over fewer channels"


class PReLURule(ChannelwiseRule):
    """PReLU: ``alpha`` has the input's shape with shared axes set to 1; sliced when it varies per channel."""

    def on_channels(self, tr, rec, layout, tensor):
        if rec.layer.alpha.shape[layout.axis - 1] != 1:
            tr.slot(rec, "channels", layout.atoms)
            rec.extra["alpha_axis"] = layout.axis - 1

    def slice(self, rec, config, weights, keep):
        if "channels" not in keep:
            return config, weights
        index = _bool_index(keep["channels"])
        axis = rec.extra["alpha_axis"]
        return config, {k: (np.take(v, index, axis=axis) if k.split("/")[-1] == "alpha" else v)
                        for k, v in weights.items()}


class DropoutRule(ChannelwiseRule):
    """Dropout and its kin: element-wise; a ``noise_shape`` that names the channel count is updated."""

    def on_channels(self, tr, rec, layout, tensor):
        noise_shape = getattr(rec.layer, "noise_shape", None)
        if noise_shape is not None and noise_shape[layout.axis] not in (None, 1):
            tr.slot(rec, "channels", layout.atoms)
            rec.extra["noise_axis"] = layout.axis

    def slice(self, rec, config, weights, keep):
        if "channels" not in keep:
            return config, weights
        noise_shape = list(config["noise_shape"])
        noise_shape[rec.extra["noise_axis"]] = int(keep["channels"].sum())
        return {**config, "noise_shape": tuple(noise_shape)}, weights


class RescalingRule(ChannelwiseRule):
    def reason(self, tr, layer, rec, layout, rank):
        if np.size(layer.scale) > 1 or np.size(layer.offset) > 1:
            return f"{_describe(rec)} has one scale or offset per channel"
        return None


class NeuronMaskRule(PerChannelRule):
    """masklab's NeuronMask: its stored KEEP mask (and ``initial_mask`` config) are sliced."""

    variables = ("mask",)

    def trace(self, tr, node, layer, rec):
        inputs = node.arguments.args[0]
        if not isinstance(inputs, (list, tuple)):
            return super().trace(tr, node, layer, rec)
        # NeuronMask()([h, masks]) is h * masks: the mask input's channels are tied to h's
        out = tie_elementwise(tr, rec, list(inputs), node.output_tensors[0])
        if out is not None:
            tr.slot(rec, "channels", out.atoms)
        return [out]

    def slice(self, rec, config, weights, keep):
        config, weights = super().slice(rec, config, weights, keep)
        if config.get("initial_mask") is not None:
            config = {**config, "initial_mask": np.asarray(config["initial_mask"])[keep["channels"]].tolist()}
        return config, weights


class LayerScaleRule(PerChannelRule):
    """keras.applications' ConvNeXt LayerScale: ``x * gamma`` with ``gamma`` (its one, unnamed variable) of shape
    (projection_dim,)."""

    def slice(self, rec, config, weights, keep):
        config, weights = super().slice(rec, config, weights, keep)
        return {**config, "projection_dim": int(keep["channels"].sum())}, weights


class DepthwiseRule(ChannelwiseRule):
    """DepthwiseConv1D/2D: output channel ``c * m + j`` reads input channel c only (m = depth_multiplier), so
    its inputs and outputs are tied: removing input channel c removes its m outputs."""

    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        layout = tr.layout(tensor)
        rank = _rank(tensor)
        if layout is None:
            return [None]
        axis = _channel_axis(layer.data_format, rank)
        if layout.axis != axis:
            tr.block(layout.atoms, f"{_describe(rec)} reads axis {axis}, but the channels sit on axis {layout.axis}")
            return [None]
        tr.slot(rec, "channels", layout.atoms)
        out = np.repeat(layout.atoms, int(layer.depth_multiplier))
        reason = activation_reason(layer.activation, rec, Layout(axis, out), rank)
        if reason:
            tr.block(out, reason)
        return [Layout(axis, out)]

    def slice(self, rec, config, weights, keep):
        index = _bool_index(keep["channels"])
        new = {}
        for key, value in weights.items():
            name = key.split("/")[-1]
            if name == "kernel":
                value = value[..., index, :]
            elif name == "bias":
                value = value.reshape(keep["channels"].size, -1)[index].ravel()
            new[key] = value
        return config, new


# --- layers that move the channel axis --------------------------------------------------------------------------
def remap(tr, rec, tensor, layout: Layout, move) -> Layout | None:
    """Follow the channel positions through an index movement ``move`` (a NumPy reshape / transpose of the
    input's non-batch shape). The output's channel axis is the one axis along which the positions vary;
    if they vary along several (the channel axis was split), the channels are refused."""
    shape = tuple(tensor.shape[1:])
    if any(d is None for d in shape):
        tr.block(layout.atoms, f"{_describe(rec)} needs a known input shape to follow the channels. Received: "
                               f"{(None, *shape)}")
        return None
    view = [1] * len(shape)
    view[layout.axis - 1] = len(layout.atoms)
    positions = np.broadcast_to(np.arange(len(layout.atoms)).reshape(view), shape)
    moved = np.asarray(move(positions))
    candidates = []
    for axis in range(moved.ndim):
        flat = np.moveaxis(moved, axis, 0).reshape(moved.shape[axis], -1)
        if (flat == flat[:, :1]).all():
            candidates.append((moved.shape[axis] > 1, axis, flat[:, 0]))
    if not candidates:
        tr.block(layout.atoms, f"{_describe(rec)} spreads each channel over several output axes (it splits or "
                               f"interleaves the channel axis): channels cannot be removed one at a time")
        return None
    _, axis, positions_on_axis = max(candidates, key=lambda c: (c[0], c[1]))
    rec.extra["out_axis"] = axis + 1
    return Layout(axis + 1, layout.atoms[positions_on_axis])


class FlattenRule(ChannelwiseRule):
    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        layout = tr.layout(tensor)
        if layout is None:
            return [None]

        def move(positions):
            if layer.data_format == "channels_first" and positions.ndim > 1:
                positions = np.moveaxis(positions, 0, -1)  # Keras moves channels last before flattening
            return positions.reshape(-1)

        return [remap(tr, rec, tensor, layout, move)]


class ReshapeRule(ChannelwiseRule):
    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        layout = tr.layout(tensor)
        if layout is None:
            return [None]
        out = remap(tr, rec, tensor, layout, lambda p: p.reshape(tuple(node.output_tensors[0].shape[1:])))
        if out is not None:
            tr.slot(rec, "out", out.atoms)
        return [out]

    def slice(self, rec, config, weights, keep):
        target = list(config["target_shape"])
        axis = rec.extra["out_axis"] - 1
        if target[axis] != -1:
            target[axis] = int(keep["out"].sum())
        return {**config, "target_shape": tuple(target)}, weights


class PermuteRule(ChannelwiseRule):
    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        layout = tr.layout(tensor)
        if layout is None:
            return [None]
        new_axis = list(layer.dims).index(layout.axis) + 1
        return [Layout(new_axis, layout.atoms)]


class RepeatVectorRule(ChannelwiseRule):
    def output_layout(self, layout, out_tensor, layer):
        return Layout(2, layout.atoms)


class MergeRule(Rule):
    """Element-wise merges (Add, Subtract, Multiply, Average, Maximum, Minimum; ``x + y``): channel j of every
    operand meets channel j of the others, so they are tied; an operand broadcast over the channel axis, a
    tensor whose channels cannot shrink, or a constant with one value per channel blocks them."""

    def operands(self, node):
        args = node.arguments.args
        return list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)

    def trace(self, tr, node, layer, rec):
        return [tie_elementwise(tr, rec, self.operands(node), node.output_tensors[0])]


def tie_elementwise(tr, rec, operands, out_tensor) -> Layout | None:
    out_rank = _rank(out_tensor)
    reference = None
    for operand in operands:
        layout = tr.layout(operand)
        if layout is not None:
            out_axis = out_rank - (_rank(operand) - layout.axis)
            if 0 < out_axis < out_rank and out_tensor.shape[out_axis] == len(layout.atoms):
                reference = Layout(out_axis, layout.atoms)
                break
    if reference is None:
        for operand in operands:
            if tr.layout(operand) is not None:
                tr.block(tr.layout(operand).atoms, f"{_describe(rec)} broadcasts them over a larger channel axis")
        return None
    size, from_end = len(reference.atoms), out_rank - reference.axis
    for operand in operands:
        if isinstance(operand, keras.KerasTensor):
            layout, axis = tr.layout(operand), _rank(operand) - from_end
            operand_size = operand.shape[axis] if 0 < axis < _rank(operand) else 1
            if layout is not None:
                if layout.axis != axis:
                    tr.block(np.concatenate([layout.atoms, reference.atoms]),
                             f"{_describe(rec)} lines up channels that sit on different axes of its operands")
                elif len(layout.atoms) == size:
                    tr.tie(reference.atoms, layout.atoms)
                else:
                    tr.block(layout.atoms, f"{_describe(rec)} broadcasts one channel over {size}")
            elif operand_size == size and size > 1:
                tr.block(reference.atoms, f"{_describe(rec)} combines them channel by channel with "
                                          f"{_label(operand)}, whose channels cannot be removed")
        elif np.ndim(operand) >= from_end and np.shape(operand)[np.ndim(operand) - from_end] == size and size > 1:
            tr.block(reference.atoms, f"{_describe(rec)} combines them with a constant holding one value per "
                                      f"channel")
    return reference


class ConcatenateRule(Rule):
    """Along the channel axis: the output's channels are the inputs' channels one after the other (offsets
    follow). Along another axis: channel j of every input lands in channel j of the output, so they are tied."""

    def operands_and_axis(self, node, layer):
        return list(node.arguments.args[0]), layer.axis

    def trace(self, tr, node, layer, rec):
        operands, axis = self.operands_and_axis(node, layer)
        out = node.output_tensors[0]
        axis = axis % _rank(out)
        layouts = [tr.layout(t) for t in operands]
        if all(layout is None for layout in layouts):
            return [None]
        if any(layout is not None and layout.axis == axis for layout in layouts):
            parts = []
            for tensor, layout in zip(operands, layouts):
                if layout is not None and layout.axis == axis:
                    parts.append(layout.atoms)
                    continue
                if layout is not None:
                    tr.block(layout.atoms, f"{_describe(rec)} joins them along axis {axis}, not their channel axis "
                                           f"{layout.axis}")
                parts.append(tr.fixed(int(tensor.shape[axis]), f"channels of {_label(tensor)} (concatenated by "
                                                               f"{_describe(rec)}) cannot be removed"))
            return [Layout(axis, np.concatenate(parts))]
        reference = next(layout for layout in layouts if layout is not None)
        for tensor, layout in zip(operands, layouts):
            if layout is None or layout.axis != reference.axis or len(layout.atoms) != len(reference.atoms):
                tr.block(reference.atoms if layout is None else np.concatenate([layout.atoms, reference.atoms]),
                         f"{_describe(rec)} stacks them along axis {axis} with channels that cannot follow")
            else:
                tr.tie(reference.atoms, layout.atoms)
        return [reference]


# --- keras.ops on symbolic tensors ------------------------------------------------------------------------------
class OpMergeRule(MergeRule):
    """``x + y``, ``keras.ops.multiply(x, g)``, ... (operands may be Python or NumPy constants)."""

    def trace(self, tr, node, layer, rec):
        operands = list(node.arguments.args)
        if type(layer).__name__ in ("Divide", "TrueDivide") and len(operands) == 2 \
                and tr.layout(operands[1]) is not None:
            tr.block(tr.layout(operands[1]).atoms, f"{_describe(rec)} divides by them (a removed channel would "
                                                   f"be a division by 0)")
        return super().trace(tr, node, layer, rec)


class OpReshapeRule(ReshapeRule):
    def trace(self, tr, node, layer, rec):
        shape = getattr(layer, "newshape", None)
        tensor = _first_tensor(node)
        if shape is None or not shape or shape[0] not in (-1, None):
            if tr.layout(tensor) is not None:
                tr.block(tr.layout(tensor).atoms, f"{_describe(rec)} reshapes the batch axis")
            return [None]
        return super().trace(tr, node, layer, rec)

    def slice(self, rec, config, weights, keep):
        shape = list(config["newshape"])
        if shape[rec.extra["out_axis"]] != -1:
            shape[rec.extra["out_axis"]] = int(keep["out"].sum())
        return {**config, "newshape": tuple(shape)}, weights


class OpTransposeRule(ChannelwiseRule):
    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        layout = tr.layout(tensor)
        if layout is None:
            return [None]
        axes = getattr(layer, "axes", None)
        axes = list(range(_rank(tensor)))[::-1] if axes is None else [a % _rank(tensor) for a in axes]
        if axes[0] != 0:
            tr.block(layout.atoms, f"{_describe(rec)} moves the batch axis")
            return [None]
        return [Layout(axes.index(layout.axis), layout.atoms)]


class OpConcatenateRule(ConcatenateRule):
    def operands_and_axis(self, node, layer):
        return list(node.arguments.args[0]), getattr(layer, "axis", 0)


class OpReduceRule(ChannelwiseRule):
    """``keras.ops.mean/sum/max/min`` over some axes: fine unless the channel axis is reduced."""

    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        layout = tr.layout(tensor)
        if layout is None:
            return [None]
        rank = _rank(tensor)
        axis = getattr(layer, "axis", None)
        axes = list(range(rank)) if axis is None else _axes(axis, rank)
        if layout.axis in axes or 0 in axes:
            tr.block(layout.atoms, f"{_describe(rec)} reduces over the channel (or batch) axis")
            return [None]
        keepdims = getattr(layer, "keepdims", False)
        new_axis = layout.axis if keepdims else layout.axis - sum(a < layout.axis for a in axes)
        return [Layout(new_axis, layout.atoms)]


OP_MERGES = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"}
OP_UNARY = {"Absolute", "Abs", "Negative", "Exp", "Square", "Sqrt", "Tanh", "Sigmoid", "Relu", "Relu6", "Gelu",
            "Silu", "Swish", "HardSigmoid", "HardSilu", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
            "LeakyRelu", "Mish", "Sin", "Cos", "Clip", "Cast", "Erf", "Floor", "Ceil", "Round", "Sign",
            "LogSigmoid", "Identity", "StopGradient"}
OP_REDUCE = {"Mean", "Sum", "Max", "Min"}

