"""Switch units of a trained model off and measure what happens, batched.

KEEP masks everywhere: 1 keeps a unit, 0 ablates it. A unit is a channel of any layer's output (the last axis of
``(batch, units)``, ``(batch, T, units)`` or ``(batch, H, W, C)``), ablated at every position, in any functional
or Sequential model (residual and concatenating graphs, nested models). K ablations of one or several layers run
in one compiled function per chunk: the layers before the ablated ones run once per input.

* :func:`predict_with_masks`: outputs, accuracy, per-class accuracy or agreement under K ablations, with zero,
  mean, resample or given replacement values;
* :func:`single_unit_ablation`: every unit ablated alone, overall and per-class accuracy drops;
* :func:`class_selectivity`: Morcos et al.'s class selectivity index;
* :func:`ablation_curve`: accuracy vs the fraction ablated, per ordering strategy, one layer or several;
* :func:`activations`: layer outputs on inputs.

Modules: ``runner`` (the compiled graph walk), ``core`` (checks, replacements, streaming), ``units``,
``curves``.
"""

from masklab.ablation.core import (REDUCTIONS, activations, check_inputs, get_layer, hidden_activations,
                                   predict_with_masks, split_model, with_mask_input)
from masklab.ablation.curves import STRATEGIES, ablation_curve, masks_from_scores, unit_scores
from masklab.ablation.runner import REPLACEMENTS
from masklab.ablation.units import class_means, class_selectivity, single_unit_ablation

__all__ = ["REDUCTIONS", "REPLACEMENTS", "STRATEGIES", "ablation_curve", "activations", "check_inputs",
           "class_means", "class_selectivity", "get_layer", "hidden_activations", "masks_from_scores",
           "predict_with_masks", "single_unit_ablation", "split_model", "unit_scores", "with_mask_input"]
