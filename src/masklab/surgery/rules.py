"""What each layer type does to channels: one rule per kind of layer (Torch-Pruning calls them "pruners").

A rule has two halves:

- ``trace(tracer, node, layer, record)``: given the layouts of the call's inputs (``tracer.layout(tensor)``),
  return the layouts of its outputs, and record what it will slice (``tracer.slot``), what it ties
  (``tracer.tie``) and what it refuses (``tracer.block`` with a reason naming the layer);
- ``slice(record, config, weights, keep)``: the new layer's config and weights (``{relative variable path:
  array}``) given ``keep[slot]``, a boolean mask over the atoms of each slot (``record.layer`` is the layer,
  ``record.extra`` what ``trace`` noted about it).

Producers also give ``output_weights(layer)``: a ``(channels, -1)`` array of the weights that create each output
channel, which the magnitude criteria rank.

Rules match layer classes exactly: a subclass of ``Dense`` may compute something else, so it is refused unless
registered (:func:`register_channelwise` for custom layers that act channel by channel).
"""

from __future__ import annotations

import inspect

import keras
import numpy as np

from masklab.surgery.graph import Layout

L = keras.layers

ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "celu", "gelu", "silu", "swish", "mish", "tanh", "sigmoid",
    "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "hard_shrink", "soft_shrink", "tanh_shrink",
    "softplus", "softsign", "sparse_plus", "squareplus", "leaky_relu", "log_sigmoid", "exponential", "threshold",
    "sparse_sigmoid"})
MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax", "sparsemax", "glu"})


def _describe(rec) -> str:
    return f"{type(rec.layer).__name__} {rec.path!r}"


def _label(tensor) -> str:
    """How to name a tensor in a message: the model input or the layer that made it."""
    history = getattr(tensor, "_keras_history", None)
    op = getattr(history, "operation", None)
    if isinstance(op, keras.layers.InputLayer):
        return f"the model input {op.name!r}"
    return f"the output of {op.name!r}" if op is not None else repr(tensor.name)


def _numpy(variable) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else keras.ops.convert_to_numpy(variable))


def _rank(tensor) -> int:
    return len(tensor.shape)


def _axes(axis, rank: int) -> list[int]:
    """Positive axis indices (batch = 0) from an int or a list, as Keras layers give them."""
    axes = [axis] if isinstance(axis, int) else list(axis)
    return sorted(a % rank for a in axes)


def _channel_axis(data_format: str | None, rank: int) -> int:
    return 1 if data_format == "channels_first" else rank - 1


def _first_tensor(node):
    tensors = node.arguments.keras_tensors
    return tensors[0] if tensors else None


def _block_extra_tensors(tr, node, used, rec, role: str = "an extra input") -> None:
    """Channels reaching a layer through an argument the rule does not follow are refused."""
    used_ids = {id(t) for t in used if t is not None}
    for tensor in node.arguments.keras_tensors:
        if id(tensor) not in used_ids and tr.layout(tensor) is not None:
            tr.block(tr.layout(tensor).atoms, f"they reach {_describe(rec)} as {role}, which masklab does not "
                                              f"rewrite")


def activation_reason(fn, rec, layout: Layout | None, rank: int) -> str | None:
    """Why ``fn`` prevents exact removal of the channels on ``layout`` (None if it acts value by value)."""
    if isinstance(fn, keras.layers.Layer):  # an activation layer passed as the activation, e.g. LeakyReLU()
        rule = _EXACT.get(type(fn))
        if type(rule) is ChannelwiseRule:
            return None
        if isinstance(rule, ActivationRule):
            return activation_reason(fn.activation, rec, layout, rank)
    name = getattr(fn, "__name__", None)
    if name in ELEMENTWISE_ACTIVATIONS:
        return None
    if name in MIXING_ACTIVATIONS:
        if name != "glu" and layout is not None and layout.axis != rank - 1:
            return None  # softmax over another axis leaves the channels independent
        return (f"{_describe(rec)} applies activation {name!r} across the channel axis: every output depends on "
                f"all channels, so removing one changes the others")
    return (f"{_describe(rec)} has activation {fn!r}, which masklab does not know to act value by value "
            f"(it could mix channels)")


def _bool_index(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask, dtype=bool))


