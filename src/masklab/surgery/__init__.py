"""Neuron surgery: physically remove units, channels and attention heads from Keras 3 models, exactly.

The contract: a pruned model computes what the original computes with the removed channels set to 0 at the input
of every consumer (for recurrent units: their hidden state 0 at every step). Channels tied by element-wise merges
(residual Adds, squeeze-and-excitation gates, ...) form a dependency group and are removed together; Concatenate
maps indices with their offsets; Flatten / Reshape / Permute follow the channel axis. Where removal cannot be exact
(a softmax or normalization over the channel axis, the model's output, an unknown layer, ...) masklab refuses with
a ValueError that names the layer and why, rather than return a model that differs.

Modules: ``graph`` (tracing the model into dependency groups), ``rules`` (what each layer type does to channels,
and how it is sliced), ``rebuild`` (building the new model), ``verify`` (the masked reference),
``removal`` (remove_units / remove_heads and the unit choosers), ``criteria`` + ``prune`` (whole-model pruning),
``macs`` (multiply-accumulate counts).
"""

from masklab.surgery.criteria import CRITERIA
from masklab.surgery.graph import DependencyGraph, trace
from masklab.surgery.macs import count_macs, layer_macs
from masklab.surgery.prune import PruneResult, prune
from masklab.surgery.removal import (dependency_group, find_layer, masked_outputs, parameter_table, remove_heads,
                                     remove_units, unit_count, units_by_activation, units_by_weight_norm,
                                     validate_units, verify_equivalence)
from masklab.surgery.rules import register_channelwise
from masklab.surgery.verify import new_models_traced

__all__ = ["CRITERIA", "DependencyGraph", "PruneResult", "count_macs", "dependency_group", "layer_macs", "prune", "find_layer", "masked_outputs", "parameter_table",
           "register_channelwise", "remove_heads", "remove_units", "trace", "unit_count", "units_by_activation",
           "units_by_weight_norm", "validate_units", "verify_equivalence", "new_models_traced"]
