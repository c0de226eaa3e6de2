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

import keras

from masklab.surgery.rules.base import ChannelwiseRule, Rule, activation_reason
from masklab.surgery.rules.passing import (OP_MERGES, OP_REDUCE, OP_UNARY, ActivationRule, AxisRule, BatchNormRule,
                                           ConcatenateRule, DepthwiseRule, DropoutRule, FlattenRule,
                                           GlobalPoolingRule, GroupNormRule, LayerScaleRule, MergeRule,
                                           NeuronMaskRule, NormalizationRule, OpConcatenateRule, OpMergeRule,
                                           OpReduceRule, OpReshapeRule, OpTransposeRule, PerChannelRule, PermuteRule,
                                           PReLURule, RepeatVectorRule, RescalingRule, ReshapeRule, SpatialRule,
                                           tie_elementwise)
from masklab.surgery.rules.producers import (AttentionRule, BidirectionalRule, ConvRule, ConvTransposeRule,
                                             DenseRule, EmbeddingRule, ProducerRule, RecurrentRule, SeparableRule)

L = keras.layers

__all__ = ["ActivationRule", "AttentionRule", "AxisRule", "BatchNormRule", "BidirectionalRule", "ChannelwiseRule",
           "ConcatenateRule", "ConvRule", "ConvTransposeRule", "DenseRule", "DepthwiseRule", "DropoutRule",
           "EmbeddingRule", "FlattenRule", "GlobalPoolingRule", "GroupNormRule", "LayerScaleRule", "MergeRule",
           "NeuronMaskRule", "NormalizationRule", "PReLURule", "PerChannelRule", "PermuteRule", "ProducerRule",
           "RecurrentRule", "RegisteredRule", "RepeatVectorRule", "RescalingRule", "ReshapeRule", "Rule",
           "SeparableRule", "SpatialRule", "activation_reason", "register_channelwise", "rule_for",
           "tie_elementwise"]

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
_register([L.Bidirectional], BidirectionalRule())
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