# --- base rules -------------------------------------------------------------------------------------------------
class Rule:
    """Default: a layer masklab does not know. Channels reaching it are refused; its outputs carry none."""

    producer = False

    def trace(self, tr, node, layer, rec):
        for tensor in node.arguments.keras_tensors:
            layout = tr.layout(tensor)
            if layout is not None:
                tr.block(layout.atoms, self.unknown_reason(rec))
        return []

    @staticmethod
    def unknown_reason(rec) -> str:
        if isinstance(rec.layer, keras.layers.Wrapper):
            return (f"they reach {_describe(rec)}, a wrapper around {type(rec.layer.layer).__name__}, which masklab "
                    f"does not rewrite")
        if isinstance(rec.layer, keras.Model):
            return (f"they reach {_describe(rec)}, a subclassed model whose graph masklab cannot see")
        return (f"they reach {_describe(rec)}, which masklab does not know how to rewrite exactly (if it acts on "
                f"each channel separately, declare it with masklab.surgery.register_channelwise)")

    def slice(self, rec, config, weights, keep):
        return config, weights


class ChannelwiseRule(Rule):
    """Acts on each channel separately and keeps the channel axis where it is (activations, dropout, noise)."""

    def reason(self, tr, layer, rec, layout, rank) -> str | None:
        return None

    def on_channels(self, tr, rec, layout, tensor) -> None:
        """Per-channel weights: record the slot (BatchNormalization, PReLU, ...)."""

    def output_layout(self, layout, out_tensor, layer) -> Layout:
        return layout

    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        layout = tr.layout(tensor)
        if layout is None:
            if isinstance(self, PerChannelRule):
                axis = _channel_axis(getattr(layer, "data_format", None), _rank(tensor))
                tr.fixed_slot(rec, "channels", tensor.shape[axis], _label(tensor))
            return [None]
        reason = self.reason(tr, layer, rec, layout, _rank(tensor))
        if reason is not None:
            # blocked, but followed on: whatever these channels get tied to downstream inherits this reason
            tr.block(layout.atoms, reason)
            return [layout if out.shape == tensor.shape else None for out in node.output_tensors]
        self.on_channels(tr, rec, layout, tensor)
        return [self.output_layout(layout, out, layer) for out in node.output_tensors]


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
        return _numpy(layer.kernel).T


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
        self.consume(tr, rec, tensor, axis, blocks=groups)
        out = tr.produce(rec, filters)
        if groups > 1:
            rec.blocks["out"] = groups
        out_layout = Layout(axis, out)
        reason = activation_reason(layer.activation, rec, out_layout, rank)
        if reason:
            tr.block(out, reason)
        return [out_layout]

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
        kernel = _numpy(layer.kernel)
        return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


class ConvTransposeRule(ConvRule):
    """Conv1D/2D/3DTranspose: kernel ``(*window, filters, in_channels)``."""

    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        rank = _rank(tensor)
        axis = _channel_axis(layer.data_format, rank)
        self.consume(tr, rec, tensor, axis)
        out = tr.produce(rec, int(layer.filters))
        out_layout = Layout(axis, out)
        reason = activation_reason(layer.activation, rec, out_layout, rank)
        if reason:
            tr.block(out, reason)
        return [out_layout]

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
        kernel = _numpy(layer.kernel)
        return np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1)


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


class SeparableRule(ProducerRule):
    """SeparableConv1D/2D: a depthwise kernel per input channel, then a pointwise kernel that produces filters."""

    def trace(self, tr, node, layer, rec):
        tensor = _first_tensor(node)
        _block_extra_tensors(tr, node, [tensor], rec)
        rank = _rank(tensor)
        axis = _channel_axis(layer.data_format, rank)
        self.consume(tr, rec, tensor, axis)
        out = tr.produce(rec, int(layer.filters))
        out_layout = Layout(axis, out)
        reason = activation_reason(layer.activation, rec, out_layout, rank)
        if reason:
            tr.block(out, reason)
        return [out_layout]

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
        kernel = _numpy(layer.pointwise_kernel)
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
        return _numpy(layer.embeddings).T


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
        keep_out = keep["out"]
        gate_cols = _bool_index(np.tile(keep_out, gates))
        new = {}
        for key, value in weights.items():
            name = key.split("/")[-1]
            if name == "kernel":
                if "in" in keep:
                    value = value[_bool_index(keep["in"])]
                value = value[:, gate_cols]
            elif name == "recurrent_kernel":
                value = value[_bool_index(keep_out)][:, gate_cols]
            elif name == "bias":
                value = value[..., gate_cols]
            new[key] = value
        return {**config, "units": int(keep_out.sum())}, new

    def output_weights(self, layer):
        gates = self.gates[type(layer).__name__]
        units = int(layer.units)
        kernel = _numpy(layer.cell.kernel).reshape(-1, gates, units)
        recurrent = _numpy(layer.cell.recurrent_kernel).reshape(-1, gates, units)
        return np.concatenate([kernel, recurrent]).transpose(2, 0, 1).reshape(units, -1)


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
        kernel = _numpy(layer.output_dense.kernel)
        return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


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

