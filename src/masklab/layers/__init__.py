"""Keras 3 layers of masklab, registered serializable under the package name ``masklab``."""

from masklab.layers.connectivity import (Connectivity, as_connectivity, connectivity_from_pairs,
                                         connectivity_hierarchy, local_receptive_fields)
from masklab.layers.dropout_family import CurriculumDropout, TargetedDropout
from masklab.layers.neuron_mask import (NeuronMask, dropped_units, keep_from_off, keep_mask, keep_masks,
                                        validate_mask)
from masklab.layers.nsdropout import (NSDropout, NSDropoutPredictor, NSDropoutRefresh, class_means,
                                      decide_from_all_masks, masks_from_differences, predict_classes)
from masklab.layers.nsdropout_routing import (ClusterRouter, NSDropoutRouting, PredictedClassRouter, Router,
                                              SingleMaskRouter, fit_routed, predict_routed)
from masklab.layers.sparse_dense import SparseDense

__all__ = ["ClusterRouter", "Connectivity", "CurriculumDropout", "NSDropout", "NSDropoutRouting",
           "PredictedClassRouter", "Router", "SingleMaskRouter", "TargetedDropout", "fit_routed", "predict_routed", "NSDropoutPredictor", "NSDropoutRefresh", "NeuronMask", "SparseDense",
           "as_connectivity", "class_means", "connectivity_from_pairs", "connectivity_hierarchy",
           "decide_from_all_masks", "dropped_units",
           "keep_from_off", "keep_mask", "keep_masks", "local_receptive_fields", "masks_from_differences",
           "predict_classes", "validate_mask"]
