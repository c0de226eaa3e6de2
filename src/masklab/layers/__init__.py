"""Keras 3 layers of masklab, registered serializable under the package name ``masklab``."""

from masklab.layers.neuron_mask import (NeuronMask, dropped_units, keep_from_off, keep_mask, keep_masks,
                                        validate_mask)

__all__ = ["NeuronMask", "dropped_units", "keep_from_off", "keep_mask", "keep_masks", "validate_mask"]