# --- the registry -----------------------------------------------------------------------------------------------
_EXACT: dict[type, Rule] = {}


def _register(classes, rule: Rule) -> None:
    for cls in classes:
        _EXACT[cls] = rule


_register([L.Dense], DenseRule())
_register([L.Conv1D, L.Conv2D, L.Conv3D], ConvRule())
_register([L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose], ConvTransposeRule())
_register([L.DepthwiseConv1D, L.DepthwiseConv2D], DepthwiseRule())
_register([L.SeparableConv1D, L.SeparableConv2D], SeparableRule())
_register([L.Embedding], EmbeddingRule())
_register([L.LSTM, L.GRU, L.SimpleRNN], RecurrentRule())
_register([L.MultiHeadAttention], AttentionRule())
_register([L.BatchNormalization], BatchNormRule())
_register([L.LayerNormalization], NormalizationRule())
_register([L.GroupNormalization], GroupNormRule())
_register([L.Softmax, L.UnitNormalization], AxisRule())
_register([L.Activation], ActivationRule())
_register([L.ReLU, L.LeakyReLU, L.ELU, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
           L.GaussianNoise, L.GaussianDropout, L.ActivityRegularization, L.Identity], ChannelwiseRule())
_register([L.Dropout, L.AlphaDropout], DropoutRule())
_register([L.PReLU], PReLURule())
_register([L.Rescaling], RescalingRule())
_register([L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
           L.AveragePooling3D, L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
           L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D], SpatialRule())
_register([L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
           L.GlobalMaxPooling2D, L.GlobalMaxPooling3D], GlobalPoolingRule())
_register([L.Flatten], FlattenRule())
_register([L.Reshape], ReshapeRule())
_register([L.Permute], PermuteRule())
_register([L.RepeatVector], RepeatVectorRule())
_register([L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum], MergeRule())
_register([L.Concatenate], ConcatenateRule())

# classes outside keras.layers, matched by module and name (importing them would pull in more than needed)
_BY_NAME = {
    ("masklab.layers.neuron_mask", "NeuronMask"): NeuronMaskRule(),
    ("keras.src.applications.convnext", "LayerScale"): LayerScaleRule(),
    ("keras.src.applications.convnext", "StochasticDepth"): ChannelwiseRule(),
    ("keras.src.applications.inception_resnet_v2", "CustomScaleLayer"): MergeRule(),  # x + branch * scale
}
_UNKNOWN = Rule()


class RegisteredRule(ChannelwiseRule):
    """A custom layer declared channel-wise: one input passes its channels on; several inputs are combined
    element-wise (channel j with channel j), so their channels are tied as by a merge."""

    def trace(self, tr, node, layer, rec):
        tensors = node.arguments.keras_tensors
        if len(tensors) <= 1:
            return super().trace(tr, node, layer, rec)
        return [tie_elementwise(tr, rec, list(tensors), node.output_tensors[0])]


def register_channelwise(layer_class: type) -> type:
    """Declare that ``layer_class`` acts on each channel separately and keeps the channel axis in place, without
    per-channel weights: ``f(x)[..., j]`` depends on ``x[..., j]`` only (with several inputs: on channel j of each,
    which ties them). Surgery then passes channels through it instead of refusing. Returns the class, so it
    works as a decorator."""
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(f"register_channelwise takes a keras Layer subclass. Received: {layer_class!r}")
    _EXACT[layer_class] = RegisteredRule()
    return layer_class


def rule_for(op) -> Rule:
    cls = type(op)
    if cls in _EXACT:
        return _EXACT[cls]
    named = _BY_NAME.get((cls.__module__, cls.__name__))
    if named is not None:
        return named
    if cls.__module__.startswith("keras.src.ops."):
        if cls.__name__ in OP_MERGES:
            return _OP_MERGE
        if cls.__name__ in OP_UNARY:
            return _CHANNELWISE
        if cls.__name__ == "Reshape":
            return OpReshapeRule()
        if cls.__name__ == "Transpose":
            return _OP_TRANSPOSE
        if cls.__name__ == "Concatenate":
            return _OP_CONCAT
        if cls.__name__ in OP_REDUCE:
            return _OP_REDUCE
    return _UNKNOWN


_OP_MERGE, _CHANNELWISE, _OP_TRANSPOSE = OpMergeRule(), ChannelwiseRule(), OpTransposeRule()
_OP_CONCAT, _OP_REDUCE = OpConcatenateRule(), OpReduceRule()
