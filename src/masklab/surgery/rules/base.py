"""The base of the per-layer rules: helpers every rule uses, the default rule (refuse what it does not know),
and the channel-wise rule most layers build on. See :mod:`masklab.surgery.rules` for the contract of a rule."""

from __future__ import annotations

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


def weight_array(variable) -> np.ndarray:
    """A variable's value as a NumPy array, on every backend (``variable.numpy()`` on TensorFlow; on JAX the value
    array itself, which NumPy reads without Keras' deprecated ``__array__`` path)."""
    if keras.config.backend() == "tensorflow" and hasattr(variable, "numpy"):
        return np.asarray(variable.numpy())
    return np.asarray(keras.ops.convert_to_numpy(getattr(variable, "value", variable)))



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
        from masklab.surgery.rules import ActivationRule, _EXACT  # the registry imports this module

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

    per_channel = False   # holds one weight per channel (PerChannelRule)

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
            if self.per_channel:
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


