"""Keras 3 layers of masklab, registered serializable under the package name ``masklab``."""

from masklab.layers.connectivity import (Connectivity, as_connectivity, connectivity_from_pairs,
                                         local_receptive_fields)
from masklab.layers.neuron_mask import (NeuronMask, dropped_units, keep_from_off, keep_mask, keep_masks,
                                        validate_mask)
from masklab.layers.sparse_dense import SparseDense

__all__ = ["Connectivity", "NeuronMask", "SparseDense", "as_connectivity", "connectivity_from_pairs",
           "dropped_units", "keep_from_off", "keep_mask", "keep_masks", "local_receptive_fields", "validate_mask"]
