"""What single units do: the effect of ablating each one alone, and how selective each is for one class."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pandas as pd

from masklab.ablation.core import _classes, activations, check_labels, predict_with_masks, targets_of
from masklab.ablation.runner import input_arrays


def single_unit_ablation(model: keras.Model, layer, x, y, replacement="zero", reference_x=None, seed: int = 0,
                         batch_size: int | None = None) -> pd.DataFrame:
    """Every unit of ``layer`` ablated alone (all units in one batched pass), on labelled data ``(x, y)``.

    One row per unit: ``unit``, ``accuracy`` and ``accuracy_drop`` (unablated accuracy minus ablated; positive
    = the unit helped), then ``drop_class_<c>`` per class: class ``c``'s accuracy drop (NaN for a class absent
    from ``y``). ``table.attrs`` holds the unablated ``accuracy`` and ``class_accuracy``.
    """
    target = targets_of(model, layer)[0]
    arrays = input_arrays(model, x)
    classes = _classes(model)
    labels = check_labels(y, len(arrays[0]), classes)
    masks = np.concatenate([np.ones((1, target.units), np.float32),
                            1.0 - np.eye(target.units, dtype=np.float32)])  # row 0: nothing ablated
    per_class = predict_with_masks(model, target.layer, arrays, masks, replacement=replacement,
                                   reference_x=reference_x, seed=seed, reduce="per_class_accuracy", y=labels,
                                   batch_size=batch_size)
    support = np.bincount(labels, minlength=classes)
    overall = np.nansum(per_class * support[None, :], axis=1) / len(labels)
    table = pd.DataFrame({"unit": np.arange(target.units), "accuracy": overall[1:],
                          "accuracy_drop": overall[0] - overall[1:]})
    for c in range(classes):
        table[f"drop_class_{c}"] = per_class[0, c] - per_class[1:, c]
    table.attrs.update(layer=target.name, accuracy=float(overall[0]), class_accuracy=per_class[0].tolist())
    return table


def class_means(model: keras.Model, layer, x, y) -> np.ndarray:
    """``(classes present in y, units)``: each unit's mean activation over the inputs of each class (conv
    channels and sequence units averaged over their positions first)."""
    target = targets_of(model, layer)[0]
    arrays = input_arrays(model, x)
    labels = check_labels(y, len(arrays[0]))
    values = np.asarray(activations(model, target.layer, arrays), np.float64)
    axes = tuple(a for a in range(1, values.ndim) if a != target.axis)
    per_input = values.mean(axis=axes) if axes else values  # (N, units)
    present = np.unique(labels)
    if len(present) < 2:
        raise ValueError(f"class selectivity compares classes: y must hold at least 2 classes. Received: classes "
                         f"{present.tolist()}")
    onehot = (labels[:, None] == present[None, :]).astype(np.float64)
    return (onehot.T @ per_input) / onehot.sum(axis=0)[:, None]


def class_selectivity(model: keras.Model, layer, x, y) -> np.ndarray:
    """``(units,)`` class selectivity index (Morcos et al., ICLR 2018) of each unit of ``layer`` on ``(x, y)``.

    With ``mu_c`` the unit's mean activation over the inputs of class ``c`` (conv channels: averaged over
    positions first), ``mu_max = max_c mu_c`` and ``mu_rest`` the mean of the other classes' ``mu_c``:
    ``(mu_max - mu_rest) / (mu_max + mu_rest)``, 0 where the denominator is 0. In [0, 1] for non-negative
    activations (ReLU): 0 = the same mean for every class, 1 = active for one class only. With negative means the
    index leaves [0, 1] and loses that reading: a warning says so.
    """
    mu = class_means(model, layer, x, y)
    if (mu < 0).any():
        warnings.warn(f"layer {targets_of(model, layer)[0].name!r} has negative class means (min {mu.min():.3g}): the "
                      f"selectivity index assumes non-negative activations (e.g. after a ReLU) and is outside [0, 1] "
                      f"here", stacklevel=2)
    mu_max = mu.max(axis=0)
    mu_rest = (mu.sum(axis=0) - mu_max) / (len(mu) - 1)
    denominator = mu_max + mu_rest
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, (mu_max - mu_rest) / safe)
